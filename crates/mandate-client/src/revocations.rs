//! Following the control plane's revocation feed (`GET /v1/revocations`, Server-Sent Events),
//! for an enforcement gateway that runs apart from it.
//!
//! [`subscribe`] returns a [`Subscriber`] whose [`next`](Subscriber::next) yields the feed's
//! events in order and never ends: when the connection is lost it says so
//! ([`FeedEvent::Disconnected`]), waits with capped exponential backoff (100 ms doubling to
//! 5 s) and reconnects with `Last-Event-ID` set to the last entry seen, so the server replays
//! exactly what was missed, or sends a reset when it no longer can. A server that restarted
//! has another epoch; its sequence numbers have nothing to do with the old ones, so an epoch
//! change is a reset too. After a [`FeedEvent::Reset`] the subscriber must treat whatever it
//! derived from the feed as stale and re-check it (every open session's task and agent).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mandate_proto::gateway::{EVENT_HELLO, EVENT_RESET, EVENT_REVOCATION, FeedPosition, RevocationEntry};
use reqwest::header::{ACCEPT, HeaderValue};

use crate::{Client, ClientError, error_of, root_cause};

/// The first wait before reconnecting.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait before reconnecting.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A connection silent for this long is taken for dead (the server sends a keep-alive every
/// 15 s).
pub const READ_TIMEOUT: Duration = Duration::from_secs(45);

/// The longest line the parser accepts; a longer one is a broken or hostile server.
const MAX_LINE: usize = 1 << 20;

/// What [`Subscriber::next`] yields.
#[derive(Debug)]
#[non_exhaustive]
pub enum FeedEvent {
    /// Connected (again): the server's epoch and the last sequence number it had published.
    Hello(FeedPosition),
    /// Entries may have been missed (the server no longer held them, or it is another
    /// process): re-check everything derived from the feed. The feed continues after `seq`.
    Reset(FeedPosition),
    /// A task or agent changed; `seq` is one more than the previous entry's.
    Revocation(RevocationEntry),
    /// The connection was lost or could not be made; the next attempt is in `retry_in`.
    /// Entries published meanwhile come after the reconnect (or a reset). A refusal (a token
    /// that is not valid, or not `pep`/`admin`) is retried too; stop on its `error.code()` if
    /// it will not change.
    Disconnected { error: ClientError, retry_in: Duration },
}

/// Whether a subscriber is connected right now, readable from any task.
#[derive(Debug, Clone)]
pub struct Connectivity(Arc<AtomicBool>);

impl Connectivity {
    /// True from the server's `hello` until the connection is lost.
    pub fn is_connected(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A subscription to the revocation feed; see the module documentation.
pub struct Subscriber {
    client: Client,
    http: reqwest::Client,
    /// The sequence number of the last entry seen (or skipped by a reset).
    last: Option<u64>,
    epoch: Option<String>,
    stream: Option<Stream>,
    pending: VecDeque<FeedEvent>,
    backoff: Duration,
    retry_at: Option<tokio::time::Instant>,
    connected: Arc<AtomicBool>,
    /// The reset this client made up when the epoch changed, until an entry follows: the
    /// server's own reset at the same position says nothing new.
    restart_reset: Option<FeedPosition>,
}

/// Follows the revocation feed of `client`'s server with `client`'s token (a `pep` or `admin`
/// token). `after`: the last sequence number already handled in the server's current epoch;
/// `None` starts with what is published from now on.
pub fn subscribe(client: &Client, after: Option<u64>) -> Subscriber {
    // A stream has no total timeout; a dead connection is noticed by the read timeout instead.
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(READ_TIMEOUT)
        .build()
        .unwrap_or_else(|_| client.http.clone());
    Subscriber {
        client: client.clone(),
        http,
        last: after,
        epoch: None,
        stream: None,
        pending: VecDeque::new(),
        backoff: BACKOFF_MIN,
        retry_at: None,
        connected: Arc::new(AtomicBool::new(false)),
        restart_reset: None,
    }
}

impl Subscriber {
    /// The next event. Never ends; cancel safe (an event is lost only if it was never
    /// returned, and then it is read again).
    pub async fn next(&mut self) -> FeedEvent {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return event;
            }
            let Some(stream) = self.stream.as_mut() else {
                if let Some(at) = self.retry_at {
                    tokio::time::sleep_until(at).await;
                    self.retry_at = None;
                }
                match self.connect().await {
                    Ok(stream) => self.stream = Some(stream),
                    Err(error) => return self.disconnected(error),
                }
                continue;
            };
            match stream.next_event().await {
                Ok(Some(event)) => self.handle(event),
                Ok(None) => {
                    let error = ClientError::Connect { url: self.client.base.clone(), reason: "the server closed the stream".into() };
                    return self.disconnected(error);
                }
                Err(error) => return self.disconnected(error),
            }
        }
    }

    /// Whether the subscriber is connected right now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// A handle that says whether this subscriber is connected, for another task.
    pub fn connectivity(&self) -> Connectivity {
        Connectivity(self.connected.clone())
    }

    /// The sequence number of the last entry seen (what a reconnect sends as `Last-Event-ID`).
    pub fn last_seq(&self) -> Option<u64> {
        self.last
    }

    /// The server's epoch, once it has said hello.
    pub fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    async fn connect(&self) -> Result<Stream, ClientError> {
        let mut req =
            self.http.get(format!("{}/v1/revocations", self.client.base)).header(ACCEPT, HeaderValue::from_static("text/event-stream"));
        if let Some(token) = &self.client.token {
            req = req.bearer_auth(token);
        }
        if let Some(last) = self.last {
            req = req.header("last-event-id", last.to_string());
        }
        let resp = req.send().await.map_err(|e| ClientError::Connect { url: self.client.base.clone(), reason: root_cause(&e) })?;
        if !resp.status().is_success() {
            return Err(error_of(resp).await);
        }
        Ok(Stream { resp, parser: Parser::default(), events: VecDeque::new() })
    }

    fn disconnected(&mut self, error: ClientError) -> FeedEvent {
        self.stream = None;
        self.connected.store(false, Ordering::Release);
        let retry_in = self.backoff;
        self.retry_at = Some(tokio::time::Instant::now() + retry_in);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        FeedEvent::Disconnected { error, retry_in }
    }

    fn protocol_error(&mut self, what: &str) {
        let error = ClientError::Unexpected { status: 200, body: format!("the revocation feed sent {what}") };
        let event = self.disconnected(error);
        self.pending.push_back(event);
    }

    fn handle(&mut self, event: SseEvent) {
        match event.name.as_str() {
            EVENT_HELLO => {
                let Ok(hello) = serde_json::from_str::<FeedPosition>(&event.data) else {
                    return self.protocol_error("a `hello` that does not parse");
                };
                self.connected.store(true, Ordering::Release);
                self.backoff = BACKOFF_MIN;
                let restarted = self.epoch.as_ref().is_some_and(|e| *e != hello.epoch);
                self.epoch = Some(hello.epoch.clone());
                self.pending.push_back(FeedEvent::Hello(hello.clone()));
                if restarted {
                    // The resume point was another process's: anything may have been missed.
                    // Entries the server replays up to its head are then redundant, not wrong.
                    self.last = Some(hello.seq);
                    self.restart_reset = Some(hello.clone());
                    self.pending.push_back(FeedEvent::Reset(hello));
                } else if self.last.is_none() {
                    self.last = Some(hello.seq);
                }
            }
            EVENT_RESET => {
                let Ok(reset) = serde_json::from_str::<FeedPosition>(&event.data) else {
                    return self.protocol_error("a `reset` that does not parse");
                };
                if self.restart_reset.take().is_some_and(|made_up| made_up == reset) {
                    return;
                }
                self.last = Some(reset.seq);
                self.pending.push_back(FeedEvent::Reset(reset));
            }
            EVENT_REVOCATION => {
                let entry = match serde_json::from_str::<RevocationEntry>(&event.data) {
                    Ok(entry) if event.id.as_deref().is_none_or(|id| id == entry.seq.to_string()) => entry,
                    _ => {
                        // An entry this client cannot read is an entry missed.
                        let seq = event.id.as_deref().and_then(|id| id.parse().ok());
                        match (seq, self.epoch.clone()) {
                            (Some(seq), Some(epoch)) => {
                                self.last = Some(seq);
                                self.pending.push_back(FeedEvent::Reset(FeedPosition { epoch, seq }));
                            }
                            _ => self.protocol_error("an entry that does not parse"),
                        }
                        return;
                    }
                };
                self.restart_reset = None;
                match self.last {
                    Some(last) if entry.seq <= last => return,
                    Some(last) if entry.seq > last + 1 => {
                        // The server promises no gaps; if one shows anyway, say so.
                        let epoch = self.epoch.clone().unwrap_or_default();
                        self.pending.push_back(FeedEvent::Reset(FeedPosition { epoch, seq: entry.seq - 1 }));
                    }
                    _ => {}
                }
                self.last = Some(entry.seq);
                self.pending.push_back(FeedEvent::Revocation(entry));
            }
            // Other events are for other clients.
            _ => {}
        }
    }
}

/// One open response, parsed into events.
struct Stream {
    resp: reqwest::Response,
    parser: Parser,
    events: VecDeque<SseEvent>,
}

impl Stream {
    async fn next_event(&mut self) -> Result<Option<SseEvent>, ClientError> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(Some(event));
            }
            let chunk =
                self.resp.chunk().await.map_err(|e| ClientError::Connect { url: self.resp.url().to_string(), reason: root_cause(&e) })?;
            let Some(chunk) = chunk else { return Ok(None) };
            self.parser.feed(&chunk, &mut self.events).map_err(|reason| ClientError::Unexpected { status: 200, body: reason })?;
        }
    }
}

/// One dispatched Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `message` when none was given.
    pub name: String,
    /// Every `data:` line of the event, joined by `\n`.
    pub data: String,
    /// The `id:` field of this event, if it had one.
    pub id: Option<String>,
}

/// An incremental parser for `text/event-stream` (the WHATWG HTML "server-sent events"
/// interpretation rules): lines end in CRLF, LF or CR, also when the CR and LF arrive in
/// different chunks; `:` starts a comment; a field's value loses one leading space; several
/// `data:` lines join with `\n`; an empty line dispatches an event that has data.
#[derive(Debug, Default)]
pub struct Parser {
    line: Vec<u8>,
    /// The last byte fed was a CR, so an LF that follows ends nothing.
    after_cr: bool,
    name: String,
    data: String,
    has_data: bool,
    id: Option<String>,
}

impl Parser {
    /// Feeds bytes; complete events are appended to `out`. Err for a line over 1 MiB.
    pub fn feed(&mut self, bytes: &[u8], out: &mut VecDeque<SseEvent>) -> Result<(), String> {
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\r' | b'\n' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    self.line_done(&line, out);
                }
                _ => {
                    self.after_cr = false;
                    if self.line.len() >= MAX_LINE {
                        return Err("a line longer than 1 MiB".into());
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], out: &mut VecDeque<SseEvent>) {
        if line.is_empty() {
            if self.has_data {
                let name = if self.name.is_empty() { "message".to_owned() } else { std::mem::take(&mut self.name) };
                out.push_back(SseEvent { name, data: std::mem::take(&mut self.data), id: self.id.take() });
            }
            self.name.clear();
            self.data.clear();
            self.has_data = false;
            self.id = None;
            return;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some(("", _)) => return,
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => value.clone_into(&mut self.name),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            // `retry` and unknown fields are ignored: the backoff is this client's.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = Parser::default();
        let mut out = VecDeque::new();
        for c in chunks {
            p.feed(c, &mut out).unwrap();
        }
        out.into_iter().collect()
    }

    fn ev(name: &str, data: &str, id: Option<&str>) -> SseEvent {
        SseEvent { name: name.into(), data: data.into(), id: id.map(Into::into) }
    }

    #[test]
    fn fields_comments_and_multi_line_data() {
        let text = b": keep-alive\n\nevent: hello\ndata: {\"a\":1}\n\nid: 7\nevent:revocation\ndata:one\ndata: two\ndata\n\n";
        assert_eq!(parse(&[text]), vec![ev("hello", "{\"a\":1}", None), ev("revocation", "one\ntwo\n", Some("7"))]);
    }

    #[test]
    fn every_line_ending_and_every_split_point_give_the_same_events() {
        let want = vec![ev("revocation", "x\ny", Some("1")), ev("message", " z", None)];
        for eol in ["\n", "\r\n", "\r"] {
            let text = format!(": c{eol}id: 1{eol}event: revocation{eol}data: x{eol}data: y{eol}{eol}data:  z{eol}{eol}");
            let bytes = text.as_bytes();
            assert_eq!(parse(&[bytes]), want, "{eol:?}");
            for split in 0..bytes.len() {
                assert_eq!(parse(&[&bytes[..split], &bytes[split..]]), want, "{eol:?} split at {split}");
            }
        }
    }

    #[test]
    fn an_event_without_data_is_not_dispatched_and_forgets_its_fields() {
        assert_eq!(parse(&[b"event: reset\nid: 3\n\ndata: d\n\n"]), vec![ev("message", "d", None)]);
        // An unfinished event is held until its empty line.
        assert_eq!(parse(&[b"data: d\n"]), vec![]);
    }

    #[test]
    fn an_overlong_line_is_refused() {
        let mut p = Parser::default();
        let mut out = VecDeque::new();
        assert!(p.feed(&vec![b'a'; MAX_LINE + 1], &mut out).is_err());
    }
}
