//! The one integration test binary (ripgrep's pattern): every suite is a module here.

mod admin;
mod cancel;
mod clients;
mod config;
mod echo_proto;
mod fleet;
mod grpc;
mod grpc_tonic;
mod h2_abuse;
mod h2_forward;
mod h2_tls;
mod https_upstream;
mod l402;
mod lnd;
mod payment;
mod pricing;
mod process;
mod proxy;
mod proxyproto;
mod ratelimit;
mod reload;
mod session;
mod static_files;
mod store;
mod support;
mod tls;
