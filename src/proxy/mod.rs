//! The data path (layer 2), run by each worker core on its own monoio runtime: route →
//! authenticate → (rate limit, later) → forward → respond. Everything here is owned by one core
//! (`Rc`, `RefCell`, `Cell`); the only cross-core things are immutable `Arc` snapshots and the
//! bridge's channel. Nothing here blocks: no DNS, no file I/O, no blocking receive (static files
//! are read by io_uring or handed to the file threads, see [`statics`]).

pub mod auth;
pub mod bundles;
pub mod conn;
pub mod deadline;
pub mod direct;
pub mod forward;
pub mod grpc;
pub mod h1;
pub mod h2;
pub mod h2n;
pub mod io;
pub mod lease;
pub mod limit;
pub mod meter;
pub mod payment;
pub mod pool;
pub mod price;
pub mod proxyproto;
pub mod respond;
pub mod route;
pub mod session;
pub mod session_meter;
pub mod settled;
pub mod statics;
pub mod tls_accept;
pub mod tokens;
pub mod watch;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::l402::Verifier;
use crate::metrics::{CoreCounters, Metrics};

pub use route::{Limits, Route, Routes};

/// Everything one core needs to serve requests.
pub struct CoreCtx {
    /// The core's index (0-based).
    pub id: usize,
    /// The routing table snapshot new requests use (swapped whole on reload).
    pub routes: RefCell<Arc<Routes>>,
    /// The macaroon verifier (holds the master secret).
    pub verifier: Verifier,
    /// The way to ask the bridge for invoices.
    pub bridge: lnd_bridge::BridgeHandle,
    /// Counters of every core; this core writes only its own block.
    pub metrics: Metrics,
    /// Idle upstream connections of this core.
    pub pool: pool::Pool,
    /// Idle HTTP/1.1 connections to `https` upstreams of this core.
    pub tls_pool: pool::Pool<pool::TlsUpstream>,
    /// Credentials this core verified recently.
    pub tokens: tokens::TokenCache,
    /// Revoked token ids (loaded at start, then fed by the bridge's revocation events).
    pub revoked: RefCell<std::collections::HashSet<[u8; 32]>>,
    /// The ledger: minted challenges are handed to the store thread (never blocks).
    pub store: Option<crate::store::StoreHandle>,
    /// Invoices this core knows settled (`strictverify`).
    pub settled: settled::Settled,
    /// Rate-limit buckets of the client keys this core owns.
    pub limits: limit::CoreLimits,
    /// Every core's peer inbox, by core index (this core's own included).
    pub peers: Rc<[futures_channel::mpsc::UnboundedSender<limit::PeerMsg>]>,
    /// Set once when the core drains for shutdown.
    pub shutdown: Rc<Shutdown>,
    /// The Payment scheme's HMAC secret (shared through the database), when `enablempp` is on.
    pub payment_secret: Option<[u8; 32]>,
    /// The Payment sessions this core owns, when sessions are on.
    pub sessions: Option<session::CoreSessions>,
    /// The built-in meter's bundles of the tokens this core owns (`metering: openai`).
    pub bundles: bundles::CoreBundles,
}

impl CoreCtx {
    /// This core's counters.
    #[inline]
    pub fn counters(&self) -> &CoreCounters {
        self.metrics.core(self.id)
    }

    /// The current routing snapshot.
    pub fn routes(&self) -> Arc<Routes> {
        self.routes.borrow().clone()
    }
}

/// A core-local, set-once shutdown signal that tasks can await. Each waiter holds one
/// registration (see [`Shutdown::wait`]) that it keeps across requests and that removes itself on
/// drop, so a long-lived process does not accumulate wakers of finished connections.
#[derive(Default)]
pub struct Shutdown {
    set: Cell<bool>,
    next: Cell<u64>,
    waiters: RefCell<HashMap<u64, Waker>>,
}

impl Shutdown {
    /// Sets the signal and wakes every waiter.
    pub fn trigger(&self) {
        self.set.set(true);
        for (_, w) in self.waiters.borrow_mut().drain() {
            w.wake();
        }
    }

    /// Whether the signal is set.
    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    /// A future that resolves once the signal is set; poll it by `&mut` to reuse it.
    pub fn wait(&self) -> ShutdownWait<'_> {
        ShutdownWait {
            shutdown: self,
            key: None,
            seen: None,
        }
    }
}

/// One registration on a [`Shutdown`].
pub struct ShutdownWait<'a> {
    shutdown: &'a Shutdown,
    key: Option<u64>,
    /// The waker last registered: a connection polls this on every turn of its task with the
    /// same waker, which then costs a comparison instead of a map lookup.
    seen: Option<Waker>,
}

impl Future for ShutdownWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shutdown.set.get() {
            return Poll::Ready(());
        }
        if self.seen.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            // Registered with this waker; only `trigger` removes it, after setting `set`.
            return Poll::Pending;
        }
        let key = match self.key {
            Some(k) => k,
            None => {
                let k = self.shutdown.next.get();
                self.shutdown.next.set(k + 1);
                self.key = Some(k);
                k
            }
        };
        let mut waiters = self.shutdown.waiters.borrow_mut();
        match waiters.get_mut(&key) {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => {
                waiters.insert(key, cx.waker().clone());
            }
        }
        drop(waiters);
        self.seen = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for ShutdownWait<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.key {
            self.shutdown.waiters.borrow_mut().remove(&k);
        }
    }
}

/// The next message of a cross-thread inbox (a futures unbounded channel, whose waker may be
/// woken from another thread), or `None` once every sender is gone.
pub async fn recv<T>(inbox: &mut futures_channel::mpsc::UnboundedReceiver<T>) -> Option<T> {
    std::future::poll_fn(|cx| futures_core::Stream::poll_next(Pin::new(&mut *inbox), cx)).await
}

/// The bridge's per-call deadline as seen from a core: how long a request waits for an invoice
/// before it gets 503.
pub const BRIDGE_WAIT: Duration = Duration::from_secs(5);
