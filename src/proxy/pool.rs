//! Per-core keep-alive pool of upstream connections, keyed by upstream address. Core-local
//! (`RefCell`), so taking and returning a connection is a vector push/pop with no lock. A small
//! pool of our own instead of `monoio-transports`, which drags in an aws-lc C build. Generic over
//! the stream, so `https` upstreams get a pool of TLS connections beside the plain-TCP one.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use monoio::net::TcpStream;

use super::io::{BufStream, Io};
use super::{CoreCtx, Route};
use crate::upstream_tls::UpstreamTls;

/// A TLS connection to an `https` upstream.
pub type TlsUpstream = monoio_rustls::ClientTlsStream<TcpStream>;

/// Idle upstream connections of one core. A list of upstreams scanned in order rather than a
/// map: a core talks to a handful of upstreams, and hashing a `SocketAddr` with SipHash twice per
/// request (take and put) cost about 300 instructions, more than the scan.
pub struct Pool<S = TcpStream> {
    idle: RefCell<Vec<(SocketAddr, Vec<BufStream<S>>)>>,
    max_idle_per_upstream: usize,
}

impl<S: Io> Pool<S> {
    /// An empty pool keeping at most `max_idle_per_upstream` idle connections per address.
    pub fn new(max_idle_per_upstream: usize) -> Self {
        Self {
            idle: RefCell::new(Vec::new()),
            max_idle_per_upstream,
        }
    }

    /// The most recently returned idle connection to `addr` (warmest first).
    pub fn take(&self, addr: SocketAddr) -> Option<BufStream<S>> {
        let mut idle = self.idle.borrow_mut();
        idle.iter_mut().find(|(a, _)| *a == addr)?.1.pop()
    }

    /// Returns a connection whose last response was read completely.
    pub fn put(&self, addr: SocketAddr, conn: BufStream<S>) {
        if !conn.is_drained() {
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
        if list.len() < self.max_idle_per_upstream {
            list.push(conn);
        }
    }

    /// Idle connections to `addr` now.
    pub fn idle_count(&self, addr: SocketAddr) -> usize {
        let idle = self.idle.borrow();
        idle.iter()
            .find(|(a, _)| *a == addr)
            .map_or(0, |(_, l)| l.len())
    }

    /// Drops every idle connection (shutdown, reload).
    pub fn clear(&self) {
        self.idle.borrow_mut().clear();
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
    Ok(BufStream::new(stream))
}

/// Opens a TLS connection (TCP connect and handshake, both within `within`) offering the ALPN
/// protocols of `config`.
pub async fn connect_tls(
    addr: SocketAddr,
    tls: &UpstreamTls,
    config: &std::sync::Arc<rustls::ClientConfig>,
    within: Duration,
) -> io::Result<TlsUpstream> {
    let connector = monoio_rustls::TlsConnector::from(config.clone());
    let handshake = async {
        let tcp = TcpStream::connect_addr(addr).await?;
        let _ = tcp.set_nodelay(true);
        connector
            .connect(tls.server_name.clone(), tcp)
            .await
            .map_err(|e| io::Error::other(format!("TLS handshake: {e}")))
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
        let stream = connect_tls(route.upstream, tls, &tls.h1, within).await?;
        Ok(BufStream::new(stream))
    }
}
