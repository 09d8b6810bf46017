//! The Payment scheme's `session` intent on the data path: a deposit paid once, then requests
//! debited from its balance (`bearer`), credited again (`topUp`) and closed with a refund of
//! what is left (`close`). The wire formats and the stateless checks are [`crate::mpp`]'s; the
//! database rows, idle closes and refunds are the store thread's ([`crate::store`]). This module
//! owns the balance a core may spend without asking anyone, and who spends it.
//!
//! **Leases.** Each session is owned by one worker core (its id hashed as a token id is, so the
//! owner is the same for every request). The owner holds a *lease*: sats the database set aside
//! for this instance (`mpp_session_leases`), which it debits with no database round trip; other
//! cores ask the owner through the peer inbox, as rate limits do. `open` leases the whole deposit
//! to the opener and `topUp` its credit; when the lease runs short the owner asks the store for
//! more, and the database grants at most what no instance has leased or spent, so a balance is
//! never spent twice across instances sharing PostgreSQL. Debits are written behind (at most once
//! a second per session, [`sync_forever`]); an idle lease goes back to the database. A crash loses
//! at most the last second's debits (in the client's favour); the restarted instance returns its
//! leases (the store, at start).
//!
//! On a service with a pricer, a bearer's debit is an estimate that the pricer's `SettleSession`
//! corrects once its response ended ([`adjust`], on the owner core like every debit).
//!
//! It never blocks a core: every store call is a message and an awaited reply with a deadline.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;

use crate::config::Sessions;
use crate::error::{SessionAnswer, Synthetic};
use crate::mpp::{self, CloseReceipt, Receipt, RefundStatus, SessionRequest, SessionStep};
use crate::ratelimit::{owner_core, ClientKey};
use crate::store::{CloseOutcome, LeaseOutcome, OpenOutcome, RefundRow, SessionOpen, TopUpOutcome};

mod adjust;

pub use adjust::send_adjust;

use super::limit::PeerMsg;
use super::payment::{resource_secret, PaymentSettings, Refusal};
use super::CoreCtx;

/// How many debits of the current unit price a lease asks for beyond the one at hand: few round
/// trips for a busy session, little stranded in one instance of a fleet.
const LEASE_UNITS: u64 = 32;
/// How long a close waits for other instances to hand their leases back before it forfeits
/// them (they return a lease once it was idle for [`lease_idle`]).
const CLOSE_WAIT_EXTRA: Duration = Duration::from_secs(2);
/// How long a core waits for a session answer from the owner core or the store.
const SESSION_WAIT: Duration = Duration::from_secs(15);

/// A session request that passed the stateless checks, waiting for the rate-limit phase.
#[derive(Debug)]
pub struct PendingSession {
    step: SessionStep,
    challenge_id: String,
    resource: Rc<str>,
    /// The route's static price now (0 under dynamic pricing): a bearer pays at least this.
    price: u64,
    now: u64,
}

impl PendingSession {
    /// The resource the credential was minted for (its fresh challenge on refusal).
    pub fn resource(&self) -> &str {
        &self.resource
    }
}

/// A bearer request's debit, for a pricer's `SettleSession` to reconcile once its response
/// ended ([`super::session_meter`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bearer {
    pub session_id: String,
    /// What the session was debited for the request (the estimate).
    pub debited: u64,
}

/// What a session request comes to after the rate-limit phase.
pub enum Outcome {
    /// Forward it; its 2xx answer carries this `Payment-Receipt`. A bearer names its debit.
    Forward(Rc<str>, Option<Box<Bearer>>),
    /// Answered here (topUp and close never reach the upstream).
    Answer(Synthetic),
    /// Refused: a fresh challenge (of the kind given) is the answer.
    Challenge(Offer),
    /// The store could not say: 503, never a free request.
    Unavailable,
}

/// Which session challenge a refused request is offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// The usual 402: every scheme the service takes, a deposit invoice for a new session.
    Fresh,
    /// The balance is short: a top-up invoice of `deposit` sats for this session.
    TopUp { session_id: String },
    /// The session is open but the echoed challenge expired: a bearer challenge (no invoice).
    Bearer,
}

/// Verifies a session credential for `resource` (HMAC under the resource's key). `Err(Offer)`
/// for refusals that have a better answer than a fresh 402 (an expired bearer or close).
pub fn verify(
    secret: &[u8; 32],
    resource: &str,
    credential: &mpp::Credential,
    price: u64,
    now: u64,
) -> Result<PendingSession, (Refusal, Offer)> {
    let key = resource_secret(secret, resource);
    match mpp::verify_session(&key, credential, None, now) {
        Ok(ok) => Ok(PendingSession {
            step: ok.step,
            challenge_id: ok.challenge_id,
            resource: resource.into(),
            price,
            now,
        }),
        Err(mpp::Rejection::Expired) => {
            let action = mpp::SessionPayload::from_value(&credential.payload)
                .ok()
                .and_then(|p| p.action());
            let offer = match action {
                Some(mpp::SessionAction::Bearer | mpp::SessionAction::Close) => Offer::Bearer,
                _ => Offer::Fresh,
            };
            Err((Refusal::Rejected(mpp::Rejection::Expired), offer))
        }
        Err(why) => Err((Refusal::Rejected(why), Offer::Fresh)),
    }
}

/// The core's side of sessions: the instance's lease-holder id and the sessions this core owns.
pub struct CoreSessions {
    holder: Rc<str>,
    slots: RefCell<HashMap<String, Slot>>,
}

/// A session this core owns: its lease and the debits not yet written.
#[derive(Debug)]
struct Slot {
    lease_left: u64,
    unsynced: u64,
    /// Settlements that cost less than debits already written: to take off `spent`.
    refund: u64,
    last_used: Instant,
}

impl CoreSessions {
    /// `holder`: this process's instance id (the store's lease rows name it).
    pub fn new(holder: &str) -> Self {
        CoreSessions {
            holder: holder.into(),
            slots: RefCell::new(HashMap::new()),
        }
    }

    /// Sessions this core holds a lease for (metrics, tests).
    pub fn held(&self) -> usize {
        self.slots.borrow().len()
    }
}

/// An operation on a session, run on its owner core.
#[derive(Debug)]
pub enum SessionOp {
    Open {
        session_id: String,
        payment_hash: [u8; 32],
        deposit: u64,
        debit: u64,
        return_invoice: String,
        idle_timeout_secs: u64,
    },
    Debit {
        session_id: String,
        amount: u64,
    },
    TopUp {
        session_id: String,
        credit_hash: [u8; 32],
        amount: u64,
    },
    Close {
        session_id: String,
    },
    /// A pricer's settlement of a bearer request: `delta` = its cost − the debit already taken.
    /// More is debited as far as the balance goes (never overdrawn); less is given back.
    Adjust {
        session_id: String,
        delta: i64,
    },
}

/// The owner core's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpReply {
    Done,
    /// `close`: the refund that was sent (after its fee budget) and how it went.
    Closed {
        refund_sats: u64,
        status: Option<RefundStatus>,
    },
    /// A top-up credited before (to this session): nothing new, still fine.
    Replayed,
    /// Not enough balance (bearer).
    Short,
    /// Not enough here, but other instances hold leases on the balance (they hand idle ones
    /// back): try again shortly, rather than pay a top-up the balance may not need.
    Busy,
    /// No such open session (or a payment hash already used elsewhere).
    Refused,
    Unavailable,
}

/// A message for the owner core: the op and where its reply goes.
pub struct SessionCall {
    pub op: SessionOp,
    pub reply: oneshot::Sender<OpReply>,
}

/// After the rate-limit phase: runs the session action and says what the request comes to.
pub async fn settle(
    core: &CoreCtx,
    settings: &PaymentSettings,
    pending: PendingSession,
) -> Outcome {
    let Some(sessions) = settings.sessions else {
        return Outcome::Challenge(Offer::Fresh);
    };
    let (id, now) = (pending.challenge_id.clone(), pending.now);
    let receipt = |reference: &str| -> Rc<str> {
        Receipt {
            timestamp: mpp::time::format_rfc3339(now),
            reference: reference.to_owned(),
            challenge_id: id.clone(),
        }
        .to_header()
        .into()
    };
    match pending.step {
        SessionStep::Open {
            payment_hash,
            deposit_sats,
            return_invoice,
        } => {
            let debit = pending.price.max(1);
            if deposit_sats < debit {
                return Outcome::Challenge(Offer::Fresh);
            }
            if core.routes().strict_verify
                && !super::settled::require_settled(core, payment_hash).await
            {
                return Outcome::Challenge(Offer::Fresh);
            }
            let network = settings.bridge_network;
            if let Err(why) = lnd_bridge::check_return_invoice(&return_invoice, network, now) {
                tracing::debug!(
                    core = core.id,
                    "session open refused: return invoice: {why}"
                );
                return Outcome::Challenge(Offer::Fresh);
            }
            let session_id = hex::encode(payment_hash);
            let op = SessionOp::Open {
                session_id: session_id.clone(),
                payment_hash,
                deposit: deposit_sats,
                debit,
                return_invoice,
                idle_timeout_secs: sessions.idle_timeout_secs,
            };
            match call(core, &session_id, op).await {
                OpReply::Done => Outcome::Forward(receipt(&session_id), None),
                OpReply::Unavailable => Outcome::Unavailable,
                _ => Outcome::Challenge(Offer::Fresh),
            }
        }
        SessionStep::Bearer {
            session_id,
            preimage,
            amount_sats,
        } => {
            if !owns_preimage(&session_id, &preimage) {
                return Outcome::Challenge(Offer::Fresh);
            }
            // Go debits whatever amount the echoed challenge names, so a client picks the
            // cheapest it was ever offered: never less than the price now.
            let amount = amount_sats.max(pending.price);
            let op = SessionOp::Debit {
                session_id: session_id.clone(),
                amount,
            };
            match call(core, &session_id, op).await {
                OpReply::Done => {
                    let receipt = receipt(&session_id);
                    let bearer = Bearer {
                        session_id,
                        debited: amount,
                    };
                    Outcome::Forward(receipt, Some(Box::new(bearer)))
                }
                OpReply::Short => Outcome::Challenge(Offer::TopUp { session_id }),
                OpReply::Busy | OpReply::Unavailable => Outcome::Unavailable,
                _ => Outcome::Challenge(Offer::Fresh),
            }
        }
        SessionStep::TopUp {
            session_id,
            payment_hash,
            deposit_sats,
        } => {
            if core.routes().strict_verify
                && !super::settled::require_settled(core, payment_hash).await
            {
                return Outcome::Challenge(Offer::TopUp { session_id });
            }
            let op = SessionOp::TopUp {
                session_id: session_id.clone(),
                credit_hash: payment_hash,
                amount: deposit_sats,
            };
            match call(core, &session_id, op).await {
                OpReply::Done | OpReply::Replayed => {
                    Outcome::Answer(Synthetic::Session(Box::new(SessionAnswer {
                        body: r#"{"status":"ok"}"#.to_owned(),
                        receipt: receipt(&session_id).to_string(),
                    })))
                }
                OpReply::Unavailable => Outcome::Unavailable,
                _ => Outcome::Challenge(Offer::Fresh),
            }
        }
        SessionStep::Close {
            session_id,
            preimage,
        } => {
            if !owns_preimage(&session_id, &preimage) {
                return Outcome::Challenge(Offer::Fresh);
            }
            let op = SessionOp::Close {
                session_id: session_id.clone(),
            };
            match call(core, &session_id, op).await {
                OpReply::Closed {
                    refund_sats,
                    status,
                } => Outcome::Answer(close_answer(&session_id, refund_sats, status, now)),
                OpReply::Unavailable => Outcome::Unavailable,
                _ => Outcome::Challenge(Offer::Fresh),
            }
        }
    }
}

/// `sha256(preimage)` is the session's deposit hash (its id, in hex).
fn owns_preimage(session_id: &str, preimage: &[u8; 32]) -> bool {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(session_id, &mut hash).is_ok() && mpp::preimage_matches(preimage, &hash)
}

/// `200 {"status":"closed","refundSats":N,"refundStatus":…}` and the close receipt. A refund
/// still in flight reads `pending` in the body; the receipt (whose statuses are Go's three)
/// then leaves the status out, as Go's does when it does not know.
fn close_answer(
    session_id: &str,
    refund_sats: u64,
    status: Option<RefundStatus>,
    now: u64,
) -> Synthetic {
    let word = status.map_or("pending", RefundStatus::as_str);
    let body =
        format!(r#"{{"status":"closed","refundSats":{refund_sats},"refundStatus":"{word}"}}"#);
    let receipt = CloseReceipt {
        timestamp: mpp::time::format_rfc3339(now),
        session_id: session_id.to_owned(),
        refund_sats: i64::try_from(refund_sats).unwrap_or(i64::MAX),
        refund_status: status,
    }
    .to_header();
    Synthetic::Session(Box::new(SessionAnswer { body, receipt }))
}

/// Runs `op` on the session's owner core: here, or through that core's peer inbox.
async fn call(core: &CoreCtx, session_id: &str, op: SessionOp) -> OpReply {
    let owner = owner_of(session_id, core.peers.len());
    if owner == core.id {
        return run(core, op).await;
    }
    let (reply, rx) = oneshot::channel();
    let msg = PeerMsg::Session(SessionCall { op, reply });
    if core.peers[owner].unbounded_send(msg).is_err() {
        return OpReply::Unavailable;
    }
    match monoio::time::timeout(SESSION_WAIT, rx).await {
        Ok(Ok(reply)) => reply,
        _ => OpReply::Unavailable,
    }
}

/// The core that owns `session_id`: its deposit hash placed as a token id is.
pub fn owner_of(session_id: &str, cores: usize) -> usize {
    let mut hash = [0u8; 32];
    let _ = hex::decode_to_slice(session_id, &mut hash);
    owner_core(&ClientKey::Token(hash), cores.max(1))
}

/// Serves an op another core sent: on a task of its own, so a slow store never holds up the
/// peer inbox (rate-limit decisions share it).
pub fn serve_call(core: &Rc<CoreCtx>, call: SessionCall) {
    let core = core.clone();
    monoio::spawn(async move {
        let reply = run(&core, call.op).await;
        let _ = call.reply.send(reply);
    });
}

/// Runs an op on this (the owner) core.
async fn run(core: &CoreCtx, op: SessionOp) -> OpReply {
    let (Some(store), Some(sessions)) = (core.store.as_ref(), core.sessions.as_ref()) else {
        return OpReply::Unavailable;
    };
    let holder = sessions.holder.to_string();
    let now = super::auth::now_unix();
    match op {
        SessionOp::Open {
            session_id,
            payment_hash,
            deposit,
            debit,
            return_invoice,
            idle_timeout_secs,
        } => {
            let open = SessionOpen {
                session_id: session_id.clone(),
                payment_hash,
                deposit_sats: deposit,
                return_invoice,
                idle_timeout_secs,
                holder,
                now,
            };
            match wait(store.try_open_session(open)).await {
                Some(OpenOutcome::Opened) => {
                    let mut slots = sessions.slots.borrow_mut();
                    let slot = slots.entry(session_id).or_insert_with(Slot::empty);
                    slot.lease_left += deposit - debit;
                    slot.unsynced += debit;
                    slot.last_used = Instant::now();
                    OpReply::Done
                }
                Some(OpenOutcome::Duplicate) => OpReply::Refused,
                None => OpReply::Unavailable,
            }
        }
        SessionOp::Debit { session_id, amount } => {
            debit(core, sessions, &session_id, amount, &holder, now).await
        }
        SessionOp::TopUp {
            session_id,
            credit_hash,
            amount,
        } => match wait(store.try_top_up(&session_id, credit_hash, amount, &holder, now)).await {
            Some(TopUpOutcome::Applied) => {
                let mut slots = sessions.slots.borrow_mut();
                let slot = slots.entry(session_id).or_insert_with(Slot::empty);
                slot.lease_left += amount;
                slot.last_used = Instant::now();
                OpReply::Done
            }
            Some(TopUpOutcome::Replayed) => OpReply::Replayed,
            Some(TopUpOutcome::Foreign | TopUpOutcome::NotOpen) => OpReply::Refused,
            None => OpReply::Unavailable,
        },
        SessionOp::Close { session_id } => close(core, sessions, &session_id, &holder).await,
        SessionOp::Adjust { session_id, delta } => {
            adjust::adjust(core, sessions, &session_id, delta, &holder, now).await
        }
    }
}

impl Slot {
    fn empty() -> Slot {
        Slot {
            lease_left: 0,
            unsynced: 0,
            refund: 0,
            last_used: Instant::now(),
        }
    }
}

/// A bearer's debit: from the lease, topped up from the database when it runs short.
async fn debit(
    core: &CoreCtx,
    sessions: &CoreSessions,
    session_id: &str,
    amount: u64,
    holder: &str,
    now: u64,
) -> OpReply {
    if take(sessions, session_id, amount) {
        return OpReply::Done;
    }
    let Some(store) = core.store.as_ref() else {
        return OpReply::Unavailable;
    };
    let want = amount.saturating_mul(LEASE_UNITS);
    match wait(store.try_lease(session_id, want, holder, now)).await {
        Some(LeaseOutcome::Granted { granted, .. }) => {
            {
                let mut slots = sessions.slots.borrow_mut();
                let slot = slots
                    .entry(session_id.to_owned())
                    .or_insert_with(Slot::empty);
                slot.lease_left += granted;
            }
            if take(sessions, session_id, amount) {
                return OpReply::Done;
            }
            // Short here: is the rest leased to other instances? (Our own lease row is what we
            // have left plus the debits not yet written.)
            let mine = sessions
                .slots
                .borrow()
                .get(session_id)
                .map_or(0, |s| s.lease_left + s.unsynced);
            match wait(store.try_session(session_id)).await {
                Some(Some(row)) if row.leased_sats > mine => OpReply::Busy,
                Some(_) => OpReply::Short,
                None => OpReply::Unavailable,
            }
        }
        Some(LeaseOutcome::NotOpen) => {
            // Closed elsewhere (idle, another instance): what this core held is void.
            if let Some(slot) = sessions.slots.borrow_mut().remove(session_id) {
                if slot.unsynced > 0 {
                    store.settle_session(session_id, holder, slot.unsynced, 0, now);
                }
            }
            OpReply::Refused
        }
        None => OpReply::Unavailable,
    }
}

/// Debits `amount` from the lease if it covers it (the one exact check: no await inside).
fn take(sessions: &CoreSessions, session_id: &str, amount: u64) -> bool {
    let mut slots = sessions.slots.borrow_mut();
    let Some(slot) = slots.get_mut(session_id) else {
        return false;
    };
    if slot.lease_left < amount {
        return false;
    }
    slot.lease_left -= amount;
    slot.unsynced += amount;
    slot.last_used = Instant::now();
    true
}

/// Closes the session: this core's debits and unused lease go back in the same transaction;
/// other instances' leases are waited for, then forfeited.
async fn close(core: &CoreCtx, sessions: &CoreSessions, session_id: &str, holder: &str) -> OpReply {
    let Some(store) = core.store.as_ref() else {
        return OpReply::Unavailable;
    };
    let mut taken = sessions.slots.borrow_mut().remove(session_id);
    if let Some(slot) = taken.as_mut().filter(|s| s.refund > 0) {
        // A settlement's give-back goes in before the close counts the refund (queued first).
        if store.refund_session(session_id, holder, slot.refund, super::auth::now_unix()) {
            slot.refund = 0;
        }
    }
    let (mut used, mut returned) = taken
        .as_ref()
        .map_or((0, 0), |s| (s.unsynced, s.lease_left));
    let idle = lease_idle(core);
    let give_up = Instant::now() + idle + CLOSE_WAIT_EXTRA;
    loop {
        let now = super::auth::now_unix();
        let reply = wait(store.try_close_session(session_id, holder, used, returned, now)).await;
        if reply.is_none() && (used, returned) != (0, 0) {
            // The store could not say: keep what this core holds for the next attempt.
            if let Some(slot) = taken {
                sessions
                    .slots
                    .borrow_mut()
                    .insert(session_id.to_owned(), slot);
            }
            return OpReply::Unavailable;
        }
        // Whatever this core held went back with the first attempt.
        (used, returned) = (0, 0);
        match reply {
            Some(CloseOutcome::Closed { refund }) => return closed(&refund),
            Some(CloseOutcome::Outstanding { .. }) if Instant::now() < give_up => {
                monoio::time::sleep(Duration::from_millis(250)).await;
            }
            Some(CloseOutcome::Outstanding { leased }) => {
                tracing::warn!(
                    core = core.id,
                    session = session_id,
                    leased,
                    "closing a session other instances still hold leases on: forfeiting them"
                );
                return match wait(store.try_force_close(session_id, now)).await {
                    Some(CloseOutcome::Closed { refund }) => closed(&refund),
                    Some(_) => OpReply::Refused,
                    None => OpReply::Unavailable,
                };
            }
            Some(CloseOutcome::NotOpen) => return OpReply::Refused,
            None => return OpReply::Unavailable,
        }
    }
}

/// The close reply for a refund row: what was sent, and how it went when known.
fn closed(refund: &RefundRow) -> OpReply {
    use crate::store::RefundStatus as Stored;
    let status = match refund.status {
        Stored::Pending => None,
        Stored::Succeeded => Some(RefundStatus::Succeeded),
        Stored::Failed => Some(RefundStatus::Failed),
        Stored::Skipped => Some(RefundStatus::Skipped),
    };
    OpReply::Closed {
        refund_sats: refund.amount_sats,
        status,
    }
}

/// Awaits a store reply within [`SESSION_WAIT`]; `None` when the store could not say.
async fn wait<T>(rx: Option<oneshot::Receiver<Result<T, ()>>>) -> Option<T> {
    match monoio::time::timeout(SESSION_WAIT, rx?).await {
        Ok(Ok(Ok(v))) => Some(v),
        _ => None,
    }
}

/// How long a lease may sit unused on a core before it goes back to the database.
fn lease_idle(core: &CoreCtx) -> Duration {
    let idle = core
        .routes()
        .payment
        .as_ref()
        .and_then(|p| p.sessions)
        .map_or(300, |s| s.idle_timeout_secs);
    Duration::from_secs((idle / 2).clamp(1, 30))
}

/// The core's write-behind: once a second, each owned session's new debits go to the store, and
/// a lease idle for [`lease_idle`] goes back whole.
pub async fn sync_forever(core: Rc<CoreCtx>) {
    let (Some(store), Some(sessions)) = (core.store.clone(), core.sessions.as_ref()) else {
        return;
    };
    loop {
        monoio::time::sleep(Duration::from_secs(1)).await;
        let idle = lease_idle(&core);
        let now = super::auth::now_unix();
        let holder = &*sessions.holder;
        let mut slots = sessions.slots.borrow_mut();
        slots.retain(|id, slot| {
            let done = slot.last_used.elapsed() >= idle || core.shutdown.is_set();
            let returned = if done { slot.lease_left } else { 0 };
            if slot.unsynced > 0 || returned > 0 {
                // A full store queue keeps the debits here for the next tick.
                if !store.settle_session(id, holder, slot.unsynced, returned, now) {
                    return true;
                }
                slot.unsynced = 0;
                slot.lease_left -= returned;
            }
            // A settlement's give-back, after the debits it was taken from.
            if slot.refund > 0 {
                if !store.refund_session(id, holder, slot.refund, now) {
                    return true;
                }
                slot.refund = 0;
            }
            !done
        });
        drop(slots);
        if core.shutdown.is_set() {
            return;
        }
    }
}

/// Renders the session challenge of a 402: `deposit_invoice` and its amount for a fresh session
/// or a top-up (the deposit is the unit price × the multiplier unless a pricer quoted it), none
/// for a bearer challenge.
pub fn challenge(
    secret: &[u8; 32],
    settings: &PaymentSettings,
    sessions: &Sessions,
    resource: &str,
    price: u64,
    deposit_invoice: Option<(&lnd_bridge::Invoice, u64)>,
    now: u64,
) -> String {
    let mut request = SessionRequest {
        amount: price.to_string(),
        currency: "sat".to_owned(),
        idle_timeout: sessions.idle_timeout_secs.to_string(),
        ..SessionRequest::default()
    };
    if let Some((invoice, deposit)) = deposit_invoice {
        request.deposit_amount = deposit.to_string();
        request.deposit_invoice = invoice.payment_request.clone();
        request.payment_hash = hex::encode(invoice.payment_hash);
    }
    let key = resource_secret(secret, resource);
    mpp::ChallengeParams::session(&key, &settings.realm, now, &request).render()
}

/// A session's deposit (and top-up) for a unit price.
pub fn deposit_of(price: u64, sessions: &Sessions) -> u64 {
    price.max(1).saturating_mul(sessions.deposit_multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preimage_must_hash_to_the_session_id() {
        let preimage = [7u8; 32];
        let hash: [u8; 32] = sha2::Digest::finalize(sha2::Digest::chain_update(
            <sha2::Sha256 as sha2::Digest>::new(),
            preimage,
        ))
        .into();
        assert!(owns_preimage(&hex::encode(hash), &preimage));
        assert!(!owns_preimage(&hex::encode(hash), &[8u8; 32]));
        assert!(!owns_preimage("not hex", &preimage));
    }

    #[test]
    fn close_answers_say_pending_until_the_refund_is_known() {
        let Synthetic::Session(a) = close_answer("ab", 19, None, 0) else {
            panic!("not a session answer")
        };
        assert_eq!(
            a.body,
            r#"{"status":"closed","refundSats":19,"refundStatus":"pending"}"#
        );
        let Synthetic::Session(a) = close_answer("ab", 0, Some(RefundStatus::Skipped), 0) else {
            panic!("not a session answer")
        };
        assert_eq!(
            a.body,
            r#"{"status":"closed","refundSats":0,"refundStatus":"skipped"}"#
        );
    }

    #[test]
    fn owners_spread_over_cores_and_agree() {
        let id = hex::encode([0x5au8; 32]);
        for cores in 1..6 {
            let owner = owner_of(&id, cores);
            assert!(owner < cores);
            assert_eq!(owner, owner_of(&id, cores));
        }
    }
}
