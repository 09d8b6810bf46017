//! The `SubscribeInvoices` watcher: one task that turns lnd's settle updates into
//! [`Event::InvoiceSettled`] and never gives up.
//!
//! Owns the resume cursor (highest `add_index` / `settle_index` seen) and the reconnect
//! backoff. lnd (grpc-go) sends the stream's headers only with its first event, so nothing
//! may wait for this stream to "open": it runs in its own task from start-up on. After any
//! failure it resubscribes from the cursor, so lnd replays every settlement made while the
//! stream was down. (Before the first settlement is seen the cursor is 0, which lnd treats
//! as "no backlog"; callers that must know about such a payment use `LookupInvoice`.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use super::{state_of, LndBackend};
use crate::events::EventBus;
use crate::lnrpc::{Invoice as RpcInvoice, InvoiceSubscription};
use crate::protocol::{Event, InvoiceState};

/// First retry delay; doubles per consecutive failure up to [`BACKOFF_CAP`].
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Where the subscription resumes, and how often it had to.
#[derive(Default)]
pub(crate) struct Cursor {
    settle_index: AtomicU64,
    add_index: AtomicU64,
    restarts: AtomicU64,
}

impl Cursor {
    pub(crate) fn settle_index(&self) -> u64 {
        self.settle_index.load(Ordering::Acquire)
    }
    pub(crate) fn add_index(&self) -> u64 {
        self.add_index.load(Ordering::Acquire)
    }
    pub(crate) fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Acquire)
    }
}

/// Exponential backoff with equal jitter: each delay is uniform in [d/2, d].
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff { next: BACKOFF_BASE }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_BASE;
    }

    fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(BACKOFF_CAP);
        let half = d / 2;
        // Jitter spreads the reconnects of many proxies sharing one lnd.
        let jitter = rand::thread_rng().gen_range(0..=half.as_micros() as u64);
        half + Duration::from_micros(jitter)
    }
}

/// Runs until the runtime is dropped: subscribe, relay, and on any end resubscribe.
pub(super) async fn run(backend: Arc<LndBackend>, events: Arc<EventBus>) {
    let mut backoff = Backoff::new();
    loop {
        let status = stream_once(&backend, &events, &mut backoff).await;
        backend.note_status(&status);
        let restarts = backend.cursor.restarts.fetch_add(1, Ordering::AcqRel) + 1;
        let delay = backoff.next_delay();
        tracing::warn!(
            code = ?status.code(),
            message = %status.message(),
            restarts,
            settle_index = backend.cursor.settle_index(),
            retry_in_ms = delay.as_millis() as u64,
            "lnd invoice subscription failed; resubscribing"
        );
        tokio::time::sleep(delay).await;
    }
}

/// One subscription's life; returns why it ended (a clean end is also a failure: lnd
/// never ends this stream on its own except when shutting down).
async fn stream_once(
    backend: &LndBackend,
    events: &EventBus,
    backoff: &mut Backoff,
) -> tonic::Status {
    let req = InvoiceSubscription {
        add_index: backend.cursor.add_index(),
        settle_index: backend.cursor.settle_index(),
    };
    let mut stream = match backend
        .client
        .clone()
        .subscribe_invoices(backend.request(req))
        .await
    {
        Ok(resp) => resp.into_inner(),
        Err(status) => return status,
    };
    loop {
        match stream.message().await {
            Ok(Some(inv)) => {
                backoff.reset();
                backend.note_up();
                observe(&backend.cursor, events, &inv);
            }
            Ok(None) => return tonic::Status::unavailable("lnd ended the invoice subscription"),
            Err(status) => return status,
        }
    }
}

/// Advances the cursor and publishes settlements not seen before.
fn observe(cursor: &Cursor, events: &EventBus, inv: &RpcInvoice) {
    cursor.add_index.fetch_max(inv.add_index, Ordering::AcqRel);
    if state_of(inv) != InvoiceState::Settled {
        return; // adds (OPEN) only move the cursor
    }
    let Ok(payment_hash) = <[u8; 32]>::try_from(inv.r_hash.as_slice()) else {
        tracing::warn!(
            len = inv.r_hash.len(),
            "lnd settle update with a bad r_hash"
        );
        return;
    };
    let prev = cursor
        .settle_index
        .fetch_max(inv.settle_index, Ordering::AcqRel);
    if inv.settle_index != 0 && inv.settle_index <= prev {
        return; // already published (a replay overlapping what we saw)
    }
    events.publish(&Event::InvoiceSettled {
        payment_hash,
        settle_index: inv.settle_index,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap_and_resets() {
        let mut b = Backoff::new();
        let mut ceiling = BACKOFF_BASE;
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d >= ceiling / 2 && d <= ceiling, "{d:?} vs {ceiling:?}");
            ceiling = (ceiling * 2).min(BACKOFF_CAP);
        }
        assert_eq!(ceiling, BACKOFF_CAP);
        b.reset();
        assert!(b.next_delay() <= BACKOFF_BASE);
    }

    #[test]
    fn observe_publishes_each_settlement_once_and_tracks_indices() {
        let cursor = Cursor::default();
        let bus = EventBus::default();
        let mut rx = bus.subscribe();
        let add = RpcInvoice {
            r_hash: vec![1; 32],
            add_index: 7,
            ..Default::default()
        };
        observe(&cursor, &bus, &add);
        assert_eq!(cursor.add_index(), 7);
        assert!(rx.try_recv().is_err(), "an add publishes nothing");
        let settle = RpcInvoice {
            r_hash: vec![1; 32],
            add_index: 7,
            settle_index: 3,
            state: crate::lnrpc::invoice::InvoiceState::Settled as i32,
            ..Default::default()
        };
        observe(&cursor, &bus, &settle);
        observe(&cursor, &bus, &settle); // replayed after a reconnect
        assert_eq!(
            rx.try_recv().ok(),
            Some(Event::InvoiceSettled {
                payment_hash: [1; 32],
                settle_index: 3
            })
        );
        assert!(rx.try_recv().is_err(), "the replay is not published twice");
        assert_eq!(cursor.settle_index(), 3);
    }
}
