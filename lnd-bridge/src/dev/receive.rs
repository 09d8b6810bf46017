//! The dev wallet's receive side: invoices the wallet itself can be paid on (session refunds
//! on the dev backend), signed by the wallet's own key, and the bounded book of them.
//!
//! Owns the wallet key (random per process: the book lives in memory, so its invoices die
//! with the process anyway, and it is never the proxy's node key), minting (with or without
//! an amount), settling and the state `GET /invoice/<hash>` reports. No I/O, no runtime;
//! beyond its capacity the oldest invoices are forgotten (they then pay as "no route").
//! Payments are SIMULATED: nothing here moves money.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{All, PublicKey, Secp256k1, SecretKey};
use lightning_invoice::{Currency, InvoiceBuilder, PaymentSecret};
use rand::RngCore;

use crate::protocol::{BridgeError, MAX_INVOICE_SAT, MAX_MEMO_BYTES};

/// Expiry of the wallet's invoices (BOLT11's default, and what a return invoice needs).
pub const WALLET_INVOICE_EXPIRY: Duration = Duration::from_secs(3600);
/// How many wallet invoices are remembered.
pub const MAX_WALLET_INVOICES: usize = 100_000;

/// A freshly minted wallet invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Minted {
    pub invoice: String,
    pub payment_hash: [u8; 32],
}

/// What `GET /invoice/<hash>` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Status {
    pub settled: bool,
    pub amount_paid_sat: u64,
}

/// A settled payment into the wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Received {
    pub preimage: [u8; 32],
    pub amount_sat: u64,
}

/// Why the wallet refused a payment; the text is the payer's failure reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// Never minted here, or forgotten.
    #[error("no route")]
    Unknown,
    #[error("amount must be specified when paying a zero amount invoice")]
    AmountMissing,
    #[error("amount mismatch: the invoice asks {invoice_sat} sat, {offered_sat} sat offered")]
    AmountMismatch { invoice_sat: u64, offered_sat: u64 },
}

struct Entry {
    preimage: [u8; 32],
    /// The invoice's amount; `None` for an amountless one.
    amount_sat: Option<u64>,
    /// `Some(amount received)` once settled.
    paid_sat: Option<u64>,
}

struct Book {
    map: HashMap<[u8; 32], Entry>,
    /// Insertion order, for dropping the oldest entry at capacity.
    order: VecDeque<[u8; 32]>,
    cap: usize,
}

/// The wallet's key and receive book.
pub(crate) struct Receiver {
    secp: Secp256k1<All>,
    key: SecretKey,
    id: PublicKey,
    currency: Currency,
    book: Mutex<Book>,
}

impl Receiver {
    /// A receiver with a fresh random key, minting on `currency`, remembering `cap` invoices.
    pub(crate) fn new(currency: Currency, cap: usize) -> Self {
        let mut secp = Secp256k1::new();
        secp.randomize(&mut rand::thread_rng());
        let key = SecretKey::new(&mut rand::thread_rng());
        let id = PublicKey::from_secret_key(&secp, &key);
        Receiver {
            secp,
            key,
            id,
            currency,
            book: Mutex::new(Book {
                map: HashMap::new(),
                order: VecDeque::new(),
                cap: cap.max(1),
            }),
        }
    }

    /// The wallet's public key, the payee its invoices recover to.
    pub(crate) fn id(&self) -> PublicKey {
        self.id
    }

    /// Signs an invoice for `amount_sat` (0: no amount) with `memo`, expiring in an hour,
    /// and books it. CPU-bound (one ECDSA signature).
    pub(crate) fn mint(&self, amount_sat: u64, memo: &str) -> Result<Minted, BridgeError> {
        if amount_sat > MAX_INVOICE_SAT {
            return Err(BridgeError::InvalidRequest(format!(
                "amount {amount_sat} sat exceeds the maximum of {MAX_INVOICE_SAT} sat"
            )));
        }
        if memo.len() > MAX_MEMO_BYTES {
            return Err(BridgeError::InvalidRequest(format!(
                "memo is {} bytes, BOLT11 allows {MAX_MEMO_BYTES}",
                memo.len()
            )));
        }
        let mut rng = rand::thread_rng();
        let mut preimage = [0u8; 32];
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut preimage);
        rng.fill_bytes(&mut secret);
        let hash = sha256::Hash::hash(&preimage);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| BridgeError::Backend("system clock is before 1970".into()))?;
        let builder = InvoiceBuilder::new(self.currency.clone())
            .description(memo.to_owned())
            .payment_hash(hash)
            .payment_secret(PaymentSecret(secret))
            .duration_since_epoch(now)
            .expiry_time(WALLET_INVOICE_EXPIRY)
            .min_final_cltv_expiry_delta(super::MIN_FINAL_CLTV);
        // The bound above keeps `amount_sat * 1000` inside a u64.
        let builder = match amount_sat {
            0 => builder,
            sat => builder.amount_milli_satoshis(sat * 1000),
        };
        let invoice = builder
            .build_signed(|msg| self.secp.sign_ecdsa_recoverable(msg, &self.key))
            .map_err(|e| BridgeError::Backend(format!("build invoice: {e}")))?;
        let payment_hash = hash.to_byte_array();
        self.insert(
            payment_hash,
            Entry {
                preimage,
                amount_sat: (amount_sat > 0).then_some(amount_sat),
                paid_sat: None,
            },
        );
        Ok(Minted {
            invoice: invoice.to_string(),
            payment_hash,
        })
    }

    fn insert(&self, hash: [u8; 32], entry: Entry) {
        let mut book = self.book();
        if book.map.contains_key(&hash) {
            return; // a 2^-256 collision; keep the first
        }
        while book.map.len() >= book.cap {
            match book.order.pop_front() {
                Some(old) => {
                    book.map.remove(&old);
                }
                None => break,
            }
        }
        book.map.insert(hash, entry);
        book.order.push_back(hash);
    }

    /// The invoice's state; `None` if never minted here or forgotten.
    pub(crate) fn status(&self, hash: &[u8; 32]) -> Option<Status> {
        self.book().map.get(hash).map(|e| Status {
            settled: e.paid_sat.is_some(),
            amount_paid_sat: e.paid_sat.unwrap_or(0),
        })
    }

    /// Settles `hash` with `offered_sat` (0: the invoice's own amount; required for an
    /// amountless invoice). Settling a settled invoice again answers the first settlement,
    /// as lnd's payment tracking would, and changes nothing.
    pub(crate) fn settle(&self, hash: &[u8; 32], offered_sat: u64) -> Result<Received, Refused> {
        let mut book = self.book();
        let entry = book.map.get_mut(hash).ok_or(Refused::Unknown)?;
        if let Some(paid) = entry.paid_sat {
            return Ok(Received {
                preimage: entry.preimage,
                amount_sat: paid,
            });
        }
        let amount_sat = match entry.amount_sat {
            None if offered_sat == 0 => return Err(Refused::AmountMissing),
            None => offered_sat,
            Some(invoice_sat) if offered_sat != 0 && offered_sat != invoice_sat => {
                return Err(Refused::AmountMismatch {
                    invoice_sat,
                    offered_sat,
                })
            }
            Some(invoice_sat) => invoice_sat,
        };
        entry.paid_sat = Some(amount_sat);
        Ok(Received {
            preimage: entry.preimage,
            amount_sat,
        })
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        // Every update is complete under the lock; a poisoned book is still consistent.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use lightning_invoice::Bolt11Invoice;

    use super::*;

    #[test]
    fn mints_signed_invoices_with_and_without_amount() {
        let r = Receiver::new(Currency::Regtest, 8);
        let with = r.mint(21, "refund").unwrap();
        let parsed = Bolt11Invoice::from_str(&with.invoice).unwrap();
        parsed.check_signature().unwrap();
        assert_eq!(parsed.amount_milli_satoshis(), Some(21_000));
        assert_eq!(parsed.recover_payee_pub_key(), r.id());
        assert_eq!(parsed.expiry_time(), WALLET_INVOICE_EXPIRY);
        assert_eq!(parsed.payment_hash().to_byte_array(), with.payment_hash);
        let without = r.mint(0, "").unwrap();
        let parsed = Bolt11Invoice::from_str(&without.invoice).unwrap();
        assert_eq!(parsed.amount_milli_satoshis(), None);
        assert!(
            without.invoice.starts_with("lnbcrt1"),
            "{}",
            without.invoice
        );
        assert!(r.mint(MAX_INVOICE_SAT + 1, "").is_err());
        assert!(r.mint(1, &"m".repeat(MAX_MEMO_BYTES + 1)).is_err());
    }

    #[test]
    fn settles_once_with_the_right_amount() {
        let r = Receiver::new(Currency::Regtest, 8);
        let fixed = r.mint(50, "").unwrap();
        let open = r.mint(0, "").unwrap();
        let unpaid = Status {
            settled: false,
            amount_paid_sat: 0,
        };
        assert_eq!(r.status(&fixed.payment_hash), Some(unpaid));
        assert_eq!(
            r.settle(&fixed.payment_hash, 49),
            Err(Refused::AmountMismatch {
                invoice_sat: 50,
                offered_sat: 49
            })
        );
        assert_eq!(r.settle(&open.payment_hash, 0), Err(Refused::AmountMissing));
        assert_eq!(r.status(&open.payment_hash), Some(unpaid));
        let got = r.settle(&fixed.payment_hash, 0).unwrap();
        assert_eq!(got.amount_sat, 50);
        assert_eq!(
            sha256::Hash::hash(&got.preimage).to_byte_array(),
            fixed.payment_hash
        );
        let open_paid = r.settle(&open.payment_hash, 7).unwrap();
        assert_eq!(open_paid.amount_sat, 7);
        // Again with another amount: the first settlement stands.
        assert_eq!(r.settle(&open.payment_hash, 9), Ok(open_paid));
        assert_eq!(
            r.status(&open.payment_hash),
            Some(Status {
                settled: true,
                amount_paid_sat: 7
            })
        );
        assert_eq!(r.settle(&[3; 32], 1), Err(Refused::Unknown));
        assert_eq!(r.status(&[3; 32]), None);
    }

    #[test]
    fn oldest_invoices_are_forgotten_at_capacity() {
        let r = Receiver::new(Currency::Regtest, 2);
        let first = r.mint(1, "").unwrap();
        r.mint(1, "").unwrap();
        let last = r.mint(1, "").unwrap();
        assert_eq!(r.status(&first.payment_hash), None);
        assert_eq!(r.settle(&first.payment_hash, 0), Err(Refused::Unknown));
        assert!(r.status(&last.payment_hash).is_some());
        assert_eq!(r.book().map.len(), 2);
        assert_eq!(r.book().order.len(), 2);
    }
}
