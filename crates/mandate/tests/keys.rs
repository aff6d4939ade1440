//! Signing key rotation: both keys are published, mandates signed by the old key keep
//! working until they expire, new mandates carry the new kid, and checkpoints signed by
//! either key still verify, online and offline.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

mod common;
mod support;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;
use support::*;

/// The kids of the checkpoints signed so far.
async fn checkpoint_kids(server: &Server) -> BTreeSet<String> {
    let (status, body) = admin_get_json(server, "/v1/audit/checkpoints").await;
    assert_eq!(status, 200, "{body}");
    body["checkpoints"].as_array().unwrap().iter().map(|c| c["kid"].as_str().unwrap().to_owned()).collect()
}

fn jwks_kids(jwks: &Value) -> BTreeSet<String> {
    jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_keeps_old_mandates_and_checkpoints_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let config = "[audit]\ncheckpoint_every = 1\ncheckpoint_interval_secs = 1\n";
    let mut server = Server::start_in(tmp.path(), Options::with_config(tmp.path(), config));
    let agent = register_agent(&server.admin(), "rotator", &[]).await;
    let pep = pep(&server).await;

    let before = server.anon().jwks().await.unwrap();
    let old_kids = jwks_kids(&before);
    assert_eq!(old_kids.len(), 1, "{before}");
    let old_kid = old_kids.iter().next().unwrap().clone();

    // Mandate A is signed by the first key and not used (so not cached) before the rotation.
    let (mandate_a, _) = open_task(&server, &agent, &read_intent()).await;
    assert_eq!(jwt_part(&mandate_a, 0)["kid"], old_kid.as_str());
    poll("a checkpoint signed by the first key", || async { checkpoint_kids(&server).await.contains(&old_kid).then_some(()) }).await;

    let out = server.cli().args(["key", "rotate", "--json"]).output().unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let rotated: Value = serde_json::from_str(&stdout).unwrap();
    let new_kid = rotated["kid"].as_str().unwrap().to_owned();
    assert_eq!(rotated["previous_kid"], old_kid.as_str());
    assert_ne!(new_kid, old_kid);
    assert!(rotated["previous_retires_at_ms"].as_i64().unwrap() > 0);

    // Both keys are published.
    let after = server.anon().jwks().await.unwrap();
    assert_eq!(jwks_kids(&after), BTreeSet::from([old_kid.clone(), new_kid.clone()]));

    // The old mandate still verifies.
    let r = pep.evaluate(&evaluation(&agent, &mandate_a, "tickets.read", "ticket", "1", "internal")).await.unwrap();
    assert!(r.decision, "{r:?}");
    assert!(pep.introspect(&mandate_a).await.unwrap().active);

    // A new task's mandate is signed by the new key.
    let (mandate_b, task_b) = open_task(&server, &agent, &read_intent()).await;
    assert_eq!(jwt_part(&mandate_b, 0)["kid"], new_kid.as_str());
    let r = pep.evaluate(&evaluation(&agent, &mandate_b, "tickets.read", "ticket", "2", "internal")).await.unwrap();
    assert!(r.decision, "{r:?}");
    let trail = server.admin().audit_trail(&task_b).await.unwrap().events;
    let issued = trail.iter().find(|e| e["kind"] == "token.issued").unwrap();
    assert_eq!(issued["details"]["kid"], new_kid.as_str());
    let rotations = events_of_kind(&server, "key.rotated").await;
    assert_eq!(rotations.len(), 1);
    assert_eq!(rotations[0]["details"]["kid"], new_kid.as_str());

    // Checkpoints by both keys, and the whole trail verifies.
    poll("a checkpoint signed by the new key", || async { checkpoint_kids(&server).await.contains(&new_kid).then_some(()) }).await;
    let out = server.cli().args(["audit", "verify"]).output().unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.starts_with("ok: "), "{stdout}");

    // The private half of the old key is gone; offline verification still has its public half.
    let keys_dir = server.data_dir().join("keys");
    assert!(!keys_dir.join(format!("{old_kid}.pk8")).exists());
    assert!(keys_dir.join(format!("{new_kid}.pk8")).exists());
    server.stop();
    let out = mandate_cmd().args(["audit", "verify", "--data-dir"]).arg(server.data_dir()).output().unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.starts_with("ok: "), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retired_key_leaves_the_jwks_once_its_mandates_have_expired() {
    let tmp = tempfile::tempdir().unwrap();
    // Mandates live one second and no clock skew is tolerated: the overlap is one second.
    let config = "[tasks]\nmax_ttl_secs = 1\n[attestation]\nleeway_secs = 0\n[audit]\ncheckpoint_every = 1\n";
    let mut server = Server::start_in(tmp.path(), Options::with_config(tmp.path(), config));
    let old_kid = jwks_kids(&server.anon().jwks().await.unwrap()).into_iter().next().unwrap();
    poll("a checkpoint signed by the first key", || async { checkpoint_kids(&server).await.contains(&old_kid).then_some(()) }).await;
    let rotated = server.admin().rotate_key().await.unwrap();
    assert_eq!(rotated.previous_kid, old_kid);

    let kids = poll("the retired key to leave the JWKS", || async {
        let kids = jwks_kids(&server.anon().jwks().await.unwrap());
        (kids.len() == 1).then_some(kids)
    })
    .await;
    assert_eq!(kids, BTreeSet::from([rotated.kid.clone()]));

    // New mandates still verify, and checkpoints signed by the retired key still do too.
    let agent = register_agent(&server.admin(), "after", &[]).await;
    let pep = pep(&server).await;
    let (mandate, _) = open_task(&server, &agent, &read_intent()).await;
    assert_eq!(jwt_part(&mandate, 0)["kid"], rotated.kid.as_str());
    let r = pep.evaluate(&evaluation(&agent, &mandate, "tickets.read", "ticket", "1", "internal")).await.unwrap();
    assert!(r.decision || reason(&r) == "task_expired", "a one-second task is allowed or already expired: {r:?}");
    let verified = server.admin().audit_verify().await.unwrap();
    assert!(verified.ok, "{verified:?}");
    server.stop();
    let out = mandate_cmd().args(["audit", "verify", "--data-dir"]).arg(server.data_dir()).output().unwrap();
    assert!(out.status.success(), "{:?}", output_text(&out));
}
