//! The proxy against a real gRPC LND client talking to the in-process fake LND (TLS pinned to its
//! self-signed CA:TRUE certificate, macaroon metadata checked).

use lnd_bridge::fake::FakeLnd;
use lnd_bridge::Network;

use crate::support::{challenge, get, service, Origin, Proxy};

fn start(origin: &Origin, cores: usize) -> (FakeLnd, Proxy, tempfile::TempDir) {
    let lnd_dir = tempfile::tempdir().unwrap();
    let fake = FakeLnd::start(lnd_dir.path(), Network::Regtest).expect("fake lnd");
    let proxy = Proxy::start_on(
        tempfile::tempdir().unwrap(),
        fake.backend_config(),
        &service("svc", origin.addr, ""),
        cores,
        "",
        4096,
    );
    (fake, proxy, lnd_dir)
}

#[test]
fn challenge_settle_and_paid_request_through_lnd() {
    let origin = Origin::start();
    let (fake, proxy, _dir) = start(&origin, 2);
    let resp = get(proxy.addr, "/x", "");
    assert_eq!(resp.status, 402, "{}", resp.text());
    let (mac, invoice) = challenge(&resp);
    assert!(invoice.starts_with("lnbcrt100n1"), "{invoice}");
    let preimage = fake
        .pay(&invoice)
        .expect("the fake lnd settles its own invoice");
    let auth = format!("Authorization: L402 {mac}:{}\r\n", hex::encode(preimage));
    let r = get(proxy.addr, "/x", &auth);
    assert_eq!((r.status, r.text().as_str()), (200, "origin saw /x"));
    assert!(fake.counters().add_invoice >= 1);
}

#[test]
fn lnd_refusing_calls_costs_new_challenges_a_503_but_never_paid_requests() {
    let origin = Origin::start();
    let (fake, proxy, _dir) = start(&origin, 2);
    let (mac, invoice) = challenge(&get(proxy.addr, "/", ""));
    let preimage = fake.pay(&invoice).unwrap();
    let auth = format!("Authorization: L402 {mac}:{}\r\n", hex::encode(preimage));
    fake.fail_next(20);
    for _ in 0..20 {
        assert_eq!(
            get(proxy.addr, "/", &auth).status,
            200,
            "paid requests need no LND"
        );
    }
    let r = get(proxy.addr, "/", "");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    // LND comes back: challenges work again without a restart.
    fake.fail_next(0);
    crate::support::wait_until(
        "challenges to work again",
        std::time::Duration::from_secs(10),
        || get(proxy.addr, "/", "").status == 402,
    );
}
