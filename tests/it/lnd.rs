//! The proxy against a real gRPC LND client talking to the in-process fake LND (TLS pinned to its
//! self-signed CA:TRUE certificate, macaroon metadata checked).

use lnd_bridge::fake::FakeLnd;
use lnd_bridge::Network;

use crate::support::{challenge, get, service, Origin, Proxy};

/// A fake LND and a proxy whose bridge drives it; `top` is extra top-level config.
fn start(origin: &Origin, cores: usize, top: &str) -> (FakeLnd, Proxy, tempfile::TempDir) {
    let lnd_dir = tempfile::tempdir().unwrap();
    let fake = FakeLnd::start(lnd_dir.path(), Network::Regtest).expect("fake lnd");
    let proxy = Proxy::start_on(
        tempfile::tempdir().unwrap(),
        fake.backend_config(),
        &service("svc", origin.addr, ""),
        cores,
        top,
        4096,
    );
    (fake, proxy, lnd_dir)
}

#[test]
fn challenge_settle_and_paid_request_through_lnd() {
    let origin = Origin::start();
    let (fake, proxy, _dir) = start(&origin, 2, "");
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
    let (fake, proxy, _dir) = start(&origin, 2, "");
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

/// A challenge's macaroon and the payment hash in its identifier.
fn challenge_hash(proxy: &Proxy) -> (String, [u8; 32]) {
    let (mac, _) = challenge(&get(proxy.addr, "/", ""));
    let m = aperture::l402::macaroon_from_base64(&mac).unwrap();
    let id = aperture::l402::Identifier::decode(&m.identifier).unwrap();
    (mac, id.payment_hash)
}

#[test]
fn strictverify_waits_for_the_settlement_and_every_core_learns_it() {
    let origin = Origin::start();
    let (fake, proxy, _dir) = start(&origin, 2, "strictverify: true");
    let (mac, hash) = challenge_hash(&proxy);
    // The client knows the preimage but the invoice is still OPEN (settlement in flight).
    let preimage = fake.preimage_of(&hash).unwrap();
    let auth = format!("Authorization: L402 {mac}:{}\r\n", hex::encode(preimage));
    let addr = proxy.addr;
    let waiting = {
        let auth = auth.clone();
        std::thread::spawn(move || get(addr, "/paid", &auth))
    };
    crate::support::wait_until(
        "the proxy to look the invoice up",
        std::time::Duration::from_secs(5),
        || fake.counters().lookup_invoice >= 1,
    );
    fake.settle(&hash).unwrap();
    let r = waiting.join().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "origin saw /paid"));
    // The settlement event reached both cores: no core needs another lookup.
    let lookups = fake.counters().lookup_invoice;
    for _ in 0..16 {
        assert_eq!(get(proxy.addr, "/", &auth).status, 200);
    }
    assert_eq!(fake.counters().lookup_invoice, lookups);
}

#[test]
fn strictverify_refuses_unsettled_and_unknown_invoices_with_a_fresh_402() {
    let origin = Origin::start();
    let (fake, proxy, _dir) = start(&origin, 1, "strictverify: true");
    let (mac, hash) = challenge_hash(&proxy);
    let preimage = fake.preimage_of(&hash).unwrap();
    let auth = format!("Authorization: L402 {mac}:{}\r\n", hex::encode(preimage));
    let start = std::time::Instant::now();
    let r = get(proxy.addr, "/", &auth);
    assert_eq!(r.status, 402, "an OPEN invoice is not paid");
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(2900),
        "waited {:?}",
        start.elapsed()
    );
    // A token the proxy's own key signed, for a payment lnd never heard of.
    let preimage = [5u8; 32];
    let hash: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(preimage).into();
    let verifier = aperture::l402::Verifier::new(proxy.master_secret());
    let forged = verifier.mint(
        hash,
        [1; 32],
        &aperture::l402::mint_caveats("svc", None, &[], None),
    );
    let auth = format!(
        "Authorization: L402 {}:{}\r\n",
        forged.to_base64(),
        hex::encode(preimage)
    );
    assert_eq!(get(proxy.addr, "/", &auth).status, 402);
}

#[test]
fn authenticator_disable_turns_auth_off_everywhere() {
    let origin = Origin::start();
    let proxy = Proxy::start_on(
        tempfile::tempdir().unwrap(),
        lnd_bridge::BackendConfig::Disabled,
        &service("svc", origin.addr, ""),
        1,
        "authenticator:\n  disable: true",
        16,
    );
    let r = get(proxy.addr, "/free", "");
    assert_eq!((r.status, r.text().as_str()), (200, "origin saw /free"));
}
