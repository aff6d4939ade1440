//! What a remote enforcement gateway uses, against the real binary: the revocation feed
//! followed by `mandate_client::revocations` across dropped connections and a restart, sealed
//! secrets opened with the master key, and evidence intake.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::gateway::{GatewayIdentity, TcpRelay};
use common::*;
use mandate_client::Client;
use mandate_client::revocations::{FeedEvent, Subscriber, subscribe};
use mandate_proto::gateway::{EvidenceEvent, RevocationKind, RevocationStatus};
use mandate_secrets::{GatewaySealed, MasterKey};
use serde_json::{Value, json};

async fn next(sub: &mut Subscriber) -> FeedEvent {
    tokio::time::timeout(Duration::from_secs(15), sub.next()).await.expect("no feed event within 15 s")
}

/// The next event that is not a disconnection.
async fn next_connected(sub: &mut Subscriber) -> FeedEvent {
    loop {
        match next(sub).await {
            FeedEvent::Disconnected { .. } => continue,
            other => return other,
        }
    }
}

async fn entry(sub: &mut Subscriber) -> (u64, RevocationKind, String, RevocationStatus) {
    match next_connected(sub).await {
        FeedEvent::Revocation(e) => (e.seq, e.kind, e.id, e.status),
        other => panic!("expected an entry, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_follows_revocations_across_dropped_connections_and_restarts() {
    let mut server = Server::start();
    let admin = server.admin();
    let pep_token = admin.create_token("pep", "gateway").await.unwrap().token;
    let proxy = TcpRelay::start(&server.url).await;
    let via_proxy = Client::new(&proxy.url, Some(pep_token.clone())).unwrap();
    let mut sub = subscribe(&via_proxy, None);
    let connectivity = sub.connectivity();
    assert!(!connectivity.is_connected());
    let FeedEvent::Hello(hello) = next_connected(&mut sub).await else { panic!("no hello") };
    assert_eq!(hello.seq, 0);
    let epoch = hello.epoch;
    assert!(connectivity.is_connected() && sub.is_connected());

    // A revoked task, then the kill switch: the agent first, then each task it had.
    let agent = register_agent(&admin, "reader", &[]).await;
    let (_, first) = open_task(&server, &agent, &read_intent()).await;
    admin.revoke_task(&first, None).await.unwrap();
    assert_eq!(entry(&mut sub).await, (1, RevocationKind::Task, first, RevocationStatus::Revoked));
    let (_, second) = open_task(&server, &agent, &read_intent()).await;
    admin.disable_agent("reader").await.unwrap();
    assert_eq!(entry(&mut sub).await, (2, RevocationKind::Agent, "reader".into(), RevocationStatus::Disabled));
    assert_eq!(entry(&mut sub).await, (3, RevocationKind::Task, second, RevocationStatus::Revoked));
    admin.enable_agent("reader").await.unwrap();
    assert_eq!(entry(&mut sub).await, (4, RevocationKind::Agent, "reader".into(), RevocationStatus::Enabled));
    // The sweeper's expiry.
    let mut short = read_intent();
    short["lifetime_seconds"] = json!(1);
    let (_, third) = open_task(&server, &agent, &short).await;
    assert_eq!(entry(&mut sub).await, (5, RevocationKind::Task, third, RevocationStatus::Expired));
    assert_eq!(sub.last_seq(), Some(5));

    // The connection drops; what happens meanwhile comes after the reconnect, exactly once.
    proxy.cut();
    let (_, fourth) = open_task(&server, &agent, &read_intent()).await;
    admin.complete_task(&fourth, None).await.unwrap();
    admin.disable_agent("reader").await.unwrap();
    let FeedEvent::Disconnected { retry_in, .. } = next(&mut sub).await else { panic!("the drop went unnoticed") };
    assert_eq!(retry_in, Duration::from_millis(100));
    assert!(!connectivity.is_connected());
    proxy.reopen();
    let FeedEvent::Hello(hello) = next_connected(&mut sub).await else { panic!("no hello after the reconnect") };
    assert_eq!((hello.epoch.as_str(), hello.seq), (epoch.as_str(), 7));
    assert!(connectivity.is_connected());
    assert_eq!(entry(&mut sub).await, (6, RevocationKind::Task, fourth, RevocationStatus::Completed));
    assert_eq!(entry(&mut sub).await, (7, RevocationKind::Agent, "reader".into(), RevocationStatus::Disabled));
    admin.enable_agent("reader").await.unwrap();
    assert_eq!(entry(&mut sub).await, (8, RevocationKind::Agent, "reader".into(), RevocationStatus::Enabled));

    // A restarted server is another epoch: the resume point means nothing there, so a reset.
    server.kill9();
    let restarted = Server::start_in(&server.dir, Options::default());
    proxy.retarget(&restarted.url);
    proxy.cut();
    proxy.reopen();
    let FeedEvent::Hello(hello) = next_connected(&mut sub).await else { panic!("no hello after the restart") };
    assert_ne!(hello.epoch, epoch);
    assert_eq!(hello.seq, 0);
    let FeedEvent::Reset(reset) = next_connected(&mut sub).await else { panic!("no reset after the restart") };
    assert_eq!((reset.epoch.as_str(), reset.seq), (hello.epoch.as_str(), 0));
    restarted.admin().disable_agent("reader").await.unwrap();
    assert_eq!(entry(&mut sub).await, (1, RevocationKind::Agent, "reader".into(), RevocationStatus::Disabled));

    // A resume point this server never reached is a reset, then live entries.
    let direct = Client::new(&restarted.url, Some(pep_token)).unwrap();
    let mut old = subscribe(&direct, Some(999));
    assert!(matches!(next_connected(&mut old).await, FeedEvent::Hello(h) if h.seq == 1));
    assert!(matches!(next_connected(&mut old).await, FeedEvent::Reset(r) if r.seq == 1));
    restarted.admin().enable_agent("reader").await.unwrap();
    assert_eq!(entry(&mut old).await.0, 2);
    assert_eq!(entry(&mut sub).await.0, 2);

    // Only enforcement points and admins may follow the feed.
    let auditor = restarted.admin().create_token("auditor", "a").await.unwrap().token;
    let mut refused = subscribe(&Client::new(&restarted.url, Some(auditor)).unwrap(), None);
    let FeedEvent::Disconnected { error, .. } = next(&mut refused).await else { panic!("an auditor followed the feed") };
    assert_eq!(error.code(), Some("forbidden"));
}

#[tokio::test]
async fn a_remote_gateway_opens_sealed_secrets_and_submits_evidence() {
    let master = MasterKey::generate();
    let server =
        Server::start_with(Options { envs: vec![("MANDATE_MASTER_KEY".into(), master.to_base64().to_string())], ..Default::default() });
    let admin = server.admin();
    let identity = GatewayIdentity::register(&admin, "edge", &["slack-token", "missing"]).await;
    let gateway = identity.client(&server.url);
    let auditor = Client::new(&server.url, Some(admin.create_token("auditor", "a").await.unwrap().token)).unwrap();

    let value = "xoxb-2f9c7a1e4d";
    admin.put_secret("slack-token", value, "bot token").await.unwrap();
    let sealed = gateway.sealed_secret("slack-token").await.unwrap();
    assert_eq!((sealed.name.as_str(), sealed.version), ("slack-token", 1));
    assert!(!serde_json::to_string(&sealed).unwrap().contains(value));
    let b64 = |s: &str| URL_SAFE_NO_PAD.decode(s).unwrap();
    let blob = GatewaySealed { enc: b64(&sealed.enc), ciphertext: b64(&sealed.ciphertext) };
    let opened = mandate_secrets::open_for_gateway(&identity.private_key(), "edge", &sealed.name, sealed.version, None, &blob).unwrap();
    assert_eq!(opened.as_slice(), value.as_bytes());
    assert_eq!(admin.sealed_secret("slack-token").await.unwrap_err().code(), Some("forbidden"));
    assert_eq!(auditor.sealed_secret("slack-token").await.unwrap_err().code(), Some("forbidden"));
    assert_eq!(gateway.sealed_secret("missing").await.unwrap_err().code(), Some("secret_not_found"));

    // Evidence is taken for a decision this token obtained, with the receipt it came with.
    let reader = register_agent(&admin, "reader", &[]).await;
    let (mandate, task) = open_task(&server, &reader, &read_intent()).await;
    let decided = gateway.evaluate(&evaluation(&reader, &mandate, "tickets.read", "ticket", "1", "internal")).await.unwrap();
    assert!(decided.decision, "{decided:?}");
    let ctx = decided.context.clone().unwrap();
    let decision_id = ctx["decision_id"].as_str().unwrap().to_owned();
    let receipt = ctx["receipt"].as_str().map(str::to_owned);
    assert!(receipt.is_some(), "a pep token's decision carries a receipt: {ctx}");
    let event = EvidenceEvent {
        kind: "tool.call".into(),
        ts_ms: 1_750_000_000_000,
        agent: Some("reader".into()),
        task: Some(task.clone()),
        details: json!({ "tool": "tickets.read", "kind": "read", "upstream": "crm", "forwarded": true, "decision_id": decision_id }),
        receipt: receipt.clone(),
    };
    let answer = gateway.submit_evidence(std::slice::from_ref(&event)).await.unwrap();
    assert_eq!((answer.recorded, answer.seqs.len()), (1, 1));
    let recorded = auditor.audit_events(&[("kind", "tool.call".to_owned())]).await.unwrap().events;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["seq"], answer.seqs[0]);
    assert_eq!(recorded[0]["actor"], format!("token:{}", identity.token_id));
    assert_eq!(recorded[0]["task"], task.as_str());
    assert!(recorded[0]["details"].get("receipt").is_none() && !recorded[0].to_string().contains(receipt.as_deref().unwrap()));
    let ocsf: Value = auditor
        .audit_export("ocsf")
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["metadata"]["event_code"] == "tool.call")
        .unwrap();
    assert_eq!((ocsf["class_uid"].as_u64(), ocsf["activity_id"].as_u64(), ocsf["action_id"].as_u64()), (Some(6003), Some(2), Some(1)));
    assert_eq!((ocsf["api"]["operation"].as_str(), ocsf["api"]["service"]["name"].as_str()), (Some("tickets.read"), Some("crm")));
    assert_eq!(ocsf["api"]["request"]["uid"], decision_id.as_str());

    let mut forged = event.clone();
    forged.kind = "task.revoked".into();
    assert_eq!(gateway.submit_evidence(&[forged]).await.unwrap_err().code(), Some("invalid_request"));
    assert_eq!(admin.submit_evidence(std::slice::from_ref(&event)).await.unwrap_err().code(), Some("forbidden"));

    // Not bound: the whole batch is refused and nothing of it is written.
    let other_pep = admin.create_token("pep", "another gateway").await.unwrap();
    let other = Client::new(&server.url, Some(other_pep.token)).unwrap();
    let (_, other_task) = open_task(&server, &reader, &read_intent()).await;
    let with = |f: &dyn Fn(&mut EvidenceEvent)| {
        let mut e = event.clone();
        f(&mut e);
        e
    };
    let unbound = [
        ("no receipt", with(&|e| e.receipt = None)),
        ("a forged receipt", with(&|e| e.receipt = Some(URL_SAFE_NO_PAD.encode([7u8; 32])))),
        ("another task", with(&|e| e.task = Some(other_task.clone()))),
        ("another agent", with(&|e| e.agent = Some("someone-else".into()))),
        ("no task", with(&|e| e.task = None)),
        ("another decision", with(&|e| e.details["decision_id"] = json!("dec_forged"))),
        ("a receipt without a decision", with(&|e| drop(e.details.as_object_mut().unwrap().remove("decision_id")))),
    ];
    let before = auditor.audit_events(&[("kind", "tool.call".to_owned())]).await.unwrap().events.len();
    for (what, bad) in &unbound {
        // A good event first: it is not written either.
        let e = gateway.submit_evidence(&[event.clone(), bad.clone()]).await.unwrap_err();
        assert_eq!(e.code(), Some("evidence_not_bound"), "{what}: {e}");
        assert!(e.to_string().contains("events[1]"), "{what}: {e}");
    }
    // Another pep token cannot use this one's receipt.
    assert_eq!(other.submit_evidence(std::slice::from_ref(&event)).await.unwrap_err().code(), Some("evidence_not_bound"));
    assert_eq!(auditor.audit_events(&[("kind", "tool.call".to_owned())]).await.unwrap().events.len(), before, "nothing was written");

    // An event naming no decision (a gateway's refusal before any) stays out of the task's
    // trail: what it claims is kept in its details.
    let own = EvidenceEvent {
        kind: "tool.call".into(),
        ts_ms: 1_750_000_000_001,
        agent: Some("reader".into()),
        task: Some(other_task.clone()),
        details: json!({ "upstream": "billing", "reason": "route_not_configured", "forwarded": false }),
        receipt: None,
    };
    let answer = other.submit_evidence(&[own]).await.unwrap();
    let trail = auditor.audit_trail(&other_task).await.unwrap().events;
    assert!(!trail.iter().any(|e| e["kind"] == "tool.call"), "{trail:#?}");
    let all = auditor.audit_events(&[("kind", "tool.call".to_owned())]).await.unwrap().events;
    let recorded = all.iter().find(|e| e["seq"] == answer.seqs[0]).unwrap();
    assert!(recorded["task"].is_null() && recorded["agent"].is_null(), "{recorded}");
    assert_eq!(recorded["details"]["claimed_task"], other_task.as_str());
    assert_eq!(recorded["details"]["claimed_agent"], "reader");

    // Only a pep token's decisions carry receipts.
    let d = admin.evaluate(&evaluation(&reader, &mandate, "tickets.read", "ticket", "1", "internal")).await.unwrap();
    assert!(d.context.unwrap().get("receipt").is_none());
    assert!(auditor.audit_verify().await.unwrap().ok);
}
