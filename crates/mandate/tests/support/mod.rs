//! Helpers shared by the policy, issuer, key and operations tests: bounded polling, policy
//! directories, raw authenticated requests, reading the trail and decoding JWTs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code
#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::Value;

use crate::common::{ADMIN, Server};

/// Polls `check` every 50 ms until it yields a value, for at most 10 s.
pub async fn poll<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up after 10 s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes the starter policy set (schema and policies) into `dir`.
pub fn starter_policies(dir: &Path) {
    mandate_policy::PolicySources::starter().write_to(dir).unwrap();
}

/// The `mandate` binary with no server settings inherited from the environment.
pub fn mandate_cmd() -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("mandate").unwrap();
    c.env_remove("MANDATE_URL").env_remove("MANDATE_TOKEN").env_remove("MANDATE_CONFIG");
    c
}

/// Stdout and stderr of a finished command, for assertions and failure messages.
pub fn output_text(out: &std::process::Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Every audit event of one kind, oldest first.
pub async fn events_of_kind(server: &Server, kind: &str) -> Vec<Value> {
    server.admin().audit_events(&[("kind", kind.to_owned()), ("limit", "10000".to_owned())]).await.unwrap().events
}

/// The `decision` event that recorded the decision with this id.
pub async fn decision_event(server: &Server, decision_id: &str) -> Value {
    events_of_kind(server, "decision")
        .await
        .into_iter()
        .find(|e| e["details"]["decision_id"] == decision_id)
        .unwrap_or_else(|| panic!("no decision event with id {decision_id}"))
}

/// The decision id of an AuthZEN answer.
pub fn decision_id(r: &mandate_proto::authzen::EvaluationResponse) -> String {
    r.context.as_ref().unwrap()["decision_id"].as_str().unwrap().to_owned()
}

/// A GET with the admin token, answering (status, JSON body).
pub async fn admin_get_json(server: &Server, path: &str) -> (u16, Value) {
    let r = reqwest::Client::new().get(format!("{}{path}", server.url)).bearer_auth(ADMIN).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Part `index` of a compact JWT (0 header, 1 payload), decoded.
pub fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&B64.decode(part).unwrap()).unwrap()
}

/// Base64url without padding, as JOSE uses it.
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    B64.encode(bytes)
}
