//! Pushed changes: when the store has a [`ChangeFeed`] (PostgreSQL's `LISTEN`), it runs on a
//! thread of its own and each report sets a bit here and wakes the store thread, which reads
//! the change at once (the same reads and fan-out as the poll). The poll then only runs every
//! [`super::SAFETY_NET_POLL`], for a notification lost with a connection. A full channel drops
//! the wake, never the bit: the busy thread sees it on its next turn.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;

use super::{Msg, Worker};
use crate::store::db::{Change, DbError, Store};

const REVOCATIONS: u8 = 1;
const SERVICES: u8 = 2;

/// The changes reported since the store thread last looked.
pub(super) type Pushed = Arc<AtomicU8>;

/// Starts the store's feed, if it has one; `None` means the store thread polls as before.
pub(super) fn start(
    store: &dyn Store,
    tx: Sender<Msg>,
    stop: Arc<AtomicBool>,
) -> Result<Option<Pushed>, DbError> {
    let Some(feed) = store.change_feed() else {
        return Ok(None);
    };
    let pushed: Pushed = Arc::new(AtomicU8::new(0));
    let bits = pushed.clone();
    let report = move |change: Change| {
        let bit = match change {
            Change::Revocations => REVOCATIONS,
            Change::Services => SERVICES,
            Change::Resync => REVOCATIONS | SERVICES,
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
    /// Reads what the feed reported since the last turn.
    pub(super) fn read_pushed(&mut self) {
        let Some(pushed) = &self.pushed else {
            return;
        };
        let bits = pushed.swap(0, Ordering::SeqCst);
        if bits & REVOCATIONS != 0 {
            self.poll_revocations();
        }
        if bits & SERVICES != 0 {
            self.poll_services();
        }
    }
}
