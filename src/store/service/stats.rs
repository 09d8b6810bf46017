//! The store thread's counters ([`StoreStats`]) and their Prometheus rendering
//! ([`StoreHandle::render_metrics`]).

use std::sync::atomic::{AtomicU64, Ordering};

use super::StoreHandle;

/// Counters for logs, metrics and tests; every field only grows except `up` and `pending`.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub challenges_recorded: AtomicU64,
    /// Challenge records dropped because the channel was full or the store stayed down.
    pub dropped: AtomicU64,
    pub settlements_recorded: AtomicU64,
    pub batches_committed: AtomicU64,
    pub write_errors: AtomicU64,
    pub poll_errors: AtomicU64,
    pub revocations_published: AtomicU64,
    /// 1 while the last database call succeeded.
    pub up: AtomicU64,
    /// Payment charges claimed (first use) and refused as replays.
    pub charges_claimed: AtomicU64,
    pub charges_replayed: AtomicU64,
    /// Charge claims the database could not answer (each a 503).
    pub claim_errors: AtomicU64,
    /// Payment sessions opened, closed (by the client, the idle sweep or a force close), and
    /// top-ups credited.
    pub sessions_opened: AtomicU64,
    pub sessions_closed: AtomicU64,
    pub topups_applied: AtomicU64,
    /// Session debits (settles) written.
    pub settles_recorded: AtomicU64,
    /// Session debits not queued (channel full) or lost in an outage.
    pub settles_dropped: AtomicU64,
    /// Session calls the database could not answer.
    pub session_errors: AtomicU64,
    /// Refund attempts by outcome; `refunds_pending` counts closes answered before the
    /// refund's outcome was known.
    pub refunds_succeeded: AtomicU64,
    pub refunds_failed: AtomicU64,
    pub refunds_skipped: AtomicU64,
    pub refunds_pending: AtomicU64,
    /// Metered usage rows written: reports kept undelivered, and kept ones deleted once a
    /// replay delivered them.
    pub usage_recorded: AtomicU64,
}

impl StoreHandle {
    /// Appends the store's Prometheus metrics (text format) to `out`.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let s = &self.stats;
        let rows: [(&str, &str, &AtomicU64, &str); 16] = [
            (
                "aperture_store_up",
                "gauge",
                &s.up,
                "1 while the token database answers",
            ),
            (
                "aperture_store_challenges_recorded_total",
                "counter",
                &s.challenges_recorded,
                "Minted challenges written to the ledger",
            ),
            (
                "aperture_store_records_dropped_total",
                "counter",
                &s.dropped,
                "Ledger writes dropped (store behind or down)",
            ),
            (
                "aperture_store_settlements_recorded_total",
                "counter",
                &s.settlements_recorded,
                "Settlement events written to the ledger",
            ),
            (
                "aperture_store_batches_total",
                "counter",
                &s.batches_committed,
                "Write transactions committed",
            ),
            (
                "aperture_store_write_errors_total",
                "counter",
                &s.write_errors,
                "Failed write transactions",
            ),
            (
                "aperture_store_poll_errors_total",
                "counter",
                &s.poll_errors,
                "Failed reads of the revocations table",
            ),
            (
                "aperture_store_revocations_published_total",
                "counter",
                &s.revocations_published,
                "Revocations sent to the worker cores",
            ),
            (
                "aperture_mpp_charges_claimed_total",
                "counter",
                &s.charges_claimed,
                "Payment charge credentials used for the first time (claimed durably before forwarding)",
            ),
            (
                "aperture_mpp_charges_replayed_total",
                "counter",
                &s.charges_replayed,
                "Payment charge credentials refused as already used",
            ),
            (
                "aperture_mpp_claim_errors_total",
                "counter",
                &s.claim_errors,
                "Payment charge claims the database could not answer (each a 503)",
            ),
            (
                "aperture_mpp_sessions_opened_total",
                "counter",
                &s.sessions_opened,
                "Payment sessions opened",
            ),
            (
                "aperture_mpp_sessions_closed_total",
                "counter",
                &s.sessions_closed,
                "Payment sessions closed (by the client, idle or forced)",
            ),
            (
                "aperture_mpp_topups_total",
                "counter",
                &s.topups_applied,
                "Payment session top-ups credited",
            ),
            (
                "aperture_mpp_session_errors_total",
                "counter",
                &s.session_errors,
                "Payment session calls the database could not answer",
            ),
            (
                "aperture_mpp_session_settles_dropped_total",
                "counter",
                &s.settles_dropped,
                "Payment session debits not written (store queue full or down)",
            ),
        ];
        for (name, kind, v, help) in rows {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = write!(
            out,
            "# HELP aperture_mpp_refunds_total Payment session refunds by outcome (failed: per \
             attempt; pending: a close answered before its refund was paid)\n\
             # TYPE aperture_mpp_refunds_total counter\n"
        );
        for (status, v) in [
            ("succeeded", &s.refunds_succeeded),
            ("failed", &s.refunds_failed),
            ("skipped", &s.refunds_skipped),
            ("pending", &s.refunds_pending),
        ] {
            let _ = writeln!(
                out,
                "aperture_mpp_refunds_total{{status=\"{status}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_metrics_are_rendered() {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let handle = StoreHandle {
            tx,
            stats: Default::default(),
            revoked: Default::default(),
        };
        handle.stats.refunds_failed.fetch_add(2, Ordering::Relaxed);
        handle.stats.sessions_opened.fetch_add(1, Ordering::Relaxed);
        let mut out = String::new();
        handle.render_metrics(&mut out);
        for line in [
            "aperture_mpp_sessions_opened_total 1\n",
            "aperture_mpp_sessions_closed_total 0\n",
            "aperture_mpp_topups_total 0\n",
            "# TYPE aperture_mpp_refunds_total counter\n",
            "aperture_mpp_refunds_total{status=\"failed\"} 2\n",
            "aperture_mpp_refunds_total{status=\"succeeded\"} 0\n",
            "aperture_mpp_refunds_total{status=\"skipped\"} 0\n",
            "aperture_store_up 0\n",
        ] {
            assert!(out.contains(line), "{line} missing from\n{out}");
        }
    }
}
