//! The Payment (MPP) scheme, intent charge, end to end against the dev backend: 402 with a
//! Payment challenge and the problem+json body → pay at the dev wallet → a credential built the
//! way third-party clients build it (serde_json, not our codec) → 200 with a `Payment-Receipt`;
//! a replay gets a fresh 402; schemes offered per service and filtered by `Accept-Payment`; an
//! L402 preimage never pays a charge; gRPC keeps the Trailers-Only form; two instances on one
//! PostgreSQL let exactly one of two concurrent uses through.

use std::net::SocketAddr;
use std::time::Duration;

use aperture::mpp;

use crate::support::{self, pay, service, Conn, Origin, Proxy, Response};

/// `enablempp` on with the dev backend and a SQLite file in the proxy's own basedir.
fn mpp_top(dir: &std::path::Path) -> String {
    format!(
        "authenticator:\n  network: regtest\n  enablempp: true\n  mpprealm: \"api.example.com\"\n  dev:\n    listenaddr: \"127.0.0.1:0\"\nsqlite:\n  databasefilename: \"{}\"\n",
        dir.join("aperture.db").display()
    )
}

fn start(scheme: &str, origin: &Origin) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let top = mpp_top(dir.path());
    let extra = format!("    authscheme: \"{scheme}\"\n");
    Proxy::start_in(dir, &service("svc", origin.addr, &extra), 1, &top, 4096)
}

fn get(addr: SocketAddr, extra: &str) -> Response {
    support::get(addr, "/paid", extra)
}

/// The Payment challenges of a 402.
pub fn payment_challenges(resp: &Response) -> Vec<mpp::ChallengeParams> {
    let lines: Vec<&str> = resp
        .all("www-authenticate")
        .into_iter()
        .filter(|v| v.to_ascii_lowercase().starts_with("payment "))
        .collect();
    lines
        .iter()
        .flat_map(|l| mpp::parse_challenge_list(l).unwrap_or_default())
        .collect()
}

/// Pays a charge challenge at the dev wallet and returns the `Authorization` value, built as
/// Alby's client builds it: JCS-sorted JSON echoing id, intent, method, realm, request,
/// expires, with `payload.preimage`.
fn pay_charge(wallet: SocketAddr, c: &mpp::ChallengeParams) -> String {
    let request = mpp::b64::decode(&c.request).unwrap();
    let request: serde_json::Value = serde_json::from_slice(&request).unwrap();
    let invoice = request["methodDetails"]["invoice"].as_str().unwrap();
    let preimage = pay(wallet, invoice);
    credential(c, &preimage)
}

pub fn credential(c: &mpp::ChallengeParams, preimage: &str) -> String {
    let json = serde_json::json!({
        "challenge": {
            "expires": c.expires, "id": c.id, "intent": c.intent,
            "method": c.method, "realm": c.realm, "request": c.request,
        },
        "payload": {"preimage": preimage},
    });
    let text = serde_json::to_string(&json).unwrap();
    format!("Payment {}", mpp::b64::encode(text.as_bytes()))
}

#[test]
fn charge_402_pay_200_with_a_receipt_then_a_replay_is_refused() {
    let origin = Origin::start();
    let proxy = start("mpp", &origin);
    let resp = get(proxy.addr, "");
    assert_eq!(resp.status, 402);
    let offers = resp.all("www-authenticate");
    assert_eq!(
        offers.len(),
        1,
        "an mpp-only service offers only Payment: {offers:?}"
    );
    assert_eq!(
        resp.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(resp.body, mpp::PAYMENT_REQUIRED_BODY.as_bytes());
    assert_eq!(resp.body.len(), 140);
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    let challenges = payment_challenges(&resp);
    let c = &challenges[0];
    assert_eq!(
        (c.method.as_str(), c.intent.as_str(), c.realm.as_str()),
        ("lightning", "charge", "api.example.com")
    );
    let auth = pay_charge(proxy.wallet, c);
    let header = format!("Authorization: {auth}\r\n");
    let ok = get(proxy.addr, &header);
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.text(), "origin saw /paid");
    assert_eq!(ok.header("cache-control"), Some("private"));
    let receipt = mpp::b64::decode(ok.header("payment-receipt").expect("a receipt")).unwrap();
    let receipt: serde_json::Value = serde_json::from_slice(&receipt).unwrap();
    let request: serde_json::Value =
        serde_json::from_slice(&mpp::b64::decode(&c.request).unwrap()).unwrap();
    assert_eq!(receipt["status"], "success");
    assert_eq!(receipt["challengeId"], c.id.as_str());
    assert_eq!(
        receipt["reference"],
        request["methodDetails"]["paymentHash"]
    );
    // Single use: the same credential again is a fresh 402.
    let again = get(proxy.addr, &header);
    assert_eq!(again.status, 402);
    assert!(again.header("payment-receipt").is_none());
    assert_eq!(payment_challenges(&again).len(), 1);
    assert_eq!(origin.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn both_schemes_in_go_order_filtered_by_accept_payment_and_never_crossed() {
    let origin = Origin::start();
    let proxy = start("l402+mpp", &origin);
    let resp = get(proxy.addr, "");
    assert_eq!(resp.status, 402);
    let schemes: Vec<String> = resp
        .all("www-authenticate")
        .iter()
        .map(|v| v.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(schemes, ["LSAT", "L402", "Payment"]);
    // A client that only takes sessions gets no charge offered.
    let only_sessions = get(proxy.addr, "Accept-Payment: lightning/session\r\n");
    assert!(payment_challenges(&only_sessions).is_empty());
    assert_eq!(only_sessions.all("www-authenticate").len(), 2);
    assert_eq!(
        only_sessions.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    // The L402 invoice's preimage does not pay the charge: separate payment hashes.
    let (_, l402_invoice) = support::challenge(&resp);
    let l402_preimage = pay(proxy.wallet, &l402_invoice);
    let c = &payment_challenges(&resp)[0];
    let crossed = credential(c, &l402_preimage);
    let refused = get(proxy.addr, &format!("Authorization: {crossed}\r\n"));
    assert_eq!(refused.status, 402);
    // An L402-only service neither offers nor takes Payment.
    let l402_only = start("l402", &origin);
    let resp = get(l402_only.addr, "");
    assert!(payment_challenges(&resp).is_empty());
    let c = &payment_challenges(&get(proxy.addr, ""))[0];
    let auth = pay_charge(proxy.wallet, c);
    let elsewhere = get(l402_only.addr, &format!("Authorization: {auth}\r\n"));
    assert_eq!(elsewhere.status, 402);
}

#[test]
fn a_charge_minted_for_one_service_does_not_pay_another() {
    let origin = Origin::start();
    let dir = tempfile::tempdir().unwrap();
    let top = mpp_top(dir.path());
    let services = format!(
        "  - name: \"cheap\"\n    hostregexp: \"^cheap$\"\n    address: \"{0}\"\n    protocol: http\n    price: 1\n    authscheme: mpp\n  - name: \"dear\"\n    hostregexp: \"^dear$\"\n    address: \"{0}\"\n    protocol: http\n    price: 1\n    authscheme: mpp\n",
        origin.addr
    );
    let proxy = Proxy::start_in(dir, &services, 1, &top, 4096);
    let on = |host: &str, extra: &str| {
        let raw = format!("GET /paid HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n");
        Conn::open(proxy.addr).request(raw.as_bytes())
    };
    let c = &payment_challenges(&on("cheap", ""))[0];
    let auth = pay_charge(proxy.wallet, c);
    let header = format!("Authorization: {auth}\r\n");
    assert_eq!(on("dear", &header).status, 402, "bound to its service");
    assert_eq!(on("cheap", &header).status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_clients_get_trailers_only_with_the_payment_challenge() {
    let origin = Origin::start();
    let proxy = start("l402+mpp", &origin);
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut send = send.ready().await.unwrap();
    let req = http::Request::post("http://api.example.com/pkg.Svc/Call")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (resp, _) = send.send_request(req, true).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200, "Trailers-Only, never an HTTP 402");
    let h = resp.headers();
    assert_eq!(h["grpc-status"], "13");
    assert_eq!(h["content-type"], "application/grpc");
    let schemes: Vec<&str> = h
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().split(' ').next().unwrap())
        .collect();
    assert_eq!(schemes, ["LSAT", "L402", "Payment"]);
    assert!(resp.body().is_end_stream(), "no JSON body");
}

#[test]
fn postgres_two_instances_exactly_one_of_two_concurrent_uses_succeeds() {
    let Some(url) = crate::store::pg_url() else {
        return;
    };
    let origin = Origin::start();
    let top = format!(
        "authenticator:\n  network: regtest\n  enablempp: true\n  mpprealm: \"fleet\"\n  dev:\n    listenaddr: \"127.0.0.1:0\"\n{}",
        crate::store::pg_yaml(&url),
    );
    let services = service("svc", origin.addr, "    authscheme: mpp\n");
    let a = Proxy::start_in(tempfile::tempdir().unwrap(), &services, 1, &top, 4096);
    let b = Proxy::start_in(tempfile::tempdir().unwrap(), &services, 1, &top, 4096);
    // Minted by A (which shares its HMAC secret with B through the database), paid at A's
    // wallet, then used through both at once.
    let c = &payment_challenges(&get(a.addr, ""))[0];
    let header = format!("Authorization: {}\r\n", pay_charge(a.wallet, c));
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let statuses: Vec<u16> = [a.addr, b.addr]
        .into_iter()
        .map(|addr| {
            let (header, barrier) = (header.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                get(addr, &header).status
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let mut sorted = statuses.clone();
    sorted.sort();
    assert_eq!(sorted, [200, 402], "{statuses:?}");
}

#[test]
fn aperture_fetch_pays_a_payment_charge() {
    let origin = Origin::start();
    let proxy = start("mpp", &origin);
    let opts = aperture::client::FetchOptions {
        url: format!("http://{}/paid", proxy.addr),
        wallet: format!("http://{}", proxy.wallet),
        ..Default::default()
    };
    let resp = aperture::client::fetch(&opts).expect("fetch");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"origin saw /paid");
    let paid = resp.paid.as_ref().expect("paid on the way");
    assert_eq!(paid.scheme, "Payment");
    assert!(resp.header("payment-receipt").is_some());
}
