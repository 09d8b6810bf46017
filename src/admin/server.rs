//! The admin listener: one thread, `aperture-admin`, running a current-thread tokio runtime that
//! serves HTTP/1.1 and h2c (prior knowledge) on the admin address, and routes each request:
//! - `content-type: application/grpc` → `adminrpc.Admin` (tonic), after the macaroon check
//!   (`/adminrpc.Admin/GetHealth` is open);
//! - `/metrics`, `/healthz`, `/readyz` → [`super::probes`], as the listener always answered
//!   (HTTP/1 answers close the connection);
//! - `/api/admin/…` → the REST API ([`super::rest`]);
//! - `/` and `/dashboard/…` → the dashboard, when one is given;
//! - anything else → 404.
//!
//! Every answer carries the admin security headers. The API parts exist only when
//! [`AdminOptions::api`] is given (`admin.enabled`); otherwise the listener serves the probes
//! alone, as before the admin API. Nothing here runs on a worker core or takes a lock a
//! worker takes; the process is reached only through [`AdminBackend`] and the probes' reads.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::{oneshot, Semaphore};
use tonic::body::Body;

use super::auth::{AdminKey, METADATA_KEY};
use super::backend::AdminBackend;
use super::grpc::{self, GrpcAdmin, OPEN_PATH};
use super::probes::{self, Extra, Probes, Ready};
use super::proto::admin_server::AdminServer;
use super::rest::{self, Rest};
use super::{DashboardHandler, PeerAddr};
use crate::metrics::Metrics;

/// How long a client may take to send a request head.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest HTTP/1 request head (a larger one is answered 431).
const MAX_HEAD: usize = 16 * 1024;
/// How long a client may take to send a request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request body the REST API or the dashboard reads.
pub const MAX_BODY: usize = 1 << 20;
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;
/// Streams per h2 connection.
const MAX_STREAMS: u32 = 32;

/// The CSP of everything but the dashboard (which may send its own): nothing loads, nothing
/// frames it.
const CSP: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The admin API's parts (`admin.enabled`).
pub struct ApiOptions {
    pub backend: Arc<dyn AdminBackend>,
    pub key: AdminKey,
    /// `admin.corsorigins`.
    pub cors_origins: Vec<String>,
}

/// Everything the admin listener serves.
pub struct AdminOptions {
    pub addr: SocketAddr,
    pub metrics: Metrics,
    pub ready: Ready,
    pub extra: Extra,
    /// The API (gRPC and REST); `None` serves the probes alone.
    pub api: Option<ApiOptions>,
    /// The dashboard (`/`, `/dashboard/…`); `None` answers 404 there.
    pub dashboard: Option<DashboardHandler>,
}

/// The running admin listener. Dropping it stops it too.
pub struct Admin {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// What every connection task reads.
struct Shared {
    probes: Probes,
    rest: Option<Rest>,
    grpc: Option<(AdminServer<GrpcAdmin>, AdminKey)>,
    dashboard: Option<DashboardHandler>,
}

impl Admin {
    /// The probes alone (metrics and health), as before the admin API: binds `addr` and starts
    /// the admin thread. `ready` answers `/readyz`; `extra` may append exposition text after
    /// the proxy's own metrics.
    pub fn start(
        addr: SocketAddr,
        metrics: Metrics,
        ready: Ready,
        extra: Extra,
    ) -> io::Result<Admin> {
        Admin::start_with(AdminOptions {
            addr,
            metrics,
            ready,
            extra,
            api: None,
            dashboard: None,
        })
    }

    /// Binds `o.addr` and starts the admin thread serving what `o` holds.
    pub fn start_with(o: AdminOptions) -> io::Result<Admin> {
        let listener = std::net::TcpListener::bind(o.addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let shared = Arc::new(Shared {
            probes: Probes {
                metrics: o.metrics,
                ready: o.ready,
                extra: o.extra,
            },
            grpc: o
                .api
                .as_ref()
                .map(|a| (grpc::server(a.backend.clone()), a.key.clone())),
            rest: o.api.map(|a| Rest {
                backend: a.backend,
                key: a.key,
                cors_origins: a.cors_origins,
            }),
            dashboard: o.dashboard,
        });
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("aperture-admin".into())
            .spawn(move || runtime.block_on(serve(listener, shared, stopped)))?;
        Ok(Admin {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The bound address (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, drops every open connection and joins the thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// The accept loop; returns (dropping the runtime, its tasks and the listener) when stopped.
async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("admin: cannot serve the listener: {e}");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = &mut stopped => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning on a failing accept.
                    tracing::warn!("admin: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, shared).await;
            drop(permit);
        });
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(IO_TIMEOUT)
        .max_buf_size(MAX_HEAD);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(MAX_HEAD as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(req, peer, &shared).await) }
    });
    if let Err(e) = builder
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!("admin: connection from {peer} ended: {e}");
    }
}

fn boxed(r: Response<Bytes>) -> Response<Body> {
    r.map(|b| Body::new(Full::new(b)))
}

/// Whether a path is the dashboard's.
fn is_dashboard(path: &str) -> bool {
    path == "/" || path == "/dashboard" || path.starts_with("/dashboard/")
}

/// One request, routed (see the module docs).
async fn handle(req: Request<Incoming>, peer: SocketAddr, s: &Shared) -> Response<Body> {
    // Admin work never runs on a worker core; debug builds (the test suite's) check each request.
    debug_assert!(!std::thread::current()
        .name()
        .is_some_and(|n| n.starts_with("aperture-core-")));
    let http1 = req.version() < Version::HTTP_2;
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let path = req.uri().path().to_owned();
    let path = path.as_str();
    let mut close = false;
    let mut resp = if grpc {
        grpc_call(req, s).await
    } else if Probes::owns(path) {
        close = http1;
        boxed(s.probes.answer(req.method(), path))
    } else if let (Some(rest), true) = (&s.rest, path.starts_with(rest::PREFIX)) {
        match collect(req).await {
            Ok((parts, body)) => boxed(rest.handle(&parts, &body)),
            Err(r) => boxed(r),
        }
    } else if let (Some(dash), true) = (&s.dashboard, is_dashboard(path)) {
        match collect(req).await {
            Ok((parts, body)) => {
                let mut req = Request::from_parts(parts, body);
                req.extensions_mut().insert(PeerAddr(peer));
                boxed(dash(req))
            }
            Err(r) => boxed(r),
        }
    } else {
        close = http1;
        boxed(probes::not_found())
    };
    security_headers(resp.headers_mut());
    if close {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The request's head and its whole body (at most [`MAX_BODY`]), or the answer refusing it.
async fn collect(req: Request<Incoming>) -> Result<(http::request::Parts, Bytes), Response<Bytes>> {
    let (parts, body) = req.into_parts();
    let collected = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect());
    match collected.await {
        Ok(Ok(b)) => Ok((parts, b.to_bytes())),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(probes::text(
            StatusCode::PAYLOAD_TOO_LARGE,
            probes::TEXT,
            "request body too large\n",
        )),
        Ok(Err(_)) => Err(probes::text(
            StatusCode::BAD_REQUEST,
            probes::TEXT,
            "cannot read the request body\n",
        )),
        Err(_) => Err(probes::text(
            StatusCode::REQUEST_TIMEOUT,
            probes::TEXT,
            "request body too slow\n",
        )),
    }
}

/// A gRPC request: the macaroon (unless GetHealth), then tonic.
async fn grpc_call(req: Request<Incoming>, s: &Shared) -> Response<Body> {
    let Some((server, key)) = &s.grpc else {
        return boxed(probes::not_found());
    };
    if req.uri().path() != OPEN_PATH {
        let presented = req.headers().get(METADATA_KEY).map(HeaderValue::as_bytes);
        if let Err(e) = key.check(presented) {
            return tonic::Status::unauthenticated(e.to_string()).into_http();
        }
    }
    let mut server = server.clone();
    match tower_service::Service::call(&mut server, req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// Go's dashboard headers, on every admin answer (a dashboard's own CSP is kept).
fn security_headers(h: &mut HeaderMap) {
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

#[cfg(test)]
mod tests;
