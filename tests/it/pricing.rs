//! Dynamic pricing (`dynamicprice`) against an in-process fake pricer (`pricesrpc.Prices`):
//! price 0 passes through unpaid and unlimited, price N gives a 402 whose invoice is for N sats
//! and whose token buys that one path, a failing pricer gives Go aperture's 500, and the pricer
//! is shown the path and the serialized request.

use lnd_bridge::fake::pricer::FakePricer;

use crate::support::{challenge, get, pay, service, Conn, Origin, Proxy};

/// The amount of a BOLT11 invoice in sats, read from its human-readable part
/// (`ln<currency><amount><multiplier>1…`).
pub fn invoice_sats(invoice: &str) -> u64 {
    let lower = invoice.to_ascii_lowercase();
    let hrp = &lower[..lower.rfind('1').expect("bech32 separator")];
    let amount = hrp.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    let (digits, mult) = match amount.chars().last() {
        Some(c) if c.is_ascii_alphabetic() => (&amount[..amount.len() - 1], Some(c)),
        _ => (amount, None),
    };
    // In pico-bitcoin: 1 sat = 10^4 pBTC.
    let pico_per_unit: u64 = match mult {
        None => 1_000_000_000_000,
        Some('m') => 1_000_000_000,
        Some('u') => 1_000_000,
        Some('n') => 1_000,
        Some('p') => 1,
        Some(other) => panic!("multiplier {other}"),
    };
    digits.parse::<u64>().expect("amount") * pico_per_unit / 10_000
}

fn priced_proxy(pricer: &FakePricer, origin: &Origin, extra: &str) -> Proxy {
    let dynamic = format!(
        "    dynamicprice:\n      enabled: true\n      grpcaddress: \"{}\"\n      insecure: true\n{extra}",
        pricer.addr()
    );
    Proxy::start(&service("svc", origin.addr, &dynamic), 2)
}

#[test]
fn bolt11_amounts_decode() {
    assert_eq!(invoice_sats("lnbcrt100n1pxyz"), 10);
    assert_eq!(invoice_sats("lnbc2500u1pxyz"), 250_000);
    assert_eq!(invoice_sats("lntb1m1pxyz"), 100_000);
}

#[test]
fn price_zero_passes_through_without_payment_or_rate_limit() {
    let origin = Origin::start();
    let pricer = FakePricer::start(0).unwrap();
    let limits = "    ratelimits:\n      - requests: 1\n        per: 1h\n        burst: 1\n";
    let proxy = priced_proxy(&pricer, &origin, limits);
    for _ in 0..3 {
        let resp = get(proxy.addr, "/free", "");
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.text(), "origin saw /free");
    }
    let calls = pricer.calls();
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|c| c.path == "/free"));
    assert!(
        calls[0]
            .http_request_text
            .starts_with("GET /free HTTP/1.1\r\nHost: "),
        "{}",
        calls[0].http_request_text
    );
}

#[test]
fn priced_path_gets_an_invoice_for_that_price_and_its_token_buys_that_path_only() {
    let origin = Origin::start();
    let pricer = FakePricer::start(7).unwrap();
    pricer.set_price_for("/paid", 25);
    let proxy = priced_proxy(&pricer, &origin, "");

    let resp = get(proxy.addr, "/paid", "");
    assert_eq!(resp.status, 402, "{}", resp.text());
    let (mac, invoice) = challenge(&resp);
    assert_eq!(invoice_sats(&invoice), 25);
    let preimage = pay(proxy.wallet, &invoice);
    let auth = format!("Authorization: L402 {mac}:{preimage}\r\n");

    let paid = get(proxy.addr, "/paid", &auth);
    assert_eq!(paid.status, 200, "{}", paid.text());
    assert_eq!(paid.text(), "origin saw /paid");
    // Go aperture's resource name is `<service><path>`: the token does not buy another path.
    let other = get(proxy.addr, "/other", &auth);
    assert_eq!(other.status, 402, "{}", other.text());
    assert_eq!(invoice_sats(&challenge(&other).1), 7);
    // A paid request is verified without asking the pricer again.
    let asked: Vec<String> = pricer.calls().into_iter().map(|c| c.path).collect();
    assert_eq!(asked, ["/paid", "/other"]);
}

#[test]
fn the_pricer_sees_the_path_head_and_body_prefix() {
    let origin = Origin::start();
    let pricer = FakePricer::start(3).unwrap();
    let proxy = priced_proxy(&pricer, &origin, "");
    let body = "{\"model\":\"big\"}";
    let raw = format!(
        "POST /v1/chat%20x?q=1 HTTP/1.1\r\nHost: api.test\r\ncontent-type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let resp = Conn::open(proxy.addr).request(raw.as_bytes());
    assert_eq!(resp.status, 402, "{}", resp.text());
    let calls = pricer.calls();
    assert_eq!(calls.len(), 1);
    // Go's `URL.Path`: decoded, without the query.
    assert_eq!(calls[0].path, "/v1/chat x");
    assert_eq!(
        calls[0].http_request_text,
        format!(
            "POST /v1/chat%20x?q=1 HTTP/1.1\r\nHost: api.test\r\nContent-Length: {}\r\n\
             Content-Type: application/json\r\n\r\n{body}",
            body.len()
        )
    );
}

#[test]
fn a_failing_or_absent_pricer_gives_gos_500() {
    let origin = Origin::start();
    let pricer = FakePricer::start(5).unwrap();
    pricer.set_failing(true);
    let proxy = priced_proxy(&pricer, &origin, "");
    let resp = get(proxy.addr, "/x", "");
    assert_eq!(resp.status, 500);
    assert_eq!(resp.text(), "failure fetching resource price\n");
    assert_eq!(origin.hits.load(std::sync::atomic::Ordering::SeqCst), 0);

    // The pricer gone altogether: the same answer, and the core is not stuck.
    drop(pricer);
    for _ in 0..2 {
        let resp = get(proxy.addr, "/x", "");
        assert_eq!(resp.status, 500);
        assert_eq!(resp.text(), "failure fetching resource price\n");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn grpc_calls_are_priced_by_method_path_and_a_failure_is_trailers_only() {
    let origin = Origin::start();
    let pricer = FakePricer::start(4).unwrap();
    let proxy = priced_proxy(&pricer, &origin, "");
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut send, conn) = h2::client::handshake(tcp).await.expect("h2c handshake");
    tokio::spawn(conn);
    let call = || {
        http::Request::post("http://test/pkg.Svc/Call")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap()
    };
    let (resp, _) = send.send_request(call(), true).expect("send");
    let resp = resp.await.expect("response");
    assert_eq!(resp.headers()["grpc-message"], "payment required");
    let calls = pricer.calls();
    assert_eq!(calls[0].path, "/pkg.Svc/Call");
    assert!(
        calls[0]
            .http_request_text
            .starts_with("POST /pkg.Svc/Call HTTP/2.0\r\nHost: test\r\n"),
        "{}",
        calls[0].http_request_text
    );
    assert!(calls[0]
        .http_request_text
        .contains("\r\nContent-Type: application/grpc\r\nTe: trailers\r\n"));

    pricer.set_failing(true);
    let (resp, _) = send.send_request(call(), true).expect("send");
    let resp = resp.await.expect("response");
    assert!(resp.body().is_end_stream(), "Trailers-Only");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["grpc-status"], "13");
    assert_eq!(
        resp.headers()["grpc-message"],
        "failure fetching resource price"
    );
    assert_eq!(origin.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}
