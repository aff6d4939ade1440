//! Policy sets end to end: the policy CLI (init, validate, test) without a server; hot reload
//! of a running server's policy directory, refused reloads and the policy version each
//! decision records; a shadow set evaluated and recorded but never enforced; entity data for
//! subjects that are not agents.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

mod common;
mod support;

use std::path::Path;

use common::*;
use serde_json::{Value, json};
use support::*;

const STARTER_TESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/tests.toml");

/// A case file with one right and one wrong expectation.
const WRONG_CASES: &str = r#"
[[case]]
name = "reading an internal ticket is wrongly expected to be denied"
principal = { type = "agent", id = "support-bot", owner = "alice@example.com", purpose = "Summarise tickets" }
action = "tickets.read"
resource = { type = "ticket", id = "42", classification = "internal" }
task = { purpose = "Summarise ticket 42", actions = ["tickets.read"], resources = ["ticket:*"], max_classification = "internal" }
expect = "deny"

[[case]]
name = "reading an internal ticket is allowed"
principal = { type = "agent", id = "support-bot", owner = "alice@example.com", purpose = "Summarise tickets" }
action = "tickets.read"
resource = { type = "ticket", id = "42", classification = "internal" }
task = { purpose = "Summarise ticket 42", actions = ["tickets.read"], resources = ["ticket:*"], max_classification = "internal" }
expect = "allow"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn policy_init_writes_a_set_that_validates_and_passes_its_tests() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("policies");
    let out = mandate_cmd().args(["policy", "init"]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{:?}", output_text(&out));
    for f in ["schema.cedarschema", "agents.cedar", "guards.cedar", "tests.toml", "README.md"] {
        assert!(dir.join(f).is_file(), "`policy init` did not write {f}");
    }

    let out = mandate_cmd().args(["policy", "validate"]).arg(&dir).output().unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.starts_with("ok: 2 policy file(s), version sha256:"), "{stdout}");

    // The repository's cases and the copy `init` wrote both pass against the written set.
    for cases in [Path::new(STARTER_TESTS).to_owned(), dir.join("tests.toml")] {
        let out = mandate_cmd().args(["policy", "test"]).arg(&cases).arg("--dir").arg(&dir).output().unwrap();
        let (stdout, stderr) = output_text(&out);
        assert!(out.status.success(), "{stdout}{stderr}");
        assert!(stdout.ends_with(" passed, 0 failed\n"), "{stdout:?}");
        assert!(!stdout.contains("FAIL"), "{stdout}");
    }

    // A directory that is not empty is never overwritten.
    let out = mandate_cmd().args(["policy", "init"]).arg(&dir).output().unwrap();
    assert!(!out.status.success());
    assert!(output_text(&out).1.contains("is not empty"), "{:?}", output_text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_syntax_error_is_reported_with_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    starter_policies(&dir);
    // The error is on line 4 of the second policy file.
    std::fs::write(dir.join("zz-broken.cedar"), "@id(\"broken\")\npermit (\n  principal,\n  action ==,\n  resource\n);\n").unwrap();
    let out = mandate_cmd().args(["policy", "validate"]).arg(&dir).output().unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("zz-broken.cedar:4:"), "{stderr}");
    assert!(!stderr.contains("agents.cedar"), "only the broken file is blamed: {stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schema_violation_is_reported_with_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    starter_policies(&dir);
    std::fs::write(
        dir.join("extra.cedar"),
        "// Reads an attribute tickets do not have.\n@id(\"extra.bad-attribute\")\npermit (\n  principal is Mandate::Agent,\n  action == Mandate::Action::\"tickets.read\",\n  resource is ticket\n)\nwhen { resource.owner_team == \"support\" };\n",
    )
    .unwrap();
    let out = mandate_cmd().args(["policy", "validate"]).arg(&dir).output().unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("extra.cedar:8:"), "{stderr}");
    assert!(stderr.contains("owner_team"), "{stderr}");
    assert!(stderr.contains("1 problem(s)"), "{stderr}");

    // `policy test` refuses to run cases against a set that does not validate.
    let out = mandate_cmd().args(["policy", "test", STARTER_TESTS, "--dir"]).arg(&dir).output().unwrap();
    assert!(!out.status.success());
    assert!(output_text(&out).1.contains("extra.cedar"), "{:?}", output_text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_expectation_fails_and_names_its_case() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    starter_policies(&dir);
    let cases = tmp.path().join("cases.toml");
    std::fs::write(&cases, WRONG_CASES).unwrap();
    let out = mandate_cmd().args(["policy", "test"]).arg(&cases).arg("--dir").arg(&dir).output().unwrap();
    let (stdout, stderr) = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let fail = stdout.lines().find(|l| l.starts_with("FAIL")).unwrap_or_else(|| panic!("no failing case reported: {stdout}"));
    assert!(fail.contains("reading an internal ticket is wrongly expected to be denied"), "{fail}");
    assert!(fail.contains("expected deny, got allow"), "{fail}");
    assert!(stdout.ends_with("1 passed, 1 failed\n"), "{stdout:?}");
}

/// A server deciding with the policy directory `dir`, an agent with a ticket-reading task,
/// and an enforcement point.
async fn reading_agent(server: &Server) -> (TestAgent, String, mandate_client::Client) {
    let agent = register_agent(&server.admin(), "reader", &[]).await;
    let (mandate, _) = open_task(server, &agent, &read_intent()).await;
    (agent, mandate, pep(server).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn hot_reload_swaps_valid_sets_and_refuses_invalid_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("policies");
    starter_policies(&dir);
    let server = Server::start_with(Options { extra_args: vec!["--policy-dir".into(), dir.display().to_string()], envs: vec![] });
    let admin = server.admin();
    let (agent, mandate, pep) = reading_agent(&server).await;
    let ask = |id: &str| evaluation(&agent, &mandate, "tickets.read", "ticket", id, "internal");

    let v0 = admin.policy_status().await.unwrap().version;
    let r = pep.evaluate(&ask("12")).await.unwrap();
    assert!(r.decision, "{r:?}");
    // The decision records the version of the set that made it, in the answer and the trail.
    assert_eq!(r.context.as_ref().unwrap()["policy_version"], v0);
    let ev = decision_event(&server, &decision_id(&r)).await;
    assert_eq!(ev["details"]["policy_version"], v0);

    // A new file is picked up without a restart.
    std::fs::write(
        dir.join("hotfix.cedar"),
        "@id(\"hotfix.no-ticket-13\")\nforbid (\n  principal,\n  action == Mandate::Action::\"tickets.read\",\n  resource == ticket::\"13\"\n);\n",
    )
    .unwrap();
    let v1 = poll("the server to load the new policy", || async {
        let v = admin.policy_status().await.unwrap().version;
        (v != v0).then_some(v)
    })
    .await;
    let status = admin.policy_status().await.unwrap();
    assert!(status.policies.contains(&"hotfix.no-ticket-13".to_owned()), "{:?}", status.policies);

    let denied = pep.evaluate(&ask("13")).await.unwrap();
    assert!(!denied.decision);
    assert_eq!(reason(&denied), "forbidden_by_policy");
    assert_eq!(denied.context.as_ref().unwrap()["policies"], json!(["hotfix.no-ticket-13"]));
    assert_eq!(denied.context.as_ref().unwrap()["policy_version"], v1);
    let ev = decision_event(&server, &decision_id(&denied)).await;
    assert_eq!(ev["details"]["policy_version"], v1);
    assert_eq!(ev["details"]["policies"], json!(["hotfix.no-ticket-13"]));
    let allowed = pep.evaluate(&ask("12")).await.unwrap();
    assert!(allowed.decision, "{allowed:?}");
    assert_eq!(allowed.context.as_ref().unwrap()["policy_version"], v1);

    // A broken file: the reload is refused with the diagnostic and the old set keeps deciding.
    std::fs::write(dir.join("oops.cedar"), "@id(\"oops\")\npermit (\n  principal,\n  action in [,\n  resource\n);\n").unwrap();
    let out = server.cli().args(["policy", "reload"]).output().unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("oops.cedar:4:"), "{stderr}");
    assert!(stderr.contains(&format!("still deciding with version {v1}")), "{stderr}");
    assert_eq!(admin.policy_status().await.unwrap().version, v1);
    assert!(pep.evaluate(&ask("12")).await.unwrap().decision);
    assert_eq!(reason(&pep.evaluate(&ask("13")).await.unwrap()), "forbidden_by_policy");

    // Both outcomes are in the trail.
    let reloaded = events_of_kind(&server, "policy.reloaded").await;
    assert!(reloaded.iter().any(|e| e["details"]["version"] == v1 && e["details"]["previous_version"] == v0), "{reloaded:?}");
    let failed = events_of_kind(&server, "policy.reload_failed").await;
    let by_cli =
        failed.iter().find(|e| e["actor"] != "system:watcher").unwrap_or_else(|| panic!("no refused reload by the CLI: {failed:?}"));
    assert_eq!(by_cli["details"]["kept_version"], v1);
    let diags: Vec<&str> = by_cli["details"]["diagnostics"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(diags.iter().any(|d| d.starts_with("oops.cedar:4:")), "{diags:?}");

    // Fixing the file is picked up again.
    std::fs::remove_file(dir.join("oops.cedar")).unwrap();
    let out = server.cli().args(["policy", "reload"]).output().unwrap();
    assert!(out.status.success(), "{:?}", output_text(&out));
    assert!(output_text(&out).0.contains(&format!("reloaded: version {v1}")), "{:?}", output_text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_set_is_recorded_but_never_enforced() {
    let tmp = tempfile::tempdir().unwrap();
    let shadow = tmp.path().join("next");
    starter_policies(&shadow);
    std::fs::write(
        shadow.join("lockdown.cedar"),
        "@id(\"next.no-ticket-reads\")\nforbid (\n  principal,\n  action == Mandate::Action::\"tickets.read\",\n  resource\n);\n",
    )
    .unwrap();
    let server = Server::start_with(Options { extra_args: vec!["--shadow-policy-dir".into(), shadow.display().to_string()], envs: vec![] });
    let status = server.admin().policy_status().await.unwrap();
    let shadow_version = status.shadow_version.clone().expect("a shadow version");
    assert_ne!(shadow_version, status.version);
    let (agent, mandate, pep) = reading_agent(&server).await;

    // Enforced: allowed. Shadow: the forbid would have denied it.
    let r = pep.evaluate(&evaluation(&agent, &mandate, "tickets.read", "ticket", "7", "internal")).await.unwrap();
    assert!(r.decision, "{r:?}");
    assert_eq!(r.context.as_ref().unwrap()["policies"], json!(["agents.read-within-task"]));
    assert_eq!(r.context.as_ref().unwrap()["policy_version"], status.version);
    let ev = decision_event(&server, &decision_id(&r)).await;
    assert_eq!(ev["details"]["decision"], true);
    assert_eq!(
        ev["details"]["shadow"],
        json!({ "decision": false, "reason": "forbidden_by_policy", "policies": ["next.no-ticket-reads"], "policy_version": shadow_version })
    );

    // An action the shadow set does not forbid: both agree.
    let r = pep.evaluate(&evaluation(&agent, &mandate, "tickets.search", "ticket", "7", "internal")).await.unwrap();
    assert!(r.decision, "{r:?}");
    let ev = decision_event(&server, &decision_id(&r)).await;
    assert_eq!(ev["details"]["shadow"]["decision"], true);
    assert_eq!(ev["details"]["shadow"]["reason"], "allowed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_to_the_shadow_set_alone_is_reloaded_and_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let shadow = tmp.path().join("next");
    starter_policies(&shadow);
    let server = Server::start_with(Options { extra_args: vec!["--shadow-policy-dir".into(), shadow.display().to_string()], envs: vec![] });
    let admin = server.admin();
    let before = admin.policy_status().await.unwrap();
    let shadow_v0 = before.shadow_version.clone().unwrap();

    std::fs::write(
        shadow.join("lockdown.cedar"),
        "@id(\"next.no-ticket-reads\")\nforbid (principal, action == Mandate::Action::\"tickets.read\", resource);\n",
    )
    .unwrap();
    let shadow_v1 = poll("the server to load the new shadow set", || async {
        let v = admin.policy_status().await.unwrap().shadow_version.unwrap();
        (v != shadow_v0).then_some(v)
    })
    .await;
    // The enforced set did not change, but the trail says which shadow set is now evaluated.
    assert_eq!(admin.policy_status().await.unwrap().version, before.version);
    let reloaded = poll("the shadow reload to be audited", || async {
        events_of_kind(&server, "policy.reloaded").await.into_iter().find(|e| e["details"]["shadow_version"] == shadow_v1.as_str())
    })
    .await;
    assert_eq!(reloaded["details"]["version"], before.version.as_str());

    // A broken shadow set is refused like a broken enforced set.
    std::fs::write(shadow.join("oops.cedar"), "forbid (principal, action, resource\n").unwrap();
    let out = server.cli().args(["policy", "reload"]).output().unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("shadow: oops.cedar:"), "{stderr}");
    assert_eq!(admin.policy_status().await.unwrap().shadow_version, Some(shadow_v1));
}

/// The starter schema plus people, groups and documents, and an action on documents.
fn people_schema() -> String {
    let starter = mandate_policy::PolicySources::starter().schema;
    let close = starter.rfind('}').unwrap();
    format!(
        "entity Group;\nentity User in [Group];\nentity Doc = {{ classification: Long, classification_label: String }};\n\n{}\n  action \"docs.read\" in [Action::\"read\"] appliesTo {{\n    principal: [User],\n    resource: [Doc],\n    context: RequestContext,\n  }};\n}}\n",
        &starter[..close]
    )
}

fn person_asks(who: &str) -> Value {
    json!({
        "subject": { "type": "User", "id": who },
        "action": { "name": "docs.read" },
        "resource": { "type": "Doc", "id": "handbook", "properties": { "classification": "internal" } }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn loaded_entities_decide_for_subjects_that_are_not_agents() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("policies");
    starter_policies(&dir);
    std::fs::write(dir.join("schema.cedarschema"), people_schema()).unwrap();
    std::fs::write(
        dir.join("docs.cedar"),
        "@id(\"docs.admins-read\")\npermit (\n  principal in Group::\"admins\",\n  action in Mandate::Action::\"read\",\n  resource is Doc\n);\n",
    )
    .unwrap();
    let out = mandate_cmd().args(["policy", "validate"]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{:?}", output_text(&out));
    let server = Server::start_with(Options { extra_args: vec!["--policy-dir".into(), dir.display().to_string()], envs: vec![] });
    let pep = pep(&server).await;
    let ask = |who: &str| serde_json::from_value::<mandate_proto::authzen::EvaluationRequest>(person_asks(who)).unwrap();

    // Before any entity data, alice is in no group.
    let r = pep.evaluate(&ask("alice")).await.unwrap();
    assert!(!r.decision);
    assert_eq!(reason(&r), "no_policy_permits");

    let entities = tmp.path().join("entities.json");
    std::fs::write(
        &entities,
        json!([
            { "uid": { "type": "Group", "id": "admins" }, "attrs": {}, "parents": [] },
            { "uid": { "type": "User", "id": "alice" }, "attrs": {}, "parents": [{ "type": "Group", "id": "admins" }] },
            { "uid": { "type": "User", "id": "bob" }, "attrs": {}, "parents": [] }
        ])
        .to_string(),
    )
    .unwrap();
    let out = server.cli().args(["entities", "load"]).arg(&entities).output().unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), "loaded 3 entities");
    assert_eq!(server.admin().policy_status().await.unwrap().entities, 3);

    let r = pep.evaluate(&ask("alice")).await.unwrap();
    assert!(r.decision, "{r:?}");
    assert_eq!(reason(&r), "allowed");
    assert_eq!(r.context.as_ref().unwrap()["policies"], json!(["docs.admins-read"]));
    let ev = decision_event(&server, &decision_id(&r)).await;
    assert_eq!(ev["details"]["subject"], json!({ "type": "User", "id": "alice" }));
    assert_eq!(ev["details"]["decision"], true);

    let r = pep.evaluate(&ask("bob")).await.unwrap();
    assert!(!r.decision);
    assert_eq!(reason(&r), "no_policy_permits");

    // The CLI's `evaluate` exits 0 on an allow and 2 on a deny.
    let pep_token = server.admin().create_token("pep", "cli").await.unwrap().token;
    for (who, code) in [("alice", 0), ("bob", 2)] {
        let req = tmp.path().join(format!("{who}.json"));
        std::fs::write(&req, person_asks(who).to_string()).unwrap();
        let out = server.cli().env("MANDATE_TOKEN", &pep_token).arg("evaluate").arg(&req).output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{who}: {:?}", output_text(&out));
    }

    // Entities that do not conform to the schema are refused; the loaded ones stay.
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, json!([{ "uid": { "type": "Widget", "id": "w" }, "attrs": {}, "parents": [] }]).to_string()).unwrap();
    let out = server.cli().args(["entities", "load"]).arg(&bad).output().unwrap();
    assert!(!out.status.success(), "{:?}", output_text(&out));
    assert!(output_text(&out).1.contains("Widget"), "{:?}", output_text(&out));
    assert!(pep.evaluate(&ask("alice")).await.unwrap().decision);
    let loaded = events_of_kind(&server, "entities.loaded").await;
    assert_eq!(loaded.len(), 1, "{loaded:?}");
    assert_eq!(loaded[0]["details"]["entities"], 3);
}
