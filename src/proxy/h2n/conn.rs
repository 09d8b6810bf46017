//! The native HTTP/2 server connection on monoio's owned-buffer I/O: the preface and our
//! SETTINGS, then a reader that parses frames in place from its buffer and hands them to
//! `super::dispatch`, and a writer that sends the connection's output buffer as it fills (one
//! write for every frame queued since the last), watching the idle timeout and the core's
//! shutdown (GOAWAY, then close once the streams in flight are done).
//!
//! Owns the connection's tasks and timers; must not decide anything about requests (each
//! stream's work runs in its own task, see [`super::super::h2::serve_native`]).

use std::cell::RefCell;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::time::Instant;

use super::frame::{self, setting, ErrorCode, PREFACE};
use super::guard::{BlockLimits, FloodMeter};
use super::shared::{Inner, Shared};
use super::streams::{Limits, Streams};
use crate::proxy::direct::{self, Try};
use crate::proxy::CoreCtx;

/// Bytes asked of each read.
const READ_CHUNK: usize = 32 * 1024;
/// Our SETTINGS_MAX_FRAME_SIZE (the default: nothing larger is worth buffering).
pub const MAX_FRAME: u32 = frame::MIN_MAX_FRAME_SIZE;

/// Serves one HTTP/2 connection: `buffered` are bytes already read (the preface, sniffed);
/// `fd` is the socket under both halves (shut down when the connection ends, which also ends
/// a read still pending); `plain`: no TLS in between, so on an io_uring core reads and writes
/// first try the system call ([`crate::proxy::direct`]).
pub async fn serve<R, W>(
    core: Rc<CoreCtx>,
    mut read: R,
    write: W,
    buffered: Vec<u8>,
    peer: SocketAddr,
    fd: RawFd,
    plain: bool,
) where
    R: AsyncReadRent + 'static,
    W: AsyncWriteRent + 'static,
{
    let limits = core.routes().limits.clone();
    let cfg = limits.http2;
    let streams = Streams::new(Limits {
        max_concurrent: cfg.max_concurrent_streams,
        ..Limits::default()
    });
    let mut inner = Inner::new(
        streams,
        cfg.initial_stream_window,
        cfg.initial_connection_window,
    );
    inner.flood = FloodMeter::default();
    frame::write_settings(
        &mut inner.out,
        &[
            (setting::MAX_CONCURRENT_STREAMS, cfg.max_concurrent_streams),
            (setting::INITIAL_WINDOW_SIZE, cfg.initial_stream_window),
            (setting::MAX_HEADER_LIST_SIZE, cfg.max_header_list_size),
        ],
    );
    if cfg.initial_connection_window > 65_535 {
        frame::write_window_update(&mut inner.out, 0, cfg.initial_connection_window - 65_535);
    }
    let shared: Shared = Rc::new(RefCell::new(inner));
    let direct = (plain && direct::enabled()).then_some(fd);
    monoio::spawn(write_loop(
        core.clone(),
        shared.clone(),
        write,
        fd,
        direct,
        cfg.idle_timeout,
    ));
    let mut reader = super::dispatch::Reader::new(
        core.clone(),
        shared.clone(),
        peer,
        cfg.max_header_list_size as usize,
        BlockLimits {
            max_bytes: (2 * cfg.max_header_list_size as usize).max(16 * 1024),
            max_frames: 32,
        },
    );
    let mut buf = buffered;
    if buf.capacity() < READ_CHUNK {
        buf.reserve(READ_CHUNK - buf.len());
    }
    // The preface within the read timeout (a client that connects and says nothing is closed).
    if !preface(&mut read, &mut buf, limits.read_timeout).await {
        shared.borrow_mut().close();
        return shutdown(fd);
    }
    let mut pos = PREFACE.len();
    while let Ok(used) = reader.frames(&buf[pos..]) {
        pos += used;
        if pos == buf.len() {
            buf.clear();
            pos = 0;
        } else if pos > 0 && buf.capacity() - buf.len() < READ_CHUNK / 2 {
            buf.copy_within(pos.., 0);
            buf.truncate(buf.len() - pos);
            pos = 0;
        }
        if shared.borrow().closed {
            break;
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 2 {
            buf.reserve(READ_CHUNK);
        }
        if let Some(fd) = direct {
            match direct::recv(fd, &mut buf) {
                Try::Done(0) | Try::Failed(_) => break,
                Try::Done(_) => continue,
                Try::NotReady => {}
            }
        }
        let len = buf.len();
        let cap = buf.capacity();
        let (res, slice) = read.read(buf.slice_mut(len..cap)).await;
        buf = slice.into_inner();
        match res {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    // EOF, a read error, or a connection error (its GOAWAY is queued): every stream's work is
    // abandoned; the writer sends what is queued and shuts the socket down. (An HTTP/2 client
    // does not half-close to wait for answers: its FIN means it left, and the work it left
    // behind is cancelled, upstream exchanges included.)
    shared.borrow_mut().close();
}

/// Reads until the 24-byte preface is buffered and checks it.
async fn preface<R: AsyncReadRent>(read: &mut R, buf: &mut Vec<u8>, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while buf.len() < PREFACE.len() {
        if !PREFACE.starts_with(buf) {
            return false;
        }
        let len = buf.len();
        let cap = buf.capacity();
        let op = read.read(std::mem::take(buf).slice_mut(len..cap));
        match monoio::time::timeout_at(deadline, op).await {
            Ok((Ok(n), slice)) if n > 0 => *buf = slice.into_inner(),
            _ => return false,
        }
    }
    buf.starts_with(PREFACE)
}

/// Shuts the socket down both ways: the peer sees the close now, a pending read ends.
fn shutdown(fd: RawFd) {
    // SAFETY: `fd` is the connection's socket, still open (its halves are alive in this
    // connection's tasks); `shutdown` touches no memory.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

/// Sends all of `buf`: on an io_uring core over plain TCP (`direct`) what the socket takes at
/// once by system call, the rest by a write within `within`. The buffer back, emptied; `None`
/// when the connection failed or the client read too slowly.
async fn send_out<W: AsyncWriteRent>(
    write: &mut W,
    mut buf: Vec<u8>,
    direct: Option<RawFd>,
    within: Duration,
) -> Option<Vec<u8>> {
    if let Some(fd) = direct {
        let sent = direct::send_ready(fd, &buf).ok()?;
        if sent == buf.len() {
            buf.clear();
            return Some(buf);
        }
        buf.drain(..sent);
    }
    let op = std::pin::pin!(write.write_all(buf));
    let (res, mut buf) = crate::proxy::deadline::within(op, within).await.ok()?;
    res.ok()?;
    buf.clear();
    Some(buf)
}

/// What woke the writer.
enum Wake {
    Output,
    Done,
    Stop,
    Timer,
}

/// Sends the output buffer as it fills, until the connection is over; watches the idle timeout
/// and the core's shutdown. The idle timer is armed once per idle period and re-armed only when
/// it fires early (a connection with one stream at a time goes idle after every request: a
/// timer per request would cost more than the request's frames).
async fn write_loop<W: AsyncWriteRent>(
    core: Rc<CoreCtx>,
    shared: Shared,
    mut write: W,
    fd: RawFd,
    direct: Option<RawFd>,
    idle: Duration,
) {
    let within = core.routes().limits.write_timeout;
    let mut stop = core.shutdown.wait();
    let mut stopping = false;
    // When the connection last had no live stream (None: it has some now).
    let mut idle_since: Option<Instant> = Some(Instant::now());
    let far = Instant::now() + Duration::from_secs(365 * 86_400);
    let mut timer = std::pin::pin!(monoio::time::sleep_until(if idle.is_zero() {
        far
    } else {
        Instant::now() + idle
    }));
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        let wait = poll_fn(|cx| {
            let mut inner = shared.borrow_mut();
            if !inner.out.is_empty() {
                std::mem::swap(&mut inner.out, &mut buf);
                return Poll::Ready(Wake::Output);
            }
            if inner.closed || (inner.draining && inner.streams.live() == 0) {
                return Poll::Ready(Wake::Done);
            }
            inner.writer = Some(cx.waker().clone());
            Poll::Pending
        });
        let live = shared.borrow().streams.live();
        match (live, idle_since) {
            (0, None) => idle_since = Some(Instant::now()),
            (1.., Some(_)) => idle_since = None,
            _ => {}
        }
        let woke = monoio::select! {
            w = wait => w,
            _ = &mut stop, if !stopping => Wake::Stop,
            _ = timer.as_mut(), if !idle.is_zero() => Wake::Timer,
        };
        match woke {
            Wake::Output => {
                match send_out(&mut write, buf, direct, within).await {
                    Some(sent) => buf = sent,
                    None => break,
                }
                let mut inner = shared.borrow_mut();
                inner.flood.replies_flushed();
                inner.pump();
            }
            Wake::Done => break,
            Wake::Stop => {
                stopping = true;
                // GOAWAY: streams in flight finish, new ones are ignored.
                shared.borrow_mut().goaway(ErrorCode::NoError, b"");
            }
            Wake::Timer => {
                let now = Instant::now();
                let mut inner = shared.borrow_mut();
                let idle_for = idle_since.filter(|_| inner.streams.live() == 0);
                match idle_for {
                    Some(since) if since + idle <= now => {
                        if !inner.draining {
                            tracing::debug!(core = core.id, "h2 connection idle; GOAWAY");
                            inner.goaway(ErrorCode::NoError, b"idle");
                        }
                        timer.as_mut().reset(far);
                    }
                    Some(since) => timer.as_mut().reset(since + idle),
                    None => timer.as_mut().reset(now + idle),
                }
            }
        }
    }
    shared.borrow_mut().close();
    let _ = write.shutdown().await;
    shutdown(fd);
}
