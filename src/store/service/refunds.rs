//! The store thread's refund worker: pays each refund a session close recorded (at once, or
//! when [`Store::refunds_due`](crate::store::Store::refunds_due) says a retry is due) through a
//! [`Payer`], records the outcome, and answers a waiting close with it when it is known within
//! [`CLOSE_WAIT`] (else `pending`; the payment goes on). A payment is a future polled with the
//! store thread's waker, never waited for: the thread keeps serving while lnd routes.
//!
//! [`bridge_payer`] is the one place that speaks lnd-bridge's payment API.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use lnd_bridge::BridgeHandle;

use super::Worker;
use crate::store::db::unix_now;
use crate::store::session::{CloseOutcome, RefundRow, RefundStatus};

/// lnd's routing deadline for one refund (`timeout_seconds`).
pub const REFUND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a close's answer waits for its refund's outcome before saying `pending` (shorter
/// in this crate's unit tests).
pub const CLOSE_WAIT: Duration = if cfg!(test) {
    Duration::from_millis(300)
} else {
    Duration::from_secs(10)
};
/// A payment the payer has not answered this long after its timeout is recorded as failed
/// (and retried later): the bridge answers by the timeout plus its own 10 s margin
/// (`lnd_bridge::PAY_TIMEOUT_MARGIN`), this only bounds a lost reply.
const LOST_REPLY: Duration = Duration::from_secs(30);

/// One refund to pay: lnd-bridge's `PayRequest`, field for field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundPayment {
    /// The client's amountless BOLT11 return invoice.
    pub payment_request: String,
    pub amount_sat: u64,
    /// The routing fee budget (lnd `fee_limit_sat`).
    pub fee_limit_sat: u64,
    /// lnd's routing deadline (`timeout_seconds`).
    pub timeout: Duration,
}

/// How a refund payment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayOutcome {
    Succeeded {
        fee_sat: u64,
    },
    /// Why it failed, for `mpp_refunds.last_error` and the logs.
    Failed(String),
}

/// A refund payment in progress.
pub type PayFuture = Pin<Box<dyn Future<Output = PayOutcome> + Send>>;

/// Starts refund payments; called on the store thread, must not block.
pub type Payer = Box<dyn FnMut(RefundPayment) -> PayFuture + Send>;

/// The answer channel of a close waiting for its refund's outcome.
pub(super) type CloseSender = oneshot::Sender<Result<CloseOutcome, ()>>;

/// Pays refunds through lnd-bridge (lnd's `routerrpc.Router/SendPaymentV2`; the dev backend
/// pays its own wallet).
pub fn bridge_payer(bridge: BridgeHandle) -> Payer {
    Box::new(move |payment: RefundPayment| pay_through_bridge(&bridge, payment))
}

/// The adapter to lnd-bridge's payment API: a refusal at once (malformed invoice, full queue,
/// no backend) and a reply that is an error (`Timeout`, `Backend`: outcome unknown) are
/// failures, retried later; paying the same invoice again is safe (lnd tracks the earlier
/// payment and answers its outcome).
fn pay_through_bridge(bridge: &BridgeHandle, payment: RefundPayment) -> PayFuture {
    let req = lnd_bridge::PayRequest {
        payment_request: payment.payment_request,
        amount_sat: payment.amount_sat,
        fee_limit_sat: payment.fee_limit_sat,
        timeout: payment.timeout,
    };
    let reply = match bridge.try_pay_invoice(req) {
        Ok(reply) => reply,
        Err(e) => return Box::pin(std::future::ready(PayOutcome::Failed(e.to_string()))),
    };
    Box::pin(async move {
        match reply.await {
            Ok(Ok(paid)) => match paid.status {
                lnd_bridge::PayStatus::Succeeded => PayOutcome::Succeeded {
                    fee_sat: paid.fee_sat,
                },
                lnd_bridge::PayStatus::Failed => PayOutcome::Failed(
                    paid.failure
                        .unwrap_or_else(|| "the payment failed".to_owned()),
                ),
            },
            Ok(Err(e)) => PayOutcome::Failed(e.to_string()),
            Err(_) => PayOutcome::Failed("the Lightning bridge stopped".to_owned()),
        }
    })
}

/// A payer for stores that must never pay (tests, a proxy without Lightning): every refund
/// fails with `why` and stays due for a retry.
pub fn no_payer(why: &'static str) -> Payer {
    Box::new(move |_| Box::pin(std::future::ready(PayOutcome::Failed(why.to_owned()))))
}

/// One refund being paid.
struct InFlight {
    refund: RefundRow,
    payment: PayFuture,
    /// Recorded as failed if the payer has not answered by then.
    give_up: Instant,
    /// A close waiting for the outcome, and until when it waits.
    waiter: Option<(CloseSender, Instant)>,
}

/// The refund worker's state: the payer and the payments in progress.
pub(super) struct Refunds {
    payer: Payer,
    in_flight: Vec<InFlight>,
}

impl Refunds {
    pub(super) fn new(payer: Payer) -> Refunds {
        Refunds {
            payer,
            in_flight: Vec::new(),
        }
    }

    /// The next moment something here needs a look without being woken.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.in_flight
            .iter()
            .flat_map(|f| [Some(f.give_up), f.waiter.as_ref().map(|(_, by)| *by)])
            .flatten()
            .min()
    }

    fn is_paying(&self, session_id: &str) -> bool {
        self.in_flight
            .iter()
            .any(|f| f.refund.session_id == session_id)
    }
}

impl Worker {
    /// Pays `refund` unless it needs no payment (skipped, succeeded) or is being paid already;
    /// `waiter` (a close) gets the outcome if it is known within [`CLOSE_WAIT`].
    pub(super) fn start_refund(&mut self, refund: RefundRow, waiter: Option<CloseSender>) {
        let payable = matches!(refund.status, RefundStatus::Pending | RefundStatus::Failed);
        if !payable || self.refunds.is_paying(&refund.session_id) {
            if refund.status == RefundStatus::Skipped {
                self.count_refund(RefundStatus::Skipped);
            }
            if let Some(waiter) = waiter {
                let _ = waiter.send(Ok(CloseOutcome::Closed { refund }));
            }
            return;
        }
        let payment = (self.refunds.payer)(RefundPayment {
            payment_request: refund.return_invoice.clone(),
            amount_sat: refund.amount_sats,
            fee_limit_sat: refund.fee_limit_sats,
            timeout: REFUND_TIMEOUT,
        });
        let now = Instant::now();
        self.refunds.in_flight.push(InFlight {
            refund,
            payment,
            give_up: now + REFUND_TIMEOUT + LOST_REPLY,
            waiter: waiter.map(|w| (w, now + CLOSE_WAIT)),
        });
        self.poll_refunds();
    }

    /// Polls every payment in progress; records the finished ones and answers their closes;
    /// answers closes that waited [`CLOSE_WAIT`] with `pending`.
    pub(super) fn poll_refunds(&mut self) {
        if self.refunds.in_flight.is_empty() {
            return;
        }
        let mut cx = Context::from_waker(&self.waker);
        let now = Instant::now();
        let mut done = Vec::new();
        let mut i = 0;
        while i < self.refunds.in_flight.len() {
            let f = &mut self.refunds.in_flight[i];
            let outcome = match f.payment.as_mut().poll(&mut cx) {
                Poll::Ready(outcome) => Some(outcome),
                Poll::Pending if now >= f.give_up => Some(PayOutcome::Failed(
                    "the Lightning bridge did not answer the payment".to_owned(),
                )),
                Poll::Pending => None,
            };
            if let Some(outcome) = outcome {
                done.push((self.refunds.in_flight.swap_remove(i), outcome));
                continue;
            }
            if f.waiter.as_ref().is_some_and(|(_, by)| now >= *by) {
                if let Some((waiter, _)) = f.waiter.take() {
                    self.handle
                        .stats
                        .refunds_pending
                        .fetch_add(1, Ordering::Relaxed);
                    let refund = f.refund.clone();
                    let _ = waiter.send(Ok(CloseOutcome::Closed { refund }));
                }
            }
            i += 1;
        }
        for (f, outcome) in done {
            self.finish_refund(f, outcome);
        }
    }

    /// Records a payment's outcome and answers its close, if one still waits.
    fn finish_refund(&mut self, f: InFlight, outcome: PayOutcome) {
        let mut refund = f.refund;
        let (status, error) = match outcome {
            PayOutcome::Succeeded { fee_sat } => {
                tracing::info!(
                    session_id = refund.session_id,
                    amount_sat = refund.amount_sats,
                    fee_sat,
                    "session refund paid"
                );
                (RefundStatus::Succeeded, None)
            }
            PayOutcome::Failed(why) => {
                tracing::warn!(
                    session_id = refund.session_id,
                    amount_sat = refund.amount_sats,
                    attempt = refund.attempts + 1,
                    "session refund failed: {why}"
                );
                (RefundStatus::Failed, Some(why))
            }
        };
        self.count_refund(status);
        let now = unix_now();
        if let Err(e) = self
            .store
            .record_refund(&refund.session_id, status, error.as_deref(), now)
        {
            self.handle
                .stats
                .session_errors
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                session_id = refund.session_id,
                status = status.as_str(),
                "store: cannot record a refund's outcome: {e}"
            );
        }
        refund.status = status;
        refund.attempts += 1;
        refund.last_error = error;
        refund.updated_at = now;
        if let Some((waiter, _)) = f.waiter {
            let _ = waiter.send(Ok(CloseOutcome::Closed { refund }));
        }
    }

    fn count_refund(&self, status: RefundStatus) {
        let s = &self.handle.stats;
        match status {
            RefundStatus::Succeeded => &s.refunds_succeeded,
            RefundStatus::Failed => &s.refunds_failed,
            RefundStatus::Skipped => &s.refunds_skipped,
            RefundStatus::Pending => &s.refunds_pending,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Starts the refunds due for a retry (or left pending by a stopped instance).
    pub(super) fn retry_refunds(&mut self) {
        match self.store.refunds_due(unix_now(), 64) {
            Ok(due) => {
                for refund in due {
                    self.start_refund(refund, None);
                }
            }
            Err(e) => tracing::warn!("store: cannot read the refunds due: {e}"),
        }
    }

    /// At shutdown: closes still waiting are told `pending` (the row is retried later by
    /// whichever instance runs next).
    pub(super) fn abandon_refunds(&mut self) {
        for f in self.refunds.in_flight.drain(..) {
            if let Some((waiter, _)) = f.waiter {
                let _ = waiter.send(Ok(CloseOutcome::Closed { refund: f.refund }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};

    use lnd_bridge::{BackendConfig, BridgeConfig, Network};

    use super::*;
    use crate::store::session::SessionOpen;
    use crate::store::sqlite::SqliteStore;

    /// One HTTP/1.1 exchange with the dev wallet; returns the body.
    fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: wallet\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{raw}");
        body.to_owned()
    }

    fn wait<T>(rx: Option<oneshot::Receiver<Result<T, ()>>>) -> T {
        let mut rx = rx.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(v)) = rx.try_recv() {
                return v.unwrap();
            }
            assert!(Instant::now() < deadline, "no answer from the store");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn the_dev_backend_pays_a_refund_into_its_wallet() {
        let dir = tempfile::tempdir().unwrap();
        let bridge = lnd_bridge::start(BridgeConfig::new(BackendConfig::Dev {
            basedir: dir.path().to_path_buf(),
            wallet_listen: "127.0.0.1:0".parse().unwrap(),
            network: Network::Regtest,
        }))
        .unwrap();
        let wallet = bridge.wallet_addr().unwrap();
        let minted: serde_json::Value = serde_json::from_str(&http(
            wallet,
            "POST",
            "/invoice",
            r#"{"amount_sats":0,"memo":"refund"}"#,
        ))
        .unwrap();
        let return_invoice = minted["invoice"].as_str().unwrap().to_owned();
        let return_hash = minted["payment_hash"].as_str().unwrap().to_owned();

        let store = SqliteStore::open(&dir.path().join("a.db"), true).unwrap();
        let service = super::super::start_with(
            Box::new(store),
            None,
            Box::new(|_| {}),
            "me",
            bridge_payer(bridge.handle()),
        )
        .unwrap();
        let h = service.handle();
        let hash: [u8; 32] = rand::random();
        let id = hex::encode(hash);
        let now = unix_now();
        let open = SessionOpen {
            session_id: id.clone(),
            payment_hash: hash,
            deposit_sats: 1000,
            return_invoice,
            idle_timeout_secs: 300,
            holder: "me".into(),
            now,
        };
        wait(h.try_open_session(open));
        let CloseOutcome::Closed { refund } = wait(h.try_close_session(&id, "me", 200, 800, now))
        else {
            panic!("not closed");
        };
        assert_eq!(
            (refund.status, refund.amount_sats, refund.fee_limit_sats),
            (RefundStatus::Succeeded, 792, 8)
        );
        let state: serde_json::Value =
            serde_json::from_str(&http(wallet, "GET", &format!("/invoice/{return_hash}"), ""))
                .unwrap();
        assert_eq!(state["settled"], true);
        assert_eq!(state["amount_paid_sats"], 792);
        drop(service);
        bridge.shutdown();
    }

    #[test]
    fn a_refused_payment_fails_at_once() {
        let bridge = lnd_bridge::start(BridgeConfig::new(BackendConfig::Disabled)).unwrap();
        let mut pay = bridge_payer(bridge.handle());
        let mut outcome = pay(RefundPayment {
            payment_request: "lnbcrt1garbage".into(),
            amount_sat: 5,
            fee_limit_sat: 1,
            timeout: REFUND_TIMEOUT,
        });
        let waker = std::task::Waker::noop();
        let Poll::Ready(PayOutcome::Failed(why)) =
            outcome.as_mut().poll(&mut Context::from_waker(waker))
        else {
            panic!("not failed at once");
        };
        assert!(!why.is_empty());
        bridge.shutdown();
    }
}
