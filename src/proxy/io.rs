//! A byte stream (plain TCP or TLS) with an owned read buffer, in the shape io_uring wants:
//! buffers are handed to the kernel by value and come back with the result. Reads append to the
//! unread window; writes take a buffer and give it back so callers can reuse one allocation per
//! connection. Generic over the stream so HTTP/1.1 runs unchanged over TLS; on plain TCP the
//! relay still hands the buffer's slice straight to the kernel (no copy).

use std::future::Future;
use std::io;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::deadline;
use super::direct::{self, Try};

/// Initial read buffer size: one typical request head plus a small body in one read.
pub const READ_BUF: usize = 16 * 1024;

/// What a connection runs on: anything monoio can read and write by ownership.
pub trait Io: AsyncReadRent + AsyncWriteRent + 'static {}

impl<T: AsyncReadRent + AsyncWriteRent + 'static> Io for T {}

/// A stream and the bytes read from it that nobody consumed yet.
pub struct BufStream<S = TcpStream> {
    /// The socket (or TLS stream).
    pub stream: S,
    buf: Vec<u8>,
    pos: usize,
    /// The socket under the stream (under TLS too), when the opener recorded it: the pool
    /// probes idle connections through it, and dropping the stream shuts it down at once.
    fd: Option<ShutdownOnDrop>,
    /// The plain TCP socket to try reads on before submitting one (io_uring cores only).
    direct: Option<std::os::fd::RawFd>,
}

/// Shuts a socket down (both directions) when dropped. monoio closes a descriptor only once
/// the operations still in flight on it are cancelled, a turn of the event loop later; an
/// upstream exchange dropped for a client that left must end *now*, so its upstream sees the
/// FIN at once and a connection-count bound is exact, not one loop turn behind.
#[derive(Debug)]
struct ShutdownOnDrop(std::os::fd::RawFd);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        // SAFETY: the descriptor belongs to the stream this guard sits beside and is still
        // open (monoio closes it later, after this); `shutdown` touches no memory.
        unsafe { libc::shutdown(self.0, libc::SHUT_RDWR) };
    }
}

/// Why a read did not produce bytes.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the stream.
    Eof,
    /// The deadline passed.
    Timeout,
    /// The socket failed.
    Io(io::Error),
    /// The client this read was done for went away (closed, reset its stream): the work is
    /// abandoned.
    Gone,
}

/// How long a read on behalf of a client runs before the client is watched as well. Most
/// upstream answers come sooner, so the hot path pays for no watch at all (one timer either
/// way); a client that leaves is noticed within this plus its own event.
pub const WATCH_AFTER: Duration = Duration::from_millis(50);

impl<S: Io> BufStream<S> {
    /// Wraps a stream with an empty buffer.
    pub fn new(mut stream: S) -> Self {
        Self {
            direct: direct::fd_of(&mut stream),
            stream,
            buf: Vec::with_capacity(READ_BUF),
            pos: 0,
            fd: None,
        }
    }

    /// Records the socket under the stream (which must own it): probed by the pool, shut down
    /// when this is dropped.
    pub fn with_fd(mut self, fd: std::os::fd::RawFd) -> Self {
        self.fd = Some(ShutdownOnDrop(fd));
        self
    }

    /// The socket recorded by [`with_fd`](Self::with_fd).
    pub fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        self.fd.as_ref().map(|g| g.0)
    }

    /// The bytes read but not consumed.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Marks `n` buffered bytes as consumed.
    #[inline]
    pub fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Takes up to `max` buffered bytes out into `out` (appending).
    pub fn take_into(&mut self, out: &mut Vec<u8>, max: usize) -> usize {
        let n = self.data().len().min(max);
        out.extend_from_slice(&self.buf[self.pos..self.pos + n]);
        self.consume(n);
        n
    }

    /// Reads more bytes into the buffer, growing it up to `limit` bytes of unread data.
    /// Returns the number of new bytes; `Eof` when the peer closed.
    pub async fn fill(&mut self, limit: usize) -> Result<usize, ReadError> {
        if self.pos > 0 && self.buf.len() == self.buf.capacity() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.len() == self.buf.capacity() {
            let unread = self.buf.len() - self.pos;
            if unread >= limit {
                return Ok(0);
            }
            self.buf
                .reserve(self.buf.capacity().min(limit - unread).max(1024));
        }
        if let Some(fd) = self.direct {
            match direct::recv(fd, &mut self.buf) {
                Try::Done(0) => return Err(ReadError::Eof),
                Try::Done(n) => return Ok(n),
                Try::Failed(e) => return Err(ReadError::Io(e)),
                Try::NotReady => {}
            }
        }
        let buf = std::mem::take(&mut self.buf);
        let (len, cap) = (buf.len(), buf.capacity());
        let (res, slice) = self.stream.read(buf.slice_mut(len..cap)).await;
        self.buf = slice.into_inner();
        match res {
            Ok(0) => Err(ReadError::Eof),
            Ok(n) => Ok(n),
            Err(e) => Err(ReadError::Io(e)),
        }
    }

    /// [`fill`](Self::fill) with a deadline.
    pub async fn fill_within(
        &mut self,
        limit: usize,
        within: Duration,
    ) -> Result<usize, ReadError> {
        let read = std::pin::pin!(self.fill(limit));
        match deadline::within(read, within).await {
            Ok(r) => r,
            Err(_) => Err(ReadError::Timeout),
        }
    }

    /// [`fill`](Self::fill) with a deadline, for a client that may leave meanwhile: after
    /// [`WATCH_AFTER`] the read also races the future `gone` makes (which should complete when
    /// the client went away); `Err(Gone)` then, and the caller drops the upstream exchange.
    /// `gone` is called only then: the watch future (a timer and a readiness wait, some 400
    /// bytes) is not built, nor moved into this one, for the reads that finish sooner. The read itself is
    /// never dropped and re-issued, so no byte the kernel already delivered is lost.
    pub async fn fill_watched<G: Future<Output = ()>>(
        &mut self,
        limit: usize,
        within: Duration,
        gone: impl FnOnce() -> G,
    ) -> Result<usize, ReadError> {
        let mut read = std::pin::pin!(self.fill(limit));
        if let Ok(r) = deadline::within(read.as_mut(), within.min(WATCH_AFTER)).await {
            return r;
        }
        if within <= WATCH_AFTER {
            return Err(ReadError::Timeout);
        }
        let left = within - WATCH_AFTER;
        monoio::select! {
            r = &mut read => r,
            _ = monoio::time::sleep(left) => Err(ReadError::Timeout),
            _ = gone() => Err(ReadError::Gone),
        }
    }

    /// Writes all of `buf`, returning it (unchanged) for reuse or a retry.
    pub async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let mut at = 0;
        if let Some(fd) = self.direct {
            match direct::send_ready(fd, &buf) {
                Ok(n) => at = n,
                Err(e) => return (Err(e), buf),
            }
            if at == buf.len() {
                return (Ok(()), buf);
            }
        }
        let len = buf.len();
        let (res, slice) = self
            .stream
            .write_all(monoio::buf::IoBuf::slice(buf, at..len))
            .await;
        (res.map(|_| ()), slice.into_inner())
    }

    /// Writes the first `n` unread bytes of this stream's buffer to `dst` without copying them,
    /// then consumes them.
    pub async fn relay_to<D: Io>(
        &mut self,
        dst: &mut D,
        n: usize,
        within: Duration,
    ) -> io::Result<()> {
        let n = n.min(self.data().len());
        if n == 0 {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        let (res, buf) = write_rolling(dst, buf, self.pos..self.pos + n, within).await;
        self.buf = buf.ok_or_else(timed_out)?;
        res?;
        self.consume(n);
        Ok(())
    }

    /// [`write_all`](Self::write_all) with a rolling deadline: each write the peer takes
    /// gives it `within` again (Go aperture's rolling `writetimeout`), so a slow reader that
    /// keeps reading is never cut and one that stopped is. On timeout the buffer is lost.
    pub async fn write_all_within(
        &mut self,
        buf: Vec<u8>,
        within: Duration,
    ) -> io::Result<Vec<u8>> {
        let len = buf.len();
        match write_rolling(&mut self.stream, buf, 0..len, within).await {
            (Ok(()), Some(buf)) => Ok(buf),
            (Err(e), _) => Err(e),
            (Ok(()), None) => Err(timed_out()),
        }
    }

    /// Swaps the buffer for `spare` (empty, with room to read into) when the unread bytes are
    /// exactly the whole buffer and `n` long: the bytes then live on in `spare` without a copy
    /// (a metered response's last read, kept for its tail). Returns whether it swapped.
    pub fn swap_exact(&mut self, n: usize, spare: &mut Vec<u8>) -> bool {
        if self.pos != 0 || self.buf.len() != n || !spare.is_empty() || spare.capacity() == 0 {
            return false;
        }
        std::mem::swap(&mut self.buf, spare);
        true
    }

    /// The read buffer's capacity (the most one read takes).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// [`write_all_within`](Self::write_all_within) that hands `buf` back after an I/O error
    /// too (not after a timeout).
    pub async fn write_all_keep(
        &mut self,
        buf: Vec<u8>,
        within: Duration,
    ) -> (io::Result<()>, Option<Vec<u8>>) {
        let len = buf.len();
        write_rolling(&mut self.stream, buf, 0..len, within).await
    }

    /// Takes the unread bytes out (to hand a connection to another protocol).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let rest = self.data().to_vec();
        self.buf.clear();
        self.pos = 0;
        rest
    }

    /// Whether the read buffer is empty (the connection can be pooled without leftovers).
    pub fn is_drained(&self) -> bool {
        self.pos == self.buf.len()
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "write timed out")
}

/// Writes `buf[range]` to `dst`, each write within `within` of the previous one's progress.
/// The buffer comes back unless a write timed out (its in-flight write owns it then).
async fn write_rolling<D: AsyncWriteRent + 'static>(
    dst: &mut D,
    mut buf: Vec<u8>,
    range: std::ops::Range<usize>,
    within: Duration,
) -> (io::Result<()>, Option<Vec<u8>>) {
    let mut at = range.start;
    if let Some(fd) = direct::fd_of(dst) {
        match direct::send_ready(fd, &buf[range.clone()]) {
            Ok(n) => at += n,
            Err(e) => return (Err(e), Some(buf)),
        }
    }
    while at < range.end {
        let slice = monoio::buf::IoBuf::slice(buf, at..range.end);
        let write = std::pin::pin!(dst.write(slice));
        let (res, slice) = match deadline::within(write, within).await {
            Ok(r) => r,
            Err(_) => return (Err(timed_out()), None),
        };
        buf = slice.into_inner();
        match res {
            Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), Some(buf)),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (Err(e), Some(buf)),
        }
    }
    (Ok(()), Some(buf))
}
