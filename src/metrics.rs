//! Per-core counters (layer 1). Each worker core owns one [`CoreCounters`] block and is its only
//! writer; readers (tests, the admin thread) sum the blocks. No lock and no contended atomic
//! read-modify-write on the data path: a single writer can do a relaxed load and store, and each
//! block sits on its own cache lines so cores never false-share.
//!
//! Per-service counters ([`ServiceStats`]) and per-rate-limit-rule counters ([`RuleStats`]) follow
//! the same rule: one cache-aligned block per core. They live in a registry keyed by service name
//! (and rule pattern) that only grows. A routing snapshot is bound to it when it is built, on the
//! main thread (`Routes::bind_metrics`): each route then holds `Arc`s to its blocks, so the data
//! path indexes them by core id with no lookup, no hashing, no lock and no allocation. A service
//! that a reload removes or renames keeps its series at their last values (a counter never goes
//! back); configuring the name again resumes them. The registry lock is taken only at bind time
//! and by the admin thread while it renders. Must not: do I/O, read clocks, or import the proxy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::l402::{CaveatError, VerifyError};

/// What a core counts, summed over the cores (or per core) and not by service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    /// Connections accepted.
    ConnectionsAccepted,
    /// Connections open now (incremented and decremented).
    ConnectionsActive,
    /// Requests whose head was parsed.
    Requests,
    /// Requests forwarded upstream (paid or free).
    Forwarded,
    /// 503s because the bridge queue was full or timed out.
    BridgeUnavailable,
    /// Upstream failures (each a 502), all services together, for in-process readers; the
    /// exposition has them per service (`ServiceBlock::upstream_error`).
    UpstreamErrors,
    /// Responses by status class.
    Status2xx,
    Status3xx,
    Status4xx,
    Status5xx,
    /// Credentials accepted from the per-core verification cache.
    TokenCacheHits,
    /// TLS handshakes that failed or timed out (the connection was closed).
    TlsHandshakeFailures,
    /// Connections from trusted proxies closed for a missing or malformed PROXY header.
    ProxyHeaderRejected,
    /// Requests whose client went away (closed, reset the stream) while the upstream worked:
    /// the upstream exchange was dropped.
    ClientAborts,
    /// HTTP/2 streams refused (REFUSED_STREAM) because the connection already had
    /// `maxconcurrentstreams` streams' worth of work alive.
    H2StreamsRefused,
    /// HTTP/2 connections closed with GOAWAY ENHANCE_YOUR_CALM for resetting faster than their
    /// work completed.
    H2Calmed,
    /// Idle upstream connections closed by the pool (idle timeout, cap, or found closed).
    UpstreamPoolEvictions,
    /// Payment (MPP) charge challenges offered in 402s.
    PaymentChallenges,
    /// Payment credentials refused (malformed, bad id, expired, wrong preimage, underpaid,
    /// already used).
    PaymentRejected,
    /// Connection tasks that panicked (only that connection was closed).
    ConnectionPanics,
}

const COUNTERS: usize = Counter::ConnectionPanics as usize + 1;

/// Adds `n` to a slot that only the calling thread writes (no read-modify-write instruction).
#[inline]
fn bump(slot: &AtomicU64, n: u64) {
    slot.store(
        slot.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// One core's counters, padded to whole cache lines.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct CoreCounters {
    slots: [AtomicU64; COUNTERS],
}

impl CoreCounters {
    /// Adds one. Only the owning core may call this (single writer, so no RMW instruction).
    #[inline]
    pub fn incr(&self, c: Counter) {
        self.add(c, 1);
    }

    /// Adds `n` (wrapping). Only the owning core may call this.
    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        bump(&self.slots[c as usize], n);
    }

    /// Subtracts one (for gauges). Only the owning core may call this.
    #[inline]
    pub fn decr(&self, c: Counter) {
        bump(&self.slots[c as usize], u64::MAX);
    }

    /// Reads a counter (any thread).
    pub fn get(&self, c: Counter) -> u64 {
        self.slots[c as usize].load(Ordering::Relaxed)
    }

    /// Counts a response status by class.
    #[inline]
    pub fn status(&self, status: u16) {
        const BY_CLASS: [Counter; 4] = [
            Counter::Status2xx,
            Counter::Status3xx,
            Counter::Status4xx,
            Counter::Status5xx,
        ];
        self.incr(BY_CLASS[class(status)]);
    }
}

/// Status classes, in the order [`class`] indexes them.
pub const CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

/// The index in [`CLASSES`] of `status` (1xx and anything odd count as 5xx: we never answer
/// them ourselves, so seeing one means something went wrong).
#[inline]
pub fn class(status: u16) -> usize {
    match status {
        200..=299 => 0,
        300..=399 => 1,
        400..=499 => 2,
        _ => 3,
    }
}

/// Why a credential was rejected, as the `reason` label of `aperture_tokens_rejected_total`.
/// Mirrors [`VerifyError`] one to one (same labels as `VerifyError::reason`), plus the two
/// rejections decided after verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Reject {
    Malformed,
    BadIdentifier,
    ThirdPartyCaveat,
    BadPreimage,
    BadSignature,
    WrongService,
    Expired,
    Capability,
    WidenedCaveat,
    BadCaveat,
    PreimageCaveat,
    /// The token id was revoked (`aperture token revoke`).
    Revoked,
    /// `strictverify`: the invoice is not known settled.
    NotSettled,
}

/// Number of [`Reject`] reasons.
pub const REJECTS: usize = Reject::NotSettled as usize + 1;

impl Reject {
    /// Every reason, in label order.
    pub const ALL: [Reject; REJECTS] = [
        Reject::Malformed,
        Reject::BadIdentifier,
        Reject::ThirdPartyCaveat,
        Reject::BadPreimage,
        Reject::BadSignature,
        Reject::WrongService,
        Reject::Expired,
        Reject::Capability,
        Reject::WidenedCaveat,
        Reject::BadCaveat,
        Reject::PreimageCaveat,
        Reject::Revoked,
        Reject::NotSettled,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::BadIdentifier => "bad_identifier",
            Reject::ThirdPartyCaveat => "third_party_caveat",
            Reject::BadPreimage => "bad_preimage",
            Reject::BadSignature => "bad_signature",
            Reject::WrongService => "wrong_service",
            Reject::Expired => "expired",
            Reject::Capability => "capability",
            Reject::WidenedCaveat => "widened_caveat",
            Reject::BadCaveat => "bad_caveat",
            Reject::PreimageCaveat => "preimage_caveat",
            Reject::Revoked => "revoked",
            Reject::NotSettled => "not_settled",
        }
    }
}

impl From<&VerifyError> for Reject {
    fn from(e: &VerifyError) -> Self {
        match e {
            VerifyError::Malformed(_) => Reject::Malformed,
            VerifyError::BadIdentifier(_) => Reject::BadIdentifier,
            VerifyError::ThirdPartyCaveat => Reject::ThirdPartyCaveat,
            VerifyError::BadPreimage => Reject::BadPreimage,
            VerifyError::BadSignature => Reject::BadSignature,
            VerifyError::Caveat(CaveatError::WrongService) => Reject::WrongService,
            VerifyError::Caveat(CaveatError::Expired) => Reject::Expired,
            VerifyError::Caveat(CaveatError::Capability) => Reject::Capability,
            VerifyError::Caveat(CaveatError::Widened(_)) => Reject::WidenedCaveat,
            VerifyError::Caveat(CaveatError::Malformed(_)) => Reject::BadCaveat,
            VerifyError::Caveat(CaveatError::PreimageMismatch) => Reject::PreimageCaveat,
        }
    }
}

/// Upper bounds of the latency histogram buckets, in microseconds (rendered in seconds as
/// `le`): 0.5 ms to 10 s, roughly ×2.5 apart; slower observations land in `+Inf` only.
pub const LATENCY_BOUNDS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];
const BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// One core's latency histogram: per-bucket (not cumulative) counts, the last one past every
/// bound, and the sum in microseconds. Single writer, like every block here.
#[derive(Debug)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
}

impl Histogram {
    const fn new() -> Self {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
            sum_us: AtomicU64::new(0),
        }
    }

    #[inline]
    fn observe(&self, us: u64) {
        // A short linear scan: 14 compares beat a binary search's branches at this size.
        let i = LATENCY_BOUNDS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        bump(&self.buckets[i], 1);
        bump(&self.sum_us, us);
    }
}

/// A histogram summed over the cores: per-bucket counts (not cumulative; the last is past every
/// bound) and the sum of the observations in microseconds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistogramSnapshot {
    /// Counts per bucket of [`LATENCY_BOUNDS_US`], then the overflow bucket.
    pub buckets: Vec<u64>,
    /// Sum of the observations, in microseconds.
    pub sum_us: u64,
}

impl HistogramSnapshot {
    /// How many observations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().fold(0, |a, &b| a.wrapping_add(b))
    }
}

/// One core's counters for one service.
#[repr(align(128))]
#[derive(Debug)]
pub struct ServiceBlock {
    classes: [AtomicU64; 4],
    minted: AtomicU64,
    accepted: AtomicU64,
    rejected: [AtomicU64; REJECTS],
    upstream_errors: AtomicU64,
    latency: Histogram,
    /// Rate-limit keys this core's limiter holds now, and has evicted so far (both stored whole).
    ratelimit_keys: AtomicU64,
    ratelimit_evictions: AtomicU64,
}

/// Where the counts of a route that was never bound to a registry go (a snapshot built for a
/// test and handed to the cores directly): written, never read.
static DETACHED: ServiceBlock = ServiceBlock::new();

impl ServiceBlock {
    const fn new() -> Self {
        ServiceBlock {
            classes: [const { AtomicU64::new(0) }; 4],
            minted: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            rejected: [const { AtomicU64::new(0) }; REJECTS],
            upstream_errors: AtomicU64::new(0),
            latency: Histogram::new(),
            ratelimit_keys: AtomicU64::new(0),
            ratelimit_evictions: AtomicU64::new(0),
        }
    }

    /// Counts a response to a request routed to this service, by status class.
    #[inline]
    pub fn status(&self, status: u16) {
        bump(&self.classes[class(status)], 1);
    }

    /// Counts a 402 challenge minted.
    #[inline]
    pub fn minted(&self) {
        bump(&self.minted, 1);
    }

    /// Counts a credential accepted.
    #[inline]
    pub fn accepted(&self) {
        bump(&self.accepted, 1);
    }

    /// Counts a credential rejected.
    #[inline]
    pub fn rejected(&self, why: Reject) {
        bump(&self.rejected[why as usize], 1);
    }

    /// Counts an upstream failure (a 502).
    #[inline]
    pub fn upstream_error(&self) {
        bump(&self.upstream_errors, 1);
    }

    /// Publishes this core's rate limiter for the service: keys held, keys evicted so far. The
    /// limiter keeps its evictions across reloads that keep the service, so this only goes back
    /// when the service was gone and came back (a counter reset to Prometheus).
    #[inline]
    pub fn ratelimit_occupancy(&self, keys: usize, evictions: u64) {
        self.ratelimit_keys.store(keys as u64, Ordering::Relaxed);
        self.ratelimit_evictions.store(evictions, Ordering::Relaxed);
    }

    /// Records how long the upstream took to answer with a response head.
    #[inline]
    pub fn upstream_latency(&self, took: Duration) {
        self.latency
            .observe(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }
}

/// One service's counters: one block per core.
#[derive(Debug, Default)]
pub struct ServiceStats {
    cores: Box<[ServiceBlock]>,
}

impl ServiceStats {
    fn new(cores: usize) -> Self {
        ServiceStats {
            cores: (0..cores).map(|_| ServiceBlock::new()).collect(),
        }
    }

    /// The block `core` writes (a shared sink when this is not bound to a registry).
    #[inline]
    pub fn core(&self, core: usize) -> &ServiceBlock {
        self.cores.get(core).unwrap_or(&DETACHED)
    }

    fn sum(&self, slot: impl Fn(&ServiceBlock) -> &AtomicU64) -> u64 {
        self.cores.iter().fold(0u64, |acc, b| {
            acc.wrapping_add(slot(b).load(Ordering::Relaxed))
        })
    }

    /// Responses by status class ([`CLASSES`] order), summed over the cores.
    pub fn classes(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.sum(|b| &b.classes[i]))
    }

    /// Challenges minted.
    pub fn minted(&self) -> u64 {
        self.sum(|b| &b.minted)
    }

    /// Credentials accepted.
    pub fn accepted(&self) -> u64 {
        self.sum(|b| &b.accepted)
    }

    /// Credentials rejected for `why`.
    pub fn rejected(&self, why: Reject) -> u64 {
        self.sum(|b| &b.rejected[why as usize])
    }

    /// Upstream failures.
    pub fn upstream_errors(&self) -> u64 {
        self.sum(|b| &b.upstream_errors)
    }

    /// Rate-limit keys held, over the cores.
    pub fn ratelimit_keys(&self) -> u64 {
        self.sum(|b| &b.ratelimit_keys)
    }

    /// Rate-limit keys evicted, over the cores.
    pub fn ratelimit_evictions(&self) -> u64 {
        self.sum(|b| &b.ratelimit_evictions)
    }

    /// The upstream latency histogram.
    pub fn upstream_latency(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: (0..BUCKETS)
                .map(|i| self.sum(|b| &b.latency.buckets[i]))
                .collect(),
            sum_us: self.sum(|b| &b.latency.sum_us),
        }
    }
}

/// One core's counters for one rate-limit rule.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct RuleBlock {
    allowed: AtomicU64,
    denied: AtomicU64,
}

impl RuleBlock {
    /// Counts a request this rule matched that every matching rule allowed.
    #[inline]
    pub fn allowed(&self) {
        bump(&self.allowed, 1);
    }

    /// Counts a request this rule matched that some matching rule denied.
    #[inline]
    pub fn denied(&self) {
        bump(&self.denied, 1);
    }
}

/// One rate-limit rule's counters (by service and path pattern): one block per core.
#[derive(Debug, Default)]
pub struct RuleStats {
    cores: Box<[RuleBlock]>,
}

impl RuleStats {
    /// The block `core` writes; `None` when this is not bound to a registry.
    #[inline]
    pub fn core(&self, core: usize) -> Option<&RuleBlock> {
        self.cores.get(core)
    }

    /// (allowed, denied), summed over the cores.
    pub fn totals(&self) -> (u64, u64) {
        self.cores.iter().fold((0u64, 0u64), |(a, d), b| {
            (
                a.wrapping_add(b.allowed.load(Ordering::Relaxed)),
                d.wrapping_add(b.denied.load(Ordering::Relaxed)),
            )
        })
    }
}

/// Which rule a [`RuleStats`] counts: a service's rule, or (`service: None`) one of the
/// `challengeratelimits`. Rules with the same pattern in one scope share their counters, as
/// they share their labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleKey {
    /// The service, or `None` for challenge minting.
    pub service: Option<String>,
    /// The rule's `pathregexp` (empty when it has none, as Go aperture labels it).
    pub pattern: String,
}

/// The grow-only registry of named series.
#[derive(Debug, Default)]
struct Registry {
    services: Vec<(String, Arc<ServiceStats>)>,
    rules: Vec<(RuleKey, Arc<RuleStats>)>,
}

/// The counters of every core, shared read-only between threads.
#[derive(Debug, Clone)]
pub struct Metrics {
    cores: Arc<[CoreCounters]>,
    registry: Arc<Mutex<Registry>>,
}

impl Metrics {
    /// One block per core.
    pub fn new(cores: usize) -> Self {
        Self {
            cores: (0..cores).map(|_| CoreCounters::default()).collect(),
            registry: Arc::default(),
        }
    }

    /// The block owned by `core`. Panics on an out-of-range index (a wiring bug, never input).
    pub fn core(&self, core: usize) -> &CoreCounters {
        &self.cores[core]
    }

    /// Number of cores.
    pub fn cores(&self) -> usize {
        self.cores.len()
    }

    /// One counter on each core.
    pub fn per_core(&self, c: Counter) -> Vec<u64> {
        self.cores.iter().map(|b| b.get(c)).collect()
    }

    /// One counter summed over the cores.
    pub fn total(&self, c: Counter) -> u64 {
        self.cores
            .iter()
            .fold(0u64, |acc, b| acc.wrapping_add(b.get(c)))
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // Nothing panics while holding it; if something did, the data is still consistent.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counters of service `name`, registered on first use. Call when building a routing
    /// snapshot, never on the data path (it locks and compares names).
    pub fn service(&self, name: &str) -> Arc<ServiceStats> {
        let mut reg = self.registry();
        if let Some((_, s)) = reg.services.iter().find(|(n, _)| n == name) {
            return s.clone();
        }
        let stats = Arc::new(ServiceStats::new(self.cores.len()));
        reg.services.push((name.to_owned(), stats.clone()));
        stats
    }

    /// The counters of a rate-limit rule, registered on first use (like [`Self::service`]).
    pub fn rule(&self, service: Option<&str>, pattern: &str) -> Arc<RuleStats> {
        let mut reg = self.registry();
        let found = reg
            .rules
            .iter()
            .find(|(k, _)| k.service.as_deref() == service && k.pattern == pattern);
        if let Some((_, r)) = found {
            return r.clone();
        }
        let stats = Arc::new(RuleStats {
            cores: (0..self.cores.len())
                .map(|_| RuleBlock::default())
                .collect(),
        });
        let key = RuleKey {
            service: service.map(str::to_owned),
            pattern: pattern.to_owned(),
        };
        reg.rules.push((key, stats.clone()));
        stats
    }

    /// Every service ever registered, in registration order.
    pub fn services(&self) -> Vec<(String, Arc<ServiceStats>)> {
        self.registry().services.clone()
    }

    /// Every rule ever registered, in registration order.
    pub fn rules(&self) -> Vec<(RuleKey, Arc<RuleStats>)> {
        self.registry().rules.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_core_blocks_sum() {
        let m = Metrics::new(2);
        m.core(0).incr(Counter::Requests);
        m.core(1).add(Counter::Requests, 2);
        m.core(1).incr(Counter::ConnectionsActive);
        m.core(1).decr(Counter::ConnectionsActive);
        m.core(0).status(402);
        assert_eq!(m.per_core(Counter::Requests), vec![1, 2]);
        assert_eq!(m.total(Counter::Requests), 3);
        assert_eq!(m.total(Counter::ConnectionsActive), 0);
        assert_eq!(m.total(Counter::Status4xx), 1);
        assert!(std::mem::align_of::<CoreCounters>() >= 128);
        assert!(std::mem::align_of::<ServiceBlock>() >= 128);
        assert!(std::mem::align_of::<RuleBlock>() >= 128);
    }

    #[test]
    fn registry_grows_and_hands_out_the_same_counters_by_name() {
        let m = Metrics::new(2);
        let a = m.service("a");
        a.core(0).status(200);
        a.core(1).status(402);
        a.core(1).status(101);
        a.core(0).minted();
        a.core(1).rejected(Reject::Expired);
        assert!(Arc::ptr_eq(&a, &m.service("a")));
        let b = m.service("b");
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(a.classes(), [1, 0, 1, 1]);
        assert_eq!((a.minted(), a.rejected(Reject::Expired)), (1, 1));
        assert_eq!(b.classes(), [0; 4]);
        let names: Vec<String> = m.services().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a", "b"]);

        let r = m.rule(Some("a"), "^/x");
        r.core(0).unwrap().allowed();
        r.core(1).unwrap().denied();
        assert!(Arc::ptr_eq(&r, &m.rule(Some("a"), "^/x")));
        assert!(!Arc::ptr_eq(&r, &m.rule(None, "^/x")));
        assert_eq!(r.totals(), (1, 1));
        assert_eq!(m.rules().len(), 2);
    }

    #[test]
    fn unbound_stats_count_nowhere_without_panicking() {
        let s = ServiceStats::default();
        s.core(7).status(200);
        s.core(7).upstream_latency(Duration::from_millis(1));
        assert_eq!(s.classes(), [0; 4]);
        assert!(RuleStats::default().core(0).is_none());
    }

    #[test]
    fn histogram_buckets_by_upper_bound() {
        let m = Metrics::new(2);
        let s = m.service("a");
        s.core(0).upstream_latency(Duration::from_micros(500)); // on a bound: that bucket
        s.core(1).upstream_latency(Duration::from_micros(501));
        s.core(1).upstream_latency(Duration::from_secs(60)); // past every bound
        let h = s.upstream_latency();
        assert_eq!(h.buckets.len(), LATENCY_BOUNDS_US.len() + 1);
        assert_eq!((h.buckets[0], h.buckets[1]), (1, 1));
        assert_eq!(h.buckets[LATENCY_BOUNDS_US.len()], 1);
        assert_eq!(h.count(), 3);
        assert_eq!(h.sum_us, 60_001_001);
        assert!(LATENCY_BOUNDS_US.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn reject_reasons_match_the_verifier_labels() {
        use crate::l402::{CredentialError, IdentifierError};
        let errors = [
            VerifyError::Malformed(CredentialError::MissingColon),
            VerifyError::BadIdentifier(IdentifierError::Version(9)),
            VerifyError::ThirdPartyCaveat,
            VerifyError::BadPreimage,
            VerifyError::BadSignature,
            VerifyError::Caveat(CaveatError::WrongService),
            VerifyError::Caveat(CaveatError::Expired),
            VerifyError::Caveat(CaveatError::Capability),
            VerifyError::Caveat(CaveatError::Widened("services")),
            VerifyError::Caveat(CaveatError::Malformed("timeout")),
            VerifyError::Caveat(CaveatError::PreimageMismatch),
        ];
        for e in &errors {
            assert_eq!(Reject::from(e).label(), e.reason(), "{e:?}");
        }
        for (i, r) in Reject::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        assert_eq!(Reject::Revoked.label(), "revoked");
    }
}
