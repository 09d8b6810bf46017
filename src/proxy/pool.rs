//! Per-core keep-alive pool of upstream connections, keyed by upstream address. Core-local
//! (`RefCell`), so taking and returning a connection is a vector push/pop with no lock. A small
//! pool of our own instead of `monoio-transports`, which drags in an aws-lc C build.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use monoio::net::TcpStream;

use super::io::BufStream;

/// Idle upstream connections of one core.
pub struct Pool {
    idle: RefCell<HashMap<SocketAddr, Vec<BufStream>>>,
    max_idle_per_upstream: usize,
}

impl Pool {
    /// An empty pool keeping at most `max_idle_per_upstream` idle connections per address.
    pub fn new(max_idle_per_upstream: usize) -> Self {
        Self {
            idle: RefCell::new(HashMap::new()),
            max_idle_per_upstream,
        }
    }

    /// The most recently returned idle connection to `addr` (warmest first).
    pub fn take(&self, addr: SocketAddr) -> Option<BufStream> {
        self.idle.borrow_mut().get_mut(&addr)?.pop()
    }

    /// Returns a connection whose last response was read completely.
    pub fn put(&self, addr: SocketAddr, conn: BufStream) {
        if !conn.is_drained() {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(addr).or_default();
        if list.len() < self.max_idle_per_upstream {
            list.push(conn);
        }
    }

    /// Idle connections to `addr` now.
    pub fn idle_count(&self, addr: SocketAddr) -> usize {
        self.idle.borrow().get(&addr).map_or(0, Vec::len)
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
