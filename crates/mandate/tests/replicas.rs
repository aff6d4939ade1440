#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

//! Several real `mandate serve` processes on one PostgreSQL database are one service: what one
//! replica writes, every other one enforces; they sign with one key and append to one chain;
//! a replica killed under load loses no acknowledged decision; a replica that loses its
//! database fails closed and recovers by itself.
//!
//! Runs when `MANDATE_TEST_DATABASE_URL` names a PostgreSQL server whose user may create
//! databases (each test makes its own and drops it); skipped, saying so, otherwise.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::gateway::{GatewayIdentity, GatewayProcess, Recorder, TcpRelay, bounded, eventually, intent};
use common::postgres::{Database, test_database_url};
use common::{Options, Server, TestAgent, evaluation, reason, register_agent};
use mandate_client::Client;
use mandate_secrets::MasterKey;
use serde_json::Value;

/// Every replica's issuer URL: the address clients reach the service at (a load balancer).
const ISSUER: &str = "https://mandate.replicas.test";

/// How long a change made through one replica may take to be enforced by another before the
/// test fails: a liveness bound, far above the measured times (see BENCHMARKS.md).
const PROPAGATION: Duration = Duration::from_secs(10);

/// A replica on `url` (the database, perhaps through a relay), with the shared master key.
fn replica(url: &str, master: &str) -> Server {
    Server::start_with(Options {
        extra_args: vec!["--database-url".into(), url.to_owned(), "--issuer-url".into(), ISSUER.into()],
        envs: vec![("MANDATE_MASTER_KEY".into(), master.to_owned())],
    })
}

fn master_key() -> String {
    MasterKey::generate().to_base64().to_string()
}

fn attestation(agent: &TestAgent) -> String {
    common::attestation(agent, ISSUER)
}

async fn open_task_via(server: &Server, agent: &TestAgent, intent: &Value) -> (String, String) {
    let r = server.anon().exchange(&attestation(agent), intent).await.unwrap();
    (r.access_token, r.task_id)
}

/// A `pep` token made through `made_on`, and a client of `server` holding it.
async fn pep_on(made_on: &Server, server: &Server) -> Client {
    let t = made_on.admin().create_token("pep", "replica tests").await.unwrap();
    Client::new(&server.url, Some(t.token)).unwrap()
}

async fn decide(pep: &Client, agent: &TestAgent, mandate: &str) -> (bool, String) {
    let r = pep.evaluate(&evaluation(agent, mandate, "tickets.read", "ticket", "4411", "internal")).await.unwrap();
    (r.decision, reason(&r))
}

fn gateway_toml(api: &str) -> String {
    format!(
        r#"
[[upstream]]
name = "billing"
type = "http"
url = "{api}"
[[upstream.routes]]
method = "GET"
path = "/invoices/{{id}}"
action = "billing.invoices.read"
kind = "read"
classification = "internal"
resource = "invoice:{{id}}"
"#
    )
}

async fn gateway_get(gw: &GatewayProcess, mandate: &str) -> u16 {
    let resp = bounded(
        "gateway call",
        reqwest::Client::new()
            .get(format!("{}/api/billing/invoices/7", gw.url))
            .header("authorization", format!("Bearer {mandate}"))
            .send(),
    )
    .await
    .unwrap();
    resp.status().as_u16()
}

/// Polls `probe` until it is true; the time it took.
async fn time_until<F, Fut>(what: &str, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if probe().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < PROPAGATION, "{what}: not within {PROPAGATION:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_are_one_service() {
    let Some(admin_url) = test_database_url("PostgreSQL replica tests") else { return };
    let db = Database::create(&admin_url, "mandate_replicas").await;
    let master = master_key();
    let a = replica(&db.url, &master);
    let b = replica(&db.url, &master);

    // One key ring: both publish the same JWKS, and a rotation through one reaches the other.
    let jwks_a = a.anon().jwks().await.unwrap();
    assert_eq!(jwks_a, b.anon().jwks().await.unwrap(), "both replicas publish the same JWKS");
    assert_eq!(jwks_a["keys"].as_array().unwrap().len(), 1);

    // Registered through A, attested through B; the attestation cannot be replayed on A.
    let agent = register_agent(&a.admin(), "support-bot", &[]).await;
    let att = attestation(&agent);
    let first = b.anon().exchange(&att, &intent(&["tickets.read", "billing.invoices.read"])).await.unwrap();
    let replay = a.anon().exchange(&att, &intent(&["tickets.read"])).await.unwrap_err();
    assert_eq!(replay.code(), Some("replayed_jti"), "{replay}");
    let (mandate, task) = (first.access_token, first.task_id);

    // A pep token made on B decides on A, for a task opened on B.
    let pep_b = pep_on(&b, &b).await;
    let pep_a = pep_on(&b, &a).await;
    assert_eq!(decide(&pep_a, &agent, &mandate).await, (true, "allowed".to_owned()));
    assert!(decide(&pep_b, &agent, &mandate).await.0);

    // A gateway attached to B.
    let api = Recorder::start().await;
    let gw_token = b.admin().create_token("pep", "gateway on b").await.unwrap();
    let mut gw = GatewayProcess::start(
        &gateway_toml(&api.url),
        &[("MANDATE_URL", b.url.as_str()), ("MANDATE_TOKEN", gw_token.token.as_str()), ("MANDATE_LOG", "warn")],
    );
    assert_eq!(gateway_get(&gw, &mandate).await, 200, "{}", gw.log());

    // Revoked through A: refused by B and by the gateway attached to B, on their next request.
    let revoked_at = Instant::now();
    a.admin().revoke_task(&task, Some("replica test".into())).await.unwrap();
    let (p, ag, m) = (pep_b.clone(), agent.clone(), mandate.clone());
    let at_b = tokio::spawn(async move {
        time_until("revocation at replica B", || {
            let (p, ag, m) = (p.clone(), ag.clone(), m.clone());
            async move { decide(&p, &ag, &m).await == (false, "task_revoked".to_owned()) }
        })
        .await
    });
    let at_gw = time_until("revocation at the gateway on B", || async { gateway_get(&gw, &mandate).await == 403 }).await;
    let at_b = at_b.await.unwrap();
    let total = revoked_at.elapsed();
    println!(
        "revocation through A enforced by replica B after {} ms and by the gateway on B after {} ms (both polled every 2 ms; {} ms in all)",
        at_b.as_millis(),
        at_gw.as_millis(),
        total.as_millis()
    );
    assert_eq!(decide(&pep_a, &agent, &mandate).await, (false, "task_revoked".to_owned()));

    // The kill switch through B reaches A.
    let (m2, _) = open_task_via(&a, &agent, &intent(&["tickets.read"])).await;
    assert!(decide(&pep_a, &agent, &m2).await.0);
    b.admin().disable_agent("support-bot").await.unwrap();
    let pa = pep_a.clone();
    time_until("agent disabled at replica A", || {
        let (p, ag, m) = (pa.clone(), agent.clone(), m2.clone());
        async move { !decide(&p, &ag, &m).await.0 }
    })
    .await;
    b.admin().enable_agent("support-bot").await.unwrap();

    // Rotation through A: B publishes the new key too, and verifies mandates A signs with it.
    let rotated = a.admin().rotate_key().await.unwrap();
    eventually("B publishes the rotated JWKS", PROPAGATION, || async {
        let (ja, jb) = (a.anon().jwks().await.unwrap(), b.anon().jwks().await.unwrap());
        (ja == jb && ja["keys"].as_array().is_some_and(|k| k.len() == 2)).then_some(())
    })
    .await;
    let (m3, _) = open_task_via(&a, &agent, &intent(&["tickets.read"])).await;
    let header = mandate_token::peek(&m3).unwrap();
    assert_eq!(header.kid.as_deref(), Some(rotated.kid.as_str()), "A signs with the new key");
    assert!(decide(&pep_b, &agent, &m3).await.0, "B verifies a mandate signed with the rotated key");

    // An API token revoked through A stops working on B.
    b.admin().revoke_api_token(&gw_token.id).await.unwrap_or_else(|e| panic!("{e}"));
    let via_b = Client::new(&b.url, Some(gw_token.token.clone())).unwrap();
    let va = Client::new(&a.url, Some(gw_token.token.clone())).unwrap();
    eventually("a revoked API token is refused by both replicas", PROPAGATION, || async {
        let (ra, rb) = (va.list_approvals(None, None).await, via_b.list_approvals(None, None).await);
        (ra.is_err() && rb.is_err()).then_some(())
    })
    .await;

    // Everything both replicas recorded is one chain that verifies from either.
    let report = a.admin().audit_verify().await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report, b.admin().audit_verify().await.unwrap());
    let _ = gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_decisions_on_both_replicas_form_one_chain() {
    let Some(admin_url) = test_database_url("PostgreSQL replica tests") else { return };
    let db = Database::create(&admin_url, "mandate_replicas").await;
    let master = master_key();
    let a = replica(&db.url, &master);
    let b = replica(&db.url, &master);
    let agent = Arc::new(register_agent(&a.admin(), "support-bot", &[]).await);
    let (mandate, task) = open_task_via(&b, &agent, &intent(&["tickets.read"])).await;
    let peps = [pep_on(&a, &a).await, pep_on(&a, &b).await];
    let before = a.admin().audit_verify().await.unwrap().events;

    let mut workers = Vec::new();
    for w in 0..16 {
        let (pep, agent, mandate) = (peps[w % 2].clone(), agent.clone(), mandate.clone());
        workers.push(tokio::spawn(async move {
            for _ in 0..25 {
                assert!(decide(&pep, &agent, &mandate).await.0);
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let report = b.admin().audit_verify().await.unwrap();
    assert!(report.ok, "{report:?}");
    assert!(report.events >= before + 400, "every decision is in the chain: {report:?}");
    assert_eq!(report.last_seq, Some(report.events), "sequence numbers have no gaps");
    let decisions = a.admin().audit_trail(&task).await.unwrap().events.iter().filter(|e| e["kind"] == "decision").count();
    assert_eq!(decisions, 400, "both replicas' decisions are in the task's trail");

    // The chain is one sequence in the database itself: no fork, no gap.
    let mut c = db.connect().await;
    let (n, min, max): (i64, i64, i64) =
        sqlx::query_as("SELECT count(*), min(seq), max(seq) FROM audit_events").fetch_one(&mut c).await.unwrap();
    assert_eq!((min, max), (1, n), "seq runs 1..=count");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_under_load_loses_no_acknowledged_decision() {
    let Some(admin_url) = test_database_url("PostgreSQL replica tests") else { return };
    let db = Database::create(&admin_url, "mandate_replicas").await;
    let master = master_key();
    let mut a = replica(&db.url, &master);
    let b = replica(&db.url, &master);
    let agent = Arc::new(register_agent(&b.admin(), "support-bot", &[]).await);
    let (mandate, task) = open_task_via(&b, &agent, &intent(&["tickets.read"])).await;
    let pep_a = pep_on(&b, &a).await;

    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (pep, agent, mandate, stop, acked) = (pep_a.clone(), agent.clone(), mandate.clone(), stop.clone(), acknowledged.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match pep.evaluate(&evaluation(&agent, &mandate, "tickets.read", "ticket", "1", "internal")).await {
                    Ok(r) => {
                        let id = r.context.as_ref().and_then(|c| c.get("decision_id")).and_then(Value::as_str).unwrap().to_owned();
                        assert!(r.decision, "{r:?}");
                        acked.lock().push(id);
                    }
                    Err(_) => return, // the replica is gone
                }
            }
        }));
    }
    // Let the load run, then kill A mid-stream.
    eventually("some decisions acknowledged", PROPAGATION, || async { (acknowledged.lock().len() >= 200).then_some(()) }).await;
    a.kill9();
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let acked: Vec<String> = acknowledged.lock().clone();

    // B verifies the chain, and every acknowledged decision is in it.
    let report = b.admin().audit_verify().await.unwrap();
    assert!(report.ok, "the chain verifies after a replica died mid-append: {report:?}");
    let trail = b.admin().audit_trail(&task).await.unwrap();
    let recorded: std::collections::HashSet<String> = trail
        .events
        .iter()
        .filter(|e| e["kind"] == "decision")
        .filter_map(|e| e["details"]["decision_id"].as_str().map(str::to_owned))
        .collect();
    let missing: Vec<&String> = acked.iter().filter(|id| !recorded.contains(*id)).collect();
    assert!(missing.is_empty(), "{} of {} acknowledged decisions are not in the chain: {missing:?}", missing.len(), acked.len());
    println!("{} decisions acknowledged by the killed replica, all in the verified chain", acked.len());

    // The service goes on through B, and a replica restarted on the same database joins it.
    let pep_b = pep_on(&b, &b).await;
    assert!(decide(&pep_b, &agent, &mandate).await.0);
    let a2 = replica(&db.url, &master);
    assert!(decide(&pep_on(&b, &a2).await, &agent, &mandate).await.0);
    assert!(a2.admin().audit_verify().await.unwrap().ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_without_its_database_fails_closed_and_recovers() {
    let Some(admin_url) = test_database_url("PostgreSQL replica tests") else { return };
    let db = Database::create(&admin_url, "mandate_replicas").await;
    let master = master_key();
    let a = replica(&db.url, &master);
    // B reaches the database through a relay the test can cut.
    let target = url::Url::parse(&db.url).unwrap();
    let relay = TcpRelay::start(&format!("http://{}:{}", target.host_str().unwrap(), target.port().unwrap_or(5432))).await;
    let port = url::Url::parse(&relay.url).unwrap().port().unwrap();
    let b = replica(&db.url_via(port), &master);
    let agent = register_agent(&a.admin(), "support-bot", &[]).await;
    let (mandate, task) = open_task_via(&a, &agent, &intent(&["tickets.read"])).await;
    let pep_b = pep_on(&a, &b).await;
    assert!(decide(&pep_b, &agent, &mandate).await.0);
    let http = reqwest::Client::new();
    let ready = |url: String| {
        let http = http.clone();
        async move { http.get(format!("{url}/readyz")).send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };
    assert_eq!(ready(b.url.clone()).await, 200);

    // The database goes away: B is not ready and every decision is a deny.
    relay.cut();
    assert_eq!(ready(b.url.clone()).await, 503);
    let (allowed, why) = decide(&pep_b, &agent, &mandate).await;
    assert!(!allowed, "a decision that cannot be recorded is a deny");
    assert_eq!(why, "audit_unavailable");

    // While B is cut off, the task is revoked through A: B must not miss it.
    a.admin().revoke_task(&task, Some("while b was cut off".into())).await.unwrap();

    // The database comes back: B recovers by itself, and catches up on what it missed.
    relay.reopen();
    eventually("B is ready again", PROPAGATION, || async { (ready(b.url.clone()).await == 200).then_some(()) }).await;
    eventually("B enforces the revocation it missed", PROPAGATION, || async {
        (decide(&pep_b, &agent, &mandate).await == (false, "task_revoked".to_owned())).then_some(())
    })
    .await;
    let (m2, _) = open_task_via(&a, &agent, &intent(&["tickets.read"])).await;
    eventually("B decides again", PROPAGATION, || async { decide(&pep_b, &agent, &m2).await.0.then_some(()) }).await;
    assert!(b.admin().audit_verify().await.unwrap().ok);
}

/// The gateway registry is one compare-and-set value in the shared store: a gateway registered
/// through one replica gets secrets sealed to it by the other, racing registrations of one name
/// have one winner, and a revocation through either holds on the next request at both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_gateways_are_one_registry_across_replicas() {
    let Some(admin_url) = test_database_url("PostgreSQL replica tests") else { return };
    let db = Database::create(&admin_url, "mandate_replicas").await;
    let master = master_key();
    let a = replica(&db.url, &master);
    let b = replica(&db.url, &master);
    a.admin().put_secret("billing-key", "bk-7731-s3cret", "").await.unwrap();

    let gw = GatewayIdentity::register(&a.admin(), "edge", &["billing-key"]).await;
    let via_b = gw.client(&b.url).sealed_secret("billing-key").await.unwrap();
    assert_eq!((via_b.gateway.as_str(), via_b.version), ("edge", 1));
    let names: Vec<String> = b.admin().list_gateways().await.unwrap().into_iter().map(|g| g.name).collect();
    assert_eq!(names, ["edge"]);

    // Two registrations of one name at once, one through each replica: exactly one wins.
    let (_d1, _k1, pk1) = GatewayIdentity::keygen();
    let (_d2, _k2, pk2) = GatewayIdentity::keygen();
    let req = |pk: String| mandate_proto::gateway::RegisterGatewayRequest { name: "edge-race".into(), public_key: pk, secrets: vec![] };
    let (admin_a, admin_b, req_a, req_b) = (a.admin(), b.admin(), req(pk1), req(pk2));
    let (ra, rb) = tokio::join!(admin_a.register_gateway(&req_a), admin_b.register_gateway(&req_b));
    assert_eq!(usize::from(ra.is_ok()) + usize::from(rb.is_ok()), 1, "{ra:?} {rb:?}");
    let loser = ra.err().or(rb.err()).unwrap();
    assert_eq!(loser.code(), Some("gateway_exists"), "{loser}");
    let listed = a.admin().list_gateways().await.unwrap();
    assert_eq!(listed.iter().filter(|g| g.name == "edge-race").count(), 1, "{listed:?}");
    // The loser's token was revoked again: only the two winners' tokens are live pep tokens.
    let live = a.admin().list_tokens().await.unwrap().into_iter().filter(|t| t.role == "pep" && t.revoked_at_ms.is_none()).count();
    assert_eq!(live, 2);

    // Revoked through B: A refuses at once.
    b.admin().revoke_gateway("edge").await.unwrap();
    let refused = gw.client(&a.url).sealed_secret("billing-key").await.unwrap_err();
    assert_eq!(refused.code(), Some("gateway_revoked"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_different_master_keys_refuse_to_share_a_store() {
    let Some(admin_url) = test_database_url("PostgreSQL replica tests") else { return };
    let db = Database::create(&admin_url, "mandate_replicas").await;
    let _a = replica(&db.url, &master_key());
    // The server trusts local connections, so any password is accepted: it must never show.
    let with_password = db.url.replacen("postgres@", "postgres:hunter2-db-pass@", 1);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &with_password, "--issuer-url", ISSUER])
        .arg("--data-dir")
        .arg(tempfile::tempdir().unwrap().path())
        .env("MANDATE_MASTER_KEY", master_key())
        .env("MANDATE_ADMIN_TOKEN", common::ADMIN)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("same `MANDATE_MASTER_KEY`"), "{err}");
    assert!(!err.contains("hunter2-db-pass"), "the password is never printed: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandate_migrate_brings_a_new_database_up_to_date() {
    let Some(admin_url) = test_database_url("PostgreSQL replica tests") else { return };
    let db = Database::create(&admin_url, "mandate_replicas").await;
    let with_password = db.url.replacen("postgres@", "postgres:hunter2-db-pass@", 1);
    for _ in 0..2 {
        let out =
            std::process::Command::new(env!("CARGO_BIN_EXE_mandate")).args(["migrate", "--database-url", &with_password]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("up to date"), "{said}");
        assert!(!said.contains("hunter2-db-pass"), "the password is never printed: {said}");
    }
    let mut c = db.connect().await;
    let (n,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM information_schema.tables WHERE table_name = 'audit_events'").fetch_one(&mut c).await.unwrap();
    assert_eq!(n, 1);
}
