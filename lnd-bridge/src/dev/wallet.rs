//! The dev backend's simulated wallet: a small HTTP/1 server that "pays" our invoices and
//! mints its own for the proxy to pay (session refunds).
//!
//! Owns the wallet endpoint's routes and wire shapes:
//! - `POST /pay` `{"invoice": "<bolt11>"}` → `{"preimage": "<hex>", "payment_hash": "<hex>"}`;
//! - `POST /v2/router/send` (lnd REST shape, other fields ignored) → one NDJSON line
//!   `{"result":{"status":"SUCCEEDED","payment_preimage":"<base64>","payment_hash":"<hex>",
//!   "value_sat":"<n>","value_msat":"<n>","fee_sat":"0","fee_msat":"0"}}` (int64 fields as
//!   strings, as lnd's grpc-gateway renders them);
//! - `POST /invoice` `{"amount_sats": N, "memo": "…"}` (both optional; N = 0: no amount) →
//!   `{"invoice": "<bolt11>", "payment_hash": "<hex>"}`, signed by the wallet's own key;
//! - `GET /invoice/<payment hash hex>` → `{"settled": bool, "amount_paid_sats": N}`;
//! - `GET /healthz` → 200.
//!
//! Unknown invoices answer 404, malformed ones 400, always with a JSON `error`. Runs on the
//! bridge's tokio runtime, one task per connection; it must never block that thread.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;

use super::{DevBackend, Paid, PayError};
use crate::protocol::BridgeError;

/// Largest request body accepted; an invoice is well under 2 KiB.
const MAX_BODY: usize = 64 * 1024;
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Binds the wallet listener (synchronously, so errors reach `start`). Must be called
/// inside the bridge runtime's context, which owns the socket's registration.
pub(crate) fn bind(addr: SocketAddr) -> Result<TcpListener, BridgeError> {
    let err = |e: std::io::Error| BridgeError::WalletListen {
        addr: addr.to_string(),
        reason: e.to_string(),
    };
    let std_listener = std::net::TcpListener::bind(addr).map_err(err)?;
    std_listener.set_nonblocking(true).map_err(err)?;
    TcpListener::from_std(std_listener).map_err(err)
}

/// Accepts connections forever (until the runtime is dropped), one task each.
pub(crate) async fn serve(listener: TcpListener, backend: Arc<DevBackend>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Typically EMFILE: back off briefly instead of spinning on the error.
                tracing::warn!(error = %e, "dev wallet accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let backend = backend.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| route(req, backend.clone()));
            // A header deadline keeps idle or trickling clients from pinning connections.
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "dev wallet connection ended with an error");
            }
        });
    }
}

/// Which reply shape a pay route speaks.
#[derive(Clone, Copy)]
enum Shape {
    Simple,
    LndRest,
}

async fn route(
    req: Request<Incoming>,
    backend: Arc<DevBackend>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let resp = match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => json_response(StatusCode::OK, &json!({"status": "ok"})),
        (&Method::POST, "/pay") => pay(req, &backend, Shape::Simple).await,
        (&Method::POST, "/v2/router/send") => pay(req, &backend, Shape::LndRest).await,
        (&Method::POST, "/invoice") => mint(req, &backend).await,
        (&Method::GET, p) if p.starts_with("/invoice/") => {
            invoice_status(p.strip_prefix("/invoice/").unwrap_or(""), &backend)
        }
        (_, "/healthz" | "/pay" | "/v2/router/send" | "/invoice") => {
            error_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        (_, p) if p.starts_with("/invoice/") => {
            error_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error_response(StatusCode::NOT_FOUND, "not found"),
    };
    Ok(resp)
}

#[derive(Deserialize)]
struct PayBody {
    invoice: String,
}

#[derive(Deserialize)]
struct SendBody {
    payment_request: String,
}

#[derive(Deserialize)]
struct InvoiceBody {
    #[serde(default)]
    amount_sats: u64,
    #[serde(default)]
    memo: String,
}

/// Reads a body of at most [`MAX_BODY`] bytes, or the 400 to answer.
async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Full<Bytes>>> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => {
            let msg = format!("cannot read body: {e}");
            Err(error_response(StatusCode::BAD_REQUEST, &msg))
        }
    }
}

/// `POST /invoice`: a wallet invoice the proxy can pay (e.g. a session's return invoice).
async fn mint(req: Request<Incoming>, backend: &DevBackend) -> Response<Full<Bytes>> {
    let body = match read_body(req).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    let ask = match serde_json::from_slice::<InvoiceBody>(&body) {
        Ok(ask) => ask,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, &format!("bad JSON body: {e}")),
    };
    match backend.wallet().mint(ask.amount_sats, &ask.memo) {
        Ok(minted) => json_response(
            StatusCode::OK,
            &json!({
                "invoice": minted.invoice,
                "payment_hash": hex::encode(minted.payment_hash),
            }),
        ),
        Err(BridgeError::InvalidRequest(msg)) => error_response(StatusCode::BAD_REQUEST, &msg),
        Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `GET /invoice/<hash hex>`: whether the proxy paid a wallet invoice, and how much.
fn invoice_status(hash_hex: &str, backend: &DevBackend) -> Response<Full<Bytes>> {
    let mut hash = [0u8; 32];
    if hex::decode_to_slice(hash_hex, &mut hash).is_err() {
        return error_response(
            StatusCode::BAD_REQUEST,
            "payment hash must be 64 hex characters",
        );
    }
    match backend.wallet().status(&hash) {
        Some(status) => json_response(
            StatusCode::OK,
            &json!({"settled": status.settled, "amount_paid_sats": status.amount_paid_sat}),
        ),
        None => error_response(StatusCode::NOT_FOUND, "unknown invoice"),
    }
}

async fn pay(req: Request<Incoming>, backend: &DevBackend, shape: Shape) -> Response<Full<Bytes>> {
    let body = match read_body(req).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    let bolt11 = match shape {
        Shape::Simple => serde_json::from_slice::<PayBody>(&body).map(|b| b.invoice),
        Shape::LndRest => serde_json::from_slice::<SendBody>(&body).map(|b| b.payment_request),
    };
    let bolt11 = match bolt11 {
        Ok(s) => s,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, &format!("bad JSON body: {e}")),
    };
    match backend.pay(&bolt11) {
        Ok(paid) => paid_response(&paid, shape),
        Err(PayError::Malformed(msg)) => error_response(
            StatusCode::BAD_REQUEST,
            &format!("malformed invoice: {msg}"),
        ),
        Err(PayError::Unknown { payment_hash }) => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "unknown invoice", "payment_hash": hex::encode(payment_hash)}),
        ),
    }
}

fn paid_response(paid: &Paid, shape: Shape) -> Response<Full<Bytes>> {
    let hash = hex::encode(paid.payment_hash);
    match shape {
        Shape::Simple => json_response(
            StatusCode::OK,
            &json!({"preimage": hex::encode(paid.preimage), "payment_hash": hash}),
        ),
        Shape::LndRest => {
            // l402-requests decodes this field as base64 unconditionally (clients.md §5).
            let preimage = base64::engine::general_purpose::STANDARD.encode(paid.preimage);
            // lnd's grpc-gateway renders int64 fields as JSON strings.
            let line = json!({"result": {
                "status": "SUCCEEDED",
                "payment_preimage": preimage,
                "payment_hash": hash,
                "value_sat": (paid.amount_msat / 1000).to_string(),
                "value_msat": paid.amount_msat.to_string(),
                "fee_sat": "0",
                "fee_msat": "0",
            }});
            let mut body = line.to_string().into_bytes();
            body.push(b'\n');
            with_json_type(StatusCode::OK, body)
        }
    }
}

fn error_response(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    json_response(status, &json!({ "error": msg }))
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    with_json_type(status, value.to_string().into_bytes())
}

fn with_json_type(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
