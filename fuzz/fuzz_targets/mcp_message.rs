//! The gateway's trust boundary with agents: any body is one JSON-RPC message or a clear
//! error, never a panic; and route patterns match any path without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_gateway::mcp::jsonrpc::{Message, meta_protocol, routing_name};

fuzz_target!(|data: &[u8]| {
    match Message::parse(data) {
        Ok(Message::Request { method, params, .. }) | Ok(Message::Notification { method, params }) => {
            let _ = routing_name(&method, params.as_ref());
            let _ = meta_protocol(params.as_ref());
        }
        Ok(Message::Response(_)) => {}
        Err(e) => assert!(e.code < 0),
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(file) = mandate_gateway::GatewayFile::from_toml(s) {
            if let Ok(cfg) = file.check() {
                for u in &cfg.upstreams {
                    for r in &u.routes {
                        if let Some(p) = r.matches("GET", "/a/b%2Fc/%ZZ/é") {
                            let _ = r.resource(&p);
                        }
                    }
                }
            }
        }
    }
});
