//! The bridge's own counters for metrics: invoice-call latency and failures, written by the
//! bridge's tokio thread only (relaxed atomics, never touched by a worker core), read by anyone
//! as a plain [`BridgeStats`] snapshot. Owns nothing else; must not render any text format.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::protocol::BackendStats;

/// Upper bounds of the invoice latency buckets, in microseconds: 1 ms to the 5 s default call
/// deadline; slower calls land in the overflow bucket only.
pub const INVOICE_LATENCY_BOUNDS_US: [u64; 12] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000,
];
const BUCKETS: usize = INVOICE_LATENCY_BOUNDS_US.len() + 1;

/// Invoice calls (`AddInvoice` or the dev backend's signing), from queued to answered.
#[derive(Debug)]
pub(crate) struct InvoiceStats {
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
    failures: AtomicU64,
}

impl Default for InvoiceStats {
    fn default() -> Self {
        InvoiceStats {
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
            sum_us: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }
}

impl InvoiceStats {
    /// Records one finished call (failed ones too: a timeout shows as a slow call).
    pub(crate) fn record(&self, took: Duration, ok: bool) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let i = INVOICE_LATENCY_BOUNDS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(INVOICE_LATENCY_BOUNDS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        if !ok {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A snapshot of the bridge for metrics; plain values only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeStats {
    /// Calls queued or running now.
    pub in_flight: usize,
    /// Most calls in flight before new ones are refused.
    pub capacity: usize,
    /// The bucket bounds of `invoice_latency_buckets`, in microseconds.
    pub invoice_latency_bounds_us: &'static [u64],
    /// Invoice calls per latency bucket (not cumulative; the last is past every bound).
    pub invoice_latency_buckets: Vec<u64>,
    /// Sum of the invoice calls' latencies, in microseconds.
    pub invoice_latency_sum_us: u64,
    /// Invoice calls that failed (backend error or deadline).
    pub invoice_failures: u64,
    /// The backend's connection state.
    pub backend: BackendStats,
    /// Metered usage reports (`ReportUsage`).
    pub usage: crate::UsageStats,
}

impl BridgeStats {
    pub(crate) fn new(
        invoices: &InvoiceStats,
        in_flight: usize,
        capacity: usize,
        backend: BackendStats,
        usage: crate::UsageStats,
    ) -> Self {
        BridgeStats {
            in_flight,
            capacity,
            invoice_latency_bounds_us: &INVOICE_LATENCY_BOUNDS_US,
            invoice_latency_buckets: invoices
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            invoice_latency_sum_us: invoices.sum_us.load(Ordering::Relaxed),
            invoice_failures: invoices.failures.load(Ordering::Relaxed),
            backend,
            usage,
        }
    }

    /// Invoice calls finished.
    pub fn invoices(&self) -> u64 {
        self.invoice_latency_buckets.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_by_upper_bound() {
        let s = InvoiceStats::default();
        s.record(Duration::from_millis(1), true);
        s.record(Duration::from_micros(1_001), false);
        s.record(Duration::from_secs(9), false);
        let snap = BridgeStats::new(&s, 2, 8, BackendStats::default(), Default::default());
        assert_eq!(snap.invoice_latency_buckets.len(), BUCKETS);
        assert_eq!(snap.invoice_latency_buckets[0], 1);
        assert_eq!(snap.invoice_latency_buckets[1], 1);
        assert_eq!(snap.invoice_latency_buckets[BUCKETS - 1], 1);
        assert_eq!(snap.invoices(), 3);
        assert_eq!(snap.invoice_failures, 2);
        assert_eq!(snap.invoice_latency_sum_us, 9_002_001);
        assert_eq!((snap.in_flight, snap.capacity), (2, 8));
    }
}
