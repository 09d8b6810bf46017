//! The static file server (`servestatic`/`staticroot`, Go aperture's): a request that matches no
//! service (and is not the discovery document) is answered from the `staticroot` directory, on
//! HTTP/1.1 and HTTP/2 alike, as Go's `http.FileServer` would: `index.html` for a directory
//! asked for with a trailing slash, a 301 to add the slash otherwise, a 301 from `…/index.html`
//! to `./`, 404 for anything missing. Unlike Go there are no directory listings (404), only
//! GET and HEAD are served (405 with `Allow`), and symlinks that lead out of the root are never
//! followed (404); a path with a `..` segment, an encoded slash, a backslash, a NUL or a bad
//! escape is refused before any lookup (400, [`rules::safe_path`]). Answers carry
//! `Content-Type` by extension ([`rules::content_type`]), `Content-Length`, `ETag` (size and
//! mtime), `Last-Modified`, `Accept-Ranges`; `If-None-Match` and `If-Modified-Since` give 304,
//! one `Range` gives 206 (416 when outside the file, several ranges get the whole file). Bodies
//! are streamed in [`CHUNK`]s, each write under the rolling `writetimeout` (HTTP/1.1) or the
//! peer's flow-control window (HTTP/2); a file is never loaded whole.
//!
//! **No blocking file I/O on a worker core.** monoio 0.2.4 runs `open`, `statx` and `read` as
//! io_uring operations on the io_uring driver, but on its legacy (epoll) driver it makes the
//! same calls synchronously on the calling thread; and its `open` is a plain `openat(AT_FDCWD)`
//! (no `RESOLVE_BENEATH`, no `realpath` on either driver), so it cannot keep a path inside the
//! root race-free. So:
//! - every path resolution, symlink check, `open` and `fstat` runs on the small off-core pool in
//!   [`files`] (bounded queue; a full one is a 503, a reply later than [`FILE_WAIT`] a 503 too);
//! - the body is read with io_uring (`monoio::fs::File::read_at`) when the core runs io_uring
//!   (a read that would block is punted to the kernel's io-wq workers, never the core), and
//!   through the same pool (`pread`) when it runs epoll.
//!
//! Owns the request-side rules (through [`rules`]), the answer's shape ([`Answer`]; rendered by
//! [`super::respond`]) and the HTTP/1.1 body writer. It must not touch the file system itself
//! (only through [`files`] or an io_uring read) nor any other core state.

pub mod files;
pub mod rules;

use std::cell::Cell;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Synthetic;

use super::deadline;
use super::io::{BufStream, Io};
use super::respond;

/// Bytes read and written per step of a body.
pub const CHUNK: usize = 64 * 1024;

/// How long a request waits for the file pool (a lookup, or a read on the epoll driver) or an
/// io_uring read before it gets 503 (or, mid-body, a closed connection).
pub const FILE_WAIT: Duration = Duration::from_secs(10);

/// How long a body read on the epoll driver waits before asking a full file queue again.
const POOL_RETRY: Duration = Duration::from_millis(2);

/// `Allow` on a 405.
pub const ALLOW: &str = "GET, HEAD";

/// A configured static site: the canonical `staticroot` (validated as a directory at load).
#[derive(Debug)]
pub struct Site {
    /// Canonical, so "under the root" is a prefix check on canonical paths.
    pub root: Arc<Path>,
}

impl Site {
    /// The site at `root` (canonical), starting the file pool if it is not running yet. Call off
    /// the cores (where the routing table is built).
    pub fn new(root: &Path) -> Site {
        files::start();
        Site { root: root.into() }
    }
}

thread_local! {
    static IO_URING: Cell<bool> = const { Cell::new(false) };
}

/// Records whether this thread's monoio runtime is the io_uring driver (the worker calls it once
/// at start). Unset (false): bodies are read through the file pool, which is right everywhere.
pub fn set_io_uring(on: bool) {
    IO_URING.with(|c| c.set(on));
}

/// A file being served: read by io_uring on the core, or by the pool.
pub enum Reader {
    /// io_uring `read` on this core's ring.
    Uring(monoio::fs::File),
    /// `pread` on a pool thread.
    Pool(Arc<std::fs::File>),
}

impl Reader {
    /// Wraps an opened file for this core (no system call either way).
    fn new(file: std::fs::File) -> io::Result<Reader> {
        if IO_URING.with(Cell::get) {
            monoio::fs::File::from_std(file).map(Reader::Uring)
        } else {
            Ok(Reader::Pool(Arc::new(file)))
        }
    }

    /// Reads up to `want` bytes at `offset`, appended to `buf` (which comes back, grown by the
    /// count). `Ok(0)` before the expected end means the file shrank.
    pub async fn read_into(
        &self,
        mut buf: Vec<u8>,
        offset: u64,
        want: usize,
    ) -> (io::Result<usize>, Vec<u8>) {
        let late = || io::Error::new(io::ErrorKind::TimedOut, "static file read timed out");
        match self {
            Reader::Uring(file) => {
                use monoio::buf::IoBufMut;
                buf.reserve(want);
                let start = buf.len();
                let read = std::pin::pin!(file.read_at(buf.slice_mut(start..start + want), offset));
                match deadline::within(read, FILE_WAIT).await {
                    Ok((res, slice)) => (res, slice.into_inner()),
                    Err(_) => (Err(late()), Vec::new()),
                }
            }
            Reader::Pool(file) => {
                // Mid-body, a full queue is waited out (a little at a time, within FILE_WAIT)
                // rather than cutting a transfer that already started.
                let started = monoio::time::Instant::now();
                let rx = loop {
                    match files::read(file.clone(), offset, want, buf) {
                        Ok(rx) => break rx,
                        Err((files::PoolError::Busy, back)) if started.elapsed() < FILE_WAIT => {
                            buf = back;
                            monoio::time::sleep(POOL_RETRY).await;
                        }
                        Err((e, back)) => return (Err(io::Error::other(e)), back),
                    }
                };
                match deadline::within(std::pin::pin!(rx), FILE_WAIT).await {
                    Ok(Ok(done)) => done,
                    Ok(Err(_)) => (Err(io::Error::other(files::PoolError::Gone)), Vec::new()),
                    Err(_) => (Err(late()), Vec::new()),
                }
            }
        }
    }
}

/// What the request says that the static server reads.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ask<'a> {
    /// The method.
    pub method: &'a [u8],
    /// The path, without the query.
    pub path: &'a [u8],
    /// The query without its `?` (empty when none): kept on redirects, as Go does.
    pub query: &'a [u8],
    /// `If-None-Match`.
    pub if_none_match: Option<&'a [u8]>,
    /// `If-Modified-Since`.
    pub if_modified_since: Option<&'a [u8]>,
    /// `Range`.
    pub range: Option<&'a [u8]>,
    /// `If-Range`.
    pub if_range: Option<&'a [u8]>,
}

/// The head of a static answer, as [`respond`] renders it for either protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    /// 200, 206, 301, 304, 405 or 416.
    pub status: u16,
    /// `Content-Type` (with `X-Content-Type-Options: nosniff`).
    pub content_type: Option<&'static str>,
    /// `Content-Length`; none on a 304.
    pub length: Option<u64>,
    /// `ETag` (quoted).
    pub etag: Option<String>,
    /// `Last-Modified`, Unix seconds.
    pub last_modified: Option<u64>,
    /// `Content-Range`.
    pub content_range: Option<String>,
    /// `Location` (a redirect).
    pub location: Option<String>,
    /// `Allow: GET, HEAD` (a 405).
    pub allow: bool,
    /// `Accept-Ranges: bytes`.
    pub accept_ranges: bool,
}

/// The body of a static answer.
pub enum Body {
    /// None.
    Empty,
    /// A short text.
    Text(&'static str),
    /// `len` bytes of a file from `offset`.
    File {
        /// The open file.
        reader: Reader,
        /// First byte.
        offset: u64,
        /// Bytes to send (`Content-Length`).
        len: u64,
    },
}

/// A static answer: its head and body.
pub struct Answer {
    /// The head.
    pub head: Head,
    /// The body (not sent for HEAD).
    pub body: Body,
}

impl Answer {
    fn text(status: u16, text: &'static str) -> Answer {
        Answer {
            head: Head {
                status,
                content_type: Some("text/plain; charset=utf-8"),
                length: Some(text.len() as u64),
                ..Head::default()
            },
            body: Body::Text(text),
        }
    }

    fn redirect(to: &[u8], query: &[u8]) -> Answer {
        let mut location = String::from_utf8_lossy(to).into_owned();
        if !query.is_empty() {
            location.push('?');
            location.push_str(&String::from_utf8_lossy(query));
        }
        Answer {
            head: Head {
                status: 301,
                length: Some(0),
                location: Some(location),
                ..Head::default()
            },
            body: Body::Empty,
        }
    }
}

/// Looks the request up under the site and decides the answer (the file is opened, nothing is
/// read yet). `Err`: a synthetic answer (400 for a refused path, 404, 503 when the file pool is
/// saturated or late).
pub async fn prepare(site: &Site, ask: &Ask<'_>) -> Result<Answer, Synthetic> {
    if !matches!(ask.method, b"GET" | b"HEAD") {
        let mut answer = Answer::text(405, "method not allowed\n");
        answer.head.allow = true;
        return Ok(answer);
    }
    let path = rules::safe_path(ask.path).map_err(|e| {
        tracing::debug!(path = %String::from_utf8_lossy(ask.path), "static path refused: {e}");
        Synthetic::BadRequest("invalid URL path")
    })?;
    // Go's file server sends `…/index.html` to its directory.
    if !path.dir && path.last == b"index.html" {
        return Ok(Answer::redirect(b"./", ask.query));
    }
    let rx = files::open(site.root.clone(), path.rel, path.dir).map_err(|e| match e {
        files::PoolError::Busy => Synthetic::Unavailable { retry_after: 1 },
        files::PoolError::Gone => Synthetic::Internal("static file failure"),
    })?;
    let found = match deadline::within(std::pin::pin!(rx), FILE_WAIT).await {
        Ok(Ok(found)) => found,
        Ok(Err(_)) => return Err(Synthetic::Internal("static file failure")),
        Err(_) => return Err(Synthetic::Unavailable { retry_after: 1 }),
    };
    let opened = match found {
        files::Found::NotFound => return Err(Synthetic::NotFound),
        files::Found::AddSlash => {
            // Relative, as Go's `localRedirect`: the last raw segment plus `/`.
            let raw = ask.path;
            let base = &raw[raw.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1)..];
            let mut to = base.to_vec();
            to.push(b'/');
            return Ok(Answer::redirect(&to, ask.query));
        }
        files::Found::File(opened) => opened,
    };
    let content_type = if opened.index {
        "text/html; charset=utf-8"
    } else {
        rules::content_type(&path.last)
    };
    file_answer(ask, opened, content_type)
}

/// The answer for an opened file: 304, 416, 206 or 200.
fn file_answer(
    ask: &Ask<'_>,
    opened: files::Opened,
    content_type: &'static str,
) -> Result<Answer, Synthetic> {
    let len = opened.len;
    let etag = rules::etag(len, opened.mtime.0, opened.mtime.1);
    let mtime = u64::try_from(opened.mtime.0).unwrap_or(0);
    // RFC 9110 §13.2.2: If-None-Match decides alone when present.
    let not_modified = match ask.if_none_match {
        Some(v) => rules::none_match(v, &etag),
        None => ask
            .if_modified_since
            .and_then(rules::parse_http_date)
            .is_some_and(|since| mtime <= since),
    };
    let mut head = Head {
        status: 200,
        etag: Some(etag),
        last_modified: Some(mtime),
        ..Head::default()
    };
    if not_modified {
        head.status = 304;
        return Ok(Answer {
            head,
            body: Body::Empty,
        });
    }
    head.accept_ranges = true;
    // Range is defined for GET only (RFC 9110 §14.2); a stale If-Range gets the whole file.
    let range = match ask.range {
        Some(r) if ask.method == b"GET" => {
            let current = ask.if_range.is_none_or(|v| {
                rules::if_range_holds(v, head.etag.as_deref().unwrap_or(""), mtime)
            });
            if current {
                rules::parse_range(r, len)
            } else {
                rules::RangeAsk::Whole
            }
        }
        _ => rules::RangeAsk::Whole,
    };
    let (offset, count) = match range {
        rules::RangeAsk::Unsatisfiable => {
            let mut answer = Answer::text(416, "invalid range: failed to overlap\n");
            answer.head.content_range = Some(format!("bytes */{len}"));
            answer.head.etag = head.etag;
            answer.head.last_modified = head.last_modified;
            return Ok(answer);
        }
        rules::RangeAsk::Bytes(first, last) => {
            head.status = 206;
            head.content_range = Some(format!("bytes {first}-{last}/{len}"));
            (first, last - first + 1)
        }
        rules::RangeAsk::Whole => (0, len),
    };
    head.content_type = Some(content_type);
    head.length = Some(count);
    let body = if count == 0 {
        Body::Empty
    } else {
        let reader =
            Reader::new(opened.file).map_err(|_| Synthetic::Internal("static file failure"))?;
        Body::File {
            reader,
            offset,
            len: count,
        }
    };
    Ok(Answer { head, body })
}

/// Writes a static answer on an HTTP/1.1 connection: the head with the first chunk of the body
/// in one write, then a chunk per write, each under the rolling `within`. False when the
/// connection must close (the client stalled or left, or the file shrank mid-body).
pub async fn send_h1<C: Io>(
    answer: Answer,
    client: &mut BufStream<C>,
    head_only: bool,
    close: bool,
    within: Duration,
    out: &mut Vec<u8>,
) -> bool {
    out.clear();
    respond::render_static_h1(&answer.head, close, out);
    let sent = match answer.body {
        Body::Text(text) if !head_only => {
            out.extend_from_slice(text.as_bytes());
            flush(client, out, within).await
        }
        Body::File {
            reader,
            offset,
            len,
        } if !head_only => stream_h1(&reader, offset, len, client, within, out).await,
        _ => flush(client, out, within).await,
    };
    // The per-connection buffer grew to a chunk; a keep-alive connection should not hold it.
    if out.capacity() > 4 * 4096 {
        *out = Vec::with_capacity(4096);
    }
    sent
}

async fn stream_h1<C: Io>(
    reader: &Reader,
    offset: u64,
    len: u64,
    client: &mut BufStream<C>,
    within: Duration,
    out: &mut Vec<u8>,
) -> bool {
    let end = offset.saturating_add(len);
    let mut at = offset;
    while at < end {
        let want = usize::try_from(end - at).map_or(CHUNK, |left| left.min(CHUNK));
        let (res, buf) = reader.read_into(std::mem::take(out), at, want).await;
        *out = buf;
        match res {
            Ok(n) if n > 0 => at += n as u64,
            Ok(_) => {
                tracing::debug!("static file shrank while served; connection closed");
                return false;
            }
            Err(e) => {
                tracing::debug!("static file read failed: {e}");
                return false;
            }
        }
        if !flush(client, out, within).await {
            return false;
        }
    }
    true
}

async fn flush<C: Io>(client: &mut BufStream<C>, out: &mut Vec<u8>, within: Duration) -> bool {
    match client.write_all_within(std::mem::take(out), within).await {
        Ok(buf) => {
            *out = buf;
            out.clear();
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the whole file through `reader` in chunks, as the body writers do.
    async fn read_all(reader: &Reader, len: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < len {
            let want = (len - at).min(CHUNK as u64) as usize;
            let (res, buf) = reader.read_into(std::mem::take(&mut out), at, want).await;
            out = buf;
            let n = res.expect("read");
            assert!(n > 0, "short file");
            at += n as u64;
        }
        out
    }

    fn content() -> (tempfile::NamedTempFile, Vec<u8>) {
        let bytes: Vec<u8> = (0..CHUNK * 3 + 1234).map(|i| (i % 253) as u8).collect();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, &bytes).unwrap();
        (f, bytes)
    }

    #[test]
    fn the_epoll_driver_reads_through_the_pool() {
        let (f, bytes) = content();
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime");
        set_io_uring(false);
        rt.block_on(async {
            let reader = Reader::new(std::fs::File::open(f.path()).unwrap()).unwrap();
            assert!(matches!(reader, Reader::Pool(_)));
            assert!(read_all(&reader, bytes.len() as u64).await == bytes);
            // Past the end: zero bytes, the buffer comes back.
            let (n, buf) = reader
                .read_into(b"x".to_vec(), bytes.len() as u64, 10)
                .await;
            assert_eq!((n.unwrap(), buf.as_slice()), (0, &b"x"[..]));
        });
    }

    #[test]
    fn the_io_uring_driver_reads_on_the_ring() {
        let (f, bytes) = content();
        let Ok(mut rt) = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
        else {
            eprintln!("io_uring unavailable here; the ring reader is not exercised");
            return;
        };
        set_io_uring(true);
        rt.block_on(async {
            let reader = Reader::new(std::fs::File::open(f.path()).unwrap()).unwrap();
            assert!(matches!(reader, Reader::Uring(_)));
            assert!(read_all(&reader, bytes.len() as u64).await == bytes);
            let (n, buf) = reader.read_into(b"ab".to_vec(), 5, 3).await;
            assert_eq!(
                (n.unwrap(), buf.as_slice()),
                (3, &[b'a', b'b', 5, 6, 7][..])
            );
        });
        set_io_uring(false);
    }
}
