//! The secrets broker end to end: values go in through the CLI's standard input and never come
//! back out — not from the API, not in the database file, not in the log, not in the trail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

mod common;
mod support;

use common::*;
use serde_json::Value;
use support::*;

const VALUE: &str = "ghp_Plaintext-Secret-Value-7f3a9c";
const ROTATED: &str = "ghp_Rotated-Secret-Value-0b1d2e";

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Every stored byte: the database file and its write-ahead log.
fn stored_bytes(server: &Server) -> Vec<u8> {
    let db = server.data_dir().join("mandate.db");
    let mut bytes = std::fs::read(&db).unwrap();
    if let Ok(wal) = std::fs::read(server.data_dir().join("mandate.db-wal")) {
        bytes.extend(wal);
    }
    bytes
}

async fn raw(server: &Server, method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> (u16, String) {
    let mut b = reqwest::Client::new().request(method, format!("{}{path}", server.url)).bearer_auth(token);
    if let Some(body) = body {
        b = b.json(&body);
    }
    let r = b.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_stored_sealed_and_never_shown() {
    let server = Server::start_with(Options { extra_args: vec![], envs: vec![("MANDATE_LOG".into(), "debug".into())] });

    let out = server
        .cli()
        .args(["secret", "put", "github-token", "--description", "github api token"])
        .write_stdin(format!("{VALUE}\n"))
        .output()
        .unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("stored secret github-token version 1"), "{stdout}");
    assert!(!stdout.contains(VALUE) && !stderr.contains(VALUE));

    // Metadata only, everywhere.
    let shown = server.admin().get_secret("github-token").await.unwrap();
    assert_eq!((shown.name.as_str(), shown.version, shown.description.as_str()), ("github-token", 1, "github api token"));
    assert!(shown.created_by.starts_with("token:"), "{shown:?}");
    for path in ["/v1/secrets", "/v1/secrets/github-token"] {
        let (status, body) = raw(&server, reqwest::Method::GET, path, ADMIN, None).await;
        assert_eq!(status, 200, "{body}");
        assert!(!body.contains(VALUE), "{path} returned the value: {body}");
        assert!(!body.contains("ciphertext") && !body.contains("wrapped_key"), "{path}: {body}");
    }
    for args in [vec!["secret", "list"], vec!["secret", "show", "github-token"], vec!["secret", "list", "--json"]] {
        let out = server.cli().args(&args).output().unwrap();
        let (stdout, stderr) = output_text(&out);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(stdout.contains("github-token") && !stdout.contains(VALUE), "{args:?}: {stdout}");
    }

    // Rotation bumps the version and keeps the description.
    let out = server.cli().args(["secret", "rotate", "github-token"]).write_stdin(ROTATED).output().unwrap();
    assert!(out.status.success(), "{:?}", output_text(&out));
    let shown = server.admin().get_secret("github-token").await.unwrap();
    assert_eq!((shown.version, shown.description.as_str()), (2, "github api token"));

    // A duplicate put is refused with its code; rotate is the way.
    let err = server.admin().put_secret("github-token", "other", "").await.unwrap_err();
    assert_eq!(err.code(), Some("secret_exists"), "{err}");
    let out = server.cli().args(["secret", "put", "github-token"]).write_stdin("x").output().unwrap();
    assert!(!out.status.success());
    assert!(output_text(&out).1.contains("secret_exists"), "{:?}", output_text(&out));

    // Bad names and values.
    for bad in ["Upper", "with%20space", "a%2Fb", &"a".repeat(65)] {
        let (status, body) =
            raw(&server, reqwest::Method::PUT, &format!("/v1/secrets/{bad}"), ADMIN, Some(serde_json::json!({"value": "v"}))).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("invalid_secret_name"), "{bad}: {body}");
    }
    let err = server.admin().put_secret("empty", "", "").await.unwrap_err();
    assert_eq!(err.code(), Some("secret_empty"), "{err}");
    let err = server.admin().rotate_secret("missing", "v").await.unwrap_err();
    assert_eq!(err.code(), Some("secret_not_found"), "{err}");
    let err = server.admin().get_secret("missing").await.unwrap_err();
    assert_eq!(err.code(), Some("secret_not_found"), "{err}");

    // A pep token may not touch secrets, not even their metadata; an auditor may read metadata.
    let pep = pep(&server).await;
    for err in [
        pep.list_secrets().await.unwrap_err(),
        pep.get_secret("github-token").await.unwrap_err(),
        pep.put_secret("pep-secret", "v", "").await.unwrap_err(),
        pep.rotate_secret("github-token", "v").await.unwrap_err(),
        pep.delete_secret("github-token").await.unwrap_err(),
    ] {
        assert_eq!(err.code(), Some("forbidden"), "{err}");
    }
    let auditor = server.admin().create_token("auditor", "tests").await.unwrap();
    let auditor = server.admin().with_token(Some(auditor.token));
    assert_eq!(auditor.list_secrets().await.unwrap().len(), 1);
    assert_eq!(auditor.put_secret("aud-secret", "v", "").await.unwrap_err().code(), Some("forbidden"));

    // The trail records what happened, never the value.
    let put = events_of_kind(&server, "secret.put").await;
    assert_eq!(put.len(), 1, "{put:?}");
    assert_eq!((put[0]["details"]["name"].as_str(), put[0]["details"]["version"].as_u64()), (Some("github-token"), Some(1)));
    let rotated = events_of_kind(&server, "secret.rotated").await;
    assert_eq!(rotated[0]["details"]["version"], 2);
    let (status, export) = raw(&server, reqwest::Method::GET, "/v1/audit/export", ADMIN, None).await;
    assert_eq!(status, 200);
    assert!(export.contains("secret.rotated"));
    assert!(!export.contains(VALUE) && !export.contains(ROTATED));

    // At rest the values are sealed; the log never has them.
    let bytes = stored_bytes(&server);
    assert!(contains(&bytes, "github-token"), "the secret's row should be in the store");
    assert!(!contains(&bytes, VALUE) && !contains(&bytes, ROTATED), "a plaintext value is in the database file");
    let log = server.log();
    assert!(!log.contains(VALUE) && !log.contains(ROTATED), "a value is in the server log");

    // Delete removes every version.
    let out = server.cli().args(["secret", "delete", "github-token"]).output().unwrap();
    assert!(out.status.success(), "{:?}", output_text(&out));
    assert_eq!(server.admin().get_secret("github-token").await.unwrap_err().code(), Some("secret_not_found"));
    assert!(server.admin().list_secrets().await.unwrap().is_empty());
    assert_eq!(server.admin().delete_secret("github-token").await.unwrap_err().code(), Some("secret_not_found"));
    let deleted = events_of_kind(&server, "secret.deleted").await;
    assert_eq!((deleted[0]["details"]["name"].as_str(), deleted[0]["details"]["version"].as_u64()), (Some("github-token"), Some(2)));
    assert!(server.admin().audit_verify().await.unwrap().ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_master_key_file_is_private_and_an_env_key_is_used_instead() {
    let server = Server::start();
    let key_file = server.data_dir().join("keys/master.key");
    let text = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(text.trim().len(), 44, "base64 of 32 bytes");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    drop(server);

    let env_key = b64([9u8; 32]);
    let server = Server::start_with(Options { extra_args: vec![], envs: vec![("MANDATE_MASTER_KEY".into(), env_key)] });
    assert!(!server.data_dir().join("keys/master.key").exists(), "no key file when the key comes from the environment");
    server.admin().put_secret("s", "value", "").await.unwrap();
    drop(server);

    let tmp = tempfile::tempdir().unwrap();
    let out = mandate_cmd()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("data"))
        .env("MANDATE_MASTER_KEY", "too-short")
        .output()
        .unwrap();
    let (_, stderr) = output_text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("MANDATE_MASTER_KEY"), "{stderr}");
}
