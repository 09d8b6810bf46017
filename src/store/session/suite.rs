//! The session methods' behaviour, written once against `&mut dyn Store` and run by each
//! backend's tests (SQLite always, PostgreSQL when `APERTURE_TEST_PG` is set). Ids are random,
//! so runs sharing one PostgreSQL database do not see each other's rows.

use crate::store::db::{Key32, Store};
use crate::store::session::{
    CloseOutcome, LeaseOutcome, OpenOutcome, RefundStatus, SessionOpen, SessionStatus,
    TopUpOutcome, REFUND_RETRY_SECS,
};

/// Random ids for one test, and the sessions it opened (closed and their refunds marked paid
/// by [`Ids::tidy`], so a later store thread on the same database has nothing to sweep).
pub(crate) struct Ids {
    tag: String,
    opened: std::cell::RefCell<Vec<String>>,
}

impl Ids {
    pub(crate) fn new() -> Ids {
        Ids {
            tag: hex::encode(rand::random::<[u8; 6]>()),
            opened: Default::default(),
        }
    }

    pub(crate) fn tidy(&self, s: &mut dyn Store) {
        for id in self.opened.borrow().iter() {
            s.force_close(id, T0).unwrap();
            s.record_refund(id, RefundStatus::Succeeded, Some("test tidy"), T0)
                .unwrap();
        }
    }

    pub(crate) fn hash(&self) -> Key32 {
        rand::random()
    }

    pub(crate) fn holder(&self, name: &str) -> String {
        format!("{name}-{}", self.tag)
    }

    pub(crate) fn open(&self, hash: Key32, deposit: u64, holder: &str, now: u64) -> SessionOpen {
        self.opened.borrow_mut().push(hex::encode(hash));
        SessionOpen {
            session_id: hex::encode(hash),
            payment_hash: hash,
            deposit_sats: deposit,
            return_invoice: format!("lnbcrt1return{}", self.tag),
            idle_timeout_secs: 300,
            holder: holder.to_owned(),
            now,
        }
    }
}

const T0: u64 = 1_700_000_000;

/// Opens a session of `deposit` held whole by `holder`; returns its id.
pub(crate) fn opened(s: &mut dyn Store, ids: &Ids, deposit: u64, holder: &str) -> String {
    let open = ids.open(ids.hash(), deposit, holder, T0);
    assert_eq!(s.open_session(&open).unwrap(), OpenOutcome::Opened);
    open.session_id
}

fn granted(outcome: LeaseOutcome) -> u64 {
    match outcome {
        LeaseOutcome::Granted { granted, .. } => granted,
        LeaseOutcome::NotOpen => panic!("not open"),
    }
}

pub(crate) fn open_and_read(s: &mut dyn Store) {
    let ids = Ids::new();
    let a = ids.holder("a");
    let hash = ids.hash();
    let mut open = ids.open(hash, 1000, &a, T0);
    open.idle_timeout_secs = 42;
    assert_eq!(s.open_session(&open).unwrap(), OpenOutcome::Opened);
    let row = s.session(&open.session_id).unwrap().unwrap();
    assert_eq!(row.status, SessionStatus::Open);
    assert_eq!(row.payment_hash, hash);
    assert_eq!(
        (row.deposit_sats, row.spent_sats, row.leased_sats),
        (1000, 0, 1000)
    );
    assert_eq!(
        (row.idle_timeout_secs, row.created_at, row.updated_at),
        (42, T0, T0)
    );
    assert_eq!(row.return_invoice, open.return_invoice);
    assert_eq!(row.available_sats(), 0);
    // The same hash again, or the same session id with another hash: nothing changes.
    assert_eq!(s.open_session(&open).unwrap(), OpenOutcome::Duplicate);
    let mut other = ids.open(ids.hash(), 5, &a, T0);
    other.session_id = open.session_id.clone();
    assert_eq!(s.open_session(&other).unwrap(), OpenOutcome::Duplicate);
    let row = s.session(&open.session_id).unwrap().unwrap();
    assert_eq!((row.deposit_sats, row.leased_sats), (1000, 1000));
    // The rolled-back open did not credit its hash: it can open its own session.
    other.session_id = hex::encode(other.payment_hash);
    assert_eq!(s.open_session(&other).unwrap(), OpenOutcome::Opened);
    assert_eq!(s.session("no-such-session").unwrap(), None);
    assert_eq!(s.refund(&open.session_id).unwrap(), None);
    ids.tidy(s);
}

pub(crate) fn lease_and_settle(s: &mut dyn Store) {
    let ids = Ids::new();
    let (a, b) = (ids.holder("a"), ids.holder("b"));
    let id = opened(s, &ids, 100, &a);
    // A holds everything: B gets nothing, and learns the deposit hash.
    match s.lease(&id, 10, &b, T0).unwrap() {
        LeaseOutcome::Granted {
            granted,
            payment_hash,
        } => assert_eq!((granted, hex::encode(payment_hash)), (0, id.clone())),
        LeaseOutcome::NotOpen => panic!("not open"),
    }
    // A used 30 and gives 40 back: spent 30, A holds 30, 40 available.
    s.settle_session(&id, &a, 30, 40, T0 + 5).unwrap();
    let row = s.session(&id).unwrap().unwrap();
    assert_eq!(
        (row.spent_sats, row.leased_sats, row.updated_at),
        (30, 30, T0 + 5)
    );
    assert_eq!(granted(s.lease(&id, 25, &b, T0).unwrap()), 25);
    assert_eq!(granted(s.lease(&id, 25, &b, T0).unwrap()), 15);
    assert_eq!(granted(s.lease(&id, 25, &b, T0).unwrap()), 0);
    assert_eq!(s.session(&id).unwrap().unwrap().leased_sats, 70);
    // Giving back more than held clamps at 0 (row gone); spending past the deposit is capped.
    s.settle_session(&id, &b, 10, 100, T0 + 6).unwrap();
    s.settle_session(&id, &a, 100, 0, T0 + 7).unwrap();
    let row = s.session(&id).unwrap().unwrap();
    assert_eq!((row.spent_sats, row.leased_sats), (100, 0));
    assert_eq!(
        s.lease("no-such-session", 1, &a, T0).unwrap(),
        LeaseOutcome::NotOpen
    );
    // Settles travel in write batches too.
    let id2 = opened(s, &ids, 50, &a);
    s.apply(&[
        crate::store::Op::SessionSettle {
            session_id: id2.clone(),
            holder: a.clone(),
            used_sats: 5,
            returned_sats: 0,
            refunded_sats: 0,
            now: T0 + 1,
        },
        crate::store::Op::SessionSettle {
            session_id: id2.clone(),
            holder: a.clone(),
            used_sats: 5,
            returned_sats: 10,
            refunded_sats: 0,
            now: T0 + 2,
        },
    ])
    .unwrap();
    let row = s.session(&id2).unwrap().unwrap();
    assert_eq!((row.spent_sats, row.leased_sats), (10, 30));
    // A pricer's settlement gives back: off `spent` (never below 0), the lease untouched.
    let refund = |refunded_sats| crate::store::Op::SessionSettle {
        session_id: id2.clone(),
        holder: a.clone(),
        used_sats: 0,
        returned_sats: 0,
        refunded_sats,
        now: T0 + 3,
    };
    s.apply(&[refund(4)]).unwrap();
    let row = s.session(&id2).unwrap().unwrap();
    assert_eq!((row.spent_sats, row.leased_sats), (6, 30));
    s.apply(&[refund(50)]).unwrap();
    let row = s.session(&id2).unwrap().unwrap();
    assert_eq!((row.spent_sats, row.leased_sats), (0, 30));
    ids.tidy(s);
}

pub(crate) fn top_ups(s: &mut dyn Store) {
    let ids = Ids::new();
    let (a, b) = (ids.holder("a"), ids.holder("b"));
    let id = opened(s, &ids, 100, &a);
    let other = opened(s, &ids, 100, &a);
    let credit = ids.hash();
    assert_eq!(
        s.top_up(&id, credit, 50, &b, T0 + 1).unwrap(),
        TopUpOutcome::Applied
    );
    let row = s.session(&id).unwrap().unwrap();
    assert_eq!(
        (row.deposit_sats, row.leased_sats, row.updated_at),
        (150, 150, T0 + 1)
    );
    assert_eq!(
        s.top_up(&id, credit, 50, &b, T0 + 2).unwrap(),
        TopUpOutcome::Replayed
    );
    // The deposit hash counts as credited to its session.
    let deposit_hash: Key32 = hex::decode(&id).unwrap().try_into().unwrap();
    assert_eq!(
        s.top_up(&id, deposit_hash, 50, &b, T0).unwrap(),
        TopUpOutcome::Replayed
    );
    assert_eq!(
        s.top_up(&other, credit, 50, &b, T0).unwrap(),
        TopUpOutcome::Foreign
    );
    assert_eq!(
        s.top_up("no-such-session", ids.hash(), 50, &b, T0).unwrap(),
        TopUpOutcome::NotOpen
    );
    assert_eq!(s.session(&id).unwrap().unwrap().deposit_sats, 150);
    assert_eq!(s.session(&other).unwrap().unwrap().deposit_sats, 100);
    // B's lease grew by the credit: closing needs B's share back.
    s.settle_session(&id, &b, 0, 50, T0).unwrap();
    assert!(matches!(
        s.close_session(&id, &a, 0, 100, T0).unwrap(),
        CloseOutcome::Closed { .. }
    ));
    assert_eq!(
        s.top_up(&id, ids.hash(), 50, &b, T0).unwrap(),
        TopUpOutcome::NotOpen
    );
    ids.tidy(s);
}

pub(crate) fn close(s: &mut dyn Store) {
    let ids = Ids::new();
    let (a, b) = (ids.holder("a"), ids.holder("b"));
    let id = opened(s, &ids, 1000, &a);
    s.settle_session(&id, &a, 0, 300, T0).unwrap();
    assert_eq!(granted(s.lease(&id, 100, &b, T0).unwrap()), 100);
    // B still leases 100: A's settle (used 200, its remaining 500 released) commits anyway.
    assert_eq!(
        s.close_session(&id, &a, 200, 0, T0 + 1).unwrap(),
        CloseOutcome::Outstanding { leased: 100 }
    );
    let row = s.session(&id).unwrap().unwrap();
    assert_eq!(
        (row.status, row.spent_sats, row.leased_sats),
        (SessionStatus::Open, 200, 100)
    );
    s.settle_session(&id, &b, 60, 40, T0 + 2).unwrap();
    let CloseOutcome::Closed { refund } = s.close_session(&id, &a, 0, 0, T0 + 3).unwrap() else {
        panic!("not closed");
    };
    assert_eq!(refund.balance_sats(), 740);
    assert_eq!(
        (refund.amount_sats, refund.fee_limit_sats, refund.status),
        (732, 8, RefundStatus::Pending)
    );
    assert_eq!((refund.attempts, refund.created_at), (0, T0 + 3));
    assert_eq!(s.refund(&id).unwrap(), Some(refund));
    let row = s.session(&id).unwrap().unwrap();
    assert_eq!(
        (row.status, row.updated_at),
        (SessionStatus::Closed, T0 + 3)
    );
    assert_eq!(
        s.close_session(&id, &a, 0, 0, T0).unwrap(),
        CloseOutcome::NotOpen
    );
    assert_eq!(s.force_close(&id, T0).unwrap(), CloseOutcome::NotOpen);
    assert_eq!(s.lease(&id, 1, &a, T0).unwrap(), LeaseOutcome::NotOpen);
    assert_eq!(
        s.close_session("no-such-session", &a, 0, 0, T0).unwrap(),
        CloseOutcome::NotOpen
    );
    // A late settle of a closed session changes nothing it spent.
    s.settle_session(&id, &b, 5, 0, T0 + 9).unwrap();
    assert_eq!(s.session(&id).unwrap().unwrap().spent_sats, 260);
    // Everything spent: the refund is skipped.
    let id = opened(s, &ids, 10, &a);
    let CloseOutcome::Closed { refund, .. } = s.close_session(&id, &a, 9, 1, T0).unwrap() else {
        panic!("not closed");
    };
    assert_eq!(
        (refund.amount_sats, refund.fee_limit_sats, refund.status),
        (0, 1, RefundStatus::Skipped)
    );
    ids.tidy(s);
}

pub(crate) fn force_close(s: &mut dyn Store) {
    let ids = Ids::new();
    let (a, b) = (ids.holder("a"), ids.holder("b"));
    let id = opened(s, &ids, 1000, &a);
    s.settle_session(&id, &a, 100, 500, T0).unwrap();
    assert_eq!(granted(s.lease(&id, 200, &b, T0).unwrap()), 200);
    let CloseOutcome::Closed { refund } = s.force_close(&id, T0 + 1).unwrap() else {
        panic!("not closed");
    };
    // Forfeited: A's 400 and B's 200; refund = 1000 − 100 − 600.
    assert_eq!(refund.balance_sats(), 300);
    let row = s.session(&id).unwrap().unwrap();
    assert_eq!(
        (row.status, row.spent_sats, row.leased_sats),
        (SessionStatus::Closed, 700, 0)
    );
    ids.tidy(s);
}

pub(crate) fn release_and_idle(s: &mut dyn Store) {
    let ids = Ids::new();
    let (a, b) = (ids.holder("a"), ids.holder("b"));
    let now = T0 + 10_000_000 + u64::from(rand::random::<u16>());
    let held_by_a = opened(s, &ids, 100, &a);
    let held_by_b = opened(s, &ids, 100, &a);
    s.settle_session(&held_by_b, &a, 0, 100, now).unwrap();
    assert_eq!(granted(s.lease(&held_by_b, 10, &b, now).unwrap()), 10);
    let fresh = opened(s, &ids, 100, &a);
    s.settle_session(&fresh, &a, 1, 99, now).unwrap();
    assert_eq!(s.release_holder(&a).unwrap(), 1);
    assert_eq!(s.release_holder(&a).unwrap(), 0);
    assert_eq!(s.session(&held_by_a).unwrap().unwrap().leased_sats, 0);
    assert_eq!(s.session(&held_by_b).unwrap().unwrap().leased_sats, 10);
    // Idle: open, nobody leasing, updated_at + 300 ≤ now. `held_by_a` was last touched at T0.
    let idle = s.idle_sessions(now, 10_000).unwrap();
    assert!(idle.contains(&held_by_a));
    assert!(!idle.contains(&held_by_b) && !idle.contains(&fresh));
    let idle = s.idle_sessions(now + 300, 10_000).unwrap();
    assert!(idle.contains(&fresh) && !idle.contains(&held_by_b));
    assert!(!s.idle_sessions(now + 299, 10_000).unwrap().contains(&fresh));
    s.close_session(&held_by_a, &a, 0, 0, now).unwrap();
    assert!(!s
        .idle_sessions(now + 300, 10_000)
        .unwrap()
        .contains(&held_by_a));
    assert!(s.idle_sessions(now, 1).unwrap().len() <= 1);
    ids.tidy(s);
}

pub(crate) fn refunds(s: &mut dyn Store) {
    let ids = Ids::new();
    let a = ids.holder("a");
    let now = T0 + 20_000_000 + u64::from(rand::random::<u16>());
    let id = ids.open(ids.hash(), 500, &a, now);
    let id = {
        assert_eq!(s.open_session(&id).unwrap(), OpenOutcome::Opened);
        id.session_id
    };
    assert!(matches!(
        s.close_session(&id, &a, 0, 500, now).unwrap(),
        CloseOutcome::Closed { .. }
    ));
    let due = |s: &mut dyn Store, at: u64| {
        s.refunds_due(at, 10_000)
            .unwrap()
            .into_iter()
            .any(|r| r.session_id == id)
    };
    // A fresh pending refund belongs to the closer for a minute.
    assert!(!due(s, now + REFUND_RETRY_SECS - 1));
    assert!(due(s, now + REFUND_RETRY_SECS));
    // Failed: due again a minute after each attempt, for 5 attempts.
    for attempt in 1..=5u64 {
        let at = now + attempt * 100;
        assert!(s
            .record_refund(&id, RefundStatus::Failed, Some("no route"), at)
            .unwrap());
        assert!(!due(s, at + REFUND_RETRY_SECS - 1));
        assert_eq!(
            due(s, at + REFUND_RETRY_SECS),
            attempt < 5,
            "attempt {attempt}"
        );
    }
    let r = s.refund(&id).unwrap().unwrap();
    assert_eq!(
        (r.status, r.attempts, r.last_error.as_deref()),
        (RefundStatus::Failed, 5, Some("no route"))
    );
    // Succeeded is final.
    assert!(s
        .record_refund(&id, RefundStatus::Succeeded, None, now + 900)
        .unwrap());
    assert!(!s
        .record_refund(&id, RefundStatus::Failed, Some("late"), now + 901)
        .unwrap());
    let r = s.refund(&id).unwrap().unwrap();
    assert_eq!(
        (r.status, r.attempts, r.last_error, r.updated_at),
        (RefundStatus::Succeeded, 6, None, now + 900)
    );
    assert!(!due(s, now + 10_000));
    assert!(!s
        .record_refund("no-such-session", RefundStatus::Failed, None, now)
        .unwrap());
    ids.tidy(s);
}

/// Every case above, in order, on one store.
pub(crate) fn all(s: &mut dyn Store) {
    open_and_read(s);
    lease_and_settle(s);
    top_ups(s);
    close(s);
    force_close(s);
    release_and_idle(s);
    refunds(s);
}
