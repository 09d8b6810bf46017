//! The dev backend's simulated wallet: a small HTTP/1 server that "pays" our invoices.
//!
//! Owns the wallet endpoint's routes and wire shapes:
//! - `POST /pay` `{"invoice": "<bolt11>"}` → `{"preimage": "<hex>", "payment_hash": "<hex>"}`;
//! - `POST /v2/router/send` (lnd REST shape, other fields ignored) → one NDJSON line
//!   `{"result":{"status":"SUCCEEDED","payment_preimage":"<base64>","payment_hash":"<hex>"}}`;
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
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => json_response(StatusCode::OK, &json!({"status": "ok"})),
        (&Method::POST, "/pay") => pay(req, &backend, Shape::Simple).await,
        (&Method::POST, "/v2/router/send") => pay(req, &backend, Shape::LndRest).await,
        (_, "/healthz" | "/pay" | "/v2/router/send") => {
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

async fn pay(req: Request<Incoming>, backend: &DevBackend, shape: Shape) -> Response<Full<Bytes>> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let msg = format!("cannot read body: {e}");
            return error_response(StatusCode::BAD_REQUEST, &msg);
        }
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
            let line = json!({"result": {
                "status": "SUCCEEDED",
                "payment_preimage": preimage,
                "payment_hash": hash,
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
