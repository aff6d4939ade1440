//! The revocation feed: every change that stops a task or an agent from acting (and an agent
//! enabled again), numbered without gaps per server process, so that an enforcement point that
//! holds sessions open can end them as soon as their task or agent may no longer act.
//!
//! The registry publishes every entry while it holds its own lock, after it has updated its
//! view, so a subscriber that sees an entry and then asks the registry sees the change. The
//! feed keeps the last entries in a ring buffer (for subscribers that reconnect or fall behind)
//! and hands new ones to live subscribers through a broadcast channel. A subscriber whose resume
//! point the ring no longer holds, or that comes from another process (another `epoch`), gets a
//! reset: it may have missed entries and must re-check what it holds.

use std::collections::VecDeque;
use std::sync::Arc;

use mandate_proto::gateway::{FeedPosition, RevocationEntry, RevocationKind, RevocationStatus};
use parking_lot::Mutex;
use tokio::sync::{broadcast, watch};

/// How many entries the feed keeps by default.
pub const RETAINED: usize = 65_536;

/// How many entries a live subscriber may fall behind before it re-reads the ring buffer.
const LIVE_CAPACITY: usize = 1024;

/// The entries after a resume point are no longer held (or the resume point lies beyond the
/// head, so it comes from another process).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the revocation feed holds no entries after `{after}`: it holds {first} to {head}")]
pub struct Gap {
    /// The resume point asked for.
    pub after: u64,
    /// The oldest entry still held (`head + 1` when none is).
    pub first: u64,
    /// The last entry published.
    pub head: u64,
}

/// The feed. Cloning is cheap and shares it.
#[derive(Clone)]
pub struct RevocationFeed {
    inner: Arc<Inner>,
}

struct Inner {
    epoch: String,
    retained: usize,
    ring: Mutex<Ring>,
    live: broadcast::Sender<RevocationEntry>,
    closed: watch::Sender<bool>,
}

struct Ring {
    head: u64,
    entries: VecDeque<RevocationEntry>,
}

impl Ring {
    fn first(&self) -> u64 {
        self.entries.front().map_or(self.head + 1, |e| e.seq)
    }

    fn since(&self, after: u64) -> Result<Vec<RevocationEntry>, Gap> {
        let first = self.first();
        if after > self.head || after.saturating_add(1) < first {
            return Err(Gap { after, first, head: self.head });
        }
        // Sequence numbers are contiguous, so the entries after `after` are a suffix.
        let skip = usize::try_from(after + 1 - first).unwrap_or(usize::MAX);
        Ok(self.entries.iter().skip(skip).cloned().collect())
    }
}

impl Default for RevocationFeed {
    fn default() -> Self {
        RevocationFeed::new(RETAINED)
    }
}

impl RevocationFeed {
    /// A new feed with a fresh random epoch that keeps the last `retained` entries.
    pub fn new(retained: usize) -> Self {
        Self::with_live_capacity(retained, LIVE_CAPACITY)
    }

    fn with_live_capacity(retained: usize, live: usize) -> Self {
        let (live, _) = broadcast::channel(live.max(1));
        let (closed, _) = watch::channel(false);
        RevocationFeed {
            inner: Arc::new(Inner {
                epoch: crate::state::random_hex(8),
                retained: retained.max(1),
                ring: Mutex::new(Ring { head: 0, entries: VecDeque::new() }),
                live,
                closed,
            }),
        }
    }

    /// Random per server process: sequence numbers of another epoch mean nothing here.
    pub fn epoch(&self) -> &str {
        &self.inner.epoch
    }

    /// The last sequence number published (0 before the first entry).
    pub fn head(&self) -> u64 {
        self.inner.ring.lock().head
    }

    /// The epoch and the head.
    pub fn position(&self) -> FeedPosition {
        FeedPosition { epoch: self.inner.epoch.clone(), seq: self.head() }
    }

    /// Live entries from now on. A receiver that falls behind gets `Lagged`; it then reads what
    /// it missed with [`since`](Self::since), or uses [`follow`](Self::follow), which does so.
    pub fn subscribe(&self) -> broadcast::Receiver<RevocationEntry> {
        self.inner.live.subscribe()
    }

    /// Every held entry after `seq`, oldest first; a [`Gap`] if some of them are no longer held
    /// or `seq` lies beyond the head.
    pub fn since(&self, seq: u64) -> Result<Vec<RevocationEntry>, Gap> {
        self.inner.ring.lock().since(seq)
    }

    /// A subscription that starts after `after` (`None`: from now on) and never silently skips
    /// an entry: what it cannot deliver it replaces with a reset.
    pub fn follow(&self, after: Option<u64>) -> Subscription {
        // Under the ring's lock, so that the held entries and the live ones meet exactly.
        let ring = self.inner.ring.lock();
        let rx = self.inner.live.subscribe();
        let start = FeedPosition { epoch: self.inner.epoch.clone(), seq: ring.head };
        let (last, backlog, reset) = match after {
            None => (ring.head, VecDeque::new(), false),
            Some(n) => match ring.since(n) {
                Ok(entries) => (n, VecDeque::from(entries), false),
                Err(_) => (ring.head, VecDeque::new(), true),
            },
        };
        drop(ring);
        Subscription { feed: self.clone(), rx, closed: self.inner.closed.subscribe(), start, last, backlog, reset }
    }

    /// Ends every subscription (on shutdown, so that open streams do not hold the server up).
    /// Entries are still published and kept.
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
    }

    /// Numbers and keeps an entry and hands it to live subscribers.
    pub(crate) fn publish(&self, kind: RevocationKind, id: &str, status: RevocationStatus, at_ms: i64) -> u64 {
        let mut ring = self.inner.ring.lock();
        ring.head += 1;
        let entry = RevocationEntry { seq: ring.head, kind, id: id.to_owned(), status, at_ms };
        if ring.entries.len() >= self.inner.retained {
            ring.entries.pop_front();
        }
        ring.entries.push_back(entry.clone());
        // Sent under the lock: live subscribers see entries in sequence order. No receiver is
        // not an error.
        let _ = self.inner.live.send(entry);
        ring.head
    }
}

/// What a [`Subscription`] delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedItem {
    /// The next entry: its `seq` is one more than the last delivered.
    Entry(RevocationEntry),
    /// Entries were lost to this subscriber; it continues after `seq`. Whatever it derived
    /// from the feed may be stale.
    Reset(FeedPosition),
}

/// One subscriber's ordered, gap-free view of the feed.
pub struct Subscription {
    feed: RevocationFeed,
    rx: broadcast::Receiver<RevocationEntry>,
    closed: watch::Receiver<bool>,
    start: FeedPosition,
    last: u64,
    backlog: VecDeque<RevocationEntry>,
    reset: bool,
}

impl Subscription {
    /// The epoch and the head when the subscription started (the feed's `hello`).
    pub fn start(&self) -> &FeedPosition {
        &self.start
    }

    /// The sequence number of the last entry delivered (or skipped by a reset).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The next entry or reset; `None` once the feed is closed. Cancel safe: dropping the
    /// future loses nothing.
    pub async fn next(&mut self) -> Option<FeedItem> {
        loop {
            if *self.closed.borrow() {
                return None;
            }
            if self.reset {
                self.reset = false;
                return Some(FeedItem::Reset(FeedPosition { epoch: self.start.epoch.clone(), seq: self.last }));
            }
            if let Some(entry) = self.backlog.pop_front() {
                if entry.seq > self.last {
                    self.last = entry.seq;
                    return Some(FeedItem::Entry(entry));
                }
                continue;
            }
            let received = tokio::select! {
                biased;
                changed = self.closed.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    continue;
                }
                r = self.rx.recv() => r,
            };
            match received {
                Ok(entry) if entry.seq <= self.last => {}
                Ok(entry) if entry.seq == self.last + 1 => {
                    self.last = entry.seq;
                    return Some(FeedItem::Entry(entry));
                }
                // Behind the live channel (or, impossibly, ahead of it): the ring has the rest.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up(),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    fn catch_up(&mut self) {
        match self.feed.since(self.last) {
            Ok(entries) => self.backlog = VecDeque::from(entries),
            Err(gap) => {
                self.last = gap.head;
                self.backlog.clear();
                self.reset = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revoke(feed: &RevocationFeed, id: &str) -> u64 {
        feed.publish(RevocationKind::Task, id, RevocationStatus::Revoked, 1)
    }

    async fn next_entry(sub: &mut Subscription) -> u64 {
        match sub.next().await {
            Some(FeedItem::Entry(e)) => e.seq,
            other => panic!("expected an entry, got {other:?}"),
        }
    }

    #[test]
    fn sequence_numbers_are_gap_free_and_the_ring_keeps_the_last() {
        let feed = RevocationFeed::new(3);
        assert_eq!(feed.head(), 0);
        assert_eq!(feed.since(0).unwrap(), vec![]);
        for i in 1..=5 {
            assert_eq!(revoke(&feed, &format!("t{i}")), i);
        }
        assert_eq!(feed.head(), 5);
        let held: Vec<u64> = feed.since(2).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(held, vec![3, 4, 5]);
        assert_eq!(feed.since(4).unwrap()[0].id, "t5");
        assert_eq!(feed.since(5).unwrap(), vec![]);
        assert_eq!(feed.since(1), Err(Gap { after: 1, first: 3, head: 5 }));
        assert_eq!(feed.since(6), Err(Gap { after: 6, first: 3, head: 5 }));
        assert_eq!(feed.since(6).unwrap_err().to_string(), "the revocation feed holds no entries after `6`: it holds 3 to 5");
    }

    #[test]
    fn every_process_has_its_own_epoch() {
        assert_ne!(RevocationFeed::default().epoch(), RevocationFeed::default().epoch());
        assert_eq!(RevocationFeed::default().epoch().len(), 16);
    }

    #[tokio::test]
    async fn a_subscription_replays_what_is_held_then_goes_live() {
        let feed = RevocationFeed::new(16);
        revoke(&feed, "a");
        revoke(&feed, "b");
        let mut from_start = feed.follow(Some(0));
        let mut from_now = feed.follow(None);
        assert_eq!(from_start.start(), &FeedPosition { epoch: feed.epoch().to_owned(), seq: 2 });
        revoke(&feed, "c");
        assert_eq!(next_entry(&mut from_start).await, 1);
        assert_eq!(next_entry(&mut from_start).await, 2);
        assert_eq!(next_entry(&mut from_start).await, 3);
        assert_eq!(next_entry(&mut from_now).await, 3);
        assert_eq!(from_now.last(), 3);
    }

    #[tokio::test]
    async fn a_resume_point_no_longer_held_or_from_elsewhere_is_a_reset() {
        let feed = RevocationFeed::new(2);
        for id in ["a", "b", "c", "d"] {
            revoke(&feed, id);
        }
        for after in [1, 99] {
            let mut sub = feed.follow(Some(after));
            assert_eq!(sub.next().await, Some(FeedItem::Reset(feed.position())));
            revoke(&feed, "e");
            let seq = next_entry(&mut sub).await;
            assert_eq!(seq, feed.head());
        }
        // The oldest held entry's predecessor is still a valid resume point.
        assert_eq!(feed.head(), 6);
        assert_eq!(feed.since(4).unwrap().len(), 2);
        let mut sub = feed.follow(Some(4));
        assert_eq!(next_entry(&mut sub).await, 5);
        assert_eq!(next_entry(&mut sub).await, 6);
    }

    #[tokio::test]
    async fn a_lagging_subscriber_reads_the_ring_instead_of_skipping() {
        let feed = RevocationFeed::with_live_capacity(64, 2);
        let mut sub = feed.follow(None);
        for i in 0..10 {
            revoke(&feed, &format!("t{i}"));
        }
        for want in 1..=10 {
            assert_eq!(next_entry(&mut sub).await, want);
        }
        revoke(&feed, "live");
        assert_eq!(next_entry(&mut sub).await, 11);
    }

    #[tokio::test]
    async fn a_subscriber_that_lags_beyond_the_ring_gets_a_reset() {
        let feed = RevocationFeed::with_live_capacity(4, 2);
        let mut sub = feed.follow(None);
        for i in 0..10 {
            revoke(&feed, &format!("t{i}"));
        }
        assert_eq!(sub.next().await, Some(FeedItem::Reset(FeedPosition { epoch: feed.epoch().to_owned(), seq: 10 })));
        revoke(&feed, "after");
        assert_eq!(next_entry(&mut sub).await, 11);
    }

    #[tokio::test]
    async fn closing_ends_every_subscription() {
        let feed = RevocationFeed::new(4);
        let mut sub = feed.follow(None);
        let waiting = tokio::spawn(async move { sub.next().await });
        tokio::task::yield_now().await;
        feed.close();
        assert_eq!(waiting.await.unwrap(), None);
        assert_eq!(feed.follow(Some(0)).next().await, None);
        // Publishing still works after close (the registry keeps calling it).
        assert_eq!(revoke(&feed, "x"), 1);
    }
}
