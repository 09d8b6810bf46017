//! lnd-bridge: the side runtime that talks to Lightning backends for the worker cores.
//!
//! Owns a tokio current-thread runtime on an OS thread named `lnd-bridge`, the `bridge-pump`
//! thread that feeds it, the backend it drives (today the embedded dev backend, or none when
//! authentication is disabled; lnd later), and the event fan-out. The worker cores run
//! monoio and must never block, so every entry point here is non-blocking:
//! [`BridgeHandle::try_create_invoice`] either queues the call at once or fails at once with
//! [`BridgeError::QueueFull`]; replies come back on `futures_channel` oneshots, whose wakers
//! may cross threads. Only plain Rust types cross this crate's public API.
//!
//! Why a crossbeam channel and a pump instead of `Handle::spawn` from each core: spawning
//! from every worker core makes all cores contend on tokio's injection-queue mutex. Worker
//! cores instead `try_send` jobs into a crossbeam bounded channel (backed by an `ArrayQueue`
//! style lock-free ring), so no two cores ever take a lock shared with each other; the pump
//! is the only thread that touches tokio's inject queue, and it `Handle::spawn`s each job so
//! the calls still run concurrently on the runtime.
//!
//! Load shedding bounds calls in flight (queued in the channel *or* running on the
//! runtime): the channel alone drains into the runtime at once, so by itself it would never
//! say "full" while the backend is slow. A counter of in-flight permits enforces the bound
//! and the channel (of the same capacity) backs it up; either refusing gives `QueueFull`.
//! Shutdown sends the pump a `Stop` sentinel rather than waiting for every sender to drop,
//! because worker cores may still hold [`BridgeHandle`] clones when the bridge stops.

mod dev;
mod events;
#[cfg(feature = "fake")]
pub mod fake;
mod lnd;
#[allow(clippy::all, clippy::pedantic, dead_code, missing_docs)]
mod lnrpc;
pub mod protocol;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use futures_channel::{mpsc, oneshot};

pub use dev::key::NODE_KEY_FILE;
pub use protocol::{
    BackendStats, BridgeError, Event, Invoice, InvoiceRequest, InvoiceState, DEFAULT_MEMO,
    MAX_INVOICE_SAT, MAX_MEMO_BYTES,
};

use dev::DevBackend;
use events::EventBus;
use lnd::LndBackend;

/// Default bound on calls in flight.
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;
/// Default per-call deadline, counted from the moment the call is queued.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The error every invoice call gets from [`BackendConfig::Disabled`].
const DISABLED_REASON: &str = "authentication is disabled";

/// The reply to one invoice call. Awaiting it yields `Err(Canceled)` only if the bridge
/// shut down before answering; treat that as [`BridgeError::Closed`].
pub type InvoiceReply = oneshot::Receiver<Result<Invoice, BridgeError>>;

/// The reply to one invoice lookup; `Err(Canceled)` means the bridge shut down first.
pub type LookupReply = oneshot::Receiver<Result<InvoiceState, BridgeError>>;

/// Bitcoin network; decides the BOLT11 prefix (`lnbc`, `lntb`, `lnbcrt`, `lnsb`, `lntbs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Network {
    Mainnet,
    Testnet,
    Regtest,
    Simnet,
    Signet,
}

/// Which Lightning backend the bridge drives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendConfig {
    /// The embedded dev backend: payments are SIMULATED through its wallet endpoint.
    Dev {
        /// Holds `dev-node.key` (created with mode 0600 if missing).
        basedir: PathBuf,
        /// Where the simulated wallet listens; port 0 picks a free port.
        wallet_listen: SocketAddr,
        network: Network,
    },
    /// A real lnd over gRPC. Start-up reads and checks both files (a missing macaroon or
    /// an unusable certificate is a [`BridgeError::is_config_error`] error) but does not
    /// dial: an unreachable lnd is retried in the background with backoff.
    Lnd {
        /// lnd's gRPC `host:port` (`authenticator.lndhost`).
        host: String,
        /// lnd's `tls.cert`; pinned exactly, re-read on every reconnect.
        tls_path: PathBuf,
        /// The macaroon sent with every call (`macdir/invoice.macaroon`).
        macaroon_path: PathBuf,
        network: Network,
    },
    /// No backend (`authenticator.disable: true`): no wallet, and every invoice call fails
    /// at once with `Backend("authentication is disabled")`. Events still fan out.
    Disabled,
}

/// Everything [`start`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    pub backend: BackendConfig,
    /// Most calls in flight (queued or running) before new ones get `QueueFull`; ≥ 1.
    pub queue_capacity: usize,
    /// Deadline for each call, counted from when it is queued.
    pub call_timeout: Duration,
}

impl BridgeConfig {
    /// `backend` with the default capacity (4096) and timeout (5 s).
    pub fn new(backend: BackendConfig) -> Self {
        BridgeConfig {
            backend,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }
}

/// The backend the runtime drives; an enum rather than dynamic dispatch.
enum Backend {
    Dev(Arc<DevBackend>),
    Lnd(Arc<LndBackend>),
    Disabled,
}

impl Backend {
    async fn create_invoice(&self, req: &InvoiceRequest) -> Result<Invoice, BridgeError> {
        match self {
            Backend::Dev(dev) => dev.create_invoice(req).await,
            Backend::Lnd(lnd) => lnd.create_invoice(req).await,
            Backend::Disabled => Err(BridgeError::Backend(DISABLED_REASON.into())),
        }
    }

    async fn lookup_invoice(&self, payment_hash: [u8; 32]) -> Result<InvoiceState, BridgeError> {
        match self {
            Backend::Dev(dev) => Ok(dev.lookup(&payment_hash)),
            Backend::Lnd(lnd) => lnd.lookup_invoice(payment_hash).await,
            Backend::Disabled => Err(BridgeError::Backend(DISABLED_REASON.into())),
        }
    }

    fn stats(&self) -> BackendStats {
        match self {
            Backend::Lnd(lnd) => lnd.stats(),
            // Nothing to reach: the dev backend is in-process, and a disabled one is absent.
            Backend::Dev(_) | Backend::Disabled => BackendStats {
                connected: true,
                ..BackendStats::default()
            },
        }
    }
}

/// What a queued call asks for, with the oneshot its answer goes to.
enum Call {
    Create {
        req: InvoiceRequest,
        reply: oneshot::Sender<Result<Invoice, BridgeError>>,
    },
    Lookup {
        payment_hash: [u8; 32],
        reply: oneshot::Sender<Result<InvoiceState, BridgeError>>,
    },
}

/// One queued call, as it travels from a worker core to the pump.
struct Job {
    call: Call,
    /// The deadline counts from here, so time spent queued is part of `call_timeout`.
    enqueued: Instant,
    /// Held until the call finishes or is dropped unrun; that is what `in_flight` counts.
    permit: Permit,
}

/// What the pump receives: a call to spawn, or the shutdown sentinel.
enum Msg {
    Call(Job),
    Stop,
}

/// State shared by the bridge owner, the pump, the calls and every handle.
struct Shared {
    rt: tokio::runtime::Handle,
    backend: Backend,
    events: Arc<EventBus>,
    jobs: Sender<Msg>,
    in_flight: AtomicUsize,
    capacity: usize,
    call_timeout: Duration,
    closed: AtomicBool,
}

/// A running bridge. Dropping it (or [`Bridge::shutdown`]) stops the pump and the runtime
/// and joins both threads; outstanding calls then resolve as canceled and event streams end.
pub struct Bridge {
    shared: Arc<Shared>,
    wallet_addr: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    runtime_thread: Option<JoinHandle<()>>,
    pump_thread: Option<JoinHandle<()>>,
}

/// Starts the bridge threads. Key, port and runtime errors are returned here, never
/// raised later on a bridge thread.
pub fn start(cfg: BridgeConfig) -> Result<Bridge, BridgeError> {
    if cfg.queue_capacity == 0 {
        return Err(BridgeError::Runtime(
            "queue_capacity must be at least 1".into(),
        ));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BridgeError::Runtime(format!("build runtime: {e}")))?;
    let events = Arc::new(EventBus::default());
    let (backend, wallet_addr) = open_backend(&cfg.backend, &rt, &events)?;
    let handle = rt.handle().clone();
    let (stop, runtime_thread) = spawn_runtime(rt)?;
    let (jobs, rx) = crossbeam_channel::bounded(cfg.queue_capacity);
    let shared = Arc::new(Shared {
        rt: handle,
        backend,
        events,
        jobs,
        in_flight: AtomicUsize::new(0),
        capacity: cfg.queue_capacity,
        call_timeout: cfg.call_timeout,
        closed: AtomicBool::new(false),
    });
    // Built before the pump so that a failed pump spawn still stops the runtime (Drop).
    let mut bridge = Bridge {
        shared: shared.clone(),
        wallet_addr,
        stop: Some(stop),
        runtime_thread: Some(runtime_thread),
        pump_thread: None,
    };
    let pump = std::thread::Builder::new()
        .name("bridge-pump".into())
        .spawn(move || pump(rx, shared))
        .map_err(|e| BridgeError::Runtime(format!("spawn pump thread: {e}")))?;
    bridge.pump_thread = Some(pump);
    Ok(bridge)
}

/// Opens the configured backend; returns it with the wallet's bound address, if any.
fn open_backend(
    cfg: &BackendConfig,
    rt: &tokio::runtime::Runtime,
    events: &Arc<EventBus>,
) -> Result<(Backend, Option<SocketAddr>), BridgeError> {
    match cfg {
        BackendConfig::Dev {
            basedir,
            wallet_listen,
            network,
        } => {
            // Socket registration needs the runtime's reactor in context.
            let _ctx = rt.enter();
            let (dev, listener) = dev::open(basedir, *wallet_listen, *network, events.clone())?;
            let addr = listener
                .local_addr()
                .map_err(|e| BridgeError::WalletListen {
                    addr: wallet_listen.to_string(),
                    reason: e.to_string(),
                })?;
            rt.spawn(dev::wallet::serve(listener, dev.clone()));
            Ok((Backend::Dev(dev), Some(addr)))
        }
        BackendConfig::Lnd {
            host,
            tls_path,
            macaroon_path,
            network,
        } => {
            let settings = lnd::LndSettings {
                host,
                tls_path,
                macaroon_path,
                network: *network,
            };
            let lnd = lnd::open(&settings, events.clone(), rt)?;
            Ok((Backend::Lnd(lnd), None))
        }
        BackendConfig::Disabled => Ok((Backend::Disabled, None)),
    }
}

/// Runs `rt` on the `lnd-bridge` thread until the returned sender fires (or drops).
fn spawn_runtime(
    rt: tokio::runtime::Runtime,
) -> Result<(tokio::sync::oneshot::Sender<()>, JoinHandle<()>), BridgeError> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("lnd-bridge".into())
        .spawn(move || {
            rt.block_on(async {
                let _ = stopped.await;
            });
            // Dropping the runtime here cancels every task (pending calls, connections).
            drop(rt);
        })
        .map_err(|e| BridgeError::Runtime(format!("spawn thread: {e}")))?;
    Ok((stop, thread))
}

/// The pump: the one thread that moves calls from the crossbeam channel onto the tokio
/// runtime. It only spawns, never awaits, so calls run concurrently and it never stalls.
fn pump(rx: Receiver<Msg>, shared: Arc<Shared>) {
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Call(job) => {
                shared.rt.spawn(run_call(shared.clone(), job));
            }
            Msg::Stop => break,
        }
    }
    // Calls queued behind the sentinel are dropped unrun: their callers see Canceled and
    // their permits are released. (Later `try_send`s see `Closed` via the closed flag, or
    // are discarded with the channel once this receiver drops.)
    rx.try_iter().for_each(drop);
}

/// Runs one call on the runtime under its deadline and answers the caller.
async fn run_call(shared: Arc<Shared>, job: Job) {
    let Job {
        call,
        enqueued,
        permit,
    } = job;
    let backend = &shared.backend;
    match call {
        Call::Create { req, reply } => {
            let work = backend.create_invoice(&req);
            answer(&shared, enqueued, permit, reply, work).await;
        }
        Call::Lookup {
            payment_hash,
            reply,
        } => {
            let work = backend.lookup_invoice(payment_hash);
            answer(&shared, enqueued, permit, reply, work).await;
        }
    }
}

/// Awaits `work` (lazy until polled) under the call's deadline and sends the result.
async fn answer<T>(
    shared: &Shared,
    enqueued: Instant,
    permit: Permit,
    reply: oneshot::Sender<Result<T, BridgeError>>,
    work: impl std::future::Future<Output = Result<T, BridgeError>>,
) {
    // The slot is freed before the reply is sent, so a caller holding its answer sees
    // `in_flight` already lowered. (If the task is canceled, dropping `permit` frees it.)
    if reply.is_canceled() {
        return; // the caller gave up; skip the backend work
    }
    // A timeout too large for the clock (e.g. `Duration::MAX`) means "no deadline".
    let deadline = enqueued.checked_add(shared.call_timeout);
    if deadline.is_some_and(|d| Instant::now() >= d) {
        // Expired while queued: answer at once instead of spending backend work on it
        // (`timeout_at` would poll the work once before looking at the clock).
        drop(permit);
        let _ = reply.send(Err(BridgeError::Timeout));
        return;
    }
    let res = match deadline {
        Some(d) => tokio::time::timeout_at(tokio::time::Instant::from_std(d), work)
            .await
            .unwrap_or(Err(BridgeError::Timeout)),
        None => work.await,
    };
    drop(permit);
    let _ = reply.send(res);
}

impl Bridge {
    /// A cheap, cloneable, `Send + Sync` handle for the worker cores.
    pub fn handle(&self) -> BridgeHandle {
        BridgeHandle {
            shared: self.shared.clone(),
        }
    }

    /// The dev wallet's actual bound address (`None` for backends without one).
    pub fn wallet_addr(&self) -> Option<SocketAddr> {
        self.wallet_addr
    }

    /// The dev node's compressed public key, the payee of every invoice it signs.
    pub fn dev_node_id(&self) -> Option<[u8; 33]> {
        match &self.shared.backend {
            Backend::Dev(dev) => Some(dev.node_id()),
            Backend::Lnd(_) | Backend::Disabled => None,
        }
    }

    /// Whether the backend is reachable (readiness). Only lnd can be down: false until
    /// the first connection succeeds and after a connection failure, until one succeeds.
    pub fn backend_connected(&self) -> bool {
        self.shared.backend.stats().connected
    }

    /// Stops the pump and the runtime and joins their threads.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.events.close();
        // The pump must go first: after it exits nothing spawns onto the runtime. The send
        // cannot stall for long (the pump only spawns) and fails at once if the pump is gone.
        let _ = self.shared.jobs.send(Msg::Stop);
        if let Some(pump) = self.pump_thread.take() {
            if pump.join().is_err() {
                tracing::error!("bridge-pump thread panicked");
            }
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.runtime_thread.take() {
            if thread.join().is_err() {
                tracing::error!("lnd-bridge thread panicked");
            }
        }
    }
}

/// What the worker cores hold: non-blocking entry points into the bridge.
#[derive(Clone)]
pub struct BridgeHandle {
    shared: Arc<Shared>,
}

// Worker cores on other threads hold and clone handles.
const _: fn() = || {
    fn send_sync_clone<T: Send + Sync + Clone>() {}
    send_sync_clone::<BridgeHandle>();
};

/// One unit of the in-flight bound, released when the call finishes or is dropped unrun
/// (refused by the channel, left in it at shutdown, or canceled with the runtime).
struct Permit(Arc<Shared>);

impl Permit {
    fn acquire(shared: &Arc<Shared>) -> Result<Permit, BridgeError> {
        let prev = shared.in_flight.fetch_add(1, Ordering::AcqRel);
        if prev >= shared.capacity {
            shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(BridgeError::QueueFull);
        }
        Ok(Permit(shared.clone()))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl BridgeHandle {
    /// Queues an `L402`-memo invoice for `amount_sat`; never blocks. Fails at once with
    /// `QueueFull` at capacity, `Closed` after shutdown, `InvalidRequest` for a zero or
    /// oversized amount, `Backend("authentication is disabled")` on a disabled bridge. The
    /// reply carries `Timeout` if `call_timeout` passes first.
    pub fn try_create_invoice(&self, amount_sat: u64) -> Result<InvoiceReply, BridgeError> {
        self.try_create_invoice_with(InvoiceRequest::l402(amount_sat))
    }

    /// Like [`Self::try_create_invoice`] with an explicit memo.
    pub fn try_create_invoice_with(
        &self,
        req: InvoiceRequest,
    ) -> Result<InvoiceReply, BridgeError> {
        req.validate()?;
        let (reply, rx) = oneshot::channel();
        self.enqueue(Call::Create { req, reply })?;
        Ok(rx)
    }

    /// Queues a lookup of `payment_hash`'s state; never blocks. A hash the backend does
    /// not know answers `Ok(InvoiceState::Unknown)`. Fails at once like
    /// [`Self::try_create_invoice`] (`QueueFull`, `Closed`, disabled backend); the reply
    /// carries `Timeout` or `Backend` errors.
    pub fn try_lookup_invoice(&self, payment_hash: [u8; 32]) -> Result<LookupReply, BridgeError> {
        let (reply, rx) = oneshot::channel();
        self.enqueue(Call::Lookup {
            payment_hash,
            reply,
        })?;
        Ok(rx)
    }

    /// The shared admission path: closed and disabled checks, the in-flight bound, the
    /// channel.
    fn enqueue(&self, call: Call) -> Result<(), BridgeError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(BridgeError::Closed);
        }
        if let Backend::Disabled = self.shared.backend {
            return Err(BridgeError::Backend(DISABLED_REASON.into()));
        }
        let permit = Permit::acquire(&self.shared)?;
        let job = Job {
            call,
            enqueued: Instant::now(),
            permit,
        };
        // A refused job is dropped here, releasing its permit.
        match self.shared.jobs.try_send(Msg::Call(job)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(BridgeError::QueueFull),
            Err(TrySendError::Disconnected(_)) => Err(BridgeError::Closed),
        }
    }

    /// Whether the backend is reachable; see [`Bridge::backend_connected`].
    pub fn backend_connected(&self) -> bool {
        self.shared.backend.stats().connected
    }

    /// Connection state and subscription counters, for readiness and metrics.
    pub fn backend_stats(&self) -> BackendStats {
        self.shared.backend.stats()
    }

    /// Registers an event sink; it receives every event published from now on, and its
    /// stream ends when the bridge shuts down.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Event> {
        let rx = self.shared.events.subscribe();
        if self.shared.closed.load(Ordering::Acquire) {
            self.shared.events.close(); // keep "ends after shutdown" for late subscribers
        }
        rx
    }

    /// Sends `event` to every subscriber (e.g. a `TokenRevoked` from the admin path).
    pub fn publish(&self, event: Event) {
        self.shared.events.publish(&event);
    }

    /// Dev backend only (no-op otherwise): waits `delay` before creating each invoice, so
    /// tests can hold calls in flight to saturate the queue or trip `call_timeout`.
    pub fn set_dev_delay(&self, delay: Duration) {
        match &self.shared.backend {
            Backend::Dev(dev) => dev.set_delay(delay),
            Backend::Lnd(_) | Backend::Disabled => {}
        }
    }

    /// Calls currently queued or running on the bridge (for metrics and tests).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests;
