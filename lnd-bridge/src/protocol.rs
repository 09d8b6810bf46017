//! Plain types exchanged between the worker cores and the bridge.
//!
//! Owns the request/reply/event vocabulary and the bridge's error enum. Nothing here may
//! name a tokio, hyper or lightning type: these values cross into the main crate, whose
//! worker cores run on monoio and must not depend on the bridge's runtime.

use std::path::PathBuf;

/// The memo Go aperture puts on every invoice (`AddInvoice{memo: "L402"}`).
pub const DEFAULT_MEMO: &str = "L402";

/// BOLT11 caps a description (`d` field) at 639 bytes.
pub const MAX_MEMO_BYTES: usize = 639;

/// Largest amount an invoice may carry. BOLT11 encodes amounts in pico-BTC, i.e.
/// `sat * 10_000`; this bound keeps that product inside a `u64` (and is still above the
/// 21 M BTC supply cap, so no real price is refused).
pub const MAX_INVOICE_SAT: u64 = u64::MAX / 10_000;

/// What a worker core asks the bridge to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceRequest {
    /// Price in satoshis; must be in `1..=MAX_INVOICE_SAT`.
    pub amount_sat: u64,
    /// Invoice description; at most [`MAX_MEMO_BYTES`] bytes.
    pub memo: String,
}

impl InvoiceRequest {
    /// An `L402`-memo request for `amount_sat`, as Go aperture sends it.
    pub fn l402(amount_sat: u64) -> Self {
        InvoiceRequest {
            amount_sat,
            memo: DEFAULT_MEMO.to_owned(),
        }
    }

    /// Checks the request before it is queued, so a bad price fails fast on the caller's
    /// core instead of costing a round trip.
    pub fn validate(&self) -> Result<(), BridgeError> {
        if self.amount_sat == 0 {
            return Err(BridgeError::InvalidRequest(
                "amount must be positive".into(),
            ));
        }
        if self.amount_sat > MAX_INVOICE_SAT {
            return Err(BridgeError::InvalidRequest(format!(
                "amount {} sat exceeds the maximum of {MAX_INVOICE_SAT} sat",
                self.amount_sat
            )));
        }
        if self.memo.len() > MAX_MEMO_BYTES {
            return Err(BridgeError::InvalidRequest(format!(
                "memo is {} bytes, BOLT11 allows {MAX_MEMO_BYTES}",
                self.memo.len()
            )));
        }
        Ok(())
    }
}

/// Longest BOLT11 string a payment accepts (a routed invoice with many hints stays far below).
pub const MAX_PAYMENT_REQUEST_BYTES: usize = 8 * 1024;

/// What a caller asks the bridge to pay (a session refund): lnd's
/// `routerrpc.SendPaymentV2`, or the dev wallet's receive book on the dev backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayRequest {
    /// The BOLT11 invoice to pay.
    pub payment_request: String,
    /// Satoshis to send for an invoice without an amount (required there, ≥ 1); 0 means the
    /// invoice's own amount, and for an invoice with an amount only 0 or that amount is
    /// accepted.
    pub amount_sat: u64,
    /// Most routing fee to pay, in satoshis (lnd's `fee_limit_sat`; 0 = zero-fee routes only).
    pub fee_limit_sat: u64,
    /// How long the backend may try (lnd's `timeout_seconds`, at least 1 s). The call's own
    /// deadline is this plus [`crate::PAY_TIMEOUT_MARGIN`], not `call_timeout`.
    pub timeout: std::time::Duration,
}

/// How a payment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayStatus {
    Succeeded,
    /// Not paid (now): no route, timeout, refused by the backend… Paying the same invoice
    /// again later is safe: lnd never pays an invoice twice.
    Failed,
}

/// The outcome of a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayReply {
    pub status: PayStatus,
    /// The invoice's payment hash.
    pub payment_hash: [u8; 32],
    /// The preimage, when `Succeeded`.
    pub preimage: Option<[u8; 32]>,
    /// Satoshis delivered to the payee (0 when failed).
    pub value_sat: u64,
    /// Routing fee paid, in satoshis (0 when failed; lnd truncates msat to sat).
    pub fee_sat: u64,
    /// Why it failed: lnd's failure reason (`FAILURE_REASON_NO_ROUTE`, …) or error message.
    pub failure: Option<String>,
}

impl PayReply {
    /// A failed payment of `payment_hash` for `why`.
    pub fn failed(payment_hash: [u8; 32], why: impl Into<String>) -> Self {
        PayReply {
            status: PayStatus::Failed,
            payment_hash,
            preimage: None,
            value_sat: 0,
            fee_sat: 0,
            failure: Some(why.into()),
        }
    }
}

/// A dynamic pricer to ask (`pricesrpc.Prices`), as a service's `dynamicprice` names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PricerTarget {
    /// The pricer's gRPC `host:port`.
    pub address: String,
    /// Plaintext h2c instead of TLS.
    pub insecure: bool,
    /// The pricer's certificate, pinned (required unless `insecure`).
    pub tls_cert_path: Option<PathBuf>,
}

/// A created invoice, as lnd's `AddInvoiceResponse` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    /// sha256 of the preimage; equals the payment hash inside `payment_request`.
    pub payment_hash: [u8; 32],
    /// The signed BOLT11 string (`lnbcrt…`, `lnbc…`, …).
    pub payment_request: String,
    /// Backend-assigned, strictly increasing creation counter (starts at 1).
    pub add_index: u64,
}

/// An invoice's state as the backend reports it (lnd's `Invoice.InvoiceState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvoiceState {
    Open,
    Settled,
    Canceled,
    /// HTLCs are held but not yet settled (hold invoices); not paid yet.
    Accepted,
    /// The backend does not know the hash (lnd's `NOT_FOUND`), or reported a state this
    /// version does not know.
    Unknown,
}

/// A snapshot of the backend's health, for readiness probes and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BackendStats {
    /// Whether the backend is reachable as far as the last attempt knows (dev: always).
    pub connected: bool,
    /// How many times the invoice subscription was (re)started after failing (lnd only).
    pub subscription_restarts: u64,
    /// Highest `settle_index` seen on the subscription; it resumes from here (lnd only).
    pub settle_index: u64,
    /// Highest `add_index` seen on the subscription (lnd only).
    pub add_index: u64,
}

/// Something the bridge tells every subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An invoice was paid. `settle_index` strictly increases per settlement (starts at 1).
    InvoiceSettled {
        payment_hash: [u8; 32],
        settle_index: u64,
    },
    /// A token was revoked (published through [`crate::BridgeHandle::publish`]).
    TokenRevoked { token_id: [u8; 32] },
}

/// Every way a bridge call or the bridge's start-up can fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BridgeError {
    /// The bridge already holds `queue_capacity` calls; shed load instead of waiting.
    #[error("lightning bridge queue is full")]
    QueueFull,
    /// The bridge has shut down (or is shutting down).
    #[error("lightning bridge is closed")]
    Closed,
    /// The call did not finish within `call_timeout`.
    #[error("lightning backend call timed out")]
    Timeout,
    /// The request itself is invalid (zero amount, memo too long, malformed invoice to pay, …).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The backend refused or failed the call.
    #[error("lightning backend error: {0}")]
    Backend(String),
    /// The node key file could not be read, parsed or created.
    #[error("dev node key {path}: {reason}")]
    NodeKey { path: PathBuf, reason: String },
    /// The dev wallet endpoint could not be bound.
    #[error("dev wallet listener {addr}: {reason}")]
    WalletListen { addr: String, reason: String },
    /// lnd's `host:port` is malformed (a configuration error).
    #[error("lnd host {host:?}: {reason}")]
    LndHost { host: String, reason: String },
    /// lnd's TLS certificate (`tlspath`) is missing, unreadable or not a certificate.
    #[error("lnd TLS certificate {path}: {reason}")]
    TlsCert { path: PathBuf, reason: String },
    /// The macaroon file is missing or unreadable.
    #[error("lnd macaroon {path}: {reason}")]
    Macaroon { path: PathBuf, reason: String },
    /// The bridge runtime or its thread could not be started.
    #[error("lightning bridge runtime: {0}")]
    Runtime(String),
}

impl BridgeError {
    /// True for start-up errors caused by the configuration (lnd host, certificate or
    /// macaroon file), which the binary reports as a usage error (exit 64). An
    /// unreachable lnd is not one: the bridge starts and keeps reconnecting.
    pub fn is_config_error(&self) -> bool {
        matches!(
            self,
            BridgeError::LndHost { .. }
                | BridgeError::TlsCert { .. }
                | BridgeError::Macaroon { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_bounds() {
        assert!(InvoiceRequest::l402(1).validate().is_ok());
        assert!(InvoiceRequest::l402(MAX_INVOICE_SAT).validate().is_ok());
        assert!(matches!(
            InvoiceRequest::l402(0).validate(),
            Err(BridgeError::InvalidRequest(_))
        ));
        assert!(matches!(
            InvoiceRequest::l402(MAX_INVOICE_SAT + 1).validate(),
            Err(BridgeError::InvalidRequest(_))
        ));
        let long = InvoiceRequest {
            amount_sat: 1,
            memo: "x".repeat(MAX_MEMO_BYTES + 1),
        };
        assert!(matches!(
            long.validate(),
            Err(BridgeError::InvalidRequest(_))
        ));
        let edge = InvoiceRequest {
            amount_sat: 1,
            memo: "x".repeat(MAX_MEMO_BYTES),
        };
        assert!(edge.validate().is_ok());
    }
}

/// A minted challenge booked with a metered pricer (`ChallengeMinted`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintedChallenge {
    /// The request's URL path.
    pub path: String,
    /// The request as Go's `DumpRequest` writes it, plus a bounded body prefix.
    pub http_request_text: String,
    /// The L402 token id, or a Payment charge's payment hash (hex).
    pub token_id: String,
    pub price_sats: i64,
    pub service_name: String,
}

/// A paid request a metered pricer is asked to admit (`AuthorizeRequest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizeQuery {
    pub path: String,
    pub http_request_text: String,
    /// The L402 token id, or sha256(preimage) of a Payment charge (hex).
    pub token_id: String,
    pub service_name: String,
}

/// The pricer's answer to an [`AuthorizeQuery`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Authorization {
    pub allowed: bool,
    /// When refused: the price of a fresh challenge (0: ask `GetPrice`).
    pub price_sats: i64,
    pub reason: String,
    /// Echoed back in the request's [`UsageReport`].
    pub reserved_estimate: i64,
}

/// What a metered request used, reported after its response ended (`ReportUsage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageReport {
    /// The pricer to tell.
    pub target: PricerTarget,
    pub token_id: String,
    pub path: String,
    pub service_name: String,
    /// The upstream's status (502 when it was unreachable, 101 for an upgrade).
    pub http_status: i32,
    pub content_type: String,
    pub content_encoding: String,
    /// The body reached its end (false: either side went away first).
    pub complete: bool,
    /// The last `usagetailbytes` bytes of the (de-chunked) body.
    pub response_tail: Vec<u8>,
    pub reserved_estimate: i64,
    /// The row that holds this report when it was persisted undelivered (a replay).
    pub persisted_id: Option<i64>,
}

/// Where usage reports that could not be delivered go (the token database), so that no debit is
/// lost across a restart. Called on the bridge thread or a worker core; must not block.
pub trait UsageSink: Send + Sync {
    /// `report` was given up on (every attempt failed, or the queue was full): keep it.
    fn undelivered(&self, report: &UsageReport);
    /// The persisted report `id` was delivered on a replay: forget it.
    fn delivered(&self, id: i64);
}

/// A session price asked of a pricer at a 402 mint (`QuoteSession`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionQuoteQuery {
    pub path: String,
    pub http_request_text: String,
    pub service_name: String,
    /// Always empty at a mint (Go never names a session there).
    pub session_id: String,
}

/// A pricer's session quote; a field at 0 or below leaves the proxy's own value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionQuote {
    pub unit_price_sats: i64,
    pub deposit_sats: i64,
}

/// A session bearer request's response, for the pricer to price (`SettleSession`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSettlement {
    pub session_id: String,
    pub path: String,
    pub service_name: String,
    pub http_status: i32,
    pub content_type: String,
    pub content_encoding: String,
    /// The body reached its end (false: either side went away first).
    pub complete: bool,
    /// The last `usagetailbytes` bytes of the (de-chunked) body.
    pub response_tail: Vec<u8>,
    /// What the session was already debited for the request.
    pub estimate_sats: i64,
    pub http_request_text: String,
}
