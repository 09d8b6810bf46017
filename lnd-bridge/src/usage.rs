//! Delivery of metered usage reports (`ReportUsage`) off the data path: a worker core hands a
//! report over and goes on; here it is sent with Go aperture's schedule (up to 4 attempts, 0.5 s,
//! 1 s and 2 s apart, each within 30 s). Beyond Go, a report that cannot be delivered is handed
//! to the [`UsageSink`] (the token database), and so is every report still in flight when the
//! process stops ([`Usage::persist_unfinished`]), so no debit is lost across a restart; a
//! persisted report that a later replay delivers is forgotten through the sink.
//!
//! Owns the reports in flight (by id, so that a report taken at shutdown is not also delivered
//! or persisted twice) and the sink. Must not block: the sink only queues.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use crate::protocol::{UsageReport, UsageSink};

/// Pauses between attempts (Go's `reportUsageBackoff`); one attempt more than pauses.
pub const BACKOFF: [Duration; 3] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];
/// How long one attempt may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Counters of usage delivery.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UsageStats {
    /// Reports the pricer accepted.
    pub delivered: u64,
    /// Attempts that failed (each retried or given up).
    pub failed_attempts: u64,
    /// Reports handed to the sink undelivered.
    pub persisted: u64,
    /// Reports lost: undelivered with no sink to keep them.
    pub lost: u64,
}

#[derive(Default)]
pub(crate) struct Usage {
    sink: OnceLock<Arc<dyn UsageSink>>,
    in_flight: Mutex<HashMap<u64, UsageReport>>,
    next_id: AtomicU64,
    delivered: AtomicU64,
    failed_attempts: AtomicU64,
    persisted: AtomicU64,
    lost: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Whole inserts and removes only; a poisoned map is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Usage {
    /// Sets where undelivered reports go; false when one was set already.
    pub(crate) fn set_sink(&self, sink: Arc<dyn UsageSink>) -> bool {
        self.sink.set(sink).is_ok()
    }

    /// Takes `report` in; its id for [`deliver`].
    pub(crate) fn admit(&self, report: UsageReport) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.in_flight).insert(id, report);
        id
    }

    /// Gives up on report `id` (if it is still ours): to the sink.
    pub(crate) fn give_up(&self, id: u64) {
        if let Some(report) = lock(&self.in_flight).remove(&id) {
            self.keep(&report);
        }
    }

    /// Hands an undelivered report to the sink (a replayed one is already kept).
    pub(crate) fn keep(&self, report: &UsageReport) {
        if report.persisted_id.is_some() {
            return;
        }
        match self.sink.get() {
            Some(sink) => {
                self.persisted.fetch_add(1, Ordering::Relaxed);
                sink.undelivered(report);
            }
            None => {
                self.lost.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    service = %report.service_name,
                    token_id = %report.token_id,
                    "usage report dropped: the pricer did not take it and there is no store to keep it"
                );
            }
        }
    }

    /// Hands every report still in flight to the sink; their deliveries then stop. For
    /// shutdown, while the sink can still take them.
    pub(crate) fn persist_unfinished(&self) {
        let reports: Vec<UsageReport> = lock(&self.in_flight).drain().map(|(_, r)| r).collect();
        for report in &reports {
            self.keep(report);
        }
    }

    pub(crate) fn stats(&self) -> UsageStats {
        UsageStats {
            delivered: self.delivered.load(Ordering::Relaxed),
            failed_attempts: self.failed_attempts.load(Ordering::Relaxed),
            persisted: self.persisted.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
        }
    }

    fn current(&self, id: u64) -> Option<UsageReport> {
        lock(&self.in_flight).get(&id).cloned()
    }
}

/// Delivers report `id` with Go's schedule; runs on the bridge runtime.
pub(crate) async fn deliver(usage: &Usage, pricers: &crate::pricer::Pricers, id: u64) {
    for attempt in 0..=BACKOFF.len() {
        // Gone: taken at shutdown (then the sink has it).
        let Some(report) = usage.current(id) else {
            return;
        };
        let why = match tokio::time::timeout(ATTEMPT_TIMEOUT, pricers.report_usage(&report)).await {
            Ok(Ok(())) => {
                usage.delivered.fetch_add(1, Ordering::Relaxed);
                let taken = lock(&usage.in_flight).remove(&id);
                if let (Some(row), Some(sink)) =
                    (taken.and_then(|r| r.persisted_id), usage.sink.get())
                {
                    sink.delivered(row);
                }
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        usage.failed_attempts.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            service = %report.service_name,
            attempt = attempt + 1,
            "usage report failed: {why}"
        );
        if let Some(pause) = BACKOFF.get(attempt) {
            tokio::time::sleep(*pause).await;
        }
    }
    usage.give_up(id);
}
