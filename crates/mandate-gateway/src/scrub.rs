//! Keeping a brokered secret out of what an upstream answers. A tool that echoes its request
//! headers (or quotes them in an error) would otherwise hand the injected secret to the agent.
//!
//! A [`Scrubber`] is built for each request from what was injected: the secret's value and
//! the full header value as sent (`Bearer …`, `Basic base64(user:secret)`). It matches each
//! of them as it is and in the encodings a tool is likely to use:
//!
//! - JSON string escaping (as written by serde, with `\/`, and with every non-ASCII character
//!   as `\uXXXX`);
//! - base64, standard and URL-safe, padded and unpadded, at the three byte alignments: a
//!   value inside a longer base64 text (`base64(user:secret)`, a base64 JSON dump of the
//!   headers) is matched by the characters that depend on its bytes alone;
//! - percent-encoding (RFC 3986, `encodeURIComponent`, form encoding with `+` for a space, or
//!   every byte), upper and lower hex;
//! - hex, lower and upper.
//!
//! Each match is replaced by [`REDACTED`]. Encodings shorter than [`MIN_PATTERN`] bytes are
//! not matched: they would also match text that has nothing to do with the secret. A secret
//! that short is still matched inside the full header value and in its longer encodings.
//! All patterns are searched at once (Aho-Corasick, leftmost-longest).

use std::collections::BTreeSet;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

/// What replaces every match.
pub const REDACTED: &str = "[redacted]";

/// Patterns shorter than this many bytes are not searched for.
pub const MIN_PATTERN: usize = 8;

/// The encoding a match was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Encoding {
    Raw,
    Json,
    Base64,
    Base64Url,
    Percent,
    Hex,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Raw => "raw",
            Encoding::Json => "json",
            Encoding::Base64 => "base64",
            Encoding::Base64Url => "base64url",
            Encoding::Percent => "percent",
            Encoding::Hex => "hex",
        }
    }
}

/// What a scrub found: how many matches, in which encodings.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Found {
    pub matches: usize,
    pub encodings: BTreeSet<Encoding>,
}

impl Found {
    pub fn is_empty(&self) -> bool {
        self.matches == 0
    }

    pub fn add(&mut self, other: &Found) {
        self.matches += other.matches;
        self.encodings.extend(other.encodings.iter().copied());
    }

    /// The encodings' names, sorted.
    pub fn encoding_names(&self) -> Vec<&'static str> {
        self.encodings.iter().map(|e| e.as_str()).collect()
    }
}

/// The matcher of one injected secret in all its encodings.
pub struct Scrubber {
    /// `None` when no pattern is long enough to search for.
    ac: Option<AhoCorasick>,
    /// The encoding of each pattern, by pattern id.
    encodings: Vec<Encoding>,
    longest: usize,
    /// The automaton could not be built: everything is redacted (fail closed).
    broken: bool,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber").field("patterns", &self.encodings.len()).finish_non_exhaustive()
    }
}

impl Scrubber {
    /// A scrubber for each of `values` (the secret, the header value as sent) in every
    /// encoding above.
    pub fn new(values: &[&[u8]]) -> Arc<Scrubber> {
        let mut patterns: Vec<(Zeroizing<Vec<u8>>, Encoding)> = Vec::new();
        for v in values {
            variants(v, &mut patterns);
        }
        let mut seen: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        let mut encodings = Vec::new();
        for (p, e) in patterns {
            if p.len() >= MIN_PATTERN && !seen.iter().any(|s| **s == *p) {
                seen.push(p);
                encodings.push(e);
            }
        }
        let longest = seen.iter().map(|p| p.len()).max().unwrap_or(0);
        if seen.is_empty() {
            return Arc::new(Scrubber { ac: None, encodings, longest, broken: false });
        }
        match AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .kind(Some(AhoCorasickKind::ContiguousNFA))
            .build(seen.iter().map(|p| p.as_slice()))
        {
            Ok(ac) => Arc::new(Scrubber { ac: Some(ac), encodings, longest, broken: false }),
            Err(_) => {
                tracing::error!("cannot build the matcher of an injected secret; the upstream's answers are withheld");
                Arc::new(Scrubber { ac: None, encodings, longest, broken: true })
            }
        }
    }

    /// The length of the longest pattern.
    pub fn longest(&self) -> usize {
        self.longest
    }

    /// Whether `input` holds any pattern.
    pub fn contains(&self, input: &[u8]) -> bool {
        self.broken || self.ac.as_ref().is_some_and(|ac| ac.is_match(input))
    }

    /// `input` with every match replaced, or `None` if there was none.
    pub fn bytes(&self, input: &[u8], found: &mut Found) -> Option<Vec<u8>> {
        if self.broken {
            found.matches += 1;
            return Some(REDACTED.as_bytes().to_vec());
        }
        let ac = self.ac.as_ref()?;
        let mut out: Option<Vec<u8>> = None;
        let mut cursor = 0;
        for m in ac.find_iter(input) {
            let o = out.get_or_insert_with(|| Vec::with_capacity(input.len()));
            o.extend_from_slice(input.get(cursor..m.start()).unwrap_or_default());
            o.extend_from_slice(REDACTED.as_bytes());
            cursor = m.end();
            found.matches += 1;
            if let Some(e) = self.encodings.get(m.pattern().as_usize()) {
                found.encodings.insert(*e);
            }
        }
        if let Some(o) = &mut out {
            o.extend_from_slice(input.get(cursor..).unwrap_or_default());
        }
        out
    }

    /// `s` with every match replaced, or `None` if there was none.
    pub fn str(&self, s: &str, found: &mut Found) -> Option<String> {
        // Patterns are UTF-8, so matches start and end on character boundaries.
        self.bytes(s.as_bytes(), found).map(|b| String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    /// Scrubs every string and every object key of `v`, in place. True if anything changed.
    pub fn value(&self, v: &mut Value, found: &mut Found) -> bool {
        match v {
            Value::String(s) => match self.str(s, found) {
                Some(new) => {
                    *s = new;
                    true
                }
                None => false,
            },
            Value::Array(items) => {
                // Every item, not only up to the first that changed.
                let mut changed = false;
                for i in items {
                    changed |= self.value(i, found);
                }
                changed
            }
            Value::Object(map) => {
                let mut changed = false;
                let keys_match = map.keys().any(|k| self.contains(k.as_bytes()));
                if keys_match {
                    let old = std::mem::take(map);
                    let mut new = Map::new();
                    for (k, val) in old {
                        let k = self.str(&k, found).unwrap_or(k);
                        new.insert(k, val);
                    }
                    *map = new;
                    changed = true;
                }
                for val in map.values_mut() {
                    changed |= self.value(val, found);
                }
                changed
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        }
    }

    /// Scrubs an error text: `s` itself, changed in place.
    pub fn text(&self, s: &mut String, found: &mut Found) {
        if let Some(new) = self.str(s, found) {
            *s = new;
        }
    }
}

/// Every encoding of `v` a tool might echo it in.
fn variants(v: &[u8], out: &mut Vec<(Zeroizing<Vec<u8>>, Encoding)>) {
    let mut push = |p: Vec<u8>, e: Encoding| out.push((Zeroizing::new(p), e));
    if v.is_empty() {
        return;
    }
    push(v.to_vec(), Encoding::Raw);
    if let Ok(s) = std::str::from_utf8(v) {
        let json = Zeroizing::new(serde_json::to_string(s).unwrap_or_default());
        let inner = json.get(1..json.len().saturating_sub(1)).unwrap_or_default();
        push(inner.as_bytes().to_vec(), Encoding::Json);
        push(inner.replace('/', "\\/").into_bytes(), Encoding::Json);
        push(json_ascii(inner).into_bytes(), Encoding::Json);
        push(json_ascii(inner).replace('/', "\\/").into_bytes(), Encoding::Json);
    }
    for (padded, unpadded, enc) in [(&STANDARD, &STANDARD_NO_PAD, Encoding::Base64), (&URL_SAFE, &URL_SAFE_NO_PAD, Encoding::Base64Url)] {
        push(padded.encode(v).into_bytes(), enc);
        push(unpadded.encode(v).into_bytes(), enc);
        for shift in 0..3usize {
            // Encode `shift` bytes of padding before the value and keep the characters whose
            // six bits all come from the value: the value at any offset of a longer text.
            let mut buf = Zeroizing::new(vec![0u8; shift]);
            buf.extend_from_slice(v);
            let text = Zeroizing::new(unpadded.encode(buf.as_slice()));
            let start = (8 * shift).div_ceil(6);
            let end = (8 * (shift + v.len())) / 6;
            if let Some(part) = text.get(start..end) {
                push(part.as_bytes().to_vec(), enc);
            }
        }
    }
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
    let component = |b: u8| b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b);
    let form = |b: u8| b.is_ascii_alphanumeric() || b"*-._".contains(&b);
    let path = |b: u8| unreserved(b) || b == b'/';
    let nothing = |_: u8| false;
    let keeps: [&dyn Fn(u8) -> bool; 5] = [&unreserved, &component, &form, &path, &nothing];
    for keep in keeps {
        for upper in [true, false] {
            for plus in [false, true] {
                push(percent(v, keep, upper, plus), Encoding::Percent);
            }
        }
    }
    push(hex::encode(v).into_bytes(), Encoding::Hex);
    push(hex::encode_upper(v).into_bytes(), Encoding::Hex);
}

/// A JSON string body with every non-ASCII character escaped (`\u00e9`, surrogate pairs).
fn json_ascii(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

fn percent(v: &[u8], keep: &dyn Fn(u8) -> bool, upper: bool, plus: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 3);
    for &b in v {
        if plus && b == b' ' {
            out.push(b'+');
        } else if keep(b) {
            out.push(b);
        } else if upper {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.extend_from_slice(format!("%{b:02x}").as_bytes());
        }
    }
    out
}

/// Scrubs a stream of server-sent events, event by event, whatever the chunks: an event is
/// held until its end, then its decoded JSON data and its raw text are scrubbed. The output
/// does not depend on where the chunks were cut.
pub struct SseScrubber {
    scrubber: Arc<Scrubber>,
    buf: Vec<u8>,
    max_event: usize,
}

/// An event grew past the limit without ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTooLarge;

impl SseScrubber {
    pub fn new(scrubber: Arc<Scrubber>, max_event: usize) -> Self {
        SseScrubber { scrubber, buf: Vec::new(), max_event }
    }

    /// Takes a chunk; returns what can be passed on, with what each complete event held.
    pub fn push(&mut self, chunk: &[u8], found: &mut Vec<Found>) -> Result<Vec<u8>, EventTooLarge> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some((body, whole)) = crate::mcp::upstream::event_end(&self.buf) {
            let event: Vec<u8> = self.buf.drain(..whole).collect();
            let mut f = Found::default();
            out.extend_from_slice(&self.event(event.get(..body).unwrap_or_default(), &mut f));
            out.extend_from_slice(event.get(body..).unwrap_or_default());
            if !f.is_empty() {
                found.push(f);
            }
        }
        if self.buf.len() > self.max_event {
            return Err(EventTooLarge);
        }
        Ok(out)
    }

    /// The rest of a stream that ended in the middle of an event.
    pub fn finish(self, found: &mut Vec<Found>) -> Vec<u8> {
        let mut f = Found::default();
        let out = self.scrubber.bytes(&self.buf, &mut f).unwrap_or(self.buf);
        if !f.is_empty() {
            found.push(f);
        }
        out
    }

    fn event(&self, raw: &[u8], found: &mut Found) -> Vec<u8> {
        let text = String::from_utf8_lossy(raw);
        let data = crate::mcp::upstream::sse_data(&text);
        let new_data = match serde_json::from_str::<Value>(&data) {
            Ok(mut v) => self.scrubber.value(&mut v, found).then(|| serde_json::to_string(&v).unwrap_or_default()),
            Err(_) => self.scrubber.str(&data, found),
        };
        let rebuilt = match new_data {
            None => text.into_owned(),
            Some(d) => {
                // The data lines replaced by the scrubbed data, where the first one was.
                let mut lines = Vec::new();
                let mut placed = false;
                for line in text.lines() {
                    if line.starts_with("data:") {
                        if !placed {
                            lines.extend(d.split('\n').map(|l| format!("data: {l}")));
                            placed = true;
                        }
                    } else {
                        lines.push(line.to_owned());
                    }
                }
                lines.join("\n")
            }
        };
        self.scrubber.str(&rebuilt, found).unwrap_or(rebuilt).into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const SECRET: &str = "sk_live_4f9a8b7c6d5e";

    fn scrub(s: &Scrubber, text: &str) -> (String, Found) {
        let mut f = Found::default();
        let out = s.str(text, &mut f).unwrap_or_else(|| text.to_owned());
        (out, f)
    }

    fn one() -> Arc<Scrubber> {
        Scrubber::new(&[SECRET.as_bytes(), format!("Bearer {SECRET}").as_bytes()])
    }

    #[test]
    fn raw_and_the_header_value_are_replaced() {
        let s = one();
        let (out, f) = scrub(&s, &format!("auth: Bearer {SECRET}, again {SECRET}."));
        assert_eq!(out, "auth: [redacted], again [redacted].");
        assert_eq!(f.matches, 2);
        assert_eq!(f.encoding_names(), ["raw"]);
    }

    #[test]
    fn every_encoding_is_found() {
        let s = one();
        let v = SECRET.as_bytes();
        let cases: Vec<(String, &str)> = vec![
            (STANDARD.encode(v), "base64"),
            (STANDARD_NO_PAD.encode(v), "base64"),
            (URL_SAFE_NO_PAD.encode(b"\xfb\xff".iter().chain(v).copied().collect::<Vec<u8>>()), "base64url"),
            (hex::encode(v), "hex"),
            (hex::encode_upper(v), "hex"),
        ];
        for (text, enc) in &cases {
            let (out, f) = scrub(&s, &format!("x{text}y"));
            assert!(!out.contains(text.as_str()), "{enc}: {out}");
            // Where the two alphabets agree, the pattern is counted as `base64`.
            let names = f.encoding_names();
            assert!(names.contains(enc) || (*enc == "base64url" && names == ["base64"]), "{enc}: {names:?}");
        }
    }

    #[test]
    fn percent_and_json_escapes_of_special_characters() {
        let secret = "p@ss w/ord+\"é\"";
        let s = Scrubber::new(&[secret.as_bytes()]);
        let forms = [
            "p%40ss%20w%2Ford%2B%22%C3%A9%22".to_owned(),
            "p%40ss%20w%2ford%2b%22%c3%a9%22".to_owned(),
            "p%40ss+w%2Ford%2B%22%C3%A9%22".to_owned(),
            "p%40ss%20w/ord%2B%22%C3%A9%22".to_owned(),
            url::form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>(),
            serde_json::to_string(secret).unwrap(),
            "p@ss w\\/ord+\\\"\\u00e9\\\"".to_owned(),
        ];
        for form in forms {
            let (out, f) = scrub(&s, &format!("<{form}>"));
            assert!(!f.is_empty(), "{form} not found");
            assert!(!out.contains(secret), "{out}");
        }
    }

    #[test]
    fn base64_inside_longer_text_at_every_alignment() {
        let s = Scrubber::new(&[SECRET.as_bytes()]);
        for prefix in ["", "a", "ab", "abc", "user:", "{\"authorization\": \"Bearer "] {
            for suffix in ["", "x", "\"}", "yz"] {
                let whole = format!("{prefix}{SECRET}{suffix}");
                for engine in [&STANDARD, &URL_SAFE, &STANDARD_NO_PAD] {
                    let text = engine.encode(&whole);
                    let (out, f) = scrub(&s, &text);
                    assert!(!f.is_empty(), "{whole:?} as {text}");
                    // What is left cannot give the secret back.
                    let back = STANDARD.decode(out.replace(REDACTED, "")).unwrap_or_default();
                    assert!(!String::from_utf8_lossy(&back).contains(SECRET));
                }
            }
        }
        // Basic: base64(user:secret), the header value too.
        let basic = format!("Basic {}", STANDARD.encode(format!("bot:{SECRET}")));
        let s = Scrubber::new(&[SECRET.as_bytes(), basic.as_bytes()]);
        assert_eq!(scrub(&s, &basic).0, REDACTED);
        assert!(!scrub(&s, &STANDARD.encode(format!("bot:{SECRET}"))).1.is_empty());
    }

    #[test]
    fn short_patterns_are_not_searched() {
        let s = Scrubber::new(&[b"abc"]);
        assert_eq!(scrub(&s, "abc abc").1.matches, 0, "a 3-byte value would match everywhere");
        // Its hex (6) and base64 (4) are short too; only `%61%62%63` is long enough.
        assert_eq!(s.longest(), 9);
        let s = Scrubber::new(&[b"abcd", b"Bearer abcd"]);
        assert_eq!(scrub(&s, "Bearer abcd").0, REDACTED, "the full header value is long enough");
        assert_eq!(scrub(&s, &hex::encode("abcd")).0, REDACTED, "its hex is 8 characters");
        assert!(Scrubber::new(&[b""]).longest() == 0);
    }

    #[test]
    fn json_values_strings_and_keys() {
        let s = one();
        let mut v = json!({
            "content": [{"type": "text", "text": format!("headers: {{\"authorization\": \"Bearer {SECRET}\"}}")}],
            format!("k-{SECRET}"): 1,
            "n": [1, true, null, STANDARD.encode(SECRET)],
        });
        let mut f = Found::default();
        assert!(s.value(&mut v, &mut f));
        let text = v.to_string();
        assert!(!text.contains(SECRET) && !text.contains(&STANDARD.encode(SECRET)), "{text}");
        assert_eq!(f.matches, 3);
        let mut same = json!({"a": "nothing here"});
        assert!(!s.value(&mut same, &mut Found::default()));
    }

    #[test]
    fn a_json_escape_is_defeated_by_decoding() {
        let s = one();
        let escaped = SECRET.chars().map(|c| format!("\\u{:04x}", c as u32)).collect::<String>();
        let mut v: Value = serde_json::from_str(&format!("{{\"t\": \"{escaped}\"}}")).unwrap();
        let mut f = Found::default();
        assert!(s.value(&mut v, &mut f));
        assert_eq!(v, json!({"t": REDACTED}));
    }

    #[test]
    fn sse_events_are_scrubbed_in_their_decoded_data() {
        let s = one();
        let escaped = SECRET.chars().map(|c| format!("\\u{:04x}", c as u32)).collect::<String>();
        let input = format!(
            "id: 1\ndata: {{\"m\": \"{escaped}\"}}\n\n: comment {SECRET}\n\ndata: plain {}\n\n",
            &SECRET[..4].to_owned().chars().chain(SECRET[4..].chars()).collect::<String>()
        );
        let mut found = Vec::new();
        let mut sse = SseScrubber::new(s.clone(), 1 << 20);
        let mut out = sse.push(input.as_bytes(), &mut found).unwrap();
        out.extend(sse.finish(&mut found));
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out, "id: 1\ndata: {\"m\":\"[redacted]\"}\n\n: comment [redacted]\n\ndata: plain [redacted]\n\n");
        assert_eq!(found.len(), 3);
    }

    #[test]
    fn an_event_that_never_ends_is_refused() {
        let mut sse = SseScrubber::new(one(), 16);
        assert_eq!(sse.push(b"data: 0123456789abcdefgh", &mut Vec::new()), Err(EventTooLarge));
    }

    fn streamed(s: &Arc<Scrubber>, input: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut sse = SseScrubber::new(s.clone(), usize::MAX);
        let mut found = Vec::new();
        let mut out = Vec::new();
        let mut at = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        cuts.sort_unstable();
        for c in cuts {
            out.extend(sse.push(&input[at..c.max(at)], &mut found).unwrap());
            at = c.max(at);
        }
        out.extend(sse.push(&input[at..], &mut found).unwrap());
        out.extend(sse.finish(&mut found));
        out
    }

    fn pieces() -> impl Strategy<Value = String> {
        let b64 = STANDARD.encode(SECRET);
        let hexed = hex::encode(SECRET);
        prop::collection::vec(
            prop_oneof![
                Just(SECRET.to_owned()),
                Just(format!("Bearer {SECRET}")),
                Just(b64),
                Just(hexed),
                Just("\n".to_owned()),
                Just("\n\n".to_owned()),
                Just("\r\n".to_owned()),
                Just("data: ".to_owned()),
                Just("{\"k\": \"".to_owned()),
                Just("\"}".to_owned()),
                Just("\\u0073".to_owned()),
                "[a-z0-9 :_]{0,12}",
            ],
            0..24,
        )
        .prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn chunks_do_not_change_the_output(input in pieces(), cuts in prop::collection::vec(any::<usize>(), 0..12)) {
            let s = one();
            let whole = streamed(&s, input.as_bytes(), &[]);
            let split = streamed(&s, input.as_bytes(), &cuts);
            prop_assert_eq!(&whole, &split);
            prop_assert!(!s.contains(&split), "{}", String::from_utf8_lossy(&split));
            // And byte by byte.
            let all: Vec<usize> = (0..input.len()).collect();
            prop_assert_eq!(&whole, &streamed(&s, input.as_bytes(), &all));
        }

        #[test]
        fn no_false_negative_inside_larger_text(prefix in "[ -~]{0,40}", suffix in "[ -~]{0,40}") {
            let s = one();
            let text = format!("{prefix}{SECRET}{suffix}");
            let (out, f) = scrub(&s, &text);
            prop_assert!(!f.is_empty());
            prop_assert!(!out.contains(SECRET));
            let b64 = STANDARD.encode(&text);
            let (out, f) = scrub(&s, &b64);
            prop_assert!(!f.is_empty(), "{}", b64);
            let back = STANDARD.decode(out.replace(REDACTED, "")).unwrap_or_default();
            prop_assert!(!String::from_utf8_lossy(&back).contains(SECRET));
        }
    }
}
