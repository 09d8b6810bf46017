//! Unit tests of the dev backend's minting and settling (no runtime, no sockets).

use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::SecretKey;
use lightning_invoice::{Bolt11Invoice, Bolt11InvoiceDescriptionRef, Currency};

use super::*;

fn backend(network: Network, cap: usize) -> (DevBackend, Arc<EventBus>) {
    let events = Arc::new(EventBus::default());
    let key = SecretKey::new(&mut rand::thread_rng());
    (
        DevBackend::with_key(key, network, events.clone(), cap),
        events,
    )
}

#[test]
fn minted_invoice_is_a_valid_signed_bolt11() {
    let (dev, _) = backend(Network::Regtest, 16);
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let inv = dev.mint(&InvoiceRequest::l402(1234)).unwrap();
    assert!(
        inv.payment_request.starts_with("lnbcrt12340n1"),
        "{}",
        inv.payment_request
    );
    let parsed = Bolt11Invoice::from_str(&inv.payment_request).unwrap();
    parsed.check_signature().unwrap();
    assert_eq!(parsed.currency(), Currency::Regtest);
    assert_eq!(parsed.amount_milli_satoshis(), Some(1_234_000));
    assert_eq!(parsed.payment_hash().to_byte_array(), inv.payment_hash);
    assert_eq!(parsed.recover_payee_pub_key().serialize(), dev.node_id());
    assert_eq!(parsed.expiry_time(), INVOICE_EXPIRY);
    assert_eq!(parsed.min_final_cltv_expiry_delta(), MIN_FINAL_CLTV);
    match parsed.description() {
        Bolt11InvoiceDescriptionRef::Direct(d) => assert_eq!(d.to_string(), "L402"),
        other => panic!("unexpected description {other:?}"),
    }
    assert_ne!(parsed.payment_secret().0, [0u8; 32]);
    let ts = parsed.duration_since_epoch().as_secs();
    assert!(
        ts >= before && ts <= before + 60,
        "timestamp {ts} vs {before}"
    );
    assert_eq!(inv.add_index, 1);
    let second = dev.mint(&InvoiceRequest::l402(1)).unwrap();
    assert_eq!(second.add_index, 2);
    assert_ne!(second.payment_hash, inv.payment_hash);
}

#[test]
fn prefix_follows_network() {
    let cases = [
        (Network::Mainnet, "lnbc", Currency::Bitcoin),
        (Network::Testnet, "lntb", Currency::BitcoinTestnet),
        (Network::Regtest, "lnbcrt", Currency::Regtest),
        (Network::Simnet, "lnsb", Currency::Simnet),
        (Network::Signet, "lntbs", Currency::Signet),
    ];
    for (network, hrp, currency) in cases {
        let (dev, _) = backend(network, 4);
        let inv = dev.mint(&InvoiceRequest::l402(10)).unwrap();
        // The amount follows the HRP directly: "<hrp>100n1…" for 10 sat.
        let expected = format!("{hrp}100n1");
        assert!(
            inv.payment_request.starts_with(&expected),
            "{}",
            inv.payment_request
        );
        let parsed = Bolt11Invoice::from_str(&inv.payment_request).unwrap();
        assert_eq!(parsed.currency(), currency);
    }
}

#[test]
fn mint_rejects_bad_requests() {
    let (dev, _) = backend(Network::Regtest, 4);
    assert!(matches!(
        dev.mint(&InvoiceRequest::l402(0)),
        Err(BridgeError::InvalidRequest(_))
    ));
    let max = dev
        .mint(&InvoiceRequest::l402(crate::MAX_INVOICE_SAT))
        .unwrap();
    let parsed = Bolt11Invoice::from_str(&max.payment_request).unwrap();
    assert_eq!(
        parsed.amount_milli_satoshis(),
        Some(crate::MAX_INVOICE_SAT * 1000)
    );
    let memo = "m".repeat(crate::MAX_MEMO_BYTES);
    let long = dev
        .mint(&InvoiceRequest {
            amount_sat: 5,
            memo,
        })
        .unwrap();
    Bolt11Invoice::from_str(&long.payment_request)
        .unwrap()
        .check_signature()
        .unwrap();
}

#[test]
fn pay_reveals_preimage_settles_once_and_publishes() {
    let (dev, events) = backend(Network::Regtest, 16);
    let mut sub = events.subscribe();
    let a = dev.mint(&InvoiceRequest::l402(5)).unwrap();
    let b = dev.mint(&InvoiceRequest::l402(6)).unwrap();

    let paid = dev.pay(&a.payment_request).unwrap();
    assert_eq!(paid.payment_hash, a.payment_hash);
    assert_eq!(
        sha256::Hash::hash(&paid.preimage).to_byte_array(),
        a.payment_hash
    );
    let again = dev.pay(&format!("  {}\n", a.payment_request)).unwrap();
    assert_eq!(again, paid, "paying twice returns the same preimage");
    dev.pay(&b.payment_request).unwrap();

    let got: Vec<Event> = std::iter::from_fn(|| sub.try_recv().ok()).collect();
    assert_eq!(
        got,
        vec![
            Event::InvoiceSettled {
                payment_hash: a.payment_hash,
                settle_index: 1
            },
            Event::InvoiceSettled {
                payment_hash: b.payment_hash,
                settle_index: 2
            },
        ]
    );
}

#[test]
fn foreign_and_malformed_invoices_are_refused() {
    let (dev, _) = backend(Network::Regtest, 16);
    let (other, _) = backend(Network::Regtest, 16);
    let foreign = other.mint(&InvoiceRequest::l402(5)).unwrap();
    assert_eq!(
        dev.pay(&foreign.payment_request),
        Err(PayError::Unknown {
            payment_hash: foreign.payment_hash
        })
    );
    let ours = dev.mint(&InvoiceRequest::l402(5)).unwrap();
    let mut tampered = ours.payment_request.clone().into_bytes();
    let i = tampered.len() - 10;
    tampered[i] = if tampered[i] == b'q' { b'p' } else { b'q' };
    let tampered = String::from_utf8(tampered).unwrap();
    for bad in ["", "garbage", "lnbcrt1", tampered.as_str()] {
        assert!(
            matches!(dev.pay(bad), Err(PayError::Malformed(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn forgotten_invoices_pay_as_unknown() {
    let (dev, _) = backend(Network::Regtest, 2);
    let first = dev.mint(&InvoiceRequest::l402(5)).unwrap();
    for _ in 0..2 {
        dev.mint(&InvoiceRequest::l402(5)).unwrap();
    }
    assert!(matches!(
        dev.pay(&first.payment_request),
        Err(PayError::Unknown { .. })
    ));
}
