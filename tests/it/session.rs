//! The Payment scheme, intent session, end to end against the dev backend and its wallet: a
//! deposit opens a session, bearer requests are debited until the balance runs short, a top-up
//! (answered by the proxy, never forwarded) credits it again, and close refunds the rest to an
//! amountless return invoice the wallet issued; an idle session is closed and refunded by the
//! proxy; `aperture fetch --session` (the client library) does the whole dance. Credentials are
//! built with serde_json, not our codec.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aperture::mpp;

use crate::support::{self, pay, service, wait_until, Conn, Origin, Proxy, Response};

/// Sessions on (deposit = 3 units) with the dev backend and a SQLite file in the basedir.
fn start(origin: &Origin, idle_secs: u64) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let top = format!(
        "authenticator:\n  network: regtest\n  enablempp: true\n  enablesessions: true\n  sessiondepositmultiplier: 3\n  sessionidletimeout: {idle_secs}\n  mpprealm: \"api.example.com\"\n  dev:\n    listenaddr: \"127.0.0.1:0\"\nsqlite:\n  databasefilename: \"{}\"\n",
        dir.path().join("aperture.db").display()
    );
    let extra = "    authscheme: \"mpp\"\n";
    Proxy::start_in(dir, &service("svc", origin.addr, extra), 2, &top, 4096)
}

fn get(addr: SocketAddr, auth: Option<&str>) -> Response {
    let extra = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    support::get(addr, "/paid", &extra)
}

/// The session challenge of a 402 and its decoded request.
pub(crate) fn session_challenge(resp: &Response) -> (mpp::ChallengeParams, serde_json::Value) {
    let c = resp
        .all("www-authenticate")
        .into_iter()
        .filter(|v| v.to_ascii_lowercase().starts_with("payment "))
        .flat_map(|l| mpp::parse_challenge_list(l).unwrap_or_default())
        .find(|c| c.intent == "session")
        .unwrap_or_else(|| panic!("no session challenge in {:?}", resp.all("www-authenticate")));
    let request: serde_json::Value =
        serde_json::from_slice(&mpp::b64::decode(&c.request).unwrap()).unwrap();
    (c, request)
}

pub(crate) fn credential(c: &mpp::ChallengeParams, payload: serde_json::Value) -> String {
    let json = serde_json::json!({
        "challenge": {
            "expires": c.expires, "id": c.id, "intent": c.intent,
            "method": c.method, "realm": c.realm, "request": c.request,
        },
        "payload": payload,
    });
    let text = serde_json::to_string(&json).unwrap();
    format!("Payment {}", mpp::b64::encode(text.as_bytes()))
}

/// An amountless invoice from the dev wallet: (invoice, payment hash hex).
pub(crate) fn return_invoice(wallet: SocketAddr) -> (String, String) {
    let body = r#"{"amount_sats": 0, "memo": "refund"}"#;
    let raw = format!(
        "POST /invoice HTTP/1.1\r\nHost: wallet\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let resp = Conn::open(wallet).request(raw.as_bytes());
    assert_eq!(resp.status, 200, "wallet invoice: {}", resp.text());
    let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    (
        v["invoice"].as_str().unwrap().to_owned(),
        v["payment_hash"].as_str().unwrap().to_owned(),
    )
}

/// What the dev wallet says of an invoice it issued: (settled, amount paid in sats).
fn wallet_invoice(wallet: SocketAddr, hash: &str) -> (bool, u64) {
    let raw = format!("GET /invoice/{hash} HTTP/1.1\r\nHost: wallet\r\nConnection: close\r\n\r\n");
    let resp = Conn::open(wallet).request(raw.as_bytes());
    assert_eq!(resp.status, 200, "wallet lookup: {}", resp.text());
    let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    (
        v["settled"].as_bool().unwrap(),
        v["amount_paid_sats"].as_u64().unwrap(),
    )
}

/// Opens a session on the 402's challenge; returns (challenge, session id, deposit preimage,
/// return invoice hash, the open's answer).
fn open(proxy: &Proxy) -> (mpp::ChallengeParams, String, String, String, Response) {
    let first = get(proxy.addr, None);
    assert_eq!(first.status, 402);
    let (c, request) = session_challenge(&first);
    assert_eq!(request["amount"], "10");
    assert_eq!(request["depositAmount"], "30");
    let preimage = pay(proxy.wallet, request["depositInvoice"].as_str().unwrap());
    let session_id = request["paymentHash"].as_str().unwrap().to_owned();
    let (invoice, hash) = return_invoice(proxy.wallet);
    let payload =
        serde_json::json!({"action": "open", "preimage": preimage, "returnInvoice": invoice});
    let resp = get(proxy.addr, Some(&credential(&c, payload)));
    (c, session_id, preimage, hash, resp)
}

#[test]
fn open_bearer_until_short_then_top_up_and_close_with_a_refund() {
    let origin = Origin::start();
    let proxy = start(&origin, 300);
    let (c, session_id, preimage, refund_hash, opened) = open(&proxy);
    assert_eq!(opened.status, 200, "{}", opened.text());
    let receipt: serde_json::Value = serde_json::from_slice(
        &mpp::b64::decode(opened.header("payment-receipt").unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(receipt["reference"], session_id.as_str());
    // The open was debited one unit (30 → 20): two bearers pass, the third is short.
    let bearer = credential(
        &c,
        serde_json::json!({"action": "bearer", "sessionId": session_id, "preimage": preimage}),
    );
    for _ in 0..2 {
        let ok = get(proxy.addr, Some(&bearer));
        assert_eq!(ok.status, 200, "{}", ok.text());
        assert!(ok.header("payment-receipt").is_some());
    }
    let short = get(proxy.addr, Some(&bearer));
    assert_eq!(short.status, 402);
    let (top_up_challenge, top_up) = session_challenge(&short);
    assert_eq!(top_up["depositAmount"], "30");
    assert_eq!(
        short.all("www-authenticate").len(),
        1,
        "a top-up offers one challenge"
    );
    assert_eq!(origin.hits.load(Ordering::SeqCst), 3);
    // Top up: answered by the proxy (never forwarded), once per payment.
    let top_up_preimage = pay(proxy.wallet, top_up["depositInvoice"].as_str().unwrap());
    let top_up_auth = credential(
        &top_up_challenge,
        serde_json::json!({"action": "topUp", "sessionId": session_id, "topUpPreimage": top_up_preimage}),
    );
    let ok = get(proxy.addr, Some(&top_up_auth));
    assert_eq!((ok.status, ok.text().as_str()), (200, r#"{"status":"ok"}"#));
    assert_eq!(ok.header("cache-control"), Some("private"));
    let again = get(proxy.addr, Some(&top_up_auth));
    assert_eq!(
        again.status, 200,
        "a replayed top-up credits nothing but is fine"
    );
    assert_eq!(
        origin.hits.load(Ordering::SeqCst),
        3,
        "top-ups never reach the origin"
    );
    // 30 more: three bearers, then short again (the replay credited nothing).
    for _ in 0..3 {
        assert_eq!(get(proxy.addr, Some(&bearer)).status, 200);
    }
    assert_eq!(get(proxy.addr, Some(&bearer)).status, 402);
    // Close with 0 left: nothing to refund.
    let close = credential(
        &c,
        serde_json::json!({"action": "close", "sessionId": session_id, "preimage": preimage}),
    );
    let closed = get(proxy.addr, Some(&close));
    assert_eq!(closed.status, 200, "{}", closed.text());
    let body: serde_json::Value = serde_json::from_slice(&closed.body).unwrap();
    assert_eq!(body["status"], "closed");
    assert_eq!(body["refundSats"], 0);
    assert_eq!(body["refundStatus"], "skipped");
    assert_eq!(wallet_invoice(proxy.wallet, &refund_hash), (false, 0));
    // Closed: bearers are refused.
    assert_eq!(get(proxy.addr, Some(&bearer)).status, 402);
    assert_eq!(origin.hits.load(Ordering::SeqCst), 6);
}

#[test]
fn close_refunds_the_unspent_balance_to_the_return_invoice() {
    let origin = Origin::start();
    let proxy = start(&origin, 300);
    let (c, session_id, preimage, refund_hash, opened) = open(&proxy);
    assert_eq!(opened.status, 200, "{}", opened.text());
    let close = credential(
        &c,
        serde_json::json!({"action": "close", "sessionId": session_id, "preimage": preimage}),
    );
    let closed = get(proxy.addr, Some(&close));
    assert_eq!(closed.status, 200, "{}", closed.text());
    // 30 − 10 = 20 left; the fee budget is 1 sat (1%, at least 1): 19 refunded.
    let body: serde_json::Value = serde_json::from_slice(&closed.body).unwrap();
    assert_eq!(body["refundSats"], 19, "{body}");
    assert_eq!(body["refundStatus"], "succeeded");
    assert_eq!(wallet_invoice(proxy.wallet, &refund_hash), (true, 19));
    let receipt: serde_json::Value = serde_json::from_slice(
        &mpp::b64::decode(closed.header("payment-receipt").unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(receipt["reference"], session_id.as_str());
    assert_eq!(receipt["refundStatus"], "succeeded");
    // A second close finds nothing open.
    assert_eq!(get(proxy.addr, Some(&close)).status, 402);
}

#[test]
fn an_idle_session_is_closed_and_refunded_by_the_proxy() {
    let origin = Origin::start();
    let proxy = start(&origin, 2);
    let (_, _, _, refund_hash, opened) = open(&proxy);
    assert_eq!(opened.status, 200, "{}", opened.text());
    wait_until("the idle session's refund", Duration::from_secs(60), || {
        wallet_invoice(proxy.wallet, &refund_hash) == (true, 19)
    });
}

#[test]
fn bearer_and_open_refusals() {
    let origin = Origin::start();
    let proxy = start(&origin, 300);
    let (c, session_id, _, _, opened) = open(&proxy);
    assert_eq!(opened.status, 200);
    // A wrong preimage for the session: refused, nothing forwarded.
    let wrong = credential(
        &c,
        serde_json::json!({"action": "bearer", "sessionId": session_id, "preimage": "11".repeat(32)}),
    );
    assert_eq!(get(proxy.addr, Some(&wrong)).status, 402);
    // Opening twice with the same deposit: refused.
    let first = get(proxy.addr, None);
    let (c2, request) = session_challenge(&first);
    let preimage = pay(proxy.wallet, request["depositInvoice"].as_str().unwrap());
    // A return invoice with an amount is refused (it must be amountless).
    let with_amount = {
        let body = r#"{"amount_sats": 5, "memo": "x"}"#;
        let raw = format!(
            "POST /invoice HTTP/1.1\r\nHost: wallet\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let resp = Conn::open(proxy.wallet).request(raw.as_bytes());
        let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        v["invoice"].as_str().unwrap().to_owned()
    };
    let bad =
        serde_json::json!({"action": "open", "preimage": preimage, "returnInvoice": with_amount});
    assert_eq!(get(proxy.addr, Some(&credential(&c2, bad))).status, 402);
    let (good_invoice, _) = return_invoice(proxy.wallet);
    let good =
        serde_json::json!({"action": "open", "preimage": preimage, "returnInvoice": good_invoice});
    assert_eq!(
        get(proxy.addr, Some(&credential(&c2, good.clone()))).status,
        200
    );
    assert_eq!(get(proxy.addr, Some(&credential(&c2, good))).status, 402);
    assert_eq!(origin.hits.load(Ordering::SeqCst), 2);
}

#[test]
fn fetch_session_opens_uses_tops_up_and_closes() {
    let origin = Origin::start();
    let proxy = start(&origin, 300);
    let opts = aperture::client::FetchOptions {
        url: format!("http://{}/paid", proxy.addr),
        wallet: format!("http://{}", proxy.wallet),
        ..Default::default()
    };
    // 30 sats a deposit, 10 a request: 7 requests need two top-ups.
    let report = aperture::client::fetch_session(&opts, 7).expect("session run");
    assert_eq!(report.responses.len(), 7);
    assert!(report.responses.iter().all(|r| r.status == 200));
    assert_eq!(report.top_ups_sats, [30, 30]);
    assert_eq!(report.close.status, 200);
    let body: serde_json::Value = serde_json::from_slice(&report.close.body).unwrap();
    // 90 paid, 70 spent: 20 left, 19 refunded.
    assert_eq!(body["refundSats"], 19, "{body}");
    assert_eq!(
        wallet_invoice(proxy.wallet, &report.return_hash),
        (true, 19)
    );
    assert_eq!(origin.hits.load(Ordering::SeqCst), 7);
}

/// Two instances on one PostgreSQL: the balance is never spent twice. A opens (its lease holds
/// the rest of the deposit); B, asked meanwhile, answers 503 rather than a top-up; once A's
/// lease goes idle it returns to the database, B leases it, and the total the two forwarded is
/// exactly what the deposit paid for.
#[test]
fn postgres_two_instances_never_spend_a_balance_twice() {
    let Some(url) = crate::store::pg_url() else {
        return;
    };
    let origin = Origin::start();
    let top = format!(
        "authenticator:\n  network: regtest\n  enablempp: true\n  enablesessions: true\n  sessiondepositmultiplier: 3\n  sessionidletimeout: 8\n  mpprealm: \"fleet\"\n  dev:\n    listenaddr: \"127.0.0.1:0\"\n{}",
        crate::store::pg_yaml(&url),
    );
    let services = service("svc", origin.addr, "    authscheme: mpp\n");
    let a = Proxy::start_in(tempfile::tempdir().unwrap(), &services, 1, &top, 4096);
    let b = Proxy::start_in(tempfile::tempdir().unwrap(), &services, 1, &top, 4096);
    let (c, session_id, preimage, _, opened) = open(&a);
    assert_eq!(opened.status, 200, "{}", opened.text());
    let bearer = credential(
        &c,
        serde_json::json!({"action": "bearer", "sessionId": session_id, "preimage": preimage}),
    );
    // Both at once, many times: at most the 20 sats left can be spent.
    let spent: usize = (0..8)
        .map(|i| {
            let (addr, bearer) = (if i % 2 == 0 { a.addr } else { b.addr }, bearer.clone());
            std::thread::spawn(move || get(addr, Some(&bearer)).status)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|s| *s == 200)
        .count();
    assert!(spent <= 2, "{spent} bearers passed on 20 sats of 10");
    // Whatever is left is spent through B once A hands its idle lease back; then B is short.
    let mut forwarded = spent;
    let mut last = 0;
    wait_until("the balance to run out", Duration::from_secs(60), || {
        last = get(b.addr, Some(&bearer)).status;
        if last == 200 {
            forwarded += 1;
        }
        last == 402
    });
    assert_eq!(
        forwarded, 2,
        "exactly the deposit's worth was forwarded after the open"
    );
    assert_eq!(origin.hits.load(Ordering::SeqCst), 3);
}

/// The refund of a close through lnd: `routerrpc.SendPaymentV2` on the fake LND, with a timeout
/// and a fee budget taken from the refund; the return invoice comes from a dev wallet.
#[test]
fn a_refund_goes_through_lnd_send_payment_v2() {
    use lnd_bridge::fake::FakeLnd;
    let origin = Origin::start();
    let lnd_dir = tempfile::tempdir().unwrap();
    let fake = FakeLnd::start(lnd_dir.path(), lnd_bridge::Network::Regtest).expect("fake lnd");
    let dir = tempfile::tempdir().unwrap();
    let top = format!(
        "authenticator:\n  network: regtest\n  enablempp: true\n  enablesessions: true\n  sessiondepositmultiplier: 3\n  dev:\n    listenaddr: \"127.0.0.1:0\"\nsqlite:\n  databasefilename: \"{}\"\n",
        dir.path().join("aperture.db").display()
    );
    let services = service("svc", origin.addr, "    authscheme: mpp\n");
    let proxy = Proxy::start_on(dir, fake.backend_config(), &services, 1, &top, 4096);
    // A wallet that can issue an amountless regtest invoice: a dev bridge of its own.
    let wallet_dir = tempfile::tempdir().unwrap();
    let wallet = lnd_bridge::start(lnd_bridge::BridgeConfig::new(
        lnd_bridge::BackendConfig::Dev {
            basedir: wallet_dir.path().to_path_buf(),
            wallet_listen: "127.0.0.1:0".parse().unwrap(),
            network: lnd_bridge::Network::Regtest,
        },
    ))
    .expect("dev wallet");
    let first = get(proxy.addr, None);
    assert_eq!(first.status, 402, "{}", first.text());
    let (c, request) = session_challenge(&first);
    let deposit = request["depositInvoice"].as_str().unwrap();
    let preimage = hex::encode(fake.pay(deposit).expect("the fake lnd settles its invoice"));
    let session_id = request["paymentHash"].as_str().unwrap().to_owned();
    let (invoice, _) = return_invoice(wallet.wallet_addr().unwrap());
    let payload =
        serde_json::json!({"action": "open", "preimage": preimage, "returnInvoice": invoice});
    assert_eq!(get(proxy.addr, Some(&credential(&c, payload))).status, 200);
    let close =
        serde_json::json!({"action": "close", "sessionId": session_id, "preimage": preimage});
    let closed = get(proxy.addr, Some(&credential(&c, close)));
    assert_eq!(closed.status, 200, "{}", closed.text());
    let body: serde_json::Value = serde_json::from_slice(&closed.body).unwrap();
    assert_eq!(
        (body["refundSats"].as_u64(), body["refundStatus"].as_str()),
        (Some(19), Some("succeeded"))
    );
    let payments = fake.payments();
    assert_eq!(payments.len(), 1, "{payments:?}");
    let p = &payments[0];
    assert_eq!(p.payment_request, invoice);
    assert_eq!((p.amt, p.fee_limit_sat), (19, 1));
    assert!(
        p.timeout_seconds > 0,
        "lnd before 0.19 refuses a payment without a timeout"
    );
    wallet.shutdown();
}
