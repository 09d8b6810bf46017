//! Per-core counters (layer 1). Each worker core owns one [`CoreCounters`] block and is its only
//! writer; readers (tests, the admin thread) sum the blocks. No lock and no contended atomic
//! read-modify-write on the data path: a single writer can do a relaxed load and store, and each
//! block sits on its own cache lines so cores never false-share.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What a core counts.
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
    /// Requests with a credential that verified.
    TokensAccepted,
    /// Requests with a credential that failed verification.
    TokensRejected,
    /// 402 challenges minted.
    ChallengesMinted,
    /// 503s because the bridge queue was full or timed out.
    BridgeUnavailable,
    /// Upstream connect, write or read failures (each a 502).
    UpstreamErrors,
    /// Responses by status class.
    Status2xx,
    Status3xx,
    Status4xx,
    Status5xx,
    /// Credentials accepted from the per-core verification cache.
    TokenCacheHits,
    /// Requests a rate limit let through (services with rules only).
    RateLimitAllowed,
    /// Requests a rate limit denied (429).
    RateLimited,
    /// TLS handshakes that failed or timed out (the connection was closed).
    TlsHandshakeFailures,
    /// Connections from trusted proxies closed for a missing or malformed PROXY header.
    ProxyHeaderRejected,
    /// Connection tasks that panicked (only that connection was closed).
    ConnectionPanics,
}

const COUNTERS: usize = Counter::ConnectionPanics as usize + 1;

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
        let slot = &self.slots[c as usize];
        slot.store(
            slot.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Subtracts one (for gauges). Only the owning core may call this.
    #[inline]
    pub fn decr(&self, c: Counter) {
        let slot = &self.slots[c as usize];
        slot.store(
            slot.load(Ordering::Relaxed).wrapping_sub(1),
            Ordering::Relaxed,
        );
    }

    /// Reads a counter (any thread).
    pub fn get(&self, c: Counter) -> u64 {
        self.slots[c as usize].load(Ordering::Relaxed)
    }

    /// Counts a response status by class.
    #[inline]
    pub fn status(&self, status: u16) {
        let c = match status {
            200..=299 => Counter::Status2xx,
            300..=399 => Counter::Status3xx,
            400..=499 => Counter::Status4xx,
            _ => Counter::Status5xx,
        };
        self.incr(c);
    }
}

/// The counters of every core, shared read-only between threads.
#[derive(Debug, Clone)]
pub struct Metrics {
    cores: Arc<[CoreCounters]>,
}

impl Metrics {
    /// One block per core.
    pub fn new(cores: usize) -> Self {
        Self {
            cores: (0..cores).map(|_| CoreCounters::default()).collect(),
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
    }
}
