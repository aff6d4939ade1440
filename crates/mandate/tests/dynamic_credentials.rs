#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

//! Dynamic database credentials against a real PostgreSQL and the real `mandate serve`: a
//! `postgres-dynamic` secret mints a login role per task, injected by the gateway into an HTTP
//! upstream (embedded and remote) and handed out sealed by the API; the role can do exactly
//! the template's grants, no two tasks share one, and it is gone (sessions ended, absent from
//! `pg_roles`) once its task completes, is revoked or expires, even when the control plane was
//! killed in between. Bad input is refused with stable codes and leaves nothing behind; no
//! password or admin URL reaches an answer, the trail or the log.
//!
//! Runs when `MANDATE_TEST_DATABASE_URL` names a PostgreSQL server whose user may create
//! roles and schemas; skipped, saying so, otherwise.

mod common;

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use common::gateway::{GatewayIdentity, GatewayProcess, Recorder, bounded, eventually, intent};
use common::postgres::{Database, test_database_url};
use common::{Options, Server, TestAgent, open_task, register_agent};
use hmac::{Hmac, Mac};
use mandate_client::Client;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection, Row};

const REAP: Duration = Duration::from_secs(15);
const SECRET: &str = "orders-db";

/// A schema of its own with two tables, dropped (with every role minted on it) at the end.
struct Fixture {
    /// The admin URL the secret is configured with: the test database's, with a password
    /// (ignored by trust authentication) so that leak checks have something to look for.
    admin: String,
    /// The password in `admin`, to check it is never shown.
    admin_password: Option<String>,
    schema: String,
}

impl Fixture {
    async fn new(url: &str) -> Fixture {
        let admin = with_password(url).await;
        let admin_password = url::Url::parse(&admin).unwrap().password().map(str::to_owned);
        let schema = format!("dyn_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut c = PgConnection::connect(&admin).await.expect("connect to MANDATE_TEST_DATABASE_URL");
        for sql in [
            format!("CREATE SCHEMA {schema}"),
            format!("CREATE TABLE {schema}.orders (id int PRIMARY KEY, item text NOT NULL)"),
            format!("INSERT INTO {schema}.orders VALUES (1, 'tea'), (2, 'coffee'), (3, 'cake')"),
            format!("CREATE TABLE {schema}.payroll (id int PRIMARY KEY, salary int NOT NULL)"),
            format!("INSERT INTO {schema}.payroll VALUES (1, 100000)"),
        ] {
            sqlx::query(&sql).execute(&mut c).await.unwrap();
        }
        let _ = c.close().await;
        Fixture { admin, admin_password, schema }
    }

    fn config(&self) -> String {
        json!({
            "admin_url": self.admin,
            "grants": [
                format!("GRANT USAGE ON SCHEMA {} TO {{role}}", self.schema),
                format!("GRANT SELECT ON {}.orders TO {{role}}", self.schema),
            ],
        })
        .to_string()
    }

    async fn admin_conn(&self) -> PgConnection {
        PgConnection::connect(&self.admin).await.unwrap()
    }

    async fn role_exists(&self, role: &str) -> bool {
        let mut c = self.admin_conn().await;
        let n: i64 = sqlx::query("SELECT count(*) FROM pg_roles WHERE rolname = $1").bind(role).fetch_one(&mut c).await.unwrap().get(0);
        let _ = c.close().await;
        n == 1
    }

    /// Drops the schema and any role still holding grants on it (a failed test's leftovers).
    async fn cleanup(&self) {
        let mut c = self.admin_conn().await;
        let roles: Vec<String> = sqlx::query(
            "SELECT DISTINCT grantee::text FROM information_schema.role_table_grants WHERE table_schema = $1 AND grantee LIKE 'mandate\\_%'",
        )
        .bind(&self.schema)
        .fetch_all(&mut c)
        .await
        .map(|rows| rows.iter().map(|r| r.get::<String, _>(0)).collect())
        .unwrap_or_default();
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema)).execute(&mut c).await;
        for r in roles {
            let _ = sqlx::query(&format!("DROP ROLE IF EXISTS \"{r}\"")).execute(&mut c).await;
        }
        let _ = c.close().await;
    }
}

/// The URL with a password added when it has none and the server lets that in (trust or
/// password authentication ignore or check it; anything else keeps the URL as it is).
async fn with_password(url: &str) -> String {
    let mut u = url::Url::parse(url).unwrap();
    if u.password().is_some() {
        return url.to_owned();
    }
    let _ = u.set_password(Some("adm1n-s3cret-9941"));
    match PgConnection::connect(u.as_str()).await {
        Ok(c) => {
            let _ = c.close().await;
            u.to_string()
        }
        Err(_) => url.to_owned(),
    }
}

fn gateway_config(upstream: &str, secret: &str) -> String {
    format!(
        r#"
[[upstream]]
name = "reports"
type = "http"
url = "{upstream}"
[upstream.inject]
secret = "{secret}"
header = "X-Database-Url"
format = "{{}}"
[[upstream.routes]]
method = "GET"
path = "/report"
action = "reports.read"
kind = "read"
classification = "internal"
resource = "report:q1"
"#
    )
}

/// The same tables under `[gateway]`, for the control plane's own process.
fn embedded(upstream: &str, secret: &str) -> String {
    format!(
        "[gateway]\n{}",
        gateway_config(upstream, secret).replace("[[upstream", "[[gateway.upstream").replace("[upstream", "[gateway.upstream")
    )
}

struct Plane {
    server: Server,
    master: String,
    config: std::path::PathBuf,
    /// `--database-url …` when the control plane keeps its store in PostgreSQL.
    store_args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Plane {
    fn start(upstream: &str) -> Plane {
        Plane::start_on(upstream, Vec::new())
    }

    fn start_on(upstream: &str, store_args: Vec<String>) -> Plane {
        let dir = tempfile::tempdir().unwrap();
        let master = mandate_secrets::MasterKey::generate().to_base64().to_string();
        let config = dir.path().join("mandate.toml");
        std::fs::write(&config, embedded(upstream, SECRET)).unwrap();
        let server = start_in(dir.path(), &config, &master, &store_args);
        Plane { server, master, config, store_args, _dir: dir }
    }

    fn restart(&mut self) {
        let dir = self.server.dir.clone();
        self.server = start_in(&dir, &self.config, &self.master, &self.store_args);
    }
}

fn start_in(dir: &Path, config: &Path, master: &str, store_args: &[String]) -> Server {
    let mut extra_args = vec!["--config".into(), config.display().to_string()];
    extra_args.extend_from_slice(store_args);
    Server::start_in(dir, Options { extra_args, envs: vec![("MANDATE_MASTER_KEY".into(), master.to_owned())] })
}

fn reports_intent(lifetime_seconds: u64) -> Value {
    let mut i = intent(&["reports.read"]);
    i["lifetime_seconds"] = json!(lifetime_seconds);
    i
}

/// `GET /report` through a gateway: (status, JSON body).
async fn report(gateway: &str, mandate: &str) -> (u16, Value) {
    let resp = bounded(
        "gateway call",
        reqwest::Client::new().get(format!("{gateway}/api/reports/report")).header("authorization", format!("Bearer {mandate}")).send(),
    )
    .await
    .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json::<Value>().await.unwrap_or(Value::Null))
}

/// The credential URL the upstream saw on its last request.
fn injected(upstream: &Recorder) -> String {
    let seen = upstream.seen();
    let last = seen.last().expect("the upstream was called");
    let v = last.header("x-database-url");
    assert_eq!(v.len(), 1, "exactly one brokered header: {last:?}");
    v[0].to_owned()
}

/// The API's path: lease with a registered gateway's token, then open the credential sealed to
/// that gateway with its own key.
async fn lease_via_api(gw: &GatewayIdentity, url: &str, task: &str) -> (mandate_proto::admin::LeaseView, String) {
    let grant = gw.client(url).lease(SECRET, task).await.unwrap();
    let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).unwrap();
    let sealed = mandate_secrets::GatewaySealed { enc: b(&grant.credential.enc), ciphertext: b(&grant.credential.ciphertext) };
    assert_eq!(
        (grant.credential.name.as_str(), grant.credential.version, grant.credential.gateway.as_str()),
        (SECRET, grant.lease.secret_version, gw.name.as_str())
    );
    let key = gw.private_key();
    let url = mandate_secrets::open_for_gateway(&key, &gw.name, SECRET, grant.credential.version, Some(task), &sealed).unwrap();
    // Bound to the task: it does not open as another task's, nor as the secret's static value.
    assert!(mandate_secrets::open_for_gateway(&key, &gw.name, SECRET, grant.credential.version, Some("tsk_other"), &sealed).is_err());
    assert!(mandate_secrets::open_for_gateway(&key, &gw.name, SECRET, grant.credential.version, None, &sealed).is_err());
    (grant.lease, String::from_utf8(url.to_vec()).unwrap())
}

fn role_of(credential: &str) -> String {
    url::Url::parse(credential).unwrap().username().to_owned()
}

fn password_of(credential: &str) -> String {
    url::Url::parse(credential).unwrap().password().unwrap().to_owned()
}

/// What the role may do: (select orders, insert orders, select payroll) as SQLSTATEs ("" = ok).
async fn what_it_may_do(credential: &str, schema: &str) -> (String, String, String) {
    let mut c = PgConnection::connect(credential).await.expect("the minted role logs in");
    let state = |r: Result<sqlx::postgres::PgQueryResult, sqlx::Error>| match r {
        Ok(_) => String::new(),
        Err(sqlx::Error::Database(db)) => db.code().unwrap_or_default().into_owned(),
        Err(e) => panic!("{e}"),
    };
    let n: i64 = sqlx::query(&format!("SELECT count(*) FROM {schema}.orders")).fetch_one(&mut c).await.unwrap().get(0);
    assert_eq!(n, 3, "the granted table reads in full");
    let select = String::new();
    let insert = state(sqlx::query(&format!("INSERT INTO {schema}.orders VALUES (9, 'x')")).execute(&mut c).await);
    let other = state(sqlx::query(&format!("SELECT * FROM {schema}.payroll")).execute(&mut c).await);
    let _ = c.close().await;
    (select, insert, other)
}

async fn lease_of(admin: &Client, task: &str) -> Vec<mandate_proto::admin::LeaseView> {
    admin.list_leases(Some(task)).await.unwrap()
}

/// Waits until the task's lease is dropped and its role is gone from `pg_roles`; returns the
/// drop reason.
async fn reaped(fx: &Fixture, admin: &Client, task: &str, role: &str) -> String {
    eventually("the role is dropped", REAP, || async {
        let leases = lease_of(admin, task).await;
        let l = leases.iter().find(|l| l.role == role)?;
        (l.status == "dropped" && !fx.role_exists(role).await).then(|| l.drop_reason.clone().unwrap_or_default())
    })
    .await
}

async fn assert_cannot_connect(credential: &str) {
    match PgConnection::connect(credential).await {
        Ok(_) => panic!("a dropped role still logs in"),
        // 28000 (invalid authorization: the role does not exist) or 28P01 (password failed).
        Err(sqlx::Error::Database(db)) => assert!(db.code().is_some_and(|c| c.starts_with("28")), "{db}"),
        Err(e) => panic!("unexpected failure: {e}"),
    }
}

/// PostgreSQL stored the SCRAM verifier Mandate sent (not a hash of it), and it matches the
/// password handed out: the plaintext never went to the server.
async fn assert_scram_stored(fx: &Fixture, role: &str, password: &str) {
    let mut c = fx.admin_conn().await;
    let stored: Option<String> =
        match sqlx::query("SELECT rolpassword FROM pg_authid WHERE rolname = $1").bind(role).fetch_one(&mut c).await {
            Ok(row) => row.get(0),
            // Not a superuser: pg_authid is not readable; nothing to check here.
            Err(_) => return,
        };
    let _ = c.close().await;
    let stored = stored.expect("the role has a password");
    let rest = stored.strip_prefix("SCRAM-SHA-256$").expect("a SCRAM-SHA-256 verifier");
    let (head, keys) = rest.split_once('$').unwrap();
    let (iterations, salt) = head.split_once(':').unwrap();
    let (stored_key, _) = keys.split_once(':').unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let salt = b64.decode(salt).unwrap();
    let iterations: u32 = iterations.parse().unwrap();
    // Hi(password, salt, i), then StoredKey = H(HMAC(SaltedPassword, "Client Key")).
    let mac = |key: &[u8], data: &[u8]| {
        let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
        m.update(data);
        m.finalize().into_bytes().to_vec()
    };
    let mut u = mac(password.as_bytes(), &[salt.as_slice(), &1u32.to_be_bytes()].concat());
    let mut salted = u.clone();
    for _ in 1..iterations {
        u = mac(password.as_bytes(), &u);
        salted.iter_mut().zip(&u).for_each(|(s, b)| *s ^= b);
    }
    let expected = Sha256::digest(mac(&salted, b"Client Key"));
    assert_eq!(b64.decode(stored_key).unwrap(), expected.to_vec(), "the stored verifier is the handed-out password's");
}

/// Nothing shown anywhere holds a password or the admin URL.
fn assert_no_leak(haystack: &str, what: &str, fx: &Fixture, passwords: &[&str]) {
    for p in passwords.iter().copied().chain(fx.admin_password.as_deref()) {
        assert!(!haystack.contains(p), "{what} holds a password");
    }
    assert!(!haystack.contains(&fx.admin), "{what} holds the admin URL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_task_gets_a_role_with_exactly_the_template_and_it_dies_with_the_task() {
    let Some(url) = test_database_url("dynamic credential tests") else { return };
    let fx = Fixture::new(&url).await;
    let upstream = Recorder::start().await;
    let plane = Plane::start(&upstream.url);
    let server = &plane.server;
    let admin = server.admin();
    // Stored with the CLI, the value on standard input.
    server
        .cli()
        .args(["secret", "put", SECRET, "--kind", "postgres-dynamic", "--description", "orders, read-only"])
        .write_stdin(fx.config())
        .assert()
        .success();
    let shown = admin.get_secret(SECRET).await.unwrap();
    assert_eq!((shown.kind.as_str(), shown.version), ("postgres-dynamic", 1));

    let bot = register_agent(&admin, "report-bot", &[]).await;
    let (mandate_a, task_a) = open_task(server, &bot, &reports_intent(600)).await;

    // Through the gateway: the upstream gets a connection URL of the task's own role.
    let (status, body) = report(&server.url, &mandate_a).await;
    assert_eq!(status, 200, "{body}");
    let credential_a = injected(&upstream);
    let role_a = role_of(&credential_a);
    assert!(role_a.starts_with("mandate_") && role_a[8..].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{role_a}");
    assert!(fx.role_exists(&role_a).await);

    // Through the API: the same lease for the same task (also on a second gateway call).
    let gw = GatewayIdentity::register(&server.admin(), "reports-gw", &[SECRET]).await;
    let pep = gw.client(&server.url);
    let (lease_a, via_api) = lease_via_api(&gw, &server.url, &task_a).await;
    assert_eq!(via_api, credential_a, "one role per task, whichever way it is asked for");
    assert_eq!((lease_a.role.as_str(), lease_a.task_id.as_str(), lease_a.status.as_str()), (role_a.as_str(), task_a.as_str(), "live"));
    let (status, _) = report(&server.url, &mandate_a).await;
    assert_eq!((status, injected(&upstream)), (200, credential_a.clone()));

    // Exactly the template: SELECT on orders; not INSERT, not the other table.
    assert_eq!(what_it_may_do(&credential_a, &fx.schema).await, (String::new(), "42501".into(), "42501".into()));
    assert_scram_stored(&fx, &role_a, &password_of(&credential_a)).await;
    // VALID UNTIL is the task's expiry.
    let mut c = fx.admin_conn().await;
    let until: i64 = sqlx::query("SELECT (extract(epoch FROM rolvaliduntil) * 1000)::bigint FROM pg_roles WHERE rolname = $1")
        .bind(&role_a)
        .fetch_one(&mut c)
        .await
        .unwrap()
        .get(0);
    assert_eq!(until, lease_a.expires_at_ms);
    let task = admin.get_task(&task_a).await.unwrap();
    assert_eq!(lease_a.expires_at_ms, task.expires_at_ms);
    let _ = c.close().await;

    // Another task, another role.
    let (mandate_b, task_b) = open_task(server, &bot, &reports_intent(600)).await;
    let (status, _) = report(&server.url, &mandate_b).await;
    assert_eq!(status, 200);
    let credential_b = injected(&upstream);
    let role_b = role_of(&credential_b);
    assert_ne!(role_a, role_b, "no two tasks share a role");
    assert_ne!(password_of(&credential_a), password_of(&credential_b));

    // The CLI lists them, without credentials.
    let out = server.cli().args(["lease", "list", "--task", &task_a]).assert().success().get_output().stdout.clone();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains(&role_a) && out.contains("live") && !out.contains(&role_b), "{out}");

    // A session open as the role when its task completes is ended; the role is gone.
    let mut open_session = PgConnection::connect(&credential_a).await.unwrap();
    admin.complete_task(&task_a, None).await.unwrap();
    assert_eq!(reaped(&fx, &admin, &task_a, &role_a).await, "task_completed");
    assert_cannot_connect(&credential_a).await;
    assert!(sqlx::query("SELECT 1").execute(&mut open_session).await.is_err(), "the role's open session was ended");
    // Its completed task gets no new one.
    let e = pep.lease(SECRET, &task_a).await.unwrap_err();
    assert_eq!(e.code(), Some("task_completed"));
    let (status, body) = report(&server.url, &mandate_a).await;
    assert_eq!(status, 403, "{body}");

    // Revocation reaps too; the other task's role lived until then.
    assert!(fx.role_exists(&role_b).await, "ending one task leaves another's role");
    admin.revoke_task(&task_b, Some("done with it".into())).await.unwrap();
    assert_eq!(reaped(&fx, &admin, &task_b, &role_b).await, "task_revoked");
    assert_cannot_connect(&credential_b).await;

    // The trail: created and dropped, with role and expiry, never a password.
    let trail = admin.audit_trail(&task_a).await.unwrap();
    let events: Vec<&Value> = trail.events.iter().filter(|e| e["kind"].as_str().is_some_and(|k| k.starts_with("secret.lease"))).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["secret.lease_created", "secret.lease_dropped"], "{events:?}");
    assert_eq!(events[0]["details"]["role"], role_a.as_str());
    assert_eq!(events[0]["details"]["secret"], SECRET);
    assert_eq!(events[0]["details"]["version"], 1);
    assert_eq!(events[0]["details"]["expires_at_ms"], lease_a.expires_at_ms);
    assert_eq!(events[0]["agent"], "report-bot");
    assert_eq!(events[1]["details"]["reason"], "task_completed");
    let passwords = [password_of(&credential_a), password_of(&credential_b)];
    let passwords: Vec<&str> = passwords.iter().map(String::as_str).collect();
    for format in ["jsonl", "ocsf"] {
        let export = admin.audit_export(format).await.unwrap();
        assert_no_leak(&export, "the trail", &fx, &passwords);
    }
    let ocsf = admin.audit_export("ocsf").await.unwrap();
    assert!(ocsf.lines().any(|l| l.contains("secret.lease_created") && l.contains("\"activity_id\":1")), "mapped in OCSF");
    let listed = serde_json::to_string(&admin.list_leases(None).await.unwrap()).unwrap();
    assert_no_leak(&listed, "the lease list", &fx, &passwords);
    assert_no_leak(&serde_json::to_string(&admin.list_secrets().await.unwrap()).unwrap(), "the secret list", &fx, &passwords);
    assert_no_leak(&server.log(), "the server log", &fx, &passwords);
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_reaps_and_a_restart_in_between_still_reaps() {
    let Some(url) = test_database_url("dynamic credential tests") else { return };
    expiry_and_restart(&url, Vec::new()).await;
}

/// The same with the control plane's own store (tasks, leases) in PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_postgresql_store_expiry_and_a_restart_in_between_still_reap() {
    let Some(url) = test_database_url("dynamic credential tests") else { return };
    let db = Database::create(&url, "mandate_dyn").await;
    expiry_and_restart(&url, vec!["--database-url".into(), db.url.clone()]).await;
}

async fn expiry_and_restart(url: &str, store_args: Vec<String>) {
    let fx = Fixture::new(url).await;
    let upstream = Recorder::start().await;
    let mut plane = Plane::start_on(&upstream.url, store_args);
    let admin = plane.server.admin();
    admin.put_secret_of_kind(SECRET, &fx.config(), "", Some("postgres-dynamic")).await.unwrap();
    let bot = register_agent(&admin, "report-bot", &[]).await;

    // Expiry while the server runs.
    let (mandate, task) = open_task(&plane.server, &bot, &reports_intent(2)).await;
    assert_eq!(report(&plane.server.url, &mandate).await.0, 200);
    let credential = injected(&upstream);
    let role = role_of(&credential);
    assert!(fx.role_exists(&role).await);
    assert_eq!(reaped(&fx, &admin, &task, &role).await, "task_expired");
    assert_cannot_connect(&credential).await;

    // Minted, then the control plane is killed; the task expires while nobody runs.
    let (_, task) = open_task(&plane.server, &bot, &reports_intent(3)).await;
    let gw = GatewayIdentity::register(&plane.server.admin(), "reports-gw", &[SECRET]).await;
    let (lease, credential) = lease_via_api(&gw, &plane.server.url, &task).await;
    assert!(fx.role_exists(&lease.role).await);
    plane.server.kill9();
    let wait = u64::try_from(lease.expires_at_ms - mandate_now_ms()).unwrap_or(0) + 1500;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    assert!(fx.role_exists(&lease.role).await, "nobody dropped it while the control plane was down");
    // VALID UNTIL has passed: the database itself refuses the password now (where it checks one).

    plane.restart();
    let admin = plane.server.admin();
    assert_eq!(reaped(&fx, &admin, &task, &lease.role).await, "task_expired");
    assert_cannot_connect(&credential).await;
    let trail = admin.audit_trail(&task).await.unwrap();
    let dropped = trail.events.iter().find(|e| e["kind"] == "secret.lease_dropped").expect("the drop after the restart is recorded");
    assert_eq!(dropped["details"]["role"], lease.role.as_str());
    fx.cleanup().await;
}

fn mandate_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_gateway_injects_the_task_credential_without_the_admin_connection() {
    let Some(url) = test_database_url("dynamic credential tests") else { return };
    let fx = Fixture::new(&url).await;
    let upstream = Recorder::start().await;
    let plane = Plane::start("http://127.0.0.1:9");
    let admin = plane.server.admin();
    admin.put_secret_of_kind(SECRET, &fx.config(), "", Some("postgres-dynamic")).await.unwrap();
    let identity = GatewayIdentity::register(&admin, "reports-gw", &[SECRET]).await;
    // The sealed admin configuration is not for gateways, not even one granted the secret.
    let pep_client = identity.client(&plane.server.url);
    assert_eq!(pep_client.sealed_secret(SECRET).await.unwrap_err().code(), Some("secret_is_dynamic"));

    // The gateway holds its own key only, never the master key.
    let gw = GatewayProcess::start(
        &gateway_config(&upstream.url, SECRET),
        &[
            ("MANDATE_URL", plane.server.url.as_str()),
            ("MANDATE_TOKEN", identity.token.as_str()),
            ("MANDATE_GATEWAY_KEY_FILE", identity.key_path().as_str()),
        ],
    );
    let bot = register_agent(&admin, "report-bot", &[]).await;
    let (mandate, task) = open_task(&plane.server, &bot, &reports_intent(600)).await;
    let (status, body) = report(&gw.url, &mandate).await;
    assert_eq!(status, 200, "{body}");
    let credential = injected(&upstream);
    assert_eq!(what_it_may_do(&credential, &fx.schema).await, (String::new(), "42501".into(), "42501".into()));
    let leases = lease_of(&admin, &task).await;
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].role, role_of(&credential));
    let sealed = admin.audit_trail(&task).await.unwrap().events.into_iter().filter(|e| e["kind"] == "secret.sealed").collect::<Vec<_>>();
    assert!(
        !sealed.is_empty()
            && sealed.iter().all(|e| e["details"]["gateway"] == "reports-gw" && e["details"]["lease"] == leases[0].id.as_str())
    );
    assert!(!gw.log().contains(&plane.master) && !gw.log().contains(&credential));
    admin.revoke_task(&task, None).await.unwrap();
    assert_eq!(reaped(&fx, &admin, &task, &leases[0].role).await, "task_revoked");
    drop(gw);
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_leaves_nothing_behind() {
    let Some(url) = test_database_url("dynamic credential tests") else { return };
    let fx = Fixture::new(&url).await;
    let upstream = Recorder::start().await;
    let plane = Plane::start(&upstream.url);
    let server = &plane.server;
    let admin = server.admin();
    let password = fx.admin_password.clone().unwrap_or_else(|| "no-password".into());

    // Configurations refused on put, with a stable code and without repeating the URL.
    let grant = format!("GRANT SELECT ON {}.orders TO {{role}}", fx.schema);
    let cases = [
        (json!({"admin_url": fx.admin, "grants": []}), "at least one"),
        (json!({"admin_url": fx.admin, "grants": [format!("GRANT SELECT ON {}.orders TO bob", fx.schema)]}), "does not name the role"),
        (json!({"admin_url": fx.admin, "grants": ["GRANT SELECT ON {table} TO {role}"]}), "placeholder"),
        (json!({"admin_url": fx.admin, "grants": [format!("{grant}; DROP SCHEMA {} CASCADE", fx.schema)]}), "one statement"),
        (json!({"admin_url": format!("mysql://root:{password}@db/x"), "grants": [grant]}), "postgres://"),
        (json!({"admin_url": fx.admin, "grants": [grant], "connect_url": format!("postgres://u:{password}@db/x")}), "no user"),
        (json!({"admin_url": fx.admin}), "missing field `grants`"),
    ];
    for (config, expected) in cases {
        let e = admin.put_secret_of_kind("bad-db", &config.to_string(), "", Some("postgres-dynamic")).await.unwrap_err();
        assert_eq!(e.code(), Some("invalid_dynamic_secret"), "{config}: {e}");
        assert!(e.to_string().contains(expected), "{config}: {e}");
        assert!(!e.to_string().contains(&password), "{config}: the error repeats a password");
    }
    let e = admin.put_secret_of_kind("bad-db", "{not json", "", Some("postgres-dynamic")).await.unwrap_err();
    assert_eq!(e.code(), Some("invalid_dynamic_secret"));
    let e = admin.put_secret_of_kind("bad-db", &fx.config(), "", Some("mysql-dynamic")).await.unwrap_err();
    assert_eq!(e.code(), Some("unknown_secret_kind"));
    assert_eq!(admin.get_secret("bad-db").await.unwrap_err().code(), Some("secret_not_found"), "nothing was stored");
    let out = server
        .cli()
        .args(["secret", "put", "bad-db", "--kind", "postgres-dynamic"])
        .write_stdin("{\"admin_url\": \"x\"}")
        .assert()
        .failure();
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(stderr.contains("invalid_dynamic_secret") || stderr.contains("not a URL"), "{stderr}");

    let bot: TestAgent = register_agent(&admin, "report-bot", &[]).await;
    let (_, task) = open_task(server, &bot, &reports_intent(600)).await;
    let gw = GatewayIdentity::register(&admin, "reports-gw", &["no-such-db", "static-key", SECRET, "down-db", "broken-db"]).await;
    let pep = gw.client(&server.url);
    // Not granted, or not a registered gateway at all: refused before anything else.
    assert_eq!(pep.lease("other-db", &task).await.unwrap_err().code(), Some("secret_not_granted"));
    assert_eq!(common::pep(server).await.lease(SECRET, &task).await.unwrap_err().code(), Some("gateway_not_registered"));
    assert_eq!(admin.lease(SECRET, &task).await.unwrap_err().code(), Some("forbidden"));

    // Unknown secret, wrong kind, unknown or ended task.
    assert_eq!(pep.lease("no-such-db", &task).await.unwrap_err().code(), Some("secret_not_found"));
    admin.put_secret("static-key", "k-123", "").await.unwrap();
    assert_eq!(pep.lease("static-key", &task).await.unwrap_err().code(), Some("secret_not_dynamic"));
    admin.put_secret_of_kind(SECRET, &fx.config(), "", Some("postgres-dynamic")).await.unwrap();
    assert_eq!(pep.lease(SECRET, "task_nope").await.unwrap_err().code(), Some("task_unknown"));
    let (_, ended) = open_task(server, &bot, &reports_intent(600)).await;
    admin.complete_task(&ended, None).await.unwrap();
    assert_eq!(pep.lease(SECRET, &ended).await.unwrap_err().code(), Some("task_completed"));
    // Another API token role may not.
    let auditor = Client::new(&server.url, Some(admin.create_token("auditor", "a").await.unwrap().token)).unwrap();
    assert_eq!(auditor.lease(SECRET, &task).await.unwrap_err().code(), Some("forbidden"));
    assert!(lease_of(&admin, &task).await.is_empty() && lease_of(&admin, &ended).await.is_empty(), "no lease for a refusal");

    // The admin database cannot be reached: a clear error, the lease marked dropped, no role.
    let unreachable = json!({"admin_url": format!("postgres://postgres:{password}@127.0.0.1:1/test"), "grants": [grant]});
    admin.put_secret_of_kind("down-db", &unreachable.to_string(), "", Some("postgres-dynamic")).await.unwrap();
    let e = pep.lease("down-db", &task).await.unwrap_err();
    assert_eq!(e.code(), Some("lease_database_unreachable"), "{e}");
    assert!(!e.to_string().contains(&password) && !e.to_string().contains("127.0.0.1:1"), "{e}");
    let leases = lease_of(&admin, &task).await;
    assert_eq!(leases.len(), 1);
    assert_eq!((leases[0].status.as_str(), leases[0].drop_reason.as_deref()), ("dropped", Some("mint_failed")));
    assert!(!fx.role_exists(&leases[0].role).await);

    // A grant the database refuses: the whole transaction rolls back, the role does not exist.
    let missing = json!({"admin_url": fx.admin, "grants": [grant, format!("GRANT SELECT ON {}.nothing_here TO {{role}}", fx.schema)]});
    admin.put_secret_of_kind("broken-db", &missing.to_string(), "", Some("postgres-dynamic")).await.unwrap();
    let e = pep.lease("broken-db", &task).await.unwrap_err();
    assert_eq!(e.code(), Some("lease_refused_by_database"), "{e}");
    assert!(e.to_string().contains("42P01"), "names the database's reason: {e}");
    let failed = lease_of(&admin, &task).await.into_iter().find(|l| l.secret == "broken-db").unwrap();
    assert_eq!(failed.drop_reason.as_deref(), Some("mint_failed"));
    assert!(!fx.role_exists(&failed.role).await, "a refused grant leaves no role");
    let trail = admin.audit_trail(&task).await.unwrap();
    let failures: Vec<&Value> = trail.events.iter().filter(|e| e["kind"] == "secret.lease_failed").collect();
    assert_eq!(failures.len(), 2, "each failure is recorded");
    assert_eq!(failures[0]["details"]["error"], "lease_database_unreachable");

    // Through the gateway, the agent gets the stable code and nothing goes upstream.
    let config = plane.config.clone();
    drop(config);
    let (mandate, gw_task) = open_task(server, &bot, &reports_intent(600)).await;
    let before = upstream.seen().len();
    admin.delete_secret(SECRET).await.unwrap();
    admin.put_secret_of_kind(SECRET, &unreachable.to_string(), "", Some("postgres-dynamic")).await.unwrap();
    let (status, body) = report(&server.url, &mandate).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.to_string().contains("lease_database_unreachable"), "{body}");
    assert!(!body.to_string().contains(&password));
    assert_eq!(upstream.seen().len(), before, "nothing went upstream");

    // A secret with a live lease may not be deleted.
    admin.delete_secret(SECRET).await.unwrap();
    admin.put_secret_of_kind(SECRET, &fx.config(), "", Some("postgres-dynamic")).await.unwrap();
    assert_eq!(report(&server.url, &mandate).await.0, 200);
    assert_eq!(admin.delete_secret(SECRET).await.unwrap_err().code(), Some("secret_in_use"));
    let role = role_of(&injected(&upstream));
    admin.revoke_task(&gw_task, None).await.unwrap();
    reaped(&fx, &admin, &gw_task, &role).await;
    admin.delete_secret(SECRET).await.unwrap();

    assert_no_leak(&server.log(), "the server log", &fx, &[]);
    assert_no_leak(&admin.audit_export("jsonl").await.unwrap(), "the trail", &fx, &[]);
    fx.cleanup().await;
}
