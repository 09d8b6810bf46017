//! The built-in meter's bundles through the store thread: worker cores read a token's bundle
//! with a message and an awaited reply (after every write queued before it, so a bundle a core
//! dropped from memory comes back with all its debits), and write creations and debits behind,
//! batched with the ledger's writes. Never blocks a core.

use std::sync::atomic::Ordering;

use futures_channel::oneshot;

use super::{Msg, StoreHandle, Worker};
use crate::store::db::{BundleRow, Key32, Op};

/// Where a bundle read is answered: `Err(())` when the database could not say.
pub(super) type BundleTx = oneshot::Sender<Result<Option<BundleRow>, ()>>;

impl StoreHandle {
    /// Reads the bundle of `token_id`; `None` when the store thread is behind or gone.
    pub fn try_bundle(
        &self,
        token_id: Key32,
    ) -> Option<oneshot::Receiver<Result<Option<BundleRow>, ()>>> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .try_send(Msg::Bundle(token_id, tx))
            .ok()
            .map(|()| rx)
    }

    /// Records a bundle sold (kept if the token has one already); false when it was dropped
    /// (counted): the bundle then lives in memory until the next restart.
    pub fn bundle_created(&self, row: BundleRow) -> bool {
        self.write(Op::BundleCreated(Box::new(row)))
    }

    /// Records a debit of `tokens` from `token_id`'s bundle; false when it was dropped (counted,
    /// in the client's favour).
    pub fn bundle_debited(&self, token_id: Key32, tokens: u64) -> bool {
        self.write(Op::BundleDebited { token_id, tokens })
    }

    fn write(&self, op: Op) -> bool {
        let sent = self.tx.try_send(Msg::Write(op)).is_ok();
        if !sent {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        sent
    }
}

impl Worker {
    /// Answers a bundle read after committing every write queued before it.
    pub(super) fn bundle_get(&mut self, token_id: Key32, reply: BundleTx) {
        if !self.pending.is_empty() {
            let now = std::time::Instant::now();
            if self.retry_at.is_none_or(|r| now >= r) {
                self.flush(now, false);
            }
            if !self.pending.is_empty() {
                // Queued debits could not commit: a read now would miss them.
                let _ = reply.send(Err(()));
                return;
            }
        }
        let result = self.store.bundle(token_id);
        if let Err(e) = &result {
            tracing::warn!("store: cannot read a meter bundle: {e}");
        }
        let _ = reply.send(result.map_err(|_| ()));
    }
}
