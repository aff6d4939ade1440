//! The HTTP API gateway's reading of a request: any path, query, headers and body are read
//! without a panic; what is read is normalized once (normalizing the normalized request
//! changes nothing) and never holds a dot segment or, unless the route takes them, an encoded
//! separator.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mandate_gateway::GatewayFile;
use mandate_gateway::config::Route;
use mandate_gateway::http_request::Parsed;

fn routes() -> &'static [Route] {
    static ROUTES: OnceLock<Vec<Route>> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let text = r#"
            [[upstream]]
            name = "api"
            type = "http"
            url = "http://127.0.0.1:9"
            [upstream.inject]
            secret = "k"
            header = "X-Api-Key"
            [[upstream.routes]]
            method = "*"
            path = "/a/{*rest}"
            action = "api.a"
            kind = "read"
            classification = "public"
            list_params = ["t"]
            headers = ["x-tenant"]
            [[upstream.routes]]
            method = "*"
            path = "/b/{*rest}"
            action = "api.b"
            kind = "read"
            classification = "public"
            decode_slashes = true
        "#;
        match GatewayFile::from_toml(text).and_then(|f| f.check()) {
            Ok(mut c) => c.upstreams.pop().map(|u| u.routes).unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    // path \n query \n content-type \n body
    let mut parts = data.splitn(4, |b| *b == b'\n');
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let query = parts.next().map(String::from_utf8_lossy);
    let content_type = parts.next().and_then(|c| http::HeaderValue::from_bytes(c).ok());
    let body = bytes::Bytes::copy_from_slice(parts.next().unwrap_or_default());
    let mut headers = http::HeaderMap::new();
    if let Some(ct) = content_type {
        headers.insert("content-type", ct);
    }
    let path = format!("/{}", path.trim_start_matches('/'));
    let Ok(parsed) = Parsed::parse("POST", &path, query.as_deref(), &headers, body.clone()) else { return };
    let segments = parsed.segment_values();
    for route in routes() {
        let Some(_) = route.matches(&parsed.method, &segments) else { continue };
        let Ok(n) = parsed.clone().finish("api", route, Some("X-Api-Key")) else { continue };
        assert!(!n.segments.iter().any(|s| s.split(['/', '\\']).any(|x| x == "." || x == "..")));
        if !route.decode_slashes {
            let upper = n.path.to_ascii_uppercase();
            assert!(!upper.contains("%2F") && !upper.contains("%5C"));
        }
        let again = Parsed::parse("POST", &n.path, Some(&n.query_string), &headers, body.clone())
            .and_then(|p| p.finish("api", route, Some("X-Api-Key")));
        match again {
            Ok(a) => assert_eq!((a.path.as_str(), &a.query, a.digest()), (n.path.as_str(), &n.query, n.digest())),
            Err(e) => panic!("a normalized request is refused: {e}"),
        }
        assert!(n.target("http://127.0.0.1:9").is_some());
    }
});
