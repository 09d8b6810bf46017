//! One blocking connection to Redis (plain TCP or rustls), with AUTH and the lease script loaded.
//! Used only by the fleet thread: blocking reads and writes with timeouts, never on a worker core.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::resp::{self, Reply};
use crate::config::Redis;

/// The lease script (see the file for its contract).
pub const LEASE_SCRIPT: &str = include_str!("lease.lua");

/// Why talking to Redis failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Resp(#[from] resp::RespError),
    #[error("Redis answered: {0}")]
    Server(String),
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("unexpected reply to {0}")]
    Unexpected(&'static str),
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// The TLS client config for `redis.tls` (built once, at start).
pub fn tls_config(cfg: &Redis) -> Result<Arc<ClientConfig>, ConnError> {
    let mut roots = RootCertStore::empty();
    match &cfg.tls_ca_file {
        Some(path) => {
            let certs = crate::tls::read_certs(path).map_err(|e| ConnError::Tls(e.to_string()))?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| ConnError::Tls(format!("{}: {e}", path.display())))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A live connection with the lease script loaded.
pub struct Conn {
    stream: Stream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// SHA1 of the lease script, as Redis reported it.
    pub sha: String,
}

impl Conn {
    /// Connects, authenticates and loads the lease script, each step bounded by `cfg.timeout`.
    pub fn open(cfg: &Redis, tls: Option<&Arc<ClientConfig>>) -> Result<Conn, ConnError> {
        let addrs: Vec<_> = cfg
            .address
            .to_socket_addrs()
            .map_err(|_| ConnError::Resolve(cfg.address.clone()))?
            .collect();
        let mut last = None;
        let mut tcp = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, cfg.timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = match (tcp, last) {
            (Some(s), _) => s,
            (None, Some(e)) => return Err(e.into()),
            (None, None) => return Err(ConnError::Resolve(cfg.address.clone())),
        };
        tcp.set_nodelay(true)?;
        set_timeout(&tcp, cfg.timeout)?;
        let stream = match tls {
            None => Stream::Plain(tcp),
            Some(config) => {
                let host = host_of(&cfg.address);
                let name = ServerName::try_from(host.to_owned())
                    .map_err(|e| ConnError::Tls(format!("server name {host:?}: {e}")))?;
                let conn = ClientConnection::new(config.clone(), name)
                    .map_err(|e| ConnError::Tls(e.to_string()))?;
                Stream::Tls(Box::new(StreamOwned::new(conn, tcp)))
            }
        };
        let mut conn = Conn {
            stream,
            rbuf: Vec::with_capacity(4096),
            wbuf: Vec::with_capacity(4096),
            sha: String::new(),
        };
        if let Some(password) = &cfg.password {
            let reply = match &cfg.username {
                Some(user) => conn.call(&[b"AUTH", user.as_bytes(), password.as_bytes()])?,
                None => conn.call(&[b"AUTH", password.as_bytes()])?,
            };
            ok_or_error(reply, "AUTH")?;
        }
        conn.load_script()?;
        Ok(conn)
    }

    /// (Re)loads the lease script (`SCRIPT LOAD`), e.g. after `NOSCRIPT`.
    pub fn load_script(&mut self) -> Result<(), ConnError> {
        match self.call(&[b"SCRIPT", b"LOAD", LEASE_SCRIPT.as_bytes()])? {
            Reply::Bulk(Some(sha)) => {
                self.sha = String::from_utf8_lossy(&sha).into_owned();
                Ok(())
            }
            Reply::Error(e) => Err(ConnError::Server(e)),
            _ => Err(ConnError::Unexpected("SCRIPT LOAD")),
        }
    }

    /// One command, one reply.
    pub fn call(&mut self, args: &[&[u8]]) -> Result<Reply, ConnError> {
        self.queue(args);
        self.flush()?;
        self.read_reply()
    }

    /// Queues a command (pipelining: [`Conn::flush`] sends them all).
    pub fn queue(&mut self, args: &[&[u8]]) {
        resp::encode(args, &mut self.wbuf);
    }

    /// Sends what was queued.
    pub fn flush(&mut self) -> Result<(), ConnError> {
        self.stream.write_all(&self.wbuf)?;
        self.stream.flush()?;
        self.wbuf.clear();
        Ok(())
    }

    /// The next reply, reading as much as it takes.
    pub fn read_reply(&mut self) -> Result<Reply, ConnError> {
        loop {
            if let Some((reply, used)) = resp::parse(&self.rbuf)? {
                self.rbuf.drain(..used);
                return Ok(reply);
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            self.rbuf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn set_timeout(tcp: &TcpStream, timeout: Duration) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))
}

fn ok_or_error(reply: Reply, what: &'static str) -> Result<(), ConnError> {
    match reply {
        Reply::Simple(_) => Ok(()),
        Reply::Error(e) => Err(ConnError::Server(e)),
        _ => Err(ConnError::Unexpected(what)),
    }
}

/// The host part of `host:port` (`[v6]:port` without brackets).
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn host_of_address() {
        assert_eq!(host_of("redis.example:6379"), "redis.example");
        assert_eq!(host_of("[::1]:6379"), "::1");
        assert_eq!(host_of("10.0.0.1:1"), "10.0.0.1");
    }
}
