//! Metered usage reports the pricer did not take, through the store: the bridge's
//! [`lnd_bridge::UsageSink`] turns each into a `pending_usage` row (batched with the ledger's
//! writes), and the rows an earlier run kept are replayed through the bridge at start (each
//! deleted once delivered). Never blocks: the sink only queues.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use lnd_bridge::BridgeHandle;

use super::{lock, Msg, StoreHandle, StoreService};
use crate::store::db::Op;

impl StoreService {
    /// Wires metered usage to the database: reports the pricer does not take are kept (through
    /// the batched writes), and those an earlier run kept are handed to `bridge` again (each row
    /// deleted once delivered). Call once, after `bridge` started.
    pub fn keep_usage(&self, bridge: &BridgeHandle) {
        bridge.set_usage_sink(Arc::new(UsageKeeper(self.handle.clone())));
        let replay = std::mem::take(&mut *lock(&self.replay));
        if !replay.is_empty() {
            tracing::info!(
                reports = replay.len(),
                "replaying usage reports kept by an earlier run"
            );
        }
        for report in replay {
            bridge.report_usage(report);
        }
    }
}

/// Kept usage reports replayed at start (more wait for the next start).
pub(super) const MAX_REPLAY: u32 = 100_000;

/// The bridge's [`lnd_bridge::UsageSink`]: undelivered usage reports become rows.
struct UsageKeeper(StoreHandle);

impl lnd_bridge::UsageSink for UsageKeeper {
    fn undelivered(&self, report: &lnd_bridge::UsageReport) {
        let op = Op::PendingUsage(Box::new(report.clone()));
        if self.0.tx.try_send(Msg::Write(op)).is_err() {
            self.0.stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                service = %report.service_name,
                token_id = %report.token_id,
                "usage report lost: the pricer did not take it and the store is behind or gone"
            );
        }
    }

    fn delivered(&self, id: i64) {
        if self
            .0
            .tx
            .try_send(Msg::Write(Op::UsageDelivered(id)))
            .is_err()
        {
            // The row stays and is replayed once more at the next start.
            self.0.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
