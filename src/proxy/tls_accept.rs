//! TLS termination for one downstream connection, on the core that accepted it. The ClientHello
//! is read first and parsed (rustls's `Acceptor`, fed from a copy of the bytes) only to see
//! whether the client offers ALPN `h2`; the real handshake then replays those bytes:
//! - `h2` offered (the server prefers it, so it is what rustls will select): monoio-rustls,
//!   split into read and write halves (its read and write buffers are separate) for the native
//!   HTTP/2 connection ([`super::h2n::conn`]), which reads and writes at once;
//! - otherwise HTTP/1.1 on monoio-rustls over the socket (owned io_uring buffers, the fast path);
//! - ALPN `acme-tls/1` alone (an autocert TLS-ALPN-01 validation): the handshake, which shows the
//!   challenge certificate, is all the validator wants; the connection is closed after it.
//!
//! Every failure (EOF, garbage, timeout, handshake error) is counted in
//! `tls_handshake_failures` and logged at debug level; nothing here panics on network input.

use std::io::Cursor;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, PrefixedReadIo};
use monoio::net::TcpStream;
use monoio::time::Instant;

use super::conn::serve_h1;
use super::io::BufStream;
use super::CoreCtx;
use crate::metrics::Counter;

/// Longest a TLS handshake (ClientHello included) may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest ClientHello we buffer before giving up (rustls caps a handshake message at 64 KiB).
const MAX_HELLO: usize = 80 * 1024;
/// The acceptor over one server config, shared by a core's connections (a cheap clone).
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: monoio_rustls::TlsAcceptor,
}

impl TlsAcceptor {
    /// The acceptor for `config` (its ALPN list decides what each connection negotiates).
    pub fn new(config: Arc<rustls::ServerConfig>) -> Self {
        Self {
            inner: monoio_rustls::TlsAcceptor::from(config),
        }
    }
}

/// Terminates TLS on this core, then serves the protocol ALPN picked (`h2` or HTTP/1.1).
pub async fn serve_tls(
    core: Rc<CoreCtx>,
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) {
    // The PROXY header comes first, before the TLS handshake.
    let Some(peer) = super::conn::client_of(&core, &stream, peer).await else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let within = core.routes().limits.read_timeout.min(HANDSHAKE_TIMEOUT);
    let deadline = Instant::now() + within;
    let mut stream = stream;
    let (hello, hello_kind) = match monoio::time::timeout(within, client_hello(&mut stream)).await {
        Ok(Ok(read)) => read,
        Ok(Err(why)) => return handshake_failed(&core, peer, &why),
        Err(_) => return handshake_failed(&core, peer, &"timed out"),
    };
    let left = deadline.saturating_duration_since(Instant::now());
    // One handshake for every kind, the ClientHello's bytes replayed.
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let io = PrefixedReadIo::new(stream, Cursor::new(hello));
    let tls = match monoio::time::timeout(left, acceptor.inner.accept(io)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return handshake_failed(&core, peer, &e),
        Err(_) => return handshake_failed(&core, peer, &"timed out"),
    };
    match hello_kind {
        Hello::Acme => {
            tracing::info!(core = core.id, %peer, "answered a TLS-ALPN-01 validation");
        }
        Hello::H2 => {
            use monoio::io::Splitable;
            if tls.alpn_protocol().as_deref() != Some(crate::tls::ALPN_H2) {
                // Cannot happen with our ALPN list (h2 first); never serve h2 unannounced.
                return handshake_failed(&core, peer, &"h2 offered but not negotiated");
            }
            // The native HTTP/2 connection reads and writes at once: monoio-rustls keeps
            // separate read and write buffers, so its halves may run concurrently.
            let (read, write) = tls.into_split();
            super::h2n::conn::serve(core, read, write, Vec::new(), peer, fd, false).await
        }
        Hello::Other => serve_h1(core, BufStream::new(tls), peer, fd).await,
    }
}

fn handshake_failed(core: &CoreCtx, peer: SocketAddr, why: &dyn std::fmt::Display) {
    core.counters().incr(Counter::TlsHandshakeFailures);
    tracing::debug!(core = core.id, %peer, "TLS handshake failed: {why}");
}

/// What a ClientHello asks for, as far as choosing the handshake goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hello {
    /// Offers ALPN `h2` (the server prefers it, so it is what rustls will select).
    H2,
    /// Offers ALPN `acme-tls/1` alone: an ACME TLS-ALPN-01 validation.
    Acme,
    /// Anything else: HTTP/1.1.
    Other,
}

/// Reads until a whole ClientHello is in; returns every byte read and what it asks for.
async fn client_hello(stream: &mut TcpStream) -> Result<(Vec<u8>, Hello), String> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut seen: Vec<u8> = Vec::with_capacity(2048);
    loop {
        if seen.len() >= MAX_HELLO {
            return Err("ClientHello too large".into());
        }
        let start = seen.len();
        seen.reserve(4096);
        let cap = seen.capacity();
        let (res, slice) = stream
            .read(std::mem::take(&mut seen).slice_mut(start..cap))
            .await;
        seen = slice.into_inner();
        match res {
            Ok(0) => return Err("closed before the ClientHello".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
        let mut fresh = &seen[start..];
        while !fresh.is_empty() {
            match acceptor.read_tls(&mut fresh) {
                Ok(0) => return Err("ClientHello not accepted".into()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => return Ok((seen, kind_of(&accepted.client_hello()))),
            Ok(None) => {}
            Err((e, _alert)) => return Err(e.to_string()),
        }
    }
}

/// What the ClientHello's ALPN list asks for.
fn kind_of(hello: &rustls::server::ClientHello<'_>) -> Hello {
    if crate::acme::is_acme_hello(hello) {
        Hello::Acme
    } else if hello
        .alpn()
        .is_some_and(|mut offered| offered.any(|p| p == crate::tls::ALPN_H2))
    {
        Hello::H2
    } else {
        Hello::Other
    }
}
