//! The routing table: services in config order with their upstream addresses resolved at load
//! time (never on a worker core), and the connection limits. Immutable once built; a core swaps
//! its whole `Arc<Routes>` on reload, so requests in flight keep the snapshot they started with.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, IpNet, RateLimitRule, Service};
use crate::l402::{ChallengeShape, UpstreamAuthorization};
use crate::metrics::{Metrics, RuleStats, ServiceBlock, ServiceStats};
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
    /// How long an idle upstream connection stays pooled (zero: none is pooled).
    pub upstream_idle_timeout: Duration,
    /// Idle upstream connections kept per core (all upstreams).
    pub upstream_max_idle: usize,
    /// Downstream HTTP/2 limits (`http2:`).
    pub http2: crate::config::Http2,
}

/// A configured timeout of zero means none (as in Go); the data path always runs a timer, so it
/// gets one that never fires in practice (monoio's timer wheel spans about two years).
fn or_forever(d: Duration) -> Duration {
    if d.is_zero() {
        Duration::from_secs(30 * 24 * 3600)
    } else {
        d
    }
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
    /// The dynamic pricer (`dynamicprice.enabled`), asked through the bridge.
    pub pricer: Option<Arc<lnd_bridge::PricerTarget>>,
    /// `dynamicprice.metered`: the response tail kept for `ReportUsage` (`usagetailbytes`).
    pub metered_tail: Option<usize>,
    /// A dynamic pricer or the built-in meter reads the request body's first bytes.
    pub reads_body: bool,
    /// The service's counters (unbound until [`Routes::bind_metrics`]).
    pub stats: Arc<ServiceStats>,
    /// The counters of each of `service.rate_limits`, in the same order (empty until bound).
    pub rule_stats: Arc<[Arc<RuleStats>]>,
    /// `hostregexp` matches every host (`.*`, the usual value): no regex search per request.
    host_any: bool,
    /// No `pathregexp`, or one that matches every path.
    path_any: bool,
}

impl Route {
    /// The block of this service's counters that `core` writes: no lookup, no lock.
    #[inline]
    pub fn counters(&self, core: usize) -> &ServiceBlock {
        self.stats.core(core)
    }
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
    /// The `/.well-known/l402.json` discovery document (services, prices, caveats), rendered once
    /// per snapshot.
    pub discovery: Arc<str>,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<IpNet>,
    /// Connections from trusted proxies open with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// Peers answered with 403 before anything else.
    pub blocklist: Vec<IpNet>,
    /// The counters of each of `challenge_rate_limits`, in the same order (empty until bound).
    pub challenge_rule_stats: Arc<[Arc<RuleStats>]>,
    /// The Payment scheme's realm and network, when `enablempp` is on.
    pub payment: Option<super::payment::PaymentSettings>,
    /// The static site that answers requests no service matches (`servestatic`).
    pub statics: Option<Arc<super::statics::Site>>,
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

/// IPv4-mapped IPv6 counts as IPv4.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The path of the discovery document.
pub const DISCOVERY_PATH: &[u8] = b"/.well-known/l402.json";

/// The L402 discovery document: what each service costs and which caveats its tokens carry, so
/// a client can see the price before it asks for a challenge. Never payment-gated.
fn discovery_document(routes: &[Route], mpp: Option<&crate::config::Mpp>) -> String {
    let services: Vec<serde_json::Value> = routes
        .iter()
        .map(|r| {
            let s = &r.service;
            let auth = match s.auth {
                crate::config::Auth::On => "l402".to_string(),
                crate::config::Auth::Off => "off".to_string(),
                crate::config::Auth::Freebie(n) => format!("freebie {n}"),
            };
            // Each service's accepted credentials, as its 402 offers them.
            let mut schemes = Vec::new();
            if s.schemes.l402 || mpp.is_none() {
                schemes.extend(["L402", "LSAT"]);
            }
            if s.schemes.payment && mpp.is_some() {
                schemes.push("Payment/charge");
                if mpp.is_some_and(|m| m.sessions.is_some()) {
                    schemes.push("Payment/session");
                }
            }
            serde_json::json!({
                "name": s.name,
                "schemes": schemes,
                "host_pattern": s.host_regexp.as_str(),
                "path_pattern": s.path_regexp.as_ref().map(|p| p.as_str()),
                "auth": auth,
                // A dynamically priced service has no fixed price to show.
                "price_sats": s.dynamic_price.is_none().then_some(s.price),
                "dynamic_price": s.dynamic_price.is_some(),
                "timeout_seconds": s.timeout,
                "caveats": {
                    // Dynamic pricing sells one path per token (`<name><path>:0`).
                    "services": match s.dynamic_price {
                        Some(_) => format!("{}<path>:0", s.name),
                        None => format!("{}:0", s.name),
                    },
                    "capabilities": s.capabilities,
                    "constraints": s.constraints.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                },
            })
        })
        .collect();
    serde_json::json!({
        "version": "0",
        "schemes": if mpp.is_some() { vec!["L402", "LSAT", "Payment"] } else { vec!["L402", "LSAT"] },
        "services": services,
    })
    .to_string()
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
                let pricer = service.dynamic_price.as_ref().map(|d| {
                    Arc::new(lnd_bridge::PricerTarget {
                        address: d.grpc_address.clone(),
                        insecure: d.insecure,
                        tls_cert_path: d.tls_cert_path.clone(),
                    })
                });
                let metered_tail = service
                    .dynamic_price
                    .as_ref()
                    .filter(|d| d.metered)
                    .map(|d| d.usage_tail_bytes as usize)
                    .or(service.meter.as_ref().map(|_| super::bundles::TAIL_BYTES));
                Ok(Route {
                    index,
                    metered_tail,
                    reads_body: pricer.is_some() || service.meter.is_some(),
                    host_any: matches_everything(&service.host_regexp),
                    path_any: service.path_regexp.as_ref().is_none_or(matches_everything),
                    service,
                    upstream,
                    upstream_tls,
                    pricer,
                    stats: Arc::default(),
                    rule_stats: Arc::new([]),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let discovery = discovery_document(&routes, config.authenticator.mpp.as_ref()).into();
        Ok(Self {
            routes,
            limits: Limits {
                max_header_bytes: config.max_header_bytes,
                max_body_bytes: config.max_body_bytes,
                idle_timeout: or_forever(config.idle_timeout),
                read_timeout: or_forever(config.read_timeout),
                write_timeout: or_forever(config.write_timeout),
                upstream_timeout: config.upstream_timeout,
                upstream_idle_timeout: config.upstream_idle_timeout,
                upstream_max_idle: config.upstream_max_idle,
                http2: config.http2,
            },
            challenge_shape: config.challenge_shape,
            upstream_authorization: config.upstream_authorization,
            challenge_rate_limits: config.challenge_rate_limits.clone(),
            strict_verify: config.strict_verify,
            blocklist: config.blocklist.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
            proxy_protocol: config.proxy_protocol,
            discovery,
            challenge_rule_stats: Arc::new([]),
            payment: config
                .authenticator
                .mpp
                .as_ref()
                .map(|m| super::payment::PaymentSettings {
                    realm: m.realm.clone(),
                    network: format!("{:?}", config.authenticator.network).to_ascii_lowercase(),
                    bridge_network: config.authenticator.network.to_bridge(),
                    sessions: m.sessions,
                }),
            statics: config
                .static_root
                .as_deref()
                .map(|root| Arc::new(super::statics::Site::new(root))),
        })
    }

    /// This snapshot with every route's counters taken from `metrics`' registry (by service
    /// name, and by service and path pattern for rate-limit rules). Call on the main thread
    /// before handing the snapshot to the cores: it locks the registry.
    pub fn bind_metrics(&self, metrics: &Metrics) -> Routes {
        let pattern = |r: &RateLimitRule| {
            r.path_regexp
                .as_ref()
                .map_or(String::new(), |p| p.as_str().to_owned())
        };
        let mut bound = self.clone();
        for route in &mut bound.routes {
            let name = route.service.name.as_str();
            route.stats = metrics.service(name);
            route.rule_stats = route
                .service
                .rate_limits
                .iter()
                .map(|r| metrics.rule(Some(name), &pattern(r)))
                .collect();
        }
        bound.challenge_rule_stats = self
            .challenge_rate_limits
            .iter()
            .map(|r| metrics.rule(None, &pattern(r)))
            .collect();
        bound
    }

    /// The client behind `peer`: when `peer` is a trusted proxy, the rightmost address in
    /// `X-Forwarded-For` that is not itself trusted (a client can put anything on the left, so
    /// only what trusted hops appended counts), else `peer`.
    pub fn client_ip(&self, peer: IpAddr, head: &super::h1::Head) -> IpAddr {
        let trusted = |ip: IpAddr| self.trusted(ip);
        if self.trusted_proxies.is_empty() || !trusted(peer) {
            return peer;
        }
        let mut hops: Vec<&[u8]> = Vec::new();
        for (_, value) in head
            .fields()
            .filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
        {
            hops.extend(value.split(|&b| b == b','));
        }
        let mut client = peer;
        for hop in hops.iter().rev() {
            let parsed = std::str::from_utf8(super::h1::trim(hop))
                .ok()
                .and_then(|s| s.parse::<IpAddr>().ok());
            let Some(ip) = parsed else { break };
            client = ip;
            if !trusted(ip) {
                break;
            }
        }
        client
    }

    /// Whether `ip` is a trusted proxy (IPv4-mapped IPv6 counts as IPv4).
    pub fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(unmap(ip)))
    }

    /// Whether a connection from `peer` must open with a PROXY protocol header.
    pub fn expects_proxy_header(&self, peer: IpAddr) -> bool {
        self.proxy_protocol && self.trusted(peer)
    }

    /// Whether `ip` is in the blocklist (IPv4-mapped IPv6 counts as IPv4).
    pub fn blocked(&self, ip: IpAddr) -> bool {
        self.blocklist.iter().any(|net| net.contains(unmap(ip)))
    }

    /// The first service whose `hostregexp` matches `host` and whose optional `pathregexp`
    /// matches `path`, as Go aperture matches them.
    pub fn find(&self, host: &str, path: &str) -> Option<&Route> {
        if is_admin_path(path) {
            return None;
        }
        self.routes.iter().find(|r| {
            (r.host_any || r.service.host_regexp.is_match(host))
                && (r.path_any
                    || r.service
                        .path_regexp
                        .as_ref()
                        .is_none_or(|p| p.is_match(path)))
        })
    }
}

/// The admin API's paths (REST and gRPC): served on the admin listener only, never proxied nor
/// answered from the static site on the data path (a 404 there).
pub fn is_admin_path(path: &str) -> bool {
    path.starts_with("/api/admin/") || path.starts_with("/adminrpc.Admin/")
}

/// Whether `re` matches every haystack, so routing can skip the search (about 200 instructions
/// each, two or three per request with `.*` host patterns). True when the pattern has no
/// assertion (`^`, `$`, and anything escaped, which covers `\b`, `\A`, `\z`, `\<`) and matches
/// the empty string: an unanchored search then matches the empty string at offset 0 of any input.
fn matches_everything(re: &regex::Regex) -> bool {
    let pattern = re.as_str();
    !pattern.contains(['^', '$', '\\']) && re.is_match("")
}

#[cfg(test)]
mod tests {
    use super::matches_everything;

    #[test]
    fn only_patterns_that_match_any_input_skip_the_search() {
        let any = |p: &str| matches_everything(&regex::Regex::new(p).unwrap());
        for p in [".*", "", "(.*)", "a*", "x|"] {
            assert!(any(p), "{p}");
        }
        // Anchored, escaped or non-empty patterns still run the regex.
        for p in ["^.*$", "^$", "api", r"\b", r".*\.com", "^/free", ".+"] {
            assert!(!any(p), "{p}");
        }
        // The shortcut agrees with the search on odd inputs.
        let re = regex::Regex::new(".*").unwrap();
        for h in ["", "\n", "a\nb", "\u{0}"] {
            assert!(re.is_match(h));
        }
    }
}
