//! The admin plane, off the worker cores by construction: the admin listener's metrics and
//! health probes ([`listener`]), and the admin API's seam ([`backend`]: the [`AdminBackend`]
//! trait the API server is written against, which `main.rs` implements over the store, the
//! bridge and the reload path).
//!
//! Nothing here runs on a worker core or takes a lock a worker takes; the API reaches the rest
//! of the process only through [`AdminBackend`].

pub mod backend;
pub mod fake;
pub mod live;
mod listener;

use std::sync::Arc;

use bytes::Bytes;

pub use backend::AdminBackend;
pub use listener::{Admin, Extra, Ready};

/// The dashboard's entry point: the admin server hands it every request for `/` and under
/// `/dashboard/` (body collected, at most 1 MiB) and sends back what it answers, after adding
/// the security headers. The client's address is in the request's extensions as a
/// [`PeerAddr`]. The dashboard captures what it needs (the backend) when it is built.
pub type DashboardHandler =
    Arc<dyn Fn(http::Request<Bytes>) -> http::Response<Bytes> + Send + Sync>;

/// The TCP peer of an admin request (an extension on what [`DashboardHandler`] receives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// A dashboard that is not there: 404 for everything.
pub fn no_dashboard() -> DashboardHandler {
    Arc::new(|_req| {
        let mut resp = http::Response::new(Bytes::from_static(b"404 page not found\n"));
        *resp.status_mut() = http::StatusCode::NOT_FOUND;
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    })
}
