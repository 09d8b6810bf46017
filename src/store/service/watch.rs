//! The cross-instance change feed of the services stored in the database: once a callback is
//! registered ([`StoreService::on_services_changed`]), the store thread reads
//! [`Store::services_version`](crate::store::Store::services_version) with every revocations
//! poll ([`super::REVOCATION_POLL`], 250 ms) and calls every callback when it moved, whoever
//! moved it (this instance's admin API included), so each instance sharing the database
//! reloads its services within a second of a change. Without a callback nothing is read.

use std::sync::atomic::Ordering;

use super::{Msg, StoreService, Worker};
use crate::store::db::{DbError, Store};

/// Called on the store thread: it must return quickly (signal another thread, never do the
/// reload itself).
pub(super) type Callback = Box<dyn Fn() + Send>;

/// The counter as last read and who to call when it moves.
pub(super) struct Watch {
    /// `None` until one read succeeded; the first successful read then counts as a change.
    seen: Option<i64>,
    callbacks: Vec<Callback>,
    /// A callback was just added: read now rather than at the next poll.
    due: bool,
}

impl Watch {
    /// The counter at start: a callback registered later is called at once if it moved since.
    pub(super) fn new(store: &mut dyn Store) -> Watch {
        let seen = match store.services_version() {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::debug!("store: the services version is unreadable at start: {e}");
                None
            }
        };
        Watch {
            seen,
            callbacks: Vec::new(),
            due: false,
        }
    }

    pub(super) fn add(&mut self, callback: Callback) {
        self.callbacks.push(callback);
        self.due = true;
    }

    pub(super) fn due(&self) -> bool {
        self.due
    }
}

impl Worker {
    /// Reads the counter (when someone listens) and calls back when it moved.
    pub(super) fn poll_services(&mut self) {
        self.services.due = false;
        if self.services.callbacks.is_empty() {
            return;
        }
        match self.store.services_version() {
            Ok(v) if self.services.seen == Some(v) => {}
            Ok(v) => {
                self.services.seen = Some(v);
                tracing::debug!(version = v, "store: the database's services changed");
                for callback in &self.services.callbacks {
                    let call = std::panic::AssertUnwindSafe(callback);
                    if std::panic::catch_unwind(call).is_err() {
                        tracing::error!("store: a services-changed callback panicked");
                    }
                }
            }
            Err(e) => {
                self.handle
                    .stats
                    .poll_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!("store: cannot read the services version: {e}");
            }
        }
    }
}

impl StoreService {
    /// Calls `callback` on the store thread whenever the services stored in the database
    /// change (any instance's create, update or delete), within [`super::REVOCATION_POLL`] of
    /// the commit; once at once if they changed since [`super::start`]. Register before
    /// loading them, so no change falls in between. Callbacks accumulate; each must return
    /// quickly. Fails only when the store thread has stopped.
    pub fn on_services_changed(&self, callback: Box<dyn Fn() + Send>) -> Result<(), DbError> {
        self.handle
            .tx
            .send(Msg::WatchServices(callback))
            .map_err(|_| DbError::Unavailable("the store thread has stopped".into()))
    }
}

#[cfg(test)]
mod tests {
    use crate::store::admin::suite;
    use crate::store::sqlite::SqliteStore;

    #[test]
    fn sqlite_instances_see_each_others_service_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let mine = SqliteStore::open(&path, true).unwrap();
        let mut other = SqliteStore::open(&path, true).unwrap();
        suite::feed(Box::new(mine), &mut other);
    }
}
