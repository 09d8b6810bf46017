//! The fake's `routerrpc.Router`: `SendPaymentV2` records each call for tests and answers one
//! final update (`SUCCEEDED` with a random preimage, or `FAILED` with
//! `FAILURE_REASON_NO_ROUTE` while failures are scripted), and `TrackPaymentV2` reports the
//! last payment of a hash.
//!
//! Owns payment handling with lnd's rules that the bridge relies on: the admin macaroon is
//! required, `amt` only beside an amountless invoice, an already paid hash is refused with
//! `ALREADY_EXISTS` ("invoice is already paid"), a failed one may be paid again. Nothing is
//! routed and no invoice of the fake's own book is settled.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::codegen::tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{unix_now, FakePayment, State};
use crate::lnrpc::payment::PaymentStatus;
use crate::lnrpc::{Payment, PaymentFailureReason};
use crate::routerrpc::router_server::Router;
use crate::routerrpc::{SendPaymentRequest, TrackPaymentRequest};

/// The payments the fake was asked for.
#[derive(Default)]
pub(super) struct Payments {
    /// Every `SendPaymentV2` call, oldest first.
    pub calls: Vec<FakePayment>,
    /// The last outcome per payment hash.
    by_hash: HashMap<[u8; 32], Payment>,
}

/// The gRPC service; cheap to share across connections.
pub(crate) struct RouterSvc(pub(crate) Arc<State>);

/// A payment stream: the one final update, then the end.
pub(crate) struct Final(Option<Payment>);

impl Stream for Final {
    type Item = Result<Payment, Status>;

    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.0.take().map(Ok))
    }
}

#[tonic::async_trait]
impl Router for RouterSvc {
    type SendPaymentV2Stream = Final;

    async fn send_payment_v2(
        &self,
        request: Request<SendPaymentRequest>,
    ) -> Result<Response<Final>, Status> {
        let state = &self.0;
        state.send_payment_calls.fetch_add(1, Ordering::SeqCst);
        state.authorize(&request, true)?;
        let req = request.into_inner();
        state.payments().calls.push(FakePayment {
            payment_request: req.payment_request.clone(),
            amt: req.amt,
            timeout_seconds: req.timeout_seconds,
            fee_limit_sat: req.fee_limit_sat,
            no_inflight_updates: req.no_inflight_updates,
        });
        let nanos = state.payment_delay_nanos.load(Ordering::SeqCst);
        if nanos > 0 {
            tokio::time::sleep(Duration::from_nanos(nanos)).await;
        }
        let (hash, value_msat) = decode(&req)?;
        let mut payments = state.payments();
        let index = payments.calls.len() as u64;
        if let Some(prev) = payments.by_hash.get(&hash) {
            if prev.status == PaymentStatus::Succeeded as i32 {
                return Err(Status::already_exists("invoice is already paid"));
            }
        }
        let failing = state
            .fail_payments
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let mut payment = Payment {
            payment_hash: hex::encode(hash),
            payment_request: req.payment_request,
            creation_time_ns: unix_now().saturating_mul(1_000_000_000),
            payment_index: index,
            ..Default::default()
        };
        if failing {
            payment.status = PaymentStatus::Failed as i32;
            payment.failure_reason = PaymentFailureReason::FailureReasonNoRoute as i32;
        } else {
            let fee_sat = i64::try_from(state.payment_fee_sat.load(Ordering::SeqCst))
                .unwrap_or(i64::MAX / 1000);
            payment.status = PaymentStatus::Succeeded as i32;
            payment.payment_preimage = hex::encode(rand::random::<[u8; 32]>());
            payment.value_msat = value_msat;
            payment.value_sat = value_msat / 1000;
            payment.fee_sat = fee_sat;
            payment.fee_msat = fee_sat.saturating_mul(1000);
        }
        payments.by_hash.insert(hash, payment.clone());
        Ok(Response::new(Final(Some(payment))))
    }

    type TrackPaymentV2Stream = Final;

    async fn track_payment_v2(
        &self,
        request: Request<TrackPaymentRequest>,
    ) -> Result<Response<Final>, Status> {
        let state = &self.0;
        state.track_payment_calls.fetch_add(1, Ordering::SeqCst);
        state.authorize(&request, true)?;
        let hash: [u8; 32] = request
            .into_inner()
            .payment_hash
            .as_slice()
            .try_into()
            .map_err(|_| Status::unknown("invalid hash length"))?;
        match state.payments().by_hash.get(&hash) {
            Some(p) => Ok(Response::new(Final(Some(p.clone())))),
            None => Err(Status::not_found("payment isn't initiated")),
        }
    }
}

/// The invoice's hash and the msat to send, with lnd's amount rules.
fn decode(req: &SendPaymentRequest) -> Result<([u8; 32], i64), Status> {
    let signed = crate::bolt11::parse(&req.payment_request)
        .map_err(|e| Status::unknown(format!("invalid payment request: {e}")))?;
    let hash = crate::bolt11::payment_hash(&signed).map_err(Status::unknown)?;
    if req.amt < 0 {
        return Err(Status::unknown("amount cannot be negative"));
    }
    let invoice_msat = signed.raw_invoice().amount_pico_btc().map(|p| p / 10);
    let msat = match invoice_msat {
        Some(_) if req.amt != 0 => {
            return Err(Status::unknown(
                "amount must not be specified when paying a non-zero amount invoice",
            ))
        }
        Some(msat) => i64::try_from(msat).unwrap_or(i64::MAX),
        None if req.amt == 0 => {
            return Err(Status::unknown(
                "amount must be specified when paying a zero amount invoice",
            ))
        }
        None => req.amt.saturating_mul(1000),
    };
    Ok((hash, msat))
}
