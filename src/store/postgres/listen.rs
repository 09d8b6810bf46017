//! The change feed of a PostgreSQL store ([`Listener`], a [`ChangeFeed`]): one connection per
//! instance, on a thread of its own (`aperture-pg-listen`, never a worker core), that `LISTEN`s
//! on [`CHANNEL_REVOCATIONS`] and [`CHANNEL_SERVICES`] and reports each notification to the
//! store thread, which then reads the change and pushes it to the cores exactly as its poll
//! does. Whoever revokes or changes a service sends the `NOTIFY` in the same transaction
//! (`PgStore::revoke`, `admin::changed`), so it arrives only once the change is readable.
//! A lost connection is reopened with backoff (up to [`MAX_BACKOFF`]); every (re)connect
//! reports [`Change::Resync`], because notifications sent while nobody listened are gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::tls::PgTarget;
use crate::store::db::{Change, ChangeFeed, DbError};

/// The channel a revocation is announced on (payload: its `revoked_tokens.seq`).
pub const CHANNEL_REVOCATIONS: &str = "aperture_revocations";
/// The channel a service change is announced on (payload: the new services version).
pub const CHANNEL_SERVICES: &str = "aperture_services";
/// How often the listening thread looks at its stop flag while no notification comes.
const STOP_CHECK: Duration = Duration::from_millis(200);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A [`ChangeFeed`] on its own connection to the store's server.
pub(super) struct Listener {
    target: PgTarget,
}

impl Listener {
    pub(super) fn new(target: &PgTarget) -> Listener {
        Listener {
            target: target.with_fast_keepalives(),
        }
    }
}

impl ChangeFeed for Listener {
    fn spawn(
        self: Box<Self>,
        report: Box<dyn Fn(Change) + Send>,
        stop: Arc<AtomicBool>,
    ) -> Result<JoinHandle<()>, DbError> {
        std::thread::Builder::new()
            .name("aperture-pg-listen".into())
            .spawn(move || run(&self.target, &*report, &stop))
            .map_err(|e| DbError::Unavailable(format!("cannot spawn the listener thread: {e}")))
    }
}

/// Listens until `stop`, reconnecting with backoff.
fn run(target: &PgTarget, report: &dyn Fn(Change), stop: &AtomicBool) {
    let mut backoff = FIRST_BACKOFF;
    let mut failing = false;
    while !stop.load(Ordering::SeqCst) {
        let mut connected = false;
        match listen(target, report, stop, &mut connected) {
            Ok(()) => return,
            Err(e) => {
                report(Change::Lost);
                if connected {
                    backoff = FIRST_BACKOFF;
                }
                if !failing || connected {
                    tracing::warn!(retry_in = ?backoff, "store: the PostgreSQL listener has no connection (changes are polled for meanwhile): {e}");
                }
                failing = !connected;
            }
        }
        let until = Instant::now() + backoff;
        while !stop.load(Ordering::SeqCst) && Instant::now() < until {
            std::thread::sleep(STOP_CHECK.min(until.saturating_duration_since(Instant::now())));
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection's life: `LISTEN`, a resync, then each notification as it comes. `Ok` only
/// when stopped.
fn listen(
    target: &PgTarget,
    report: &dyn Fn(Change),
    stop: &AtomicBool,
    connected: &mut bool,
) -> Result<(), DbError> {
    let err = |context: &'static str| {
        move |source| DbError::Postgres {
            context: context.into(),
            source,
        }
    };
    let mut client = target.connect()?;
    client
        .batch_execute(&format!(
            "LISTEN {CHANNEL_REVOCATIONS}; LISTEN {CHANNEL_SERVICES}"
        ))
        .map_err(err("listen"))?;
    *connected = true;
    tracing::debug!("store: listening for PostgreSQL notifications");
    report(Change::Resync);
    while !stop.load(Ordering::SeqCst) {
        // A fresh iterator each time: one whose timeout elapsed returns at once forever after.
        let next = {
            let mut notes = client.notifications();
            let mut iter = notes.timeout_iter(STOP_CHECK);
            postgres::fallible_iterator::FallibleIterator::next(&mut iter)
        };
        match next.map_err(err("wait for notifications"))? {
            Some(note) => match note.channel() {
                CHANNEL_REVOCATIONS => report(Change::Revocations),
                CHANNEL_SERVICES => report(Change::Services),
                _ => {}
            },
            None if client.is_closed() => {
                return Err(DbError::Unavailable(
                    "postgres: the listening connection closed".into(),
                ))
            }
            None => {}
        }
    }
    Ok(())
}
