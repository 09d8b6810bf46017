//! Noticing that an HTTP/1.1 client went away while its request waits on the upstream, so the
//! upstream exchange is dropped (its connection closed, never pooled) instead of running to the
//! end for nobody: nginx's `proxy_ignore_client_abort off`. Only the socket is looked at, never
//! read: bytes a client pipelined stay where they are. Runs on the worker core; every probe is
//! a non-blocking `poll(2)` with a zero timeout.
//!
//! The wait is event-driven: a duplicate of the client's descriptor (the TLS stream does not
//! hand its socket out) is armed for readability, which a FIN or a reset triggers. A client that
//! already pipelined its next request stays readable, so it is probed on a timer instead.

use std::os::fd::{FromRawFd, RawFd};
use std::time::Duration;

use monoio::net::TcpStream;

/// How often a client with pipelined bytes waiting is probed.
const PROBE_EVERY: Duration = Duration::from_millis(50);

/// What one look at the client socket says.
#[derive(Debug, PartialEq, Eq)]
enum Probe {
    /// Closed, half-closed, reset or failed.
    Gone,
    /// Bytes are waiting (a pipelined request): still there, but readiness says nothing more.
    Data,
    /// Nothing happened.
    Quiet,
}

fn probe(fd: RawFd) -> Probe {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid `pollfd` on the stack and a zero timeout: never blocks, only reads the
    // socket's state.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    if n <= 0 {
        return Probe::Quiet;
    }
    let gone = libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL;
    if p.revents & gone != 0 {
        Probe::Gone
    } else if p.revents & libc::POLLIN != 0 {
        Probe::Data
    } else {
        Probe::Quiet
    }
}

/// Completes when the client on `fd` has gone away; pending forever while it stays. `fd` must
/// stay open while this future lives (the connection that owns it is borrowed by the forward
/// that polls this).
pub async fn closed(fd: RawFd) {
    loop {
        match probe(fd) {
            Probe::Gone => return,
            Probe::Data => monoio::time::sleep(PROBE_EVERY).await,
            Probe::Quiet => {
                if readable(fd).await.is_err() {
                    monoio::time::sleep(PROBE_EVERY).await;
                }
            }
        }
    }
}

/// Waits until `fd` is readable (data, FIN or reset) through a descriptor of our own.
async fn readable(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: `fd` is the live client socket (see `closed`); `F_DUPFD_CLOEXEC` only creates a
    // new descriptor for the same socket and touches no memory.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `dup` was just created and is owned by nobody else; the stream closes it on drop.
    let std = unsafe { std::net::TcpStream::from_raw_fd(dup) };
    let tcp = TcpStream::from_std(std)?;
    tcp.readable(false).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn probes_tell_quiet_data_and_gone_apart() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert_eq!(probe(server.as_raw_fd()), Probe::Quiet);
        client.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while probe(server.as_raw_fd()) != Probe::Data {
            assert!(std::time::Instant::now() < deadline, "data never seen");
        }
        drop(client);
        while probe(server.as_raw_fd()) != Probe::Gone {
            assert!(std::time::Instant::now() < deadline, "close never seen");
        }
    }

    #[test]
    fn closed_completes_when_the_client_leaves() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let fd = server.as_raw_fd();
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async move {
            // The same future before and after the close: armed first, then woken by it.
            let mut watch = std::pin::pin!(closed(fd));
            let left = monoio::time::timeout(Duration::from_millis(50), &mut watch).await;
            assert!(left.is_err(), "a present client is not gone");
            drop(client);
            monoio::time::timeout(Duration::from_secs(5), watch)
                .await
                .expect("the close is seen");
        });
        drop(server);
    }
}
