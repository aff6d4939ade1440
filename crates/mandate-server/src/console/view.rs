//! The console's page frame and small pieces every page uses. Every value reaches HTML
//! through maud, which escapes text and attribute values; nothing here writes raw markup.

use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::Viewer;

/// The sections in the top navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Agents,
    Tasks,
    Approvals,
    Policy,
    None,
}

/// A whole page: the top bar (sections, who is logged in, log out), the one-time message of
/// the last action, and `body`.
pub fn layout(title: &str, viewer: Option<&Viewer>, nav: Nav, body: Markup) -> Markup {
    let link = |href: &str, label: &str, this: Nav| {
        html! { a href=(href) class=[(nav == this).then_some("active")] { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Mandate console" }
                link rel="stylesheet" href="/console/style.css";
            }
            body {
                header.top {
                    a.brand href="/console" { span.mark { "M" } "Mandate" }
                    @if let Some(v) = viewer {
                        nav {
                            (link("/console/agents", "Agents", Nav::Agents))
                            (link("/console/tasks", "Tasks", Nav::Tasks))
                            (link("/console/approvals", "Approvals", Nav::Approvals))
                            (link("/console/policy", "Policy", Nav::Policy))
                        }
                        div.who {
                            span.label { (v.label) }
                            span class={ "role role-" (v.role.as_str()) } { (v.role.as_str()) }
                            form.inline method="post" action="/console/logout" {
                                (csrf_field(v))
                                button.link type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main {
                    @if let Some(flash) = viewer.and_then(|v| v.flash.as_deref()) {
                        p.flash role="status" { (flash) }
                    }
                    (body)
                }
            }
        }
    }
}

/// The hidden field that carries the session's CSRF token in every form.
pub fn csrf_field(v: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(v.csrf); }
}

/// A status word as a coloured badge (`live`, `active`, `revoked`, `allow`, …).
pub fn badge(word: &str) -> Markup {
    let tone = match word {
        "live" | "active" | "allow" | "allowed" | "approved" | "ok" | "verified" | "forwarded" | "used" => "good",
        "revoked" | "disabled" | "deny" | "denied" | "broken" | "refused" => "bad",
        "pending" | "requested" | "approval required" | "approval_required" => "pending",
        _ => "neutral",
    };
    html! { span class={ "badge badge-" (tone) } { (word) } }
}

/// Milliseconds since the epoch as `2026-05-01 12:03:04 UTC`.
pub fn time(ms: i64) -> String {
    match mandate_audit::rfc3339_ms(ms) {
        Some(s) => format!("{} UTC", s.get(..19).unwrap_or(&s).replace('T', " ")),
        None => ms.to_string(),
    }
}

/// An optional time, or a dash.
pub fn time_or_dash(ms: Option<i64>) -> String {
    ms.map_or_else(|| "—".to_owned(), time)
}

/// The head of a long id, for tables (the full id is the link target and the tooltip).
pub fn short(id: &str) -> &str {
    let cut = id.char_indices().nth(16).map_or(id.len(), |(i, _)| i);
    id.get(..cut).unwrap_or(id)
}

/// One path segment, percent-encoded (ids and names are plain, but never trusted to be).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A JSON value as short text: strings bare, lists joined, everything else compact JSON.
pub fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
            items.iter().map(plain).collect::<Vec<_>>().join(", ")
        }
        Value::Null => "—".to_owned(),
        other => other.to_string(),
    }
}

/// Label/value pairs of `details` for the keys that are present.
pub fn kv(details: &Value, keys: &[(&str, &str)]) -> Markup {
    let items: Vec<(&str, String)> =
        keys.iter().filter_map(|(key, label)| details.get(*key).filter(|v| !is_empty(v)).map(|v| (*label, plain(v)))).collect();
    pairs(&items)
}

/// Label/value pairs, in order, leaving out those whose text is empty.
pub fn pairs(items: &[(&str, String)]) -> Markup {
    html! {
        dl.kv {
            @for (label, text) in items {
                @if !text.is_empty() {
                    dt { (label) }
                    dd { (text) }
                }
            }
        }
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// A page that says what went wrong, with the stable code.
pub fn problem(title: &str, code: &str, message: &str, back: Option<(&str, &str)>) -> Markup {
    html! {
        section.problem {
            h1 { (title) }
            p.message { (message) }
            p.code { "code: " code { (code) } }
            @if let Some((href, label)) = back {
                p { a href=(href) { (label) } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code
    use mandate_core::Role;
    use serde_json::json;

    use super::*;

    fn viewer(label: &str) -> Viewer {
        Viewer {
            hash: "h".into(),
            token_id: "tok_1".into(),
            role: Role::Auditor,
            label: label.into(),
            csrf: "c\"sr<f".into(),
            flash: Some("<b>done</b>".into()),
        }
    }

    #[test]
    fn every_value_is_escaped_in_text_and_attributes() {
        let v = viewer("<script>alert(1)</script>");
        let body = html! { p { (plain(&json!("\"><img src=x onerror=alert(1)>"))) } (kv(&json!({"k": "<i>x</i>"}), &[("k", "K")])) };
        let page = layout("a<b", Some(&v), Nav::Agents, body).into_string();
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!page.contains("<img src=x"));
        assert!(page.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
        assert!(!page.contains("<i>x</i>") && page.contains("&lt;i&gt;x&lt;/i&gt;"));
        assert!(!page.contains("<b>done</b>") && page.contains("&lt;b&gt;done&lt;/b&gt;"));
        // Attribute values cannot break out of their quotes.
        assert!(page.contains(r#"value="c&quot;sr&lt;f""#), "{page}");
        assert!(page.contains("<title>a&lt;b · Mandate console</title>"));
        let p = problem("t", "c<d", "m&n", Some(("/console?a=1&b=\"2", "back"))).into_string();
        assert!(p.contains("c&lt;d") && p.contains("m&amp;n") && p.contains(r#"href="/console?a=1&amp;b=&quot;2""#), "{p}");
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(seg("task_0190ab"), "task_0190ab");
        assert_eq!(seg("../x y/?#"), "..%2Fx%20y%2F%3F%23");
        assert_eq!(seg("é"), "%C3%A9");
    }

    #[test]
    fn times_and_ids_read_well() {
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(time(1_700_000_000_123), "2023-11-14 22:13:20 UTC");
        assert_eq!(time_or_dash(None), "—");
        assert_eq!(short("task_0123456789abcdefXYZ"), "task_0123456789a");
        assert_eq!(short("ab"), "ab");
        assert_eq!(plain(&json!(["a", "b"])), "a, b");
        assert_eq!(plain(&json!({"a": 1})), r#"{"a":1}"#);
    }
}
