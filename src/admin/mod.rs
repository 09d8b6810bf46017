//! The admin plane, off the worker cores by construction: one thread (`aperture-admin`) with a
//! current-thread tokio runtime serving the admin listener ([`server`]): the metrics and health
//! probes ([`probes`]), Go aperture's admin API (`adminrpc.Admin` over gRPC, [`grpc`], and its
//! REST mirror under `/api/admin/`, [`rest`], sharing [`api`]'s checks), guarded by the admin
//! macaroon ([`auth`]), and the dashboard's hook ([`DashboardHandler`]).
//!
//! The API depends only on [`AdminBackend`] ([`backend`]), which `main.rs` implements over the
//! store, the bridge and the reload path; [`fake::FakeBackend`] stands in for it in tests.
//! Nothing here runs on a worker core or takes a lock a worker takes.

pub mod api;
pub mod auth;
pub mod backend;
pub mod dashboard;
pub mod fake;
pub mod grpc;
pub mod live;
pub mod probes;
pub mod proto;
pub mod rest;
pub mod rfc3339;
pub mod server;

use std::sync::Arc;

use bytes::Bytes;

pub use auth::AdminKey;
pub use backend::AdminBackend;
pub use probes::{Extra, Ready};
pub use server::{Admin, AdminOptions, ApiOptions};

/// The dashboard's entry point: the admin server hands it every request for `/` and under
/// `/dashboard/` (body collected, at most [`server::MAX_BODY`]) and sends back what it answers,
/// after adding the security headers (a `Content-Security-Policy` it sets is kept). The
/// client's address is in the request's extensions as a [`PeerAddr`]. The dashboard captures
/// what it needs (the backend) when it is built.
pub type DashboardHandler =
    Arc<dyn Fn(http::Request<Bytes>) -> http::Response<Bytes> + Send + Sync>;

/// The TCP peer of an admin request (an extension on what [`DashboardHandler`] receives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// A dashboard that is not there: 404 for everything.
pub fn no_dashboard() -> DashboardHandler {
    Arc::new(|_req| probes::not_found())
}
