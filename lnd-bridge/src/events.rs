//! Fan-out of bridge events to every subscriber (one per worker core's control inbox).
//!
//! Owns the subscriber list only. It must never block the sender: sinks are unbounded
//! `futures_channel` senders, so publishing from the bridge thread is a lock + push, and a
//! waker registered by a monoio task (with monoio's `sync` feature) is woken cross-thread.

use std::sync::Mutex;

use futures_channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};

use crate::protocol::Event;

/// The set of live subscribers.
#[derive(Default)]
pub(crate) struct EventBus {
    sinks: Mutex<Vec<UnboundedSender<Event>>>,
}

impl EventBus {
    /// Registers a new sink; it receives every event published after this call.
    pub(crate) fn subscribe(&self) -> UnboundedReceiver<Event> {
        let (tx, rx) = unbounded();
        self.lock().push(tx);
        rx
    }

    /// Delivers `event` to every live subscriber, forgetting those whose receiver is gone.
    pub(crate) fn publish(&self, event: &Event) {
        self.lock()
            .retain(|tx| tx.unbounded_send(event.clone()).is_ok());
    }

    /// Ends every subscription: receivers see the end of the stream.
    pub(crate) fn close(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<UnboundedSender<Event>>> {
        // A panic while holding this lock cannot leave the Vec inconsistent (push/retain/
        // clear are each complete or not run), so a poisoned lock is safe to keep using.
        self.sinks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_channel::mpsc::TryRecvError;

    #[test]
    fn fans_out_and_drops_dead_sinks() {
        let bus = EventBus::default();
        let mut a = bus.subscribe();
        let b = bus.subscribe();
        drop(b);
        let ev = Event::TokenRevoked { token_id: [7; 32] };
        bus.publish(&ev);
        assert_eq!(a.try_recv().ok(), Some(ev));
        assert_eq!(bus.lock().len(), 1, "the dropped subscriber is forgotten");
        bus.close();
        assert_eq!(
            a.try_recv(),
            Err(TryRecvError::Closed),
            "closed stream ends"
        );
    }
}
