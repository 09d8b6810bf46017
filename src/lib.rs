//! aperture: an L402 (Lightning HTTP 402) reverse proxy on an io_uring thread-per-core runtime.
//!
//! The crate is layered; a lower layer never imports a higher one:
//! - layer 0, pure (no I/O, no threads, no clock reads): [`l402`], [`mpp`], [`ratelimit`],
//!   [`usage`] (the built-in meter's accounting), [`error`];
//! - layer 1: [`config`], [`store`], [`fleet`] (fleet-wide rate limits: the Redis thread), [`metrics`], [`exposition`] (the Prometheus
//!   text format), [`admin`] (the std-only metrics listener), [`logging`] (text or JSON lines),
//!   [`systemd`] (readiness notifications), [`acme`] (autocert: the ACME client on its own
//!   thread, the certificate resolver the cores read);
//! - layer 2, the data path on monoio: [`proxy`];
//! - layer 3: [`runtime`] (pinned worker threads, listeners, control inboxes).
//!
//! [`cli`] and [`client`] serve the binary (`main.rs` is wiring only); [`origin`] is the built-in
//! demo upstream that `--dev` proxies.

pub mod error;
pub mod l402;
pub mod mpp;
pub mod ratelimit;
pub mod usage;

pub mod acme;
pub mod admin;
pub mod config;
pub mod exposition;
pub mod fleet;
pub mod logging;
pub mod metrics;
pub mod store;
pub mod systemd;
pub mod tls;
pub mod upstream_tls;

pub mod proxy;

pub mod runtime;

pub mod cli;
pub mod client;
pub mod origin;
