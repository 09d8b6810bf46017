//! Replaying a request an h2 upstream refused unprocessed. A stream above the last stream id of
//! the upstream's GOAWAY (nginx sends one after `keepalive_requests` streams), or one it resets
//! with REFUSED_STREAM, was never processed (RFC 9113 §6.8, §8.7): it is safe to send again on a
//! fresh connection. Without that, every request in flight at such a GOAWAY was a 502. The body
//! is replayable when it was read whole and small: the pump keeps the chunks it sent (refcounted
//! `Bytes`, no copy) up to [`MAX_REPLAY`] bytes.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;
use h2::SendStream;
use http::HeaderMap;

/// The most request body kept for a replay.
pub const MAX_REPLAY: usize = 64 * 1024;

/// The request body as sent upstream, shared by the pump (which fills it) and the forward
/// (which replays it).
#[derive(Default, Clone)]
pub struct Replay {
    chunks: Vec<Bytes>,
    size: usize,
    trailers: Option<HeaderMap>,
    /// The client's body ended (with or without trailers).
    complete: bool,
    /// The body was larger than [`MAX_REPLAY`]: not replayable.
    overflow: bool,
    /// The client stopped sending its body for longer than the read timeout: the upstream
    /// stream was cancelled for the client's fault, not the upstream's.
    pub client_stalled: bool,
}

/// The handle the pump and the forward share.
pub type Shared = Rc<RefCell<Replay>>;

impl Replay {
    /// Keeps a chunk the pump sent.
    pub fn sent(&mut self, chunk: &Bytes) {
        if self.overflow {
            return;
        }
        self.size += chunk.len();
        if self.size > MAX_REPLAY {
            self.overflow = true;
            self.chunks = Vec::new();
        } else {
            self.chunks.push(chunk.clone());
        }
    }

    /// The body ended, with these trailers.
    pub fn ended(&mut self, trailers: Option<HeaderMap>) {
        self.trailers = trailers;
        self.complete = true;
    }

    /// Whether the whole body is here to send again.
    pub fn replayable(&self) -> bool {
        self.complete && !self.overflow
    }

    /// Sends the kept body and trailers on a new stream (whose window grants them).
    pub async fn send(&self, to: &mut SendStream<Bytes>, within: std::time::Duration) -> bool {
        let last = self.chunks.len();
        for (i, chunk) in self.chunks.iter().enumerate() {
            let end = i + 1 == last && self.trailers.is_none();
            if super::upstream::send_all_then(to, chunk.clone(), end, within)
                .await
                .is_err()
            {
                return false;
            }
        }
        match &self.trailers {
            Some(t) => to.send_trailers(t.clone()).is_ok(),
            None if last == 0 => to.send_data(Bytes::new(), true).is_ok(),
            None => true,
        }
    }
}

/// Whether an upstream stream error means the request was not processed.
pub fn refused_unprocessed(e: &h2::Error) -> bool {
    e.is_go_away() || e.reason() == Some(h2::Reason::REFUSED_STREAM)
}
