//! The store thread's session calls end to end on SQLite: FIFO of debits before a close, the
//! refund worker against stub payers (paid, failed, slow, retried), the idle sweep, and the
//! release of a restarted instance's leases.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_channel::oneshot;

use crate::store::service::{start_with, PayOutcome, Payer, RefundPayment, StoreService};
use crate::store::session::{
    CloseOutcome, LeaseOutcome, OpenOutcome, RefundRow, RefundStatus, SessionOpen, SessionStatus,
    TopUpOutcome,
};
use crate::store::sqlite::SqliteStore;
use crate::store::{unix_now, Store};

const HOLDER: &str = "instance-a";

/// Waits for a store answer (the test thread is no executor: the oneshot is polled).
fn wait<T>(rx: Option<oneshot::Receiver<Result<T, ()>>>) -> T {
    let mut rx = rx.expect("the store thread took the call");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match rx.try_recv() {
            Ok(Some(Ok(v))) => return v,
            Ok(Some(Err(()))) => panic!("the store could not answer"),
            Ok(None) => {}
            Err(_) => panic!("the store dropped the answer"),
        }
        assert!(Instant::now() < deadline, "no answer from the store");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Payments the stub payer was asked for.
type Calls = Arc<Mutex<Vec<RefundPayment>>>;

/// A payer that answers every payment with `outcome` at once.
fn payer(outcome: PayOutcome) -> (Payer, Calls) {
    let calls = Calls::default();
    let seen = calls.clone();
    let payer: Payer = Box::new(move |p| {
        seen.lock().unwrap().push(p);
        Box::pin(std::future::ready(outcome.clone()))
    });
    (payer, calls)
}

/// A payer whose payments end when the test sends their outcome.
fn slow_payer() -> (Payer, Arc<Mutex<Vec<oneshot::Sender<PayOutcome>>>>) {
    let pending = Arc::new(Mutex::new(Vec::new()));
    let held = pending.clone();
    let payer: Payer = Box::new(move |_| {
        let (tx, rx) = oneshot::channel();
        held.lock().unwrap().push(tx);
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| PayOutcome::Failed("test dropped".into()))
        })
    });
    (payer, pending)
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    service: StoreService,
}

impl Fixture {
    fn start(payer: Payer) -> Fixture {
        Fixture::start_at(tempfile::tempdir().unwrap(), payer)
    }

    fn start_at(dir: tempfile::TempDir, payer: Payer) -> Fixture {
        let path = dir.path().join("a.db");
        let store = SqliteStore::open(&path, true).unwrap();
        let service = start_with(Box::new(store), None, Box::new(|_| {}), HOLDER, payer).unwrap();
        Fixture {
            _dir: dir,
            path,
            service,
        }
    }

    /// A second connection to the same file.
    fn db(&self) -> SqliteStore {
        SqliteStore::open(&self.path, false).unwrap()
    }

    fn open(&self, deposit: u64, idle_timeout_secs: u64, now: u64) -> String {
        let hash: [u8; 32] = rand::random();
        let open = SessionOpen {
            session_id: hex::encode(hash),
            payment_hash: hash,
            deposit_sats: deposit,
            return_invoice: "lnbcrt1return".into(),
            idle_timeout_secs,
            holder: HOLDER.into(),
            now,
        };
        let id = open.session_id.clone();
        let h = self.service.handle();
        assert_eq!(wait(h.try_open_session(open)), OpenOutcome::Opened);
        id
    }

    fn close(&self, id: &str, used: u64, returned: u64) -> RefundRow {
        let h = self.service.handle();
        match wait(h.try_close_session(id, HOLDER, used, returned, unix_now())) {
            CloseOutcome::Closed { refund } => refund,
            other => panic!("not closed: {other:?}"),
        }
    }
}

#[test]
fn settles_queued_before_a_close_are_in_its_refund() {
    let (payer, calls) = payer(PayOutcome::Succeeded { fee_sat: 2 });
    let f = Fixture::start(payer);
    let h = f.service.handle();
    let id = f.open(10_000, 300, unix_now());
    // 1000 debits of 3 sats written behind, then the close with the last 1000 and the rest.
    for _ in 0..1000 {
        assert!(h.settle_session(&id, HOLDER, 3, 0, unix_now()));
    }
    let refund = f.close(&id, 1000, 6000);
    assert_eq!(refund.balance_sats(), 10_000 - 3000 - 1000);
    // Paid within the close's wait: the answer says so.
    assert_eq!(
        (refund.status, refund.attempts),
        (RefundStatus::Succeeded, 1)
    );
    assert_eq!(
        *calls.lock().unwrap(),
        vec![RefundPayment {
            payment_request: "lnbcrt1return".into(),
            amount_sat: 5940,
            fee_limit_sat: 60,
            timeout: super::super::REFUND_TIMEOUT,
        }]
    );
    let row = f.db().refund(&id).unwrap().unwrap();
    assert_eq!((row.status, row.attempts), (RefundStatus::Succeeded, 1));
    let s = h.stats();
    assert_eq!(s.sessions_opened.load(Ordering::Relaxed), 1);
    assert_eq!(s.sessions_closed.load(Ordering::Relaxed), 1);
    assert_eq!(s.refunds_succeeded.load(Ordering::Relaxed), 1);
    assert_eq!(s.settles_recorded.load(Ordering::Relaxed), 1000);
    // Closed: a second close is refused; the session reads closed.
    assert_eq!(
        wait(h.try_close_session(&id, HOLDER, 0, 0, unix_now())),
        CloseOutcome::NotOpen
    );
    let row = wait(h.try_session(&id)).unwrap();
    assert_eq!((row.status, row.spent_sats), (SessionStatus::Closed, 4000));
}

#[test]
fn lease_top_up_and_force_close_through_the_handle() {
    let (payer, _) = payer(PayOutcome::Failed("no route".into()));
    let f = Fixture::start(payer);
    let h = f.service.handle();
    let id = f.open(100, 300, unix_now());
    let now = unix_now();
    assert!(h.settle_session(&id, HOLDER, 10, 50, now));
    match wait(h.try_lease(&id, 80, "instance-b", now)) {
        LeaseOutcome::Granted { granted, .. } => assert_eq!(granted, 50),
        LeaseOutcome::NotOpen => panic!("not open"),
    }
    let credit: [u8; 32] = rand::random();
    assert_eq!(
        wait(h.try_top_up(&id, credit, 20, HOLDER, now)),
        TopUpOutcome::Applied
    );
    assert_eq!(
        wait(h.try_top_up(&id, credit, 20, HOLDER, now)),
        TopUpOutcome::Replayed
    );
    assert_eq!(h.stats().topups_applied.load(Ordering::Relaxed), 1);
    // B leases 50: a close is outstanding until forced; A's 60 go back with the close.
    assert_eq!(
        wait(h.try_close_session(&id, HOLDER, 0, 60, now)),
        CloseOutcome::Outstanding { leased: 50 }
    );
    let CloseOutcome::Closed { refund } = wait(h.try_force_close(&id, now)) else {
        panic!("not closed");
    };
    // 120 deposited, 10 spent, 50 forfeited: 60, less 1 sat of fee budget; the payment failed.
    assert_eq!(refund.balance_sats(), 60);
    assert_eq!(refund.status, RefundStatus::Failed);
    assert_eq!(refund.last_error.as_deref(), Some("no route"));
    assert_eq!(h.stats().refunds_failed.load(Ordering::Relaxed), 1);
    assert_eq!(wait(h.try_session("unknown")), None);
}

#[test]
fn a_slow_refund_answers_pending_and_is_recorded_when_it_ends() {
    let (payer, pending) = slow_payer();
    let f = Fixture::start(payer);
    let id = f.open(1000, 300, unix_now());
    let asked = Instant::now();
    let refund = f.close(&id, 0, 1000);
    assert!(asked.elapsed() >= super::super::CLOSE_WAIT);
    assert_eq!(refund.status, RefundStatus::Pending);
    let h = f.service.handle();
    assert_eq!(h.stats().refunds_pending.load(Ordering::Relaxed), 1);
    let tx = pending.lock().unwrap().pop().unwrap();
    assert!(tx.send(PayOutcome::Succeeded { fee_sat: 1 }).is_ok());
    let db = std::cell::RefCell::new(f.db());
    wait_until("the refund recorded", || {
        db.borrow_mut().refund(&id).unwrap().unwrap().status == RefundStatus::Succeeded
    });
    // An empty balance is skipped without a payment.
    let id = f.open(1, 300, unix_now());
    let refund = f.close(&id, 1, 0);
    assert_eq!(refund.status, RefundStatus::Skipped);
    assert!(pending.lock().unwrap().is_empty());
    assert_eq!(h.stats().refunds_skipped.load(Ordering::Relaxed), 1);
}

#[test]
fn idle_sessions_are_closed_and_refunded_by_the_sweep() {
    let (payer, calls) = payer(PayOutcome::Succeeded { fee_sat: 0 });
    let f = Fixture::start(payer);
    let h = f.service.handle();
    let now = unix_now();
    let idle = f.open(500, 5, now - 10);
    let busy = f.open(500, 5, now - 10);
    // `idle` gives its lease back (settled long ago); `busy` is still leased.
    assert!(h.settle_session(&idle, HOLDER, 100, 400, now - 10));
    wait_until("the idle session closed", || {
        wait(h.try_session(&idle)).unwrap().status == SessionStatus::Closed
    });
    wait_until("its refund paid", || {
        f.db().refund(&idle).unwrap().unwrap().status == RefundStatus::Succeeded
    });
    assert_eq!(calls.lock().unwrap()[0].amount_sat, 396);
    assert_eq!(
        wait(h.try_session(&busy)).unwrap().status,
        SessionStatus::Open
    );
    assert_eq!(h.stats().sessions_closed.load(Ordering::Relaxed), 1);
}

#[test]
fn a_restart_gives_back_its_leases_and_retries_refunds_due() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let (leased, failed) = {
        let mut db = SqliteStore::open(&path, true).unwrap();
        let now = unix_now();
        let open = |hash: [u8; 32]| SessionOpen {
            session_id: hex::encode(hash),
            payment_hash: hash,
            deposit_sats: 300,
            return_invoice: "lnbcrt1old".into(),
            idle_timeout_secs: 3600,
            holder: HOLDER.into(),
            now,
        };
        let (a, b) = (open(rand::random()), open(rand::random()));
        db.open_session(&a).unwrap();
        db.open_session(&b).unwrap();
        db.close_session(&b.session_id, HOLDER, 0, 300, now - 600)
            .unwrap();
        db.record_refund(
            &b.session_id,
            RefundStatus::Failed,
            Some("offline"),
            now - 120,
        )
        .unwrap();
        (a.session_id, b.session_id)
    };
    let (payer, calls) = payer(PayOutcome::Succeeded { fee_sat: 0 });
    let f = Fixture::start_at(dir, payer);
    let h = f.service.handle();
    assert_eq!(wait(h.try_session(&leased)).unwrap().leased_sats, 0);
    wait_until("the failed refund retried", || {
        f.db().refund(&failed).unwrap().unwrap().status == RefundStatus::Succeeded
    });
    assert_eq!(calls.lock().unwrap()[0].payment_request, "lnbcrt1old");
    let row = f.db().refund(&failed).unwrap().unwrap();
    assert_eq!(row.attempts, 2);
}

#[test]
fn a_stopped_store_refuses_session_calls() {
    let (payer, _) = payer(PayOutcome::Succeeded { fee_sat: 0 });
    let f = Fixture::start(payer);
    let h = f.service.handle();
    let Fixture { service, _dir, .. } = f;
    service.shutdown();
    assert!(!h.settle_session("s", HOLDER, 1, 0, 0));
    assert_eq!(h.stats().settles_dropped.load(Ordering::Relaxed), 1);
    assert!(h.try_lease("s", 1, HOLDER, 0).is_none());
}
