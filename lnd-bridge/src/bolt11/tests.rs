//! Unit tests of the return-invoice rules and the payment target checks, on invoices the dev
//! wallet mints and on hand-built ones that break one rule each.

use std::time::Duration;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
use lightning_invoice::{Currency, InvoiceBuilder, PaymentSecret};

use super::*;
use crate::dev::receive::Receiver;

const NOW: u64 = 1_800_000_000;

/// What a hand-built invoice looks like.
struct Spec {
    currency: Currency,
    amount_msat: Option<u64>,
    timestamp: u64,
    expiry_secs: Option<u64>,
    /// An explicit `n` field.
    payee: Option<PublicKey>,
    /// Re-tag the signature with recovery id 2, which (almost surely) recovers no key.
    bad_recovery_id: bool,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            currency: Currency::Regtest,
            amount_msat: None,
            timestamp: NOW - 60,
            expiry_secs: Some(3600),
            payee: None,
            bad_recovery_id: false,
        }
    }
}

fn build(spec: Spec, key: &SecretKey) -> String {
    let secp = Secp256k1::new();
    let b = InvoiceBuilder::new(spec.currency)
        .description("refund".into())
        .payment_hash(sha256::Hash::hash(&[1, 2, 3]))
        .payment_secret(PaymentSecret([9; 32]))
        .duration_since_epoch(Duration::from_secs(spec.timestamp))
        .min_final_cltv_expiry_delta(80);
    let b = match spec.amount_msat {
        Some(msat) => b.amount_milli_satoshis(msat),
        None => b,
    };
    let b = match spec.expiry_secs {
        Some(secs) => b.expiry_time(Duration::from_secs(secs)),
        None => b,
    };
    let b = match spec.payee {
        Some(pk) => b.payee_pub_key(pk),
        None => b,
    };
    b.build_signed(|msg| {
        let sig = secp.sign_ecdsa_recoverable(msg, key);
        if !spec.bad_recovery_id {
            return sig;
        }
        let (_, compact) = sig.serialize_compact();
        RecoverableSignature::from_compact(&compact, RecoveryId::from_i32(2).unwrap()).unwrap()
    })
    .unwrap()
    .to_string()
}

fn key() -> SecretKey {
    SecretKey::new(&mut rand::thread_rng())
}

#[test]
fn wallet_minted_amountless_invoice_is_accepted() {
    let wallet = Receiver::new(Currency::Regtest, 8);
    let minted = wallet.mint(0, "session refund").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ok = check_return_invoice(&minted.invoice, Network::Regtest, now).unwrap();
    assert_eq!(ok.payment_hash, minted.payment_hash);
    assert!(
        ok.expires_at_unix > now && ok.expires_at_unix <= now + 3600 + 5,
        "{ok:?} vs {now}"
    );
    // Surrounding whitespace is tolerated, as lnd trims it too.
    let padded = format!("  {}\n", minted.invoice);
    assert!(check_return_invoice(&padded, Network::Regtest, now).is_ok());
    // The same invoice an hour later is expired.
    assert!(matches!(
        check_return_invoice(&minted.invoice, Network::Regtest, ok.expires_at_unix),
        Err(ReturnInvoiceError::Expired { .. })
    ));
}

#[test]
fn an_amount_is_refused() {
    let wallet = Receiver::new(Currency::Regtest, 8);
    let minted = wallet.mint(21, "").unwrap();
    let err = check_return_invoice(&minted.invoice, Network::Regtest, NOW - 3600).unwrap_err();
    assert_eq!(
        err,
        ReturnInvoiceError::HasAmount {
            amount_msat: 21_000
        }
    );
    let sub_sat = build(
        Spec {
            amount_msat: Some(1),
            ..Spec::default()
        },
        &key(),
    );
    assert_eq!(
        check_return_invoice(&sub_sat, Network::Regtest, NOW),
        Err(ReturnInvoiceError::HasAmount { amount_msat: 1 })
    );
}

#[test]
fn another_network_is_refused() {
    let mainnet = build(
        Spec {
            currency: Currency::Bitcoin,
            ..Spec::default()
        },
        &key(),
    );
    assert!(mainnet.starts_with("lnbc1"), "{mainnet}");
    assert_eq!(
        check_return_invoice(&mainnet, Network::Regtest, NOW),
        Err(ReturnInvoiceError::WrongNetwork {
            expected: "lnbcrt".into(),
            found: "lnbc".into()
        })
    );
    assert!(check_return_invoice(&mainnet, Network::Mainnet, NOW).is_ok());
    let signet = build(
        Spec {
            currency: Currency::Signet,
            ..Spec::default()
        },
        &key(),
    );
    assert!(matches!(
        check_return_invoice(&signet, Network::Testnet, NOW),
        Err(ReturnInvoiceError::WrongNetwork { .. })
    ));
    assert!(check_return_invoice(&signet, Network::Signet, NOW).is_ok());
}

#[test]
fn bad_signatures_are_refused() {
    let signer = key();
    let secp = Secp256k1::new();
    let signer_pk = PublicKey::from_secret_key(&secp, &signer);
    // An `n` field naming another key than the signer's.
    let other_pk = PublicKey::from_secret_key(&secp, &key());
    let wrong_payee = build(
        Spec {
            payee: Some(other_pk),
            ..Spec::default()
        },
        &signer,
    );
    assert_eq!(
        check_return_invoice(&wrong_payee, Network::Regtest, NOW),
        Err(ReturnInvoiceError::BadSignature)
    );
    // A signature from which no key recovers.
    let unrecoverable = build(
        Spec {
            bad_recovery_id: true,
            ..Spec::default()
        },
        &signer,
    );
    assert_eq!(
        check_return_invoice(&unrecoverable, Network::Regtest, NOW),
        Err(ReturnInvoiceError::BadSignature)
    );
    // With the right `n` field the signature is verified against it, not recovered.
    let named = build(
        Spec {
            payee: Some(signer_pk),
            bad_recovery_id: true,
            ..Spec::default()
        },
        &signer,
    );
    assert!(check_return_invoice(&named, Network::Regtest, NOW).is_ok());
}

#[test]
fn expiry_is_timestamp_plus_expiry_defaulting_to_an_hour() {
    let k = key();
    let short = build(
        Spec {
            timestamp: NOW - 100,
            expiry_secs: Some(100),
            ..Spec::default()
        },
        &k,
    );
    assert_eq!(
        check_return_invoice(&short, Network::Regtest, NOW),
        Err(ReturnInvoiceError::Expired {
            expires_at_unix: NOW,
            now_unix: NOW
        })
    );
    assert_eq!(
        check_return_invoice(&short, Network::Regtest, NOW - 1).map(|r| r.expires_at_unix),
        Ok(NOW)
    );
    let default = build(
        Spec {
            timestamp: NOW - 10,
            expiry_secs: None,
            ..Spec::default()
        },
        &k,
    );
    let ok = check_return_invoice(&default, Network::Regtest, NOW).unwrap();
    assert_eq!(ok.expires_at_unix, NOW - 10 + DEFAULT_INVOICE_EXPIRY_SECS);
    assert_eq!(
        ok.payment_hash,
        sha256::Hash::hash(&[1, 2, 3]).to_byte_array()
    );
}

#[test]
fn undecodable_strings_are_malformed() {
    let good = build(Spec::default(), &key());
    let mut tampered = good.clone().into_bytes();
    let i = tampered.len() - 10;
    tampered[i] = if tampered[i] == b'q' { b'p' } else { b'q' };
    let tampered = String::from_utf8(tampered).unwrap();
    let long = format!("lnbcrt1{}", "q".repeat(MAX_PAYMENT_REQUEST_BYTES));
    for bad in ["", "garbage", "lnbcrt1", "lnbcrt1\u{e9}", &tampered, &long] {
        assert!(
            matches!(
                check_return_invoice(bad, Network::Regtest, NOW),
                Err(ReturnInvoiceError::Malformed(_))
            ),
            "{bad:?}"
        );
    }
}

fn pay(invoice: &str, amount_sat: u64) -> PayRequest {
    PayRequest {
        payment_request: invoice.to_owned(),
        amount_sat,
        fee_limit_sat: 1,
        timeout: Duration::from_secs(5),
    }
}

#[test]
fn pay_target_checks_amounts() {
    let wallet = Receiver::new(Currency::Regtest, 8);
    let open = wallet.mint(0, "").unwrap();
    let fixed = wallet.mint(40, "").unwrap();

    let t = pay_target(&pay(&open.invoice, 12)).unwrap();
    assert_eq!(t.payment_hash, open.payment_hash);
    assert_eq!((t.invoice_msat, t.send_sat), (None, 12));
    let t = pay_target(&pay(&fixed.invoice, 0)).unwrap();
    assert_eq!((t.invoice_msat, t.send_sat), (Some(40_000), 0));
    let t = pay_target(&pay(&fixed.invoice, 40)).unwrap();
    assert_eq!(t.send_sat, 0, "lnd refuses amt beside an invoice amount");

    let refused = [
        pay(&open.invoice, 0),
        pay(&fixed.invoice, 41),
        pay(&open.invoice, MAX_INVOICE_SAT + 1),
        pay("garbage", 1),
        pay("", 1),
    ];
    for req in refused {
        assert!(
            matches!(pay_target(&req), Err(BridgeError::InvalidRequest(_))),
            "{req:?}"
        );
    }
    let sub_sat = build(
        Spec {
            amount_msat: Some(1_500),
            ..Spec::default()
        },
        &key(),
    );
    let t = pay_target(&pay(&sub_sat, 0)).unwrap();
    assert_eq!(t.invoice_msat, Some(1_500));
    assert!(pay_target(&pay(&sub_sat, 1)).is_err());
}
