//! The server connection's stream table: streams as slots in one `Vec` (a freed slot is reused;
//! no task, map entry or `HeaderMap` per stream), their states per RFC 9113 §5.1, the stream
//! identifier rules of §5.1.1, the concurrent-stream limit of §5.1.2, stream send windows under
//! SETTINGS_INITIAL_WINDOW_SIZE changes (§6.9.2), and the abuse accounting the `h2` crate does:
//! rapid reset (CVE-2023-44487: streams the client opens and resets before they are answered)
//! and MadeYouReset (streams we must reset for the client's errors).
//!
//! Pure: no I/O, no clock; frames come in as already-parsed facts. Must not decide responses or
//! touch bodies.

use super::frame::{ErrorCode, H2Error, MAX_WINDOW};

/// A stream's state as this server sees it (§5.1; push is off, so no reserved states, and idle
/// or closed streams have no slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Open,
    /// The client sent END_STREAM.
    HalfClosedRemote,
    /// We sent END_STREAM.
    HalfClosedLocal,
}

/// Per-connection limits (our settings and abuse thresholds).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Our SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_concurrent: u32,
    /// Client resets of streams not answered yet, net of streams answered, before GOAWAY
    /// ENHANCE_YOUR_CALM (the `h2` crate's `max_pending_accept_reset_streams`).
    pub max_pending_resets: u32,
    /// Streams we reset for the client's protocol errors before GOAWAY ENHANCE_YOUR_CALM (the
    /// `h2` crate's `max_local_error_reset_streams`).
    pub max_local_error_resets: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrent: 256,
            max_pending_resets: 64,
            max_local_error_resets: 1024,
        }
    }
}

/// A live stream's slot.
#[derive(Debug, Clone)]
pub struct Stream {
    pub id: u32,
    pub state: State,
    /// What we may still send on it (i64: a SETTINGS change may take it below zero, §6.9.2).
    pub send_window: i64,
    /// Whether our response headers went out (a reset after that is not a rapid reset).
    pub answered: bool,
}

/// A slot index, stable while its stream lives: the driver keeps it so its own paths do not
/// look streams up by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key(pub u32);

/// What a HEADERS frame from the client means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Headers {
    /// A new request stream.
    Opened(Key),
    /// Trailers on a stream whose request is open.
    Trailers(Key),
    /// A new stream over our limit: answer RST_STREAM REFUSED_STREAM, nothing else.
    Refused(u32),
    /// A stream above the last one our GOAWAY accepted: ignore it (§6.8).
    Ignored,
}

/// The table.
#[derive(Debug)]
pub struct Streams {
    slots: Vec<Option<Stream>>,
    free: Vec<u32>,
    live: u32,
    limits: Limits,
    /// The highest stream id the client has used (§5.1.1: new ones must be higher).
    last_client: u32,
    /// The last stream a GOAWAY of ours accepted, once sent.
    goaway_last: Option<u32>,
    /// The peer's SETTINGS_INITIAL_WINDOW_SIZE: new streams' send window.
    peer_initial_window: u32,
    pending_resets: u32,
    local_error_resets: u32,
}

const CALM: H2Error = H2Error::Connection(ErrorCode::EnhanceYourCalm, "too many resets");

impl Streams {
    pub fn new(limits: Limits) -> Self {
        Streams {
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            limits,
            last_client: 0,
            goaway_last: None,
            peer_initial_window: 65_535,
            pending_resets: 0,
            local_error_resets: 0,
        }
    }

    /// Live streams (open or half-closed).
    pub fn live(&self) -> u32 {
        self.live
    }

    /// The highest client stream id seen: the last-stream-id of our GOAWAY.
    pub fn last_client(&self) -> u32 {
        self.last_client
    }

    pub fn get(&self, key: Key) -> Option<&Stream> {
        self.slots.get(key.0 as usize)?.as_ref()
    }

    pub fn get_mut(&mut self, key: Key) -> Option<&mut Stream> {
        self.slots.get_mut(key.0 as usize)?.as_mut()
    }

    /// The live stream with this id. A scan, bounded by the slots in use (the concurrent limit):
    /// only frames from the wire look streams up by id.
    pub fn find(&self, id: u32) -> Option<Key> {
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.id == id))
            .map(|i| Key(i as u32))
    }

    /// Whether `id` is idle: never used by the client (§5.1).
    fn idle(&self, id: u32) -> bool {
        id > self.last_client
    }

    /// A HEADERS frame from the client on stream `id`.
    pub fn recv_headers(&mut self, id: u32, end_stream: bool) -> Result<Headers, H2Error> {
        if let Some(key) = self.find(id) {
            let state = self.get(key).map(|s| s.state);
            return match state.unwrap_or(State::HalfClosedRemote) {
                // Trailers must end the stream (§8.1).
                State::Open | State::HalfClosedLocal if end_stream => {
                    self.recv_end(key);
                    Ok(Headers::Trailers(key))
                }
                State::Open | State::HalfClosedLocal => Err(H2Error::Stream(
                    id,
                    ErrorCode::ProtocolError,
                    "second HEADERS without END_STREAM",
                )),
                State::HalfClosedRemote => Err(H2Error::Stream(
                    id,
                    ErrorCode::StreamClosed,
                    "HEADERS after END_STREAM",
                )),
            };
        }
        if id % 2 == 0 {
            return Err(H2Error::Connection(
                ErrorCode::ProtocolError,
                "client stream with an even id",
            ));
        }
        if !self.idle(id) {
            // A closed stream's id, or a lower one than the client already used.
            return Err(H2Error::Connection(
                ErrorCode::ProtocolError,
                "stream id not higher than the last one",
            ));
        }
        self.last_client = id;
        if self.goaway_last.is_some_and(|last| id > last) {
            return Ok(Headers::Ignored);
        }
        if self.live >= self.limits.max_concurrent {
            return Ok(Headers::Refused(id));
        }
        let stream = Stream {
            id,
            state: if end_stream {
                State::HalfClosedRemote
            } else {
                State::Open
            },
            send_window: self.peer_initial_window as i64,
            answered: false,
        };
        let key = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(stream);
                Key(i)
            }
            None => {
                self.slots.push(Some(stream));
                Key(self.slots.len() as u32 - 1)
            }
        };
        self.live += 1;
        Ok(Headers::Opened(key))
    }

    /// A DATA frame on stream `id`: the stream it feeds, if it still lives. (Flow control of
    /// the bytes is the connection's; this checks the state only.)
    pub fn recv_data(&mut self, id: u32, end_stream: bool) -> Result<Option<Key>, H2Error> {
        let Some(key) = self.find(id) else {
            return if self.idle(id) {
                Err(H2Error::Connection(
                    ErrorCode::ProtocolError,
                    "DATA on an idle stream",
                ))
            } else {
                // §6.1: a closed stream; the connection may have reset it itself.
                Err(H2Error::Stream(
                    id,
                    ErrorCode::StreamClosed,
                    "DATA on a closed stream",
                ))
            };
        };
        match self.get(key).map_or(State::HalfClosedRemote, |s| s.state) {
            State::HalfClosedRemote => Err(H2Error::Stream(
                id,
                ErrorCode::StreamClosed,
                "DATA after END_STREAM",
            )),
            _ => {
                if end_stream {
                    self.recv_end(key);
                }
                Ok(Some(key))
            }
        }
    }

    fn recv_end(&mut self, key: Key) {
        let Some(s) = self.get_mut(key) else {
            return;
        };
        match s.state {
            State::Open => s.state = State::HalfClosedRemote,
            State::HalfClosedLocal => self.close(key),
            State::HalfClosedRemote => {}
        }
    }

    /// An RST_STREAM from the client: the stream it ended, if it lived. A stream reset before
    /// its response counts toward the rapid-reset limit.
    pub fn recv_rst(&mut self, id: u32) -> Result<Option<Key>, H2Error> {
        let Some(key) = self.find(id) else {
            return if self.idle(id) {
                Err(H2Error::Connection(
                    ErrorCode::ProtocolError,
                    "RST_STREAM on an idle stream",
                ))
            } else {
                Ok(None) // §5.1: closed streams may still see it.
            };
        };
        if self.get(key).is_some_and(|s| !s.answered) {
            self.pending_resets += 1;
            if self.pending_resets > self.limits.max_pending_resets {
                return Err(CALM);
            }
        }
        self.close(key);
        Ok(Some(key))
    }

    /// A WINDOW_UPDATE for stream `id` (not 0): the stream whose send window grew.
    pub fn recv_window_update(&mut self, id: u32, increment: u32) -> Result<Option<Key>, H2Error> {
        let Some(key) = self.find(id) else {
            return if self.idle(id) {
                Err(H2Error::Connection(
                    ErrorCode::ProtocolError,
                    "WINDOW_UPDATE on an idle stream",
                ))
            } else {
                Ok(None) // §6.9: allowed after END_STREAM or reset.
            };
        };
        let Some(s) = self.get_mut(key) else {
            return Ok(None);
        };
        s.send_window += increment as i64;
        if s.send_window > MAX_WINDOW as i64 {
            return Err(H2Error::Stream(
                id,
                ErrorCode::FlowControlError,
                "stream window over 2^31-1",
            ));
        }
        Ok(Some(key))
    }

    /// The peer's SETTINGS_INITIAL_WINDOW_SIZE changed: every stream's send window moves by the
    /// difference (§6.9.2); one going over 2^31-1 is a connection FLOW_CONTROL_ERROR.
    pub fn set_peer_initial_window(&mut self, size: u32) -> Result<(), H2Error> {
        let delta = size as i64 - self.peer_initial_window as i64;
        self.peer_initial_window = size;
        for s in self.slots.iter_mut().flatten() {
            s.send_window += delta;
            if s.send_window > MAX_WINDOW as i64 {
                return Err(H2Error::Connection(
                    ErrorCode::FlowControlError,
                    "SETTINGS_INITIAL_WINDOW_SIZE overflows a stream window",
                ));
            }
        }
        Ok(())
    }

    /// Our response headers went out on `key`: a later reset is not a rapid reset, and the
    /// stream no longer counts toward the pending-reset balance.
    pub fn answered(&mut self, key: Key) {
        if let Some(s) = self.get_mut(key) {
            if !s.answered {
                s.answered = true;
                self.pending_resets = self.pending_resets.saturating_sub(1);
            }
        }
    }

    /// We sent END_STREAM on `key`.
    pub fn send_end(&mut self, key: Key) {
        let Some(s) = self.get_mut(key) else {
            return;
        };
        match s.state {
            State::Open => s.state = State::HalfClosedLocal,
            State::HalfClosedRemote => self.close(key),
            State::HalfClosedLocal => {}
        }
    }

    /// We reset `key`; `client_error` when it was for the client's protocol error, which counts
    /// toward the MadeYouReset limit.
    pub fn reset(&mut self, key: Key, client_error: bool) -> Result<(), H2Error> {
        self.close(key);
        if client_error {
            return self.local_error();
        }
        Ok(())
    }

    /// We reset a stream for the client's protocol error (one with no slot, too): counts
    /// toward the MadeYouReset limit.
    pub fn local_error(&mut self) -> Result<(), H2Error> {
        self.local_error_resets += 1;
        if self.local_error_resets > self.limits.max_local_error_resets {
            return Err(CALM);
        }
        Ok(())
    }

    /// Our GOAWAY went out naming `last`: later new streams are ignored.
    pub fn goaway(&mut self, last: u32) {
        self.goaway_last = Some(last);
    }

    fn close(&mut self, key: Key) {
        if let Some(slot) = self.slots.get_mut(key.0 as usize) {
            if slot.take().is_some() {
                self.live -= 1;
                self.free.push(key.0);
            }
        }
    }
}

#[cfg(test)]
#[path = "streams_tests.rs"]
mod tests;
