//! The fake's `lnrpc.Lightning` implementation: macaroon check, scripted failures and
//! latency, invoice minting and lookup, and subscriptions with lnd's replay rules.
//!
//! Owns only request handling; the book and the scripting knobs live in [`super::State`].

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tonic::codegen::tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{Book, Entry, State};
use crate::lnrpc::invoice::InvoiceState as RpcState;
use crate::lnrpc::lightning_server::Lightning;
use crate::lnrpc::{AddInvoiceResponse, Invoice as RpcInvoice, InvoiceSubscription, PaymentHash};
use crate::protocol::InvoiceRequest;

/// The gRPC service; cheap to share across connections.
pub(crate) struct Svc(pub(crate) Arc<State>);

/// A subscription's stream: the event that released the headers, then the live channel.
pub(crate) struct SubStream {
    first: Option<RpcInvoice>,
    rx: UnboundedReceiver<Result<RpcInvoice, Status>>,
}

impl Stream for SubStream {
    type Item = Result<RpcInvoice, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        self.rx.poll_recv(cx)
    }
}

impl Svc {
    /// lnd's answer to a missing or wrong macaroon: `UNKNOWN` with a message. The invoice
    /// and the admin macaroon both grant these calls.
    fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        self.0.authorize(req, false)
    }

    /// Scripted failures and latency for unary calls.
    async fn script(&self) -> Result<(), Status> {
        let failing = self
            .0
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(Status::unknown("fake lnd: scripted failure"));
        }
        let nanos = self.0.delay_nanos.load(Ordering::SeqCst);
        if nanos > 0 {
            tokio::time::sleep(Duration::from_nanos(nanos)).await;
        }
        Ok(())
    }
}

/// lnd's amount rules: `value` or `value_msat`, not both, not negative.
fn amount_sat(inv: &RpcInvoice) -> Result<i64, Status> {
    if inv.value != 0 && inv.value_msat != 0 {
        return Err(Status::unknown(
            "value and value_msat are mutually exclusive",
        ));
    }
    let sat = if inv.value_msat != 0 {
        inv.value_msat / 1000
    } else {
        inv.value
    };
    if sat < 0 {
        return Err(Status::unknown("amount must not be negative"));
    }
    Ok(sat)
}

#[tonic::async_trait]
impl Lightning for Svc {
    async fn add_invoice(
        &self,
        request: Request<RpcInvoice>,
    ) -> Result<Response<AddInvoiceResponse>, Status> {
        self.0.add_calls.fetch_add(1, Ordering::SeqCst);
        self.authorize(&request)?;
        self.script().await?;
        let inv = request.into_inner();
        let sat = amount_sat(&inv)?;
        let req = InvoiceRequest {
            amount_sat: sat as u64,
            memo: inv.memo.clone(),
        };
        let signed = self
            .0
            .signer
            .sign(&req)
            .map_err(|e| Status::unknown(e.to_string()))?;
        let mut book = self.0.book();
        let add_index = book.added.len() as u64 + 1;
        let entry = Entry {
            memo: inv.memo,
            value_sat: sat,
            preimage: signed.preimage,
            payment_request: signed.payment_request.clone(),
            payment_addr: signed.payment_addr,
            created: i64::try_from(signed.created).unwrap_or(i64::MAX),
            add_index,
            settle_index: 0,
            settle_date: 0,
            state: RpcState::Open,
        };
        let update = entry.to_rpc();
        book.invoices.insert(signed.payment_hash, entry);
        book.added.push(signed.payment_hash);
        book.subs.retain(|tx| tx.send(Ok(update.clone())).is_ok());
        Ok(Response::new(AddInvoiceResponse {
            r_hash: signed.payment_hash.to_vec(),
            payment_request: signed.payment_request,
            add_index,
            payment_addr: signed.payment_addr.to_vec(),
        }))
    }

    async fn lookup_invoice(
        &self,
        request: Request<PaymentHash>,
    ) -> Result<Response<RpcInvoice>, Status> {
        self.0.lookup_calls.fetch_add(1, Ordering::SeqCst);
        self.authorize(&request)?;
        self.script().await?;
        let hash: [u8; 32] = request
            .into_inner()
            .r_hash
            .as_slice()
            .try_into()
            .map_err(|_| Status::unknown("payment hash must be exactly 32 bytes"))?;
        let book = self.0.book();
        match book.invoices.get(&hash) {
            Some(e) => Ok(Response::new(e.to_rpc())),
            None => Err(Status::not_found("unable to locate invoice")),
        }
    }

    type SubscribeInvoicesStream = SubStream;

    async fn subscribe_invoices(
        &self,
        request: Request<InvoiceSubscription>,
    ) -> Result<Response<SubStream>, Status> {
        self.0.subscribe_calls.fetch_add(1, Ordering::SeqCst);
        self.authorize(&request)?;
        if self.0.refuse_subs.load(Ordering::SeqCst) {
            return Err(Status::unavailable("fake lnd: subscriptions refused"));
        }
        let from = request.into_inner();
        let (tx, mut rx) = unbounded_channel();
        {
            let mut book = self.0.book();
            for inv in backlog(&book, &from) {
                let _ = tx.send(Ok(inv));
            }
            book.subs.push(tx);
        }
        // Like grpc-go in lnd: no response headers until the first event.
        match rx.recv().await {
            Some(Ok(first)) => Ok(Response::new(SubStream {
                first: Some(first),
                rx,
            })),
            Some(Err(status)) => Err(status),
            None => Err(Status::unavailable("fake lnd: subscription closed")),
        }
    }
}

/// lnd's replay: adds after `add_index`, then settles after
/// `settle_index`; an index of 0 asks for no backlog of that kind.
fn backlog(book: &Book, from: &InvoiceSubscription) -> Vec<RpcInvoice> {
    let mut out = Vec::new();
    if from.add_index > 0 {
        let start = usize::try_from(from.add_index).unwrap_or(usize::MAX);
        for hash in book.added.iter().skip(start) {
            // Replayed as stored now (an invoice settled since shows as settled).
            if let Some(e) = book.invoices.get(hash) {
                out.push(e.to_rpc());
            }
        }
    }
    if from.settle_index > 0 {
        let start = usize::try_from(from.settle_index).unwrap_or(usize::MAX);
        for hash in book.settled.iter().skip(start) {
            if let Some(e) = book.invoices.get(hash) {
                out.push(e.to_rpc());
            }
        }
    }
    out
}
