//! Connection-level abuse guards that need no stream state: header-block assembly with the
//! CONTINUATION-flood bounds (RFC 9113 §6.10, CVE-2024-27316 class), and a meter for frames
//! that cost work without moving a request forward (SETTINGS / PING / WINDOW_UPDATE / PRIORITY
//! / empty-DATA / unknown-frame floods) or that queue replies the client does not read.
//!
//! Pure: frames come in as parsed facts, bytes are copied into one reused buffer. Must not
//! decode HPACK or know stream states.

use super::frame::{ErrorCode, H2Error};

const CALM_BLOCK: H2Error = H2Error::Connection(
    ErrorCode::EnhanceYourCalm,
    "header block too large or in too many frames",
);

/// Collects one header block from HEADERS (or PUSH_PROMISE) and its CONTINUATION frames.
#[derive(Debug, Default)]
pub struct Assembly {
    /// The block's bytes so far (reused across blocks).
    pub block: Vec<u8>,
    /// The stream a block is open on (0: none).
    stream: u32,
    end_stream: bool,
    frames: u32,
}

/// Bounds for one block.
#[derive(Debug, Clone, Copy)]
pub struct BlockLimits {
    /// Encoded bytes a block may take in all (beyond SETTINGS_MAX_HEADER_LIST_SIZE a decoded
    /// list is refused anyway; encoded bytes are at most about as many as decoded ones, so a
    /// small multiple of it bounds a legitimate block).
    pub max_bytes: usize,
    /// Frames a block may take (HEADERS + CONTINUATIONs): empty or tiny CONTINUATIONs cost a
    /// frame each and carry nothing.
    pub max_frames: u32,
}

impl Default for BlockLimits {
    fn default() -> Self {
        // 64 KiB lists (our default SETTINGS_MAX_HEADER_LIST_SIZE) in 16 KiB frames: 4 frames;
        // 32 leaves room for clients that split blocks finely.
        BlockLimits {
            max_bytes: 2 * 65_536,
            max_frames: 32,
        }
    }
}

/// A finished block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    pub stream: u32,
    pub end_stream: bool,
}

impl Assembly {
    /// Whether a block is open: then only a CONTINUATION on its stream may come next (§6.10).
    pub fn open(&self) -> bool {
        self.stream != 0
    }

    /// Any frame other than CONTINUATION arrived: while a block is open that is a connection
    /// PROTOCOL_ERROR.
    pub fn check_other_frame(&self) -> Result<(), H2Error> {
        if self.open() {
            return Err(H2Error::Connection(
                ErrorCode::ProtocolError,
                "frame inside a header block",
            ));
        }
        Ok(())
    }

    /// A HEADERS frame: `Some` when it carried the whole block (END_HEADERS).
    pub fn headers(
        &mut self,
        stream: u32,
        fragment: &[u8],
        end_stream: bool,
        end_headers: bool,
        limits: BlockLimits,
    ) -> Result<Option<Done>, H2Error> {
        self.check_other_frame()?;
        self.block.clear();
        self.stream = stream;
        self.end_stream = end_stream;
        self.frames = 0;
        self.add(fragment, end_headers, limits)
    }

    /// A CONTINUATION frame.
    pub fn continuation(
        &mut self,
        stream: u32,
        fragment: &[u8],
        end_headers: bool,
        limits: BlockLimits,
    ) -> Result<Option<Done>, H2Error> {
        if !self.open() || stream != self.stream {
            return Err(H2Error::Connection(
                ErrorCode::ProtocolError,
                "CONTINUATION without a header block on its stream",
            ));
        }
        self.add(fragment, end_headers, limits)
    }

    fn add(
        &mut self,
        fragment: &[u8],
        end_headers: bool,
        limits: BlockLimits,
    ) -> Result<Option<Done>, H2Error> {
        self.frames += 1;
        if self.frames > limits.max_frames || self.block.len() + fragment.len() > limits.max_bytes {
            return Err(CALM_BLOCK);
        }
        self.block.extend_from_slice(fragment);
        if !end_headers {
            return Ok(None);
        }
        let done = Done {
            stream: self.stream,
            end_stream: self.end_stream,
        };
        self.stream = 0;
        Ok(Some(done))
    }
}

/// Counts frames that make the server work without moving any request forward, and replies
/// queued for a client that does not read them. Useful work (a request opened, request body
/// bytes, our response bytes written) pays the count down, so busy well-behaved connections
/// never trip it; a flood of PINGs, SETTINGS, PRIORITY, WINDOW_UPDATEs, empty DATA or unknown
/// frames does, with GOAWAY ENHANCE_YOUR_CALM.
#[derive(Debug)]
pub struct FloodMeter {
    idle_frames: u32,
    max_idle_frames: u32,
    pending_replies: u32,
    max_pending_replies: u32,
}

const CALM_FLOOD: H2Error = H2Error::Connection(ErrorCode::EnhanceYourCalm, "frame flood");

impl FloodMeter {
    pub fn new(max_idle_frames: u32, max_pending_replies: u32) -> Self {
        FloodMeter {
            idle_frames: 0,
            max_idle_frames,
            pending_replies: 0,
            max_pending_replies,
        }
    }

    /// A frame that did no request any good (PRIORITY, PING, SETTINGS, a WINDOW_UPDATE, an
    /// empty DATA without END_STREAM, an unknown type).
    pub fn idle_frame(&mut self) -> Result<(), H2Error> {
        self.idle_frames += 1;
        if self.idle_frames > self.max_idle_frames {
            return Err(CALM_FLOOD);
        }
        Ok(())
    }

    /// Useful work happened: the count halves (a decay, not a reset, so interleaving one
    /// request per thousand frames does not keep a flood alive for free).
    pub fn progress(&mut self) {
        self.idle_frames /= 2;
    }

    /// A reply (PING ACK, SETTINGS ACK) was queued for writing.
    pub fn reply_queued(&mut self) -> Result<(), H2Error> {
        self.pending_replies += 1;
        if self.pending_replies > self.max_pending_replies {
            return Err(CALM_FLOOD);
        }
        Ok(())
    }

    /// Queued replies reached the socket.
    pub fn replies_flushed(&mut self) {
        self.pending_replies = 0;
    }
}

impl Default for FloodMeter {
    fn default() -> Self {
        FloodMeter::new(10_000, 1_024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: BlockLimits = BlockLimits {
        max_bytes: 100,
        max_frames: 4,
    };

    #[test]
    fn a_block_in_three_frames_assembles() {
        let mut a = Assembly::default();
        assert_eq!(a.headers(1, b"ab", true, false, L), Ok(None));
        assert!(a.open());
        assert_eq!(a.continuation(1, b"cd", false, L), Ok(None));
        assert_eq!(
            a.continuation(1, b"ef", true, L),
            Ok(Some(Done {
                stream: 1,
                end_stream: true
            }))
        );
        assert_eq!(a.block, b"abcdef");
        assert!(!a.open());
        assert!(a.check_other_frame().is_ok());
        // The next block starts empty.
        assert_eq!(
            a.headers(3, b"x", false, true, L),
            Ok(Some(Done {
                stream: 3,
                end_stream: false
            }))
        );
        assert_eq!(a.block, b"x");
    }

    #[test]
    fn interleaving_and_stray_continuations_are_protocol_errors() {
        let mut a = Assembly::default();
        let code = |r: Result<Option<Done>, H2Error>| r.unwrap_err();
        assert_eq!(
            code(a.continuation(1, b"x", true, L)).code(),
            ErrorCode::ProtocolError
        );
        a.headers(1, b"x", false, false, L).unwrap();
        assert_eq!(
            code(a.continuation(3, b"x", true, L)).code(),
            ErrorCode::ProtocolError
        );
        assert_eq!(
            code(a.headers(3, b"x", false, true, L)).code(),
            ErrorCode::ProtocolError
        );
        assert!(a.check_other_frame().is_err());
    }

    #[test]
    fn continuation_floods_trip_enhance_your_calm() {
        // Many empty frames.
        let mut a = Assembly::default();
        a.headers(1, b"", false, false, L).unwrap();
        for _ in 0..3 {
            a.continuation(1, b"", false, L).unwrap();
        }
        assert_eq!(a.continuation(1, b"", false, L), Err(CALM_BLOCK));
        // Too many bytes.
        let mut a = Assembly::default();
        a.headers(1, &[0; 60], false, false, L).unwrap();
        assert_eq!(a.continuation(1, &[0; 41], true, L), Err(CALM_BLOCK));
        assert!(a.block.len() <= 100);
    }

    #[test]
    fn idle_frame_floods_trip_but_progress_pays_them_down() {
        let mut m = FloodMeter::new(10, 2);
        for _ in 0..10 {
            m.idle_frame().unwrap();
        }
        assert_eq!(m.idle_frame(), Err(CALM_FLOOD));
        let mut m = FloodMeter::new(10, 2);
        for _ in 0..1000 {
            for _ in 0..5 {
                m.idle_frame().unwrap();
            }
            m.progress();
        }
        m.reply_queued().unwrap();
        m.reply_queued().unwrap();
        assert_eq!(m.reply_queued(), Err(CALM_FLOOD));
        m.replies_flushed();
        m.reply_queued().unwrap();
    }
}
