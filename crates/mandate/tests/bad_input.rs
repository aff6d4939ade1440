//! Bad input gets a clear, stable error — never a panic, never a half-written state.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

mod common;

use common::*;
use serde_json::{Value, json};

async fn raw(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
    rid: Option<&str>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let http = reqwest::Client::new();
    let mut b = http.request(method.parse().unwrap(), format!("{}{}", server.url, path)).header("content-type", content_type).body(body);
    if let Some(t) = token {
        b = b.bearer_auth(t);
    }
    if let Some(r) = rid {
        b = b.header("x-request-id", r);
    }
    let resp = b.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let v = resp.json().await.unwrap_or(Value::Null);
    (status, v, headers)
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_api_errors_are_stable_and_clear() {
    let server = Server::start();
    let j = "application/json";
    // Malformed JSON.
    let (s, v, _) = raw(&server, "POST", "/v1/agents", Some(ADMIN), j, b"{not json".to_vec(), None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("malformed_request")));
    // Wrong types.
    let (s, v, _) = raw(&server, "POST", "/v1/agents", Some(ADMIN), j, br#"{"name":1,"owner":"a","purpose":"b"}"#.to_vec(), None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("malformed_request")));
    // Unknown fields where they matter.
    let (s, v, _) =
        raw(&server, "POST", "/v1/agents", Some(ADMIN), j, br#"{"name":"a","owner":"a","purpose":"b","role":"admin"}"#.to_vec(), None)
            .await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("malformed_request")));
    assert!(v["error"]["message"].as_str().unwrap().contains("role"));
    // Owner and purpose are required.
    let (s, v, _) = raw(&server, "POST", "/v1/agents", Some(ADMIN), j, br#"{"name":"a","owner":" ","purpose":"b"}"#.to_vec(), None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("owner_required")));
    let (s, v, _) = raw(&server, "POST", "/v1/agents", Some(ADMIN), j, br#"{"name":"a","owner":"o","purpose":""}"#.to_vec(), None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("purpose_required")));
    // A bad name.
    let (s, v, _) =
        raw(&server, "POST", "/v1/agents", Some(ADMIN), j, br#"{"name":"Bad/Name","owner":"o","purpose":"p"}"#.to_vec(), None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("invalid_agent_name")));
    // A private key offered as the public one is refused, and nothing is registered.
    let (private, _) = mandate_token::generate_agent_key(mandate_token::AgentKeyAlg::Ed25519).unwrap();
    let body = json!({"name":"leaky","owner":"o","purpose":"p","public_jwk": private});
    let (s, _, _) = raw(&server, "POST", "/v1/agents", Some(ADMIN), j, body.to_string().into_bytes(), None).await;
    assert_eq!(s, 400);
    assert_eq!(server.admin().get_agent("leaky").await.unwrap_err().code(), Some("agent_not_found"));
    // Oversized bodies.
    let big = vec![b' '; 200 * 1024];
    let (s, v, _) = raw(&server, "POST", "/v1/agents", Some(ADMIN), j, big, None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (413, Some("payload_too_large")));
    // Wrong content type.
    let (s, v, _) = raw(&server, "POST", "/v1/agents", Some(ADMIN), "text/plain", b"{}".to_vec(), None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (415, Some("unsupported_media_type")));
    // Unknown ids.
    assert_eq!(server.admin().get_task("task_nope").await.unwrap_err().code(), Some("task_not_found"));
    assert_eq!(server.admin().revoke_task("task_nope", None).await.unwrap_err().code(), Some("task_not_found"));
    assert_eq!(server.admin().disable_agent("nobody").await.unwrap_err().code(), Some("agent_not_found"));
    // Duplicate registration.
    register_agent(&server.admin(), "dup", &[]).await;
    let (private, public) = mandate_token::generate_agent_key(mandate_token::AgentKeyAlg::Ed25519).unwrap();
    let _ = private;
    let body = json!({"name":"dup","owner":"o","purpose":"p","public_jwk": public});
    let (s, v, _) = raw(&server, "POST", "/v1/agents", Some(ADMIN), j, body.to_string().into_bytes(), None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (409, Some("agent_exists")));
    // Unknown endpoint.
    let (s, v, _) = raw(&server, "GET", "/v1/nothing", Some(ADMIN), j, vec![], None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("not_found")));
    // Still healthy after all of it.
    assert_eq!(server.anon().get_text("/healthz").await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn authzen_follows_the_spec_error_semantics() {
    let server = Server::start();
    let pep = pep(&server).await;
    let j = "application/json";
    let t = server.admin().create_token("pep", "raw").await.unwrap().token;
    // Missing members are a 400, and X-Request-ID is echoed.
    let (s, v, h) = raw(
        &server,
        "POST",
        "/access/v1/evaluation",
        Some(&t),
        j,
        br#"{"subject":{"type":"user","id":"alice"},"action":{"name":"read"}}"#.to_vec(),
        Some("req-123"),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["code"], "invalid_request");
    assert!(v["error"]["message"].as_str().unwrap().contains("resource"));
    assert_eq!(h.get("x-request-id").unwrap(), "req-123");
    let (s, _, _) = raw(
        &server,
        "POST",
        "/access/v1/evaluation",
        Some(&t),
        j,
        br#"{"subject":{"type":"user"},"action":{"name":"read"},"resource":{"type":"doc","id":"1"}}"#.to_vec(),
        None,
    )
    .await;
    assert_eq!(s, 400);
    // Unknown fields are ignored; a deny is a 200 with decision false.
    let (s, v, h) = raw(
        &server,
        "POST",
        "/access/v1/evaluation",
        Some(&t),
        j,
        br#"{"subject":{"type":"user","id":"alice","extra":1},"action":{"name":"read"},"resource":{"type":"doc","id":"1"},"whatever":true}"#.to_vec(),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["decision"], false);
    assert!(h.get("x-request-id").is_some(), "a request id is assigned when none is sent");
    // An agent subject without a mandate is a deny, not an error.
    let r = pep
        .evaluate(&serde_json::from_value(json!({"subject":{"type":"agent","id":"spiffe://mandate.local/agent/x"},"action":{"name":"tickets.read"},"resource":{"type":"ticket","id":"1"}})).unwrap())
        .await
        .unwrap();
    assert!(!r.decision);
    assert_eq!(reason(&r), "mandate_required");
    // Garbage instead of a mandate.
    let r = pep
        .evaluate(&serde_json::from_value(json!({"subject":{"type":"agent","id":"x","properties":{"mandate":"a.b.c"}},"action":{"name":"tickets.read"},"resource":{"type":"ticket","id":"1"}})).unwrap())
        .await
        .unwrap();
    assert_eq!(reason(&r), "invalid_mandate");
    // Without a pep token: 401.
    let (s, _, _) = raw(&server, "POST", "/access/v1/evaluation", None, j, br#"{}"#.to_vec(), None).await;
    assert_eq!(s, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_evaluations_apply_defaults_and_semantics() {
    let server = Server::start();
    let agent = register_agent(&server.admin(), "bot", &[]).await;
    let (mandate, _) = open_task(&server, &agent, &read_intent()).await;
    let pep = pep(&server).await;
    let subject = json!({ "type": "agent", "id": agent.spiffe_id, "properties": { "mandate": mandate } });
    let item = |action: &str| json!({ "action": { "name": action }, "resource": { "type": "ticket", "id": "1", "properties": { "classification": "public" } } });
    let body = |semantic: Option<&str>| {
        let mut b = json!({ "subject": subject, "evaluations": [item("tickets.read"), item("tickets.write"), item("tickets.search"), {"action": {"name": "tickets.read"}}] });
        if let Some(s) = semantic {
            b["options"] = json!({ "evaluations_semantic": s });
        }
        serde_json::from_value::<mandate_proto::authzen::EvaluationsRequest>(b).unwrap()
    };
    let all = pep.evaluate_batch(&body(None)).await.unwrap().evaluations;
    assert_eq!(all.len(), 4);
    assert_eq!(all.iter().map(|e| e.decision).collect::<Vec<_>>(), [true, false, true, false]);
    assert_eq!(all[3].context.as_ref().unwrap()["error"]["status"], 400, "an item missing its resource is an item error");
    let first_deny = pep.evaluate_batch(&body(Some("deny_on_first_deny"))).await.unwrap().evaluations;
    assert_eq!(first_deny.iter().map(|e| e.decision).collect::<Vec<_>>(), [true, false]);
    let first_permit = pep.evaluate_batch(&body(Some("permit_on_first_permit"))).await.unwrap().evaluations;
    assert_eq!(first_permit.iter().map(|e| e.decision).collect::<Vec<_>>(), [true]);
    let err = pep.evaluate_batch(&body(Some("sometimes"))).await.unwrap_err();
    assert_eq!(err.code(), Some("invalid_request"));
}

#[tokio::test(flavor = "multi_thread")]
async fn oauth_endpoints_answer_in_rfc_6749_shape() {
    let server = Server::start();
    let http = reqwest::Client::new();
    let token = |form: Vec<(&'static str, String)>| {
        let http = http.clone();
        let url = format!("{}/oauth2/token", server.url);
        async move {
            let r = http.post(url).form(&form).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let (s, v) = token(vec![("grant_type", "client_credentials".into())]).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("unsupported_grant_type")));
    let (s, v) = token(vec![("grant_type", mandate_proto::oauth::GRANT_TOKEN_EXCHANGE.into())]).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")));
    assert!(v["error_description"].as_str().unwrap().contains("subject_token"));
    let agent = register_agent(&server.admin(), "bot", &[]).await;
    let base = |details: &str| {
        vec![
            ("grant_type", mandate_proto::oauth::GRANT_TOKEN_EXCHANGE.to_owned()),
            ("subject_token", attestation(&agent, &server.url)),
            ("subject_token_type", mandate_proto::oauth::TOKEN_TYPE_JWT.to_owned()),
            ("authorization_details", details.to_owned()),
        ]
    };
    let (s, v) = token(base("not json")).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_authorization_details")));
    let (s, v) =
        token(base(r#"[{"type":"agent_task","purpose":"x","actions":["a"],"resources":["r"],"max_classification":"top-secret"}]"#)).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_authorization_details")));
    let (s, v) = token(base(r#"[{"type":"agent_task","purpose":"x","actions":[],"resources":["r"],"max_classification":"public"}]"#)).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_authorization_details")));
    // Policy refuses a restricted task to an agent without clearance; nothing is opened.
    let (s, v) = token(base(
        r#"[{"type":"agent_task","purpose":"x","actions":["tickets.read"],"resources":["ticket:*"],"max_classification":"restricted"}]"#,
    ))
    .await;
    assert_eq!((s, v["mandate_error"].as_str()), (400, Some("policy_denied")), "{v}");
    assert!(server.admin().list_tasks(Some("bot"), None, None).await.unwrap().is_empty());
    // An intent too large to fit in a mandate is the caller's error, not the server's.
    let big: Vec<String> = (0..40).map(|i| format!("tickets.{i}.{}", "x".repeat(400))).collect();
    let details = json!([{"type":"agent_task","purpose":"x","actions":big,"resources":["ticket:*"],"max_classification":"public"}]);
    let (s, v) = token(base(&details.to_string())).await;
    assert_eq!((s, v["mandate_error"].as_str()), (400, Some("intent_too_large")), "{v}");
    // Lifetime is capped by configuration (default max one hour).
    let (s, v) = token(base(r#"[{"type":"agent_task","purpose":"x","actions":["tickets.read"],"resources":["ticket:*"],"max_classification":"public","lifetime_seconds":999999}]"#)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["expires_in"], 3600);
    assert_eq!(v["issued_token_type"], mandate_proto::oauth::TOKEN_TYPE_ACCESS_TOKEN);
    // Revocation always answers 200, even for garbage.
    let r = http.post(format!("{}/oauth2/revoke", server.url)).form(&[("token", "garbage")]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Introspection needs a credential.
    let r = http.post(format!("{}/oauth2/introspect", server.url)).form(&[("token", "garbage")]).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_on_a_public_address_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = assert_cmd::Command::cargo_bin("mandate")
        .unwrap()
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-insecure-http"));
}
