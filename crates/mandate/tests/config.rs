//! `mandate serve` configuration: unknown keys are errors that name the key, task lifetimes
//! are capped by `[tasks]`, environment variables override the file; and serving over TLS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

mod common;
mod support;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::json;
use support::*;

/// Runs `mandate serve` with a config file that should be refused; answers its stderr.
fn refused_config(tmp: &Path, toml: &str) -> String {
    let config = tmp.join("mandate.toml");
    std::fs::write(&config, toml).unwrap();
    let out = mandate_cmd()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(tmp.join("data"))
        .env("MANDATE_ADMIN_TOKEN", ADMIN)
        // A safety net only: a refused config exits at once.
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(!stdout.contains("listening on"), "the server started: {stdout}");
    stderr
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_config_keys_are_errors_that_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let stderr = refused_config(tmp.path(), "listen = \"127.0.0.1:0\"\nchekpoint_every = 5\n");
    assert!(stderr.contains("unknown field `chekpoint_every`"), "{stderr}");
    assert!(stderr.contains("mandate.toml"), "{stderr}");

    let stderr = refused_config(tmp.path(), "[tasks]\nmax_ttl = 120\n");
    assert!(stderr.contains("unknown field `max_ttl`"), "{stderr}");

    let stderr = refused_config(tmp.path(), "[tasks]\nmax_ttl_secs = 120\ndefault_ttl_secs = 900\n");
    assert!(stderr.contains("tasks.default_ttl_secs"), "{stderr}");
    assert!(!tmp.path().join("data/mandate.db").exists(), "nothing is opened for a refused config");
}

#[tokio::test(flavor = "multi_thread")]
async fn max_ttl_caps_every_task_lifetime() {
    let tmp = tempfile::tempdir().unwrap();
    let config = "[tasks]\nmax_ttl_secs = 120\n";
    let server = Server::start_in(tmp.path(), Options::with_config(tmp.path(), config));
    let agent = register_agent(&server.admin(), "capped", &[]).await;

    // Asking for longer than the cap gets the cap.
    let r = server.anon().exchange(&attestation(&agent, &server.url), &read_intent()).await.unwrap();
    assert_eq!(r.expires_in, 120);
    assert_eq!(r.authorization_details[0]["lifetime_seconds"], 120);
    let claims = jwt_part(&r.access_token, 1);
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 120);
    let task = server.admin().get_task(&r.task_id).await.unwrap();
    assert_eq!(task.expires_at_ms, claims["exp"].as_i64().unwrap() * 1000);
    assert!((119_000..=121_000).contains(&(task.expires_at_ms - task.created_at_ms)), "{task:?}");

    // Asking for no lifetime gets the default, which never exceeds the cap either.
    let mut intent = read_intent();
    intent.as_object_mut().unwrap().remove("lifetime_seconds");
    let r = server.anon().exchange(&attestation(&agent, &server.url), &intent).await.unwrap();
    assert_eq!(r.expires_in, 120);

    // Shorter than the cap is granted as asked.
    intent["lifetime_seconds"] = json!(30);
    let r = server.anon().exchange(&attestation(&agent, &server.url), &intent).await.unwrap();
    assert_eq!(r.expires_in, 30);
}

#[tokio::test(flavor = "multi_thread")]
async fn environment_overrides_the_config_file() {
    let tmp = tempfile::tempdir().unwrap();
    let config = "trust_domain = \"file.example\"\naudience = \"tools.example\"\n";
    let server = Server::start_in(
        tmp.path(),
        Options { envs: vec![("MANDATE_TRUST_DOMAIN".into(), "env.example".into())], ..Options::with_config(tmp.path(), config) },
    );
    let meta = server.anon().oauth_metadata().await.unwrap();
    assert_eq!(meta["mandate_trust_domain"], "env.example");
    assert_eq!(meta["mandate_audience"], "tools.example");
    let agent = register_agent(&server.admin(), "configured", &[]).await;
    assert_eq!(agent.spiffe_id, "spiffe://env.example/agent/configured");
    let (mandate, _) = open_task(&server, &agent, &read_intent()).await;
    assert_eq!(jwt_part(&mandate, 1)["aud"], "tools.example");
}

fn openssl_available() -> bool {
    std::process::Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success())
}

/// The DER of the first certificate in a PEM file.
fn pem_to_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let body: String =
        pem.lines().skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE")).skip(1).take_while(|l| !l.starts_with("-----END")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_https_with_the_configured_certificate() {
    if !openssl_available() {
        eprintln!("note: skipping the TLS test: the `openssl` command is not available to make a certificate");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));

    let server = Server::start_with(Options {
        extra_args: vec!["--tls-cert".into(), cert.display().to_string(), "--tls-key".into(), key.display().to_string()],
        envs: vec![],
    });
    assert!(server.url.starts_with("https://127.0.0.1:"), "{}", server.url);

    let http = reqwest::Client::builder().danger_accept_invalid_certs(true).tls_info(true).build().unwrap();
    let r = poll("the TLS listener to answer", || async { http.get(format!("{}/healthz", server.url)).send().await.ok() }).await;
    assert_eq!(r.status(), 200);
    // It is our certificate the server presents.
    let presented = r.extensions().get::<reqwest::tls::TlsInfo>().and_then(|i| i.peer_certificate()).map(<[u8]>::to_vec);
    assert_eq!(presented, Some(pem_to_der(&std::fs::read_to_string(&cert).unwrap())));
    assert_eq!(r.text().await.unwrap(), "ok\n");

    // The metadata names the https URL, and the API works over TLS.
    let meta: serde_json::Value =
        http.get(format!("{}/.well-known/oauth-authorization-server", server.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(meta["issuer"], server.url.as_str());
    let info = http.get(format!("{}/v1/info", server.url)).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(info.status(), 200);
    // Over HTTPS the console's cookies are `Secure`.
    let login = http.get(format!("{}/console/login", server.url)).send().await.unwrap();
    let cookie = login.headers().get("set-cookie").unwrap().to_str().unwrap();
    assert!(cookie.contains("; HttpOnly") && cookie.ends_with("; Secure"), "{cookie}");

    // Plain HTTP on the TLS port gets no answer.
    let plain = server.url.replacen("https://", "http://", 1);
    if let Ok(r) = reqwest::Client::new().get(format!("{plain}/healthz")).send().await {
        assert_ne!(r.status(), 200, "plain HTTP was served on the TLS port");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unusable_tls_material_stops_the_start_before_anything_is_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n").unwrap();
    std::fs::write(&key, "not a key\n").unwrap();
    let out = mandate_cmd()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("data"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("MANDATE_LOG", "warn")
        // A safety net only: the start fails at once.
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("cannot load TLS certificate"), "{stderr}");
    assert!(stderr.contains("cert.pem"), "{stderr}");
    assert!(!stdout.contains("listening on"), "a server that cannot serve said it listens: {stdout}");
    assert!(!stderr.contains("bootstrap admin token"), "{stderr}");
    assert!(!tmp.path().join("data/mandate.db").exists(), "the store was created for a server that never served");
}
