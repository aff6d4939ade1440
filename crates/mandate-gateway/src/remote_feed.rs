//! Follows the control plane's revocation stream for a remote gateway: reconnects with
//! backoff and resumes from the last sequence number it saw (see `mandate_client::revocations`),
//! with the gateway's own client and `pep` token. The feed yields typed entries.

use std::sync::Weak;
use std::sync::atomic::Ordering;

use mandate_client::revocations::{FeedEvent, subscribe};

use crate::remote::Remote;

pub(crate) async fn follow(remote: Weak<Remote>) {
    let mut sub = {
        let Some(r) = remote.upgrade() else { return };
        subscribe(r.client(), None)
    };
    loop {
        let ev = sub.next().await;
        let Some(r) = remote.upgrade() else { return };
        r.stream_connected.store(sub.is_connected(), Ordering::Relaxed);
        match ev {
            FeedEvent::Revocation(e) => r.apply(&e),
            FeedEvent::Hello(p) => tracing::info!(epoch = %p.epoch, seq = p.seq, "following the control plane's revocations"),
            FeedEvent::Reset(p) => {
                // Entries may have been missed. Decisions stay authoritative at the control
                // plane; the local view only ever adds refusals, so nothing is loosened.
                tracing::warn!(epoch = %p.epoch, seq = p.seq, "revocation feed reset; re-checking open sessions");
                r.stale();
            }
            FeedEvent::Disconnected { error, retry_in } => {
                tracing::warn!(error = %error, retry_in_ms = retry_in.as_millis() as u64, "revocation feed disconnected");
            }
            _ => {}
        }
    }
}
