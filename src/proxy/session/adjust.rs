//! A pricer's settlement of a session bearer request (`SettleSession`, see
//! [`crate::proxy::session_meter`]) applied to the session's balance on its owner core:
//! spent += cost − estimate, through this core's lease, clamped to what is left (never
//! overdrawn) and never below what other requests spent.

use std::time::Instant;

use futures_channel::oneshot;

use crate::store::LeaseOutcome;

use super::{wait, CoreCtx, CoreSessions, OpReply, PeerMsg, SessionCall, SessionOp, Slot};

/// Runs a settlement's adjustment on the session's owner core (through its peer inbox, even
/// from the owner itself: this runs on a task of its own, off every request's path).
pub fn send_adjust(
    peers: &[futures_channel::mpsc::UnboundedSender<PeerMsg>],
    session_id: &str,
    delta: i64,
) -> bool {
    let Some(peer) = peers.get(super::owner_of(session_id, peers.len())) else {
        return false;
    };
    let (reply, _) = oneshot::channel();
    let op = SessionOp::Adjust {
        session_id: session_id.to_owned(),
        delta,
    };
    let msg = PeerMsg::Session(SessionCall { op, reply });
    peer.unbounded_send(msg).is_ok()
}

/// A settlement on the owner core. More than the estimate: the rest is debited from what is
/// left (a pending give-back first, then the lease, then a fresh lease), and what the balance
/// cannot cover is forgiven (Go clamps `spent` at the deposit). Less: the unwritten debits give
/// it back at once, the rest comes off `spent` at the next write-behind.
pub(super) async fn adjust(
    core: &CoreCtx,
    sessions: &CoreSessions,
    session_id: &str,
    delta: i64,
    holder: &str,
    now: u64,
) -> OpReply {
    let Ok(extra) = u64::try_from(delta) else {
        give_back(sessions, session_id, delta.unsigned_abs());
        return OpReply::Done;
    };
    let mut short = take_up_to(sessions, session_id, extra);
    if short > 0 {
        if let Some(store) = core.store.as_ref() {
            if let Some(LeaseOutcome::Granted { granted, .. }) =
                wait(store.try_lease(session_id, short, holder, now)).await
            {
                let mut slots = sessions.slots.borrow_mut();
                let slot = slots
                    .entry(session_id.to_owned())
                    .or_insert_with(Slot::empty);
                slot.lease_left += granted;
            }
        }
        short = take_up_to(sessions, session_id, short);
    }
    if short > 0 {
        tracing::debug!(
            core = core.id,
            session = session_id,
            short,
            "session settlement cost more than the balance left; the rest is forgiven"
        );
    }
    OpReply::Done
}

/// Gives `back` sats of a debit back: unwritten debits return to the lease at once, the rest
/// is taken off `spent` at the next write-behind.
fn give_back(sessions: &CoreSessions, session_id: &str, back: u64) {
    let mut slots = sessions.slots.borrow_mut();
    let slot = slots
        .entry(session_id.to_owned())
        .or_insert_with(Slot::empty);
    let unwritten = back.min(slot.unsynced);
    slot.unsynced -= unwritten;
    slot.lease_left += unwritten;
    slot.refund += back - unwritten;
}

/// Debits up to `amount` (a pending give-back, then the lease); what could not be taken.
fn take_up_to(sessions: &CoreSessions, session_id: &str, amount: u64) -> u64 {
    let mut slots = sessions.slots.borrow_mut();
    let Some(slot) = slots.get_mut(session_id) else {
        return amount;
    };
    let netted = amount.min(slot.refund);
    slot.refund -= netted;
    let taken = (amount - netted).min(slot.lease_left);
    slot.lease_left -= taken;
    slot.unsynced += taken;
    slot.last_used = Instant::now();
    amount - netted - taken
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settlements_net_against_the_lease_and_never_overdraw() {
        let sessions = CoreSessions::new("h");
        let id = "s";
        let state = |s: &CoreSessions| {
            let slots = s.slots.borrow();
            let slot = &slots[id];
            (slot.lease_left, slot.unsynced, slot.refund)
        };
        // Nothing held: nothing taken.
        assert_eq!(take_up_to(&sessions, id, 5), 5);
        // 10 leased, 4 debited and not yet written.
        sessions.slots.borrow_mut().insert(
            id.to_owned(),
            Slot {
                lease_left: 6,
                unsynced: 4,
                ..Slot::empty()
            },
        );
        // Less than the estimate: the unwritten debit goes back to the lease.
        give_back(&sessions, id, 3);
        assert_eq!(state(&sessions), (9, 1, 0));
        // More than was unwritten: the rest comes off `spent` later.
        give_back(&sessions, id, 5);
        assert_eq!(state(&sessions), (10, 0, 4));
        // A dearer settlement first cancels a pending give-back, then draws on the lease…
        assert_eq!(take_up_to(&sessions, id, 6), 0);
        assert_eq!(state(&sessions), (8, 2, 0));
        // …and never past it: what is short is reported, not overdrawn.
        assert_eq!(take_up_to(&sessions, id, 20), 12);
        assert_eq!(state(&sessions), (0, 10, 0));
    }
}
