//! The layering, enforced: which workspace crate may depend on which, which crates may speak
//! SQL, and what the decision core and the gateway may never link. Read from `cargo metadata`
//! (the resolved graph of the locked workspace), so a new `[dependencies]` line that breaks a
//! rule fails this test, whatever the code does with it.
//!
//! The rules are the table in [`allowed`] and the lists below it; ARCHITECTURE.md draws the
//! same picture. Dev-dependencies (tests, benches) are not checked: a test may wire anything.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// The workspace crates each workspace crate may depend on directly (normal dependencies).
/// A crate missing from this table is a violation too: a new crate states its place here.
fn allowed() -> BTreeMap<&'static str, &'static [&'static str]> {
    BTreeMap::from([
        // The floor: no other Mandate crate.
        ("mandate-proto", &[][..]),
        ("mandate-core", &[][..]),
        ("mandate-secrets", &[][..]),
        ("mandate-demo-tools", &[][..]),
        // Pure libraries over the domain.
        ("mandate-policy", &["mandate-core"][..]),
        ("mandate-token", &["mandate-core"][..]),
        ("mandate-audit", &["mandate-core"][..]),
        // The decision core: no I/O, no store, no HTTP.
        ("mandate-pdp", &["mandate-core", "mandate-policy", "mandate-proto", "mandate-token"][..]),
        // Storage: the only crates that speak SQL.
        ("mandate-store", &["mandate-core", "mandate-audit"][..]),
        ("mandate-store-sqlite", &["mandate-core", "mandate-audit", "mandate-store"][..]),
        ("mandate-store-postgres", &["mandate-core", "mandate-audit", "mandate-store"][..]),
        ("mandate-dyncreds-postgres", &["mandate-core", "mandate-secrets", "mandate-store", "mandate-store-postgres"][..]),
        // Clients of the control plane's HTTP API.
        ("mandate-client", &["mandate-proto"][..]),
        // The control plane: the decision core, the store behind its trait; no gateway.
        (
            "mandate-server",
            &[
                "mandate-proto",
                "mandate-core",
                "mandate-policy",
                "mandate-token",
                "mandate-audit",
                "mandate-store",
                "mandate-secrets",
                "mandate-pdp",
            ][..],
        ),
        // The gateway: the decision core's types and a `ControlPlane` trait; never the server.
        (
            "mandate-gateway",
            &[
                "mandate-proto",
                "mandate-core",
                "mandate-policy",
                "mandate-token",
                "mandate-audit",
                "mandate-secrets",
                "mandate-client",
                "mandate-pdp",
            ][..],
        ),
        // Where the gateway and the control plane meet in one process.
        ("mandate-embedded", &["mandate-audit", "mandate-core", "mandate-gateway", "mandate-pdp", "mandate-server", "mandate-token"][..]),
        // Load drivers: they speak to a running binary over HTTP.
        ("mandate-bench", &["mandate-token", "mandate-client", "mandate-proto", "mandate-secrets", "mandate-store-postgres"][..]),
        // The binary wires everything.
        ("mandate", &["*"][..]),
    ])
}

/// Third-party crates that speak SQL, and the only workspace crates that may depend on them
/// directly.
const SQL_CRATES: &[&str] = &["sqlx", "sqlx-core", "sqlx-postgres", "rusqlite", "tokio-postgres", "postgres", "diesel", "sea-orm"];
const MAY_SPEAK_SQL: &[&str] = &["mandate-store-sqlite", "mandate-store-postgres", "mandate-dyncreds-postgres"];

/// What a crate may never link, even transitively.
fn never_links() -> Vec<(&'static str, &'static [&'static str])> {
    vec![
        // Pure: no runtime, no network, no database.
        ("mandate-pdp", &["tokio", "axum", "hyper", "reqwest", "sqlx", "rusqlite", "mandate-server", "mandate-store"][..]),
        // A remote gateway links no SQL driver, no console, no store, no control plane.
        (
            "mandate-gateway",
            &[
                "mandate-server",
                "mandate-store",
                "mandate-store-sqlite",
                "mandate-store-postgres",
                "mandate-embedded",
                "sqlx",
                "rusqlite",
                "maud",
            ][..],
        ),
        ("mandate-client", &["mandate-server", "sqlx", "rusqlite"][..]),
    ]
}

/// The resolved graph: package name → its normal dependencies' names.
fn graph(metadata: &Value) -> (BTreeSet<String>, BTreeMap<String, BTreeSet<String>>) {
    let name_of: BTreeMap<&str, &str> =
        metadata["packages"].as_array().unwrap().iter().map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap())).collect();
    let members: BTreeSet<String> =
        metadata["workspace_members"].as_array().unwrap().iter().map(|id| name_of[id.as_str().unwrap()].to_owned()).collect();
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for node in metadata["resolve"]["nodes"].as_array().unwrap() {
        let name = name_of[node["id"].as_str().unwrap()].to_owned();
        let normal = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["dep_kinds"].as_array().is_some_and(|kinds| kinds.iter().any(|k| k["kind"].is_null())));
        let entry = deps.entry(name).or_default();
        for d in normal {
            entry.insert(name_of[d["pkg"].as_str().unwrap()].to_owned());
        }
    }
    (members, deps)
}

fn closure(deps: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut next = vec![from.to_owned()];
    while let Some(n) = next.pop() {
        for d in deps.get(&n).into_iter().flatten() {
            if seen.insert(d.clone()) {
                next.push(d.clone());
            }
        }
    }
    seen
}

/// Every broken rule, in words.
fn violations(metadata: &Value) -> Vec<String> {
    let (members, deps) = graph(metadata);
    let table = allowed();
    let mut out = Vec::new();
    for m in &members {
        let Some(may) = table.get(m.as_str()) else {
            out.push(format!("`{m}` has no place in the layering table (crates/mandate/tests/layering.rs)"));
            continue;
        };
        let direct = deps.get(m).cloned().unwrap_or_default();
        for d in &direct {
            if members.contains(d) && !may.contains(&"*") && !may.contains(&d.as_str()) {
                out.push(format!("`{m}` depends on `{d}`, which its layer may not"));
            }
            if SQL_CRATES.contains(&d.as_str()) && !MAY_SPEAK_SQL.contains(&m.as_str()) && m != "mandate" {
                out.push(format!("`{m}` depends on `{d}`: only {MAY_SPEAK_SQL:?} speak SQL"));
            }
        }
    }
    for (krate, banned) in never_links() {
        if !members.contains(krate) {
            continue;
        }
        let reach = closure(&deps, krate);
        for b in banned {
            if reach.contains(*b) {
                out.push(format!("`{krate}` links `{b}` (transitively), which it may never"));
            }
        }
    }
    out
}

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
    // The graph of this machine's platform: what a build here links (and nothing to download).
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc).arg("-vV").output().expect("rustc runs");
    let host = String::from_utf8_lossy(&version.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .expect("rustc names its host");
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline", "--filter-platform", &host, "--manifest-path", manifest])
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_workspace_keeps_its_layers() {
    let m = metadata();
    let v = violations(&m);
    assert!(v.is_empty(), "the layering is broken:\n  {}", v.join("\n  "));
    // The check sees the real graph: the crates it guards are there, with their edges.
    let (members, deps) = graph(&m);
    for c in ["mandate-pdp", "mandate-gateway", "mandate-server", "mandate-embedded"] {
        assert!(members.contains(c), "{c} is a workspace member");
    }
    assert!(deps["mandate-embedded"].contains("mandate-server") && deps["mandate-embedded"].contains("mandate-gateway"));
    assert!(closure(&deps, "mandate-server").contains("mandate-pdp"));
}

/// A graph with the violations the rules exist for, to show that each is caught.
#[test]
fn a_violation_fails_the_check() {
    let pkg = |n: &str| serde_json::json!({ "id": format!("{n} 0.1.0"), "name": n });
    let dep = |n: &str, kind: Value| serde_json::json!({ "pkg": format!("{n} 0.1.0"), "dep_kinds": [{ "kind": kind }] });
    let names = ["mandate-gateway", "mandate-server", "mandate-pdp", "mandate-store", "sqlx", "tokio", "mandate-newcomer"];
    let metadata = serde_json::json!({
        "packages": names.iter().map(|n| pkg(n)).collect::<Vec<_>>(),
        "workspace_members": ["mandate-gateway 0.1.0", "mandate-server 0.1.0", "mandate-pdp 0.1.0", "mandate-store 0.1.0", "mandate-newcomer 0.1.0"],
        "resolve": { "nodes": [
            { "id": "mandate-gateway 0.1.0", "deps": [dep("mandate-server", Value::Null)] },
            { "id": "mandate-server 0.1.0", "deps": [dep("sqlx", Value::Null), dep("mandate-store", Value::Null)] },
            // A dev-dependency is not a layering edge.
            { "id": "mandate-pdp 0.1.0", "deps": [dep("tokio", Value::from("dev"))] },
            { "id": "mandate-store 0.1.0", "deps": [] },
            { "id": "mandate-newcomer 0.1.0", "deps": [] },
            { "id": "sqlx 0.1.0", "deps": [dep("tokio", Value::Null)] },
            { "id": "tokio 0.1.0", "deps": [] },
        ]},
    });
    let v = violations(&metadata);
    let has = |s: &str| v.iter().any(|x| x.contains(s));
    assert!(has("`mandate-gateway` depends on `mandate-server`"), "{v:?}");
    assert!(has("`mandate-server` depends on `sqlx`: only"), "{v:?}");
    assert!(has("`mandate-gateway` links `sqlx`"), "{v:?}");
    assert!(has("`mandate-gateway` links `mandate-store`"), "{v:?}");
    assert!(has("`mandate-newcomer` has no place"), "{v:?}");
    assert!(!v.iter().any(|x| x.contains("`mandate-pdp`")), "a dev-dependency is not checked: {v:?}");
}
