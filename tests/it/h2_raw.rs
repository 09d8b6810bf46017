//! Raw HTTP/2 for the abuse tests (tests/it/h2_abuse.rs): frames and HPACK written by hand,
//! a peer over plain TCP (h2c prior knowledge) whose thread reads every frame the proxy sends,
//! floods bounded by a sentinel PING, and a test bed: a proxy on one core with a well-behaved
//! `h2` client requesting through it the whole time. Only the test's thread writes to a peer.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use aperture::proxy::h2n::hpack::{Decoder, HeaderList};
use bytes::Bytes;

use crate::support::{service, Origin, Proxy};

pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub(crate) const DATA: u8 = 0x0;
pub(crate) const HEADERS: u8 = 0x1;
pub(crate) const PRIORITY: u8 = 0x2;
pub(crate) const RST_STREAM: u8 = 0x3;
pub(crate) const SETTINGS: u8 = 0x4;
pub(crate) const PING: u8 = 0x6;
pub(crate) const GOAWAY: u8 = 0x7;
pub(crate) const WINDOW_UPDATE: u8 = 0x8;
pub(crate) const CONTINUATION: u8 = 0x9;
pub(crate) const END_STREAM: u8 = 0x1;
pub(crate) const END_HEADERS: u8 = 0x4;
pub(crate) const ACK: u8 = 0x1;

// Error codes (RFC 9113 §7).
pub(crate) const NO_ERROR: u32 = 0x0;
pub(crate) const PROTOCOL_ERROR: u32 = 0x1;
pub(crate) const FLOW_CONTROL_ERROR: u32 = 0x3;
pub(crate) const STREAM_CLOSED: u32 = 0x5;
pub(crate) const FRAME_SIZE_ERROR: u32 = 0x6;
pub(crate) const REFUSED_STREAM: u32 = 0x7;
pub(crate) const ENHANCE_YOUR_CALM: u32 = 0xb;

/// How long any single wait on the proxy may take before the test fails (a missing protection
/// shows as this deadline passing, never as a slow pass).
pub(crate) const WAIT: Duration = Duration::from_secs(30);

pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1), the prefix's high bits in `first`.
pub(crate) fn hpack_int(first: u8, n: u32, mut value: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A header string literal, not Huffman-coded.
pub(crate) fn hpack_str(s: &[u8], out: &mut Vec<u8>) {
    hpack_int(0, 7, s.len(), out);
    out.extend_from_slice(s);
}

/// `GET /` for authority `proxy` plus `extra` fields, as an HPACK block: static-table indexed
/// pseudo-headers, then literals without indexing (new names).
pub(crate) fn get_block(extra: &[(&str, &[u8])]) -> Vec<u8> {
    // :method GET (2), :scheme http (6), :path / (4).
    let mut out = vec![0x82, 0x86, 0x84];
    // :authority (static name 1), literal without indexing.
    hpack_int(0, 4, 1, &mut out);
    hpack_str(b"proxy", &mut out);
    for (name, value) in extra {
        out.push(0x00);
        hpack_str(name.as_bytes(), &mut out);
        hpack_str(value, &mut out);
    }
    out
}

/// A raw h2c connection that has sent the preface and an empty SETTINGS.
pub(crate) fn raw_h2c(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp.write_all(PREFACE).unwrap();
    tcp.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
    tcp
}

/// The next frame: (type, flags, stream, payload); `None` at EOF or on a read error.
pub(crate) fn read_frame(tcp: &mut impl Read) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    tcp.read_exact(&mut head).ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).ok()?;
    Some((head[3], head[4], stream, payload))
}

/// A well-behaved h2c client on its own connection: GETs until `stop`, every one must be a 200.
/// Returns how many it made.
pub(crate) async fn good_client(addr: SocketAddr, stop: Arc<AtomicBool>) -> usize {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = h2::client::handshake(tcp).await.expect("h2c handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut done = 0;
    // At least a few requests after the abuse ended, so "still served" is observed.
    let mut after = 0;
    while after < 5 {
        if stop.load(Ordering::SeqCst) {
            after += 1;
        }
        send = send
            .ready()
            .await
            .expect("the good connection stays usable");
        let req = http::Request::get("http://proxy/ok").body(()).unwrap();
        let (resp, _) = send.send_request(req, true).expect("send");
        let resp = resp.await.expect("response");
        assert_eq!(resp.status(), 200, "the well-behaved client is served");
        let mut body = resp.into_body();
        while let Some(chunk) = body.data().await {
            let chunk: Bytes = chunk.expect("body");
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        done += 1;
    }
    done
}

pub(crate) fn open_service(origin: &Origin) -> String {
    service("svc", origin.addr, "    auth: \"off\"\n")
}

/// A request block for `path` (`post`: `:method POST`, else GET), authority `proxy`.
pub(crate) fn request_block(post: bool, path: &str) -> Vec<u8> {
    // :method GET (2) or POST (3), :scheme http (6).
    let mut out = vec![if post { 0x83 } else { 0x82 }, 0x86];
    // :path (static name 4) and :authority (1), literals without indexing.
    hpack_int(0, 4, 4, &mut out);
    hpack_str(path.as_bytes(), &mut out);
    hpack_int(0, 4, 1, &mut out);
    hpack_str(b"proxy", &mut out);
    out
}

pub(crate) fn u32s(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

pub(crate) type Frame = (u8, u8, u32, Vec<u8>);

/// How a stream or a connection ended, as the client saw it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A whole response: `:status` and body.
    Response(u16, Vec<u8>),
    /// RST_STREAM on the stream, with this code.
    Reset(u32),
    /// GOAWAY (last-stream-id, code).
    GoAway(u32, u32),
    /// The proxy answered the sentinel PING: it took everything sent before it.
    Answered,
    /// EOF (or a reset socket) without GOAWAY.
    Closed,
}

/// The payload of the PING a flood ends with.
pub(crate) const SENTINEL: [u8; 8] = *b"sentinel";

/// A raw h2c client: the preface and an empty SETTINGS sent, the proxy's SETTINGS acknowledged;
/// a thread reads every frame into a channel (`None`: EOF), so the proxy never blocks writing
/// to it. Only the test's thread writes.
pub(crate) struct Peer {
    tcp: TcpStream,
    rx: mpsc::Receiver<Option<Frame>>,
    hpack: Decoder,
    /// Frames sent since the connection opened (the flood bound counts them).
    pub(crate) frames: usize,
    /// The proxy's SETTINGS_MAX_FRAME_SIZE.
    pub(crate) max_frame: u32,
    /// A header block still coming in CONTINUATIONs.
    block: Vec<u8>,
    /// Streams answering: `:status` and body so far.
    open: HashMap<u32, (Option<u16>, Vec<u8>)>,
    /// Streams that ended, not asked about yet.
    done: HashMap<u32, Outcome>,
}

impl Peer {
    pub(crate) fn open(addr: SocketAddr) -> Peer {
        let mut tcp = raw_h2c(addr);
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        let (kind, flags, _, settings) = read_frame(&mut tcp).expect("the proxy's SETTINGS");
        assert_eq!(
            (kind, flags),
            (SETTINGS, 0),
            "the server preface is SETTINGS"
        );
        tcp.write_all(&frame(SETTINGS, ACK, 0, &[])).unwrap();
        tcp.set_write_timeout(Some(WAIT)).unwrap();
        let mut reader = tcp.try_clone().unwrap();
        reader.set_read_timeout(None).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || loop {
            let next = read_frame(&mut reader);
            let end = next.is_none();
            if tx.send(next).is_err() || end {
                return;
            }
        });
        // SETTINGS_MAX_FRAME_SIZE (0x5), 16,384 unless the proxy says otherwise.
        let max_frame = settings
            .chunks_exact(6)
            .filter(|p| p[..2] == [0, 5])
            .map(|p| u32::from_be_bytes([p[2], p[3], p[4], p[5]]))
            .next_back()
            .unwrap_or(16_384);
        Peer {
            tcp,
            max_frame,
            rx,
            hpack: Decoder::new(4096, 1 << 20),
            frames: 0,
            block: Vec::new(),
            open: HashMap::new(),
            done: HashMap::new(),
        }
    }

    /// Writes frames; false when the proxy has closed the connection. A write that cannot
    /// progress for [`WAIT`] (the proxy stopped reading but kept the connection) fails the test.
    pub(crate) fn send(&mut self, bytes: &[u8]) -> bool {
        match self.tcp.write_all(bytes) {
            Ok(()) => true,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the proxy stopped reading a flooding connection but kept it open")
            }
            Err(_) => false,
        }
    }

    pub(crate) fn next(&self) -> Option<Frame> {
        match self.rx.recv_timeout(WAIT) {
            Ok(f) => f,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("no frame and no close within {WAIT:?}"),
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Waits for the connection's end: GOAWAY or EOF. The sentinel's ACK answers `Answered`.
    pub(crate) fn end(&self) -> Outcome {
        loop {
            match self.next() {
                None => return Outcome::Closed,
                Some((GOAWAY, _, _, p)) => return goaway_of(&p),
                Some((PING, ACK, _, p)) if p == SENTINEL => return Outcome::Answered,
                Some(_) => {}
            }
        }
    }

    /// The end seen so far without waiting, if any.
    pub(crate) fn ended(&self) -> Option<Outcome> {
        while let Ok(f) = self.rx.try_recv() {
            match f {
                None => return Some(Outcome::Closed),
                Some((GOAWAY, _, _, p)) => return Some(goaway_of(&p)),
                Some(_) => {}
            }
        }
        None
    }

    /// After a GOAWAY: the proxy closes the connection.
    pub(crate) fn assert_closes(&self) {
        while self.next().is_some() {}
    }

    /// Sends `batch(i)` for i = 0, 1, … until the proxy says GOAWAY or closes, at most
    /// `max_frames` frames in all (`per` frames a batch); then a PING: its ACK means the proxy
    /// took the whole flood and kept the connection.
    pub(crate) fn flood(
        &mut self,
        max_frames: usize,
        per: usize,
        mut batch: impl FnMut(usize) -> Vec<u8>,
    ) -> Outcome {
        let mut i = 0;
        while self.frames < max_frames {
            if !self.send(&batch(i)) {
                // Closed under us: what the proxy said before is still to be read.
                return self.end();
            }
            self.frames += per;
            i += 1;
            if let Some(end) = self.ended() {
                return end;
            }
        }
        if !self.send(&frame(PING, 0, 0, &SENTINEL)) {
            return self.end();
        }
        self.end()
    }

    /// Ends the connection from our side (FIN both ways) without a GOAWAY.
    pub(crate) fn close(self) {
        let _ = self.tcp.shutdown(std::net::Shutdown::Both);
    }

    /// Sends one request (`GET path`, END_STREAM) on `stream`.
    pub(crate) fn get(&mut self, stream: u32, path: &str) {
        let block = request_block(false, path);
        assert!(self.send(&frame(HEADERS, END_HEADERS | END_STREAM, stream, &block)));
    }

    /// Reads until `stream` ends (or the connection does). Every header block is decoded as it
    /// arrives, so the HPACK table stays in step, and what other streams got is kept for them.
    pub(crate) fn outcome(&mut self, stream: u32) -> Outcome {
        loop {
            if let Some(end) = self.done.remove(&stream) {
                return end;
            }
            let Some((kind, flags, id, payload)) = self.next() else {
                return Outcome::Closed;
            };
            let ends = flags & END_STREAM != 0;
            match kind {
                HEADERS | CONTINUATION => {
                    self.block.extend_from_slice(&payload);
                    if flags & END_HEADERS == 0 {
                        continue;
                    }
                    let mut list = HeaderList::default();
                    let block = std::mem::take(&mut self.block);
                    self.hpack
                        .decode(&block, &mut list)
                        .expect("a valid header block");
                    let (status, _) = self.open.entry(id).or_default();
                    if let (None, Some(s)) = (*status, list.get(b":status")) {
                        *status = std::str::from_utf8(s).ok().and_then(|s| s.parse().ok());
                    }
                }
                DATA => self
                    .open
                    .entry(id)
                    .or_default()
                    .1
                    .extend_from_slice(&payload),
                RST_STREAM => {
                    self.open.remove(&id);
                    self.done.insert(id, Outcome::Reset(code_of(&payload)));
                }
                GOAWAY => return goaway_of(&payload),
                _ => {}
            }
            if ends && matches!(kind, HEADERS | DATA) {
                let (status, body) = self.open.remove(&id).unwrap_or_default();
                let status = status.expect("a response head before END_STREAM");
                self.done.insert(id, Outcome::Response(status, body));
            }
        }
    }
}

pub(crate) fn code_of(payload: &[u8]) -> u32 {
    u32::from_be_bytes(payload[..4].try_into().unwrap())
}

pub(crate) fn goaway_of(payload: &[u8]) -> Outcome {
    let last = u32::from_be_bytes(payload[..4].try_into().unwrap()) & 0x7fff_ffff;
    Outcome::GoAway(last, code_of(&payload[4..]))
}

/// A proxy on one core in front of the fake origin, with a well-behaved client already
/// requesting through it on its own connection.
pub(crate) struct Bed {
    pub(crate) origin: Origin,
    pub(crate) proxy: Proxy,
    stop: Arc<AtomicBool>,
    good: tokio::task::JoinHandle<usize>,
}

/// Starts a [`Bed`] whose config has `top` (e.g. an `http2:` block) besides the defaults.
pub(crate) fn bed(top: &str) -> Bed {
    let origin = Origin::start();
    let proxy = Proxy::start_with(&open_service(&origin), 1, top, 4096);
    let stop = Arc::new(AtomicBool::new(false));
    let good = tokio::spawn(good_client(proxy.addr, stop.clone()));
    Bed {
        origin,
        proxy,
        stop,
        good,
    }
}

impl Bed {
    /// The well-behaved client was served throughout, and no connection task panicked.
    pub(crate) async fn finish(self) {
        self.stop.store(true, Ordering::SeqCst);
        let served = tokio::time::timeout(WAIT, self.good)
            .await
            .expect("the good client finishes in time")
            .expect("the good client saw only 200s");
        assert!(served >= 5);
        let metrics = self.proxy.server().metrics().clone();
        assert_eq!(
            metrics.total(aperture::metrics::Counter::ConnectionPanics),
            0
        );
        self.origin.release();
    }
}

/// The proxy must have answered the flood with GOAWAY ENHANCE_YOUR_CALM, then closed.
pub(crate) fn assert_calmed(peer: &Peer, end: Outcome, what: &str) {
    // `frames` is what was written before the answer was read (socket buffers let the writer
    // run ahead); the bound is that the answer came before the sentinel PING after them.
    eprintln!("{what}: {end:?}, {} frames written", peer.frames);
    assert!(
        matches!(end, Outcome::GoAway(_, ENHANCE_YOUR_CALM)),
        "{what}: expected GOAWAY ENHANCE_YOUR_CALM within {} frames, got {end:?}",
        peer.frames
    );
    peer.assert_closes();
}

/// Reads a raw connection to its end; what it said before closing. Fails when it stays open
/// past [`WAIT`].
pub(crate) fn read_to_close(tcp: &mut TcpStream) -> Vec<u8> {
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let mut said = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return said,
            Ok(n) => said.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the connection is still open after {WAIT:?}")
            }
            Err(_) => return said,
        }
    }
}
