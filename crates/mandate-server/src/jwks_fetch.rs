//! Fetching an external issuer's JWKS: https (or http to a loopback address, for local
//! issuers), at most 256 KiB, with a timeout, and it must parse as a key set.

use serde_json::Value;

const MAX_JWKS_BYTES: usize = 256 * 1024;

pub async fn fetch_jwks(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    let loopback = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]" | "::1"));
    if parsed.scheme() != "https" && !(parsed.scheme() == "http" && loopback) {
        return Err(format!("`{url}` must be https (http is accepted only on loopback)"));
    }
    let resp = http.get(parsed).send().await.map_err(|e| format!("cannot fetch `{url}`: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("`{url}` answered {}", resp.status()));
    }
    let bytes = resp.bytes().await.map_err(|e| format!("cannot read `{url}`: {e}"))?;
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(format!("the JWKS at `{url}` is larger than 256 KiB"));
    }
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("the JWKS at `{url}` is not JSON: {e}"))?;
    if !v.get("keys").is_some_and(Value::is_array) {
        return Err(format!("the document at `{url}` is not a JWKS (no `keys` array)"));
    }
    Ok(v)
}
