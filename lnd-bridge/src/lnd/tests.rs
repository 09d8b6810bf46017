//! The lnd backend end to end: the bridge's generated gRPC client against the fake lnd
//! over real TLS on loopback.

use std::future::Future;
use std::path::Path;
use std::pin::{pin, Pin};
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bitcoin::hashes::{sha256, Hash};
use futures_channel::mpsc::UnboundedReceiver;
use futures_core::Stream;
use lightning_invoice::{Bolt11Invoice, Currency};

use crate::fake::{FakeLnd, FakePayment};
use crate::tests::block_on;
use crate::*;

const WAIT: Duration = Duration::from_secs(20);

/// Polls `fut` on this thread until it is ready or `deadline` passes.
fn block_on_until<F: Future>(fut: F, deadline: Instant) -> Option<F::Output> {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::park_timeout(deadline - now);
    }
}

/// The next event on `rx`, or `None` if none arrives within [`WAIT`].
fn next_event(rx: &mut UnboundedReceiver<Event>) -> Option<Event> {
    let next = std::future::poll_fn(|cx| Pin::new(&mut *rx).poll_next(cx));
    block_on_until(next, Instant::now() + WAIT).flatten()
}

/// Waits (bounded) for a condition that another thread makes true.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::park_timeout(Duration::from_millis(2));
    }
}

fn create(handle: &BridgeHandle, sat: u64) -> Result<Invoice, BridgeError> {
    block_on(handle.try_create_invoice(sat)?).unwrap_or(Err(BridgeError::Closed))
}

fn lookup(handle: &BridgeHandle, hash: [u8; 32]) -> Result<InvoiceState, BridgeError> {
    block_on(handle.try_lookup_invoice(hash)?).unwrap_or(Err(BridgeError::Closed))
}

fn fake(dir: &Path) -> FakeLnd {
    FakeLnd::start(dir, Network::Regtest).unwrap()
}

fn bridge_for(fake: &FakeLnd) -> Bridge {
    start(BridgeConfig::new(fake.backend_config())).unwrap()
}

fn settled(payment_hash: [u8; 32], settle_index: u64) -> Option<Event> {
    Some(Event::InvoiceSettled {
        payment_hash,
        settle_index,
    })
}

#[test]
fn add_invoice_returns_a_real_bolt11_and_lookup_tracks_state() {
    let dir = tempfile::tempdir().unwrap();
    let lnd = fake(dir.path());
    let bridge = bridge_for(&lnd);
    let h = bridge.handle();
    let inv = create(&h, 1234).unwrap();
    let parsed = Bolt11Invoice::from_str(&inv.payment_request).unwrap();
    parsed.check_signature().unwrap();
    assert_eq!(parsed.payment_hash().to_byte_array(), inv.payment_hash);
    assert_eq!(parsed.amount_milli_satoshis(), Some(1_234_000));
    assert_eq!(parsed.currency(), Currency::Regtest);
    assert_eq!(inv.add_index, 1);
    assert_eq!(lnd.counters().add_invoice, 1);
    assert!(bridge.backend_connected());
    assert_eq!(lookup(&h, inv.payment_hash), Ok(InvoiceState::Open));
    assert_eq!(lookup(&h, [9; 32]), Ok(InvoiceState::Unknown));
    let paid = create(&h, 5).unwrap();
    lnd.pay(&paid.payment_request).unwrap();
    assert_eq!(lookup(&h, paid.payment_hash), Ok(InvoiceState::Settled));
    lnd.cancel(&inv.payment_hash).unwrap();
    assert_eq!(lookup(&h, inv.payment_hash), Ok(InvoiceState::Canceled));
    assert_eq!(lnd.counters().lookup_invoice, 4);
}

#[test]
fn settlement_reaches_every_subscriber() {
    let dir = tempfile::tempdir().unwrap();
    let lnd = fake(dir.path());
    let bridge = bridge_for(&lnd);
    let h = bridge.handle();
    let (mut a, mut b) = (h.subscribe(), h.subscribe());
    // Subscribing with cursor 0 asks for no backlog, so pay only once it is live.
    wait_for("the subscription", || lnd.active_subscriptions() == 1);
    let inv = create(&h, 21).unwrap();
    let preimage = lnd.pay(&inv.payment_request).unwrap();
    assert_eq!(
        sha256::Hash::hash(&preimage).to_byte_array(),
        inv.payment_hash
    );
    assert_eq!(next_event(&mut a), settled(inv.payment_hash, 1));
    assert_eq!(next_event(&mut b), settled(inv.payment_hash, 1));
    let stats = h.backend_stats();
    assert_eq!((stats.settle_index, stats.add_index), (1, 1));
    assert!(stats.connected);
}

#[test]
fn settlement_while_the_subscription_is_down_is_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let lnd = fake(dir.path());
    let bridge = bridge_for(&lnd);
    let h = bridge.handle();
    let mut rx = h.subscribe();
    wait_for("the subscription", || lnd.active_subscriptions() == 1);
    let first = create(&h, 1).unwrap();
    lnd.pay(&first.payment_request).unwrap();
    assert_eq!(next_event(&mut rx), settled(first.payment_hash, 1));

    lnd.refuse_subscriptions(true);
    lnd.drop_subscriptions();
    let before = lnd.counters().subscribe_invoices;
    // A refused retry proves the bridge noticed and is down, not still subscribed.
    wait_for("a refused resubscribe", || {
        lnd.counters().subscribe_invoices > before
    });
    let missed = create(&h, 2).unwrap();
    lnd.pay(&missed.payment_request).unwrap();
    assert_eq!(lnd.active_subscriptions(), 0);
    lnd.refuse_subscriptions(false);
    assert_eq!(next_event(&mut rx), settled(missed.payment_hash, 2));
    assert!(h.backend_stats().subscription_restarts >= 2);
    assert_eq!(h.backend_stats().settle_index, 2);
}

#[test]
fn scripted_failures_are_backend_errors_then_recover() {
    let dir = tempfile::tempdir().unwrap();
    let lnd = fake(dir.path());
    let bridge = bridge_for(&lnd);
    let h = bridge.handle();
    lnd.fail_next(3);
    for _ in 0..2 {
        match create(&h, 10) {
            Err(BridgeError::Backend(msg)) => assert!(msg.contains("scripted"), "{msg}"),
            other => panic!("expected a backend error, got {other:?}"),
        }
    }
    assert!(matches!(lookup(&h, [1; 32]), Err(BridgeError::Backend(_))));
    assert!(create(&h, 10).is_ok(), "recovers without a restart");
    assert_eq!(lnd.counters().add_invoice, 3);
    assert!(
        bridge.backend_connected(),
        "an error answer still proves the link"
    );
}

#[test]
fn wrong_macaroon_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lnd = fake(dir.path());
    let wrong = dir.path().join("wrong.macaroon");
    std::fs::write(&wrong, b"not the macaroon").unwrap();
    let BackendConfig::Lnd {
        host,
        tls_path,
        network,
        ..
    } = lnd.backend_config()
    else {
        unreachable!("the fake configures lnd")
    };
    let cfg = BackendConfig::Lnd {
        host,
        tls_path,
        macaroon_path: wrong,
        network,
    };
    let bridge = start(BridgeConfig::new(cfg)).unwrap();
    match create(&bridge.handle(), 10) {
        Err(BridgeError::Backend(msg)) => assert!(msg.contains("verification failed"), "{msg}"),
        other => panic!("expected a backend error, got {other:?}"),
    }
    assert!(lnd.counters().auth_failures >= 1);
}

fn lnd_cfg(host: &str, tls: &Path, mac: &Path) -> BridgeConfig {
    BridgeConfig::new(BackendConfig::Lnd {
        host: host.into(),
        tls_path: tls.into(),
        macaroon_path: mac.into(),
        network: Network::Regtest,
    })
}

#[test]
fn bad_files_and_hosts_are_startup_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let lnd = fake(dir.path());
    let (tls, mac) = (lnd.tls_cert_path(), lnd.macaroon_path());
    let missing = dir.path().join("missing.macaroon");
    let err = start(lnd_cfg(&lnd.host(), &tls, &missing)).err().unwrap();
    assert!(
        matches!(&err, BridgeError::Macaroon { path, .. } if *path == missing),
        "{err}"
    );
    assert!(err.is_config_error());

    let garbage = dir.path().join("garbage.cert");
    let pem_garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    for bytes in ["not a certificate", pem_garbage] {
        std::fs::write(&garbage, bytes).unwrap();
        let err = start(lnd_cfg(&lnd.host(), &garbage, &mac)).err().unwrap();
        assert!(
            matches!(&err, BridgeError::TlsCert { path, .. } if *path == garbage),
            "{err}"
        );
        assert!(err.is_config_error());
    }
    let absent = dir.path().join("absent.cert");
    let err = start(lnd_cfg(&lnd.host(), &absent, &mac)).err().unwrap();
    assert!(
        matches!(&err, BridgeError::TlsCert { path, .. } if *path == absent),
        "{err}"
    );

    for host in [
        "localhost",
        "http://127.0.0.1:10009",
        "127.0.0.1:10009/x",
        "",
    ] {
        let err = start(lnd_cfg(host, &tls, &mac)).err().unwrap();
        assert!(matches!(err, BridgeError::LndHost { .. }), "{host}: {err}");
        assert!(err.is_config_error());
    }
    assert!(start(lnd_cfg("[::1]:10009", &tls, &mac)).is_ok());
}

#[test]
fn unreachable_lnd_starts_and_fails_calls_until_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let lnd = fake(dir.path());
    let addr = lnd.addr();
    lnd.shutdown(); // keep its files, free its port
    let bridge = start(lnd_cfg(
        &addr.to_string(),
        &dir.path().join(crate::fake::TLS_CERT_FILE),
        &dir.path().join(crate::fake::MACAROON_FILE),
    ))
    .unwrap();
    let h = bridge.handle();
    assert!(matches!(create(&h, 1), Err(BridgeError::Backend(_))));
    assert!(!bridge.backend_connected());
    // lnd comes up on the same port with a new certificate (re-read on connect).
    let lnd = FakeLnd::start_at(dir.path(), Network::Regtest, addr).unwrap();
    let mut rx = h.subscribe();
    wait_for("a successful call", || create(&h, 1).is_ok());
    assert!(bridge.backend_connected());
    wait_for("the subscription", || lnd.active_subscriptions() == 1);
    let inv = create(&h, 3).unwrap();
    lnd.pay(&inv.payment_request).unwrap();
    assert_eq!(next_event(&mut rx), settled(inv.payment_hash, 1));
}

#[test]
fn a_different_certificate_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let lnd = fake(dir.path());
    let other = fake(other_dir.path());
    let bridge = start(lnd_cfg(
        &lnd.host(),
        &other.tls_cert_path(),
        &lnd.macaroon_path(),
    ))
    .unwrap();
    assert!(matches!(
        create(&bridge.handle(), 1),
        Err(BridgeError::Backend(_))
    ));
    assert!(!bridge.backend_connected());
    assert_eq!(lnd.counters().add_invoice, 0, "no call got through");
}

#[test]
fn many_calls_run_concurrently_on_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let lnd = fake(dir.path());
    let bridge = bridge_for(&lnd);
    let h = bridge.handle();
    // With 50 ms per call, 300 serial calls would need 15 s; concurrent ones finish
    // within the 5 s call timeout or fail with Timeout.
    lnd.set_delay(Duration::from_millis(50));
    let replies: Vec<_> = (0..300).map(|_| h.try_create_invoice(7).unwrap()).collect();
    let mut hashes = std::collections::HashSet::new();
    for r in replies {
        let inv = block_on(r).unwrap().unwrap();
        assert!(hashes.insert(inv.payment_hash));
    }
    assert_eq!(lnd.counters().add_invoice, 300);
}

#[test]
fn host_parsing_and_network_prefix() {
    assert!(super::parse_host("127.0.0.1:10009").is_ok());
    assert!(super::parse_host("lnd.example:10009").is_ok());
    assert!(super::parse_host("[::1]:10009").is_ok());
    assert!(super::parse_host("lnd.example").is_err());
    let dir = tempfile::tempdir().unwrap();
    let lnd = fake(dir.path());
    let bridge = bridge_for(&lnd);
    let Backend::Lnd(b) = &bridge.shared.backend else {
        unreachable!("an lnd bridge")
    };
    assert!(b.on_our_network("lnbcrt10n1xyz"));
    assert!(b.on_our_network("lnbcrt1xyz"));
    assert!(!b.on_our_network("lnbc10n1xyz"));
    assert!(!b.on_our_network("lntb10n1xyz"));
}

/// An amountless invoice from a dev wallet key (what a session's return invoice is).
fn return_invoice() -> (String, [u8; 32]) {
    let wallet = crate::dev::receive::Receiver::new(Currency::Regtest, 4);
    let minted = wallet.mint(0, "refund").unwrap();
    (minted.invoice, minted.payment_hash)
}

fn pay_req(invoice: &str, amount_sat: u64) -> PayRequest {
    PayRequest {
        payment_request: invoice.to_owned(),
        amount_sat,
        fee_limit_sat: 4,
        timeout: Duration::from_secs(7),
    }
}

fn pay(handle: &BridgeHandle, req: PayRequest) -> Result<PayReply, BridgeError> {
    block_on(handle.try_pay_invoice(req)?).unwrap_or(Err(BridgeError::Closed))
}

#[test]
fn send_payment_v2_pays_and_carries_the_request_fields() {
    let dir = tempfile::tempdir().unwrap();
    let lnd = fake(dir.path());
    let bridge = bridge_for(&lnd);
    let h = bridge.handle();
    lnd.set_payment_fee_sat(3);

    let (invoice, hash) = return_invoice();
    let paid = pay(&h, pay_req(&invoice, 25)).unwrap();
    assert_eq!(paid.status, PayStatus::Succeeded, "{paid:?}");
    assert_eq!(paid.payment_hash, hash);
    assert!(paid.preimage.is_some());
    assert_eq!((paid.value_sat, paid.fee_sat, paid.failure), (25, 3, None));

    // An invoice with an amount: `amt` is left 0 (lnd refuses it there), even when the
    // request names the same amount; a sub-second timeout is sent as 1 s.
    let fixed = create(&h, 40).unwrap();
    let req = PayRequest {
        timeout: Duration::from_millis(300),
        fee_limit_sat: u64::MAX,
        ..pay_req(&fixed.payment_request, 40)
    };
    let paid = pay(&h, req).unwrap();
    assert_eq!((paid.status, paid.value_sat), (PayStatus::Succeeded, 40));
    assert_eq!(paid.payment_hash, fixed.payment_hash);

    let want = |payment_request: &str, amt, timeout_seconds, fee_limit_sat| FakePayment {
        payment_request: payment_request.to_owned(),
        amt,
        timeout_seconds,
        fee_limit_sat,
        no_inflight_updates: true,
    };
    assert_eq!(
        lnd.payments(),
        vec![
            want(&invoice, 25, 7, 4),
            want(&fixed.payment_request, 0, 1, i64::MAX),
        ]
    );
    assert_eq!(
        lnd.counters().auth_failures,
        0,
        "payments use admin.macaroon"
    );
    assert_eq!(h.in_flight(), 0);
}

#[test]
fn a_failed_payment_reports_lnds_reason_and_a_retry_pays_once() {
    let dir = tempfile::tempdir().unwrap();
    let lnd = fake(dir.path());
    let bridge = bridge_for(&lnd);
    let h = bridge.handle();
    let (invoice, hash) = return_invoice();

    lnd.fail_payments(2);
    for _ in 0..2 {
        let failed = pay(&h, pay_req(&invoice, 10)).unwrap();
        assert_eq!(failed, PayReply::failed(hash, "FAILURE_REASON_NO_ROUTE"));
    }
    let paid = pay(&h, pay_req(&invoice, 10)).unwrap();
    assert_eq!(paid.status, PayStatus::Succeeded);
    // lnd refuses a paid invoice ("invoice is already paid"); the bridge then tracks the
    // earlier payment and answers it, so a retry after a lost answer still learns success.
    let again = pay(&h, pay_req(&invoice, 10)).unwrap();
    assert_eq!(again, paid);
    assert_eq!(lnd.payments().len(), 4);
    assert_eq!(lnd.counters().send_payment, 4);
    assert_eq!(lnd.counters().track_payment, 1);
}

#[test]
fn lnd_refusals_are_failed_payments_and_a_missing_lnd_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let lnd = fake(dir.path());
    // Without admin.macaroon beside invoice.macaroon, payments go out with the invoice
    // macaroon, which lnd refuses.
    std::fs::remove_file(dir.path().join(crate::fake::ADMIN_MACAROON_FILE)).unwrap();
    let bridge = bridge_for(&lnd);
    let h = bridge.handle();
    let (invoice, hash) = return_invoice();
    let refused = pay(&h, pay_req(&invoice, 10)).unwrap();
    assert_eq!(
        refused,
        PayReply::failed(hash, "verification failed: permission denied")
    );
    assert_eq!(lnd.counters().auth_failures, 1);
    assert!(lnd.payments().is_empty());
    assert!(create(&h, 1).is_ok(), "invoice calls are unaffected");

    lnd.shutdown();
    assert!(matches!(
        pay(&h, pay_req(&invoice, 10)),
        Err(BridgeError::Backend(_))
    ));
}

#[test]
fn a_payment_runs_past_call_timeout_up_to_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let lnd = fake(dir.path());
    let mut cfg = BridgeConfig::new(lnd.backend_config());
    cfg.call_timeout = Duration::from_millis(200);
    let bridge = start(cfg).unwrap();
    let h = bridge.handle();
    // Connect first, so the invoice call below is not timed out by the TLS handshake.
    wait_for("a connection", || create(&h, 1).is_ok());
    lnd.set_payment_delay(Duration::from_millis(600));
    let (invoice, _) = return_invoice();
    let req = PayRequest {
        timeout: Duration::from_millis(100),
        ..pay_req(&invoice, 5)
    };
    let paid = pay(&h, req).unwrap();
    assert_eq!(paid.status, PayStatus::Succeeded);
}
