#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

//! Human approval end to end: the real `mandate serve` with its embedded gateway in front of
//! the demo tool server, driven by the official Rust SDK's MCP client. A call policy marks
//! `@approval("required")` is held; an approver approves it over the API and the call goes
//! through once; the identical call again asks anew; other arguments are not covered; denial
//! and expiry answer with their reasons; the webhook is received with a valid signature; the
//! trail holds every request, decision and use with the approver's identity.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use common::gateway::{STEP, bounded, call, demo_tools, intent, reason, rmcp_connect};
use common::{Server, TestAgent, open_task, register_agent};
use hmac::{Hmac, Mac};
use mandate_client::Client;
use mandate_demo_tools::DemoToolsHandle;
use mandate_proto::admin::ApprovalView;
use serde_json::{Value, json};
use sha2::Sha256;

const UPSTREAM_SECRET: &str = "upstream-s3cret-value-7781";
const HOOK_SECRET: &str = "webhook-signing-key-0123456789";
const DEPLOY: &str = "deploy.production";

/// One webhook request as received.
#[derive(Clone, Debug)]
struct Hook {
    headers: HeaderMap,
    body: Bytes,
}

type Hooks = Arc<Mutex<Vec<Hook>>>;

/// A webhook receiver on 127.0.0.1 that records every request and answers 204.
async fn receiver() -> (String, Hooks) {
    let hooks: Hooks = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(|State(h): State<Hooks>, headers: HeaderMap, body: Bytes| async move {
                h.lock().unwrap().push(Hook { headers, body });
                axum::http::StatusCode::NO_CONTENT
            }),
        )
        .with_state(hooks.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, hooks)
}

struct Setup {
    server: Server,
    tools: DemoToolsHandle,
    agent: TestAgent,
    approver: Client,
}

/// `approvals`: lines of the `[approvals]` table; `wait`: the gateway's `approval_wait_secs`.
async fn setup(approvals: &str, wait: u64) -> Setup {
    let tools = demo_tools(Some(UPSTREAM_SECRET)).await;
    let toml = format!(
        r#"
[approvals]
{approvals}

[gateway]
approval_wait_secs = {wait}
[[gateway.upstream]]
name = "demo"
type = "mcp"
url = "{url}"
[gateway.upstream.inject]
header = "Authorization"
secret = "demo-tools-token"
format = "Bearer {{}}"
[gateway.upstream.tools."deploy.production"]
kind = "execute"
classification = "internal"
"#,
        url = tools.mcp_url()
    );
    let server = Server::start_configured(&toml, vec![("MANDATE_APPROVAL_WEBHOOK_SECRET".into(), HOOK_SECRET.into())]);
    server.admin().put_secret("demo-tools-token", UPSTREAM_SECRET, "demo tool server bearer").await.unwrap();
    let agent = register_agent(&server.admin(), "deploy-bot", &[]).await;
    let t = server.admin().create_token("approver", "carol@example.com").await.unwrap();
    let approver = server.admin().with_token(Some(t.token));
    Setup { server, tools, agent, approver }
}

fn args(version: &str) -> Value {
    json!({ "service": "payments", "version": version })
}

/// Polls until a pending approval other than those in `seen` appears.
async fn next_pending(c: &Client, seen: &[String]) -> ApprovalView {
    let deadline = Instant::now() + STEP;
    loop {
        let list = c.list_approvals(Some("pending"), None).await.unwrap();
        if let Some(a) = list.into_iter().find(|a| !seen.contains(&a.id)) {
            return a;
        }
        assert!(Instant::now() < deadline, "no new pending approval appeared");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn api_code(e: &mandate_client::ClientError) -> String {
    e.code().unwrap_or_else(|| panic!("expected an API error, got {e}")).to_owned()
}

#[tokio::test]
async fn a_held_call_goes_through_once_after_approval_and_only_for_the_identical_call() {
    let (hook_url, hooks) = receiver().await;
    let s = setup(&format!("webhook_url = \"{hook_url}\""), 3).await;
    let (mandate, task) = open_task(&s.server, &s.agent, &intent(&["demo.deploy.production"])).await;
    let client = Arc::new(rmcp_connect(&format!("{}/mcp/demo", s.server.url), &mandate, "2025-11-25", &[]).await.unwrap());

    // 1. Held: the call waits while a person looks; approved, it goes through.
    let held = {
        let c = client.clone();
        tokio::spawn(async move { call(&c, DEPLOY, args("4.12.1")).await })
    };
    let first = next_pending(&s.approver, &[]).await;
    assert_eq!(first.action, "demo.deploy.production");
    assert_eq!((first.resource_type.as_str(), first.resource_id.as_str()), ("tool", "demo.deploy.production"));
    assert_eq!(first.arguments, args("4.12.1"), "the approver sees the exact call");
    assert_eq!(first.task_id, task);
    assert_eq!(first.agent, "deploy-bot");
    assert!(first.expires_at_ms > first.created_at_ms);
    let approved = s.approver.approve(&first.id, Some("ok for ticket 4411".into())).await.unwrap();
    assert_eq!(approved.status, "approved");
    assert_eq!(approved.decided_by_label.as_deref(), Some("carol@example.com"));
    let result = bounded("held call", held).await.unwrap();
    assert!(result.is_ok(), "the approved call went through: {result:?}");
    assert_eq!(s.tools.state().deployments().len(), 1);
    let used = s.approver.get_approval(&first.id, None).await.unwrap();
    assert_eq!(used.status, "used", "a granted approval is single-use");
    assert!(used.used_by_decision.is_some());

    // 2. The identical call again needs a new approval (nobody answers: held, then told).
    let (code, data) = call(&client, DEPLOY, args("4.12.1")).await.unwrap_err();
    assert_eq!((code, reason(&data)), (-32001, "approval_required"));
    let second = data["approval_id"].as_str().expect("the refusal names the approval").to_owned();
    assert_ne!(second, first.id);
    assert_eq!(s.tools.state().deployments().len(), 1, "nothing ran without a person");

    // 3. An approval covers only its arguments: approve the second, then change the version.
    s.approver.approve(&second, None).await.unwrap();
    let (code, data) = call(&client, DEPLOY, args("9.9.9")).await.unwrap_err();
    assert_eq!((code, reason(&data)), (-32001, "approval_required"), "other arguments are not covered");
    let third = data["approval_id"].as_str().unwrap().to_owned();
    assert!(third != second && third != first.id);
    assert_eq!(s.tools.state().deployments().len(), 1);
    // ...while the identical call uses the grant at once, without waiting.
    let started = Instant::now();
    call(&client, DEPLOY, args("4.12.1")).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "a granted call is not held");
    assert_eq!(s.tools.state().deployments().len(), 2);

    // 4. Denied while held: the call is refused with that reason, and runs nowhere.
    let held = {
        let c = client.clone();
        tokio::spawn(async move { call(&c, DEPLOY, args("9.9.9")).await })
    };
    // The held call joins the pending request for the same call rather than opening another.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.approver.deny(&third, Some("not during the freeze".into())).await.unwrap();
    let (code, data) = bounded("denied call", held).await.unwrap().unwrap_err();
    assert_eq!((code, reason(&data)), (-32001, "approval_denied"));
    assert_eq!(data["approval_id"], third);
    assert_eq!(s.tools.state().deployments().len(), 2);

    // 5. Bad input: deciding twice, an unknown id, an auditor, a PEP; nothing changes.
    let e = s.approver.approve(&third, None).await.unwrap_err();
    assert_eq!(api_code(&e), "approval_decided");
    let e = s.approver.approve(&first.id, None).await.unwrap_err();
    assert_eq!(api_code(&e), "approval_decided", "a used approval cannot be approved again");
    let e = s.approver.approve("apr_unknown", None).await.unwrap_err();
    assert_eq!(api_code(&e), "approval_not_found");
    let auditor = s.server.admin().with_token(Some(s.server.admin().create_token("auditor", "audit").await.unwrap().token));
    assert!(auditor.list_approvals(Some("all"), None).await.unwrap().len() >= 3, "auditors read the queue");
    let e = auditor.deny(&second, None).await.unwrap_err();
    assert_eq!(api_code(&e), "forbidden");
    assert_eq!(s.approver.get_approval(&third, None).await.unwrap().status, "denied");

    // 6. The trail: every request, decision and use, with the approver's identity.
    let trail = s.server.admin().audit_trail(&task).await.unwrap();
    let of = |kind: &str| trail.events.iter().filter(|e| e["kind"] == kind).cloned().collect::<Vec<_>>();
    assert_eq!(of("approval.requested").len(), 3);
    let approvals = of("approval.approved");
    assert_eq!(approvals.len(), 2);
    assert_eq!(approvals[0]["details"]["approver"], "carol@example.com");
    assert_eq!(approvals[0]["details"]["comment"], "ok for ticket 4411");
    assert!(approvals[0]["actor"].as_str().unwrap().starts_with("token:"));
    assert_eq!(of("approval.denied").len(), 1);
    let uses = of("approval.used");
    assert_eq!(uses.len(), 2);
    assert_eq!(uses[0]["details"]["approval_id"], first.id);
    // The decision that used the approval is an allow naming it.
    let used_decision = uses[0]["details"]["decision_id"].as_str().unwrap();
    let d = trail.events.iter().find(|e| e["kind"] == "decision" && e["details"]["decision_id"] == used_decision).unwrap();
    assert_eq!(d["details"]["decision"], true);
    assert_eq!(d["details"]["approval_id"], first.id);
    assert!(s.server.admin().audit_verify().await.unwrap().ok);

    // 7. The webhook: one signed announcement per approval request.
    let deadline = Instant::now() + STEP;
    while hooks.lock().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "the webhook did not announce all three requests");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let got = hooks.lock().unwrap().clone();
    let mut announced = Vec::new();
    for h in &got {
        let sig = h.headers["x-mandate-signature"].to_str().unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
        mac.update(&h.body);
        let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(sig, want, "the body's HMAC-SHA256 signature is valid");
        assert_eq!(h.headers["x-mandate-event"], "approval.requested");
        let body: Value = serde_json::from_slice(&h.body).unwrap();
        assert_eq!(h.headers["x-mandate-delivery"].to_str().unwrap(), body["approval"]["id"].as_str().unwrap());
        assert!(!String::from_utf8_lossy(&h.body).contains(UPSTREAM_SECRET));
        announced.push(body["approval"]["id"].as_str().unwrap().to_owned());
    }
    announced.sort();
    let mut want = vec![first.id.clone(), second.clone(), third.clone()];
    want.sort();
    assert_eq!(announced, want);
    assert_eq!(s.approver.get_approval(&first.id, None).await.unwrap().notification.unwrap()["state"], "delivered");
    // A forged signature would not match: the key matters.
    let mut mac = Hmac::<Sha256>::new_from_slice(b"another key").unwrap();
    mac.update(&got[0].body);
    assert_ne!(got[0].headers["x-mandate-signature"].to_str().unwrap(), format!("sha256={}", hex::encode(mac.finalize().into_bytes())));
}

#[tokio::test]
async fn an_unanswered_request_expires_and_a_failing_webhook_is_visible() {
    // Nothing listens on port 9 of loopback: every delivery fails.
    let s = setup("ttl_secs = 1\nwebhook_url = \"http://127.0.0.1:9/hook\"\nwebhook_attempts = 2", 5).await;
    let (mandate, task) = open_task(&s.server, &s.agent, &intent(&["demo.deploy.production"])).await;
    let client = rmcp_connect(&format!("{}/mcp/demo", s.server.url), &mandate, "2026-07-28", &[]).await.unwrap();

    // Held, nobody answers, the request expires: refused as expired, not as pending.
    let (code, data) = call(&client, DEPLOY, args("1.0.0")).await.unwrap_err();
    assert_eq!((code, reason(&data)), (-32001, "approval_expired"));
    let id = data["approval_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + STEP;
    let a = loop {
        let a = s.approver.get_approval(&id, None).await.unwrap();
        if a.status == "expired" && a.notification.as_ref().is_some_and(|n| n["state"] == "failed") {
            break a;
        }
        assert!(Instant::now() < deadline, "approval not expired or delivery not failed: {a:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(a.notification.unwrap()["attempts"], 2);
    let e = s.approver.approve(&id, None).await.unwrap_err();
    assert_eq!(api_code(&e), "approval_expired", "an expired request cannot be approved");
    assert!(s.tools.state().deployments().is_empty());

    let trail = s.server.admin().audit_trail(&task).await.unwrap();
    assert!(trail.events.iter().any(|e| e["kind"] == "approval.expired" && e["details"]["approval_id"] == id));
    let deadline = Instant::now() + STEP;
    loop {
        let trail = s.server.admin().audit_trail(&task).await.unwrap();
        if trail.events.iter().any(|e| e["kind"] == "approval.notify_failed" && e["details"]["approval_id"] == id) {
            break;
        }
        assert!(Instant::now() < deadline, "the failed delivery is not in the trail");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = reqwest::get(format!("{}/metrics", s.server.url)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("mandate_webhook_deliveries_total{outcome=\"failed\"} 1"), "{metrics}");
}

#[tokio::test]
async fn the_cli_lists_and_decides_approvals() {
    let s = setup("", 0).await;
    let (mandate, _task) = open_task(&s.server, &s.agent, &intent(&["demo.deploy.production"])).await;
    let client = rmcp_connect(&format!("{}/mcp/demo", s.server.url), &mandate, "2026-07-28", &[]).await.unwrap();
    // With no wait configured the gateway answers at once with the approval id.
    let (_, data) = call(&client, DEPLOY, args("2.0.0")).await.unwrap_err();
    assert_eq!(reason(&data), "approval_required");
    let id = data["approval_id"].as_str().unwrap().to_owned();

    let out = s.server.cli().args(["approval", "list"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&id) && text.contains("demo.deploy.production") && text.contains("\"version\":\"2.0.0\""), "{text}");
    let out = s.server.cli().args(["approval", "approve", &id, "--comment", "ok for ticket 4411"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("approved"));
    let out = s.server.cli().args(["approval", "deny", &id]).output().unwrap();
    assert!(!out.status.success(), "deciding twice fails");
    assert!(String::from_utf8_lossy(&out.stderr).contains("approval_decided"), "{}", String::from_utf8_lossy(&out.stderr));
    // The retry goes through once.
    call(&client, DEPLOY, args("2.0.0")).await.unwrap();
    assert_eq!(s.tools.state().deployments().len(), 1);
}
