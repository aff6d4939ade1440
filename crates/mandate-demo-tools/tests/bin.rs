#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

//! The `mandate-demo-tools` binary announces its address and enforces `--require-bearer`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_prints_its_url_and_requires_the_bearer() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mandate-demo-tools"))
        .args(["--listen", "127.0.0.1:0"])
        .env("DEMO_TOOLS_BEARER", "from-env")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = KillOnDrop(child);

    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).expect("no startup line within 30s");
    let url = line.trim().strip_prefix("mandate-demo-tools: listening on ").expect("startup line format").to_owned();
    assert!(url.starts_with("http://127.0.0.1:") && url.ends_with("/mcp"), "{url}");

    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let post = |auth: Option<&'static str>| {
        let mut req = http
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 401);
    assert_eq!(post(Some("Bearer wrong")).await.unwrap().status(), 401);
    assert_eq!(post(Some("Bearer from-env")).await.unwrap().status(), 200);

    let outbox = http.get(url.replace("/mcp", "/_demo/outbox")).send().await.unwrap();
    assert_eq!(outbox.status(), 200);
    assert_eq!(outbox.text().await.unwrap(), "[]");
    drop(child);
}
