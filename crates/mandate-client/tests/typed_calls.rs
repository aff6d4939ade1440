//! The typed calls a remote gateway makes, against a real HTTP server on 127.0.0.1: how each
//! kind of answer reads as a [`ClientError`] (the server's stable code, or which kind of answer
//! it was), per-call timeouts and the request id.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mandate_client::{Client, ClientError, ClientOptions};
use mandate_proto::admin::ApprovalView;
use mandate_proto::authzen::{EvaluationRequest, EvaluationResponse, EvaluationsRequest, EvaluationsResponse};
use mandate_proto::gateway::{EvidenceEvent, EvidenceResponse};
use serde_json::{Value, json};

/// Serves `app` on a free loopback port; answers a client for it.
async fn serve(app: Router) -> Client {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Client::with_options(
        &format!("http://{addr}"),
        Some("pep-token".into()),
        ClientOptions::default().connect_timeout(Duration::from_secs(3)),
    )
    .unwrap()
}

fn answer(status: StatusCode, body: &'static str) -> Response {
    (status, [("content-type", "application/json")], body).into_response()
}

fn approval(status: &str) -> ApprovalView {
    serde_json::from_value(json!({
        "id": "apr_1", "task_id": "tsk_1", "agent": "bot", "mandate_jti": "j", "action": "call", "resource_type": "Tool",
        "resource_id": "t", "arguments_digest": "d", "binding": "b", "decision_id": "dec_1", "status": status,
        "created_at_ms": 1, "expires_at_ms": 2
    }))
    .unwrap()
}

fn batch(n: usize) -> EvaluationsRequest {
    EvaluationsRequest { evaluations: Some(vec![EvaluationRequest::default(); n]), ..Default::default() }
}

#[tokio::test]
async fn a_refusal_carries_the_servers_stable_code_and_status() {
    let app = Router::new().route(
        "/access/v1/evaluations",
        post(|| async { answer(StatusCode::FORBIDDEN, r#"{"error":{"code":"gateway_revoked","message":"gateway `g` is revoked"}}"#) }),
    );
    let c = serve(app).await;
    let e = c.evaluate_batch(&batch(1)).await.unwrap_err();
    assert_eq!(e.code(), Some("gateway_revoked"), "{e:?}");
    assert_eq!(e.status(), Some(403));
    assert!(matches!(&e, ClientError::Api { message, .. } if message == "gateway `g` is revoked"), "{e:?}");
}

#[tokio::test]
async fn a_code_without_a_message_is_still_the_code() {
    let app = Router::new()
        .route("/v1/secrets/{name}/sealed", get(|| async { answer(StatusCode::CONFLICT, r#"{"error":{"code":"secret_is_dynamic"}}"#) }));
    let e = serve(app).await.sealed_secret("db").await.unwrap_err();
    assert_eq!(e.code(), Some("secret_is_dynamic"), "{e:?}");
    assert_eq!(e.status(), Some(409));
}

#[tokio::test]
async fn answers_without_a_code_say_what_they_were() {
    let app = Router::new()
        .route("/v1/secrets/text-500/sealed", get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "upstream broke").into_response() }))
        .route("/v1/secrets/json-400/sealed", get(|| async { answer(StatusCode::BAD_REQUEST, r#"{"oops":1}"#) }))
        .route("/v1/secrets/code-not-string/sealed", get(|| async { answer(StatusCode::BAD_REQUEST, r#"{"error":{"code":7}}"#) }))
        .route("/v1/secrets/text-404/sealed", get(|| async { (StatusCode::NOT_FOUND, "no").into_response() }))
        .route("/v1/secrets/text-200/sealed", get(|| async { (StatusCode::OK, "fine").into_response() }))
        .route("/v1/secrets/json-200/sealed", get(|| async { answer(StatusCode::OK, r#"{"name":"x"}"#) }));
    let c = serve(app).await;
    let err = |name: &'static str| {
        let c = c.clone();
        async move { c.sealed_secret(name).await.unwrap_err() }
    };

    let e = err("text-500").await;
    assert!(matches!(e, ClientError::NotJson { status: 500, .. }), "{e:?}");
    assert_eq!(e.code(), None);
    let e = err("json-400").await;
    assert!(matches!(e, ClientError::Unexpected { status: 400, .. }), "{e:?}");
    assert_eq!(e.code(), None);
    let e = err("code-not-string").await;
    assert!(matches!(e, ClientError::Unexpected { status: 400, .. }), "{e:?}");
    // A 404 without a code (a proxy's, say) reads as `not_found`, as it always has.
    let e = err("text-404").await;
    assert_eq!((e.code(), e.status()), (Some("not_found"), Some(404)), "{e:?}");
    // A success whose answer does not decode keeps its status: the server did what was asked.
    let e = err("text-200").await;
    assert!(matches!(e, ClientError::NotJson { status: 200, .. }), "{e:?}");
    let e = err("json-200").await;
    assert!(matches!(e, ClientError::Unexpected { status: 200, .. }), "{e:?}");
    assert_eq!(e.status(), Some(200));
}

#[tokio::test]
async fn no_answer_has_no_status_and_no_code() {
    // A port that was just free: nothing listens there.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let c = Client::new(&format!("http://{addr}"), Some("t".into())).unwrap();
    let e = c.gateway_self().await.unwrap_err();
    assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
    assert_eq!((e.status(), e.code()), (None, None));
}

#[tokio::test]
async fn within_bounds_every_request_of_that_handle_only() {
    let app = Router::new().route(
        "/v1/gateways/self",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            answer(StatusCode::UNAUTHORIZED, r#"{"error":{"code":"unauthenticated","message":"no"}}"#)
        }),
    );
    let c = serve(app).await;
    let t = Instant::now();
    let e = c.within(Duration::from_millis(200)).gateway_self().await.unwrap_err();
    assert!(matches!(&e, ClientError::Connect { reason, .. } if reason == "timed out"), "{e:?}");
    assert!(t.elapsed() < Duration::from_millis(1200), "took {:?}", t.elapsed());
    // The client it came from keeps its own (longer) timeout.
    let e = c.gateway_self().await.unwrap_err();
    assert_eq!(e.code(), Some("unauthenticated"), "{e:?}");
}

#[tokio::test]
async fn a_waited_approval_honours_the_calls_timeout_instead_of_the_wait() {
    async fn one(Path(id): Path<String>, Query(q): Query<Value>) -> Json<ApprovalView> {
        let wait: u64 = q.get("wait").and_then(Value::as_str).and_then(|w| w.parse().ok()).unwrap_or(0);
        if id == "slow" {
            tokio::time::sleep(Duration::from_secs(wait)).await;
        }
        let mut a = approval("pending");
        a.id = id;
        a.comment = Some(format!("wait={wait}"));
        Json(a)
    }
    let c = serve(Router::new().route("/v1/approvals/{id}", get(one))).await;
    let a = c.within(Duration::from_secs(5)).get_approval("apr_1", Some(7)).await.unwrap();
    assert_eq!((a.id.as_str(), a.status.as_str(), a.comment.as_deref()), ("apr_1", "pending", Some("wait=7")));

    let t = Instant::now();
    let e = c.within(Duration::from_millis(300)).get_approval("slow", Some(5)).await.unwrap_err();
    assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
}

#[tokio::test]
async fn a_traced_batch_names_the_request_it_serves() {
    async fn echo(headers: HeaderMap, Json(r): Json<EvaluationsRequest>) -> Json<EvaluationsResponse> {
        let id = headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let n = r.evaluations.map_or(0, |e| e.len());
        let context = Some(json!({ "request_id": id }));
        Json(EvaluationsResponse { evaluations: vec![EvaluationResponse { decision: false, context }; n] })
    }
    let c = serve(Router::new().route("/access/v1/evaluations", post(echo))).await;
    let r = c.evaluate_batch_traced(&batch(2), Some("req-42")).await.unwrap();
    assert_eq!(r.evaluations.len(), 2);
    assert_eq!(r.evaluations[1].context, Some(json!({ "request_id": "req-42" })));
    let r = c.evaluate_batch(&batch(1)).await.unwrap();
    assert_eq!(r.evaluations[0].context, Some(json!({ "request_id": null })));
}

#[tokio::test]
async fn the_key_set_is_typed() {
    let app = Router::new()
        .route("/.well-known/jwks.json", get(|| async { Json(json!({ "keys": [{ "kty": "OKP", "crv": "Ed25519", "x": "AA" }] })) }));
    let set = serve(app).await.jwk_set().await.unwrap();
    assert_eq!(set.keys.len(), 1);
    assert_eq!(set.keys[0]["kty"], "OKP");

    let app = Router::new().route("/.well-known/jwks.json", get(|| async { Json(json!({})) }));
    assert!(serve(app).await.jwk_set().await.unwrap().keys.is_empty());
}

#[tokio::test]
async fn evidence_and_leases_send_their_typed_bodies() {
    async fn evidence(headers: HeaderMap, Json(body): Json<Value>) -> Response {
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let events = body["events"].as_array().cloned().unwrap_or_default();
        let shape = json!({ "kind": "tool.call", "ts_ms": 5, "agent": "bot", "task": null, "details": {}, "receipt": "rcp" });
        if auth != "Bearer pep-token" || events.len() != 1 || events[0] != shape {
            return answer(StatusCode::BAD_REQUEST, r#"{"error":{"code":"invalid_request","message":"wrong body"}}"#);
        }
        Json(EvidenceResponse { recorded: 1, seqs: vec![9] }).into_response()
    }
    async fn lease(Path(name): Path<String>, Json(body): Json<Value>) -> Response {
        if name == "db" && body == json!({ "task": "tsk_1" }) {
            answer(StatusCode::SERVICE_UNAVAILABLE, r#"{"error":{"code":"lease_database_unreachable","message":"down"}}"#)
        } else {
            answer(StatusCode::BAD_REQUEST, r#"{"error":{"code":"invalid_request","message":"wrong body"}}"#)
        }
    }
    let app = Router::new().route("/v1/evidence", post(evidence)).route("/v1/secrets/{name}/leases", post(lease));
    let c = serve(app).await;
    let ev = EvidenceEvent {
        kind: "tool.call".into(),
        ts_ms: 5,
        agent: Some("bot".into()),
        task: None,
        details: json!({}),
        receipt: Some("rcp".into()),
    };
    assert_eq!(c.submit_evidence(&[ev]).await.unwrap(), EvidenceResponse { recorded: 1, seqs: vec![9] });
    let e = c.lease("db", "tsk_1").await.unwrap_err();
    assert_eq!((e.code(), e.status()), (Some("lease_database_unreachable"), Some(503)), "{e:?}");
}
