//! lnd-bridge: the one side thread that talks to Lightning backends for the worker cores.
//!
//! Owns a tokio current-thread runtime on an OS thread named `lnd-bridge`, the backend it
//! drives (today the embedded dev backend; lnd later), and the event fan-out. The worker
//! cores run monoio and must never block, so every entry point here is non-blocking:
//! [`BridgeHandle::try_create_invoice`] either queues the call at once or fails at once with
//! [`BridgeError::QueueFull`]; replies come back on `futures_channel` oneshots, whose wakers
//! may cross threads. Only plain Rust types cross this crate's public API.
//!
//! Calls are queued by spawning them straight onto the runtime through its `Handle` (safe
//! from any thread, it wakes the runtime's reactor), so no pump thread is needed. The queue
//! bound is a counter of calls in flight (queued or running), which is what load shedding
//! must bound: every call runs concurrently, there is no serial queue to measure.

mod dev;
mod events;
pub mod protocol;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use futures_channel::{mpsc, oneshot};

pub use dev::key::NODE_KEY_FILE;
pub use protocol::{
    BridgeError, Event, Invoice, InvoiceRequest, DEFAULT_MEMO, MAX_INVOICE_SAT, MAX_MEMO_BYTES,
};

use dev::DevBackend;
use events::EventBus;

/// Default bound on calls in flight.
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;
/// Default per-call deadline, counted from the moment the call is queued.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The reply to one invoice call. Awaiting it yields `Err(Canceled)` only if the bridge
/// shut down before answering; treat that as [`BridgeError::Closed`].
pub type InvoiceReply = oneshot::Receiver<Result<Invoice, BridgeError>>;

/// Bitcoin network; decides the BOLT11 prefix (`lnbc`, `lntb`, `lnbcrt`, `lnsb`, `lntbs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Network {
    Mainnet,
    Testnet,
    Regtest,
    Simnet,
    Signet,
}

/// Which Lightning backend the bridge drives. (lnd is added by a later change.)
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

/// The backend the runtime drives; an enum so lnd can join without dynamic dispatch.
enum Backend {
    Dev(Arc<DevBackend>),
}

impl Backend {
    async fn create_invoice(&self, req: &InvoiceRequest) -> Result<Invoice, BridgeError> {
        match self {
            Backend::Dev(dev) => dev.create_invoice(req).await,
        }
    }
}

/// State shared by the bridge owner and every handle.
struct Shared {
    rt: tokio::runtime::Handle,
    backend: Backend,
    events: Arc<EventBus>,
    in_flight: AtomicUsize,
    capacity: usize,
    call_timeout: Duration,
    closed: AtomicBool,
}

/// A running bridge. Dropping it (or [`Bridge::shutdown`]) stops the runtime and joins
/// its thread; outstanding calls then resolve as canceled and event streams end.
pub struct Bridge {
    shared: Arc<Shared>,
    wallet_addr: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the bridge thread. Key, port and runtime errors are returned here, never
/// raised later on the bridge thread.
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
    let (backend, wallet_addr) = {
        // Socket registration needs the runtime's reactor in context.
        let _ctx = rt.enter();
        match &cfg.backend {
            BackendConfig::Dev {
                basedir,
                wallet_listen,
                network,
            } => {
                let (dev, listener) = dev::open(basedir, *wallet_listen, *network, events.clone())?;
                let addr = listener
                    .local_addr()
                    .map_err(|e| BridgeError::WalletListen {
                        addr: wallet_listen.to_string(),
                        reason: e.to_string(),
                    })?;
                rt.spawn(dev::wallet::serve(listener, dev.clone()));
                (Backend::Dev(dev), Some(addr))
            }
        }
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = rt.handle().clone();
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
    let shared = Arc::new(Shared {
        rt: handle,
        backend,
        events,
        in_flight: AtomicUsize::new(0),
        capacity: cfg.queue_capacity,
        call_timeout: cfg.call_timeout,
        closed: AtomicBool::new(false),
    });
    Ok(Bridge {
        shared,
        wallet_addr,
        stop: Some(stop),
        thread: Some(thread),
    })
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
        }
    }

    /// Stops the runtime and joins the bridge thread.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.events.close();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
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

/// One unit of the in-flight bound, released when the call's task finishes or is dropped.
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
    /// oversized amount. The reply carries `Timeout` if `call_timeout` passes first.
    pub fn try_create_invoice(&self, amount_sat: u64) -> Result<InvoiceReply, BridgeError> {
        self.try_create_invoice_with(InvoiceRequest::l402(amount_sat))
    }

    /// Like [`Self::try_create_invoice`] with an explicit memo.
    pub fn try_create_invoice_with(
        &self,
        req: InvoiceRequest,
    ) -> Result<InvoiceReply, BridgeError> {
        req.validate()?;
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(BridgeError::Closed);
        }
        let permit = Permit::acquire(&self.shared)?;
        let deadline = tokio::time::Instant::now() + self.shared.call_timeout;
        let (tx, rx) = oneshot::channel();
        let shared = self.shared.clone();
        // If the runtime is already gone the task is dropped unrun: `rx` sees Canceled.
        self.shared.rt.spawn(async move {
            let _permit = permit;
            if tx.is_canceled() {
                return; // the caller gave up; skip the signing work
            }
            let work = shared.backend.create_invoice(&req);
            let res = tokio::time::timeout_at(deadline, work)
                .await
                .unwrap_or(Err(BridgeError::Timeout));
            let _ = tx.send(res);
        });
        Ok(rx)
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
        }
    }

    /// Calls currently queued or running on the bridge (for metrics and tests).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests;
