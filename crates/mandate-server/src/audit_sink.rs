//! Group commit for the audit trail.
//!
//! Every handler that records an event waits until the event is durable before it answers.
//! One writer task takes whatever has queued while the previous batch was being written and
//! appends it in one transaction, so one fsync covers many events: the cost of durability is
//! paid per batch, not per event. After each batch, and on a timer, the writer signs a
//! checkpoint of the chain head.

use std::sync::Arc;
use std::time::Duration;

use mandate_audit::{ChainHead, NewEvent, sign_checkpoint};
use mandate_core::Clock;
use mandate_store::Store;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::keys::KeyManager;
use crate::metrics::Metrics;

/// The audit trail could not make an event durable. Whatever it recorded must fail closed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the audit trail is unavailable")]
pub struct AuditUnavailable;

struct Pending {
    event: NewEvent,
    done: oneshot::Sender<Result<u64, AuditUnavailable>>,
}

/// The handle handlers record events through. Cloning is cheap.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<Pending>,
}

pub struct AuditWriterConfig {
    pub batch_max: usize,
    pub checkpoint_every: u64,
    pub checkpoint_interval: Duration,
}

impl AuditSink {
    /// Starts the writer. It runs until [`AuditWriter::stop`] (or until every `AuditSink` clone
    /// is dropped), then drains what is queued, signs a last checkpoint and ends.
    pub fn start(
        store: Arc<dyn Store>,
        keys: Arc<KeyManager>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        cfg: AuditWriterConfig,
    ) -> (AuditSink, AuditWriter) {
        let (tx, rx) = mpsc::channel(cfg.batch_max.max(1) * 64);
        let stop = Arc::new(Notify::new());
        let join = tokio::spawn(writer(rx, stop.clone(), store, keys, clock, metrics, cfg));
        (AuditSink { tx }, AuditWriter { join, stop })
    }

    /// Appends events in the given order and returns once all of them are durable.
    pub async fn record_all(&self, events: Vec<NewEvent>) -> Result<Vec<u64>, AuditUnavailable> {
        let mut waits = Vec::with_capacity(events.len());
        for event in events {
            let (done, wait) = oneshot::channel();
            self.tx.send(Pending { event, done }).await.map_err(|_| AuditUnavailable)?;
            waits.push(wait);
        }
        let mut seqs = Vec::with_capacity(waits.len());
        for wait in waits {
            seqs.push(wait.await.map_err(|_| AuditUnavailable)??);
        }
        Ok(seqs)
    }

    /// Queues an event without waiting for it to become durable; the returned receiver says
    /// when it is. For callers that overlap the wait with other work (and for benchmarks of
    /// the decision path alone).
    pub async fn enqueue(&self, event: NewEvent) -> Result<oneshot::Receiver<Result<u64, AuditUnavailable>>, AuditUnavailable> {
        let (done, wait) = oneshot::channel();
        self.tx.send(Pending { event, done }).await.map_err(|_| AuditUnavailable)?;
        Ok(wait)
    }

    /// Queues an event and returns at once, waiting neither for durability nor for room in the
    /// queue: when the queue is full, a task of its own waits for room. Err (logged, with the
    /// event's kind, agent and task, never its details) when the writer has stopped or no
    /// runtime runs to wait in.
    pub fn enqueue_detached(&self, event: NewEvent) -> Result<(), AuditUnavailable> {
        let (done, _) = oneshot::channel();
        match self.tx.try_send(Pending { event, done }) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(p)) => Err(refused(&p.event)),
            Err(mpsc::error::TrySendError::Full(p)) => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return Err(refused(&p.event));
                };
                let tx = self.tx.clone();
                runtime.spawn(async move {
                    if let Err(mpsc::error::SendError(p)) = tx.send(p).await {
                        refused(&p.event);
                    }
                });
                Ok(())
            }
        }
    }

    /// Appends an event and returns its sequence number once it is durable.
    pub async fn record(&self, event: NewEvent) -> Result<u64, AuditUnavailable> {
        let (done, wait) = oneshot::channel();
        self.tx.send(Pending { event, done }).await.map_err(|_| AuditUnavailable)?;
        wait.await.map_err(|_| AuditUnavailable)?
    }
}

fn refused(event: &NewEvent) -> AuditUnavailable {
    tracing::error!(kind = %event.kind, agent = ?event.agent, task = ?event.task, "the audit trail refused an event; it is not recorded");
    AuditUnavailable
}

/// The running writer task.
pub struct AuditWriter {
    join: JoinHandle<()>,
    stop: Arc<Notify>,
}

impl AuditWriter {
    /// Refuses new events, makes every queued one durable, signs a last checkpoint.
    pub async fn stop(self) {
        self.stop.notify_one();
        let _ = self.join.await;
    }
}

async fn writer(
    mut rx: mpsc::Receiver<Pending>,
    stop: Arc<Notify>,
    store: Arc<dyn Store>,
    keys: Arc<KeyManager>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    cfg: AuditWriterConfig,
) {
    let mut head = match store.audit_head().await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the audit chain head; audit writes will fail until restart");
            ChainHead { seq: 0, hash: String::new() }
        }
    };
    let mut checkpointed = head.seq;
    let mut tick = tokio::time::interval(cfg.checkpoint_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch: Vec<Pending> = Vec::with_capacity(cfg.batch_max);
    loop {
        tokio::select! {
            first = rx.recv() => {
                let Some(first) = first else { break };
                batch.push(first);
                while batch.len() < cfg.batch_max {
                    match rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                write_batch(&store, &mut batch, &mut head, &metrics).await;
                if head.seq >= checkpointed + cfg.checkpoint_every {
                    checkpointed = checkpoint(&store, &keys, &clock, &head).await.unwrap_or(checkpointed);
                }
            }
            _ = stop.notified() => {
                rx.close();
                while let Some(p) = rx.recv().await {
                    batch.push(p);
                    if batch.len() >= cfg.batch_max {
                        write_batch(&store, &mut batch, &mut head, &metrics).await;
                    }
                }
                if !batch.is_empty() {
                    write_batch(&store, &mut batch, &mut head, &metrics).await;
                }
                break;
            }
            _ = tick.tick() => {
                if head.seq > checkpointed {
                    checkpointed = checkpoint(&store, &keys, &clock, &head).await.unwrap_or(checkpointed);
                }
            }
        }
    }
    if head.seq > checkpointed {
        let _ = checkpoint(&store, &keys, &clock, &head).await;
    }
    tracing::debug!(seq = head.seq, "audit writer drained");
}

async fn write_batch(store: &Arc<dyn Store>, batch: &mut Vec<Pending>, head: &mut ChainHead, metrics: &Metrics) {
    let (events, waiters): (Vec<NewEvent>, Vec<_>) = batch.drain(..).map(|p| (p.event, p.done)).unzip();
    let n = events.len();
    match store.append_audit(events).await {
        Ok(sealed) => {
            if let Some(last) = sealed.last() {
                *head = ChainHead { seq: last.seq, hash: last.hash.clone() };
            }
            metrics.audit_batch(n);
            for (done, ev) in waiters.into_iter().zip(sealed.iter()) {
                let _ = done.send(Ok(ev.seq));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, events = n, "audit append failed; failing the requests it would have recorded");
            metrics.audit_failure();
            for done in waiters {
                let _ = done.send(Err(AuditUnavailable));
            }
        }
    }
}

async fn checkpoint(store: &Arc<dyn Store>, keys: &KeyManager, clock: &Arc<dyn Clock>, head: &ChainHead) -> Option<u64> {
    let signing = keys.signing();
    let cp = sign_checkpoint(head, clock.now_ms(), signing.key.kid(), signing.key.dalek());
    match store.insert_checkpoint(&cp).await {
        Ok(()) => Some(head.seq),
        Err(e) => {
            tracing::error!(error = %e, "could not store an audit checkpoint");
            None
        }
    }
}
