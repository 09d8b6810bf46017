//! `strictverify`: a token is accepted only when its invoice is known settled. Each core keeps
//! the set of payment hashes it has seen settle (fed by the bridge's settlement events, which
//! reach every core), bounded; a hash it has not seen is looked up at the Lightning backend once
//! and, while the invoice is still open, waited on for at most [`STRICT_WAIT`] (Go aperture's
//! 3 s) before the request gets a fresh 402. Nothing is loaded at start-up: Go aperture pages
//! through every historical invoice before serving; here the set fills lazily.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use lnd_bridge::{Event, InvoiceState};

use super::CoreCtx;

/// Longest a request waits for its invoice to settle.
pub const STRICT_WAIT: Duration = Duration::from_secs(3);
/// Settled hashes remembered per core (a forgotten one costs one lookup).
pub const CAPACITY: usize = 100_000;

/// The payment hashes one core knows settled, and the requests waiting for one.
#[derive(Default)]
pub struct Settled {
    known: RefCell<HashSet<[u8; 32]>>,
    order: RefCell<VecDeque<[u8; 32]>>,
    waiters: RefCell<HashMap<[u8; 32], Vec<Waker>>>,
}

impl Settled {
    /// Whether `hash` is known settled.
    pub fn contains(&self, hash: &[u8; 32]) -> bool {
        self.known.borrow().contains(hash)
    }

    /// Records a settlement and wakes the requests waiting for it.
    pub fn insert(&self, hash: [u8; 32]) {
        if self.known.borrow_mut().insert(hash) {
            let mut order = self.order.borrow_mut();
            order.push_back(hash);
            if order.len() > CAPACITY {
                if let Some(old) = order.pop_front() {
                    self.known.borrow_mut().remove(&old);
                }
            }
        }
        if let Some(wakers) = self.waiters.borrow_mut().remove(&hash) {
            wakers.into_iter().for_each(Waker::wake);
        }
    }

    /// Resolves once `hash` is known settled.
    pub fn wait(&self, hash: [u8; 32]) -> SettledWait<'_> {
        SettledWait {
            settled: self,
            hash,
            registered: None,
        }
    }

    /// Requests waiting now (for tests and metrics).
    pub fn waiting(&self) -> usize {
        self.waiters.borrow().values().map(Vec::len).sum()
    }
}

/// A request waiting for one settlement; deregisters its own waker when dropped (timeout).
pub struct SettledWait<'a> {
    settled: &'a Settled,
    hash: [u8; 32],
    registered: Option<Waker>,
}

impl Future for SettledWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.settled.contains(&self.hash) {
            return Poll::Ready(());
        }
        if self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        let waker = cx.waker().clone();
        {
            let mut waiters = self.settled.waiters.borrow_mut();
            let list = waiters.entry(self.hash).or_default();
            if let Some(old) = &self.registered {
                list.retain(|w| !w.will_wake(old));
            }
            list.push(waker.clone());
        }
        self.registered = Some(waker);
        Poll::Pending
    }
}

impl Drop for SettledWait<'_> {
    fn drop(&mut self) {
        let Some(mine) = &self.registered else {
            return;
        };
        let mut waiters = self.settled.waiters.borrow_mut();
        if let Some(list) = waiters.get_mut(&self.hash) {
            list.retain(|w| !w.will_wake(mine));
            if list.is_empty() {
                waiters.remove(&self.hash);
            }
        }
    }
}

/// Whether the invoice behind `hash` is settled, asking the backend and waiting as needed.
pub async fn require_settled(core: &CoreCtx, hash: [u8; 32]) -> bool {
    if core.settled.contains(&hash) {
        return true;
    }
    let deadline = monoio::time::Instant::now() + STRICT_WAIT;
    let Ok(reply) = core.bridge.try_lookup_invoice(hash) else {
        return false;
    };
    match monoio::time::timeout(STRICT_WAIT, reply).await {
        Ok(Ok(Ok(InvoiceState::Settled))) => {
            core.settled.insert(hash);
            return true;
        }
        Ok(Ok(Ok(InvoiceState::Open | InvoiceState::Accepted))) => {}
        _ => return false,
    }
    let left = deadline.saturating_duration_since(monoio::time::Instant::now());
    monoio::time::timeout(left, core.settled.wait(hash))
        .await
        .is_ok()
}

/// Feeds this core's settled set from the bridge's events until the bridge shuts down.
pub async fn consume_events(
    core: Rc<CoreCtx>,
    mut events: futures_channel::mpsc::UnboundedReceiver<Event>,
) {
    loop {
        match super::recv(&mut events).await {
            Some(Event::InvoiceSettled { payment_hash, .. }) => core.settled.insert(payment_hash),
            Some(Event::TokenRevoked { token_id }) => {
                core.revoked.borrow_mut().insert(token_id);
                // Cached verifications predate the revocation.
                core.tokens.clear();
            }
            None => return,
        }
    }
}
