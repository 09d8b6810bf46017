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

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::store::db::{ChangeFeed, Key32};
    use crate::store::service::{no_payer, start_with, SAFETY_NET_POLL};
    use crate::store::sqlite::SqliteStore;

    /// SQLite with a feed the test drives: `spawn` hands the report function to the test.
    struct Fed {
        inner: SqliteStore,
        report: mpsc::Sender<Box<dyn Fn(Change) + Send>>,
    }

    struct Handoff(mpsc::Sender<Box<dyn Fn(Change) + Send>>);

    impl ChangeFeed for Handoff {
        fn spawn(
            self: Box<Self>,
            report: Box<dyn Fn(Change) + Send>,
            _stop: Arc<AtomicBool>,
        ) -> Result<JoinHandle<()>, DbError> {
            self.0.send(report).unwrap();
            Ok(std::thread::spawn(|| {}))
        }
    }

    /// Only what the store thread calls at start and for revocations.
    impl Store for Fed {
        fn apply(&mut self, ops: &[crate::store::Op]) -> Result<(), DbError> {
            self.inner.apply(ops)
        }
        fn revoke(&mut self, id: Key32) -> Result<bool, DbError> {
            self.inner.revoke(id)
        }
        fn revoked_since(&mut self, cursor: i64) -> Result<(Vec<Key32>, i64), DbError> {
            self.inner.revoked_since(cursor)
        }
        fn change_feed(&self) -> Option<Box<dyn ChangeFeed>> {
            Some(Box::new(Handoff(self.report.clone())))
        }
        fn revoked_at(&mut self, id: Key32) -> Result<Option<u64>, DbError> {
            self.inner.revoked_at(id)
        }
        fn list_tokens(
            &mut self,
            q: &crate::store::TokenQuery,
        ) -> Result<Vec<crate::store::LedgerRow>, DbError> {
            self.inner.list_tokens(q)
        }
        fn import_legacy_keys(&mut self, keys: &[(Key32, Key32)]) -> Result<usize, DbError> {
            self.inner.import_legacy_keys(keys)
        }
        fn legacy_root_key(&mut self, hash: &Key32) -> Result<Option<Key32>, DbError> {
            self.inner.legacy_root_key(hash)
        }
        fn legacy_keys(&mut self) -> Result<Vec<(Key32, Key32)>, DbError> {
            self.inner.legacy_keys()
        }
        fn claim_charges(
            &mut self,
            claims: &[crate::store::ChargeClaim],
        ) -> Result<Vec<bool>, DbError> {
            self.inner.claim_charges(claims)
        }
        fn prune_charges(&mut self, before: u64) -> Result<usize, DbError> {
            self.inner.prune_charges(before)
        }
    }

    /// With the feed live the poll is the 5 s safety net, so a revocation published well
    /// before that came through the report.
    #[test]
    fn a_reported_revocation_is_read_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let (tx, rx) = mpsc::channel();
        let store = Fed {
            inner: SqliteStore::open(&path, true).unwrap(),
            report: tx,
        };
        let (published, seen) = mpsc::channel();
        let service = start_with(
            Box::new(store),
            None,
            Box::new(move |id| published.send((id, Instant::now())).unwrap()),
            "holder",
            no_payer("tests"),
        )
        .unwrap();
        let report = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        report(Change::Resync);
        let mut other = SqliteStore::open(&path, true).unwrap();
        for _ in 0..5 {
            let id: Key32 = rand::random();
            assert!(other.revoke(id).unwrap());
            let start = Instant::now();
            report(Change::Revocations);
            let (got, at) = seen.recv_timeout(SAFETY_NET_POLL / 2).unwrap();
            assert_eq!(got, id);
            assert!(at - start < SAFETY_NET_POLL / 2);
        }
        service.shutdown();
    }
}
