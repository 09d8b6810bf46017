//! Thread per core (layer 3): one pinned OS thread per core, each with its own monoio runtime
//! (io_uring, or epoll where io_uring is unavailable), its own SO_REUSEPORT listener, its own
//! per-core state and a control inbox. No acceptor thread in the middle and no lock shared by
//! cores: the only cross-core traffic is control messages and immutable `Arc` snapshots.

pub mod listener;
pub mod signal;
pub mod steer;
mod worker;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use futures_channel::mpsc::{self, UnboundedSender};

use crate::metrics::Metrics;
use crate::proxy::Routes;

/// A message to one core.
#[derive(Debug)]
pub enum Control {
    /// Stop accepting, finish in-flight requests within the grace period, then exit.
    Shutdown {
        /// How long in-flight requests may take.
        grace: Duration,
    },
    /// Use this routing snapshot for new requests.
    Routes(Arc<Routes>),
}

/// Errors starting the workers.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("--cores must be at least 1")]
    NoCores,
    #[error("core {core} failed to start: {reason}")]
    Worker { core: usize, reason: String },
}

/// What every worker gets.
pub struct Settings {
    /// Number of worker cores.
    pub cores: usize,
    /// Pin each worker to one CPU of the inherited set.
    pub pin: bool,
    /// Where to listen.
    pub listen: SocketAddr,
    /// The routing table.
    pub routes: Arc<Routes>,
    /// The master secret tokens are derived from.
    pub master_secret: [u8; 32],
    /// The bridge.
    pub bridge: lnd_bridge::BridgeHandle,
    /// Steer connections to cores by client address (CBPF) when any service rate-limits.
    pub steer: bool,
    /// Root keys of imported Go aperture tokens, by sha256(identifier).
    pub legacy_keys: Arc<HashMap<[u8; 32], [u8; 32]>>,
    /// Token ids revoked before start-up.
    pub revoked: Arc<[[u8; 32]]>,
    /// The ledger (minted challenges are recorded there, off the data path).
    pub store: Option<crate::store::StoreHandle>,
    /// TLS termination (`insecure: false`); `None` serves plaintext HTTP/1.1 and h2c.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The Payment scheme's HMAC secret, when `enablempp` is on (read from the database).
    pub payment_secret: Option<[u8; 32]>,
    /// This instance's id as a holder of Payment session leases, when sessions are on.
    pub session_holder: Option<String>,
    /// The fleet-wide rate-limit backend (`ratelimitbackend: redis`); `None`: per instance.
    pub fleet: Option<crate::fleet::FleetHandle>,
}

/// How often the main thread hands freed heap memory back to the kernel.
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Returns free heap pages to the kernel (`malloc_trim`): glibc keeps what a burst freed (h2
/// send buffers, a storm of 402s) in its per-thread arenas, so RSS would stay at the high-water
/// mark of the last burst. Off the worker cores (the main thread, every [`TRIM_EVERY`]); each
/// arena is locked only while it is trimmed.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only walks the allocator's own arenas under their locks; no memory of
    // ours is touched.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The running workers.
pub struct Server {
    addr: SocketAddr,
    metrics: Metrics,
    workers: Vec<(JoinHandle<()>, UnboundedSender<Control>)>,
    drivers: Vec<&'static str>,
}

impl Server {
    /// The bound address (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counters of every core.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// How many worker cores run (`--cores`, clamped to the CPU set when pinned).
    pub fn cores(&self) -> usize {
        self.workers.len()
    }

    /// Which I/O driver each core runs (`io_uring` or `epoll`).
    pub fn drivers(&self) -> &[&'static str] {
        &self.drivers
    }

    /// Sends a control message to every core.
    pub fn broadcast(&self, make: impl Fn() -> Control) {
        for (_, tx) in &self.workers {
            let _ = tx.unbounded_send(make());
        }
    }

    /// Hands every core a new routing snapshot (SIGHUP), first bound to this server's metrics
    /// registry so its services keep (or start) their per-service counters.
    pub fn reload(&self, routes: &Routes) {
        let routes = Arc::new(routes.bind_metrics(&self.metrics));
        self.broadcast(|| Control::Routes(routes.clone()));
    }

    /// Asks every core to drain (without waiting).
    pub fn begin_shutdown(&self, grace: Duration) {
        self.broadcast(|| Control::Shutdown { grace });
    }

    /// Whether every worker thread has exited.
    pub fn finished(&self) -> bool {
        self.workers.iter().all(|(h, _)| h.is_finished())
    }

    /// Drains every core and joins the threads.
    pub fn shutdown(self, grace: Duration) {
        self.begin_shutdown(grace);
        self.join();
    }

    /// Joins the worker threads.
    pub fn join(self) {
        for (handle, _) in self.workers {
            let _ = handle.join();
        }
    }
}

/// How many workers to start. With pinning, one per CPU of the inherited set at most: two pinned
/// workers on one CPU would only time-share it (and `taskset -c 1 aperture --cores 4` most
/// likely means "on CPU 1"), so a larger `--cores` is clamped with a warning. `--no-pin` starts
/// exactly `--cores` workers and leaves placement to the scheduler. An empty set (the affinity
/// could not be read) clamps nothing.
fn pinned_cores(asked: usize, pin: bool, cpus: usize) -> usize {
    if !pin || cpus == 0 || asked <= cpus {
        return asked;
    }
    tracing::warn!(
        cores = asked,
        cpus,
        "--cores is larger than the CPU set this process may run on: starting {cpus} pinned \
         workers (use --no-pin to start {asked} unpinned)"
    );
    cpus
}

/// Binds the listeners and starts one worker per core. Returns once every core is serving.
pub fn start(settings: Settings) -> Result<Server, RuntimeError> {
    if settings.cores == 0 {
        return Err(RuntimeError::NoCores);
    }
    let cpus = if settings.pin {
        worker::cpu_set()
    } else {
        Vec::new()
    };
    let cores = pinned_cores(settings.cores, settings.pin, cpus.len());
    let listeners =
        listener::bind_group(settings.listen, cores).map_err(|source| RuntimeError::Listen {
            addr: settings.listen,
            source,
        })?;
    let addr = listeners[0]
        .local_addr()
        .map_err(|source| RuntimeError::Listen {
            addr: settings.listen,
            source,
        })?;
    let per_client_state = settings.routes.routes.iter().any(|r| {
        !r.service.rate_limits.is_empty()
            || matches!(r.service.auth, crate::config::Auth::Freebie(_))
    }) || !settings.routes.challenge_rate_limits.is_empty();
    if settings.steer && per_client_state {
        // Every connection of one client /24 (/48) lands on the core that owns its buckets.
        if let Err(e) = steer::attach_ip_steering(&listeners[0], cores, addr.is_ipv6()) {
            tracing::warn!("cannot steer connections by client address ({e}); rate-limit decisions for IP keys will hop between cores");
        }
    }
    let metrics = Metrics::new(cores);
    // Bound here, on the starting thread: the cores index their per-service counters directly.
    let routes = Arc::new(settings.routes.bind_metrics(&metrics));
    let (peer_txs, mut peer_rxs): (Vec<_>, Vec<_>) = (0..cores).map(|_| mpsc::unbounded()).unzip();
    let peers: Arc<[_]> = peer_txs.into();
    let mut workers = Vec::with_capacity(cores);
    let mut drivers = Vec::with_capacity(cores);
    for (id, std_listener) in listeners.into_iter().enumerate() {
        let spec = worker::Spec {
            id,
            cpu: cpus.get(id).copied(),
            listener: std_listener,
            routes: routes.clone(),
            master_secret: settings.master_secret,
            bridge: settings.bridge.clone(),
            metrics: metrics.clone(),
            legacy_keys: settings.legacy_keys.clone(),
            revoked: settings.revoked.clone(),
            store: settings.store.clone(),
            peers: peers.clone(),
            peer_inbox: peer_rxs.remove(0),
            tls: settings.tls.clone(),
            payment_secret: settings.payment_secret,
            session_holder: settings.session_holder.clone(),
            fleet: settings.fleet.clone(),
        };
        let (handle, tx, driver) = worker::spawn(spec)?;
        workers.push((handle, tx));
        drivers.push(driver);
    }
    Ok(Server {
        addr,
        metrics,
        workers,
        drivers,
    })
}

#[cfg(test)]
mod tests {
    use super::pinned_cores;

    #[test]
    fn pinned_workers_are_clamped_to_the_cpu_set_and_unpinned_ones_are_not() {
        assert_eq!(pinned_cores(4, true, 1), 1);
        assert_eq!(pinned_cores(2, true, 2), 2);
        assert_eq!(pinned_cores(1, true, 16), 1);
        assert_eq!(pinned_cores(4, false, 1), 4);
        // The set could not be read: nothing to clamp against.
        assert_eq!(pinned_cores(3, true, 0), 3);
    }
}
