//! What each frame from the client does to the connection (RFC 9113 §5–§6): header blocks
//! assembled and decoded into a request `Head` whose work is spawned, request body bytes
//! delivered under both receive windows, resets, window updates, SETTINGS and PING answered,
//! GOAWAY honoured; every protocol error turned into RST_STREAM or GOAWAY with its code, and
//! the flood and reset limits enforced.
//!
//! Synchronous: it runs between two reads of the connection's reader. Must not await, and must
//! not decide anything about a request beyond its HTTP/2 validity.

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;

use super::frame::{self, setting, ErrorCode, Frame, H2Error};
use super::guard::{Assembly, BlockLimits, Done};
use super::hpack::{Decoder, HeaderList, HpackError};
use super::request;
use super::shared::Shared;
use super::stream::Stream;
use super::streams::{Headers, Key};
use crate::metrics::Counter;
use crate::proxy::h1::Head;
use crate::proxy::CoreCtx;

/// The reader's state: what only frames from the client change.
pub struct Reader {
    core: Rc<CoreCtx>,
    shared: Shared,
    peer: SocketAddr,
    decoder: Decoder,
    list: HeaderList,
    assembly: Assembly,
    block_limits: BlockLimits,
    /// The client's first frame must be SETTINGS (§3.4).
    got_settings: bool,
}

impl Reader {
    pub fn new(
        core: Rc<CoreCtx>,
        shared: Shared,
        peer: SocketAddr,
        max_list: usize,
        block_limits: BlockLimits,
    ) -> Self {
        Reader {
            core,
            shared,
            peer,
            decoder: Decoder::new(4096, max_list),
            list: HeaderList::default(),
            assembly: Assembly::default(),
            block_limits,
            got_settings: false,
        }
    }

    /// Handles every whole frame in `buf`; returns the bytes used. `Err`: the connection is
    /// over (its GOAWAY queued).
    pub fn frames(&mut self, buf: &[u8]) -> Result<usize, ()> {
        let mut used = 0;
        loop {
            let parsed = frame::parse(&buf[used..], super::conn::MAX_FRAME);
            let result = match parsed {
                Ok(None) => return Ok(used),
                Ok(Some((f, n))) => {
                    used += n;
                    self.frame(f)
                }
                Err(e) => Err(skip_after(&buf[used..], e, &mut used)),
            };
            if let Err(e) = result {
                self.error(e)?;
            }
            if self.shared.borrow().closed {
                return Err(());
            }
        }
    }

    /// Answers a protocol error: RST_STREAM for a stream error (a connection error when the
    /// client has caused too many), GOAWAY for a connection error.
    fn error(&mut self, e: H2Error) -> Result<(), ()> {
        let mut inner = self.shared.borrow_mut();
        let fatal = match e {
            H2Error::Stream(id, code, why) => {
                tracing::debug!(core = self.core.id, peer = %self.peer, "h2 stream {id} error: {why}");
                let counted = match inner.streams.find(id) {
                    Some(key) => match inner.io_of(key).cloned() {
                        Some(io) => inner.reset_stream(&io, code, true),
                        // Open in the table without an I/O slot (a malformed request, refused
                        // before its work was spawned): the client still gets its RST_STREAM.
                        None => {
                            frame::write_rst_stream(&mut inner.out, id, code);
                            inner.kick();
                            inner.streams.reset(key, true)
                        }
                    },
                    None => {
                        frame::write_rst_stream(&mut inner.out, id, code);
                        inner.kick();
                        inner.streams.local_error()
                    }
                };
                match counted {
                    Ok(()) => return Ok(()),
                    Err(calm) => calm,
                }
            }
            conn => conn,
        };
        let (code, why) = match fatal {
            H2Error::Connection(code, why) => (code, why),
            H2Error::Stream(_, code, why) => (code, why),
        };
        if code == ErrorCode::EnhanceYourCalm {
            self.core.counters().incr(Counter::H2Calmed);
        }
        tracing::debug!(core = self.core.id, peer = %self.peer, "h2 connection error {code:?}: {why}; GOAWAY");
        inner.goaway(code, why.as_bytes());
        inner.close();
        Err(())
    }

    fn frame(&mut self, f: Frame<'_>) -> Result<(), H2Error> {
        if !self.got_settings {
            if !matches!(f, Frame::Settings { ack: false, .. }) {
                return Err(H2Error::Connection(
                    ErrorCode::ProtocolError,
                    "first frame not SETTINGS",
                ));
            }
            self.got_settings = true;
        }
        if let Frame::Continuation {
            stream,
            block,
            end_headers,
        } = f
        {
            let done = self
                .assembly
                .continuation(stream, block, end_headers, self.block_limits)?;
            return match done {
                Some(done) => self.block(done),
                None => Ok(()),
            };
        }
        self.assembly.check_other_frame()?;
        match f {
            Frame::Headers {
                stream,
                block,
                end_stream,
                end_headers,
                ..
            } => {
                let done = self.assembly.headers(
                    stream,
                    block,
                    end_stream,
                    end_headers,
                    self.block_limits,
                )?;
                match done {
                    Some(done) => self.block(done),
                    None => Ok(()),
                }
            }
            Frame::Data {
                stream,
                data,
                end_stream,
                flow_len,
            } => self.data(stream, data, end_stream, flow_len),
            Frame::RstStream { stream, .. } => {
                let mut inner = self.shared.borrow_mut();
                match inner.streams.recv_rst(stream)? {
                    Some(key) => {
                        if let Some(io) = inner.io_of(key).cloned() {
                            inner.abandon(&io);
                        }
                        inner.detach_slot(key);
                        Ok(())
                    }
                    // A reset of a stream already closed: harmless once, a flood in bulk.
                    None => inner.flood.idle_frame(),
                }
            }
            Frame::WindowUpdate { stream, increment } => {
                let mut inner = self.shared.borrow_mut();
                inner.flood.idle_frame()?;
                if stream == 0 {
                    inner.grow_send_window(increment)?;
                } else if inner
                    .streams
                    .recv_window_update(stream, increment)?
                    .is_none()
                {
                    return Ok(());
                }
                inner.pump();
                Ok(())
            }
            Frame::Settings { ack, params } => {
                let mut inner = self.shared.borrow_mut();
                inner.flood.idle_frame()?;
                if ack {
                    return Ok(());
                }
                for (id, value) in params.iter() {
                    match id {
                        setting::HEADER_TABLE_SIZE => {
                            inner.encoder.set_peer_table_size(value as usize)
                        }
                        setting::INITIAL_WINDOW_SIZE => {
                            inner.streams.set_peer_initial_window(value)?;
                        }
                        setting::MAX_FRAME_SIZE => inner.peer_max_frame = value,
                        _ => {}
                    }
                }
                inner.flood.reply_queued()?;
                frame::write_settings_ack(&mut inner.out);
                inner.pump();
                inner.kick();
                Ok(())
            }
            Frame::Ping { ack, data } => {
                let mut inner = self.shared.borrow_mut();
                inner.flood.idle_frame()?;
                if !ack {
                    inner.flood.reply_queued()?;
                    frame::write_ping(&mut inner.out, true, data);
                    inner.kick();
                }
                Ok(())
            }
            Frame::GoAway { .. } => {
                // No new streams from the client; the ones in flight finish.
                let mut inner = self.shared.borrow_mut();
                inner.draining = true;
                inner.kick();
                Ok(())
            }
            Frame::PushPromise { .. } => Err(H2Error::Connection(
                ErrorCode::ProtocolError,
                "PUSH_PROMISE from a client",
            )),
            Frame::Priority { .. } | Frame::Unknown { .. } => {
                self.shared.borrow_mut().flood.idle_frame()
            }
            Frame::Continuation { .. } => Ok(()),
        }
    }

    /// A DATA frame: counted against both receive windows (padding included), then delivered
    /// to the stream's work, or released at once when nobody will read it.
    fn data(&mut self, id: u32, data: &[u8], end: bool, flow_len: u32) -> Result<(), H2Error> {
        let mut inner = self.shared.borrow_mut();
        inner.conn_recv_left -= flow_len as i64;
        if inner.conn_recv_left < 0 {
            return Err(H2Error::Connection(
                ErrorCode::FlowControlError,
                "DATA past the connection window",
            ));
        }
        let key = match inner.streams.recv_data(id, end) {
            Ok(Some(key)) => key,
            Ok(None) => {
                inner.consumed(flow_len as usize);
                return Ok(());
            }
            Err(e) => {
                inner.consumed(flow_len as usize);
                return Err(e);
            }
        };
        if data.is_empty() && !end {
            inner.flood.idle_frame()?;
        } else {
            inner.flood.progress();
        }
        let closed = inner.streams.get(key).is_none();
        let Some(io) = inner.io_of(key).cloned() else {
            inner.consumed(flow_len as usize);
            return Ok(());
        };
        if closed {
            inner.detach_slot(key);
        }
        let mut st = io.st.borrow_mut();
        st.recv_left -= flow_len as i64;
        if st.recv_left < 0 {
            drop(st);
            inner.consumed(flow_len as usize);
            return Err(H2Error::Stream(
                id,
                ErrorCode::FlowControlError,
                "DATA past the stream window",
            ));
        }
        // Padding is nobody's: released at once, to both windows while the stream's body is
        // read (it counted against both, §6.9.1; a stream window never given it back stalls).
        let padding = flow_len as usize - data.len();
        let live = !st.detached && !st.gone;
        let keep = live && !data.is_empty();
        if keep {
            st.recv.push_back(Bytes::copy_from_slice(data));
            st.recv_buffered += data.len();
        }
        if end {
            st.recv_end = true;
        }
        if let Some(w) = st.recv_waker.take() {
            w.wake();
        }
        if live {
            inner.released(&mut st, padding);
        } else {
            inner.consumed(flow_len as usize);
        }
        Ok(())
    }

    /// A whole header block: a new request, or a request's trailers.
    fn block(&mut self, done: Done) -> Result<(), H2Error> {
        self.list.clear();
        let decoded = self.decoder.decode(&self.assembly.block, &mut self.list);
        if let Err(HpackError::Compression(why)) = decoded {
            return Err(H2Error::Connection(ErrorCode::CompressionError, why));
        }
        let mut inner = self.shared.borrow_mut();
        match inner.streams.recv_headers(done.stream, done.end_stream)? {
            Headers::Ignored => Ok(()),
            Headers::Refused(id) => {
                // A stream refused does no request any good: a client that keeps opening past
                // the limit is a flood.
                inner.flood.idle_frame()?;
                self.core.counters().incr(Counter::H2StreamsRefused);
                frame::write_rst_stream(&mut inner.out, id, ErrorCode::RefusedStream);
                inner.kick();
                Ok(())
            }
            Headers::Trailers(key) => {
                let io = inner.io_of(key).cloned();
                if inner.streams.get(key).is_none() {
                    inner.detach_slot(key);
                }
                let Some(io) = io else { return Ok(()) };
                if decoded.is_err()
                    || self
                        .list
                        .fields
                        .iter()
                        .any(|f| self.list.bytes[f.name.clone()].starts_with(b":"))
                {
                    return Err(H2Error::Stream(
                        done.stream,
                        ErrorCode::ProtocolError,
                        "malformed trailers",
                    ));
                }
                let mut st = io.st.borrow_mut();
                st.recv_end = true;
                if !st.detached {
                    st.trailers = Some(to_map(&self.list));
                }
                if let Some(w) = st.recv_waker.take() {
                    w.wake();
                }
                Ok(())
            }
            Headers::Opened(key) => {
                inner.flood.progress();
                drop(inner);
                self.open(key, done, decoded)
            }
        }
    }

    /// A new request stream: checked, turned into a `Head`, its work spawned.
    fn open(
        &mut self,
        key: Key,
        done: Done,
        decoded: Result<(), HpackError>,
    ) -> Result<(), H2Error> {
        let id = done.stream;
        let malformed = |why| H2Error::Stream(id, ErrorCode::ProtocolError, why);
        match decoded {
            Ok(()) => {}
            Err(HpackError::ListTooLarge(_)) => return self.too_large(key, done),
            Err(HpackError::Malformed(why)) => return Err(malformed(why)),
            Err(HpackError::Compression(why)) => {
                return Err(H2Error::Connection(ErrorCode::CompressionError, why))
            }
        }
        let pseudo = request::check_request(&self.list).map_err(malformed)?;
        let mut head = Head::default();
        request::into_head(&mut self.list, &pseudo, &mut head);
        let io = self.shared.borrow_mut().attach(key, id, done.end_stream);
        let stream = Stream::new(self.shared.clone(), io);
        let core = self.core.clone();
        let peer = self.peer;
        monoio::spawn(async move {
            // The stream's state (every phase's future) is built once in its own allocation.
            Box::pin(crate::proxy::h2::serve_native(core, stream, head, peer)).await
        });
        Ok(())
    }

    /// A header list over SETTINGS_MAX_HEADER_LIST_SIZE: 431, the connection lives on.
    fn too_large(&mut self, key: Key, done: Done) -> Result<(), H2Error> {
        let io = self
            .shared
            .borrow_mut()
            .attach(key, done.stream, done.end_stream);
        let stream = Stream::new(self.shared.clone(), io);
        self.core.counters().status(431);
        let _ = stream.send_head(431, true, |_| {});
        drop(stream);
        Ok(())
    }
}

/// A decoded trailer block as a header map (fields HPACK decoding already validated).
fn to_map(list: &HeaderList) -> http::HeaderMap {
    let mut map = http::HeaderMap::with_capacity(list.fields.len());
    for (name, value) in list.iter() {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(value),
        ) {
            map.append(n, v);
        }
    }
    map
}

/// A parse error at the start of `rest`: a stream error leaves the connection usable, so the
/// frame it was found in is consumed (`used` moves past it; the parser reports one only once
/// the whole frame is buffered), or the next pass would read the same frame and reset the
/// stream again, over and over. On a HEADERS frame it becomes a connection error: its header
/// block was not decoded, and skipping it would leave the HPACK table out of step.
fn skip_after(rest: &[u8], e: H2Error, used: &mut usize) -> H2Error {
    let H2Error::Stream(_, code, why) = e else {
        return e;
    };
    match frame::Header::parse(rest) {
        Some(h) if h.kind != frame::kind::HEADERS => {
            *used += frame::HEADER_LEN + h.len as usize;
            e
        }
        _ => H2Error::Connection(code, why),
    }
}
