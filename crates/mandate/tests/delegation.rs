#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

//! Delegation end to end, over the real binary: RFC 8693 token exchange with the parent's
//! mandate as the subject token and the child agent's attestation as the actor token. The
//! child's mandate narrows every dimension of the parent's and is enforced as narrowed; a
//! request that widens anything is refused naming what; depth is bounded and cycles refused;
//! bad parents and actors are refused with nothing stored; policy reads the chain; the `act`
//! chain of a grandchild; revoking or completing a task revokes every task below it, at the
//! embedded and at a remote gateway; the root task's trail holds the whole tree.

mod common;

use std::time::Duration;

use common::gateway::{
    GatewayIdentity, GatewayProcess, bounded, call, demo_tools, eventually, reason as call_reason, rmcp_connect, stateless_request,
};
use common::{Options, Server, TestAgent, attestation, evaluation, open_task, pep, reason, register_agent};
use mandate_client::Client;
use mandate_proto::oauth::TokenExchangeResponse;
use serde_json::{Value, json};

const DELEGATION_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// The root task's intent: what every delegation below it must stay within.
fn parent_intent() -> Value {
    json!({
        "type": "agent_task",
        "purpose": "Resolve ticket 4411",
        "actions": ["tickets.read", "tickets.search", "tickets.write"],
        "resources": ["ticket:*", "kb:*"],
        "max_classification": "confidential",
        "lifetime_seconds": 600,
        "on_behalf_of": "bob@example.com"
    })
}

/// A read-only slice of [`parent_intent`]. It asks for no lifetime: it lives as long as the
/// parent at most.
fn sub_intent() -> Value {
    json!({
        "type": "agent_task",
        "purpose": "Read ticket 4411 and summarise it",
        "actions": ["tickets.read"],
        "resources": ["ticket:4411"],
        "max_classification": "internal"
    })
}

/// `base` with `key` set to `value`.
fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

/// `base` without `key`.
fn without(mut base: Value, key: &str) -> Value {
    base.as_object_mut().unwrap().remove(key);
    base
}

async fn delegate(server: &Server, mandate: &str, to: &TestAgent, intent: &Value) -> TokenExchangeResponse {
    server
        .anon()
        .delegate(mandate, &attestation(to, &server.url), intent)
        .await
        .unwrap_or_else(|e| panic!("delegation to {}: {e}", to.name))
}

/// A delegation request as raw HTTP: the status and the RFC 6749 error body.
async fn delegate_raw(server: &Server, mandate: &str, actor: Option<&str>, intent: &Value) -> (u16, Value) {
    let details = serde_json::to_string(&[intent]).unwrap();
    let mut form = vec![
        ("grant_type", DELEGATION_GRANT),
        ("subject_token", mandate),
        ("subject_token_type", ACCESS_TOKEN),
        ("authorization_details", details.as_str()),
    ];
    if let Some(a) = actor {
        form.push(("actor_token", a));
        form.push(("actor_token_type", JWT));
    }
    let resp = reqwest::Client::new().post(format!("{}/oauth2/token", server.url)).form(&form).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// Asserts a refusal: the HTTP status, RFC 6749 `error`, Mandate's `mandate_error`, and that
/// the description contains each of `names`.
fn assert_refused(got: &(u16, Value), status: u16, error: &str, code: &str, names: &[&str]) {
    let (s, body) = got;
    assert_eq!((*s, body["error"].as_str(), body["mandate_error"].as_str()), (status, Some(error), Some(code)), "{body}");
    let description = body["error_description"].as_str().unwrap();
    for n in names {
        assert!(description.contains(n), "`{n}` not in `{description}`");
    }
    assert!(body.get("access_token").is_none(), "{body}");
}

async fn task_count(server: &Server) -> usize {
    server.admin().list_tasks(None, None, None).await.unwrap().len()
}

async fn decide(server: &Server, agent: &TestAgent, mandate: &str, action: &str, rid: &str, class: &str) -> (bool, String) {
    let r = pep(server).await.evaluate(&evaluation(agent, mandate, action, "ticket", rid, class)).await.unwrap();
    (r.decision, reason(&r))
}

fn payload(token: &str) -> Value {
    Value::Object(mandate_token::peek(token).unwrap().claims)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_mandate_narrows_every_dimension_and_is_enforced() {
    let server = Server::start();
    let admin = server.admin();
    let root = register_agent(&admin, "support-bot", &[]).await;
    let child = register_agent(&admin, "research-bot", &[]).await;
    let (parent, parent_task) = open_task(&server, &root, &parent_intent()).await;

    let r = delegate(&server, &parent, &child, &with(sub_intent(), "lifetime_seconds", json!(120))).await;
    assert!(r.expires_in <= 120 && r.expires_in > 0, "{}", r.expires_in);
    assert_eq!(r.scope, "tickets.read");
    assert_eq!(r.authorization_details[0]["resources"], json!(["ticket:4411"]));
    // It acts for the same person as the parent, without saying so.
    assert_eq!(r.authorization_details[0]["on_behalf_of"], "bob@example.com");
    let task = admin.get_task(&r.task_id).await.unwrap();
    assert_eq!(
        (task.agent.as_str(), task.parent_id.as_deref(), task.root_id.as_str(), task.depth),
        ("research-bot", Some(parent_task.as_str()), parent_task.as_str(), 1)
    );
    assert!(task.expires_at_ms <= payload(&parent)["exp"].as_i64().unwrap() * 1000);

    // What it kept, it may do; what it left out, it may not, although the parent may.
    assert_eq!(decide(&server, &child, &r.access_token, "tickets.read", "4411", "internal").await, (true, "allowed".into()));
    for (action, rid, class, why) in [
        ("tickets.search", "4411", "internal", "action_outside_intent"),
        ("tickets.read", "4412", "internal", "resource_outside_intent"),
        ("tickets.read", "4411", "confidential", "classification_above_intent"),
    ] {
        assert_eq!(decide(&server, &child, &r.access_token, action, rid, class).await, (false, why.into()), "{action} {rid} {class}");
        assert!(decide(&server, &root, &parent, action, rid, class).await.0, "the parent may: {action} {rid} {class}");
    }
    // The subject of a decision is the agent acting, not the root agent the authority comes from.
    assert_eq!(decide(&server, &root, &r.access_token, "tickets.read", "4411", "internal").await, (false, "subject_mismatch".into()));

    // A sub-intent that asks for no lifetime expires with the parent at the latest.
    let r = delegate(&server, &parent, &child, &sub_intent()).await;
    assert!(payload(&r.access_token)["exp"].as_i64().unwrap() <= payload(&parent)["exp"].as_i64().unwrap());
    // The same intent as the parent's is not wider.
    let same = delegate(&server, &parent, &child, &without(parent_intent(), "lifetime_seconds")).await;
    assert_eq!(payload(&same.access_token)["scope"], payload(&parent)["scope"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn widening_any_dimension_is_refused_naming_it_and_stores_nothing() {
    let server = Server::start();
    let admin = server.admin();
    let root = register_agent(&admin, "support-bot", &[]).await;
    let child = register_agent(&admin, "research-bot", &[]).await;
    let (parent, parent_task) = open_task(&server, &root, &parent_intent()).await;
    let before = task_count(&server).await;

    let cases = [
        (with(sub_intent(), "actions", json!(["tickets.read", "payments.refund"])), "actions", "payments.refund"),
        (with(sub_intent(), "actions", json!(["tickets.*"])), "actions", "tickets.*"),
        (with(sub_intent(), "resources", json!(["invoice:7"])), "resources", "invoice:7"),
        (with(sub_intent(), "resources", json!(["*"])), "resources", "`*`"),
        (with(sub_intent(), "max_classification", json!("restricted")), "max_classification", "restricted"),
        (with(sub_intent(), "lifetime_seconds", json!(100_000)), "lifetime_seconds", "100000"),
        (with(sub_intent(), "on_behalf_of", json!("eve@example.com")), "on_behalf_of", "eve@example.com"),
    ];
    for (intent, field, value) in &cases {
        let got = delegate_raw(&server, &parent, Some(&attestation(&child, &server.url)), intent).await;
        assert_refused(&got, 400, "invalid_authorization_details", "intent_wider", &[field, value, &parent_task]);
    }
    assert_eq!(task_count(&server).await, before, "nothing was stored");
    // Each refusal is on the parent task's trail.
    let trail = admin.audit_trail(&parent_task).await.unwrap();
    let denied: Vec<&Value> = trail.events.iter().filter(|e| e["kind"] == "task.open_denied").collect();
    assert_eq!(denied.len(), cases.len());
    assert!(
        denied
            .iter()
            .all(|e| e["details"]["reason"] == "intent_wider" && e["details"]["delegation"]["parent_task_id"] == parent_task.as_str())
    );
    // A lifetime beyond what is left names both.
    let (_, body) = delegate_raw(&server, &parent, Some(&attestation(&child, &server.url)), &cases[5].0).await;
    assert!(body["error_description"].as_str().unwrap().contains("remaining lifetime"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grandchild_mandate_carries_the_act_chain() {
    let server = Server::start();
    let admin = server.admin();
    let a = register_agent(&admin, "support-bot", &[]).await;
    let b = register_agent(&admin, "research-bot", &[]).await;
    let c = register_agent(&admin, "summary-bot", &[]).await;
    let (root, root_task) = open_task(&server, &a, &parent_intent()).await;
    let child = delegate(&server, &root, &b, &with(sub_intent(), "resources", json!(["ticket:*"]))).await;
    let grandchild = delegate(&server, &child.access_token, &c, &sub_intent()).await;

    let claims = payload(&grandchild.access_token);
    // RFC 8693 §4.1: `sub` is whose authority flows (the root agent), the outermost `act` the
    // agent acting now, the nested ones those before it; the root is not repeated.
    assert_eq!(claims["sub"], a.spiffe_id.as_str());
    assert_eq!(claims["client_id"], c.spiffe_id.as_str());
    assert_eq!(claims["agent"], "summary-bot");
    assert_eq!(claims["act"], json!({ "sub": c.spiffe_id, "act": { "sub": b.spiffe_id } }));
    assert_eq!((claims["depth"].as_u64(), claims["parent_task_id"].as_str()), (Some(2), Some(child.task_id.as_str())));
    assert!(payload(&root).get("act").is_none());
    assert_eq!(payload(&child.access_token)["act"], json!({ "sub": b.spiffe_id }));

    let task = admin.get_task(&grandchild.task_id).await.unwrap();
    assert_eq!((task.parent_id.as_deref(), task.root_id.as_str(), task.depth), (Some(child.task_id.as_str()), root_task.as_str(), 2));

    let intro = pep(&server).await.introspect(&grandchild.access_token).await.unwrap();
    assert!(intro.active);
    assert_eq!((intro.sub.as_deref(), intro.client_id.as_deref()), (Some(a.spiffe_id.as_str()), Some(c.spiffe_id.as_str())));
    assert_eq!(intro.act, Some(claims["act"].clone()));
    assert_eq!(decide(&server, &c, &grandchild.access_token, "tickets.read", "4411", "internal").await, (true, "allowed".into()));

    // The evidence: the delegated task's opening names its parent, root, depth and delegator.
    let trail = admin.audit_trail(&root_task).await.unwrap();
    let opened = trail.events.iter().find(|e| e["kind"] == "task.opened" && e["task"] == grandchild.task_id.as_str()).unwrap();
    let d = &opened["details"];
    assert_eq!(
        (d["parent_task_id"].as_str(), d["root_task_id"].as_str(), d["depth"].as_u64()),
        (Some(child.task_id.as_str()), Some(root_task.as_str()), Some(2))
    );
    assert_eq!((opened["actor"].as_str(), d["delegated_by"].as_str()), (Some("agent:research-bot"), Some("research-bot")));
    assert_eq!(d["chain"], json!([a.spiffe_id, b.spiffe_id]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_is_limited_by_configuration() {
    let server = Server::start_configured("[tasks]\nmax_delegation_depth = 2\n", Vec::new());
    let admin = server.admin();
    let agents = [
        register_agent(&admin, "a-bot", &[]).await,
        register_agent(&admin, "b-bot", &[]).await,
        register_agent(&admin, "c-bot", &[]).await,
        register_agent(&admin, "d-bot", &[]).await,
    ];
    let (root, _) = open_task(&server, &agents[0], &parent_intent()).await;
    let one = delegate(&server, &root, &agents[1], &sub_intent()).await;
    let two = delegate(&server, &one.access_token, &agents[2], &sub_intent()).await;
    let before = task_count(&server).await;
    let got = delegate_raw(&server, &two.access_token, Some(&attestation(&agents[3], &server.url)), &sub_intent()).await;
    assert_refused(&got, 400, "invalid_request", "delegation_depth_exceeded", &["depth 2", "at most 2", &two.task_id]);
    assert_eq!(task_count(&server).await, before);

    // 0 turns delegation off; the setting is bounded.
    let off = Server::start_configured("[tasks]\nmax_delegation_depth = 0\n", Vec::new());
    let a = register_agent(&off.admin(), "a-bot", &[]).await;
    let b = register_agent(&off.admin(), "b-bot", &[]).await;
    let (m, _) = open_task(&off, &a, &parent_intent()).await;
    let got = delegate_raw(&off, &m, Some(&attestation(&b, &off.url)), &sub_intent()).await;
    assert_refused(&got, 400, "invalid_request", "delegation_depth_exceeded", &["turned off"]);
    let cfg = tempfile::tempdir().unwrap();
    let path = cfg.path().join("mandate.toml");
    std::fs::write(&path, "[tasks]\nmax_delegation_depth = 99\n").unwrap();
    let out = assert_cmd::Command::cargo_bin("mandate")
        .unwrap()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(cfg.path().join("data"))
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_delegation_depth"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycles_are_refused() {
    let server = Server::start();
    let admin = server.admin();
    let a = register_agent(&admin, "support-bot", &[]).await;
    let b = register_agent(&admin, "research-bot", &[]).await;
    let c = register_agent(&admin, "summary-bot", &[]).await;
    let (root, _) = open_task(&server, &a, &parent_intent()).await;
    let child = delegate(&server, &root, &b, &sub_intent()).await;
    let grandchild = delegate(&server, &child.access_token, &c, &sub_intent()).await;
    let before = task_count(&server).await;
    for (mandate, to) in
        [(&root, &a), (&child.access_token, &b), (&child.access_token, &a), (&grandchild.access_token, &a), (&grandchild.access_token, &b)]
    {
        let got = delegate_raw(&server, mandate, Some(&attestation(to, &server.url)), &sub_intent()).await;
        assert_refused(&got, 400, "invalid_request", "delegation_cycle", &[&format!("`{}`", to.name), "already in the delegation chain"]);
    }
    assert_eq!(task_count(&server).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parents_and_actors_are_refused_and_change_nothing() {
    let server = Server::start();
    let admin = server.admin();
    let a = register_agent(&admin, "support-bot", &[]).await;
    let b = register_agent(&admin, "research-bot", &[]).await;
    let (live, _) = open_task(&server, &a, &parent_intent()).await;

    // Revoked, completed and expired parents.
    let (revoked, revoked_task) = open_task(&server, &a, &parent_intent()).await;
    admin.revoke_task(&revoked_task, None).await.unwrap();
    let (completed, completed_task) = open_task(&server, &a, &parent_intent()).await;
    admin.complete_task(&completed_task, None).await.unwrap();
    let (expired, _) = open_task(&server, &a, &with(parent_intent(), "lifetime_seconds", json!(1))).await;
    // A foreign mandate: another server's, with keys this one does not know.
    let other = Server::start();
    let foreign_agent = register_agent(&other.admin(), "support-bot", &[]).await;
    let (foreign, _) = open_task(&other, &foreign_agent, &parent_intent()).await;
    // A forged one: a valid mandate with its claims changed.
    let mut parts: Vec<String> = live.split('.').map(str::to_owned).collect();
    let mut claims = payload(&live);
    claims["depth"] = json!(0);
    claims["authorization_details"][0]["max_classification"] = json!("restricted");
    parts[1] = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims.to_string());
    let forged = parts.join(".");
    // An attestation is not a mandate.
    let not_a_mandate = attestation(&a, &server.url);
    tokio::time::sleep(Duration::from_millis(1100)).await; // `expired` has run out
    let before = task_count(&server).await;

    for (mandate, error, code) in [
        (revoked.as_str(), "invalid_grant", "task_revoked"),
        (completed.as_str(), "invalid_grant", "task_completed"),
        (expired.as_str(), "invalid_grant", "task_expired"),
        (foreign.as_str(), "invalid_grant", "unknown_kid"),
        (forged.as_str(), "invalid_grant", "bad_signature"),
        (not_a_mandate.as_str(), "invalid_grant", "wrong_type"),
    ] {
        let got = delegate_raw(&server, mandate, Some(&attestation(&b, &server.url)), &sub_intent()).await;
        assert_refused(&got, 400, error, code, &[]);
    }

    // The actor: missing, not an attestation, of a disabled agent, replayed, unknown.
    let got = delegate_raw(&server, &live, None, &sub_intent()).await;
    assert_refused(&got, 400, "invalid_request", "missing_parameter", &["actor_token"]);
    // A mandate is never an attestation: its issuer is this server, not an agent.
    let got = delegate_raw(&server, &live, Some(&live), &sub_intent()).await;
    assert_refused(&got, 400, "invalid_grant", "unknown_issuer", &[]);
    let att = attestation(&b, &server.url);
    delegate(&server, &live, &b, &sub_intent()).await;
    server.anon().delegate(&live, &att, &sub_intent()).await.unwrap();
    let got = delegate_raw(&server, &live, Some(&att), &sub_intent()).await;
    assert_refused(&got, 400, "invalid_grant", "replayed_jti", &[]);
    let after_good = task_count(&server).await;
    assert_eq!(after_good, before + 2);
    admin.disable_agent(&b.name).await.unwrap();
    let got = delegate_raw(&server, &live, Some(&attestation(&b, &server.url)), &sub_intent()).await;
    assert_refused(&got, 400, "invalid_grant", "agent_disabled", &["research-bot"]);
    // Registered on the other server only.
    let stranger = register_agent(&other.admin(), "stranger", &[]).await;
    let got = delegate_raw(&server, &live, Some(&attestation(&stranger, &server.url)), &sub_intent()).await;
    assert_refused(&got, 400, "invalid_grant", "unknown_agent", &[]);
    // A parent whose agent is disabled cannot delegate either.
    let c = register_agent(&admin, "summary-bot", &[]).await;
    admin.disable_agent(&a.name).await.unwrap();
    let got = delegate_raw(&server, &live, Some(&attestation(&c, &server.url)), &sub_intent()).await;
    assert_refused(&got, 400, "invalid_grant", "task_revoked", &[]);
    assert_eq!(task_count(&server).await, after_good, "no refusal stored anything");
}

/// A policy directory: the starter set plus `extra` in `delegation.cedar`.
fn policy_dir(extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    mandate_policy::PolicySources::starter().write_to(dir.path()).unwrap();
    std::fs::write(dir.path().join("delegation.cedar"), extra).unwrap();
    dir
}

const DELEGATION_POLICIES: &str = r#"
// No execute action two hops or more from the human who started the root task.
@id("guards.no-execute-two-hops-from-a-human")
forbid (principal, action in Mandate::Action::"execute", resource)
when { context has task && context.task.depth >= 2 };

// Nothing may be handed on by way of intern-bot.
@id("guards.nothing-through-intern")
forbid (principal, action == Mandate::Action::"task.open", resource is Mandate::Task)
when { resource.chain.contains("spiffe://mandate.local/agent/intern-bot") };

// Exports stay with the agent that opened the task: not for anyone support-bot delegated to.
@id("guards.no-export-below-support-bot")
forbid (principal, action == Mandate::Action::"tickets.export", resource)
when { context has task && context.task.chain.contains("spiffe://mandate.local/agent/support-bot") };
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reads_the_chain_and_the_depth() {
    let dir = policy_dir(DELEGATION_POLICIES);
    let server =
        Server::start_with(Options { extra_args: vec!["--policy-dir".into(), dir.path().display().to_string()], ..Default::default() });
    let admin = server.admin();
    let a = register_agent(&admin, "support-bot", &[]).await;
    let b = register_agent(&admin, "research-bot", &[]).await;
    let c = register_agent(&admin, "summary-bot", &[]).await;
    let intern = register_agent(&admin, "intern-bot", &[]).await;
    let intent = json!({
        "type": "agent_task", "purpose": "Ship the fix for ticket 4411",
        "actions": ["tickets.read", "tickets.export", "deploy.production"], "resources": ["ticket:*", "service:*"],
        "max_classification": "internal", "lifetime_seconds": 600
    });
    let (root, _) = open_task(&server, &a, &intent).await;
    let below = without(intent.clone(), "lifetime_seconds");
    let one = delegate(&server, &root, &b, &below).await;
    let two = delegate(&server, &one.access_token, &c, &below).await;
    let ask = |agent: &TestAgent, mandate: &str, action: &str, rtype: &str| evaluation(agent, mandate, action, rtype, "web", "internal");
    let pep = pep(&server).await;
    let decided = |r: mandate_proto::authzen::EvaluationResponse| {
        let policies = r.context.as_ref().map(|c| c["policies"].clone()).unwrap_or_default();
        (reason(&r), policies)
    };
    // Execute: held for approval one hop from the human, forbidden two hops away.
    assert_eq!(decided(pep.evaluate(&ask(&b, &one.access_token, "deploy.production", "service")).await.unwrap()).0, "approval_required");
    let (why, policies) = decided(pep.evaluate(&ask(&c, &two.access_token, "deploy.production", "service")).await.unwrap());
    assert_eq!((why.as_str(), policies), ("forbidden_by_policy", json!(["guards.no-execute-two-hops-from-a-human"])));
    // The chain is the agents who delegated: support-bot itself may export, those below it not.
    assert_eq!(decided(pep.evaluate(&ask(&a, &root, "tickets.export", "ticket")).await.unwrap()).0, "allowed");
    for (agent, mandate) in [(&b, &one.access_token), (&c, &two.access_token)] {
        let (why, policies) = decided(pep.evaluate(&ask(agent, mandate, "tickets.export", "ticket")).await.unwrap());
        assert_eq!((why.as_str(), policies), ("forbidden_by_policy", json!(["guards.no-export-below-support-bot"])), "{}", agent.name);
    }

    // Opening a delegated task reads the chain too: to intern-bot is fine, past it is not.
    let via_intern = delegate(&server, &root, &intern, &below).await;
    let before = task_count(&server).await;
    let got = delegate_raw(&server, &via_intern.access_token, Some(&attestation(&c, &server.url)), &sub_intent()).await;
    assert_refused(&got, 400, "invalid_authorization_details", "policy_denied", &["summary-bot"]);
    assert_eq!(task_count(&server).await, before);
    let trail = admin.audit_trail(&via_intern.task_id).await.unwrap();
    let denied = trail.events.iter().find(|e| e["kind"] == "task.open_denied").unwrap();
    assert_eq!(denied["details"]["policies"], json!(["guards.nothing-through-intern"]));
    assert_eq!(denied["details"]["delegation"]["to"], "summary-bot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completing_the_parent_revokes_the_child() {
    let server = Server::start();
    let admin = server.admin();
    let a = register_agent(&admin, "support-bot", &[]).await;
    let b = register_agent(&admin, "research-bot", &[]).await;
    let c = register_agent(&admin, "summary-bot", &[]).await;
    let (root, root_task) = open_task(&server, &a, &parent_intent()).await;
    let child = delegate(&server, &root, &b, &with(sub_intent(), "resources", json!(["ticket:*"]))).await;
    let grandchild = delegate(&server, &child.access_token, &c, &sub_intent()).await;
    let sibling = delegate(&server, &root, &c, &sub_intent()).await;

    // Completing the child (with its own mandate) ends its subtree, not its parent or siblings.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/tasks/{}/complete", server.url, child.task_id))
        .bearer_auth(&child.access_token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(admin.get_task(&child.task_id).await.unwrap().status, "completed");
    let g = admin.get_task(&grandchild.task_id).await.unwrap();
    assert_eq!(g.status, "revoked", "a task delegated from a completed one is revoked, not completed");
    assert!(g.ended_reason.as_deref().unwrap().contains(&child.task_id), "{g:?}");
    assert_eq!(decide(&server, &c, &grandchild.access_token, "tickets.read", "4411", "internal").await, (false, "task_revoked".into()));
    assert_eq!(decide(&server, &c, &sibling.access_token, "tickets.read", "4411", "internal").await, (true, "allowed".into()));
    assert_eq!(admin.get_task(&root_task).await.unwrap().status, "live");

    // Completing the root ends everything below it.
    let ended = admin.complete_task(&root_task, None).await.unwrap();
    assert_eq!(ended.ended, [root_task.as_str(), sibling.task_id.as_str()]);
    let s = admin.get_task(&sibling.task_id).await.unwrap();
    assert_eq!(s.status, "revoked");
    assert!(s.ended_reason.as_deref().unwrap().contains(&root_task), "{s:?}");
    assert!(!pep(&server).await.introspect(&sibling.access_token).await.unwrap().active);
    let trail = admin.audit_trail(&root_task).await.unwrap();
    let revoked = trail.events.iter().find(|e| e["kind"] == "task.revoked" && e["task"] == sibling.task_id.as_str()).unwrap();
    assert_eq!(revoked["details"]["cascade_from"], root_task.as_str());
}

#[test]
fn the_cli_delegates() {
    let server = Server::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (a, b) = rt.block_on(async {
        let admin = server.admin();
        (register_agent(&admin, "support-bot", &[]).await, register_agent(&admin, "research-bot", &[]).await)
    });
    let (parent, parent_task) = rt.block_on(open_task(&server, &a, &parent_intent()));
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("research-bot.jwk");
    std::fs::write(&key, b.private_jwk.to_string()).unwrap();
    let intent = dir.path().join("sub-intent.json");
    std::fs::write(&intent, sub_intent().to_string()).unwrap();

    let out = server
        .cli()
        .args(["agent", "delegate", "--mandate", &parent, "--to", "research-bot", "--key"])
        .arg(&key)
        .arg("--intent")
        .arg(&intent)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let child = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(payload(&child)["parent_task_id"], parent_task.as_str());
    assert!(String::from_utf8_lossy(&out.stderr).contains("delegated to research-bot"));

    let out = server
        .cli()
        .args(["agent", "delegate", "--json", "--mandate", "-", "--to", "research-bot", "--key"])
        .arg(&key)
        .arg("--intent")
        .arg(&intent)
        .write_stdin(parent.clone())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["task_id"].as_str().unwrap().starts_with("task"), "{r}");

    let wide = dir.path().join("wide.json");
    std::fs::write(&wide, with(sub_intent(), "max_classification", json!("restricted")).to_string()).unwrap();
    let out = server
        .cli()
        .args(["agent", "delegate", "--mandate", &parent, "--to", "research-bot", "--key"])
        .arg(&key)
        .arg("--intent")
        .arg(&wide)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("intent_wider") && err.contains("max_classification"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Cascading revocation at the gateway
// ---------------------------------------------------------------------------------------------

const TOOL_SECRET: &str = "delegation-upstream-s3cret-5512";

fn gateway_tables(prefix: &str, mcp_url: &str) -> String {
    format!(
        r#"
[[{prefix}upstream]]
name = "demo"
type = "mcp"
url = "{mcp_url}"
[{prefix}upstream.inject]
secret = "demo-tools-token"
[{prefix}upstream.tools."tickets.search"]
kind = "read"
classification = "internal"
"#
    )
}

/// The root's intent for the gateway's tool, and the same for every task below it.
fn tool_intent() -> Value {
    json!({
        "type": "agent_task", "purpose": "Find the checkout tickets",
        "actions": ["demo.tickets.search"], "resources": ["*"], "max_classification": "internal", "lifetime_seconds": 600
    })
}

/// support-bot's task, delegated to research-bot, delegated to summary-bot: (root mandate,
/// root task, child, grandchild).
async fn tree(server: &Server) -> (String, String, TokenExchangeResponse, TokenExchangeResponse) {
    let admin = server.admin();
    let a = register_agent(&admin, "support-bot", &[]).await;
    let b = register_agent(&admin, "research-bot", &[]).await;
    let c = register_agent(&admin, "summary-bot", &[]).await;
    let (root, root_task) = open_task(server, &a, &tool_intent()).await;
    let below = without(tool_intent(), "lifetime_seconds");
    let child = delegate(server, &root, &b, &below).await;
    let grandchild = delegate(server, &child.access_token, &c, &below).await;
    (root, root_task, child, grandchild)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_root_stops_a_grandchild_at_the_gateway() {
    let tools = demo_tools(Some(TOOL_SECRET)).await;
    let (server, _cfg) =
        common::gateway::serve_with_gateway(&format!("[gateway]\n{}", gateway_tables("gateway.", &tools.mcp_url())), vec![]);
    let admin = server.admin();
    admin.put_secret("demo-tools-token", TOOL_SECRET, "demo tool server bearer").await.unwrap();
    let (_, root_task, child, grandchild) = tree(&server).await;

    let url = format!("{}/mcp/demo", server.url);
    let client = rmcp_connect(&url, &grandchild.access_token, "2025-11-25", &[]).await.unwrap();
    let ok = call(&client, "tickets.search", json!({"query": "checkout"})).await.unwrap();
    assert_eq!(ok["structuredContent"]["tickets"][0]["id"], "T-42", "{ok}");

    let ended = admin.revoke_task(&root_task, Some("the customer withdrew".into())).await.unwrap();
    assert_eq!(ended.ended, [root_task.as_str(), child.task_id.as_str(), grandchild.task_id.as_str()]);
    // The grandchild's session was closed with its task; its mandate is refused on the next
    // request, and a stateless call is decided and refused too.
    let _ = bounded("cancel", client.cancel()).await;
    let err = rmcp_connect(&url, &grandchild.access_token, "2025-11-25", &[]).await.err();
    assert!(err.is_some(), "a revoked grandchild could open a session");
    let (status, body) = stateless_request(
        &url,
        &grandchild.access_token,
        "tools/call",
        Some("tickets.search"),
        json!({"name": "tickets.search", "arguments": {"query": "again"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["error"]["code"].as_i64(), call_reason(&body["error"]["data"])), (Some(-32001), "task_revoked"), "{body}");

    // The root task's trail holds the whole tree: the grandchild's opening, its calls, and its
    // revocation as a consequence of the root's.
    let trail = admin.audit_trail(&root_task).await.unwrap();
    let of = |kind: &str| trail.events.iter().filter(|e| e["kind"] == kind && e["task"] == grandchild.task_id.as_str()).count();
    assert_eq!((of("task.opened"), of("token.issued"), of("task.revoked")), (1, 1, 1));
    let calls = eventually("the grandchild's tool calls in the root's trail", Duration::from_secs(10), || async {
        let trail = admin.audit_trail(&root_task).await.unwrap();
        let calls: Vec<Value> =
            trail.events.into_iter().filter(|e| e["kind"] == "tool.call" && e["task"] == grandchild.task_id.as_str()).collect();
        (calls.len() >= 2).then_some(calls)
    })
    .await;
    assert_eq!(calls[0]["actor"], "spiffe://mandate.local/agent/summary-bot", "the actor is the agent acting");
    assert_eq!((calls[0]["details"]["forwarded"].as_bool(), calls[1]["details"]["reason"].as_str()), (Some(true), Some("task_revoked")));
    tools.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_root_stops_a_grandchild_at_a_remote_gateway() {
    let master = mandate_secrets::MasterKey::generate().to_base64().to_string();
    let server = Server::start_with(Options { envs: vec![("MANDATE_MASTER_KEY".into(), master)], ..Default::default() });
    let admin = server.admin();
    admin.put_secret("demo-tools-token", TOOL_SECRET, "demo tool server bearer").await.unwrap();
    let identity = GatewayIdentity::register(&admin, "edge", &["demo-tools-token"]).await;
    let tools = demo_tools(Some(TOOL_SECRET)).await;
    let gw = GatewayProcess::start(
        &gateway_tables("", &tools.mcp_url()),
        &[
            ("MANDATE_URL", server.url.as_str()),
            ("MANDATE_TOKEN", identity.token.as_str()),
            ("MANDATE_GATEWAY_KEY_FILE", identity.key_path().as_str()),
        ],
    );
    let (_, root_task, _, grandchild) = tree(&server).await;
    let url = format!("{}/mcp/demo", gw.url);
    let client = rmcp_connect(&url, &grandchild.access_token, "2026-07-28", &[]).await.unwrap_or_else(|e| panic!("{e}\n{}", gw.log()));
    call(&client, "tickets.search", json!({"query": "checkout"})).await.unwrap();

    admin.revoke_task(&root_task, None).await.unwrap();
    // The very next call is refused (decisions are asked of the control plane)…
    let (code, data) = call(&client, "tickets.search", json!({"query": "again"})).await.unwrap_err();
    assert_eq!((code, call_reason(&data)), (-32001, "task_revoked"), "{data}");
    // …and the revocation feed brings the grandchild's own revocation to the gateway, which
    // then refuses it by itself, before asking.
    eventually("the remote gateway to hear the grandchild was revoked", Duration::from_secs(5), || async {
        let (status, body) = stateless_request(&url, &grandchild.access_token, "tools/list", None, json!({})).await;
        assert_eq!(status, 200, "{body}");
        body.get("error").map(|e| assert_eq!(call_reason(&e["data"]), "task_revoked", "{body}"))
    })
    .await;
    let _ = bounded("cancel", client.cancel()).await;
    tools.shutdown().await.unwrap();
}

/// The typed client's view of a refusal: the finer code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reports_the_refusals_code() {
    let server = Server::start();
    let admin = server.admin();
    let a = register_agent(&admin, "support-bot", &[]).await;
    let (parent, _) = open_task(&server, &a, &parent_intent()).await;
    let anon: Client = server.anon();
    let err = anon.delegate(&parent, &attestation(&a, &server.url), &sub_intent()).await.unwrap_err();
    assert_eq!(err.code(), Some("delegation_cycle"), "{err}");
}
