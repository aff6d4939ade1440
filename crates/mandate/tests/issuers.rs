//! Attestation by trusted external issuers: a SPIRE-style JWT-SVID (ES256, JWKS from a file)
//! and a Kubernetes-style service account token (RS256, JWKS fetched from a URL) open tasks
//! for agents registered without a key; tokens that match no rule, come from an issuer not
//! trusted, carry another audience, are replayed or are forged, live longer than the issuer
//! allows, or have no `jti` where the issuer does not allow reuse are refused with precise
//! codes; an issuer that allows reuse has each reuse audited.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

mod common;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use mandate_proto::admin::{AddIssuerRequest, ClaimRuleView, RegisterAgentRequest};
use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SPIRE: &str = "https://spire.example";
const K8S: &str = "https://kubernetes.default.svc.cluster.local";
const AUD: &str = "mandate-test";

/// A P-256 key of an external issuer.
struct EcIssuerKey {
    key: p256::ecdsa::SigningKey,
    kid: String,
}

impl EcIssuerKey {
    fn generate(kid: &str) -> Self {
        EcIssuerKey { key: p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng), kid: kid.to_owned() }
    }

    fn public_jwk(&self) -> Value {
        let mut jwk = serde_json::to_value(p256::PublicKey::from(*self.key.verifying_key()).to_jwk()).unwrap();
        jwk["kid"] = json!(self.kid);
        jwk["alg"] = json!("ES256");
        jwk["use"] = json!("sig");
        jwk
    }

    /// An ES256 JWS over `claims`, with this key's kid.
    fn sign(&self, claims: &Value) -> String {
        use p256::ecdsa::signature::Signer;
        let header = json!({ "alg": "ES256", "typ": "JWT", "kid": self.kid });
        let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let sig: p256::ecdsa::Signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", b64(sig.to_bytes()))
    }
}

fn svid_claims(iss: &str, sub: &str, aud: &str) -> Value {
    let now = now();
    json!({ "iss": iss, "sub": sub, "aud": aud, "iat": now, "exp": now + 120, "jti": uuid::Uuid::new_v4().to_string() })
}

async fn register_keyless(server: &Server, name: &str) {
    let r = server
        .admin()
        .register_agent(&RegisterAgentRequest {
            name: name.to_owned(),
            owner: "bob@example.com".to_owned(),
            purpose: "Handle refunds".to_owned(),
            public_jwk: None,
            attributes: Default::default(),
        })
        .await
        .unwrap();
    assert_eq!(r.attestation, "external_issuer");
}

#[tokio::test(flavor = "multi_thread")]
async fn spire_svids_attest_keyless_agents_and_bad_tokens_are_refused() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let spire = EcIssuerKey::generate("spire-2024-1");
    let jwks_file = tmp.path().join("spire.jwks.json");
    std::fs::write(&jwks_file, json!({ "keys": [spire.public_jwk()] }).to_string()).unwrap();

    let out = server
        .cli()
        .args(["issuer", "add", "--issuer", SPIRE, "--audience", AUD, "--jwks-file"])
        .arg(&jwks_file)
        .args(["--rule", "sub=spiffe://cluster.example/ns/prod/sa/{agent}"])
        .output()
        .unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), format!("trusting {SPIRE} (1 key(s))"));
    let issuers = server.admin().list_issuers().await.unwrap();
    assert_eq!(issuers.len(), 1);
    assert_eq!(issuers[0].rules[0].pattern, "spiffe://cluster.example/ns/prod/sa/{agent}");

    register_keyless(&server, "billing").await;
    let svid = spire.sign(&svid_claims(SPIRE, "spiffe://cluster.example/ns/prod/sa/billing", AUD));
    let r = server.anon().exchange(&svid, &read_intent()).await.unwrap();
    let claims = jwt_part(&r.access_token, 1);
    assert_eq!(claims["agent"], "billing");
    assert_eq!(claims["sub"], "spiffe://mandate.local/agent/billing");
    assert_eq!(claims["task_id"], r.task_id.as_str());
    let opened = server.admin().audit_trail(&r.task_id).await.unwrap().events;
    assert_eq!(opened[0]["kind"], "task.opened");
    assert_eq!(opened[0]["details"]["attestation"], "external_issuer");

    // The mandate works like any other.
    let pep = pep(&server).await;
    let billing = TestAgent {
        name: "billing".into(),
        spiffe_id: "spiffe://mandate.local/agent/billing".into(),
        private_jwk: Value::Null,
        public_jwk: Value::Null,
    };
    let d = pep.evaluate(&evaluation(&billing, &r.access_token, "tickets.read", "ticket", "1", "internal")).await.unwrap();
    assert!(d.decision, "{d:?}");

    // A subject no rule maps to an agent.
    let other_ns = spire.sign(&svid_claims(SPIRE, "spiffe://cluster.example/ns/dev/sa/billing", AUD));
    assert_eq!(exchange_refusal(&server, &other_ns).await, "no_rule_matched");
    // A rule that maps to an agent nobody registered.
    let ghost = spire.sign(&svid_claims(SPIRE, "spiffe://cluster.example/ns/prod/sa/ghost", AUD));
    assert_eq!(exchange_refusal(&server, &ghost).await, "unknown_agent");
    // The same key, but an issuer that is not trusted.
    let untrusted = spire.sign(&svid_claims("https://spire.evil.example", "spiffe://cluster.example/ns/prod/sa/billing", AUD));
    assert_eq!(exchange_refusal(&server, &untrusted).await, "unknown_issuer");
    // A token meant for someone else.
    let elsewhere = spire.sign(&svid_claims(SPIRE, "spiffe://cluster.example/ns/prod/sa/billing", "another-service"));
    assert_eq!(exchange_refusal(&server, &elsewhere).await, "wrong_audience");
    // Another key claiming the trusted key's kid.
    let forger = EcIssuerKey::generate("spire-2024-1");
    let forged = forger.sign(&svid_claims(SPIRE, "spiffe://cluster.example/ns/prod/sa/billing", AUD));
    assert_eq!(exchange_refusal(&server, &forged).await, "bad_signature");
    // The accepted token, presented again.
    assert_eq!(exchange_refusal(&server, &svid).await, "replayed_jti");
    // Longer than the default limit (the attestation one, 300 s), with `iat` or, without it,
    // counted from now.
    let sub = "spiffe://cluster.example/ns/prod/sa/billing";
    let mut long = svid_claims(SPIRE, sub, AUD);
    long["exp"] = json!(now() + 301);
    assert_eq!(exchange_refusal(&server, &spire.sign(&long)).await, "lifetime_too_long");
    let mut long = svid_claims(SPIRE, sub, AUD);
    long.as_object_mut().unwrap().remove("iat");
    long["exp"] = json!(now() + 400);
    assert_eq!(exchange_refusal(&server, &spire.sign(&long)).await, "lifetime_too_long");
    // No `jti`, and the issuer does not allow reuse.
    let mut no_jti = svid_claims(SPIRE, sub, AUD);
    no_jti.as_object_mut().unwrap().remove("jti");
    assert_eq!(exchange_refusal(&server, &spire.sign(&no_jti)).await, "jti_required");

    // Nothing was issued for the refusals, and each one is in the trail.
    let tasks = server.admin().list_tasks(Some("billing"), None, None).await.unwrap();
    assert_eq!(tasks.len(), 1);
    let reasons: Vec<String> =
        events_of_kind(&server, "attestation.refused").await.iter().map(|e| e["details"]["reason"].as_str().unwrap().to_owned()).collect();
    for code in [
        "no_rule_matched",
        "unknown_agent",
        "unknown_issuer",
        "wrong_audience",
        "bad_signature",
        "replayed_jti",
        "lifetime_too_long",
        "jti_required",
    ] {
        assert!(reasons.iter().any(|r| r == code), "{code} not audited: {reasons:?}");
    }
}

/// Serves `body` as JSON to every request on a loopback port; returns the URL and a counter
/// of requests served.
async fn serve_json(body: String) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let body = body.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut chunk = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&chunk[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(response.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (format!("http://127.0.0.1:{port}/openid/v1/jwks"), hits)
}

/// A 2048-bit RSA key as jsonwebtoken's signing key and its public JWK.
fn rsa_issuer_key(kid: &str) -> (jsonwebtoken::EncodingKey, Value) {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::traits::PublicKeyParts;
    let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let der = private.to_pkcs1_der().unwrap();
    let jwk = json!({
        "kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
        "n": b64(private.n().to_bytes_be()), "e": b64(private.e().to_bytes_be()),
    });
    (jsonwebtoken::EncodingKey::from_rsa_der(der.as_bytes()), jwk)
}

fn k8s_token(key: &jsonwebtoken::EncodingKey, kid: &str, sub: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let now = now();
    let claims = json!({
        "iss": K8S, "sub": sub, "aud": [AUD], "iat": now, "nbf": now, "exp": now + 600,
        "jti": uuid::Uuid::new_v4().to_string(),
        "kubernetes.io": { "namespace": "prod", "serviceaccount": { "name": "billing" } }
    });
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_tokens_verify_against_a_jwks_fetched_from_a_url() {
    let server = Server::start();
    let (key, jwk) = rsa_issuer_key("k8s-sa-1");
    let (url, hits) = serve_json(json!({ "keys": [jwk] }).to_string()).await;

    // The CLI blocks while the server fetches the key set from the test's HTTP server.
    let cli = server.cli();
    let jwks_url = url.clone();
    let out = tokio::task::spawn_blocking(move || {
        let mut cli = cli;
        cli.args([
            "issuer",
            "add",
            "--issuer",
            K8S,
            "--audience",
            AUD,
            "--jwks-url",
            &jwks_url,
            "--rule",
            "sub=system:serviceaccount:prod:{agent}",
        ])
        .output()
        .unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), format!("trusting {K8S} (1 key(s))"));
    assert!(hits.load(Ordering::SeqCst) >= 1, "the JWKS was never fetched");
    let listed = server.admin().list_issuers().await.unwrap();
    assert_eq!(listed[0].jwks_url.as_deref(), Some(url.as_str()));

    assert_eq!(listed[0].max_token_lifetime_secs, None, "the default: the server's attestation limit");

    // Kubernetes tokens live ten minutes or more: above the default limit.
    register_keyless(&server, "billing").await;
    let token = k8s_token(&key, "k8s-sa-1", "system:serviceaccount:prod:billing");
    assert_eq!(exchange_refusal(&server, &token).await, "lifetime_too_long");
    let out = server
        .cli()
        .args(["issuer", "add", "--issuer", K8S, "--audience", AUD, "--jwks-file"])
        .arg(write_jwks(&jwk))
        .args(["--rule", "sub=system:serviceaccount:prod:{agent}", "--max-token-lifetime", "3600"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", output_text(&out));
    let listed = server.admin().list_issuers().await.unwrap();
    assert_eq!((listed[0].max_token_lifetime_secs, listed[0].allow_token_reuse), (Some(3600), false));
    let r = server.anon().exchange(&token, &read_intent()).await.unwrap();
    assert_eq!(jwt_part(&r.access_token, 1)["agent"], "billing");

    let staging = k8s_token(&key, "k8s-sa-1", "system:serviceaccount:staging:billing");
    assert_eq!(exchange_refusal(&server, &staging).await, "no_rule_matched");

    // Once the issuer is removed, its tokens are no longer trusted.
    let out = server.cli().args(["issuer", "remove", K8S]).output().unwrap();
    assert!(out.status.success(), "{:?}", output_text(&out));
    let after = k8s_token(&key, "k8s-sa-1", "system:serviceaccount:prod:billing");
    assert_eq!(exchange_refusal(&server, &after).await, "unknown_issuer");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jwks_url_must_be_https_unless_it_is_loopback() {
    let server = Server::start();
    let out = server
        .cli()
        .args(["issuer", "add", "--issuer", K8S, "--audience", AUD, "--jwks-url", "http://jwks.example.com/keys", "--rule", "sub={agent}"])
        .output()
        .unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("jwks_unavailable"), "{stderr}");
    assert!(stderr.contains("must be https"), "{stderr}");
    assert!(server.admin().list_issuers().await.unwrap().is_empty());
}

/// The JWKS holding `jwk`, in a file that lives as long as the test process.
fn write_jwks(jwk: &Value) -> std::path::PathBuf {
    let dir = tempfile::tempdir().unwrap().keep();
    let path = dir.join("jwks.json");
    std::fs::write(&path, json!({ "keys": [jwk] }).to_string()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn an_issuer_that_allows_reuse_accepts_tokens_without_jti_and_audits_each_reuse() {
    let server = Server::start();
    let spire = EcIssuerKey::generate("spire-reuse-1");
    let rule = ClaimRuleView { claim: "sub".into(), pattern: "spiffe://cluster.example/ns/prod/sa/{agent}".into() };
    let add = |max: Option<u64>, reuse: bool| AddIssuerRequest {
        issuer: SPIRE.into(),
        audience: AUD.into(),
        jwks: Some(json!({ "keys": [spire.public_jwk()] })),
        jwks_url: None,
        rules: vec![rule.clone()],
        max_token_lifetime_secs: max,
        allow_token_reuse: reuse,
    };
    // Bad settings are refused.
    for max in [0, 86_401] {
        let e = server.admin().add_issuer(&add(Some(max), true)).await.unwrap_err();
        assert_eq!(e.code(), Some("invalid_request"), "{e}");
    }
    let view = server.admin().add_issuer(&add(Some(600), true)).await.unwrap();
    assert_eq!((view.max_token_lifetime_secs, view.allow_token_reuse), (Some(600), true));
    let added = events_of_kind(&server, "issuer.added").await;
    assert_eq!(added.last().unwrap()["details"]["allow_token_reuse"], true);
    assert_eq!(added.last().unwrap()["details"]["max_token_lifetime_secs"], 600);

    register_keyless(&server, "billing").await;
    let sub = "spiffe://cluster.example/ns/prod/sa/billing";
    let mut claims = svid_claims(SPIRE, sub, AUD);
    claims.as_object_mut().unwrap().remove("jti");
    claims["exp"] = json!(now() + 500);
    let token = spire.sign(&claims);
    let first = server.anon().exchange(&token, &read_intent()).await.unwrap();
    let second = server.anon().exchange(&token, &read_intent()).await.unwrap();
    let third = server.anon().exchange(&token, &read_intent()).await.unwrap();
    let opened = |task: String| {
        let server = &server;
        async move {
            let events = server.admin().audit_trail(&task).await.unwrap().events;
            events.into_iter().find(|e| e["kind"] == "task.opened").unwrap()["details"].clone()
        }
    };
    assert!(opened(first.task_id).await.get("attestation_reused").is_none(), "the first use is no reuse");
    assert_eq!(opened(second.task_id).await["attestation_reused"], true);
    assert_eq!(opened(third.task_id).await["attestation_reused"], true);

    // Still bounded in lifetime, and a token with a `jti` is still accepted once.
    let mut long = claims.clone();
    long["exp"] = json!(now() + 601);
    assert_eq!(exchange_refusal(&server, &spire.sign(&long)).await, "lifetime_too_long");
    let once = spire.sign(&svid_claims(SPIRE, sub, AUD));
    server.anon().exchange(&once, &read_intent()).await.unwrap();
    assert_eq!(exchange_refusal(&server, &once).await, "replayed_jti");

    // Without reuse allowed, the same token is refused.
    server.admin().add_issuer(&add(Some(600), false)).await.unwrap();
    assert_eq!(exchange_refusal(&server, &token).await, "jti_required");
}
