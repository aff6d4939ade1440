//! Sealing events into the hash chain, and the canonical JSON encoding the chain hashes.
//!
//! Canonical JSON here means: object keys sorted by their UTF-8 bytes at every depth, no
//! whitespace, strings escaped the way `serde_json` escapes them (`"`, `\` and control
//! characters only), numbers as `serde_json` prints them. The encoder sorts keys itself rather
//! than relying on `serde_json`'s map order, so the bytes do not change if some other crate in a
//! build turns on `serde_json/preserve_order`.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{ChainHead, NewEvent, SealedEvent};

/// Seals `events` after `head`: assigns `head.seq + 1, head.seq + 2, …`, links each to the one
/// before, and fixes its body and hash. The caller stores the result atomically and reads `head`
/// inside the same write transaction, so that no two batches seal onto the same head.
pub fn seal(head: &ChainHead, events: Vec<NewEvent>) -> Vec<SealedEvent> {
    let mut prev_hash = head.hash.clone();
    let mut seq = head.seq;
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        seq = seq.saturating_add(1);
        let body = canonical_body(seq, &e, &prev_hash);
        let hash = sha256_hex(body.as_bytes());
        out.push(SealedEvent {
            seq,
            ts_ms: e.ts_ms,
            kind: e.kind,
            actor: e.actor,
            agent: e.agent,
            task: e.task,
            body,
            prev_hash: std::mem::replace(&mut prev_hash, hash.clone()),
            hash,
        });
    }
    out
}

/// Canonical JSON of `value`.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

/// Hex (lowercase) SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The body of one event: `{actor, agent, details, kind, prev_hash, seq, task, ts_ms}`, keys
/// already in canonical order, written without building an intermediate map.
fn canonical_body(seq: u64, e: &NewEvent, prev_hash: &str) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("{\"actor\":");
    write_str(&mut out, &e.actor);
    out.push_str(",\"agent\":");
    write_opt_str(&mut out, e.agent.as_deref());
    out.push_str(",\"details\":");
    write_value(&mut out, &e.details);
    out.push_str(",\"kind\":");
    write_str(&mut out, &e.kind);
    out.push_str(",\"prev_hash\":");
    write_str(&mut out, prev_hash);
    out.push_str(",\"seq\":");
    push_display(&mut out, seq);
    out.push_str(",\"task\":");
    write_opt_str(&mut out, e.task.as_deref());
    out.push_str(",\"ts_ms\":");
    push_display(&mut out, e.ts_ms);
    out.push('}');
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => push_display(out, n),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            // `serde_json`'s default map iterates in key order already; only sort when some
            // build has it preserve insertion order.
            if map.keys().is_sorted_by(|a, b| a.as_bytes() <= b.as_bytes()) {
                write_entries(out, map.iter());
            } else {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                write_entries(out, entries.into_iter());
            }
        }
    }
}

fn write_entries<'a>(out: &mut String, entries: impl Iterator<Item = (&'a String, &'a Value)>) {
    out.push('{');
    for (i, (key, item)) in entries.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, key);
        out.push(':');
        write_value(out, item);
    }
    out.push('}');
}

/// Appends `value`'s `Display` form without an intermediate allocation.
fn push_display(out: &mut String, value: impl std::fmt::Display) {
    use std::fmt::Write;
    // Writing to a `String` cannot fail.
    let _ = write!(out, "{value}");
}

fn write_opt_str(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => write_str(out, s),
        None => out.push_str("null"),
    }
}

/// A JSON string, escaped exactly as `serde_json` escapes it.
fn write_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0x08 => Some("\\b"),
            0x0c => Some("\\f"),
            0x00..=0x1f => Some(""),
            _ => None,
        };
        let Some(escape) = escape else { continue };
        out.push_str(s.get(start..i).unwrap_or_default());
        if escape.is_empty() {
            out.push_str("\\u00");
            out.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
            out.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(s.get(start..).unwrap_or_default());
    out.push('"');
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::GENESIS_HASH;

    fn event(i: i64) -> NewEvent {
        NewEvent {
            ts_ms: 1_700_000_000_000 + i,
            kind: "decision".into(),
            actor: "agent:bot".into(),
            agent: Some("bot".into()),
            task: Some(format!("t{i}")),
            details: json!({"z": 1, "a": {"y": [true, null], "b": "x"}, "decision": i % 2 == 0}),
        }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth_without_whitespace() {
        let v = json!({"b": 1, "a": {"d": [1, {"z": 0, "y": 1}], "c": "é\"\\\n\u{1}"}, "B": null});
        assert_eq!(canonical_json(&v), r#"{"B":null,"a":{"c":"é\"\\\n\u0001","d":[1,{"y":1,"z":0}]},"b":1}"#);
    }

    #[test]
    fn string_escaping_matches_serde_json() {
        let samples = ["", "plain", "quote\"back\\slash", "\u{0}\u{7}\u{8}\u{c}\u{1f}\u{7f}", "ünï€😀", "\r\n\t"];
        for s in samples {
            let mut out = String::new();
            write_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap(), "escaping {s:?}");
        }
    }

    #[test]
    fn body_is_canonical_json_of_the_event() {
        let sealed = seal(&ChainHead::genesis(), vec![event(1)]);
        let e = &sealed[0];
        let parsed: Value = serde_json::from_str(&e.body).unwrap();
        assert_eq!(canonical_json(&parsed), e.body);
        assert_eq!(
            parsed,
            json!({"seq": 1, "ts_ms": 1_700_000_000_001_i64, "kind": "decision", "actor": "agent:bot",
                "agent": "bot", "task": "t1", "details": event(1).details, "prev_hash": GENESIS_HASH})
        );
        assert_eq!(e.hash, sha256_hex(e.body.as_bytes()));
        assert_eq!(e.hash.len(), 64);
    }

    #[test]
    fn seal_links_each_event_to_the_previous_one() {
        let first = seal(&ChainHead::genesis(), (0..3).map(event).collect());
        assert_eq!(first.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(first[0].prev_hash, GENESIS_HASH);
        assert_eq!(first[1].prev_hash, first[0].hash);
        assert_eq!(first[2].prev_hash, first[1].hash);
        let head = ChainHead { seq: 3, hash: first[2].hash.clone() };
        let next = seal(&head, vec![event(3)]);
        assert_eq!(next[0].seq, 4);
        assert_eq!(next[0].prev_hash, first[2].hash);
        assert!(seal(&head, Vec::new()).is_empty());
    }

    #[test]
    fn details_read_back_from_the_body() {
        let e = &seal(&ChainHead::genesis(), vec![event(1)])[0];
        assert_eq!(e.details(), event(1).details);
        let j = e.to_json();
        assert_eq!(j["ts"], "2023-11-14T22:13:20.001Z");
        assert_eq!(j["details"], event(1).details);
        assert_eq!(j["hash"], e.hash);
    }
}
