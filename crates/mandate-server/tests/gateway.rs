//! What enforcement gateways use, driven through the router without a socket (and in-process,
//! as an embedded gateway would): the revocation feed over SSE, sealed secrets, evidence
//! intake, `decide_all` and `enqueue_event`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::http::{Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mandate_audit::kinds;
use mandate_core::{Clock, Role, SystemClock, TrustDomain};
use mandate_proto::authzen::EvaluationRequest;
use mandate_proto::gateway::{RevocationKind, RevocationStatus};
use mandate_secrets::{GatewayPrivateKey, GatewaySealed, MasterKey};
use mandate_server::{AppState, Background, FeedItem, Settings, app, pipeline};
use mandate_store::Store;
use mandate_store_sqlite::SqliteStore;
use serde_json::{Value, json};
use tower::ServiceExt;

const ISSUER: &str = "http://127.0.0.1";

async fn start(dir: &Path, tweak: impl FnOnce(&mut Settings)) -> (Arc<AppState>, Background) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("mandate.db")).unwrap());
    let mut settings = Settings::new(ISSUER.into(), TrustDomain::parse("test.local").unwrap(), dir.join("keys"));
    tweak(&mut settings);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    AppState::start(settings, store, clock).await.unwrap()
}

async fn token(state: &Arc<AppState>, role: Role) -> String {
    state.create_api_token(role, "test").await.unwrap().1
}

fn request(method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    match body {
        Some(v) => b.header("content-type", "application/json").body(Body::from(v.to_string())).unwrap(),
        None => b.body(Body::empty()).unwrap(),
    }
}

async fn call(state: &Arc<AppState>, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
    let resp = app(state.clone()).oneshot(request(method, path, token, body)).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn register(state: &Arc<AppState>, admin: &str, name: &str, public_jwk: Option<Value>) -> Value {
    let body = json!({ "name": name, "owner": "alice@example.com", "purpose": "Summarise tickets", "public_jwk": public_jwk });
    let (status, agent) = call(state, "POST", "/v1/agents", Some(admin), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{agent}");
    agent
}

/// Registers an agent with a key and opens a read task: (spiffe id, mandate, task id).
async fn open_task(state: &Arc<AppState>, admin: &str, name: &str) -> (String, String, String) {
    let (private_jwk, public_jwk) = mandate_token::generate_agent_key(mandate_token::AgentKeyAlg::Ed25519).unwrap();
    let agent = register(state, admin, name, Some(public_jwk)).await;
    let spiffe_id = agent["spiffe_id"].as_str().unwrap().to_owned();
    let now = state.clock.now_secs();
    let attestation =
        mandate_token::sign_attestation(&private_jwk, &spiffe_id, ISSUER, now, 60, &uuid::Uuid::new_v4().to_string()).unwrap();
    let intent = json!([{
        "type": "agent_task", "purpose": "Summarise ticket 42", "actions": ["tickets.read"],
        "resources": ["ticket:*"], "max_classification": "internal", "lifetime_seconds": 600
    }]);
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange")
        .append_pair("subject_token", &attestation)
        .append_pair("subject_token_type", "urn:ietf:params:oauth:token-type:jwt")
        .append_pair("authorization_details", &intent.to_string())
        .finish();
    let req = Request::post("/oauth2/token").header("content-type", "application/x-www-form-urlencoded").body(Body::from(form)).unwrap();
    let resp = app(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let body: Value = serde_json::from_slice(&axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap()).unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    (spiffe_id, body["access_token"].as_str().unwrap().to_owned(), body["task_id"].as_str().unwrap().to_owned())
}

fn ask(spiffe_id: &str, mandate: &str, action: &str, classification: &str) -> EvaluationRequest {
    serde_json::from_value(json!({
        "subject": { "type": "agent", "id": spiffe_id, "properties": { "mandate": mandate } },
        "action": { "name": action },
        "resource": { "type": "ticket", "id": "42", "properties": { "classification": classification } }
    }))
    .unwrap()
}

async fn events_of_kind(state: &Arc<AppState>, auditor: &str, kind: &str) -> Vec<Value> {
    let (status, body) = call(state, "GET", &format!("/v1/audit/events?kind={kind}&limit=1000"), Some(auditor), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["events"].as_array().unwrap().clone()
}

// ---- the revocation feed over SSE ----

/// One open `GET /v1/revocations` response, read event by event.
struct Stream {
    body: Body,
    buf: String,
}

#[derive(Debug, PartialEq)]
enum Sse {
    Comment(String),
    Event { name: String, id: Option<String>, data: Value },
}

impl Stream {
    async fn open(state: &Arc<AppState>, path: &str, token: &str, last_event_id: Option<&str>) -> Stream {
        let mut req = request("GET", path, Some(token), None);
        if let Some(id) = last_event_id {
            req.headers_mut().insert("last-event-id", id.parse().unwrap());
        }
        let resp = app(state.clone()).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        assert_eq!(resp.headers()["cache-control"], "no-cache");
        Stream { body: resp.into_body(), buf: String::new() }
    }

    /// The next block, or `None` when the stream ended.
    async fn block(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut name = String::from("message");
                let (mut id, mut data, mut comment) = (None, String::new(), None);
                for line in block.lines().filter(|l| !l.is_empty()) {
                    match line.split_once(':') {
                        Some(("", rest)) => comment = Some(rest.trim().to_owned()),
                        Some(("event", v)) => name = v.trim().to_owned(),
                        Some(("id", v)) => id = Some(v.trim().to_owned()),
                        Some(("data", v)) => data.push_str(v.trim()),
                        _ => panic!("unexpected line {line:?}"),
                    }
                }
                return Some(match comment {
                    Some(c) if data.is_empty() => Sse::Comment(c),
                    _ => Sse::Event { name, id, data: serde_json::from_str(&data).unwrap() },
                });
            }
            let frame = tokio::time::timeout(Duration::from_secs(5), std::future::poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx)))
                .await
                .expect("no event within 5 s");
            match frame {
                None => return None,
                Some(frame) => {
                    if let Ok(data) = frame.unwrap().into_data() {
                        self.buf.push_str(std::str::from_utf8(&data).unwrap());
                    }
                }
            }
        }
    }

    /// The next event, skipping comments: (name, id, data).
    async fn event(&mut self) -> (String, Option<String>, Value) {
        loop {
            match self.block().await {
                Some(Sse::Event { name, id, data }) => return (name, id, data),
                Some(Sse::Comment(_)) => continue,
                None => panic!("the stream ended"),
            }
        }
    }
}

#[tokio::test]
async fn the_feed_says_hello_replays_what_was_missed_then_goes_live() {
    let tmp = tempfile::tempdir().unwrap();
    let (state, _bg) = start(tmp.path(), |_| {}).await;
    let admin = token(&state, Role::Admin).await;
    let pep = token(&state, Role::Pep).await;
    register(&state, &admin, "bot", None).await;
    let epoch = state.revocations().epoch().to_owned();
    assert_eq!(call(&state, "POST", "/v1/agents/bot/disable", Some(&admin), None).await.0, StatusCode::OK);
    assert_eq!(call(&state, "POST", "/v1/agents/bot/enable", Some(&admin), None).await.0, StatusCode::OK);

    // From the start: hello with the head, both entries, then a live one.
    let mut s = Stream::open(&state, "/v1/revocations?after=0", &pep, None).await;
    assert_eq!(s.event().await, ("hello".into(), None, json!({"epoch": epoch, "seq": 2})));
    let (name, id, data) = s.event().await;
    assert_eq!((name.as_str(), id.as_deref()), ("revocation", Some("1")));
    assert_eq!(data["kind"], "agent");
    assert_eq!(data["id"], "bot");
    assert_eq!(data["status"], "disabled");
    assert!(data["at_ms"].as_i64().unwrap() > 0);
    assert_eq!(s.event().await.2["status"], "enabled");
    assert_eq!(call(&state, "POST", "/v1/agents/bot/disable", Some(&admin), None).await.0, StatusCode::OK);
    let (_, id, data) = s.event().await;
    assert_eq!((id.as_deref(), data["seq"].as_u64()), (Some("3"), Some(3)));

    // No resume point: live entries only.
    let mut live = Stream::open(&state, "/v1/revocations", &pep, None).await;
    assert_eq!(live.event().await.2, json!({"epoch": epoch, "seq": 3}));
    // Last-Event-ID wins over `after`, and gives exactly what came after it.
    let mut resumed = Stream::open(&state, "/v1/revocations?after=0", &pep, Some("2")).await;
    assert_eq!(resumed.event().await.0, "hello");
    assert_eq!(call(&state, "POST", "/v1/agents/bot/enable", Some(&admin), None).await.0, StatusCode::OK);
    assert_eq!(resumed.event().await.1.as_deref(), Some("3"));
    assert_eq!(resumed.event().await.1.as_deref(), Some("4"));
    assert_eq!(live.event().await.1.as_deref(), Some("4"));
    // An admin may follow the feed too.
    let mut by_admin = Stream::open(&state, "/v1/revocations?after=3", &admin, None).await;
    assert_eq!(by_admin.event().await.0, "hello");
    assert_eq!(by_admin.event().await.2["status"], "enabled");
}

#[tokio::test]
async fn an_old_or_foreign_resume_point_gets_a_reset_then_live_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let (state, _bg) = start(tmp.path(), |s| s.revocations_retained = 2).await;
    let admin = token(&state, Role::Admin).await;
    let pep = token(&state, Role::Pep).await;
    register(&state, &admin, "bot", None).await;
    for action in ["disable", "enable", "disable", "enable"] {
        assert_eq!(call(&state, "POST", &format!("/v1/agents/bot/{action}"), Some(&admin), None).await.0, StatusCode::OK);
    }
    let epoch = state.revocations().epoch().to_owned();
    // Entry 1 and 2 are gone (only 3 and 4 are held); 99 was never published here.
    for (path, last) in [("/v1/revocations?after=1", None), ("/v1/revocations", Some("99")), ("/v1/revocations?after=0", None)] {
        let mut s = Stream::open(&state, path, &pep, last).await;
        assert_eq!(s.event().await, ("hello".into(), None, json!({"epoch": epoch, "seq": 4})));
        assert_eq!(s.event().await, ("reset".into(), None, json!({"epoch": epoch, "seq": 4})), "{path} {last:?}");
    }
    // The predecessor of the oldest held entry still resumes without a reset.
    let mut s = Stream::open(&state, "/v1/revocations?after=2", &pep, None).await;
    assert_eq!(s.event().await.0, "hello");
    assert_eq!(s.event().await.1.as_deref(), Some("3"));
    assert_eq!(s.event().await.1.as_deref(), Some("4"));
}

#[tokio::test]
async fn the_feed_is_for_enforcement_points_and_admins_and_refuses_bad_resume_points() {
    let tmp = tempfile::tempdir().unwrap();
    let (state, _bg) = start(tmp.path(), |_| {}).await;
    for role in [Role::Auditor, Role::Approver] {
        let t = token(&state, role).await;
        let (status, body) = call(&state, "GET", "/v1/revocations", Some(&t), None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "{role:?}");
    }
    assert_eq!(call(&state, "GET", "/v1/revocations", None, None).await.0, StatusCode::UNAUTHORIZED);
    let pep = token(&state, Role::Pep).await;
    let (status, body) = call(&state, "GET", "/v1/revocations?after=soon", Some(&pep), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")));
    assert_eq!(body["error"]["message"], "`after` `soon` is not a sequence number");
    let (status, body) = call(&state, "GET", "/v1/revocations?since=1", Some(&pep), None).await;
    assert_eq!((status, body["error"]["message"].as_str()), (StatusCode::BAD_REQUEST, Some("unknown query parameter `since`")));
    let mut req = request("GET", "/v1/revocations", Some(&pep), None);
    req.headers_mut().insert("last-event-id", "-1".parse().unwrap());
    let resp = app(state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn open_streams_get_keep_alives_are_counted_and_end_when_the_feed_closes() {
    let tmp = tempfile::tempdir().unwrap();
    let (state, bg) = start(tmp.path(), |s| s.revocation_keepalive = Duration::from_millis(50)).await;
    let pep = token(&state, Role::Pep).await;
    let gauge = |state: Arc<AppState>| async move {
        let resp = app(state).oneshot(request("GET", "/metrics", None, None)).await.unwrap();
        let text = String::from_utf8(axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
        text.lines().find_map(|l| l.strip_prefix("mandate_revocation_subscribers ")).unwrap().to_owned()
    };
    let mut s = Stream::open(&state, "/v1/revocations", &pep, None).await;
    assert_eq!(s.event().await.0, "hello");
    assert_eq!(s.block().await, Some(Sse::Comment("keep-alive".into())));
    assert_eq!(gauge(state.clone()).await, "1");

    // A client that goes away is noticed at the next keep-alive.
    drop(s);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while gauge(state.clone()).await != "0" {
        assert!(tokio::time::Instant::now() < deadline, "the subscriber was never counted out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Shutting down closes the feed: open streams end instead of holding the server up.
    let mut s = Stream::open(&state, "/v1/revocations", &pep, None).await;
    assert_eq!(s.event().await.0, "hello");
    bg.shutdown(state.clone()).await;
    loop {
        match s.block().await {
            Some(Sse::Comment(_)) => continue,
            None => break,
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
}

// ---- in-process, as an embedded gateway ----

#[tokio::test]
async fn tasks_ended_in_any_way_are_published_after_the_registry_knows() {
    let tmp = tempfile::tempdir().unwrap();
    let (state, _bg) = start(tmp.path(), |s| s.max_task_ttl = Duration::from_secs(3600)).await;
    let admin = token(&state, Role::Admin).await;
    let mut sub = state.revocations().follow(None);
    let mut raw = state.revocations().subscribe();
    let (_, mandate, task) = open_task(&state, &admin, "reader").await;

    // What an embedded gateway checks for a request that is not a tool call.
    let now = state.clock.now_secs();
    let verified = state.keys.signing().verifier.verify(&mandate, now).unwrap();
    assert_eq!(verified.claims().task_id, task);
    assert!(state.cache.get(&mandate, now).is_none());
    assert_eq!(state.registry.task(&task).unwrap().status, mandate_core::TaskStatus::Live);
    assert_eq!(state.registry.agent("reader").unwrap().status, mandate_core::AgentStatus::Active);

    let (status, _) = call(&state, "POST", &format!("/v1/tasks/{task}/revoke"), Some(&admin), None).await;
    assert_eq!(status, StatusCode::OK);
    let Some(FeedItem::Entry(entry)) = sub.next().await else { panic!("no entry") };
    assert_eq!((entry.kind, entry.id.as_str(), entry.status), (RevocationKind::Task, task.as_str(), RevocationStatus::Revoked));
    assert_eq!(raw.recv().await.unwrap(), entry);
    assert_eq!(state.registry.task(&task).unwrap().status, mandate_core::TaskStatus::Revoked);

    // Disabling an agent publishes the agent, then every task it had.
    let (_, _, second) = open_task(&state, &admin, "writer").await;
    assert_eq!(call(&state, "POST", "/v1/agents/writer/disable", Some(&admin), None).await.0, StatusCode::OK);
    let mut seen = Vec::new();
    for _ in 0..2 {
        let Some(FeedItem::Entry(e)) = sub.next().await else { panic!("no entry") };
        seen.push((e.kind, e.id, e.status));
    }
    assert_eq!(
        seen,
        vec![
            (RevocationKind::Agent, "writer".into(), RevocationStatus::Disabled),
            (RevocationKind::Task, second, RevocationStatus::Revoked)
        ]
    );
    assert_eq!(state.revocations().since(0).unwrap().len(), 3);
    assert!(state.revocations().since(4).is_err());
}

fn stored_task(id: &str, parent: Option<&str>, expires_at_ms: i64) -> mandate_core::Task {
    mandate_core::Task {
        id: id.into(),
        agent: mandate_core::AgentName::parse("bot").unwrap(),
        intent: mandate_core::Intent {
            purpose: "p".into(),
            actions: vec!["tickets.read".into()],
            resources: vec!["ticket:*".into()],
            max_classification: mandate_core::Classification::Internal,
            on_behalf_of: None,
        },
        status: mandate_core::TaskStatus::Live,
        created_at_ms: 0,
        expires_at_ms,
        mandate_jti: format!("jti-{id}"),
        parent_id: parent.map(Into::into),
        root_id: parent.unwrap_or(id).into(),
        depth: u32::from(parent.is_some()),
        ended: None,
    }
}

#[tokio::test]
async fn delegated_children_and_the_sweepers_expiry_are_published() {
    let tmp = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&tmp.path().join("mandate.db")).unwrap());
    let name = mandate_core::AgentName::parse("bot").unwrap();
    let agent = mandate_core::Agent {
        spiffe_id: mandate_core::SpiffeId::for_agent(&TrustDomain::parse("test.local").unwrap(), &name),
        name,
        owner: "o".into(),
        purpose: "p".into(),
        status: mandate_core::AgentStatus::Active,
        attributes: Default::default(),
        public_jwk: None,
        created_at_ms: 0,
        updated_at_ms: 0,
        last_seen_ms: None,
    };
    store.insert_agent(&agent).await.unwrap();
    let now = SystemClock.now_ms();
    for t in [
        stored_task("parent", None, now + 600_000),
        stored_task("child", Some("parent"), now + 600_000),
        stored_task("short", None, now + 300),
    ] {
        store.insert_task(&t).await.unwrap();
    }
    let settings = Settings::new(ISSUER.into(), TrustDomain::parse("test.local").unwrap(), tmp.path().join("keys"));
    let (state, _bg) = AppState::start(settings, store, Arc::new(SystemClock)).await.unwrap();
    let admin = token(&state, Role::Admin).await;
    let mut sub = state.revocations().follow(Some(0));

    assert_eq!(call(&state, "POST", "/v1/tasks/parent/revoke", Some(&admin), None).await.0, StatusCode::OK);
    let mut seen = Vec::new();
    for _ in 0..3 {
        match tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap() {
            Some(FeedItem::Entry(e)) => seen.push((e.id, e.status)),
            other => panic!("expected an entry, got {other:?}"),
        }
    }
    // The revoked task, then its delegated child; the sweeper (every second) expires the short
    // one, before or after.
    let expired = seen.iter().position(|e| *e == ("short".into(), RevocationStatus::Expired)).expect("the expiry");
    seen.remove(expired);
    assert_eq!(seen, vec![("parent".into(), RevocationStatus::Revoked), ("child".into(), RevocationStatus::Revoked)]);
    assert_eq!(state.registry.task("short").unwrap().status, mandate_core::TaskStatus::Expired);
}

#[tokio::test]
async fn decide_all_decides_records_once_and_fails_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let (state, bg) = start(tmp.path(), |_| {}).await;
    let admin = token(&state, Role::Admin).await;
    let auditor = token(&state, Role::Auditor).await;
    let (spiffe_id, mandate, task) = open_task(&state, &admin, "reader").await;
    let mut missing = ask(&spiffe_id, &mandate, "tickets.read", "internal");
    missing.action = None;
    let requests = vec![
        ask(&spiffe_id, &mandate, "tickets.read", "internal"),
        missing.clone(),
        ask(&spiffe_id, &mandate, "tickets.write", "internal"),
    ];
    let decided = pipeline::decide_all(&state, &requests, "token:tok_gateway", Some("req-1")).await;
    assert_eq!(decided.len(), 3);
    let allowed = decided[0].as_ref().unwrap();
    assert!(allowed.allowed(), "{allowed:?}");
    assert_eq!(allowed.task_id(), Some(task.as_str()));
    assert_eq!(decided[1].as_ref().unwrap_err(), &pipeline::parse(&state, missing.clone()).err().unwrap());
    assert_eq!(decided[1].as_ref().unwrap_err(), "`action` is required");
    let denied = decided[2].as_ref().unwrap();
    assert_eq!((denied.allowed(), denied.reason()), (false, "action_outside_intent"));
    // The verified mandate is cached for the next request.
    assert!(state.cache.get(&mandate, state.clock.now_secs()).is_some());

    let decisions = events_of_kind(&state, &auditor, kinds::DECISION).await;
    assert_eq!(decisions.len(), 2);
    assert!(decisions.iter().all(|e| e["actor"] == "token:tok_gateway" && e["details"]["request_id"] == "req-1"));
    assert_eq!(decisions[0]["details"]["decision_id"], json!(allowed.decision_id));

    // The HTTP handler goes the same way: same answer for the same request.
    let pep = token(&state, Role::Pep).await;
    let (status, body) = call(&state, "POST", "/access/v1/evaluation", Some(&pep), Some(serde_json::to_value(&requests[0]).unwrap())).await;
    assert_eq!((status, body["decision"].as_bool()), (StatusCode::OK, Some(true)));
    let (status, body) = call(&state, "POST", "/access/v1/evaluation", Some(&pep), Some(serde_json::to_value(&missing).unwrap())).await;
    assert_eq!((status, body["error"]["message"].as_str()), (StatusCode::BAD_REQUEST, Some("`action` is required")));
    let batch = json!({ "evaluations": [requests[2], requests[0]], "options": { "evaluations_semantic": "deny_on_first_deny" } });
    let (status, body) = call(&state, "POST", "/access/v1/evaluations", Some(&pep), Some(batch)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["evaluations"].as_array().unwrap().len(), 1, "{body}");

    // Once the trail cannot take the events, an allow becomes a deny.
    bg.shutdown(state.clone()).await;
    let decided = pipeline::decide_all(&state, &requests[..1], "token:tok_gateway", None).await;
    let v = decided[0].as_ref().unwrap();
    assert_eq!((v.allowed(), v.reason()), (false, "audit_unavailable"));
    assert!(!v.response().decision);
}

#[tokio::test]
async fn enqueued_events_become_durable_without_waiting() {
    let tmp = tempfile::tempdir().unwrap();
    let (state, bg) = start(tmp.path(), |_| {}).await;
    let auditor = token(&state, Role::Auditor).await;
    for i in 0..3 {
        state.enqueue_event(state.event(kinds::TOOL_CALL, "gateway", Some("bot"), None, json!({ "tool": "t", "n": i, "forwarded": true })));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while events_of_kind(&state, &auditor, kinds::TOOL_CALL).await.len() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "enqueued events never became durable");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bg.shutdown(state.clone()).await;
    // After the writer stopped the event is refused and logged, not a panic.
    state.enqueue_event(state.event(kinds::TOOL_CALL, "gateway", None, None, json!({})));
}

// ---- sealed secrets ----

#[tokio::test]
async fn a_sealed_secret_is_for_its_registered_gateway_only_and_opens_with_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let (state, _bg) = start(tmp.path(), |s| s.master_key = Some(master.clone())).await;
    let admin = token(&state, Role::Admin).await;
    let value = "sk-live-7f3a9c2e5b8d1f0a";
    let body = json!({ "value": value, "description": "crm api key" });
    assert_eq!(call(&state, "PUT", "/v1/secrets/crm-key", Some(&admin), Some(body)).await.0, StatusCode::CREATED);
    assert_eq!(call(&state, "POST", "/v1/secrets/crm-key/rotate", Some(&admin), Some(json!({ "value": value }))).await.0, StatusCode::OK);
    assert_eq!(call(&state, "PUT", "/v1/secrets/other", Some(&admin), Some(json!({ "value": "o" }))).await.0, StatusCode::CREATED);

    let key = GatewayPrivateKey::generate();
    let public = key.public_key().unwrap().to_base64();
    let reg = json!({ "name": "edge", "public_key": public, "secrets": ["crm-key", "missing"] });
    let (status, registered) = call(&state, "POST", "/v1/gateways", Some(&admin), Some(reg.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{registered}");
    let pep = registered["token"].as_str().unwrap().to_owned();
    assert_eq!(registered["gateway"]["secrets"], json!(["crm-key", "missing"]));
    let (status, body) = call(&state, "POST", "/v1/gateways", Some(&admin), Some(reg)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("gateway_exists")));

    let resp = app(state.clone()).oneshot(request("GET", "/v1/secrets/crm-key/sealed", Some(&pep), None)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let text = String::from_utf8(axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
    assert!(!text.contains(value) && !text.contains(&URL_SAFE_NO_PAD.encode(value)), "{text}");
    let view: mandate_proto::gateway::GatewaySealedView = serde_json::from_str(&text).unwrap();
    let fields: Value = serde_json::from_str(&text).unwrap();
    let mut keys: Vec<&str> = fields.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    // No master-key form (`wrapped_key`, `key_nonce`) any more.
    assert_eq!(keys, ["ciphertext", "enc", "gateway", "name", "suite", "version"]);
    assert_eq!((view.name.as_str(), view.version, view.gateway.as_str()), ("crm-key", 2, "edge"));
    assert_eq!(view.suite, mandate_secrets::SUITE);
    let b64 = |s: &str| URL_SAFE_NO_PAD.decode(s).unwrap();
    let sealed = GatewaySealed { enc: b64(&view.enc), ciphertext: b64(&view.ciphertext) };
    let opened = mandate_secrets::open_for_gateway(&key, "edge", &view.name, view.version, None, &sealed).unwrap();
    assert_eq!(opened.as_slice(), value.as_bytes());
    assert!(mandate_secrets::open_for_gateway(&GatewayPrivateKey::generate(), "edge", "crm-key", 2, None, &sealed).is_err());
    let record = state.sealed_secret("crm-key").await.unwrap().unwrap();
    assert_ne!(URL_SAFE_NO_PAD.encode(&record.sealed.ciphertext), view.ciphertext, "not the stored record");
    assert_eq!(state.reveal_secret("crm-key").await.unwrap().1.as_slice(), value.as_bytes());
    let sealed_events = events_of_kind(&state, &admin, kinds::SECRET_SEALED).await;
    assert_eq!(sealed_events.len(), 1);
    assert_eq!(sealed_events[0]["details"], json!({ "name": "crm-key", "version": 2, "gateway": "edge" }));

    for role in [Role::Admin, Role::Auditor, Role::Approver] {
        let t = token(&state, role).await;
        let (status, body) = call(&state, "GET", "/v1/secrets/crm-key/sealed", Some(&t), None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "{role:?}");
    }
    assert_eq!(call(&state, "GET", "/v1/secrets/crm-key/sealed", None, None).await.0, StatusCode::UNAUTHORIZED);
    let plain = token(&state, Role::Pep).await;
    let (status, body) = call(&state, "GET", "/v1/secrets/crm-key/sealed", Some(&plain), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("gateway_not_registered")));
    let (status, body) = call(&state, "GET", "/v1/secrets/other/sealed", Some(&pep), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("secret_not_granted")));
    let (status, body) = call(&state, "GET", "/v1/secrets/missing/sealed", Some(&pep), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("secret_not_found")));
    let (status, _) = call(&state, "GET", "/v1/secrets/Bad%20Name/sealed", Some(&pep), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let refused = events_of_kind(&state, &admin, kinds::SECRET_SEAL_REFUSED).await;
    assert_eq!(refused.len(), 2);

    // Revoked: the gateway and its token; the refusal says why.
    let (status, body) = call(&state, "POST", "/v1/gateways/edge/revoke", Some(&admin), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call(&state, "GET", "/v1/secrets/crm-key/sealed", Some(&pep), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("gateway_revoked")), "{body}");
    let (status, body) = call(&state, "GET", "/v1/gateways", Some(&admin), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body[0]["revoked_at_ms"].as_i64().is_some(), "{body}");
    let (status, body) = call(&state, "POST", "/v1/gateways/nope/revoke", Some(&admin), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("gateway_not_found")));
    let (status, _) = call(&state, "POST", "/v1/gateways", Some(&plain), Some(json!({ "name": "x", "public_key": public }))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

// ---- evidence ----

/// An event naming no decision (one naming a decision needs its receipt; the end-to-end tests
/// cover those).
fn tool_call(tool: &str, forwarded: bool) -> Value {
    json!({ "kind": "tool.call", "ts_ms": 1_750_000_000_000_i64, "agent": "bot", "task": "tsk_1",
            "details": { "tool": tool, "kind": "read", "upstream": "crm", "forwarded": forwarded } })
}

#[tokio::test]
async fn evidence_is_recorded_durably_with_the_enforcement_point_as_actor() {
    let tmp = tempfile::tempdir().unwrap();
    let (state, _bg) = start(tmp.path(), |_| {}).await;
    let (pep_token, pep) = state.create_api_token(Role::Pep, "gateway").await.unwrap();
    let auditor = token(&state, Role::Auditor).await;
    let body = json!({ "events": [tool_call("tickets.read", true), tool_call("tickets.close", false)] });
    let (status, answer) = call(&state, "POST", "/v1/evidence", Some(&pep), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["recorded"], 2);
    let seqs: Vec<u64> = answer["seqs"].as_array().unwrap().iter().map(|s| s.as_u64().unwrap()).collect();
    assert_eq!(seqs[1], seqs[0] + 1);

    let recorded = events_of_kind(&state, &auditor, kinds::TOOL_CALL).await;
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0]["seq"], seqs[0]);
    assert_eq!(recorded[0]["actor"], format!("token:{}", pep_token.id));
    // Without a decision, the event stays out of the task's trail; what it claimed is kept.
    assert!(recorded[0]["agent"].is_null() && recorded[0]["task"].is_null(), "{}", recorded[0]);
    assert_eq!(
        (recorded[0]["details"]["claimed_agent"].as_str(), recorded[0]["details"]["claimed_task"].as_str()),
        (Some("bot"), Some("tsk_1"))
    );
    // A decision named without its receipt refuses the batch.
    let mut bound = tool_call("tickets.read", true);
    bound["details"]["decision_id"] = json!("dec_1");
    let (status, body) = call(&state, "POST", "/v1/evidence", Some(&pep), Some(json!({ "events": [bound] }))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("evidence_not_bound")), "{body}");
    assert_eq!(recorded[0]["ts_ms"], 1_750_000_000_000_i64);
    assert_eq!(recorded[1]["details"]["tool"], "tickets.close");
    let (_, verify) = call(&state, "GET", "/v1/audit/verify", Some(&auditor), None).await;
    assert_eq!(verify["ok"], true, "{verify}");

    // Agent and task are optional.
    let body = json!({ "events": [{ "kind": "tool.call", "ts_ms": 1, "agent": null, "details": {} }] });
    assert_eq!(call(&state, "POST", "/v1/evidence", Some(&pep), Some(body)).await.1["recorded"], 1);
}

#[tokio::test]
async fn evidence_refuses_what_is_not_a_tool_call_and_callers_that_are_not_enforcement_points() {
    let tmp = tempfile::tempdir().unwrap();
    let (state, bg) = start(tmp.path(), |s| s.max_body_bytes = 1 << 20).await;
    let pep = token(&state, Role::Pep).await;
    let post = |body: Value| {
        let (state, pep) = (state.clone(), pep.clone());
        async move { call(&state, "POST", "/v1/evidence", Some(&pep), Some(body)).await }
    };
    let mut forged = tool_call("t", true);
    forged["kind"] = json!("task.revoked");
    let (status, body) = post(json!({ "events": [tool_call("t", true), forged] })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")));
    assert_eq!(
        body["error"]["message"],
        "`events[1].kind` `task.revoked` may not be submitted: only `tool.call` and `secret.echo_redacted` events may"
    );
    let mut flat = tool_call("t", true);
    flat["details"] = json!("forwarded");
    let (status, body) = post(json!({ "events": [flat] })).await;
    assert_eq!((status, body["error"]["message"].as_str()), (StatusCode::BAD_REQUEST, Some("`events[0].details` must be an object")));
    let mut empty_agent = tool_call("t", true);
    empty_agent["agent"] = json!("");
    assert_eq!(post(json!({ "events": [empty_agent] })).await.0, StatusCode::BAD_REQUEST);
    let (status, body) = post(json!({ "events": vec![tool_call("t", true); 513] })).await;
    assert_eq!(
        (status, body["error"]["message"].as_str()),
        (StatusCode::BAD_REQUEST, Some("a request may carry at most 512 events, not 513"))
    );
    assert_eq!(post(json!({ "events": vec![tool_call("t", true); 512] })).await.0, StatusCode::OK);
    let mut actor = tool_call("t", true);
    actor["actor"] = json!("system");
    let (status, body) = post(json!({ "events": [actor] })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("malformed_request")));
    // Nothing of a refused request was recorded.
    let auditor = token(&state, Role::Auditor).await;
    assert_eq!(events_of_kind(&state, &auditor, kinds::TOOL_CALL).await.len(), 512);

    for role in [Role::Admin, Role::Auditor, Role::Approver] {
        let t = token(&state, role).await;
        let (status, _) = call(&state, "POST", "/v1/evidence", Some(&t), Some(json!({ "events": [tool_call("t", true)] }))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{role:?}");
    }

    // A trail that cannot take the events: 503, not a silent loss.
    bg.shutdown(state.clone()).await;
    let (status, body) = post(json!({ "events": [tool_call("t", true)] })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("audit_unavailable")));
}
