//! The change listener: a background task that LISTENs on [`CHANNEL`] over a connection of its
//! own and forwards other stores' changes to every [`changes()`](mandate_store::Store::changes)
//! receiver.

use std::time::Duration;

use mandate_store::{Change, StoreResult};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio::sync::{broadcast, oneshot};

use crate::error::db;
use crate::notify::{CHANNEL, Envelope, Received};

/// The first wait before reconnecting; it doubles on each failed attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// After this long without a notification the connection is checked, so that a connection the
/// network dropped silently is noticed (and an idle one is not dropped by a middlebox).
const KEEPALIVE: Duration = Duration::from_secs(30);
/// How long that check may take.
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects the listener and LISTENs, then leaves it running in a task that stops when the
/// returned sender is dropped.
pub(crate) async fn start(
    pool: PgPoolOptions,
    options: PgConnectOptions,
    acquire_timeout: Duration,
    envelope: Envelope,
    changes: broadcast::Sender<Change>,
) -> StoreResult<oneshot::Sender<()>> {
    // A pool of one, only for reconnecting: the listener holds its connection all along.
    let pool = pool
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(acquire_timeout)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_lazy_with(options);
    let listener = listen(&pool).await.map_err(db)?;
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(run(pool, listener, envelope, changes, stopped));
    Ok(stop)
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // A lost connection is re-established here, with backoff, followed by a resync.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

async fn run(
    pool: PgPool,
    listener: PgListener,
    envelope: Envelope,
    changes: broadcast::Sender<Change>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut listener = Some(listener);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let Some(active) = listener.as_mut() else {
            tokio::select! {
                _ = &mut stopped => break,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            let attempt = tokio::select! {
                _ = &mut stopped => break,
                attempt = listen(&pool) => attempt,
            };
            match attempt {
                Ok(l) => {
                    tracing::info!("change listener reconnected; asking for a resync");
                    listener = Some(l);
                    let _ = changes.send(Change::Resync);
                }
                Err(e) => tracing::warn!(error = %db(e), retry_in_ms = backoff.as_millis(), "change listener cannot reconnect"),
            }
            continue;
        };
        let next = tokio::select! {
            _ = &mut stopped => break,
            next = tokio::time::timeout(KEEPALIVE, active.try_recv()) => next,
        };
        match next {
            Ok(Ok(Some(notification))) => {
                backoff = FIRST_BACKOFF;
                match envelope.receive(notification.payload()) {
                    Received::Change(change) => {
                        let _ = changes.send(change);
                    }
                    Received::Ignore => {}
                    Received::Unreadable => {
                        tracing::warn!(channel = CHANNEL, "unreadable change notification; asking for a resync");
                        let _ = changes.send(Change::Resync);
                    }
                }
            }
            Ok(Ok(None)) => {
                tracing::warn!("change listener lost its connection; reconnecting");
                listener = None;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %db(e), "change listener failed; reconnecting");
                listener = None;
            }
            Err(_idle) => {
                let ping = tokio::select! {
                    _ = &mut stopped => break,
                    ping = tokio::time::timeout(PING_TIMEOUT, sqlx::query("SELECT 1").execute(&mut *active)) => ping,
                };
                match ping {
                    Ok(Ok(_)) => backoff = FIRST_BACKOFF,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %db(e), "change listener connection check failed; reconnecting");
                        listener = None;
                    }
                    Err(_) => {
                        tracing::warn!("change listener connection check timed out; reconnecting");
                        listener = None;
                    }
                }
            }
        }
    }
    tracing::debug!("change listener stopped");
}
