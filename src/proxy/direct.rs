//! Non-blocking `recv(2)` / `send(2)` on a plain TCP socket, tried before an io_uring operation
//! is submitted for the same read or write.
//!
//! Owns only that attempt and the per-thread switch that enables it; never waits, never touches
//! a socket that has an operation in flight (callers hold the stream mutably for the whole read
//! or write), never a TLS stream (its bytes must go through the TLS state).
//!
//! Why: on monoio's epoll driver a read or write is first tried with the system call, and only
//! a socket that is not ready waits for readiness. Its io_uring driver submits every read and
//! write as an operation instead, even when the bytes are already there: each one then costs a
//! submission entry, a completion, a wake-up and another poll of the task, and every read with
//! a deadline arms a timer because it is pending at its first poll. For a paid HTTP/1.1 request
//! (read the request, write it upstream, read the answer, write it back) that was 3.3–3.8 k
//! user-space instructions more than the epoll driver (docs/performance.md). Trying the call
//! first makes the ready case cost what it costs on epoll; a socket that is not ready falls back
//! to the io_uring operation, so waiting stays on the ring.

use std::any::Any;
use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use monoio::net::TcpStream;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
}

/// Turns the attempt on for this thread's streams (the worker does when its runtime is the
/// io_uring driver; the epoll driver already tries the call itself).
pub fn set_enabled(on: bool) {
    ON.with(|c| c.set(on));
}

/// Whether this thread tries calls first (its runtime is the io_uring driver).
#[inline]
pub fn enabled() -> bool {
    ON.with(Cell::get)
}

/// The socket of `stream` when it is plain TCP and this thread tries calls first.
#[inline]
pub fn fd_of<S: 'static>(stream: &mut S) -> Option<RawFd> {
    let tcp = (stream as &mut dyn Any).downcast_mut::<TcpStream>()?;
    ON.with(Cell::get).then(|| tcp.as_raw_fd())
}

/// What one attempt did.
#[derive(Debug)]
pub enum Try {
    /// This many bytes moved (`0` on a read: the peer closed).
    Done(usize),
    /// The socket is not ready: submit the operation.
    NotReady,
    /// The socket failed.
    Failed(io::Error),
}

fn outcome(n: isize) -> Try {
    if n >= 0 {
        return Try::Done(n as usize);
    }
    // The common failure (not ready) is told by errno alone, without building an error.
    // SAFETY: reads this thread's errno, set by the call that just failed.
    let errno = unsafe { *libc::__errno_location() };
    match errno {
        libc::EAGAIN | libc::EINTR => Try::NotReady,
        #[allow(unreachable_patterns)] // EWOULDBLOCK == EAGAIN on Linux.
        libc::EWOULDBLOCK => Try::NotReady,
        _ => Try::Failed(io::Error::from_raw_os_error(errno)),
    }
}

/// Reads into the spare capacity of `buf` (appending) without blocking.
pub fn recv(fd: RawFd, buf: &mut Vec<u8>) -> Try {
    let spare = buf.spare_capacity_mut();
    if spare.is_empty() {
        return Try::NotReady;
    }
    // SAFETY: the pointer and length describe `buf`'s spare capacity, which lives for the call;
    // the kernel writes at most that many bytes there. `fd` is the caller's open socket.
    let n = unsafe {
        libc::recv(
            fd,
            spare.as_mut_ptr().cast(),
            spare.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n > 0 {
        // SAFETY: the kernel initialised the first `n` (≤ spare.len()) bytes of the spare room.
        unsafe { buf.set_len(buf.len() + n as usize) };
    }
    outcome(n)
}

/// Writes as much of `bytes` as the socket takes now, without blocking.
pub fn send(fd: RawFd, bytes: &[u8]) -> Try {
    // SAFETY: `bytes` is valid for reads of its length during the call; `fd` is the caller's
    // open socket. MSG_NOSIGNAL: a closed peer is an error, not SIGPIPE.
    let n = unsafe {
        libc::send(
            fd,
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    outcome(n)
}

/// Sends what the socket takes of `bytes` now, in as many calls as it keeps taking them: the
/// count, which is short when the rest must wait for an io_uring write.
pub fn send_ready(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    let mut at = 0;
    while at < bytes.len() {
        match send(fd, &bytes[at..]) {
            Try::Done(0) | Try::NotReady => break,
            Try::Done(n) => at += n,
            Try::Failed(e) => return Err(e),
        }
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    #[test]
    fn recv_appends_what_is_there_and_says_when_nothing_is() {
        let (mut client, server) = pair();
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(b"ab");
        assert!(matches!(recv(server.as_raw_fd(), &mut buf), Try::NotReady));
        client.write_all(b"cd").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match recv(server.as_raw_fd(), &mut buf) {
                Try::Done(n) => {
                    assert_eq!(n, 2);
                    break;
                }
                Try::NotReady => assert!(std::time::Instant::now() < deadline, "never read"),
                Try::Failed(e) => panic!("{e}"),
            }
        }
        assert_eq!(buf, b"abcd");
        drop(client);
        loop {
            match recv(server.as_raw_fd(), &mut buf) {
                Try::Done(n) => {
                    assert_eq!(n, 0, "a closed peer reads as 0");
                    break;
                }
                Try::NotReady => assert!(std::time::Instant::now() < deadline, "close never seen"),
                Try::Failed(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn recv_into_a_full_buffer_submits_instead() {
        let (mut client, server) = pair();
        client.write_all(b"x").unwrap();
        let mut buf = Vec::new();
        assert!(matches!(recv(server.as_raw_fd(), &mut buf), Try::NotReady));
    }

    #[test]
    fn send_writes_and_fails_on_a_reset_peer() {
        let (client, mut server) = pair();
        assert!(matches!(send(client.as_raw_fd(), b"hi"), Try::Done(2)));
        let mut got = [0u8; 2];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
        // A reset (linger 0) peer: the next sends fail instead of blocking or raising SIGPIPE.
        let sock = socket2::SockRef::from(&server);
        sock.set_linger(Some(std::time::Duration::ZERO)).unwrap();
        drop(server);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match send(client.as_raw_fd(), b"more") {
                Try::Failed(_) => break,
                _ => assert!(std::time::Instant::now() < deadline, "never failed"),
            }
        }
    }

    #[test]
    fn only_plain_tcp_on_an_enabled_thread_is_tried() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, _server) = pair();
            client.set_nonblocking(true).unwrap();
            let mut tcp = TcpStream::from_std(client).unwrap();
            set_enabled(false);
            assert!(fd_of(&mut tcp).is_none());
            set_enabled(true);
            assert_eq!(fd_of(&mut tcp), Some(tcp.as_raw_fd()));
            let mut other = 5u32;
            assert!(fd_of(&mut other).is_none());
            set_enabled(false);
        });
    }
}
