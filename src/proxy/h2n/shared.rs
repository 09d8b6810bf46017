//! The state one HTTP/2 connection shares between its reader (frames in), its writer (bytes
//! out) and its streams' work: the stream table, each stream's I/O slot (request body received,
//! response data queued), both flow-control directions, the HPACK encoder and the one output
//! buffer every frame is written into, in order.
//!
//! Single-threaded (one core): `RefCell`s borrowed only inside synchronous calls, never across
//! an await. Must not do I/O or read the clock; the driver ([`super::conn`]) does.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::Waker;

use bytes::Bytes;
use http::HeaderMap;

use super::frame::{self, ErrorCode, H2Error, MAX_WINDOW};
use super::guard::FloodMeter;
use super::hpack::Encoder;
use super::stream::FieldSink;
use super::streams::{Key, Streams};

/// Output buffered past this makes a stream's sender wait for the writer (the client is slow
/// to read): memory per connection stays bounded by it plus the client's windows.
pub const HIGH_WATER: usize = 256 * 1024;

/// The connection-wide state.
pub struct Inner {
    pub streams: Streams,
    /// Each live stream's I/O slot, by [`Key`].
    pub io: Vec<Option<Rc<StreamIo>>>,
    /// Frames waiting for the writer.
    pub out: Vec<u8>,
    pub encoder: Encoder,
    /// Scratch for one header block.
    pub block: Vec<u8>,
    /// What we may still send on the connection.
    pub send_window: i64,
    /// The peer's SETTINGS_MAX_FRAME_SIZE.
    pub peer_max_frame: u32,
    /// Our per-stream receive window (SETTINGS_INITIAL_WINDOW_SIZE we sent).
    pub stream_window: u32,
    /// Our connection receive window and the bytes consumed since we last granted more.
    pub conn_window: u32,
    pub conn_recv_left: i64,
    pub conn_unacked: u32,
    /// Streams with data queued or waiting for the writer to drain.
    pub blocked: VecDeque<Rc<StreamIo>>,
    pub writer: Option<Waker>,
    /// The connection is over: nothing more is written, every stream is gone.
    pub closed: bool,
    /// A GOAWAY went out (or came in): close once no stream is live.
    pub draining: bool,
    /// Frames that cost work without moving a request, and unread replies.
    pub flood: FloodMeter,
}

/// One stream's I/O slot, shared by the connection and the stream's work.
pub struct StreamIo {
    pub st: RefCell<StreamState>,
}

#[derive(Default)]
pub struct StreamState {
    pub id: u32,
    pub key: u32,
    /// Request body chunks not taken yet.
    pub recv: VecDeque<Bytes>,
    /// Bytes in `recv` (counted against our windows until taken).
    pub recv_buffered: usize,
    pub recv_end: bool,
    pub trailers: Option<HeaderMap>,
    /// What the client may still send on the stream.
    pub recv_left: i64,
    /// Bytes taken since we last granted more.
    pub recv_unacked: u32,
    /// Reset (by either side) or the connection ended: the stream's work is abandoned.
    pub gone: bool,
    /// The response head went out.
    pub head_sent: bool,
    /// END_STREAM was written (or is queued behind `send`).
    pub end_queued: bool,
    pub ended: bool,
    /// Response data waiting for window, and trailers to send after it.
    pub send: VecDeque<Bytes>,
    pub send_trailers: Option<HeaderMap>,
    /// The stream's work finished (its handle dropped): arriving body bytes are discarded.
    pub detached: bool,
    /// Whether the stream is on the connection's blocked list.
    pub listed: bool,
    pub recv_waker: Option<Waker>,
    pub send_waker: Option<Waker>,
}

impl StreamState {
    fn wake(&mut self) {
        if let Some(w) = self.recv_waker.take() {
            w.wake();
        }
        if let Some(w) = self.send_waker.take() {
            w.wake();
        }
    }
}

/// The connection's shared state.
pub type Shared = Rc<RefCell<Inner>>;

impl Inner {
    pub fn new(streams: Streams, stream_window: u32, conn_window: u32) -> Self {
        Inner {
            streams,
            io: Vec::new(),
            out: Vec::with_capacity(16 * 1024),
            encoder: Encoder::default(),
            block: Vec::new(),
            send_window: 65_535,
            peer_max_frame: frame::MIN_MAX_FRAME_SIZE,
            stream_window,
            conn_window,
            conn_recv_left: conn_window as i64,
            conn_unacked: 0,
            blocked: VecDeque::new(),
            writer: None,
            closed: false,
            draining: false,
            flood: FloodMeter::default(),
        }
    }

    /// Wakes the writer: there is output.
    pub fn kick(&mut self) {
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }

    /// The I/O slot of `key`.
    pub fn io_of(&self, key: Key) -> Option<&Rc<StreamIo>> {
        self.io.get(key.0 as usize)?.as_ref()
    }

    /// Registers a newly opened stream's slot.
    pub fn attach(&mut self, key: Key, id: u32, recv_end: bool) -> Rc<StreamIo> {
        let io = Rc::new(StreamIo {
            st: RefCell::new(StreamState {
                id,
                key: key.0,
                recv_end,
                recv_left: self.stream_window as i64,
                ..StreamState::default()
            }),
        });
        let i = key.0 as usize;
        if self.io.len() <= i {
            self.io.resize(i + 1, None);
        }
        self.io[i] = Some(io.clone());
        io
    }

    /// The stream at `key` is closed in the table: its slot is released (the work keeps its
    /// handle; the slot can be reused for a new stream).
    pub fn detach_slot(&mut self, key: Key) {
        if let Some(slot) = self.io.get_mut(key.0 as usize) {
            *slot = None;
        }
    }

    /// Whether `st`'s stream still holds its table slot (not closed, not reused).
    pub fn live(&self, st: &StreamState) -> bool {
        self.streams.get(Key(st.key)).is_some_and(|s| s.id == st.id)
    }

    /// Ends a stream from our side with RST_STREAM `code`; `client_error` counts it toward the
    /// MadeYouReset limit.
    pub fn reset_stream(
        &mut self,
        io: &StreamIo,
        code: ErrorCode,
        client_error: bool,
    ) -> Result<(), H2Error> {
        let mut st = io.st.borrow_mut();
        if st.gone {
            return Ok(());
        }
        let live = self.live(&st);
        self.give_up(&mut st);
        if !live {
            return Ok(());
        }
        frame::write_rst_stream(&mut self.out, st.id, code);
        self.kick();
        let key = Key(st.key);
        drop(st);
        self.detach_slot(key);
        self.streams.reset(key, client_error)
    }

    /// The client reset the stream (or the connection ended): its work is abandoned.
    pub fn abandon(&mut self, io: &StreamIo) {
        self.give_up(&mut io.st.borrow_mut());
    }

    /// Marks a stream gone: its queued response dropped, the body bytes still buffered given
    /// back to the connection window, whoever waits on it woken.
    fn give_up(&mut self, st: &mut StreamState) {
        st.gone = true;
        st.send.clear();
        let n = std::mem::take(&mut st.recv_buffered);
        st.recv.clear();
        self.consumed(n);
        st.wake();
    }

    /// `n` request-body bytes left the connection's buffers: grant them again once half the
    /// window is used (one WINDOW_UPDATE per half window, not one per frame).
    pub fn consumed(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.conn_unacked += n as u32;
        if self.conn_unacked >= self.conn_window / 2 && !self.closed {
            let inc = std::mem::take(&mut self.conn_unacked);
            self.conn_recv_left += inc as i64;
            frame::write_window_update(&mut self.out, 0, inc);
            self.kick();
        }
    }

    /// A stream's work took `n` bytes: the stream's window too.
    pub fn taken(&mut self, st: &mut StreamState, n: usize) {
        st.recv_buffered -= n;
        self.released(st, n);
    }

    /// `n` bytes counted against `st`'s window and the connection's are done with (taken by
    /// the work, or padding): both windows get them back.
    pub fn released(&mut self, st: &mut StreamState, n: usize) {
        if n == 0 {
            return;
        }
        self.consumed(n);
        if st.recv_end || st.gone || self.closed {
            return;
        }
        st.recv_unacked += n as u32;
        if st.recv_unacked >= self.stream_window / 2 {
            let inc = std::mem::take(&mut st.recv_unacked);
            st.recv_left += inc as i64;
            frame::write_window_update(&mut self.out, st.id, inc);
            self.kick();
        }
    }

    /// Writes a response header block (HEADERS + CONTINUATIONs) for `st`.
    pub fn write_block(&mut self, id: u32, end_stream: bool) {
        let block = std::mem::take(&mut self.block);
        frame::write_headers(&mut self.out, id, &block, end_stream, self.peer_max_frame);
        self.block = block;
        self.block.clear();
        self.kick();
    }

    /// Moves as much of `io`'s queued response data into the output as the windows allow;
    /// true when nothing is left queued.
    pub fn flush_stream(&mut self, io: &Rc<StreamIo>) -> bool {
        let mut st = io.st.borrow_mut();
        if st.gone || self.closed {
            st.send.clear();
            return true;
        }
        let key = Key(st.key);
        if !self.live(&st) {
            st.send.clear();
            return true;
        }
        let mut end_written = false;
        let st = &mut *st;
        let (id, end_queued, has_trailers) = (st.id, st.end_queued, st.send_trailers.is_some());
        while !st.send.is_empty() {
            let single = st.send.len() == 1;
            let Some(chunk) = st.send.front_mut() else {
                break;
            };
            let window = self.streams.get(key).map_or(0, |s| s.send_window);
            let allowed = window.min(self.send_window).max(0) as usize;
            let n = chunk.len().min(allowed).min(self.peer_max_frame as usize);
            if n == 0 && !chunk.is_empty() {
                self.kick();
                return false;
            }
            let piece = chunk.split_to(n);
            let last = chunk.is_empty() && single;
            let end = last && end_queued && !has_trailers;
            self.write_data(key, id, &piece, end);
            if chunk.is_empty() {
                st.send.pop_front();
            }
            if end {
                st.ended = true;
                end_written = true;
            }
        }
        self.kick();
        if end_written {
            self.ended(key);
        } else if st.end_queued && !st.ended {
            self.finish(st);
        }
        true
    }

    /// One DATA frame of `data` on stream `id` (slot `key`), counted against both send
    /// windows; the caller checked they allow it.
    pub fn write_data(&mut self, key: Key, id: u32, data: &[u8], end: bool) {
        let flags = if end { frame::flag::END_STREAM } else { 0 };
        frame::write_header(&mut self.out, data.len(), frame::kind::DATA, flags, id);
        self.out.extend_from_slice(data);
        let n = data.len() as i64;
        self.send_window -= n;
        if let Some(s) = self.streams.get_mut(key) {
            s.send_window -= n;
        }
    }

    /// Ends a stream whose data all went out: trailers, or an empty END_STREAM DATA frame.
    fn finish(&mut self, st: &mut StreamState) {
        let key = Key(st.key);
        match st.send_trailers.take() {
            Some(t) => {
                let mut block = std::mem::take(&mut self.block);
                self.encoder.begin_block(&mut block);
                FieldSink::new(&mut self.encoder, &mut block).map(&t);
                self.block = block;
                self.write_block(st.id, true);
            }
            None => frame::write_header(
                &mut self.out,
                0,
                frame::kind::DATA,
                frame::flag::END_STREAM,
                st.id,
            ),
        }
        st.ended = true;
        self.ended(key);
    }

    /// END_STREAM went out on `key`.
    pub fn ended(&mut self, key: Key) {
        self.streams.send_end(key);
        if self.streams.get(key).is_none() {
            self.detach_slot(key);
        }
    }

    /// The windows grew or the writer drained: queued streams move on, waiting senders wake.
    pub fn pump(&mut self) {
        for _ in 0..self.blocked.len() {
            let Some(io) = self.blocked.pop_front() else {
                break;
            };
            let done = self.flush_stream(&io);
            let mut st = io.st.borrow_mut();
            // Woken on any progress: the sender's wait is rolling, and re-lists itself.
            if let Some(w) = st.send_waker.take() {
                w.wake();
            }
            if done && self.out.len() <= HIGH_WATER {
                st.listed = false;
            } else {
                drop(st);
                self.blocked.push_back(io);
            }
        }
    }

    /// Queues `io` to be pumped (its data waits for window, or its sender for the writer).
    pub fn list(&mut self, io: &Rc<StreamIo>) {
        let mut st = io.st.borrow_mut();
        if !st.listed {
            st.listed = true;
            drop(st);
            self.blocked.push_back(io.clone());
        }
    }

    /// The connection is over: every stream's work is abandoned.
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        for io in self.io.iter().flatten() {
            let mut st = io.st.borrow_mut();
            st.gone = true;
            st.wake();
        }
        for io in &self.blocked {
            let mut st = io.st.borrow_mut();
            st.gone = true;
            st.wake();
        }
        self.blocked.clear();
        self.kick();
    }

    /// Queues GOAWAY with `code` (the last stream id the client opened).
    pub fn goaway(&mut self, code: ErrorCode, debug: &[u8]) {
        if self.closed {
            return;
        }
        let last = self.streams.last_client();
        self.streams.goaway(last);
        frame::write_goaway(&mut self.out, last, code, debug);
        self.draining = true;
        self.kick();
    }

    /// Whether the peer's window change keeps every window legal.
    pub fn grow_send_window(&mut self, inc: u32) -> Result<(), H2Error> {
        self.send_window += inc as i64;
        if self.send_window > MAX_WINDOW as i64 {
            return Err(H2Error::Connection(
                ErrorCode::FlowControlError,
                "connection window over 2^31-1",
            ));
        }
        Ok(())
    }
}
