//! End-to-end tests of the bridge: calls from plain std threads, the wallet over real TCP.

use std::collections::HashSet;
use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::pin::pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bitcoin::hashes::{sha256, Hash};
use futures_channel::mpsc::TryRecvError;
use lightning_invoice::{Bolt11Invoice, Currency};

use super::*;

/// Minimal executor: polls on this thread, parks until woken (wakes may come from the
/// bridge thread, as they would for a monoio core).
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(Thread);
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
            return v;
        }
        std::thread::park();
    }
}

fn wait(reply: InvoiceReply) -> Result<Invoice, BridgeError> {
    block_on(reply).unwrap_or(Err(BridgeError::Closed))
}

fn dev_cfg(dir: &Path) -> BridgeConfig {
    BridgeConfig::new(BackendConfig::Dev {
        basedir: dir.to_path_buf(),
        wallet_listen: "127.0.0.1:0".parse().unwrap(),
        network: Network::Regtest,
    })
}

/// One HTTP/1.1 exchange over a fresh connection; returns (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: wallet\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("complete response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

#[test]
fn invoice_from_std_thread_then_pay_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start(dev_cfg(dir.path())).unwrap();
    let addr = bridge.wallet_addr().unwrap();
    let mut sub_a = bridge.handle().subscribe();
    let mut sub_b = bridge.handle().subscribe();
    let handle = bridge.handle();
    let inv = std::thread::spawn(move || wait(handle.try_create_invoice(21).unwrap()).unwrap())
        .join()
        .unwrap();

    let parsed = Bolt11Invoice::from_str(&inv.payment_request).unwrap();
    parsed.check_signature().unwrap();
    assert_eq!(parsed.currency(), Currency::Regtest);
    assert!(inv.payment_request.starts_with("lnbcrt"));
    assert_eq!(parsed.amount_milli_satoshis(), Some(21_000));
    assert_eq!(parsed.payment_hash().to_byte_array(), inv.payment_hash);
    assert_eq!(
        Some(parsed.recover_payee_pub_key().serialize()),
        bridge.dev_node_id()
    );

    let (status, body) = http(
        addr,
        "POST",
        "/pay",
        &format!(r#"{{"invoice":"{}"}}"#, inv.payment_request),
    );
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    let preimage = hex::decode(v["preimage"].as_str().unwrap()).unwrap();
    assert_eq!(
        sha256::Hash::hash(&preimage).to_byte_array(),
        inv.payment_hash
    );
    assert_eq!(v["payment_hash"], hex::encode(inv.payment_hash));

    let send = format!(
        r#"{{"payment_request":"{}","timeout_seconds":60,"fee_limit_sat":10}}"#,
        inv.payment_request
    );
    let (status, body) = http(addr, "POST", "/v2/router/send", &send);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.ends_with('\n') && body.matches('\n').count() == 1,
        "{body:?}"
    );
    let v = json(body.trim_end());
    assert_eq!(v["result"]["status"], "SUCCEEDED");
    assert_eq!(v["result"]["payment_hash"], hex::encode(inv.payment_hash));
    let b64 = v["result"]["payment_preimage"].as_str().unwrap();
    let again = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(again, preimage, "paying twice returns the same preimage");

    let settled = Event::InvoiceSettled {
        payment_hash: inv.payment_hash,
        settle_index: 1,
    };
    for sub in [&mut sub_a, &mut sub_b] {
        // The event is published before the HTTP reply is written, so it is already queued.
        assert_eq!(sub.try_recv().ok(), Some(settled.clone()));
        assert_eq!(
            sub.try_recv(),
            Err(TryRecvError::Empty),
            "settled once: one event"
        );
    }
}

#[test]
fn wallet_rejects_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let bridge = start(dev_cfg(dir.path())).unwrap();
    let other = start(dev_cfg(other_dir.path())).unwrap();
    let addr = bridge.wallet_addr().unwrap();
    let foreign = wait(other.handle().try_create_invoice(3).unwrap()).unwrap();

    assert_eq!(http(addr, "GET", "/healthz", "").0, 200);
    assert_eq!(http(addr, "GET", "/pay", "").0, 405);
    assert_eq!(http(addr, "POST", "/nope", "{}").0, 404);
    let bad = [
        ("/pay", "not json".to_owned()),
        ("/pay", r#"{"invoice":"lnbcrt1garbage"}"#.to_owned()),
        ("/pay", r#"{"payment_request":"x"}"#.to_owned()),
        ("/v2/router/send", r#"{"invoice":"x"}"#.to_owned()),
        ("/v2/router/send", r#"{"payment_request":42}"#.to_owned()),
    ];
    for (path, body) in bad {
        let (status, reply) = http(addr, "POST", path, &body);
        assert_eq!(status, 400, "{path} {body}: {reply}");
        assert!(json(&reply)["error"].is_string(), "{reply}");
    }
    for path in ["/pay", "/v2/router/send"] {
        let field = if path == "/pay" {
            "invoice"
        } else {
            "payment_request"
        };
        let body = format!(r#"{{"{field}":"{}"}}"#, foreign.payment_request);
        let (status, reply) = http(addr, "POST", path, &body);
        assert_eq!(status, 404, "{reply}");
        assert_eq!(json(&reply)["error"], "unknown invoice");
    }
}

#[test]
fn two_hundred_concurrent_invoices_complete() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start(dev_cfg(dir.path())).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let handle = bridge.handle();
            std::thread::spawn(move || {
                // Queue all 50 before waiting on any: they are in flight together.
                let replies: Vec<_> = (0..50)
                    .map(|i| handle.try_create_invoice(1 + t * 50 + i).unwrap())
                    .collect();
                replies
                    .into_iter()
                    .map(|r| wait(r).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let all: Vec<Invoice> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(all.len(), 200);
    let hashes: HashSet<_> = all.iter().map(|i| i.payment_hash).collect();
    let indexes: HashSet<_> = all.iter().map(|i| i.add_index).collect();
    assert_eq!((hashes.len(), indexes.len()), (200, 200));
    assert_eq!(indexes.iter().max(), Some(&200));
}

#[test]
fn full_queue_fails_fast_and_shutdown_cancels() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = dev_cfg(dir.path());
    cfg.queue_capacity = 4;
    cfg.call_timeout = Duration::from_secs(3600);
    let bridge = start(cfg).unwrap();
    let handle = bridge.handle();
    handle.set_dev_delay(Duration::from_secs(3600));
    let held: Vec<_> = (0..4)
        .map(|_| handle.try_create_invoice(1).unwrap())
        .collect();
    assert_eq!(handle.in_flight(), 4);
    let t0 = Instant::now();
    assert_eq!(
        handle.try_create_invoice(1).unwrap_err(),
        BridgeError::QueueFull
    );
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "QueueFull must not wait"
    );

    let mut events = handle.subscribe();
    bridge.shutdown();
    for reply in held {
        assert!(
            block_on(reply).is_err(),
            "pending calls are canceled by shutdown"
        );
    }
    assert_eq!(handle.in_flight(), 0);
    assert_eq!(
        handle.try_create_invoice(1).unwrap_err(),
        BridgeError::Closed
    );
    assert_eq!(
        events.try_recv(),
        Err(TryRecvError::Closed),
        "event stream ends"
    );
}

#[test]
fn slow_backend_times_out_and_releases_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = dev_cfg(dir.path());
    cfg.queue_capacity = 1;
    cfg.call_timeout = Duration::from_millis(100);
    let bridge = start(cfg).unwrap();
    let handle = bridge.handle();
    handle.set_dev_delay(Duration::from_secs(3600));
    assert_eq!(
        wait(handle.try_create_invoice(1).unwrap()),
        Err(BridgeError::Timeout)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while handle.in_flight() != 0 {
        assert!(Instant::now() < deadline, "slot never released");
        std::thread::yield_now();
    }
    handle.set_dev_delay(Duration::ZERO);
    assert!(wait(handle.try_create_invoice(1).unwrap()).is_ok());
}

#[test]
fn node_key_persists_across_starts() {
    let dir = tempfile::tempdir().unwrap();
    let payee = |bridge: &Bridge| {
        let inv = wait(bridge.handle().try_create_invoice(7).unwrap()).unwrap();
        Bolt11Invoice::from_str(&inv.payment_request)
            .unwrap()
            .recover_payee_pub_key()
            .serialize()
    };
    let first = start(dev_cfg(dir.path())).unwrap();
    let id = payee(&first);
    assert_eq!(first.dev_node_id(), Some(id));
    first.shutdown();
    let second = start(dev_cfg(dir.path())).unwrap();
    assert_eq!(payee(&second), id);
}

#[test]
fn startup_errors_are_returned() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(NODE_KEY_FILE), "not a key\n").unwrap();
    assert!(matches!(
        start(dev_cfg(dir.path())),
        Err(BridgeError::NodeKey { .. })
    ));
    assert_eq!(
        std::fs::read(dir.path().join(NODE_KEY_FILE)).unwrap(),
        b"not a key\n"
    );

    let good = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = BridgeConfig::new(BackendConfig::Dev {
        basedir: good.path().to_path_buf(),
        wallet_listen: taken.local_addr().unwrap(),
        network: Network::Regtest,
    });
    assert!(matches!(start(cfg), Err(BridgeError::WalletListen { .. })));

    let mut cfg = dev_cfg(good.path());
    cfg.queue_capacity = 0;
    assert!(matches!(start(cfg), Err(BridgeError::Runtime(_))));
}

#[test]
fn invalid_requests_fail_synchronously_and_publish_fans_out() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start(dev_cfg(dir.path())).unwrap();
    let handle = bridge.handle();
    assert!(matches!(
        handle.try_create_invoice(0),
        Err(BridgeError::InvalidRequest(_))
    ));
    assert_eq!(handle.in_flight(), 0);
    let (mut a, mut b) = (handle.subscribe(), handle.subscribe());
    let ev = Event::TokenRevoked { token_id: [9; 32] };
    handle.publish(ev.clone());
    assert_eq!(a.try_recv().ok(), Some(ev.clone()));
    assert_eq!(b.try_recv().ok(), Some(ev));
}

#[test]
fn dev_lookup_follows_the_settled_flag() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start(dev_cfg(dir.path())).unwrap();
    let handle = bridge.handle();
    assert!(bridge.backend_connected());
    assert_eq!(handle.backend_stats().subscription_restarts, 0);
    let lookup = |hash| block_on(handle.try_lookup_invoice(hash).unwrap()).unwrap();
    let inv = wait(handle.try_create_invoice(3).unwrap()).unwrap();
    assert_eq!(lookup(inv.payment_hash), Ok(InvoiceState::Open));
    assert_eq!(lookup([0; 32]), Ok(InvoiceState::Unknown));
    let body = format!(r#"{{"invoice":"{}"}}"#, inv.payment_request);
    let (status, _) = http(bridge.wallet_addr().unwrap(), "POST", "/pay", &body);
    assert_eq!(status, 200);
    assert_eq!(lookup(inv.payment_hash), Ok(InvoiceState::Settled));
    assert_eq!(handle.in_flight(), 0);
}

#[test]
fn disabled_backend_has_no_wallet_and_refuses_invoices() {
    let bridge = start(BridgeConfig::new(BackendConfig::Disabled)).unwrap();
    assert_eq!(bridge.wallet_addr(), None);
    assert_eq!(bridge.dev_node_id(), None);
    let handle = bridge.handle();
    handle.set_dev_delay(Duration::from_secs(3600)); // a no-op, not a hang
    let want = Err(BridgeError::Backend("authentication is disabled".into()));
    assert_eq!(handle.try_create_invoice(1).map(|_| ()), want);
    let req = InvoiceRequest {
        amount_sat: 5,
        memo: "memo".into(),
    };
    assert_eq!(handle.try_create_invoice_with(req).map(|_| ()), want);
    assert_eq!(handle.try_lookup_invoice([1; 32]).map(|_| ()), want);
    assert_eq!(handle.in_flight(), 0);
    assert!(handle.backend_connected(), "nothing to wait for");
    // Invalid requests are still reported as such, and events still fan out.
    assert!(matches!(
        handle.try_create_invoice(0),
        Err(BridgeError::InvalidRequest(_))
    ));
    let mut sub = handle.subscribe();
    let ev = Event::TokenRevoked { token_id: [1; 32] };
    handle.publish(ev.clone());
    assert_eq!(sub.try_recv().ok(), Some(ev));
    bridge.shutdown();
    assert_eq!(
        handle.try_create_invoice(1).unwrap_err(),
        BridgeError::Closed
    );
}

#[test]
fn shutdown_is_prompt_while_handles_and_queued_calls_remain() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = dev_cfg(dir.path());
    cfg.call_timeout = Duration::from_secs(3600);
    let bridge = start(cfg).unwrap();
    let handle = bridge.handle();
    handle.set_dev_delay(Duration::from_secs(3600));
    let held: Vec<_> = (0..64)
        .map(|_| handle.try_create_invoice(1).unwrap())
        .collect();
    let clone = handle.clone(); // a worker still holding a handle must not keep the pump alive
    let t0 = Instant::now();
    bridge.shutdown();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "shutdown must not wait"
    );
    for reply in held {
        assert!(block_on(reply).is_err(), "canceled by shutdown");
    }
    assert_eq!(clone.in_flight(), 0);
    assert_eq!(
        clone.try_create_invoice(1).unwrap_err(),
        BridgeError::Closed
    );
}

#[test]
fn deadline_counts_from_enqueue() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = dev_cfg(dir.path());
    cfg.call_timeout = Duration::from_secs(60);
    let bridge = start(cfg).unwrap();
    // A job that sat in the queue past its deadline times out even on an instant backend;
    // a fresh one through the same path succeeds. Built by hand to fake the queueing time.
    let send = |age: Duration| {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            call: Call::Create {
                req: InvoiceRequest::l402(1),
                reply,
            },
            enqueued: Instant::now() - age,
            permit: Permit::acquire(&bridge.shared).unwrap(),
        };
        assert!(bridge.shared.jobs.try_send(Msg::Call(job)).is_ok());
        wait(rx)
    };
    assert_eq!(send(Duration::from_secs(61)), Err(BridgeError::Timeout));
    assert!(send(Duration::from_secs(59)).is_ok());
    assert_eq!(bridge.handle().in_flight(), 0);
}

#[test]
fn unbounded_call_timeout_does_not_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = dev_cfg(dir.path());
    cfg.call_timeout = Duration::MAX;
    let bridge = start(cfg).unwrap();
    assert!(wait(bridge.handle().try_create_invoice(3).unwrap()).is_ok());
}

#[test]
fn pricer_answers_fails_and_is_unreachable_without_lightning() {
    let fake = fake::pricer::FakePricer::start(42).unwrap();
    // No Lightning backend at all: pricing still works (it needs none).
    let bridge = start(BridgeConfig::new(BackendConfig::Disabled)).unwrap();
    let h = bridge.handle();
    let target = Arc::new(fake.target());
    let ask = |path: &str| {
        let rx = h
            .try_get_price(
                target.clone(),
                path.into(),
                format!("GET {path} HTTP/1.1\r\n\r\n"),
            )
            .unwrap();
        block_on(rx).unwrap_or(Err(BridgeError::Closed))
    };
    assert_eq!(ask("/a"), Ok(42));
    fake.set_price_for("/free", 0);
    assert_eq!(ask("/free"), Ok(0));
    fake.set_failing(true);
    assert!(matches!(ask("/a"), Err(BridgeError::Backend(m)) if m.contains("Internal")));
    let calls = fake.calls();
    assert_eq!(
        calls.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(),
        ["/a", "/free", "/a"]
    );
    assert_eq!(calls[1].http_request_text, "GET /free HTTP/1.1\r\n\r\n");
    assert_eq!(h.in_flight(), 0);

    // A pricer that is not listening fails the call instead of hanging.
    let addr = fake.addr();
    drop(fake);
    let gone = Arc::new(PricerTarget {
        address: addr.to_string(),
        insecure: true,
        tls_cert_path: None,
    });
    let rx = h.try_get_price(gone, "/a".into(), String::new()).unwrap();
    let got = block_on(rx).unwrap_or(Err(BridgeError::Closed));
    assert!(matches!(got, Err(BridgeError::Backend(_))), "{got:?}");
}

fn pay_req(invoice: &str, amount_sat: u64) -> PayRequest {
    PayRequest {
        payment_request: invoice.to_owned(),
        amount_sat,
        fee_limit_sat: 1,
        timeout: Duration::from_secs(30),
    }
}

fn pay(handle: &BridgeHandle, req: PayRequest) -> Result<PayReply, BridgeError> {
    block_on(handle.try_pay_invoice(req)?).unwrap_or(Err(BridgeError::Closed))
}

/// `POST /invoice` on the dev wallet: (invoice, payment hash).
fn wallet_invoice(addr: SocketAddr, amount_sats: u64) -> (String, [u8; 32]) {
    let body = format!(r#"{{"amount_sats":{amount_sats},"memo":"refund"}}"#);
    let (status, reply) = http(addr, "POST", "/invoice", &body);
    assert_eq!(status, 200, "{reply}");
    let v = json(&reply);
    let mut hash = [0u8; 32];
    hex::decode_to_slice(v["payment_hash"].as_str().unwrap(), &mut hash).unwrap();
    (v["invoice"].as_str().unwrap().to_owned(), hash)
}

fn wallet_state(addr: SocketAddr, hash: [u8; 32]) -> serde_json::Value {
    let (status, reply) = http(addr, "GET", &format!("/invoice/{}", hex::encode(hash)), "");
    assert_eq!(status, 200, "{reply}");
    json(&reply)
}

#[test]
fn dev_backend_pays_wallet_invoices_with_and_without_amount() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start(dev_cfg(dir.path())).unwrap();
    let addr = bridge.wallet_addr().unwrap();
    let h = bridge.handle();

    let (open, open_hash) = wallet_invoice(addr, 0);
    let parsed = Bolt11Invoice::from_str(&open).unwrap();
    parsed.check_signature().unwrap();
    assert_eq!(parsed.currency(), Currency::Regtest);
    assert_eq!(parsed.amount_milli_satoshis(), None);
    assert_eq!(parsed.expiry_time(), Duration::from_secs(3600));
    assert_eq!(parsed.payment_hash().to_byte_array(), open_hash);
    assert_ne!(
        Some(parsed.recover_payee_pub_key().serialize()),
        bridge.dev_node_id(),
        "the wallet signs with its own key"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let checked = check_return_invoice(&open, Network::Regtest, now).unwrap();
    assert_eq!(checked.payment_hash, open_hash);
    assert_eq!(
        wallet_state(addr, open_hash),
        serde_json::json!({"settled": false, "amount_paid_sats": 0})
    );

    // Amountless: the request names the amount, and must.
    assert!(matches!(
        h.try_pay_invoice(pay_req(&open, 0)),
        Err(BridgeError::InvalidRequest(_))
    ));
    let paid = pay(&h, pay_req(&open, 25)).unwrap();
    assert_eq!(paid.status, PayStatus::Succeeded, "{paid:?}");
    assert_eq!(paid.payment_hash, open_hash);
    let preimage = paid.preimage.unwrap();
    assert_eq!(sha256::Hash::hash(&preimage).to_byte_array(), open_hash);
    assert_eq!((paid.value_sat, paid.fee_sat, paid.failure), (25, 0, None));
    assert_eq!(
        wallet_state(addr, open_hash),
        serde_json::json!({"settled": true, "amount_paid_sats": 25})
    );
    // Paying again answers the first payment and pays nothing more.
    let again = pay(&h, pay_req(&open, 30)).unwrap();
    assert_eq!((again.preimage, again.value_sat), (Some(preimage), 25));
    assert_eq!(wallet_state(addr, open_hash)["amount_paid_sats"], 25);

    // With an amount: 0 or that amount only.
    let (fixed, fixed_hash) = wallet_invoice(addr, 40);
    assert!(matches!(
        h.try_pay_invoice(pay_req(&fixed, 39)),
        Err(BridgeError::InvalidRequest(_))
    ));
    assert_eq!(wallet_state(addr, fixed_hash)["settled"], false);
    let paid = pay(&h, pay_req(&fixed, 0)).unwrap();
    assert_eq!((paid.status, paid.value_sat), (PayStatus::Succeeded, 40));
    assert_eq!(
        wallet_state(addr, fixed_hash),
        serde_json::json!({"settled": true, "amount_paid_sats": 40})
    );
    assert_eq!(h.in_flight(), 0);
}

#[test]
fn dev_payments_to_invoices_the_wallet_does_not_know_fail() {
    let dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let bridge = start(dev_cfg(dir.path())).unwrap();
    let other = start(dev_cfg(other_dir.path())).unwrap();
    let h = bridge.handle();
    let addr = bridge.wallet_addr().unwrap();

    let (foreign, foreign_hash) = wallet_invoice(other.wallet_addr().unwrap(), 0);
    let own_node = wait(h.try_create_invoice(5).unwrap()).unwrap();
    for (invoice, hash, amount) in [
        (foreign, foreign_hash, 10),
        (own_node.payment_request, own_node.payment_hash, 0),
    ] {
        let reply = pay(&h, pay_req(&invoice, amount)).unwrap();
        assert_eq!(reply, PayReply::failed(hash, "no route"));
    }
    assert_eq!(
        block_on(h.try_lookup_invoice(own_node.payment_hash).unwrap()).unwrap(),
        Ok(InvoiceState::Open),
        "the proxy's own invoice is not settled by paying it"
    );
    for bad in ["", "garbage"] {
        assert!(matches!(
            h.try_pay_invoice(pay_req(bad, 1)),
            Err(BridgeError::InvalidRequest(_))
        ));
    }

    // The wallet's receive routes refuse what they cannot serve.
    let unknown = format!("/invoice/{}", hex::encode([7u8; 32]));
    let (status, reply) = http(addr, "GET", &unknown, "");
    assert_eq!(
        (status, json(&reply)["error"].as_str()),
        (404, Some("unknown invoice"))
    );
    for (method, path, body, want) in [
        ("GET", "/invoice/zz", "", 400),
        ("GET", "/invoice/", "", 400),
        ("POST", "/invoice", "not json", 400),
        ("POST", "/invoice", r#"{"amount_sats":-1}"#, 400),
        (
            "POST",
            "/invoice",
            r#"{"amount_sats":18446744073709551615}"#,
            400,
        ),
        ("GET", "/invoice", "", 405),
        ("POST", unknown.as_str(), "{}", 405),
    ] {
        let (status, reply) = http(addr, method, path, body);
        assert_eq!(status, want, "{method} {path} {body}: {reply}");
        assert!(json(&reply)["error"].is_string(), "{reply}");
    }
    // Both fields are optional: an amountless invoice with an empty memo.
    let (status, reply) = http(addr, "POST", "/invoice", "{}");
    assert_eq!(status, 200, "{reply}");
    let minted = Bolt11Invoice::from_str(json(&reply)["invoice"].as_str().unwrap()).unwrap();
    assert_eq!(minted.amount_milli_satoshis(), None);
}

#[test]
fn lnd_rest_send_reports_amounts_and_fees_as_strings() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start(dev_cfg(dir.path())).unwrap();
    let addr = bridge.wallet_addr().unwrap();
    let inv = wait(bridge.handle().try_create_invoice(21).unwrap()).unwrap();
    let send = format!(r#"{{"payment_request":"{}"}}"#, inv.payment_request);
    let (status, body) = http(addr, "POST", "/v2/router/send", &send);
    assert_eq!(status, 200, "{body}");
    let result = &json(body.trim_end())["result"];
    assert_eq!(result["status"], "SUCCEEDED");
    assert_eq!(result["value_sat"], "21");
    assert_eq!(result["value_msat"], "21000");
    assert_eq!(result["fee_sat"], "0");
    assert_eq!(result["fee_msat"], "0");
}

#[test]
fn payments_on_a_disabled_or_closed_bridge_fail_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let dev = start(dev_cfg(dir.path())).unwrap();
    let (invoice, _) = wallet_invoice(dev.wallet_addr().unwrap(), 0);
    let disabled = start(BridgeConfig::new(BackendConfig::Disabled)).unwrap();
    assert_eq!(
        disabled
            .handle()
            .try_pay_invoice(pay_req(&invoice, 1))
            .map(|_| ()),
        Err(BridgeError::Backend("authentication is disabled".into()))
    );
    let h = dev.handle();
    dev.shutdown();
    assert_eq!(
        h.try_pay_invoice(pay_req(&invoice, 1)).map(|_| ()),
        Err(BridgeError::Closed)
    );
}
