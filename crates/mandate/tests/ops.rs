//! Operating the server: health and readiness, Prometheus metrics, discovery metadata, task
//! expiry, and a graceful stop that leaves a whole trail ending in `server.stopped`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

mod common;
mod support;

use std::collections::BTreeSet;

use common::*;
use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn health_and_readiness_answer_200() {
    let server = Server::start();
    let anon = server.anon();
    assert_eq!(anon.get_text("/healthz").await.unwrap(), (200, "ok\n".to_owned()));
    assert_eq!(anon.get_text("/readyz").await.unwrap(), (200, "ready\n".to_owned()));
}

/// Checks the Prometheus text format: every sample line is `name[{labels}] value` with a
/// number as value, and its family was declared by a `# TYPE` line before it. Returns the
/// declared families.
fn check_exposition(text: &str) -> BTreeSet<String> {
    let mut families = BTreeSet::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap();
            let kind = parts.next().unwrap_or("");
            assert!(
                ["counter", "gauge", "histogram", "summary", "unknown", "info", "stateset", "gaugehistogram"].contains(&kind),
                "{line}"
            );
            families.insert(name.to_owned());
            continue;
        }
        if line.starts_with('#') {
            assert!(line.starts_with("# HELP ") || line.starts_with("# UNIT ") || line == "# EOF", "unexpected comment: {line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        assert!(value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value), "bad value in: {line}");
        let name = series.split('{').next().unwrap();
        assert!(!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'), "bad name in: {line}");
        if let Some(labels) = series.strip_prefix(name) {
            assert!(labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')), "bad labels in: {line}");
        }
        assert!(families.iter().any(|f| name.starts_with(f.as_str())), "sample of an undeclared family: {line}");
    }
    families
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_decisions_in_prometheus_text() {
    let server = Server::start();
    let agent = register_agent(&server.admin(), "metered", &[]).await;
    let pep = pep(&server).await;
    let (mandate, _) = open_task(&server, &agent, &read_intent()).await;
    assert!(pep.evaluate(&evaluation(&agent, &mandate, "tickets.read", "ticket", "1", "internal")).await.unwrap().decision);
    let denied = pep.evaluate(&evaluation(&agent, &mandate, "tickets.delete", "ticket", "1", "internal")).await.unwrap();
    assert_eq!(reason(&denied), "action_outside_intent");

    let (status, text) = server.anon().get_text("/metrics").await.unwrap();
    assert_eq!(status, 200);
    let families = check_exposition(&text);
    assert!(families.contains("mandate_decisions"), "{families:?}");
    let allowed = text
        .lines()
        .find(|l| l.starts_with("mandate_decisions_total{") && l.contains("decision=\"allow\"") && l.contains("reason=\"allowed\""));
    assert_eq!(allowed.and_then(|l| l.rsplit_once(' ')).map(|(_, v)| v), Some("1"), "{text}");
    let outside = text.lines().find(|l| l.starts_with("mandate_decisions_total{") && l.contains("reason=\"action_outside_intent\""));
    assert_eq!(outside.and_then(|l| l.rsplit_once(' ')).map(|(_, v)| v), Some("1"), "{text}");
    assert!(text.lines().any(|l| l == "mandate_live_tasks 1"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("mandate_mandate_requests_total{") && l.contains("outcome=\"issued\"")), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_metadata_names_this_server() {
    let server = Server::start();
    let oauth = server.anon().oauth_metadata().await.unwrap();
    assert_eq!(oauth["issuer"], server.url.as_str());
    assert_eq!(oauth["token_endpoint"], format!("{}/oauth2/token", server.url));
    assert_eq!(oauth["jwks_uri"], format!("{}/.well-known/jwks.json", server.url));
    assert_eq!(oauth["grant_types_supported"], json!(["urn:ietf:params:oauth:grant-type:token-exchange"]));

    let (status, text) = server.anon().get_text("/.well-known/authzen-configuration").await.unwrap();
    assert_eq!(status, 200);
    let authzen: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(authzen["policy_decision_point"], server.url.as_str());
    assert_eq!(authzen["access_evaluation_endpoint"], format!("{}/access/v1/evaluation", server.url));
    assert_eq!(authzen["access_evaluations_endpoint"], format!("{}/access/v1/evaluations", server.url));

    // The endpoints it names are the ones that answer.
    let pep_token = server.admin().create_token("pep", "discovery").await.unwrap().token;
    let r = reqwest::Client::new()
        .post(authzen["access_evaluation_endpoint"].as_str().unwrap())
        .bearer_auth(pep_token)
        .json(&json!({ "subject": { "type": "user", "id": "x" }, "action": { "name": "tickets.read" }, "resource": { "type": "ticket", "id": "1" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let jwks: serde_json::Value = reqwest::get(oauth["jwks_uri"].as_str().unwrap()).await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_expires_when_its_lifetime_is_up() {
    let server = Server::start();
    let agent = register_agent(&server.admin(), "brief", &[]).await;
    let pep = pep(&server).await;
    let mut intent = read_intent();
    intent["lifetime_seconds"] = json!(1);
    let att = attestation(&agent, &server.url);
    let r = server.anon().exchange(&att, &intent).await.unwrap();
    assert_eq!(r.expires_in, 1);
    let (mandate, task) = (r.access_token, r.task_id);
    let claims = jwt_part(&mandate, 1);
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 1);

    let ask = evaluation(&agent, &mandate, "tickets.read", "ticket", "1", "internal");
    poll("decisions to say the task expired", || async {
        let d = pep.evaluate(&ask).await.unwrap();
        (reason(&d) == "task_expired").then_some(())
    })
    .await;
    let view = poll("the sweeper to mark the task expired", || async {
        let t = server.admin().get_task(&task).await.unwrap();
        (t.status == "expired").then_some(t)
    })
    .await;
    assert_eq!(view.ended_by.as_deref(), Some("system"));
    assert!(!pep.introspect(&mandate).await.unwrap().active);
    let d = pep.evaluate(&ask).await.unwrap();
    assert!(!d.decision);
    assert_eq!(reason(&d), "task_expired");

    let trail = server.admin().audit_trail(&task).await.unwrap().events;
    let expired: Vec<_> = trail.iter().filter(|e| e["kind"] == "task.expired").collect();
    assert_eq!(expired.len(), 1, "{trail:?}");
    assert_eq!(expired[0]["actor"], "system");
    // An expired task cannot be revoked or completed any more.
    assert_eq!(server.admin().revoke_task(&task, None).await.unwrap_err().code(), Some("task_not_live"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_stop_leaves_a_whole_trail_ending_in_server_stopped() {
    let mut server = Server::start();
    let agent = register_agent(&server.admin(), "stopper", &[]).await;
    let pep = pep(&server).await;
    let (mandate, _) = open_task(&server, &agent, &read_intent()).await;
    for i in 0..5 {
        pep.evaluate(&evaluation(&agent, &mandate, "tickets.read", "ticket", &i.to_string(), "internal")).await.unwrap();
    }
    server.stop();

    let out = mandate_cmd().args(["audit", "verify", "--data-dir"]).arg(server.data_dir()).output().unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.starts_with("ok: "), "{stdout}");

    let db = rusqlite::Connection::open(server.data_dir().join("mandate.db")).unwrap();
    let (last_seq, last_kind): (u64, String) =
        db.query_row("SELECT seq, kind FROM audit_events ORDER BY seq DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert_eq!(last_kind, "server.stopped");
    let first_kind: String = db.query_row("SELECT kind FROM audit_events ORDER BY seq LIMIT 1", [], |r| r.get(0)).unwrap();
    assert_eq!(first_kind, "server.started");
    let decisions: u64 = db.query_row("SELECT count(*) FROM audit_events WHERE kind = 'decision'", [], |r| r.get(0)).unwrap();
    assert_eq!(decisions, 5);
    // The last checkpoint covers the whole trail, the stop included.
    let checkpoint_seq: u64 = db.query_row("SELECT max(seq) FROM audit_checkpoints", [], |r| r.get(0)).unwrap();
    assert_eq!(checkpoint_seq, last_seq);
}
