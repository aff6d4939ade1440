//! Starts the real `mandate` binary on a free loopback port with a temporary data directory,
//! and drives it with the typed client. Dropping a `Server` kills the process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code
#![allow(dead_code)]
pub mod gateway;
pub mod postgres;
pub mod python;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use mandate_client::Client;
use serde_json::{Value, json};

pub const ADMIN: &str = "mdt_test_admin_secret_0123456789";

pub struct Server {
    pub url: String,
    pub dir: PathBuf,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
}

#[derive(Default)]
pub struct Options {
    pub extra_args: Vec<String>,
    pub envs: Vec<(String, String)>,
}

impl Options {
    /// `--config DIR/mandate.toml`, the file written with `config` (the serve config's TOML).
    pub fn with_config(dir: &Path, config: &str) -> Options {
        let path = dir.join("mandate.toml");
        std::fs::write(&path, config).unwrap();
        Options { extra_args: vec!["--config".into(), path.display().to_string()], envs: Vec::new() }
    }
}

impl Server {
    pub fn start() -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let mut s = Server::start_in(&dir, Options::default());
        s._tmp = Some(tmp);
        s
    }

    pub fn start_with(opts: Options) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let mut s = Server::start_in(&dir, opts);
        s._tmp = Some(tmp);
        s
    }

    /// A server on a temporary directory of its own, with `config` (the serve config's TOML) as
    /// `--config` and `envs` in its environment.
    pub fn start_configured(config: &str, envs: Vec<(String, String)>) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let mut s = Server::start_in(&dir, Options { envs, ..Options::with_config(&dir, config) });
        s._tmp = Some(tmp);
        s
    }

    /// Starts (or restarts) a server on an existing data directory.
    pub fn start_in(dir: &Path, opts: Options) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mandate"));
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(&opts.extra_args)
            .env("MANDATE_ADMIN_TOKEN", ADMIN)
            .env("MANDATE_LOG", "warn")
            .env_remove("MANDATE_URL")
            .env_remove("MANDATE_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &opts.envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start mandate serve");
        log_lines(child.stderr.take().unwrap(), dir.join("server.log"));
        let Some(url) = announced(child.stdout.take().unwrap(), "mandate: listening on ", Duration::from_secs(60)) else {
            let _ = child.kill();
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            panic!("mandate serve did not start:\n{log}");
        };
        Server { url, dir: dir.to_owned(), child: Some(child), _tmp: None }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn admin(&self) -> Client {
        Client::new(&self.url, Some(ADMIN.to_owned())).unwrap()
    }

    pub fn anon(&self) -> Client {
        Client::new(&self.url, None).unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// SIGTERM, then wait: the graceful path.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("mandate serve did not stop within 30 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// SIGKILL: the crash path.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs the CLI against this server as admin.
    pub fn cli(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::cargo_bin("mandate").unwrap();
        c.env("MANDATE_URL", &self.url).env("MANDATE_TOKEN", ADMIN);
        c
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Reads a child's stdout in a thread of its own until a line starts with `prefix`, and
/// answers the rest of that line; `None` if none came within `within` (the stream ended or
/// time ran out). Keeps draining the stream afterwards, so the child never blocks on it.
pub fn announced(stdout: impl Read + Send + 'static, prefix: &'static str, within: Duration) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix(prefix) {
                let _ = tx.send(rest.to_owned());
            }
        }
    });
    rx.recv_timeout(within).ok()
}

/// Appends every line of a child's `stream` to the file `log`, in a thread of its own.
pub fn log_lines(stream: impl Read + Send + 'static, log: PathBuf) {
    std::thread::spawn(move || {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let _ = writeln!(f, "{line}");
        }
    });
}

/// The names, sorted.
pub fn sorted(names: impl IntoIterator<Item = impl Into<String>>) -> Vec<String> {
    let mut v: Vec<String> = names.into_iter().map(Into::into).collect();
    v.sort();
    v
}

/// An agent registered with a fresh Ed25519 key.
#[derive(Clone)]
pub struct TestAgent {
    pub name: String,
    pub spiffe_id: String,
    pub private_jwk: Value,
    pub public_jwk: Value,
}

pub async fn register_agent(admin: &Client, name: &str, attrs: &[(&str, &str)]) -> TestAgent {
    let (private_jwk, public_jwk) = mandate_token::generate_agent_key(mandate_token::AgentKeyAlg::Ed25519).unwrap();
    let r = admin
        .register_agent(&mandate_proto::admin::RegisterAgentRequest {
            name: name.to_owned(),
            owner: "alice@example.com".to_owned(),
            purpose: "Summarise support tickets".to_owned(),
            public_jwk: Some(public_jwk.clone()),
            attributes: attrs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        })
        .await
        .unwrap();
    TestAgent { name: name.to_owned(), spiffe_id: r.spiffe_id, private_jwk, public_jwk }
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

pub fn attestation(agent: &TestAgent, issuer: &str) -> String {
    mandate_token::sign_attestation(&agent.private_jwk, &agent.spiffe_id, issuer, now(), 60, &uuid::Uuid::new_v4().to_string()).unwrap()
}

pub fn read_intent() -> Value {
    json!({
        "type": "agent_task",
        "purpose": "Summarise ticket 4411",
        "actions": ["tickets.read", "tickets.search"],
        "resources": ["ticket:*"],
        "max_classification": "internal",
        "lifetime_seconds": 600
    })
}

/// The error code of a token exchange with `attestation` for [`read_intent`], which must be
/// refused.
pub async fn exchange_refusal(server: &Server, attestation: &str) -> String {
    let err = server.anon().exchange(attestation, &read_intent()).await.unwrap_err();
    err.code().unwrap_or("").to_owned()
}

/// Opens a task and returns (mandate, task id).
pub async fn open_task(server: &Server, agent: &TestAgent, intent: &Value) -> (String, String) {
    let att = attestation(agent, &server.url);
    let r = server.anon().exchange(&att, intent).await.unwrap();
    (r.access_token, r.task_id)
}

pub fn evaluation(
    agent: &TestAgent,
    mandate: &str,
    action: &str,
    rtype: &str,
    rid: &str,
    classification: &str,
) -> mandate_proto::authzen::EvaluationRequest {
    serde_json::from_value(json!({
        "subject": { "type": "agent", "id": agent.spiffe_id, "properties": { "mandate": mandate } },
        "action": { "name": action },
        "resource": { "type": rtype, "id": rid, "properties": { "classification": classification } }
    }))
    .unwrap()
}

pub async fn pep(server: &Server) -> Client {
    let t = server.admin().create_token("pep", "tests").await.unwrap();
    Client::new(&server.url, Some(t.token)).unwrap()
}

pub fn reason(r: &mandate_proto::authzen::EvaluationResponse) -> String {
    r.context.as_ref().and_then(|c| c.get("reason")).and_then(Value::as_str).unwrap_or("").to_owned()
}
