//! The wire form of [`Change`] notifications on the `mandate_changes` channel.
//!
//! A payload is the serde form of the change with two more fields: `origin`, the id of the
//! [`PgStore`](crate::PgStore) that sent it (its own listener drops it), and `schema`, the
//! schema the change was made in (a listener drops changes made in another schema of the same
//! database: notification channels are database-wide). PostgreSQL refuses payloads of 8,000
//! bytes or more, so every payload is kept under [`MAX_PAYLOAD`]: a long list of tasks goes out
//! in several notifications, and a change naming a single record too long to fit goes out as
//! [`Change::Resync`].

use mandate_store::Change;
use serde_json::Value;

/// The notification channel every Mandate store writes to and listens on.
pub(crate) const CHANNEL: &str = "mandate_changes";

/// The largest payload sent, in bytes.
pub(crate) const MAX_PAYLOAD: usize = 7_900;

/// Who is sending: the payloads of one store.
#[derive(Clone, Debug)]
pub(crate) struct Envelope {
    pub(crate) origin: String,
    pub(crate) schema: String,
}

/// What a received payload means to a listener.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// A change another store made in our schema.
    Change(Change),
    /// Our own change, or one made in another schema.
    Ignore,
    /// A payload that cannot be read.
    Unreadable,
}

impl Envelope {
    /// The payloads announcing `change`, each under [`MAX_PAYLOAD`] bytes.
    pub(crate) fn payloads(&self, change: &Change) -> Vec<String> {
        match change {
            Change::Tasks(ids) => self.task_payloads(ids),
            other => vec![self.fitting(other)],
        }
    }

    /// `change` as one payload, or a resync if it does not fit.
    fn fitting(&self, change: &Change) -> String {
        match self.encode(change) {
            Some(p) if p.len() <= MAX_PAYLOAD => p,
            _ => self.resync(),
        }
    }

    fn resync(&self) -> String {
        // A resync always fits: the envelope is short.
        self.encode(&Change::Resync).unwrap_or_default()
    }

    /// `Tasks` payloads holding every id once, in order, as many per payload as fit.
    fn task_payloads(&self, ids: &[String]) -> Vec<String> {
        if ids.is_empty() {
            return Vec::new();
        }
        // `{..."id":[]}` plus each id's JSON string and a comma between two.
        let base = self.encode(&Change::Tasks(Vec::new())).map_or(MAX_PAYLOAD, |p| p.len());
        let mut out = Vec::new();
        let mut chunk: Vec<String> = Vec::new();
        let mut len = base;
        let mut resync_sent = false;
        for id in ids {
            let id_len = serde_json::to_string(id).map_or(MAX_PAYLOAD, |s| s.len());
            if base + id_len > MAX_PAYLOAD {
                // This id can never fit: everyone re-reads everything instead.
                if !resync_sent {
                    out.push(self.resync());
                    resync_sent = true;
                }
                continue;
            }
            let added = id_len + usize::from(!chunk.is_empty());
            if len + added > MAX_PAYLOAD {
                out.push(self.fitting(&Change::Tasks(std::mem::take(&mut chunk))));
                len = base;
            }
            len += id_len + usize::from(!chunk.is_empty());
            chunk.push(id.clone());
        }
        if !chunk.is_empty() {
            out.push(self.fitting(&Change::Tasks(chunk)));
        }
        out
    }

    fn encode(&self, change: &Change) -> Option<String> {
        let mut value = serde_json::to_value(change).ok()?;
        let fields = value.as_object_mut()?;
        fields.insert("origin".into(), Value::String(self.origin.clone()));
        fields.insert("schema".into(), Value::String(self.schema.clone()));
        serde_json::to_string(&value).ok()
    }

    /// Reads a payload received on [`CHANNEL`].
    pub(crate) fn receive(&self, payload: &str) -> Received {
        let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(payload) else { return Received::Unreadable };
        let (Some(Value::String(origin)), Some(Value::String(schema))) = (fields.remove("origin"), fields.remove("schema")) else {
            return Received::Unreadable;
        };
        if schema != self.schema || origin == self.origin {
            return Received::Ignore;
        }
        match serde_json::from_value::<Change>(Value::Object(fields)) {
            Ok(change) => Received::Change(change),
            Err(_) => Received::Unreadable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(origin: &str) -> Envelope {
        Envelope { origin: origin.into(), schema: "mandate".into() }
    }

    #[test]
    fn payloads_round_trip_between_stores() {
        let (a, b) = (envelope("a"), envelope("b"));
        for change in [
            Change::Agent("bot".into()),
            Change::Tasks(vec!["t1".into(), "t2".into()]),
            Change::ApiTokens,
            Change::Issuers,
            Change::Entities,
            Change::Meta("signing_keys".into()),
            Change::Approval("apr_1".into()),
            Change::Secret("github".into()),
            Change::Resync,
        ] {
            let payloads = a.payloads(&change);
            assert_eq!(payloads.len(), 1, "{change:?}");
            assert_eq!(b.receive(&payloads[0]), Received::Change(change.clone()));
            assert_eq!(a.receive(&payloads[0]), Received::Ignore, "own changes are dropped");
        }
        let other_schema = Envelope { origin: "c".into(), schema: "other".into() };
        assert_eq!(b.receive(&other_schema.payloads(&Change::ApiTokens)[0]), Received::Ignore, "other schemas are dropped");
        assert!(a.payloads(&Change::Tasks(Vec::new())).is_empty());
    }

    #[test]
    fn long_task_lists_are_chunked_under_the_limit_in_order() {
        let (a, b) = (envelope("0123456789abcdef"), envelope("b"));
        let ids: Vec<String> = (0..5_000).map(|i| format!("tsk_{i:06}_\"ü\\{}", "x".repeat(i % 40))).collect();
        let payloads = a.payloads(&Change::Tasks(ids.clone()));
        assert!(payloads.len() > 10);
        let mut back = Vec::new();
        for p in &payloads {
            assert!(p.len() <= MAX_PAYLOAD, "{}", p.len());
            let Received::Change(Change::Tasks(chunk)) = b.receive(p) else { panic!("not tasks: {p}") };
            back.extend(chunk);
        }
        assert_eq!(back, ids);
        // Chunks are full: each but the last would overflow with the next id added.
        assert!(payloads[0].len() > MAX_PAYLOAD - 100);
    }

    #[test]
    fn what_cannot_fit_becomes_a_resync() {
        let (a, b) = (envelope("a"), envelope("b"));
        let huge = "k".repeat(MAX_PAYLOAD);
        assert_eq!(b.receive(&a.payloads(&Change::Meta(huge.clone()))[0]), Received::Change(Change::Resync));
        let payloads = a.payloads(&Change::Tasks(vec!["t1".into(), huge.clone(), huge, "t2".into()]));
        let got: Vec<Received> = payloads.iter().map(|p| b.receive(p)).collect();
        assert_eq!(got, [Received::Change(Change::Resync), Received::Change(Change::Tasks(vec!["t1".into(), "t2".into()]))]);
    }

    #[test]
    fn unreadable_payloads_are_reported() {
        let b = envelope("b");
        for p in ["", "garbage", "[]", r#"{"change":"agent","id":"x"}"#, r#"{"origin":"a","schema":"mandate","change":"unknown"}"#] {
            assert_eq!(b.receive(p), Received::Unreadable, "{p}");
        }
    }
}
