//! Checks on BOLT11 invoices the bridge did not mint: what a payment targets (payment hash
//! and amount, checked when [`crate::BridgeHandle::try_pay_invoice`] queues it) and the rules a
//! session's return invoice must pass ([`check_return_invoice`]).
//!
//! Owns decoding untrusted BOLT11 strings without panicking: only `lightning-invoice`'s raw
//! parse is used (its semantic parse can panic on some signatures), strings are length-capped
//! first, and signatures are checked here. Pure functions: no I/O, no clock (callers pass
//! `now`).

use std::str::FromStr;

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{Message, PublicKey, Secp256k1};
use lightning_invoice::SignedRawBolt11Invoice;

use crate::protocol::{BridgeError, PayRequest, MAX_INVOICE_SAT, MAX_PAYMENT_REQUEST_BYTES};
use crate::Network;

/// BOLT11's default expiry, when an invoice has no `x` field.
pub const DEFAULT_INVOICE_EXPIRY_SECS: u64 = 3600;

/// A return invoice that passed [`check_return_invoice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReturnInvoice {
    pub payment_hash: [u8; 32],
    /// Timestamp + expiry, seconds since the Unix epoch: a refund must be paid before this.
    pub expires_at_unix: u64,
}

/// Which rule a return invoice broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReturnInvoiceError {
    /// Not a decodable BOLT11 invoice (or one lnd would not decode: no payment hash, no
    /// description).
    #[error("return invoice is not a valid BOLT11 invoice: {0}")]
    Malformed(String),
    /// The signature does not verify (for the `n` field's key, or no key recovers).
    #[error("return invoice signature does not verify")]
    BadSignature,
    /// The invoice is for another network than the proxy's.
    #[error("return invoice is for another network ({found}), expected {expected}")]
    WrongNetwork {
        /// The expected prefix, e.g. `lnbcrt`.
        expected: String,
        /// The invoice's prefix, e.g. `lnbc`.
        found: String,
    },
    /// The invoice carries an amount; a return invoice must have none (the refund decides it).
    #[error("return invoice has an amount ({amount_msat} msat); it must have none")]
    HasAmount {
        /// Saturates at `u64::MAX` for an amount too large to represent.
        amount_msat: u64,
    },
    /// Timestamp + expiry is not after `now`.
    #[error("return invoice expired at {expires_at_unix} (now {now_unix})")]
    Expired { expires_at_unix: u64, now_unix: u64 },
}

/// Checks a session's return invoice: it must decode, its signature must verify (against
/// the `n` field's key when present, else the key it recovers to), be for `network`, carry
/// **no amount**, and not be expired at `now_unix` (timestamp + expiry, default 3600 s).
/// The rules are checked in that order and the first broken one is reported.
pub fn check_return_invoice(
    bolt11: &str,
    network: Network,
    now_unix: u64,
) -> Result<ReturnInvoice, ReturnInvoiceError> {
    let signed = parse(bolt11).map_err(ReturnInvoiceError::Malformed)?;
    let payment_hash = payment_hash(&signed).map_err(ReturnInvoiceError::Malformed)?;
    let raw = signed.raw_invoice();
    if raw.description().is_none() && raw.description_hash().is_none() {
        return Err(ReturnInvoiceError::Malformed(
            "invoice has neither a description nor a description hash".into(),
        ));
    }
    verify_signature(&signed).ok_or(ReturnInvoiceError::BadSignature)?;
    let expected = crate::dev::currency(network);
    if raw.hrp.currency != expected {
        return Err(ReturnInvoiceError::WrongNetwork {
            expected: format!("ln{expected}"),
            found: format!("ln{}", raw.hrp.currency),
        });
    }
    if raw.hrp.raw_amount.is_some() {
        let amount_msat = raw.amount_pico_btc().map_or(u64::MAX, |pico| pico / 10);
        return Err(ReturnInvoiceError::HasAmount { amount_msat });
    }
    let expires_at_unix = expires_at(&signed);
    if now_unix >= expires_at_unix {
        return Err(ReturnInvoiceError::Expired {
            expires_at_unix,
            now_unix,
        });
    }
    Ok(ReturnInvoice {
        payment_hash,
        expires_at_unix,
    })
}

/// What a queued payment targets, decoded once on the caller's core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PayTarget {
    pub payment_hash: [u8; 32],
    /// The invoice's own amount, if it has one.
    pub invoice_msat: Option<u64>,
    /// Satoshis to name in the payment (lnd's `amt`): the request's amount for an invoice
    /// without one, else 0 (lnd refuses `amt` beside an invoice amount).
    pub send_sat: u64,
}

/// Checks a payment request before it is queued (decodes, has a payment hash, amounts
/// consistent); the signature and network are left to the backend, which refuses what it
/// cannot pay.
pub(crate) fn pay_target(req: &PayRequest) -> Result<PayTarget, BridgeError> {
    let invalid = |why: String| BridgeError::InvalidRequest(why);
    let signed = parse(&req.payment_request).map_err(invalid)?;
    let payment_hash = payment_hash(&signed).map_err(invalid)?;
    if req.amount_sat > MAX_INVOICE_SAT {
        return Err(invalid(format!(
            "amount {} sat exceeds the maximum of {MAX_INVOICE_SAT} sat",
            req.amount_sat
        )));
    }
    let raw = signed.raw_invoice();
    let invoice_msat = match raw.hrp.raw_amount {
        None => None,
        Some(_) => match raw.amount_pico_btc() {
            Some(pico) if pico % 10 == 0 => Some(pico / 10),
            Some(_) => return Err(invalid("invoice amount is not whole millisatoshis".into())),
            None => return Err(invalid("invoice amount overflows".into())),
        },
    };
    let send_sat = match invoice_msat {
        None if req.amount_sat == 0 => {
            return Err(invalid(
                "the invoice has no amount: amount_sat must be given".into(),
            ))
        }
        None => req.amount_sat,
        Some(msat) if req.amount_sat != 0 && req.amount_sat.checked_mul(1000) != Some(msat) => {
            return Err(invalid(format!(
                "amount mismatch: the invoice asks {msat} msat, the request names {} sat",
                req.amount_sat
            )))
        }
        Some(_) => 0,
    };
    Ok(PayTarget {
        payment_hash,
        invoice_msat,
        send_sat,
    })
}

/// The raw parse, after a length cap; the error is a reason to show.
pub(crate) fn parse(bolt11: &str) -> Result<SignedRawBolt11Invoice, String> {
    let bolt11 = bolt11.trim();
    if bolt11.len() > MAX_PAYMENT_REQUEST_BYTES {
        return Err(format!(
            "invoice is {} bytes, at most {MAX_PAYMENT_REQUEST_BYTES} are accepted",
            bolt11.len()
        ));
    }
    SignedRawBolt11Invoice::from_str(bolt11).map_err(|e| e.to_string())
}

pub(crate) fn payment_hash(signed: &SignedRawBolt11Invoice) -> Result<[u8; 32], String> {
    signed
        .raw_invoice()
        .payment_hash()
        .map(|h| h.0.to_byte_array())
        .ok_or_else(|| "invoice has no payment hash".to_owned())
}

/// The payee's key if the signature verifies: against the `n` field's key when present
/// (lnd does not recover then), else the recovered key (verified again, which rejects a
/// high-S signature as lnd's and lightning-invoice's checks do).
pub(crate) fn verify_signature(signed: &SignedRawBolt11Invoice) -> Option<PublicKey> {
    let secp = Secp256k1::verification_only();
    let msg = Message::from_digest(*signed.signable_hash());
    let sig = &signed.signature().0;
    let key = match signed.raw_invoice().payee_pub_key() {
        Some(included) => included.0,
        None => secp.recover_ecdsa(&msg, sig).ok()?,
    };
    secp.verify_ecdsa(&msg, &sig.to_standard(), &key).ok()?;
    Some(key)
}

/// Timestamp + expiry (default 3600 s), saturating.
pub(crate) fn expires_at(signed: &SignedRawBolt11Invoice) -> u64 {
    let raw = signed.raw_invoice();
    let expiry = raw
        .expiry_time()
        .map_or(DEFAULT_INVOICE_EXPIRY_SECS, |e| e.as_seconds());
    raw.data
        .timestamp
        .as_unix_timestamp()
        .saturating_add(expiry)
}

#[cfg(test)]
mod tests;
