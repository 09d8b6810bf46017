//! The lnd backend's payments: `routerrpc.Router/SendPaymentV2` (server streaming, only the
//! final update asked for) and, when lnd says the payment already exists, `TrackPaymentV2`
//! to learn how that earlier attempt ended.
//!
//! Owns mapping lnd's `Payment` updates and errors onto a [`PayReply`]: a terminal update is
//! `Succeeded`/`Failed`; an lnd error answer is `Failed` with lnd's message (retrying later is
//! safe: lnd never pays an invoice twice); a lost connection or a stream that breaks before a
//! final update is `Backend` (outcome unknown). The caller bounds the whole call by the
//! request's timeout plus a margin.

use tonic::codec::Streaming;
use tonic::Code;

use super::LndBackend;
use crate::bolt11::PayTarget;
use crate::lnrpc::payment::PaymentStatus;
use crate::lnrpc::{Payment, PaymentFailureReason};
use crate::protocol::{BridgeError, PayReply, PayRequest, PayStatus};
use crate::routerrpc::{SendPaymentRequest, TrackPaymentRequest};

impl LndBackend {
    /// Wraps `msg` with the payment macaroon.
    fn pay_request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.metadata_mut()
            .insert("macaroon", self.pay_macaroon.clone());
        req
    }

    pub(crate) async fn pay_invoice(
        &self,
        req: &PayRequest,
        target: &PayTarget,
    ) -> Result<PayReply, BridgeError> {
        let hash = target.payment_hash;
        let msg = SendPaymentRequest {
            // Only for an amountless invoice: lnd refuses `amt` beside an invoice amount.
            amt: i64::try_from(target.send_sat).unwrap_or(i64::MAX),
            payment_request: req.payment_request.trim().to_owned(),
            timeout_seconds: timeout_seconds(req.timeout),
            fee_limit_sat: i64::try_from(req.fee_limit_sat).unwrap_or(i64::MAX),
            no_inflight_updates: true,
        };
        match self
            .router
            .clone()
            .send_payment_v2(self.pay_request(msg))
            .await
        {
            Ok(stream) => {
                self.note_up();
                self.follow(stream.into_inner(), hash).await
            }
            // "invoice is already paid", "payment is in transition", "payment already
            // exists": an earlier attempt (whose answer we may have lost) owns the hash.
            Err(status) if status.code() == Code::AlreadyExists => {
                self.note_up();
                self.track(hash, status.message()).await
            }
            Err(status) => self.refused(&status, hash),
        }
    }

    /// How the earlier payment of `hash` ended (waiting if it is still in flight); `Failed`
    /// with `why` (lnd's original refusal) if lnd cannot say.
    async fn track(&self, hash: [u8; 32], why: &str) -> Result<PayReply, BridgeError> {
        let msg = TrackPaymentRequest {
            payment_hash: hash.to_vec(),
            no_inflight_updates: true,
        };
        match self
            .router
            .clone()
            .track_payment_v2(self.pay_request(msg))
            .await
        {
            Ok(stream) => self.follow(stream.into_inner(), hash).await,
            Err(status) if status.code() == Code::Unavailable => Err(self.status_err(&status)),
            Err(status) => {
                self.note_status(&status);
                tracing::debug!(error = %status.message(), "lnd cannot track the payment");
                Ok(PayReply::failed(hash, why))
            }
        }
    }

    /// Reads payment updates until a terminal one.
    async fn follow(
        &self,
        mut stream: Streaming<Payment>,
        hash: [u8; 32],
    ) -> Result<PayReply, BridgeError> {
        loop {
            match stream.message().await {
                Ok(Some(update)) => {
                    if let Some(reply) = terminal(&update, hash)? {
                        return Ok(reply);
                    }
                }
                Ok(None) => {
                    return Err(BridgeError::Backend(
                        "lnd ended the payment stream before a final status".into(),
                    ))
                }
                // Mid-payment the outcome is unknown; a retry learns it (AlreadyExists).
                Err(status) => return Err(self.status_err(&status)),
            }
        }
    }

    /// An error answer before the payment started: `Failed` with lnd's message, except a
    /// transport failure (lnd unreachable), which is the call's error.
    fn refused(&self, status: &tonic::Status, hash: [u8; 32]) -> Result<PayReply, BridgeError> {
        if status.code() == Code::Unavailable {
            return Err(self.status_err(status));
        }
        self.note_status(status);
        Ok(PayReply::failed(hash, status.message()))
    }
}

/// lnd's `timeout_seconds`: whole seconds, at least 1 (0 is refused by older lnd).
fn timeout_seconds(timeout: std::time::Duration) -> i32 {
    i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX).max(1)
}

/// The reply for a terminal update, `None` for an in-flight one.
fn terminal(p: &Payment, expected_hash: [u8; 32]) -> Result<Option<PayReply>, BridgeError> {
    let status = PaymentStatus::try_from(p.status).unwrap_or(PaymentStatus::Unknown);
    let reply = match status {
        PaymentStatus::Succeeded => {
            let mut preimage = [0u8; 32];
            hex::decode_to_slice(&p.payment_preimage, &mut preimage).map_err(|_| {
                BridgeError::Backend(format!(
                    "lnd reported a payment preimage that is not 32 bytes of hex: {:?}",
                    p.payment_preimage
                ))
            })?;
            PayReply {
                status: PayStatus::Succeeded,
                payment_hash: expected_hash,
                preimage: Some(preimage),
                value_sat: sat(p.value_sat, p.value_msat),
                fee_sat: sat(p.fee_sat, p.fee_msat),
                failure: None,
            }
        }
        PaymentStatus::Failed => {
            let reason = PaymentFailureReason::try_from(p.failure_reason).map_or_else(
                |_| format!("failure reason {}", p.failure_reason),
                |r| r.as_str_name().to_owned(),
            );
            PayReply::failed(expected_hash, reason)
        }
        PaymentStatus::Unknown | PaymentStatus::InFlight | PaymentStatus::Initiated => {
            return Ok(None)
        }
    };
    if p.payment_hash != hex::encode(expected_hash) && !p.payment_hash.is_empty() {
        tracing::warn!(
            got = %p.payment_hash,
            expected = %hex::encode(expected_hash),
            "lnd reported a payment for another hash than the invoice's"
        );
    }
    Ok(Some(reply))
}

/// Satoshis from lnd's sat and msat pair (sat when set, else msat truncated; never negative).
fn sat(sat: i64, msat: i64) -> u64 {
    let v = if sat != 0 { sat } else { msat / 1000 };
    u64::try_from(v).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(status: PaymentStatus) -> Payment {
        Payment {
            payment_hash: hex::encode([1u8; 32]),
            status: status as i32,
            ..Default::default()
        }
    }

    #[test]
    fn terminal_updates_map_to_replies() {
        for s in [
            PaymentStatus::Unknown,
            PaymentStatus::InFlight,
            PaymentStatus::Initiated,
        ] {
            assert_eq!(terminal(&payment(s), [1; 32]), Ok(None), "{s:?}");
        }
        let ok = Payment {
            payment_preimage: hex::encode([7u8; 32]),
            value_sat: 100,
            value_msat: 100_000,
            fee_msat: 2_500,
            ..payment(PaymentStatus::Succeeded)
        };
        let reply = terminal(&ok, [1; 32]).unwrap().unwrap();
        assert_eq!(reply.status, PayStatus::Succeeded);
        assert_eq!(reply.preimage, Some([7; 32]));
        assert_eq!((reply.value_sat, reply.fee_sat), (100, 2));
        let bad = Payment {
            payment_preimage: "zz".into(),
            ..payment(PaymentStatus::Succeeded)
        };
        assert!(matches!(
            terminal(&bad, [1; 32]),
            Err(BridgeError::Backend(_))
        ));
        let failed = Payment {
            failure_reason: PaymentFailureReason::FailureReasonNoRoute as i32,
            ..payment(PaymentStatus::Failed)
        };
        let reply = terminal(&failed, [1; 32]).unwrap().unwrap();
        assert_eq!(reply, PayReply::failed([1; 32], "FAILURE_REASON_NO_ROUTE"));
        let odd = Payment {
            failure_reason: 99,
            ..payment(PaymentStatus::Failed)
        };
        let reply = terminal(&odd, [1; 32]).unwrap().unwrap();
        assert_eq!(reply.failure.as_deref(), Some("failure reason 99"));
    }

    #[test]
    fn timeout_is_whole_seconds_at_least_one() {
        use std::time::Duration;
        assert_eq!(timeout_seconds(Duration::ZERO), 1);
        assert_eq!(timeout_seconds(Duration::from_millis(1500)), 1);
        assert_eq!(timeout_seconds(Duration::from_secs(60)), 60);
        assert_eq!(timeout_seconds(Duration::MAX), i32::MAX);
        assert_eq!(sat(-5, 0), 0);
        assert_eq!(sat(0, 1999), 1);
    }
}
