//! Per-core keep-alive pool of upstream connections, keyed by upstream address. Core-local
//! (`RefCell`), so taking and returning a connection is a vector push/pop with no lock. A small
//! pool of our own instead of `monoio-transports`, which drags in an aws-lc C build. Generic over
//! the stream, so `https` upstreams get a pool of TLS connections beside the plain-TCP one.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use monoio::net::TcpStream;

use super::io::{BufStream, Io};
use super::{CoreCtx, Limits, Route};
use crate::upstream_tls::UpstreamTls;

/// A TLS connection to an `https` upstream.
pub type TlsUpstream = monoio_rustls::ClientTlsStream<TcpStream>;

/// Idle upstream connections of one core. A list of upstreams scanned in order rather than a
/// map: a core talks to a handful of upstreams, and hashing a `SocketAddr` with SipHash twice per
/// request (take and put) cost about 300 instructions, more than the scan.
///
/// Hygiene without a clock read on the request path: a per-core sweeper ([`sweep_forever`])
/// advances a one-second tick, closes connections idle past the idle timeout and any the
/// upstream closed meanwhile; each connection is stamped with the tick it was pooled at. A
/// connection idle for a tick or more is probed (a non-blocking `poll(2)`) before reuse, so one
/// the upstream closed is dropped instead of failing a request; under load connections are
/// reused within the tick and never probed.
pub struct Pool<S = TcpStream> {
    idle: RefCell<Vec<(SocketAddr, Vec<Idle<S>>)>>,
    max_idle_per_upstream: usize,
    /// Idle connections now, all upstreams together.
    total: Cell<usize>,
    tick: Cell<u64>,
    /// Connections found closed at `take` since the sweeper last counted them.
    dropped: Cell<usize>,
}

/// One pooled connection: the tick it was pooled at and the connection.
struct Idle<S> {
    since: u64,
    conn: BufStream<S>,
}

/// Why [`Pool::put`] or the sweep closed a connection, for the eviction counter.
pub type Evicted = usize;

impl<S: Io> Pool<S> {
    /// An empty pool keeping at most `max_idle_per_upstream` idle connections per address.
    pub fn new(max_idle_per_upstream: usize) -> Self {
        Self {
            idle: RefCell::new(Vec::new()),
            max_idle_per_upstream,
            total: Cell::new(0),
            tick: Cell::new(0),
            dropped: Cell::new(0),
        }
    }

    /// The most recently returned idle connection to `addr` (warmest first) that is still
    /// open; the closed ones it drops on the way are counted at the next sweep.
    pub fn take(&self, addr: SocketAddr) -> Option<BufStream<S>> {
        let mut idle = self.idle.borrow_mut();
        let (_, list) = idle.iter_mut().find(|(a, _)| *a == addr)?;
        while let Some(entry) = list.pop() {
            self.total.set(self.total.get() - 1);
            if entry.since == self.tick.get() || entry.conn.raw_fd().is_none_or(still_open) {
                return Some(entry.conn);
            }
            self.dropped.set(self.dropped.get() + 1);
        }
        None
    }

    /// Returns a connection whose last response was read completely. `limits` decide whether
    /// it is kept: pooling off (`upstreamidletimeout: 0`) or the core's cap reached closes it.
    pub fn put(&self, addr: SocketAddr, conn: BufStream<S>, limits: &Limits) {
        if !conn.is_drained()
            || limits.upstream_idle_timeout.is_zero()
            || self.total.get() >= limits.upstream_max_idle
        {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let at = match idle.iter().position(|(a, _)| *a == addr) {
            Some(at) => at,
            None => {
                idle.push((addr, Vec::new()));
                idle.len() - 1
            }
        };
        let list = &mut idle[at].1;
        if list.len() >= self.max_idle_per_upstream {
            return;
        }
        let since = self.tick.get();
        list.push(Idle { since, conn });
        self.total.set(self.total.get() + 1);
    }

    /// One sweep: advances the tick, then closes connections idle for `idle_timeout` or more
    /// and those the upstream closed. Returns how many it closed.
    pub fn sweep(&self, idle_timeout: Duration) -> Evicted {
        let tick = self.tick.get() + 1;
        self.tick.set(tick);
        let max_age = idle_timeout.as_secs().max(1);
        let mut idle = self.idle.borrow_mut();
        let before = self.total.get();
        for (_, list) in idle.iter_mut() {
            list.retain(|e| tick - e.since < max_age && e.conn.raw_fd().is_none_or(still_open));
        }
        idle.retain(|(_, list)| !list.is_empty());
        let now: usize = idle.iter().map(|(_, l)| l.len()).sum();
        self.total.set(now);
        before - now + self.dropped.replace(0)
    }

    /// Idle connections to `addr` now.
    pub fn idle_count(&self, addr: SocketAddr) -> usize {
        let idle = self.idle.borrow();
        idle.iter()
            .find(|(a, _)| *a == addr)
            .map_or(0, |(_, l)| l.len())
    }

    /// Idle connections now, all upstreams together.
    pub fn total(&self) -> usize {
        self.total.get()
    }

    /// Drops every idle connection (shutdown, reload).
    pub fn clear(&self) {
        self.idle.borrow_mut().clear();
        self.total.set(0);
    }
}

/// Whether an idle connection is still usable: not readable (an idle upstream sends nothing;
/// readable means it closed, reset, or sent bytes nobody asked for). Never blocks.
fn still_open(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid `pollfd` on the stack and a zero timeout: only reads the socket state.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 0
}

/// The core's sweeper: once a second, both pools drop expired and closed idle connections.
pub async fn sweep_forever(core: std::rc::Rc<CoreCtx>) {
    loop {
        monoio::time::sleep(Duration::from_secs(1)).await;
        if core.shutdown.is_set() {
            return;
        }
        let within = core.routes().limits.upstream_idle_timeout;
        let closed = core.pool.sweep(within) + core.tls_pool.sweep(within);
        if closed > 0 {
            core.counters().add(
                crate::metrics::Counter::UpstreamPoolEvictions,
                closed as u64,
            );
        }
    }
}

/// Opens a new upstream connection within `within`.
pub async fn connect(addr: SocketAddr, within: Duration) -> io::Result<BufStream> {
    let stream = match monoio::time::timeout(within, TcpStream::connect_addr(addr)).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "upstream connect timed out",
            ))
        }
    };
    // Requests and responses are written whole; Nagle would only add latency.
    let _ = stream.set_nodelay(true);
    let fd = stream.as_raw_fd();
    Ok(BufStream::new(stream).with_fd(fd))
}

/// Opens a TLS connection (TCP connect and handshake, both within `within`) offering the ALPN
/// protocols of `config`.
pub async fn connect_tls(
    addr: SocketAddr,
    tls: &UpstreamTls,
    config: &std::sync::Arc<rustls::ClientConfig>,
    within: Duration,
) -> io::Result<(TlsUpstream, RawFd)> {
    let connector = monoio_rustls::TlsConnector::from(config.clone());
    let handshake = async {
        let tcp = TcpStream::connect_addr(addr).await?;
        let _ = tcp.set_nodelay(true);
        let fd = tcp.as_raw_fd();
        let tls = connector
            .connect(tls.server_name.clone(), tcp)
            .await
            .map_err(|e| io::Error::other(format!("TLS handshake: {e}")))?;
        Ok((tls, fd))
    };
    match monoio::time::timeout(within, handshake).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "upstream connect or TLS handshake timed out",
        )),
    }
}

/// An upstream stream type the HTTP/1.1 forwarder runs on: where its idle connections live and
/// how a new one is opened. Monomorphised, so the plain-TCP path pays nothing for TLS.
#[allow(async_fn_in_trait)] // cores are single-threaded: the futures never need `Send`
pub trait Upstream: Io + Sized {
    /// This core's pool of idle connections of this type.
    fn pool(core: &CoreCtx) -> &Pool<Self>;
    /// Opens a new connection to `route`'s upstream within `within`.
    async fn open(route: &Route, within: Duration) -> io::Result<BufStream<Self>>;
}

impl Upstream for TcpStream {
    fn pool(core: &CoreCtx) -> &Pool<Self> {
        &core.pool
    }

    async fn open(route: &Route, within: Duration) -> io::Result<BufStream<Self>> {
        connect(route.upstream, within).await
    }
}

impl Upstream for TlsUpstream {
    fn pool(core: &CoreCtx) -> &Pool<Self> {
        &core.tls_pool
    }

    async fn open(route: &Route, within: Duration) -> io::Result<BufStream<Self>> {
        let tls = route
            .upstream_tls
            .as_ref()
            .ok_or_else(|| io::Error::other("no TLS settings for this upstream"))?;
        let (stream, fd) = connect_tls(route.upstream, tls, &tls.h1, within).await?;
        Ok(BufStream::new(stream).with_fd(fd))
    }
}
