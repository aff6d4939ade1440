//! The whole control-plane story against the real binary, over HTTP and the CLI:
//! register → attest → mandate → allowed → out-of-intent deny → policy deny → revoke → deny →
//! introspect inactive → audit verify passes → the task's trail tells it in order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

mod common;

use common::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn register_attest_decide_revoke_verify() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();

    // The agent's key pair and registration, through the CLI.
    server.cli().args(["agent", "keygen", "--name", "support-bot", "--out-dir"]).arg(dir.path()).assert().success();
    let out = server
        .cli()
        .args([
            "agent",
            "register",
            "--name",
            "support-bot",
            "--owner",
            "alice@example.com",
            "--purpose",
            "Summarise support tickets",
            "--public-key",
        ])
        .arg(dir.path().join("support-bot.pub.jwk"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let spiffe = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(spiffe, "spiffe://mandate.local/agent/support-bot");

    // The agent side: attest and open a task with an intent, through the CLI.
    let intent = json!({
        "type": "agent_task", "purpose": "Summarise ticket 4411",
        "actions": ["tickets.read", "tickets.write"], "resources": ["ticket:*"],
        "max_classification": "internal", "lifetime_seconds": 300, "on_behalf_of": "bob@example.com"
    });
    std::fs::write(dir.path().join("intent.json"), intent.to_string()).unwrap();
    let out = server
        .cli()
        .env_remove("MANDATE_TOKEN")
        .args(["agent", "token", "--name", "support-bot", "--key"])
        .arg(dir.path().join("support-bot.jwk"))
        .arg("--intent")
        .arg(dir.path().join("intent.json"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mandate = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(mandate.split('.').count(), 3, "a JWT");

    // The enforcement point asks for decisions with its own pep token.
    let pep = pep(&server).await;
    let ask = |action: &str, id: &str, class: &str| {
        serde_json::from_value::<mandate_proto::authzen::EvaluationRequest>(json!({
            "subject": { "type": "agent", "id": spiffe, "properties": { "mandate": mandate } },
            "action": { "name": action },
            "resource": { "type": "ticket", "id": id, "properties": { "classification": class } }
        }))
        .unwrap()
    };

    let allowed = pep.evaluate(&ask("tickets.read", "42", "internal")).await.unwrap();
    assert!(allowed.decision, "{allowed:?}");
    let ctx = allowed.context.clone().unwrap();
    assert_eq!(ctx["reason"], "allowed");
    assert_eq!(ctx["policies"], json!(["agents.read-within-task"]));
    assert!(ctx["policy_version"].as_str().unwrap().starts_with("sha256:"));
    let task_id = ctx["task_id"].as_str().unwrap().to_owned();

    // Out of intent: an action not declared, and a classification above the ceiling.
    let r = pep.evaluate(&ask("tickets.export", "42", "internal")).await.unwrap();
    assert!(!r.decision);
    assert_eq!(reason(&r), "action_outside_intent");
    // Denied before policy ran, the decision still names the policy set in force.
    assert_eq!(r.context.as_ref().unwrap()["policy_version"], ctx["policy_version"]);
    let r = pep.evaluate(&ask("tickets.read", "42", "confidential")).await.unwrap();
    assert_eq!(reason(&r), "classification_above_intent");
    let mut other = ask("tickets.read", "42", "internal");
    other.resource.as_mut().unwrap().kind = Some("invoice".into());
    let r = pep.evaluate(&other).await.unwrap();
    assert_eq!(reason(&r), "resource_outside_intent");

    // Inside the intent, but no policy permits a write by an agent that is not a writer.
    let r = pep.evaluate(&ask("tickets.write", "42", "internal")).await.unwrap();
    assert!(!r.decision);
    assert_eq!(reason(&r), "no_policy_permits");

    // Introspection says active while the task lives.
    let intro = pep.introspect(&mandate).await.unwrap();
    assert!(intro.active);
    assert_eq!(intro.task_id.as_deref(), Some(task_id.as_str()));

    // Revoke through the CLI: the very next decision is a deny.
    server.cli().args(["task", "revoke", &task_id]).assert().success();
    let r = pep.evaluate(&ask("tickets.read", "42", "internal")).await.unwrap();
    assert!(!r.decision);
    assert_eq!(reason(&r), "task_revoked");
    let intro = pep.introspect(&mandate).await.unwrap();
    assert!(!intro.active);
    assert!(intro.scope.is_none(), "an inactive token says only active=false");

    // The trail is whole, and the task's evidence reads in order.
    let out = server.cli().args(["audit", "verify"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: "));
    let trail = server.admin().audit_trail(&task_id).await.unwrap().events;
    let kinds: Vec<&str> = trail.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["task.opened", "token.issued", "decision", "decision", "decision", "decision", "decision", "task.revoked", "decision"]
    );
    let decisions: Vec<(bool, &str)> = trail
        .iter()
        .filter(|e| e["kind"] == "decision")
        .map(|e| (e["details"]["decision"].as_bool().unwrap(), e["details"]["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(decisions[0], (true, "allowed"));
    assert_eq!(decisions.last().unwrap(), &(false, "task_revoked"));
    assert_eq!(trail[0]["details"]["intent"]["on_behalf_of"], "bob@example.com");
    // The mandate itself is never written to the trail.
    let export = server.admin().audit_export("jsonl").await.unwrap();
    assert!(!export.contains(&mandate));
    let ocsf = server.admin().audit_export("ocsf").await.unwrap();
    let first_decision: Value = ocsf.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).find(|v| v["class_uid"] == 6003).unwrap();
    assert_eq!(first_decision["metadata"]["product"]["name"], "Mandate");
}

#[tokio::test(flavor = "multi_thread")]
async fn complete_and_kill_switch_end_tasks_at_once() {
    let server = Server::start();
    let admin = server.admin();
    let agent = register_agent(&admin, "worker", &[]).await;
    let pep = pep(&server).await;

    // The agent completes its own task with its mandate.
    let (mandate, task) = open_task(&server, &agent, &read_intent()).await;
    let ok = pep.evaluate(&evaluation(&agent, &mandate, "tickets.read", "ticket", "1", "public")).await.unwrap();
    assert!(ok.decision);
    let own = server.anon().with_token(Some(mandate.clone()));
    let done = own.complete_task(&task, None).await.unwrap();
    assert_eq!(done.task.status, "completed");
    let r = pep.evaluate(&evaluation(&agent, &mandate, "tickets.read", "ticket", "1", "public")).await.unwrap();
    assert_eq!(reason(&r), "task_completed");
    // Completing twice is a clear conflict, not a silent success.
    let again = admin.complete_task(&task, None).await.unwrap_err();
    assert_eq!(again.code(), Some("task_not_live"));

    // The kill switch revokes every live task of the agent and refuses new attestations.
    let (m1, _) = open_task(&server, &agent, &read_intent()).await;
    let (m2, _) = open_task(&server, &agent, &read_intent()).await;
    let r = admin.disable_agent("worker").await.unwrap();
    assert_eq!(r.revoked_tasks.len(), 2);
    for m in [&m1, &m2] {
        let d = pep.evaluate(&evaluation(&agent, m, "tickets.read", "ticket", "1", "public")).await.unwrap();
        assert!(!d.decision);
        assert_eq!(reason(&d), "task_revoked");
    }
    let err = server.anon().exchange(&attestation(&agent, &server.url), &read_intent()).await.unwrap_err();
    assert_eq!(err.code(), Some("agent_disabled"));
    admin.enable_agent("worker").await.unwrap();
    let (m3, _) = open_task(&server, &agent, &read_intent()).await;
    assert!(pep.evaluate(&evaluation(&agent, &m3, "tickets.read", "ticket", "1", "public")).await.unwrap().decision);
}

#[tokio::test(flavor = "multi_thread")]
async fn roles_limit_what_a_token_may_do() {
    let server = Server::start();
    let pep = pep(&server).await;
    let err = pep.list_agents().await.unwrap_err();
    assert_eq!(err.code(), Some("forbidden"));
    let auditor = server.admin().create_token("auditor", "a").await.unwrap();
    let auditor = server.anon().with_token(Some(auditor.token));
    assert!(auditor.audit_verify().await.unwrap().ok);
    let err = auditor.revoke_task("task_x", None).await.unwrap_err();
    assert_eq!(err.code(), Some("forbidden"));
    let err = server.anon().list_agents().await.unwrap_err();
    assert_eq!(err.code(), Some("unauthenticated"));
    let bad = server.anon().with_token(Some("mdt_nope".into()));
    assert_eq!(bad.list_agents().await.unwrap_err().code(), Some("unauthenticated"));
    // Each refusal is in the trail.
    let events = server.admin().audit_events(&[("kind", "admin.auth_failed".to_owned())]).await.unwrap().events;
    assert!(events.len() >= 4, "{events:?}");
}
