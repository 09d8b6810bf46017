//! The `aperture-store` thread: the only place a running proxy touches its database. Worker cores
//! hand it minted challenges through [`StoreHandle::try_record_challenge`] (a non-blocking
//! `try_send` into a bounded crossbeam channel: when full, the record is dropped and counted,
//! never waited for). The thread also reads the bridge's settlement events, commits writes in
//! batches (one transaction per batch of up to [`MAX_BATCH`] ops or [`BATCH_WINDOW`]), and polls
//! the revocations table every [`REVOCATION_POLL`], publishing each new one to every worker core
//! as `Event::TokenRevoked`. A store with a change feed (PostgreSQL: `feed`) has revocations and
//! service changes pushed instead, read the moment they are reported, and while its feed is
//! connected polls only every [`SAFETY_NET_POLL`]. A database outage is logged and counted and
//! retried with backoff; paid requests never wait on it (they need no store).
//!
//! Payment sessions live here too (`sessions`: calls answered as soon as they commit, debits
//! batched with the ledger, the idle sweep; `refunds`: the refund worker). At start the thread
//! gives back the leases this instance (its holder id) held before a restart. Once someone asks
//! ([`StoreService::on_services_changed`], in `watch`), the thread also polls the services'
//! change counter with the revocations and calls back when any instance changed a service.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use futures_channel::mpsc::UnboundedReceiver;
use futures_core::Stream;
use lnd_bridge::{BridgeHandle, Event};

use super::admin::TxKind;
use super::db::{unix_now, Challenge, ChargeClaim, DbError, Key32, Op, Store};

mod bundles;
mod feed;
mod refunds;
mod sessions;
mod stats;
mod usage;
mod watch;

pub use refunds::{
    bridge_payer, no_payer, PayFuture, PayOutcome, Payer, RefundPayment, CLOSE_WAIT, REFUND_TIMEOUT,
};
pub use sessions::{SessionReply, IDLE_SWEEP};
pub use stats::StoreStats;

/// Most ops committed in one transaction.
pub const MAX_BATCH: usize = 256;
/// How long the first op of a batch waits for company before the batch commits.
pub const BATCH_WINDOW: Duration = Duration::from_millis(10);
/// How often the revocations table is read when the store pushes no changes (SQLite: another
/// process's revocation reaches every core within about this long).
pub const REVOCATION_POLL: Duration = Duration::from_millis(250);
/// How often it is read when the store pushes changes (PostgreSQL's `LISTEN/NOTIFY`): only a
/// safety net for a notification lost with the listening connection.
pub const SAFETY_NET_POLL: Duration = Duration::from_secs(5);
/// Challenge records that may wait in the channel for the store thread.
pub const CHANNEL_CAPACITY: usize = 16 * 1024;
/// Ops held in memory while the database is down; beyond this they are dropped and counted.
const MAX_PENDING: usize = 64 * 1024;
/// Revocations re-read behind the cursor: PostgreSQL sequence values can commit out of order.
const CURSOR_LOOKBACK: i64 = 64;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How often consumed charges are pruned (and once at start), as Go aperture does.
const PRUNE_EVERY: Duration = Duration::from_secs(300);
/// A consumed charge is kept this long past its challenge's expiry.
const PRUNE_AFTER_EXPIRY: u64 = 3600;

/// The answer to a charge claim: `Ok(true)` first use, `Ok(false)` a replay, `Err(())` the
/// database could not say (the request gets 503, never a second use).
pub type ClaimReply = futures_channel::oneshot::Receiver<Result<bool, ()>>;

/// What travels to the store thread.
enum Msg {
    Challenge(Challenge, TxKind),
    /// A charge to claim before its request is forwarded; answered as soon as it committed.
    Claim(
        ChargeClaim,
        futures_channel::oneshot::Sender<Result<bool, ()>>,
    ),
    /// A write batched with the ledger's (a session's debits).
    Write(Op),
    /// A session call, answered as soon as it commits.
    Session(sessions::SessionMsg),
    /// A built-in meter bundle to read (after every write queued before it).
    Bundle(Key32, bundles::BundleTx),
    /// Call this when the services change (see [`StoreService::on_services_changed`]).
    WatchServices(watch::Callback),
    /// Something else needs a look (bridge event, stop flag); carries nothing.
    Wake,
}

/// What worker cores (and main) hold: cheap to clone, `Send + Sync`, never blocks.
#[derive(Clone)]
pub struct StoreHandle {
    tx: Sender<Msg>,
    stats: Arc<StoreStats>,
    revoked: Arc<Mutex<HashSet<Key32>>>,
}

const _: fn() = || {
    fn send_sync_clone<T: Send + Sync + Clone>() {}
    send_sync_clone::<StoreHandle>();
};

impl StoreHandle {
    /// Records a minted challenge in the ledger, later; never blocks. Returns false (and counts
    /// `dropped`) when the store thread is behind or gone: the challenge is still valid, only
    /// its ledger row is lost. `created_at` is unix seconds. Its kind is inferred
    /// ([`TxKind::infer`]: a Payment charge when `token_id == payment_hash`, else L402); a
    /// session's deposit or top-up invoice goes through [`Self::try_record_transaction`].
    pub fn try_record_challenge(
        &self,
        token_id: Key32,
        payment_hash: Key32,
        service: &str,
        price_sat: u64,
        created_at: u64,
    ) -> bool {
        let kind = TxKind::infer(&token_id, &payment_hash);
        self.try_record_transaction(kind, token_id, payment_hash, service, price_sat, created_at)
    }

    /// [`Self::try_record_challenge`] with the row's kind given.
    pub fn try_record_transaction(
        &self,
        kind: TxKind,
        token_id: Key32,
        payment_hash: Key32,
        service: &str,
        price_sat: u64,
        created_at: u64,
    ) -> bool {
        let c = Challenge {
            token_id,
            payment_hash,
            service: service.to_owned(),
            price_sat,
            created_at,
        };
        match self.tx.try_send(Msg::Challenge(c, kind)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Every revoked token ID known to this instance: complete at start-up (loaded before
    /// [`start`] returns), then kept current by the poll. For seeding per-core revoked sets.
    /// Claims one use of a Payment charge, durably, before its request is forwarded; never
    /// blocks. `None` when the store thread is behind (the request gets 503). Claims that
    /// arrive together commit in one transaction (group commit), without the ledger's batching
    /// delay.
    pub fn try_claim_charge(&self, claim: ChargeClaim) -> Option<ClaimReply> {
        let (tx, rx) = futures_channel::oneshot::channel();
        self.tx.try_send(Msg::Claim(claim, tx)).ok().map(|()| rx)
    }

    pub fn revoked_snapshot(&self) -> Vec<Key32> {
        lock(&self.revoked).iter().copied().collect()
    }

    /// The store's counters.
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Only whole inserts happen under this lock; a poisoned set is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The running store thread. Dropping it (or [`StoreService::shutdown`]) commits what is
/// pending and joins the thread.
pub struct StoreService {
    handle: StoreHandle,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Usage reports an earlier run kept, until [`StoreService::keep_usage`] replays them.
    replay: Mutex<Vec<lnd_bridge::UsageReport>>,
}

/// Opens the configured database on the caller's thread (so errors surface at start-up), loads
/// the revoked set, gives back `holder`'s session leases (this instance's id, from
/// [`super::load_or_create_instance_id`]), and starts the store thread fed by `bridge`'s
/// events, publishing revocations and paying session refunds through `bridge`.
pub fn start(
    db: &crate::config::Db,
    bridge: &BridgeHandle,
    holder: &str,
) -> Result<StoreService, DbError> {
    let store = super::db::open(db)?;
    let publisher = bridge.clone();
    start_with(
        store,
        Some(bridge.subscribe()),
        Box::new(move |token_id| publisher.publish(Event::TokenRevoked { token_id })),
        holder,
        bridge_payer(bridge.clone()),
    )
}

/// [`start`] with the pieces injected: any [`Store`], any event stream, any revocation sink,
/// any refund payer.
pub fn start_with(
    mut store: Box<dyn Store>,
    events: Option<UnboundedReceiver<Event>>,
    publish: Box<dyn Fn(Key32) + Send>,
    holder: &str,
    payer: Payer,
) -> Result<StoreService, DbError> {
    let (initial, cursor) = store.revoked_since(0)?;
    let services = watch::Watch::new(store.as_mut());
    let released = store.release_holder(holder)?;
    if released > 0 {
        tracing::info!(
            holder,
            released,
            "session leases of this instance's previous run given back"
        );
    }
    let replay = store.pending_usage(usage::MAX_REPLAY).unwrap_or_else(|e| {
        tracing::warn!("store: cannot read kept usage reports (replayed at a later start): {e}");
        Vec::new()
    });
    let (tx, rx) = crossbeam_channel::bounded(CHANNEL_CAPACITY);
    let handle = StoreHandle {
        tx: tx.clone(),
        stats: Arc::new(StoreStats {
            up: AtomicU64::new(1),
            ..StoreStats::default()
        }),
        revoked: Arc::new(Mutex::new(initial.into_iter().collect())),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let pushed = feed::start(store.as_ref(), tx.clone(), stop.clone())?;
    let worker = Worker {
        store,
        rx,
        waker: Waker::from(Arc::new(ChannelWaker(tx))),
        events,
        publish,
        handle: handle.clone(),
        stop: stop.clone(),
        pending: Vec::new(),
        claims: Vec::new(),
        holder: holder.to_owned(),
        refunds: refunds::Refunds::new(payer),
        next_sweep: Instant::now() + IDLE_SWEEP,
        next_prune: Instant::now(),
        batch_since: None,
        cursor,
        services,
        next_poll: Instant::now() + REVOCATION_POLL,
        pushed,
        retry_at: None,
        backoff: Duration::from_millis(50),
    };
    let thread = std::thread::Builder::new()
        .name("aperture-store".into())
        .spawn(move || worker.run())
        .map_err(|e| DbError::Unavailable(format!("cannot spawn the store thread: {e}")))?;
    Ok(StoreService {
        handle,
        stop,
        thread: Some(thread),
        replay: Mutex::new(replay),
    })
}

impl StoreService {
    /// A handle for the worker cores.
    pub fn handle(&self) -> StoreHandle {
        self.handle.clone()
    }

    /// Commits what is pending and stops the thread.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for StoreService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // If the channel is full the thread is busy and sees the flag on its next turn.
        let _ = self.handle.tx.try_send(Msg::Wake);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("aperture-store thread panicked");
            }
        }
    }
}

/// Wakes the store thread when the bridge's event stream has something.
struct ChannelWaker(Sender<Msg>);

impl Wake for ChannelWaker {
    fn wake(self: Arc<Self>) {
        // Full means the thread is busy and will poll the stream on its next turn anyway.
        let _ = self.0.try_send(Msg::Wake);
    }
}

/// The store thread's state.
struct Worker {
    store: Box<dyn Store>,
    rx: Receiver<Msg>,
    waker: Waker,
    events: Option<UnboundedReceiver<Event>>,
    publish: Box<dyn Fn(Key32) + Send>,
    handle: StoreHandle,
    stop: Arc<AtomicBool>,
    pending: Vec<Op>,
    /// Charge claims waiting for their transaction (answered every turn).
    claims: Vec<(
        ChargeClaim,
        futures_channel::oneshot::Sender<Result<bool, ()>>,
    )>,
    /// This instance's id: the holder of its session leases.
    holder: String,
    refunds: refunds::Refunds,
    next_sweep: Instant,
    next_prune: Instant,
    /// When the oldest uncommitted op arrived.
    batch_since: Option<Instant>,
    cursor: i64,
    /// The services' change counter and who to call when it moves.
    services: watch::Watch,
    next_poll: Instant,
    /// What the change feed reported, when the store has one.
    pushed: Option<feed::Pushed>,
    /// After a failed write: not before this.
    retry_at: Option<Instant>,
    backoff: Duration,
}

impl Worker {
    fn run(mut self) {
        loop {
            let deadline = self.deadline();
            if self.pending.len() < MAX_PENDING {
                if let Ok(msg) = self.rx.recv_deadline(deadline) {
                    self.take(msg);
                }
                while self.pending.len() < MAX_PENDING {
                    match self.rx.try_recv() {
                        Ok(msg) => self.take(msg),
                        Err(_) => break,
                    }
                }
            } else {
                // Backed up behind an outage: leave the channel to fill (cores then drop).
                std::thread::park_timeout(deadline.saturating_duration_since(Instant::now()));
            }
            self.drain_events();
            self.commit_claims();
            self.poll_refunds();
            let stopping = self.stop.load(Ordering::SeqCst);
            let now = Instant::now();
            if now >= self.next_prune {
                self.prune_charges();
                self.next_prune = now + PRUNE_EVERY;
            }
            if stopping || self.batch_due(now) {
                self.flush(now, stopping);
            }
            if stopping {
                break;
            }
            self.read_pushed(now);
            if now >= self.next_poll {
                self.poll_revocations();
                self.poll_services();
                self.next_poll = now + self.poll_every();
            } else if self.services.due() {
                self.poll_services();
            }
            if now >= self.next_sweep {
                self.idle_sweep();
                self.next_sweep = Instant::now() + IDLE_SWEEP;
            }
        }
        self.abandon_refunds();
        if !self.pending.is_empty() {
            tracing::error!(
                lost = self.pending.len(),
                "store: ledger writes lost at shutdown (database unavailable)"
            );
        }
    }

    fn deadline(&self) -> Instant {
        let mut d = self.next_poll.min(self.next_sweep);
        if let Some(refund) = self.refunds.deadline() {
            d = d.min(refund);
        }
        if let Some(since) = self.batch_since {
            let due = since + BATCH_WINDOW;
            d = d.min(self.retry_at.map_or(due, |r| r.max(due)));
        }
        d
    }

    fn batch_due(&self, now: Instant) -> bool {
        let Some(since) = self.batch_since else {
            return false;
        };
        if self.retry_at.is_some_and(|r| now < r) {
            return false;
        }
        self.pending.len() >= MAX_BATCH || now >= since + BATCH_WINDOW
    }

    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Challenge(challenge, kind) => self.push(Op::Transaction { challenge, kind }),
            Msg::Claim(claim, reply) => self.claims.push((claim, reply)),
            Msg::Write(op) => self.push(op),
            Msg::Session(call) => self.session_call(call),
            Msg::Bundle(token_id, reply) => self.bundle_get(token_id, reply),
            Msg::WatchServices(callback) => self.services.add(callback),
            Msg::Wake => {}
        }
    }

    /// Commits every waiting charge claim in one transaction and answers each. A failure
    /// answers `Err` at once: the client retries later, the charge is never used twice.
    fn commit_claims(&mut self) {
        if self.claims.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut self.claims);
        let claims: Vec<ChargeClaim> = waiting.iter().map(|(c, _)| c.clone()).collect();
        let stats = &self.handle.stats;
        match self.store.claim_charges(&claims) {
            Ok(first) => {
                self.mark_up(true);
                for ((_, reply), first) in waiting.into_iter().zip(first) {
                    let counter = if first {
                        &stats.charges_claimed
                    } else {
                        &stats.charges_replayed
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    let _ = reply.send(Ok(first));
                }
            }
            Err(e) => {
                self.mark_up(false);
                stats
                    .claim_errors
                    .fetch_add(claims.len() as u64, Ordering::Relaxed);
                tracing::warn!(claims = claims.len(), "store: cannot claim charges: {e}");
                for (_, reply) in waiting {
                    let _ = reply.send(Err(()));
                }
            }
        }
    }

    fn prune_charges(&mut self) {
        let before = unix_now().saturating_sub(PRUNE_AFTER_EXPIRY);
        match self.store.prune_charges(before) {
            Ok(n) if n > 0 => tracing::debug!(pruned = n, "store: consumed charges pruned"),
            Ok(_) => {}
            Err(e) => tracing::warn!("store: cannot prune consumed charges: {e}"),
        }
    }

    fn push(&mut self, op: Op) {
        if self.pending.len() >= MAX_PENDING {
            let stats = &self.handle.stats;
            match op {
                Op::SessionSettle { .. } => &stats.settles_dropped,
                _ => &stats.dropped,
            }
            .fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.batch_since.get_or_insert_with(Instant::now);
        self.pending.push(op);
    }

    /// Takes every event the bridge has queued; settlements become ledger updates.
    fn drain_events(&mut self) {
        let Some(events) = self.events.as_mut() else {
            return;
        };
        let mut cx = Context::from_waker(&self.waker);
        let mut settled = Vec::new();
        let ended = loop {
            match Pin::new(&mut *events).poll_next(&mut cx) {
                Poll::Ready(Some(Event::InvoiceSettled { payment_hash, .. })) => {
                    settled.push(payment_hash)
                }
                Poll::Ready(Some(_)) => {} // our own TokenRevoked echoes, among others
                Poll::Ready(None) => break true,
                Poll::Pending => break false,
            }
        };
        if ended {
            self.events = None;
        }
        let now = unix_now();
        for payment_hash in settled {
            self.push(Op::Settle {
                payment_hash,
                settled_at: now,
            });
        }
    }

    /// Commits pending ops in batches of at most [`MAX_BATCH`]. On failure keeps them for a
    /// retry with backoff (a final flush at shutdown tries once).
    fn flush(&mut self, now: Instant, stopping: bool) {
        while !self.pending.is_empty() {
            let n = self.pending.len().min(MAX_BATCH);
            match self.store.apply(&self.pending[..n]) {
                Ok(()) => {
                    let stats = &self.handle.stats;
                    for op in self.pending.drain(..n) {
                        match op {
                            Op::Challenge(_) | Op::Transaction { .. } => &stats.challenges_recorded,
                            Op::Settle { .. } => &stats.settlements_recorded,
                            Op::SessionSettle { .. } => &stats.settles_recorded,
                            Op::PendingUsage(_) | Op::UsageDelivered(_) => &stats.usage_recorded,
                            Op::BundleCreated(_) | Op::BundleDebited { .. } => {
                                &stats.usage_recorded
                            }
                        }
                        .fetch_add(1, Ordering::Relaxed);
                    }
                    stats.batches_committed.fetch_add(1, Ordering::Relaxed);
                    self.mark_up(true);
                    self.retry_at = None;
                    self.backoff = Duration::from_millis(50);
                }
                Err(e) => {
                    self.handle
                        .stats
                        .write_errors
                        .fetch_add(1, Ordering::Relaxed);
                    self.mark_up(false);
                    tracing::warn!(pending = self.pending.len(), retry_in = ?self.backoff, "store: write failed: {e}");
                    self.retry_at = Some(now + self.backoff);
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    if stopping {
                        return;
                    }
                    break;
                }
            }
        }
        self.batch_since = (!self.pending.is_empty()).then_some(now);
    }

    fn mark_up(&self, up: bool) {
        self.handle.stats.up.store(u64::from(up), Ordering::Relaxed);
    }

    /// Publishes revocations this instance has not seen yet.
    fn poll_revocations(&mut self) {
        match self
            .store
            .revoked_since((self.cursor - CURSOR_LOOKBACK).max(0))
        {
            Ok((ids, cursor)) => {
                self.cursor = self.cursor.max(cursor);
                for id in ids {
                    if lock(&self.handle.revoked).insert(id) {
                        (self.publish)(id);
                        self.handle
                            .stats
                            .revocations_published
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::info!(token_id = %hex::encode(id), "token revoked");
                    }
                }
            }
            Err(e) => {
                self.handle
                    .stats
                    .poll_errors
                    .fetch_add(1, Ordering::Relaxed);
                self.mark_up(false);
                tracing::warn!("store: cannot read revocations: {e}");
            }
        }
    }
}
