//! The routing table: services in config order with their upstream addresses resolved at load
//! time (never on a worker core), and the connection limits. Immutable once built; a core swaps
//! its whole `Arc<Routes>` on reload, so requests in flight keep the snapshot they started with.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, IpNet, RateLimitRule, Service};
use crate::l402::{ChallengeShape, UpstreamAuthorization};
use crate::upstream_tls::{self, UpstreamTls};

/// Timeouts and size limits of the data path.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request head (431 beyond).
    pub max_header_bytes: usize,
    /// Largest request body (413 beyond).
    pub max_body_bytes: u64,
    /// Keep-alive idle time between requests.
    pub idle_timeout: Duration,
    /// Time to receive a request head once it started, and each body read.
    pub read_timeout: Duration,
    /// Rolling window for each write to the client and each read of a streamed response.
    pub write_timeout: Duration,
    /// Time to connect to an upstream and to receive its response head.
    pub upstream_timeout: Duration,
}

/// One service and where its upstream is.
#[derive(Debug, Clone)]
pub struct Route {
    /// Position in the routing table (identifies the service's limiter on every core).
    pub index: usize,
    /// The service as configured.
    pub service: Service,
    /// The resolved upstream address.
    pub upstream: SocketAddr,
    /// Client TLS settings when the protocol is `https` (built here, never on a core).
    pub upstream_tls: Option<Arc<UpstreamTls>>,
}

/// Services in match order plus the limits.
#[derive(Debug, Clone)]
pub struct Routes {
    /// Services in config order.
    pub routes: Vec<Route>,
    /// Limits for every connection.
    pub limits: Limits,
    /// Which `WWW-Authenticate` fields a 402 carries.
    pub challenge_shape: ChallengeShape,
    /// Which `Authorization` fields a paid request carries upstream.
    pub upstream_authorization: UpstreamAuthorization,
    /// Accept a token only when its invoice is known settled.
    pub strict_verify: bool,
    /// Rules on minting challenges, per client IP.
    pub challenge_rate_limits: Vec<RateLimitRule>,
    /// Peers answered with 403 before anything else.
    pub blocklist: Vec<IpNet>,
}

/// An upstream address that did not resolve.
#[derive(Debug, thiserror::Error)]
#[error("service {service:?}: cannot set up upstream {address:?}: {reason}")]
pub struct ResolveError {
    /// The service name.
    pub service: String,
    /// The configured address.
    pub address: String,
    /// Why.
    pub reason: String,
}

impl Routes {
    /// Builds the table, resolving every upstream address and building the `https` upstreams'
    /// TLS configs (a blocking DNS lookup and file reads: call this on the main or bridge thread,
    /// never on a worker core).
    pub fn resolve(config: &Config) -> Result<Self, ResolveError> {
        let routes = config
            .services
            .iter()
            .enumerate()
            .map(|(index, service)| {
                let fail = |reason: String| ResolveError {
                    service: service.name.clone(),
                    address: service.address.clone(),
                    reason,
                };
                let upstream = service
                    .address
                    .to_socket_addrs()
                    .map_err(|e| fail(e.to_string()))?
                    .next()
                    .ok_or_else(|| fail("no address".into()))?;
                let upstream_tls = upstream_tls::for_service(service)
                    .map_err(|e| fail(e.to_string()))?
                    .map(Arc::new);
                let mut service = service.clone();
                if config.authenticator.disable {
                    // `authenticator.disable` turns auth off everywhere, as in Go aperture.
                    service.auth = crate::config::Auth::Off;
                }
                Ok(Route {
                    index,
                    service,
                    upstream,
                    upstream_tls,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            routes,
            limits: Limits {
                max_header_bytes: config.max_header_bytes,
                max_body_bytes: config.max_body_bytes,
                idle_timeout: config.idle_timeout,
                read_timeout: config.read_timeout,
                write_timeout: config.write_timeout,
                upstream_timeout: config.upstream_timeout,
            },
            challenge_shape: config.challenge_shape,
            upstream_authorization: config.upstream_authorization,
            challenge_rate_limits: config.challenge_rate_limits.clone(),
            strict_verify: config.strict_verify,
            blocklist: config.blocklist.clone(),
        })
    }

    /// Whether `ip` is in the blocklist (IPv4-mapped IPv6 counts as IPv4).
    pub fn blocked(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        self.blocklist.iter().any(|net| net.contains(ip))
    }

    /// The first service whose `hostregexp` matches `host` and whose optional `pathregexp`
    /// matches `path`, as Go aperture matches them.
    pub fn find(&self, host: &str, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| {
            r.service.host_regexp.is_match(host)
                && r.service
                    .path_regexp
                    .as_ref()
                    .is_none_or(|p| p.is_match(path))
        })
    }
}
