//! Differential fuzzing of `h1::ChunkScanner` against a strict reader of RFC 9112 §7.1 written
//! here. The scanner decides where a chunked body ends without decoding it, and the body goes
//! upstream verbatim: if it ends a body somewhere a strict peer would not, the two disagree on
//! where the next request starts (request smuggling). So:
//! - whenever the scanner accepts a body ending at offset N, the reference accepts exactly N;
//! - whenever the reference accepts, the scanner accepts at the same offset (or refuses, only
//!   for a chunk-size of more than 15 hex digits, its documented bound);
//! - the scanner's verdict does not depend on how the bytes are split between `feed` calls.
//!
//! Input: byte 0 gives the number of extra split points (0..=15), the next that many bytes the
//! lengths of the first pieces (0 included: an empty feed); the rest is the body.
//!
//! `H1_CHUNKED_ALLOW` (comma-separated reference error kinds, see `Why::name`) tolerates known
//! leniencies of the scanner so that fuzzing can go past them; unset means strict.
#![no_main]

use std::sync::OnceLock;

use aperture::proxy::h1::ChunkScanner;
use libfuzzer_sys::fuzz_target;

/// What the scanner (or the reference) makes of the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The body ends after this many bytes.
    Complete(usize),
    /// Every byte belongs to the body and it has not ended yet.
    Incomplete,
    /// Not a valid chunked body.
    Invalid(Why),
}

/// Why the reference refused (the scanner does not say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Scanner,
    Size,
    Ext,
    BareLf,
    BareCr,
    DataEnd,
    TrailerBareLf,
    TrailerBareCr,
    Trailer,
}

impl Why {
    fn name(self) -> &'static str {
        match self {
            Why::Scanner => "scanner",
            Why::Size => "size",
            Why::Ext => "ext",
            Why::BareLf => "bare-lf",
            Why::BareCr => "bare-cr",
            Why::DataEnd => "data-end",
            Why::TrailerBareLf => "trailer-bare-lf",
            Why::TrailerBareCr => "trailer-bare-cr",
            Why::Trailer => "trailer",
        }
    }
}

fn allowed(why: Why) -> bool {
    static ALLOW: OnceLock<Vec<String>> = OnceLock::new();
    ALLOW
        .get_or_init(|| {
            std::env::var("H1_CHUNKED_ALLOW")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .iter()
        .any(|a| a == why.name())
}

/// Feeds `body` to a fresh scanner in the given pieces (the rest in one last piece), stopping
/// at the end of the body or the first error, as the connection loop does.
fn scan(body: &[u8], pieces: impl IntoIterator<Item = usize>) -> Verdict {
    let mut s = ChunkScanner::default();
    let mut at = 0;
    let feed = |s: &mut ChunkScanner, piece: &[u8], at: &mut usize| -> Option<Verdict> {
        match s.feed(piece) {
            Err(_) => Some(Verdict::Invalid(Why::Scanner)),
            Ok(n) => {
                assert!(n <= piece.len(), "feed claims {n} of {} bytes", piece.len());
                *at += n;
                if n < piece.len() {
                    assert!(s.done(), "feed stopped early without reaching the end");
                }
                s.done().then_some(Verdict::Complete(*at))
            }
        }
    };
    for len in pieces {
        let piece = &body[at..(at + len).min(body.len())];
        if let Some(v) = feed(&mut s, piece, &mut at) {
            return v;
        }
    }
    let rest = &body[at..];
    feed(&mut s, rest, &mut at).unwrap_or(Verdict::Incomplete)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The strict reference reader. Stops at the first violation, in input order.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// The most hex digits any chunk-size had (the scanner refuses more than 15).
    max_digits: usize,
}

/// A line's content (CRLF excluded), or why there is none.
enum Line<'a> {
    Content(&'a [u8]),
    Incomplete,
    Invalid(Why),
}

impl<'a> Reader<'a> {
    /// The next line, which must end in CRLF; a bare CR or LF before that is an error.
    fn line(&mut self, in_trailer: bool) -> Line<'a> {
        let start = self.pos;
        let rest = &self.buf[start..];
        let Some(i) = rest.iter().position(|&b| b == b'\r' || b == b'\n') else {
            return Line::Incomplete;
        };
        if rest[i] == b'\n' {
            return Line::Invalid(if in_trailer {
                Why::TrailerBareLf
            } else {
                Why::BareLf
            });
        }
        match rest.get(i + 1) {
            None => Line::Incomplete,
            Some(b'\n') => {
                self.pos = start + i + 2;
                Line::Content(&rest[..i])
            }
            Some(_) => Line::Invalid(if in_trailer {
                Why::TrailerBareCr
            } else {
                Why::BareCr
            }),
        }
    }

    fn read(&mut self) -> Verdict {
        loop {
            let line = match self.line(false) {
                Line::Content(l) => l,
                Line::Incomplete => return Verdict::Incomplete,
                Line::Invalid(w) => return Verdict::Invalid(w),
            };
            let size = match self.chunk_line(line) {
                Ok(size) => size,
                Err(w) => return Verdict::Invalid(w),
            };
            if size == 0 {
                return self.trailers();
            }
            let left = (self.buf.len() - self.pos) as u64;
            if left < size {
                return Verdict::Incomplete;
            }
            self.pos += size as usize;
            match self.buf.get(self.pos..self.pos + 2) {
                Some(b"\r\n") => self.pos += 2,
                Some(_) => return Verdict::Invalid(Why::DataEnd),
                None if self.buf.get(self.pos).is_some_and(|&b| b != b'\r') => {
                    return Verdict::Invalid(Why::DataEnd)
                }
                None => return Verdict::Incomplete,
            }
        }
    }

    /// `chunk-size [ chunk-ext ]`, where
    /// `chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`.
    fn chunk_line(&mut self, line: &[u8]) -> Result<u64, Why> {
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 {
            return Err(Why::Size);
        }
        self.max_digits = self.max_digits.max(digits);
        let mut size: u64 = 0;
        for &b in &line[..digits] {
            let d = (b as char).to_digit(16).unwrap() as u64;
            size = size
                .checked_mul(16)
                .and_then(|s| s.checked_add(d))
                .ok_or(Why::Size)?;
        }
        let mut i = digits;
        let bws = |i: &mut usize| {
            while line.get(*i).is_some_and(|&b| b == b' ' || b == b'\t') {
                *i += 1;
            }
        };
        let token = |i: &mut usize| -> Result<(), Why> {
            let n = line[*i..].iter().take_while(|&&b| is_tchar(b)).count();
            if n == 0 {
                return Err(Why::Ext);
            }
            *i += n;
            Ok(())
        };
        while i < line.len() {
            bws(&mut i);
            if line.get(i) != Some(&b';') {
                return Err(Why::Ext);
            }
            i += 1;
            bws(&mut i);
            token(&mut i)?;
            let after_name = i;
            bws(&mut i);
            if line.get(i) != Some(&b'=') {
                i = after_name;
                continue;
            }
            i += 1;
            bws(&mut i);
            if line.get(i) == Some(&b'"') {
                i += 1;
                loop {
                    match line.get(i) {
                        None => return Err(Why::Ext),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => match line.get(i + 1) {
                            Some(&b)
                                if b == b'\t'
                                    || b == b' '
                                    || (0x21..=0x7e).contains(&b)
                                    || b >= 0x80 =>
                            {
                                i += 2
                            }
                            _ => return Err(Why::Ext),
                        },
                        Some(&b)
                            if b == b'\t'
                                || b == b' '
                                || b == 0x21
                                || (0x23..=0x5b).contains(&b)
                                || (0x5d..=0x7e).contains(&b)
                                || b >= 0x80 =>
                        {
                            i += 1
                        }
                        Some(_) => return Err(Why::Ext),
                    }
                }
            } else {
                token(&mut i)?;
            }
        }
        Ok(size)
    }

    /// `trailer-section CRLF`: `field-name ":" OWS field-value OWS` lines, then an empty one.
    fn trailers(&mut self) -> Verdict {
        loop {
            let line = match self.line(true) {
                Line::Content(l) => l,
                Line::Incomplete => return Verdict::Incomplete,
                Line::Invalid(w) => return Verdict::Invalid(w),
            };
            if line.is_empty() {
                return Verdict::Complete(self.pos);
            }
            let name = line.iter().take_while(|&&b| is_tchar(b)).count();
            if name == 0 || line.get(name) != Some(&b':') {
                return Verdict::Invalid(Why::Trailer);
            }
            // OWS field-value OWS: any run of SP, HTAB, VCHAR and obs-text.
            let value = &line[name + 1..];
            if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                return Verdict::Invalid(Why::Trailer);
            }
        }
    }
}

fn reference(body: &[u8]) -> (Verdict, usize) {
    let mut r = Reader {
        buf: body,
        pos: 0,
        max_digits: 0,
    };
    let v = r.read();
    (v, r.max_digits)
}

fuzz_target!(|data: &[u8]| {
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(count % 16).min(rest.len());
    let (lens, body) = rest.split_at(count);
    let pieces: Vec<usize> = lens.iter().map(|&b| usize::from(b)).collect();

    let whole = scan(body, []);
    let split = scan(body, pieces.iter().copied());
    let bytewise = scan(body, std::iter::repeat_n(1, body.len()));
    assert_eq!(
        whole, split,
        "verdict depends on the split points {pieces:?}"
    );
    assert_eq!(whole, bytewise, "verdict differs when fed byte by byte");

    let (strict, max_digits) = reference(body);
    match (whole, strict) {
        (Verdict::Complete(n), Verdict::Complete(m)) => {
            assert_eq!(n, m, "scanner ends the body at {n}, the reference at {m}")
        }
        (Verdict::Complete(n), Verdict::Invalid(why)) if !allowed(why) => panic!(
            "scanner accepts a body of {n} bytes that the reference refuses ({})",
            why.name()
        ),
        (Verdict::Complete(n), Verdict::Incomplete) => {
            panic!("scanner ends the body at {n}, the reference needs more bytes")
        }
        (Verdict::Incomplete, Verdict::Complete(m)) => {
            panic!("the reference ends the body at {m}, the scanner needs more bytes")
        }
        (Verdict::Invalid(_), Verdict::Complete(m)) if max_digits <= 15 => {
            panic!("scanner refuses a valid body of {m} bytes")
        }
        _ => {}
    }
});
