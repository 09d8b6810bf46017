//! Pushed changes: when the store has a [`ChangeFeed`] (PostgreSQL's `LISTEN`), it runs on a
//! thread of its own and each report sets a bit here and wakes the store thread, which reads
//! the change at once (the same reads and fan-out as the poll). While the feed is connected
//! the poll only runs every [`super::SAFETY_NET_POLL`], for a notification lost with a
//! connection; while it is not, every [`super::REVOCATION_POLL`] as without a feed. A full
//! channel drops the wake, never the bit: the busy thread sees it on its next turn.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::{Msg, Worker};
use crate::store::db::{Change, DbError, Store};

const REVOCATIONS: u8 = 1;
const SERVICES: u8 = 2;

/// What the feed reported: the changes since the store thread last looked, and whether it is
/// connected now.
pub(super) struct Pushed {
    bits: Arc<AtomicU8>,
    live: Arc<AtomicBool>,
}

/// Starts the store's feed, if it has one; `None` means the store thread polls as before.
pub(super) fn start(
    store: &dyn Store,
    tx: Sender<Msg>,
    stop: Arc<AtomicBool>,
) -> Result<Option<Pushed>, DbError> {
    let Some(feed) = store.change_feed() else {
        return Ok(None);
    };
    let pushed = Pushed {
        bits: Arc::new(AtomicU8::new(0)),
        live: Arc::new(AtomicBool::new(false)),
    };
    let (bits, live) = (pushed.bits.clone(), pushed.live.clone());
    let report = move |change: Change| {
        let bit = match change {
            Change::Revocations => REVOCATIONS,
            Change::Services => SERVICES,
            Change::Resync => {
                live.store(true, Ordering::SeqCst);
                REVOCATIONS | SERVICES
            }
            Change::Lost => {
                live.store(false, Ordering::SeqCst);
                0
            }
        };
        bits.fetch_or(bit, Ordering::SeqCst);
        let _ = tx.try_send(Msg::Wake);
    };
    // The thread ends by itself once `stop` is set (within its stop check, or after a connect
    // attempt that is under way); nothing it holds needs flushing, so it is not joined.
    drop(feed.spawn(Box::new(report), stop)?);
    Ok(Some(pushed))
}

impl Worker {
    /// How often to poll: rarely while the feed is connected.
    pub(super) fn poll_every(&self) -> Duration {
        match &self.pushed {
            Some(p) if p.live.load(Ordering::SeqCst) => super::SAFETY_NET_POLL,
            _ => super::REVOCATION_POLL,
        }
    }

    /// Reads what the feed reported since the last turn; a lost feed brings the next poll
    /// forward.
    pub(super) fn read_pushed(&mut self, now: Instant) {
        let Some(pushed) = &self.pushed else {
            return;
        };
        let bits = pushed.bits.swap(0, Ordering::SeqCst);
        self.next_poll = self.next_poll.min(now + self.poll_every());
        if bits & REVOCATIONS != 0 {
            self.poll_revocations();
        }
        if bits & SERVICES != 0 {
            self.poll_services();
        }
    }
}
