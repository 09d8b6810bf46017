//! Payment sessions on the store thread: the [`StoreHandle`] calls worker cores make (each
//! answered on its own oneshot as soon as its transaction commits; debits written behind in the
//! ledger's batches), their execution in arrival order, and the idle sweep that closes sessions
//! nobody used for their idle timeout.
//!
//! Order: the channel is FIFO and a session call first commits every write queued before it, so
//! a close sees every debit (settle) its core sent earlier.

use std::sync::atomic::Ordering;

use crossbeam_channel::TrySendError;
use futures_channel::oneshot;

use super::{Msg, StoreHandle, Worker};
use crate::store::db::{unix_now, DbError, Key32, Op};
use crate::store::session::{
    CloseOutcome, LeaseOutcome, OpenOutcome, SessionOpen, SessionRow, TopUpOutcome,
};

/// How often open sessions are checked for idleness (and failed refunds for a retry).
pub const IDLE_SWEEP: std::time::Duration = if cfg!(test) {
    std::time::Duration::from_millis(200)
} else {
    std::time::Duration::from_secs(10)
};
/// Most idle sessions closed per sweep.
const SWEEP_LIMIT: u32 = 256;

/// A session call's answer: `Err(())` when the database could not say (the request gets a
/// 503; nothing was decided).
pub type SessionReply<T> = oneshot::Receiver<Result<T, ()>>;

type Tx<T> = oneshot::Sender<Result<T, ()>>;

/// A session call on its way to the store thread.
pub(super) enum SessionMsg {
    Open(Box<SessionOpen>, Tx<OpenOutcome>),
    TopUp {
        session_id: String,
        credit_hash: Key32,
        amount_sats: u64,
        holder: String,
        now: u64,
        reply: Tx<TopUpOutcome>,
    },
    Lease {
        session_id: String,
        want_sats: u64,
        holder: String,
        now: u64,
        reply: Tx<LeaseOutcome>,
    },
    Close {
        session_id: String,
        holder: String,
        used_sats: u64,
        returned_sats: u64,
        now: u64,
        reply: Tx<CloseOutcome>,
    },
    ForceClose {
        session_id: String,
        now: u64,
        reply: Tx<CloseOutcome>,
    },
    Get {
        session_id: String,
        reply: Tx<Option<SessionRow>>,
    },
}

impl SessionMsg {
    /// Answers "the database could not say".
    fn fail(self) {
        match self {
            SessionMsg::Open(_, reply) => drop(reply.send(Err(()))),
            SessionMsg::TopUp { reply, .. } => drop(reply.send(Err(()))),
            SessionMsg::Lease { reply, .. } => drop(reply.send(Err(()))),
            SessionMsg::Close { reply, .. } | SessionMsg::ForceClose { reply, .. } => {
                drop(reply.send(Err(())))
            }
            SessionMsg::Get { reply, .. } => drop(reply.send(Err(()))),
        }
    }
}

impl StoreHandle {
    fn call<T>(&self, make: impl FnOnce(Tx<T>) -> SessionMsg) -> Option<SessionReply<T>> {
        let (tx, rx) = oneshot::channel();
        self.tx.try_send(Msg::Session(make(tx))).ok().map(|()| rx)
    }

    /// Opens a session: credits the deposit hash, records the session and leases the whole
    /// deposit to `open.holder`. `None` when the store thread is behind (503).
    pub fn try_open_session(&self, open: SessionOpen) -> Option<SessionReply<OpenOutcome>> {
        self.call(|reply| SessionMsg::Open(Box::new(open), reply))
    }

    /// Credits a top-up paid to `credit_hash`, once per hash; `holder`'s lease grows by it.
    pub fn try_top_up(
        &self,
        session_id: &str,
        credit_hash: Key32,
        amount_sats: u64,
        holder: &str,
        now: u64,
    ) -> Option<SessionReply<TopUpOutcome>> {
        self.call(|reply| SessionMsg::TopUp {
            session_id: session_id.to_owned(),
            credit_hash,
            amount_sats,
            holder: holder.to_owned(),
            now,
            reply,
        })
    }

    /// Leases min(`want_sats`, available) more of the balance to `holder`.
    pub fn try_lease(
        &self,
        session_id: &str,
        want_sats: u64,
        holder: &str,
        now: u64,
    ) -> Option<SessionReply<LeaseOutcome>> {
        self.call(|reply| SessionMsg::Lease {
            session_id: session_id.to_owned(),
            want_sats,
            holder: holder.to_owned(),
            now,
            reply,
        })
    }

    /// Writes `holder`'s debits behind (batched like the ledger; no answer): spent += used,
    /// the lease −= used + returned. False (and counted) when the store thread is behind: keep
    /// the debits and send them again later.
    pub fn settle_session(
        &self,
        session_id: &str,
        holder: &str,
        used_sats: u64,
        returned_sats: u64,
        now: u64,
    ) -> bool {
        let op = Op::SessionSettle {
            session_id: session_id.to_owned(),
            holder: holder.to_owned(),
            used_sats,
            returned_sats,
            refunded_sats: 0,
            now,
        };
        self.write_settle(op)
    }

    /// Takes `refunded_sats` off the session's `spent` (at most down to 0, only while it is
    /// open): a pricer's settlement that cost less than the debit already written. Queued like
    /// [`Self::settle_session`] (after it, in order); false when the store thread is behind.
    pub fn refund_session(
        &self,
        session_id: &str,
        holder: &str,
        refunded_sats: u64,
        now: u64,
    ) -> bool {
        self.write_settle(Op::SessionSettle {
            session_id: session_id.to_owned(),
            holder: holder.to_owned(),
            used_sats: 0,
            returned_sats: 0,
            refunded_sats,
            now,
        })
    }

    fn write_settle(&self, op: Op) -> bool {
        match self.tx.try_send(Msg::Write(op)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.settles_dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Settles `holder` (its remaining lease goes back), then closes the session unless other
    /// holders still lease part of it (`Outstanding`: retry, then force). A close answers with
    /// its refund's outcome when the payment ends within 10 s, else with status `pending`.
    pub fn try_close_session(
        &self,
        session_id: &str,
        holder: &str,
        used_sats: u64,
        returned_sats: u64,
        now: u64,
    ) -> Option<SessionReply<CloseOutcome>> {
        self.call(|reply| SessionMsg::Close {
            session_id: session_id.to_owned(),
            holder: holder.to_owned(),
            used_sats,
            returned_sats,
            now,
            reply,
        })
    }

    /// Closes the session, forfeiting every lease still held (settle your own first with
    /// [`Self::settle_session`]: the queue keeps the order). Answers like a close.
    pub fn try_force_close(
        &self,
        session_id: &str,
        now: u64,
    ) -> Option<SessionReply<CloseOutcome>> {
        self.call(|reply| SessionMsg::ForceClose {
            session_id: session_id.to_owned(),
            now,
            reply,
        })
    }

    /// Reads the session (after every write queued before this call).
    pub fn try_session(&self, session_id: &str) -> Option<SessionReply<Option<SessionRow>>> {
        self.call(|reply| SessionMsg::Get {
            session_id: session_id.to_owned(),
            reply,
        })
    }
}

/// Answers `reply` with `result` (a database error is logged, counted and answered `Err`).
fn answer<T>(worker: &Worker, reply: Tx<T>, result: Result<T, DbError>, what: &str) {
    match result {
        Ok(v) => {
            worker.mark_up(true);
            let _ = reply.send(Ok(v));
        }
        Err(e) => worker.session_failed(what, &e, reply),
    }
}

impl Worker {
    fn session_failed<T>(&self, what: &str, e: &DbError, reply: Tx<T>) {
        self.mark_up(false);
        self.handle
            .stats
            .session_errors
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!("store: cannot {what}: {e}");
        let _ = reply.send(Err(()));
    }

    /// Runs one session call, after committing every write queued before it.
    pub(super) fn session_call(&mut self, msg: SessionMsg) {
        if !self.flush_before_call() {
            self.handle
                .stats
                .session_errors
                .fetch_add(1, Ordering::Relaxed);
            msg.fail();
            return;
        }
        let stats = self.handle.stats.clone();
        match msg {
            SessionMsg::Open(open, reply) => {
                let result = self.store.open_session(&open);
                if let Ok(OpenOutcome::Opened) = result {
                    stats.sessions_opened.fetch_add(1, Ordering::Relaxed);
                }
                answer(self, reply, result, "open a session");
            }
            SessionMsg::TopUp {
                session_id,
                credit_hash,
                amount_sats,
                holder,
                now,
                reply,
            } => {
                let result = self
                    .store
                    .top_up(&session_id, credit_hash, amount_sats, &holder, now);
                if let Ok(TopUpOutcome::Applied) = result {
                    stats.topups_applied.fetch_add(1, Ordering::Relaxed);
                }
                answer(self, reply, result, "top up a session");
            }
            SessionMsg::Lease {
                session_id,
                want_sats,
                holder,
                now,
                reply,
            } => {
                let result = self.store.lease(&session_id, want_sats, &holder, now);
                answer(self, reply, result, "lease a session's balance");
            }
            SessionMsg::Close {
                session_id,
                holder,
                used_sats,
                returned_sats,
                now,
                reply,
            } => {
                let result =
                    self.store
                        .close_session(&session_id, &holder, used_sats, returned_sats, now);
                self.closed(result, reply, "close a session");
            }
            SessionMsg::ForceClose {
                session_id,
                now,
                reply,
            } => {
                let result = self.store.force_close(&session_id, now);
                self.closed(result, reply, "force-close a session");
            }
            SessionMsg::Get { session_id, reply } => {
                let result = self.store.session(&session_id);
                answer(self, reply, result, "read a session");
            }
        }
    }

    /// A close's answer: a closed session's refund is started, and the answer waits for it.
    fn closed(
        &mut self,
        result: Result<CloseOutcome, DbError>,
        reply: Tx<CloseOutcome>,
        what: &str,
    ) {
        match result {
            Ok(CloseOutcome::Closed { refund }) => {
                self.mark_up(true);
                self.handle
                    .stats
                    .sessions_closed
                    .fetch_add(1, Ordering::Relaxed);
                self.start_refund(refund, Some(reply));
            }
            other => answer(self, reply, other, what),
        }
    }

    /// Commits the writes queued so far (settles included); false when they cannot commit now
    /// (the database is down), so a call that must see them is refused instead.
    fn flush_before_call(&mut self) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        let now = std::time::Instant::now();
        if self.retry_at.is_some_and(|r| now < r) {
            return false;
        }
        self.flush(now, false);
        self.pending.is_empty()
    }

    /// Closes the sessions idle past their timeout (nobody leasing, no debit since) and starts
    /// their refunds; then retries the refunds due.
    pub(super) fn idle_sweep(&mut self) {
        if !self.flush_before_call() {
            return;
        }
        let now = unix_now();
        match self.store.idle_sessions(now, SWEEP_LIMIT) {
            Ok(idle) => {
                for session_id in idle {
                    match self
                        .store
                        .close_session(&session_id, &self.holder, 0, 0, now)
                    {
                        Ok(CloseOutcome::Closed { refund }) => {
                            self.handle
                                .stats
                                .sessions_closed
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::info!(
                                session_id,
                                refund_sats = refund.amount_sats,
                                "idle session closed"
                            );
                            self.start_refund(refund, None);
                        }
                        // Leased or closed meanwhile (another instance): not idle after all.
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(session_id, "store: cannot close an idle session: {e}");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!("store: cannot look for idle sessions: {e}"),
        }
        self.retry_refunds();
    }
}

#[cfg(test)]
mod tests;
