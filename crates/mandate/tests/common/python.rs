//! The official MCP Python SDK (`mcp` 2.3.0 from PyPI) for end-to-end tests: a virtualenv built
//! on first use, and the scripts in `tests/py/` that use it.
//!
//! - [`python_mcp`]: the venv's interpreter (or `MANDATE_TEST_PYTHON`).
//! - [`start_upstream`], [`start_recording_upstream`]: any server script of `tests/py/` on a
//!   free port, by name ([`PyUpstream`]: its URL, what it recorded; killed on drop).
//! - [`PyServer`]: `tests/py/mcp_server.py` over streamable HTTP on a free port; killed on drop.
//! - [`PyClient`]: one run of `tests/py/mcp_client.py` with a list of steps; its JSON report.
//!
//! Nothing here skips: without python3, venv or pip, or without PyPI, the first use panics and
//! says what to install.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The SDK version the venv holds.
pub const MCP_VERSION: &str = "2.3.0";
/// The MCP revisions the SDK speaks and `mcp_client.py --protocol` forces.
pub const PROTOCOLS: [&str; 2] = ["2025-11-25", "2026-07-28"];
/// How long `mcp_client.py` may take for each step, as the script itself bounds it.
const CLIENT_STEP: Duration = Duration::from_secs(30);
/// How long a Python server may take to print its address.
const SERVER_START: Duration = Duration::from_secs(60);
/// Oldest Python `mcp` 2.3.0 installs on.
const MIN_PYTHON: (u32, u32) = (3, 10);

/// `crates/mandate/tests/py/<name>`; panics if it does not exist.
pub fn script(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("py").join(name);
    assert!(path.is_file(), "no such test script: {}", path.display());
    path
}

/// The Python interpreter of a virtualenv holding `mcp==2.3.0` (and the pins of
/// `tests/py/requirements.txt`), built under `CARGO_TARGET_TMPDIR` on first use. With
/// `MANDATE_TEST_PYTHON` set, that interpreter instead.
///
/// Safe to call from many tests at once (one build per test binary, behind a `OnceLock`) and
/// from several test binaries at once (they serialise on a lock file; the venv counts as built
/// only once its stamp, written last, matches the requirements).
pub fn python_mcp() -> PathBuf {
    // A failed build is remembered, so the other tests of the binary fail at once with the
    // same message instead of each running pip again.
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let python = PYTHON.get_or_init(|| {
        std::panic::catch_unwind(|| match std::env::var_os("MANDATE_TEST_PYTHON") {
            Some(p) if !p.is_empty() => checked_override(PathBuf::from(p)),
            _ => ensure_venv(),
        })
        .map_err(|e| e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned())).unwrap_or_default())
    });
    match python {
        Ok(p) => p.clone(),
        Err(message) => panic!("the MCP Python SDK is not available: {message}"),
    }
}

fn checked_override(python: PathBuf) -> PathBuf {
    let out = Command::new(&python)
        .args(["-c", "import importlib.metadata as m, mcp; print(m.version('mcp'))"])
        .output()
        .unwrap_or_else(|e| panic!("MANDATE_TEST_PYTHON={}: cannot run it: {e}", python.display()));
    assert!(
        out.status.success(),
        "MANDATE_TEST_PYTHON={}: cannot import the MCP SDK (pip install mcp=={MCP_VERSION}):\n{}",
        python.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if version != MCP_VERSION {
        eprintln!("warning: MANDATE_TEST_PYTHON has mcp {version}; these tests are written for {MCP_VERSION}");
    }
    python
}

fn requirements() -> (PathBuf, String) {
    let path = script("requirements.txt");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(text.lines().any(|l| l.trim() == format!("mcp=={MCP_VERSION}")), "{} must pin mcp=={MCP_VERSION}", path.display());
    (path, text)
}

fn venv_python(dir: &Path) -> PathBuf {
    dir.join("bin").join("python")
}

fn ensure_venv() -> PathBuf {
    let (req_path, req_text) = requirements();
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = root.join(format!("py-mcp-{MCP_VERSION}"));
    let stamp = dir.join(".mandate-ready");
    let ready = || fs::read_to_string(&stamp).is_ok_and(|s| s == req_text) && venv_python(&dir).is_file();
    if ready() {
        return venv_python(&dir);
    }

    fs::create_dir_all(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display()));
    let lock_path = root.join(format!("py-mcp-{MCP_VERSION}.lock"));
    let lock = File::create(&lock_path).unwrap_or_else(|e| panic!("{}: {e}", lock_path.display()));
    lock.lock().unwrap_or_else(|e| panic!("locking {}: {e}", lock_path.display()));
    if ready() {
        return venv_python(&dir); // another test binary built it while this one waited
    }

    let base = base_python();
    if dir.exists() {
        fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("removing the stale venv {}: {e}", dir.display()));
    }
    eprintln!("building the MCP Python SDK venv in {} (mcp=={MCP_VERSION}, once)", dir.display());
    let out = run(Command::new(&base).args(["-m", "venv"]).arg(&dir));
    if !out.status.success() {
        panic!(
            "`{} -m venv {}` failed: Python's venv module (with ensurepip) is missing; install it \
             (Debian/Ubuntu: apt-get install python3-venv python3-pip)\n{}",
            base.display(),
            dir.display(),
            output_text(&out)
        );
    }
    let python = venv_python(&dir);
    let out = run(Command::new(&python)
        .args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q", "-r"])
        .arg(&req_path)
        .env("PIP_NO_INPUT", "1"));
    if !out.status.success() {
        panic!(
            "installing the MCP Python SDK (pip install -r {}) into {} failed; pip needs to reach PyPI:\n{}",
            req_path.display(),
            dir.display(),
            output_text(&out)
        );
    }
    let check = format!("import importlib.metadata as m, mcp; assert m.version('mcp') == '{MCP_VERSION}', m.version('mcp')");
    let out = run(Command::new(&python).args(["-c", &check]));
    assert!(out.status.success(), "the venv in {} cannot import mcp {MCP_VERSION}:\n{}", dir.display(), output_text(&out));

    let tmp = dir.join(".mandate-ready.tmp");
    fs::write(&tmp, &req_text).unwrap();
    fs::rename(&tmp, &stamp).unwrap();
    drop(lock);
    python
}

/// `python3` from PATH, new enough for the SDK; panics saying what to install.
fn base_python() -> PathBuf {
    let python = PathBuf::from("python3");
    let out = Command::new(&python).args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => panic!(
            "python3 does not run: {}\ninstall Python 3 (Debian/Ubuntu: apt-get install python3 python3-venv python3-pip)",
            output_text(&o)
        ),
        Err(e) => panic!(
            "python3 is not on PATH ({e}): the MCP Python SDK tests need Python >= {}.{} with venv and pip \
             (Debian/Ubuntu: apt-get install python3 python3-venv python3-pip), or MANDATE_TEST_PYTHON pointing at \
             an interpreter that has mcp=={MCP_VERSION}",
            MIN_PYTHON.0, MIN_PYTHON.1
        ),
    };
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let parsed = version.split_once('.').and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)));
    match parsed {
        Some(v) if v >= MIN_PYTHON => python,
        _ => panic!("python3 is {version}; mcp=={MCP_VERSION} needs Python >= {}.{}", MIN_PYTHON.0, MIN_PYTHON.1),
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn output_text(out: &Output) -> String {
    format!("{}\n--- stdout\n{}\n--- stderr\n{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// How [`PyServer::start`] runs `mcp_server.py`.
#[derive(Debug, Clone, Default)]
pub struct PyServerOptions {
    /// `--require-bearer`: requests without `Authorization: Bearer <this>` get 401.
    pub require_bearer: Option<String>,
    /// `--record-headers` into a file of the server's temporary directory; see
    /// [`PyServer::recorded`].
    pub record_headers: bool,
}

/// A server script of `tests/py/` on the venv's interpreter, on a free loopback port: it
/// announces itself with `listening on URL` as its first line on stdout. Killed on drop.
pub struct PyUpstream {
    /// The URL the script announced.
    pub url: String,
    child: Child,
    record: Option<PathBuf>,
    stderr_file: PathBuf,
    _tmp: tempfile::TempDir,
}

/// Starts `tests/py/<script> ARGS --port 0` and waits for it to announce its URL.
pub fn start_upstream(script_name: &str, args: &[&str]) -> PyUpstream {
    start(script_name, args, None)
}

/// [`start_upstream`] with `RECORD_FLAG FILE` added, FILE in the upstream's own temporary
/// directory: the script writes there one JSON object per line for each thing it received
/// (see [`PyUpstream::recorded`]).
pub fn start_recording_upstream(script_name: &str, args: &[&str], record_flag: &str) -> PyUpstream {
    start(script_name, args, Some(record_flag))
}

fn start(script_name: &str, args: &[&str], record_flag: Option<&str>) -> PyUpstream {
    let python = python_mcp();
    let tmp = tempfile::tempdir().unwrap();
    let stderr_file = tmp.path().join("stderr");
    let record = record_flag.map(|_| tmp.path().join("record.jsonl"));
    let mut cmd = Command::new(&python);
    cmd.arg(script(script_name)).args(args).args(["--port", "0"]);
    if let (Some(flag), Some(file)) = (record_flag, &record) {
        cmd.arg(flag).arg(file);
    }
    let mut child = cmd
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(&stderr_file).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));

    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok);
        let _ = tx.send(first);
        for _ in lines.map_while(Result::ok) {} // keep the pipe drained
    });
    let line = rx.recv_timeout(SERVER_START).ok().flatten();
    let Some(url) = line.as_deref().and_then(|l| l.strip_prefix("listening on ")).map(str::to_owned) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{script_name} {args:?} did not announce itself (first stdout line: {line:?}):\n{}",
            fs::read_to_string(&stderr_file).unwrap_or_default()
        );
    };
    PyUpstream { url, child, record, stderr_file, _tmp: tmp }
}

impl PyUpstream {
    /// Every line the script recorded, parsed, oldest first (none before the first). Panics
    /// unless started with [`start_recording_upstream`].
    pub fn recorded(&self) -> Vec<Value> {
        let file = self.record.as_ref().expect("the upstream was started without a record file");
        let text = match fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => panic!("{}: {e}", file.display()),
        };
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad record {l:?}: {e}"))).collect()
    }

    /// What the script wrote to stderr so far (SDK logs, tracebacks).
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_file).unwrap_or_default()
    }
}

impl Drop for PyUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tests/py/mcp_server.py` (tools `notes.read`, `notes.write`, `shell.exec`; resource
/// `notes://1`; prompt `summarise`) on `127.0.0.1` over streamable HTTP. Killed on drop.
pub struct PyServer {
    /// `http://127.0.0.1:PORT/mcp`
    pub url: String,
    pub port: u16,
    upstream: PyUpstream,
}

/// The tool names `mcp_server.py` lists, in order.
pub const PY_SERVER_TOOLS: [&str; 3] = ["notes.read", "notes.write", "shell.exec"];

impl PyServer {
    /// Starts the server on a free port and waits for its `listening on` line.
    pub fn start(opts: PyServerOptions) -> PyServer {
        PyServer::start_with_args(opts, &[])
    }

    /// [`PyServer::start`] with more arguments for `mcp_server.py` (`--reserved-name-tools`).
    pub fn start_with_args(opts: PyServerOptions, args: &[&str]) -> PyServer {
        let mut all: Vec<&str> = Vec::new();
        if let Some(secret) = &opts.require_bearer {
            all.extend(["--require-bearer", secret.as_str()]);
        }
        all.extend_from_slice(args);
        let upstream = if opts.record_headers {
            start_recording_upstream("mcp_server.py", &all, "--record-headers")
        } else {
            start_upstream("mcp_server.py", &all)
        };
        let url = upstream.url.clone();
        let port = url
            .strip_prefix("http://127.0.0.1:")
            .and_then(|rest| rest.strip_suffix("/mcp"))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected server URL {url:?}"));
        PyServer { url, port, upstream }
    }

    /// One JSON object per HTTP request the server received, oldest first:
    /// `{"method", "path", "status", "rpc_method", "headers": {lowercased name: value}}`.
    /// Each line is written before the response starts, so a request the caller has seen
    /// answered is already here. Panics unless started with `record_headers`.
    pub fn recorded(&self) -> Vec<Value> {
        self.upstream.recorded()
    }

    /// What the server wrote to stderr so far (SDK logs, tracebacks).
    pub fn stderr(&self) -> String {
        self.upstream.stderr()
    }
}

/// The command that runs `mcp_server.py --stdio` (for a stdio client transport).
pub fn stdio_server_command() -> Command {
    let mut cmd = Command::new(python_mcp());
    cmd.arg(script("mcp_server.py")).arg("--stdio").env("PYTHONUNBUFFERED", "1").env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/// One run of `tests/py/mcp_client.py`: connect in a forced revision, run the steps, report.
///
/// ```ignore
/// let out = PyClient::new(&url, "2026-07-28").bearer(&mandate)
///     .steps(json!([{"op": "list_tools"}, {"op": "call_tool", "name": "tickets.search", "arguments": {"query": "x"}}]))
///     .run().await;
/// assert_eq!(out.protocol(), Some("2026-07-28"));
/// assert_eq!(out.result(1)["ok"], true);
/// ```
#[derive(Debug, Clone)]
pub struct PyClient {
    url: String,
    protocol: String,
    bearer: Option<String>,
    headers: Vec<String>,
    steps: Value,
}

/// What `mcp_client.py` printed (see the script's docstring for the shapes).
#[derive(Debug, Clone)]
pub struct PyClientOutput {
    /// `{"protocol", "connect", "results", "close_error"?}`
    pub json: Value,
    /// The client's stderr (SDK warnings and logs).
    pub stderr: String,
}

impl PyClientOutput {
    /// The negotiated revision, or `None` when the connection failed.
    pub fn protocol(&self) -> Option<&str> {
        self.json["protocol"].as_str()
    }

    /// `{"ok": true}` or the connection's failure.
    pub fn connect(&self) -> &Value {
        &self.json["connect"]
    }

    /// Every step's outcome, in order.
    pub fn results(&self) -> &[Value] {
        self.json["results"].as_array().map(Vec::as_slice).unwrap_or_default()
    }

    /// Step `i`'s outcome.
    pub fn result(&self, i: usize) -> &Value {
        self.results().get(i).unwrap_or_else(|| panic!("no step {i} in {}", self.json))
    }
}

impl PyClient {
    /// `protocol` is `"2025-11-25"` or `"2026-07-28"`.
    pub fn new(url: impl Into<String>, protocol: &str) -> PyClient {
        assert!(PROTOCOLS.contains(&protocol), "unknown MCP revision {protocol:?}");
        PyClient { url: url.into(), protocol: protocol.to_owned(), bearer: None, headers: Vec::new(), steps: Value::Array(Vec::new()) }
    }

    /// Send `Authorization: Bearer <token>` on every request.
    pub fn bearer(mut self, token: impl Into<String>) -> PyClient {
        self.bearer = Some(token.into());
        self
    }

    /// Send an extra header on every request.
    pub fn header(mut self, name: &str, value: &str) -> PyClient {
        self.headers.push(format!("{name}: {value}"));
        self
    }

    /// The steps, a JSON list: `{"op": "list_tools"}`, `{"op": "call_tool", "name", "arguments"}`,
    /// `{"op": "read_resource", "uri"}`, `{"op": "get_prompt", "name", "arguments"}`,
    /// `{"op": "list_resources"}`, `{"op": "list_prompts"}`.
    pub fn steps(mut self, steps: Value) -> PyClient {
        assert!(steps.is_array(), "steps must be a JSON list");
        self.steps = steps;
        self
    }

    fn step_count(&self) -> u32 {
        self.steps.as_array().map_or(0, |s| u32::try_from(s.len()).unwrap_or(u32::MAX))
    }

    /// The script bounds itself (30 s a request); this is the hard stop beyond that.
    fn deadline(&self) -> Duration {
        CLIENT_STEP * (self.step_count() + 3) + Duration::from_secs(60)
    }

    fn args(&self, steps_file: &Path) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![
            script("mcp_client.py").into(),
            "--url".into(),
            self.url.clone().into(),
            "--protocol".into(),
            self.protocol.clone().into(),
            "--steps".into(),
        ];
        let mut at = std::ffi::OsString::from("@");
        at.push(steps_file);
        args.push(at);
        if let Some(b) = &self.bearer {
            args.push("--bearer".into());
            args.push(b.clone().into());
        }
        for h in &self.headers {
            args.push("--header".into());
            args.push(h.clone().into());
        }
        args
    }

    fn steps_file(&self) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(self.steps.to_string().as_bytes()).unwrap();
        f.flush().unwrap();
        f
    }

    fn parse(&self, status: std::process::ExitStatus, stdout: &[u8], stderr: &[u8]) -> PyClientOutput {
        let stdout = String::from_utf8_lossy(stdout);
        let stderr = String::from_utf8_lossy(stderr).into_owned();
        let json: Option<Value> = stdout.lines().rev().find(|l| !l.trim().is_empty()).and_then(|l| serde_json::from_str(l).ok());
        match json {
            Some(json) if status.success() && json["results"].is_array() => PyClientOutput { json, stderr },
            _ => panic!(
                "mcp_client.py --url {} --protocol {} failed ({status}); steps {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
                self.url, self.protocol, self.steps
            ),
        }
    }

    /// Runs the client without blocking the async runtime (use this inside `#[tokio::test]`,
    /// where the server under test may run on the same runtime).
    pub async fn run(&self) -> PyClientOutput {
        let python = python_mcp();
        let steps = self.steps_file();
        let mut cmd = tokio::process::Command::new(&python);
        cmd.args(self.args(steps.path()))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
        let out = match tokio::time::timeout(self.deadline(), child.wait_with_output()).await {
            Ok(out) => out.unwrap(),
            Err(_) => panic!("mcp_client.py did not finish within {:?} (steps {})", self.deadline(), self.steps),
        };
        self.parse(out.status, &out.stdout, &out.stderr)
    }

    /// Runs the client on this thread (for tests without an async runtime).
    pub fn run_blocking(&self) -> PyClientOutput {
        let python = python_mcp();
        let steps = self.steps_file();
        let mut child = Command::new(&python)
            .args(self.args(steps.path()))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let out_thread = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stdout.read_to_end(&mut buf);
            buf
        });
        let err_thread = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            buf
        });
        let deadline = Instant::now() + self.deadline();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("mcp_client.py did not finish within {:?} (steps {})", self.deadline(), self.steps);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = out_thread.join().unwrap();
        let stderr = err_thread.join().unwrap();
        self.parse(status, &stdout, &stderr)
    }
}
