//! What the gateway relays besides answers: the messages an upstream sends while a request is
//! on its way (on that request's stream), and what it says outside any request (on the
//! session's stream, `GET /mcp/{name}`).
//!
//! - [`respond`] answers a request as JSON while nothing but the answer comes, and turns the
//!   answer into an event stream the moment the upstream sends something before it (progress,
//!   a log message, a request of its own): the fast path costs nothing more than before.
//! - [`Outbox`] is a session's stream: every event has an id of the gateway's own; the last
//!   [`OUTBOX_EVENTS`] are kept so a client that reconnects with `Last-Event-ID` gets what it
//!   missed, in order, then what comes next.
//! - [`ServerRequests`] are the requests an upstream sent the client, under ids of the
//!   gateway's own (so answers can never be confused between streams and the client can only
//!   answer what was asked), until the client answers.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};

/// Events a session's stream keeps for clients that reconnect.
pub const OUTBOX_EVENTS: usize = 512;
/// Requests of an upstream waiting for the client's answer, per session, at most; past it the
/// oldest is dropped (its server gets no answer from this client, as if it had gone away).
const MAX_SERVER_REQUESTS: usize = 256;

/// One SSE event carrying a JSON-RPC message.
pub fn event(id: Option<&str>, message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(message.len() + 32);
    out.extend_from_slice(b"event: message\n");
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(message);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Answers a request: `work` produces the final response; whatever arrives on `early` before
/// it are messages for the client on this request's stream. Nothing early: `work`'s response
/// as it is (JSON or one event). Something early: an event stream of those messages, then the
/// answer as the last event. A client that goes away drops the stream, and with it `work`.
pub async fn respond<F>(work: F, mut early: mpsc::UnboundedReceiver<Value>) -> Response
where
    F: Future<Output = Response> + Send + 'static,
{
    let mut work = Box::pin(work);
    let first = tokio::select! {
        biased;
        m = early.recv() => m,
        resp = &mut work => {
            // Sent just before the answer, in the same read: still ahead of it.
            match early.try_recv() {
                Ok(m) => return stream_of(vec![m], early, Box::pin(async move { resp })),
                Err(_) => return resp,
            }
        }
    };
    match first {
        Some(m) => stream_of(vec![m], early, work),
        // The sender went away without a message: only the answer comes.
        None => work.await,
    }
}

type Work = std::pin::Pin<Box<dyn Future<Output = Response> + Send>>;

fn stream_of(first: Vec<Value>, early: mpsc::UnboundedReceiver<Value>, work: Work) -> Response {
    enum State {
        Relaying(Vec<Value>, mpsc::UnboundedReceiver<Value>, Work),
        Done,
    }
    let stream = futures_util::stream::unfold(State::Relaying(first, early, work), |state| async move {
        let State::Relaying(mut queued, mut early, mut work) = state else { return None };
        if let Some(m) = queued.pop() {
            let bytes = serde_json::to_vec(&m).unwrap_or_default();
            return Some((Ok::<_, std::io::Error>(event(None, &bytes)), State::Relaying(queued, early, work)));
        }
        tokio::select! {
            biased;
            Some(m) = early.recv() => {
                let bytes = serde_json::to_vec(&m).unwrap_or_default();
                Some((Ok(event(None, &bytes)), State::Relaying(queued, early, work)))
            }
            resp = &mut work => {
                let mut out = Vec::new();
                while let Ok(m) = early.try_recv() {
                    out.extend_from_slice(&event(None, &serde_json::to_vec(&m).unwrap_or_default()));
                }
                out.extend_from_slice(&as_event(resp).await);
                Some((Ok(Bytes::from(out)), State::Done))
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// [`respond`] for a request of a session, whose stream the client may resume: the work runs
/// on its own (a client that loses the stream does not end the request), and once it streams,
/// every event is kept in `streams` under an id `r{stream}.{n}`, so a `GET` with that
/// `Last-Event-ID` gets the rest ([`Streams::resume`]).
pub async fn respond_resumable<F>(work: F, mut early: mpsc::UnboundedReceiver<Value>, streams: Arc<Streams>) -> Response
where
    F: Future<Output = Response> + Send + 'static,
{
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<Result<Response, Arc<StreamLog>>>();
    tokio::spawn(async move {
        let mut work = Box::pin(work);
        let (first, done) = tokio::select! {
            biased;
            m = early.recv() => (m, None),
            resp = &mut work => match early.try_recv() {
                Ok(m) => (Some(m), Some(resp)),
                Err(_) => {
                    let _ = first_tx.send(Ok(resp));
                    return;
                }
            },
        };
        let Some(first) = first else {
            let _ = first_tx.send(Ok(work.await));
            return;
        };
        let log = streams.open();
        let _ = first_tx.send(Err(log.clone()));
        log.push(&serde_json::to_vec(&first).unwrap_or_default());
        let resp = match done {
            Some(resp) => resp,
            None => loop {
                tokio::select! {
                    biased;
                    Some(m) = early.recv() => log.push(&serde_json::to_vec(&m).unwrap_or_default()),
                    resp = &mut work => break resp,
                }
            },
        };
        while let Ok(m) = early.try_recv() {
            log.push(&serde_json::to_vec(&m).unwrap_or_default());
        }
        log.push(&as_data(resp).await);
        log.finish();
    });
    match first_rx.await {
        Ok(Ok(resp)) => resp,
        Ok(Err(log)) => sse(log.reader(0)),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// An event stream response of `events`.
pub fn sse<S>(events: S) -> Response
where
    S: futures_util::Stream<Item = Bytes> + Send + 'static,
{
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(events.map(Ok::<_, std::io::Error>)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The JSON-RPC message of a final answer: a JSON body as it is, an event body's data.
async fn as_data(resp: Response) -> Vec<u8> {
    let is_sse = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("text/event-stream"));
    let mut body = resp.into_body().into_data_stream();
    let mut bytes = Vec::new();
    while let Some(Ok(chunk)) = body.next().await {
        bytes.extend_from_slice(&chunk);
    }
    if is_sse { crate::mcp::upstream::sse_data(&String::from_utf8_lossy(&bytes)).into_bytes() } else { bytes }
}

/// Streams of a session's requests kept for resumption: the last [`KEPT_STREAMS`].
#[derive(Default)]
pub struct Streams {
    next: AtomicU64,
    kept: Mutex<VecDeque<(u64, Arc<StreamLog>)>>,
}

/// Request streams a session keeps for clients that reconnect.
pub const KEPT_STREAMS: usize = 64;

impl Streams {
    fn open(&self) -> Arc<StreamLog> {
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let log = Arc::new(StreamLog { stream: n, state: Mutex::new((Vec::new(), false)), changed: tokio::sync::Notify::new() });
        let mut kept = self.kept.lock();
        if kept.len() >= KEPT_STREAMS {
            kept.pop_front();
        }
        kept.push_back((n, log.clone()));
        log
    }

    /// The rest of the request stream that `last_event_id` (`r{stream}.{n}`) names, after that
    /// event; `None` when it names no stream kept.
    pub fn resume(&self, last_event_id: &str) -> Option<impl futures_util::Stream<Item = Bytes> + Send + 'static> {
        let (stream, n) = last_event_id.strip_prefix('r')?.split_once('.')?;
        let (stream, n) = (stream.parse::<u64>().ok()?, n.parse::<usize>().ok()?);
        let log = self.kept.lock().iter().find(|(s, _)| *s == stream).map(|(_, l)| l.clone())?;
        Some(log.reader(n))
    }
}

/// The events of one request's stream, as sent.
pub struct StreamLog {
    stream: u64,
    /// The events (SSE bytes, with ids), and whether the answer is among them.
    state: Mutex<(Vec<Bytes>, bool)>,
    changed: tokio::sync::Notify,
}

impl StreamLog {
    fn push(&self, data: &[u8]) {
        let mut st = self.state.lock();
        let n = st.0.len() + 1;
        st.0.push(event(Some(&format!("r{}.{n}", self.stream)), data));
        drop(st);
        self.changed.notify_waiters();
    }

    fn finish(&self) {
        self.state.lock().1 = true;
        self.changed.notify_waiters();
    }

    /// The events after the `after`-th, then each as it comes, until the answer.
    fn reader(self: Arc<Self>, after: usize) -> impl futures_util::Stream<Item = Bytes> + Send + 'static {
        futures_util::stream::unfold((self, after), |(log, next)| async move {
            loop {
                let (ev, finished) = {
                    let notified = log.changed.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    let (ev, finished) = {
                        let st = log.state.lock();
                        (st.0.get(next).cloned(), st.1)
                    };
                    if ev.is_none() && !finished {
                        notified.await;
                        continue;
                    }
                    (ev, finished)
                };
                return match ev {
                    Some(ev) => Some((ev, (log, next + 1))),
                    None if finished => None,
                    None => continue,
                };
            }
        })
    }
}

/// The final answer as one event.
async fn as_event(resp: Response) -> Bytes {
    event(None, &as_data(resp).await)
}

/// A session's stream of server messages, with ids for `Last-Event-ID`.
pub struct Outbox {
    next: AtomicU64,
    kept: Mutex<VecDeque<(u64, Bytes)>>,
    live: broadcast::Sender<(u64, Bytes)>,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox { next: AtomicU64::new(1), kept: Mutex::new(VecDeque::new()), live: broadcast::channel(OUTBOX_EVENTS).0 }
    }
}

impl Outbox {
    /// Adds a message (already translated and scrubbed) to the stream.
    pub fn push(&self, message: &Value) {
        let data = serde_json::to_vec(message).unwrap_or_default();
        let mut kept = self.kept.lock();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let ev = event(Some(&id.to_string()), &data);
        if kept.len() >= OUTBOX_EVENTS {
            kept.pop_front();
        }
        kept.push_back((id, ev.clone()));
        // Under the lock, so a subscriber sees every event once: kept, or live.
        let _ = self.live.send((id, ev));
    }

    /// The events after `last` (all kept ones for a new stream: nothing, since a new stream
    /// starts now) and the live ones from here on.
    pub fn subscribe(&self, last: Option<&str>) -> (Vec<Bytes>, broadcast::Receiver<(u64, Bytes)>) {
        let kept = self.kept.lock();
        let rx = self.live.subscribe();
        let replay = match last.and_then(|l| l.trim().parse::<u64>().ok()) {
            Some(after) => kept.iter().filter(|(id, _)| *id > after).map(|(_, e)| e.clone()).collect(),
            None => Vec::new(),
        };
        (replay, rx)
    }

    /// The id of the newest event (0 before any).
    pub fn newest(&self) -> u64 {
        self.next.load(Ordering::Relaxed).saturating_sub(1)
    }
}

/// A request of the upstream's, relayed to the client under the gateway's id.
#[derive(Clone)]
pub struct ServerRequest {
    /// The id the upstream gave it.
    pub upstream_id: Value,
    pub method: String,
    /// The digest of its params (what the evidence keeps).
    pub params_sha256: String,
    pub asked: Instant,
    /// The call it happened in, if any: its tool and decision.
    pub within: Option<Within>,
    /// The decision that let it through.
    pub decision_id: Option<String>,
}

/// The call a server request happened in.
#[derive(Clone, Debug)]
pub struct Within {
    pub tool: String,
    pub decision_id: Option<String>,
}

/// A session's relayed server requests, by the gateway's id for them.
#[derive(Default)]
pub struct ServerRequests {
    next: AtomicU64,
    open: Mutex<(HashMap<String, ServerRequest>, VecDeque<String>)>,
}

impl ServerRequests {
    /// Keeps `r` and returns the id the client will see.
    pub fn open(&self, r: ServerRequest) -> Value {
        let id = format!("mgw-s-{}", self.next.fetch_add(1, Ordering::Relaxed) + 1);
        let mut g = self.open.lock();
        let (map, order) = &mut *g;
        if map.len() >= MAX_SERVER_REQUESTS
            && let Some(old) = order.pop_front()
        {
            map.remove(&old);
        }
        map.insert(id.clone(), r);
        order.push_back(id.clone());
        Value::String(id)
    }

    /// The request the client answers with `id`, taken (each is answered once).
    pub fn take(&self, id: &Value) -> Option<ServerRequest> {
        let key = id.as_str()?;
        let mut g = self.open.lock();
        let (map, order) = &mut *g;
        let r = map.remove(key)?;
        order.retain(|k| k != key);
        Some(r)
    }

    /// Whether a request of the upstream's asked less than `within` ago still waits for the
    /// client (a person answering an elicitation takes minutes, not the upstream's timeout).
    pub fn waiting(&self, within: std::time::Duration) -> bool {
        self.open.lock().0.values().any(|r| r.asked.elapsed() < within)
    }

    /// The gateway's id of the request the upstream calls `upstream_id` (for its cancel).
    pub fn client_id_of(&self, upstream_id: &Value) -> Option<Value> {
        let g = self.open.lock();
        g.0.iter().find(|(_, r)| &r.upstream_id == upstream_id).map(|(k, _)| Value::String(k.clone()))
    }
}

/// Who is listening: shared by the session and its pump, so a pump ends with its session.
pub type SharedOutbox = Arc<Outbox>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconnecting_client_gets_what_it_missed_and_nothing_twice() {
        let o = Outbox::default();
        o.push(&serde_json::json!({"n": 1}));
        o.push(&serde_json::json!({"n": 2}));
        let (replay, mut rx) = o.subscribe(Some("1"));
        assert_eq!(replay.len(), 1);
        assert!(String::from_utf8_lossy(&replay[0]).contains("id: 2\n"));
        o.push(&serde_json::json!({"n": 3}));
        let (id, ev) = rx.try_recv().unwrap();
        assert_eq!(id, 3);
        assert!(String::from_utf8_lossy(&ev).contains("\"n\":3"));
        let (fresh, _) = o.subscribe(None);
        assert!(fresh.is_empty(), "a new stream starts now");
        assert_eq!(o.newest(), 3);
    }

    #[tokio::test]
    async fn a_request_stream_resumes_after_the_last_event_the_client_saw() {
        let streams = Streams::default();
        let log = streams.open();
        log.push(b"{\"n\":1}");
        log.push(b"{\"n\":2}");
        let rest = streams.resume("r1.1").expect("the stream is kept");
        log.push(b"{\"n\":3}");
        log.finish();
        let got: Vec<String> = rest.map(|b| String::from_utf8_lossy(&b).into_owned()).collect().await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].contains("id: r1.2\n") && got[0].contains("\"n\":2"));
        assert!(got[1].contains("id: r1.3\n") && got[1].contains("\"n\":3"));
        assert!(streams.resume("r9.1").is_none() && streams.resume("7").is_none() && streams.resume("r1.x").is_none());
    }

    #[test]
    fn a_server_request_is_answered_once_under_the_gateway_id() {
        let s = ServerRequests::default();
        let r = ServerRequest {
            upstream_id: serde_json::json!(7),
            method: "sampling/createMessage".into(),
            params_sha256: String::new(),
            asked: Instant::now(),
            within: None,
            decision_id: None,
        };
        let id = s.open(r);
        assert_eq!(s.client_id_of(&serde_json::json!(7)), Some(id.clone()));
        assert!(s.take(&serde_json::json!(7)).is_none(), "the upstream's id is not the client's");
        assert_eq!(s.take(&id).unwrap().upstream_id, serde_json::json!(7));
        assert!(s.take(&id).is_none(), "answered once");
    }
}
