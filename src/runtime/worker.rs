//! One worker core: its pinned thread, its monoio runtime, its accept loop, its control inbox and
//! the drain on shutdown. Each connection runs in its own task under `catch_unwind`, because a
//! panic in a monoio task would otherwise take the whole core down: a panic closes only that
//! connection and is counted.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use futures_channel::mpsc::{self, UnboundedReceiver, UnboundedSender};
use monoio::net::TcpListener;

use super::{Control, RuntimeError};
use crate::l402::Verifier;
use crate::metrics::{Counter, Metrics};
use crate::proxy::limit::{self, CoreLimits, PeerMsg};
use crate::proxy::pool::{self, Pool};
use crate::proxy::session::{self, CoreSessions};
use crate::proxy::{conn, settled, tls_accept, CoreCtx, Routes, Shutdown};

/// Idle upstream connections kept per upstream and core.
const POOL_IDLE: usize = 256;

/// What one worker is started with.
pub struct Spec {
    pub id: usize,
    pub cpu: Option<core_affinity::CoreId>,
    pub listener: std::net::TcpListener,
    pub routes: Arc<Routes>,
    pub master_secret: [u8; 32],
    pub bridge: lnd_bridge::BridgeHandle,
    pub metrics: Metrics,
    pub legacy_keys: Arc<std::collections::HashMap<[u8; 32], [u8; 32]>>,
    pub revoked: Arc<[[u8; 32]]>,
    pub store: Option<crate::store::StoreHandle>,
    pub peers: Arc<[UnboundedSender<PeerMsg>]>,
    pub peer_inbox: UnboundedReceiver<PeerMsg>,
    /// TLS termination config; `None` serves plaintext (HTTP/1.1 and h2c).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The Payment scheme's HMAC secret (`enablempp`).
    pub payment_secret: Option<[u8; 32]>,
    pub session_holder: Option<String>,
    /// The fleet-wide rate-limit backend (`ratelimitbackend: redis`).
    pub fleet: Option<crate::fleet::FleetHandle>,
}

/// The CPUs this process may run on (its inherited affinity set).
pub fn cpu_set() -> Vec<core_affinity::CoreId> {
    core_affinity::get_core_ids().unwrap_or_default()
}

/// Starts the worker thread; returns once its runtime is built and it is about to accept.
pub fn spawn(
    spec: Spec,
) -> Result<(JoinHandle<()>, UnboundedSender<Control>, &'static str), RuntimeError> {
    let id = spec.id;
    let (tx, rx) = mpsc::unbounded();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<&'static str, String>>();
    let handle = std::thread::Builder::new()
        .name(format!("aperture-core-{id}"))
        .spawn(move || run(spec, rx, ready_tx))
        .map_err(|e| RuntimeError::Worker {
            core: id,
            reason: e.to_string(),
        })?;
    match ready_rx.recv() {
        Ok(Ok(driver)) => Ok((handle, tx, driver)),
        Ok(Err(reason)) => Err(RuntimeError::Worker { core: id, reason }),
        Err(_) => Err(RuntimeError::Worker {
            core: id,
            reason: "the worker thread exited during start-up".into(),
        }),
    }
}

fn run(
    spec: Spec,
    inbox: UnboundedReceiver<Control>,
    ready: std::sync::mpsc::Sender<Result<&'static str, String>>,
) {
    if let Some(cpu) = spec.cpu {
        if !core_affinity::set_for_current(cpu) {
            tracing::warn!(core = spec.id, cpu = cpu.id, "could not pin the worker");
        }
    }
    let built = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .with_entries(1024)
        .build();
    let mut rt = match built {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot build the I/O runtime: {e}")));
            return;
        }
    };
    let driver = match &rt {
        monoio::FusionRuntime::Uring(_) => "io_uring",
        monoio::FusionRuntime::Legacy(_) => "epoll",
    };
    // Static file bodies are read by io_uring on this core only when it runs io_uring.
    crate::proxy::statics::set_io_uring(driver == "io_uring");
    // Plain TCP reads and writes try the system call before an io_uring operation.
    crate::proxy::direct::set_enabled(driver == "io_uring");
    rt.block_on(async move {
        let listener = match TcpListener::from_std(spec.listener) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(format!("cannot register the listener: {e}")));
                return;
            }
        };
        let routes_for_limits = spec.routes.clone();
        let ctx = Rc::new(CoreCtx {
            id: spec.id,
            routes: RefCell::new(core_copy(&spec.routes)),
            verifier: Verifier::new(spec.master_secret).with_legacy_keys(spec.legacy_keys),
            revoked: RefCell::new(spec.revoked.iter().copied().collect()),
            store: spec.store,
            bridge: spec.bridge,
            metrics: spec.metrics,
            pool: Pool::new(POOL_IDLE),
            tls_pool: Pool::new(POOL_IDLE),
            tokens: Default::default(),
            settled: Default::default(),
            // A random hasher seed per core: clients cannot precompute colliding keys.
            limits: CoreLimits::new(&routes_for_limits, rand::random(), spec.fleet.clone()),
            peers: spec.peers.iter().cloned().collect(),
            shutdown: Rc::new(Shutdown::default()),
            payment_secret: spec.payment_secret,
            sessions: spec.session_holder.as_deref().map(CoreSessions::new),
            bundles: Default::default(),
        });
        let grace = Rc::new(Cell::new(Duration::from_secs(10)));
        monoio::spawn(control_loop(ctx.clone(), inbox, grace.clone()));
        monoio::spawn(limit::serve_peers(ctx.clone(), spec.peer_inbox));
        monoio::spawn(settled::consume_events(ctx.clone(), ctx.bridge.subscribe()));
        monoio::spawn(pool::sweep_forever(ctx.clone()));
        if ctx.sessions.is_some() {
            monoio::spawn(session::sync_forever(ctx.clone()));
        }
        let _ = ready.send(Ok(driver));
        tracing::info!(core = ctx.id, driver, cpu = ?spec.cpu.map(|c| c.id), "worker serving");
        let active = Rc::new(Cell::new(0usize));
        let acceptor = spec.tls.map(tls_accept::TlsAcceptor::new);
        accept_loop(&ctx, &listener, acceptor, &active).await;
        drop(listener);
        drain(&ctx, &active, grace.get()).await;
        ctx.pool.clear();
        ctx.tls_pool.clear();
    });
}

async fn control_loop(
    ctx: Rc<CoreCtx>,
    mut inbox: UnboundedReceiver<Control>,
    grace: Rc<Cell<Duration>>,
) {
    loop {
        match crate::proxy::recv(&mut inbox).await {
            Some(Control::Shutdown { grace: g }) => {
                grace.set(g);
                ctx.shutdown.trigger();
                return;
            }
            Some(Control::Routes(routes)) => {
                // Requests in flight keep the snapshot they started with; new ones use this.
                ctx.limits.reload(&routes);
                *ctx.routes.borrow_mut() = core_copy(&routes);
                ctx.pool.clear();
                ctx.tls_pool.clear();
                ctx.tokens.clear();
            }
            // The server handle is gone: nobody can ask for a drain any more, so drain now.
            None => {
                ctx.shutdown.trigger();
                return;
            }
        }
    }
}

async fn accept_loop(
    ctx: &Rc<CoreCtx>,
    listener: &TcpListener,
    acceptor: Option<tls_accept::TlsAcceptor>,
    active: &Rc<Cell<usize>>,
) {
    let shutdown = ctx.shutdown.clone();
    let mut stop = shutdown.wait();
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = &mut stop => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let counters = ctx.counters();
                counters.incr(Counter::ConnectionsAccepted);
                counters.incr(Counter::ConnectionsActive);
                active.set(active.get() + 1);
                let (ctx, active, acceptor) = (ctx.clone(), active.clone(), acceptor.clone());
                monoio::spawn(async move {
                    // The TLS handshake runs here, on the accepting core, inside the guard.
                    let served = match acceptor {
                        Some(tls) => {
                            let serve = tls_accept::serve_tls(ctx.clone(), tls, stream, peer);
                            CatchUnwind(Box::pin(serve)).await
                        }
                        None => CatchUnwind(Box::pin(conn::serve(ctx.clone(), stream, peer))).await,
                    };
                    if served.is_err() {
                        ctx.counters().incr(Counter::ConnectionPanics);
                        tracing::error!(core = ctx.id, %peer, "connection task panicked; closed it");
                    }
                    ctx.counters().decr(Counter::ConnectionsActive);
                    active.set(active.get() - 1);
                });
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning on the error.
                tracing::warn!(core = ctx.id, "accept failed: {e}");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Waits for in-flight connections to finish, at most `grace`.
async fn drain(ctx: &CoreCtx, active: &Cell<usize>, grace: Duration) {
    let deadline = monoio::time::Instant::now() + grace;
    while active.get() > 0 && monoio::time::Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    if active.get() > 0 {
        tracing::warn!(
            core = ctx.id,
            open = active.get(),
            "grace period over; closing connections"
        );
    }
}

/// Resolves to `Err(())` instead of unwinding when the inner future panics.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    }
}

/// This core's own copy of a routing snapshot. Requests clone the snapshot's `Arc` several times
/// each; were the `Arc` shared, every core would bounce its reference count's cache line on every
/// request (measured on 8 cores: the CPU cost per request grew with the core count). A copy per
/// core keeps that count core-private; the copy is made once per start or reload, never per
/// request.
fn core_copy(routes: &Arc<Routes>) -> Arc<Routes> {
    Arc::new(Routes::clone(routes))
}
