//! A stream's side of the native HTTP/2 connection, as the stream's work sees it: the request
//! body as it arrives (its window granted back as it is taken), the response head HPACK-encoded
//! straight into the connection's output, response data queued under flow control, trailers,
//! and the reset that tells the work its client is gone.
//!
//! Must not block or hold a borrow of the connection across an await. Dropping the [`Stream`]
//! (the work ended, however) ends the stream: an unfinished response is reset.

use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;

use super::frame::ErrorCode;
use super::hpack::Encoder;
use super::shared::{Shared, StreamIo, HIGH_WATER};
use super::streams::Key;

/// The stream was reset or its connection ended: nothing more can be sent or received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

/// The handle of one stream, owned by its work.
pub struct Stream {
    shared: Shared,
    io: Rc<StreamIo>,
}

/// A reader of the request body, for a task beside the stream's work (the upstream pump).
pub struct RecvBody {
    shared: Shared,
    io: Rc<StreamIo>,
}

/// Writes response fields into a header block (names lowercased as HTTP/2 requires).
pub struct FieldSink<'a> {
    encoder: &'a mut Encoder,
    block: &'a mut Vec<u8>,
}

impl<'a> FieldSink<'a> {
    /// Fields of one block, written by `encoder` into `block`.
    pub(super) fn new(encoder: &'a mut Encoder, block: &'a mut Vec<u8>) -> Self {
        FieldSink { encoder, block }
    }

    /// One field; `name` in any case (HTTP/2 wants it lowercase: the encoder folds it).
    pub fn field(&mut self, name: &[u8], value: &[u8]) {
        self.encoder.field_any_case(name, value, self.block);
    }

    /// One field whose name is lowercase already (our own constants).
    pub fn lowercase(&mut self, name: &[u8], value: &[u8]) {
        debug_assert!(!name.iter().any(u8::is_ascii_uppercase));
        self.encoder.field(name, value, false, self.block);
    }

    /// Every field of a header map (never-indexed where the map says sensitive).
    pub fn map(&mut self, map: &HeaderMap) {
        for (name, value) in map {
            self.encoder.field(
                name.as_str().as_bytes(),
                value.as_bytes(),
                value.is_sensitive(),
                self.block,
            );
        }
    }
}

impl Stream {
    pub(super) fn new(shared: Shared, io: Rc<StreamIo>) -> Self {
        Stream { shared, io }
    }

    /// The request body's reader.
    pub fn body(&self) -> RecvBody {
        RecvBody {
            shared: self.shared.clone(),
            io: self.io.clone(),
        }
    }

    /// Whether the request ended with its head (no body).
    pub fn request_ended(&self) -> bool {
        let st = self.io.st.borrow();
        st.recv_end && st.recv.is_empty()
    }

    /// Whether the client reset the stream or the connection ended.
    pub fn is_gone(&self) -> bool {
        self.io.st.borrow().gone
    }

    /// Completes when the client reset the stream or the connection ended.
    pub async fn gone(&self) {
        poll_fn(|cx| {
            let mut st = self.io.st.borrow_mut();
            if st.gone {
                return Poll::Ready(());
            }
            st.send_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Whether the response head went out.
    pub fn head_sent(&self) -> bool {
        self.io.st.borrow().head_sent
    }

    /// Sends the response head: `:status`, then what `fields` writes; `end` ends the stream.
    pub fn send_head(
        &self,
        status: u16,
        end: bool,
        fields: impl FnOnce(&mut FieldSink<'_>),
    ) -> Result<(), Gone> {
        let mut inner = self.shared.borrow_mut();
        let mut st = self.io.st.borrow_mut();
        if st.gone || st.head_sent || inner.closed || !inner.live(&st) {
            return Err(Gone);
        }
        st.head_sent = true;
        let key = Key(st.key);
        inner.streams.answered(key);
        let inner = &mut *inner;
        let mut block = std::mem::take(&mut inner.block);
        inner.encoder.begin_block(&mut block);
        inner.encoder.status(status, &mut block);
        fields(&mut FieldSink::new(&mut inner.encoder, &mut block));
        inner.block = block;
        inner.write_block(st.id, end);
        if end {
            st.end_queued = true;
            st.ended = true;
            drop(st);
            inner.ended(key);
        }
        Ok(())
    }

    /// [`Stream::send_head`] from an `http` response head.
    pub fn send_response(&self, head: &http::Response<()>, end: bool) -> Result<(), Gone> {
        self.send_head(head.status().as_u16(), end, |f| f.map(head.headers()))
    }

    /// Queues `data` (and END_STREAM when `end`) without waiting: what the windows allow goes
    /// out at once, the rest as the client grants more. Callers that stream use
    /// [`Stream::send_all`], which waits, so nothing is buffered past the client's windows.
    pub fn send_data(&self, data: Bytes, end: bool) -> Result<(), Gone> {
        let mut inner = self.shared.borrow_mut();
        {
            let mut st = self.io.st.borrow_mut();
            if st.gone || st.end_queued || !st.head_sent || inner.closed {
                return Err(Gone);
            }
            if !data.is_empty() {
                st.send.push_back(data);
            }
            st.end_queued = end;
        }
        if !inner.flush_stream(&self.io) {
            inner.list(&self.io);
        }
        Ok(())
    }

    /// Sends `data` and waits until it left for the output and the output is not backed up; a
    /// client that grants no window (and reads nothing) for `within` fails it.
    pub async fn send_all(&self, data: Bytes, end: bool, within: Duration) -> Result<(), Gone> {
        self.send_data(data, end)?;
        loop {
            let mut before = usize::MAX;
            let step = poll_fn(|cx| {
                let mut inner = self.shared.borrow_mut();
                let mut st = self.io.st.borrow_mut();
                if st.gone || inner.closed {
                    return Poll::Ready(Err(Gone));
                }
                let queued: usize = st.send.iter().map(Bytes::len).sum();
                if queued == 0 && inner.out.len() <= HIGH_WATER {
                    return Poll::Ready(Ok(true));
                }
                if queued < before && before != usize::MAX {
                    return Poll::Ready(Ok(false));
                }
                before = queued;
                st.send_waker = Some(cx.waker().clone());
                drop(st);
                inner.list(&self.io);
                Poll::Pending
            });
            let step = std::pin::pin!(step);
            // Rolling: every grant that moves data restarts the wait.
            match crate::proxy::deadline::within(step, within).await {
                Ok(Ok(true)) => return Ok(()),
                Ok(Ok(false)) => continue,
                Ok(Err(gone)) => return Err(gone),
                Err(_) => {
                    self.send_reset(ErrorCode::Cancel);
                    return Err(Gone);
                }
            }
        }
    }

    /// [`Stream::send_all`] of a borrowed slice: written straight into the connection's output
    /// when both windows take all of it in one frame (no copy into a chunk of its own), else
    /// copied and queued.
    pub async fn send_slice(&self, data: &[u8], end: bool, within: Duration) -> Result<(), Gone> {
        if self.write_direct(data, end)? {
            return Ok(());
        }
        self.send_all(Bytes::copy_from_slice(data), end, within)
            .await
    }

    /// One DATA frame straight into the output, when nothing is queued before it and the
    /// windows, the frame size and the output's high-water mark allow.
    fn write_direct(&self, data: &[u8], end: bool) -> Result<bool, Gone> {
        let mut inner = self.shared.borrow_mut();
        let mut st = self.io.st.borrow_mut();
        if st.gone || st.end_queued || !st.head_sent || inner.closed || !inner.live(&st) {
            return Err(Gone);
        }
        let key = Key(st.key);
        let window = inner.streams.get(key).map_or(0, |s| s.send_window);
        let n = data.len() as i64;
        if !st.send.is_empty()
            || n > window.min(inner.send_window)
            || data.len() > inner.peer_max_frame as usize
            || inner.out.len() > HIGH_WATER
        {
            return Ok(false);
        }
        inner.write_data(key, st.id, data, end);
        inner.kick();
        if end {
            st.end_queued = true;
            st.ended = true;
            drop(st);
            inner.ended(key);
        }
        Ok(true)
    }

    /// Ends the stream with trailers (after any queued data).
    pub fn send_trailers(&self, trailers: HeaderMap) -> Result<(), Gone> {
        let mut inner = self.shared.borrow_mut();
        {
            let mut st = self.io.st.borrow_mut();
            if st.gone || st.end_queued || !st.head_sent || inner.closed {
                return Err(Gone);
            }
            st.send_trailers = Some(trailers);
            st.end_queued = true;
        }
        if !inner.flush_stream(&self.io) {
            inner.list(&self.io);
        }
        Ok(())
    }

    /// Resets the stream (our side failed).
    pub fn send_reset(&self, code: ErrorCode) {
        let mut inner = self.shared.borrow_mut();
        let _ = inner.reset_stream(&self.io, code, false);
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let Ok(mut inner) = self.shared.try_borrow_mut() else {
            return;
        };
        let (unfinished, head_sent, body_pending) = {
            let mut st = self.io.st.borrow_mut();
            st.detached = true;
            (
                !st.end_queued && !st.gone,
                st.head_sent,
                // A response still queued behind flow control goes out first: no reset then.
                !st.recv_end && !st.gone && st.ended,
            )
        };
        if unfinished {
            // The work ended without finishing its answer (it failed, or was dropped).
            let code = if head_sent {
                ErrorCode::Cancel
            } else {
                ErrorCode::InternalError
            };
            let _ = inner.reset_stream(&self.io, code, false);
        } else if body_pending {
            // §8.1: the response is complete; the rest of the request body is not wanted.
            let _ = inner.reset_stream(&self.io, ErrorCode::NoError, false);
        }
    }
}

impl RecvBody {
    /// Whether the body ended (nothing more will come).
    pub fn is_end_stream(&self) -> bool {
        let st = self.io.st.borrow();
        st.recv_end && st.recv.is_empty()
    }

    /// The next piece of the body; `None` at its end, `Err` when the stream or connection
    /// failed. Taking it grants the client more window.
    pub async fn data(&self) -> Option<Result<Bytes, Gone>> {
        poll_fn(|cx| {
            let mut inner = self.shared.borrow_mut();
            let mut st = self.io.st.borrow_mut();
            if let Some(chunk) = st.recv.pop_front() {
                inner.taken(&mut st, chunk.len());
                return Poll::Ready(Some(Ok(chunk)));
            }
            if st.gone {
                return Poll::Ready(Some(Err(Gone)));
            }
            if st.recv_end {
                return Poll::Ready(None);
            }
            st.recv_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// The request's trailers, once [`RecvBody::data`] returned `None`.
    pub fn trailers(&self) -> Result<Option<HeaderMap>, Gone> {
        let mut st = self.io.st.borrow_mut();
        if st.gone && !st.recv_end {
            return Err(Gone);
        }
        Ok(st.trailers.take())
    }
}
