//! HPACK (RFC 7541) for the native HTTP/2 server: a decoder that writes a header block straight
//! into a caller-owned [`HeaderList`] (one byte buffer plus ranges, the layout of
//! [`crate::proxy::h1::Head`], so a decoded request can become a `Head` without copying each
//! field), and an encoder that appends a response block to the connection's write buffer.
//!
//! Owns: the static table, the dynamic table (one contiguous byte buffer, entries as offsets; no
//! allocation per entry), integer and string literals (Huffman coding is [`super::huffman`]'s),
//! table size updates,
//! and the limits: header-list size (RFC 9113 §6.5.2) enforced while decoding, field syntax
//! (RFC 9113 §8.2.1) checked while decoding. Must not do I/O, know about frames or streams, or
//! panic on any input.
//!
//! Errors keep HPACK's state rule: a stream-level problem (list too large, malformed field)
//! still decodes the whole block so the dynamic table stays in step with the peer's encoder;
//! only a compression error (the table cannot be trusted any more) stops at once.

use std::collections::VecDeque;
use std::ops::Range;

use super::huffman::{huffman_decode, huffman_encode, huffman_len};

/// The per-entry overhead of RFC 7541 §4.1.
const ENTRY_OVERHEAD: usize = 32;

/// Why a header block was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    /// The block cannot be decoded; the peer's and our tables may differ from here on, so the
    /// connection ends with COMPRESSION_ERROR (RFC 9113 §4.3).
    #[error("hpack: {0}")]
    Compression(&'static str),
    /// The decoded list is over our SETTINGS_MAX_HEADER_LIST_SIZE: a stream error (431 or
    /// RST_STREAM); the table was kept in step.
    #[error("header list larger than {0} bytes")]
    ListTooLarge(usize),
    /// A field breaks RFC 9113 §8.2.1 (uppercase name, CR/LF/NUL in a value, …): the request is
    /// malformed, a stream error PROTOCOL_ERROR (§8.1.1).
    #[error("malformed header field: {0}")]
    Malformed(&'static str),
}

/// The static table (RFC 7541 Appendix A); index 1 is element 0.
pub const STATIC: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// One decoded field: ranges into [`HeaderList::bytes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: Range<usize>,
    pub value: Range<usize>,
    /// Sent as "never indexed" (RFC 7541 §6.2.3): an intermediary must keep it so.
    pub never_index: bool,
}

/// A decoded header block, reused across blocks (its buffers keep their capacity).
#[derive(Debug, Default, Clone)]
pub struct HeaderList {
    /// Every decoded name and value, back to back.
    pub bytes: Vec<u8>,
    /// The fields in block order (pseudo-header fields first in a valid block).
    pub fields: Vec<Field>,
    /// RFC 9113 §6.5.2 size of the list (names + values + 32 each), counted also past the limit.
    pub size: usize,
}

impl HeaderList {
    /// Empties the list, keeping its allocations.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.fields.clear();
        self.size = 0;
    }

    /// The fields as (name, value) slices.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.fields
            .iter()
            .map(|f| (&self.bytes[f.name.clone()], &self.bytes[f.value.clone()]))
    }

    /// The first field named `name` (lowercase, as HTTP/2 requires).
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

/// The dynamic table (RFC 7541 §2.3.2): entries newest first, their bytes appended to one
/// buffer and dropped from its front as they are evicted (compacted when half is dead), so an
/// insertion copies the entry once and allocates only while the buffer grows to its working size.
#[derive(Debug)]
struct DynTable {
    data: Vec<u8>,
    /// Bytes of `data` before this offset belong to evicted entries.
    start: usize,
    /// (offset in `data`, name length, value length, whether the field passed
    /// [`check_field`]), newest at the front: a field is checked once, when it is inserted, and
    /// every later reference to it reuses the verdict.
    entries: VecDeque<(usize, usize, usize, bool)>,
    size: usize,
    max: usize,
    /// Entries inserted so far: entry `i` (0 = newest) is insertion number `inserted - 1 - i`,
    /// a name that survives the shifting of indices as newer entries arrive.
    inserted: u64,
}

impl DynTable {
    fn new(max: usize) -> Self {
        DynTable {
            data: Vec::new(),
            start: 0,
            entries: VecDeque::new(),
            size: 0,
            max,
            inserted: 0,
        }
    }

    /// Entry `i` (0 = newest) as (name, value).
    fn get(&self, i: usize) -> Option<(&[u8], &[u8])> {
        let &(at, n, v, _) = self.entries.get(i)?;
        Some((&self.data[at..at + n], &self.data[at + n..at + n + v]))
    }

    /// Whether entry `i` passed [`check_field`].
    fn valid(&self, i: usize) -> bool {
        self.entries.get(i).is_some_and(|e| e.3)
    }

    fn evict_to(&mut self, room: usize) {
        while self.size > room {
            let Some((_, n, v, _)) = self.entries.pop_back() else {
                break;
            };
            self.size -= n + v + ENTRY_OVERHEAD;
        }
        match self.entries.back() {
            Some(&(at, _, _, _)) => self.start = at,
            None => {
                self.data.clear();
                self.start = 0;
                self.size = 0;
            }
        }
        if self.start > self.data.len() / 2 {
            let dead = self.start;
            self.data.drain(..dead);
            self.entries.iter_mut().for_each(|e| e.0 -= dead);
            self.start = 0;
        }
    }

    fn set_max(&mut self, max: usize) {
        self.max = max;
        self.evict_to(max);
    }

    /// RFC 7541 §4.4: evict until the entry fits; an entry larger than the table empties it.
    fn insert(&mut self, name: &[u8], value: &[u8], valid: bool) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        if size > self.max {
            self.evict_to(0);
            return;
        }
        self.evict_to(self.max - size);
        let at = self.data.len();
        self.data.extend_from_slice(name);
        self.data.extend_from_slice(value);
        self.entries
            .push_front((at, name.len(), value.len(), valid));
        self.size += size;
        self.inserted += 1;
    }

    /// The insertion number of entry `i`.
    fn number_of(&self, i: usize) -> u64 {
        self.inserted - 1 - i as u64
    }

    /// The index of the entry inserted as number `n`, while it is still in the table.
    fn index_of(&self, n: u64) -> Option<usize> {
        let i = self.inserted.checked_sub(1)?.checked_sub(n)?;
        usize::try_from(i).ok().filter(|&i| i < self.entries.len())
    }

    /// The newest entry equal to (`name`, `value`), and the newest with `name`. Lengths are
    /// compared before bytes: most entries are rejected without touching their data.
    fn find(&self, name: &[u8], value: &[u8]) -> (Option<usize>, Option<usize>) {
        let mut name_at = None;
        for (i, &(at, n, v, _)) in self.entries.iter().enumerate() {
            if n != name.len() || self.data.get(at..at + n) != Some(name) {
                continue;
            }
            if v == value.len() && self.data.get(at + n..at + n + v) == Some(value) {
                return (Some(i), Some(i));
            }
            name_at.get_or_insert(i);
        }
        (None, name_at)
    }
}

/// The decoding side of one connection.
#[derive(Debug)]
pub struct Decoder {
    table: DynTable,
    /// Our SETTINGS_HEADER_TABLE_SIZE: the largest size update the peer may send.
    max_allowed: usize,
    /// Our SETTINGS_MAX_HEADER_LIST_SIZE.
    max_list: usize,
    /// The last long Huffman-coded literal value and its decoding. Clients send the same
    /// credential on every request as a literal that is never indexed (nghttp2, and so curl and
    /// h2load, and Go keep `authorization` out of the table): decoding it is most of a request
    /// block's cost, comparing it with the last one a small part.
    memo_raw: Vec<u8>,
    memo_decoded: Vec<u8>,
    /// The value checks' verdict on `memo_decoded` (a hit is not rescanned).
    memo_verdict: Option<&'static str>,
}

/// Literal values this long or longer (encoded) are remembered by [`Decoder`]'s memo; longer
/// than [`MEMO_MAX`] they are not (the memo's memory stays bounded per connection).
const MEMO_MIN: usize = 48;
const MEMO_MAX: usize = 4096;

/// A cursor over a header block.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    /// An integer with an `n`-bit prefix (RFC 7541 §5.1), bounded to what fits a u32 so a
    /// run of continuation bytes cannot overflow.
    fn int(&mut self, n: u32) -> Result<usize, HpackError> {
        let mask = (1usize << n) - 1;
        let first = *self.buf.get(self.pos).ok_or(TRUNCATED)? as usize & mask;
        self.pos += 1;
        if first < mask {
            return Ok(first);
        }
        let mut value = mask;
        let mut shift = 0;
        loop {
            let b = *self.buf.get(self.pos).ok_or(TRUNCATED)?;
            self.pos += 1;
            value += ((b & 0x7f) as usize) << shift;
            if b & 0x80 == 0 {
                return if value > u32::MAX as usize {
                    Err(HpackError::Compression("integer overflow"))
                } else {
                    Ok(value)
                };
            }
            shift += 7;
            if shift > 28 {
                return Err(HpackError::Compression("integer overflow"));
            }
        }
    }

    /// A string literal (RFC 7541 §5.2) appended to `out`.
    fn string(&mut self, out: &mut Vec<u8>) -> Result<(), HpackError> {
        let huffman = self.buf.get(self.pos).ok_or(TRUNCATED)? & 0x80 != 0;
        let len = self.int(7)?;
        let end = self.pos.checked_add(len).ok_or(TRUNCATED)?;
        let raw = self.buf.get(self.pos..end).ok_or(TRUNCATED)?;
        self.pos = end;
        if huffman {
            huffman_decode(raw, out)
        } else {
            out.extend_from_slice(raw);
            Ok(())
        }
    }
}

const BAD_ENTRY: &str = "indexed field that is malformed";
const TRUNCATED: HpackError = HpackError::Compression("truncated header block");

impl Decoder {
    /// A decoder allowing a dynamic table of `table_size` bytes (our SETTINGS_HEADER_TABLE_SIZE)
    /// and header lists up to `max_list` bytes (our SETTINGS_MAX_HEADER_LIST_SIZE).
    pub fn new(table_size: usize, max_list: usize) -> Self {
        Decoder {
            table: DynTable::new(table_size),
            max_allowed: table_size,
            max_list,
            memo_raw: Vec::new(),
            memo_decoded: Vec::new(),
            memo_verdict: None,
        }
    }

    /// The dynamic table's current size in RFC 7541 §4.1 bytes.
    pub fn table_size(&self) -> usize {
        self.table.size
    }

    /// Decodes one whole header block (HEADERS plus its CONTINUATIONs) into `out` (cleared
    /// first). On `ListTooLarge` or `Malformed` the table is still up to date and the
    /// connection can go on; on `Compression` it cannot.
    pub fn decode(&mut self, block: &[u8], out: &mut HeaderList) -> Result<(), HpackError> {
        out.clear();
        // Decoded blocks are rarely over twice their encoded size: one allocation, not a
        // doubling series, when the list's buffer went to the last request's head.
        out.bytes.reserve(block.len() * 2 + 128);
        let mut c = Cursor { buf: block, pos: 0 };
        let mut seen_field = false;
        let mut malformed = None;
        while c.pos < block.len() {
            let b = block[c.pos];
            if b & 0xe0 == 0x20 {
                // RFC 7541 §4.2: size updates only at the start of a block.
                if seen_field {
                    return Err(HpackError::Compression("table size update after a field"));
                }
                let size = c.int(5)?;
                if size > self.max_allowed {
                    return Err(HpackError::Compression("table size update over the limit"));
                }
                self.table.set_max(size);
                continue;
            }
            seen_field = true;
            let field_start = out.bytes.len();
            let (index, prefix, never, incremental) = if b & 0x80 != 0 {
                (c.int(7)?, 0, false, false)
            } else if b & 0xc0 == 0x40 {
                (c.int(6)?, 6, false, true)
            } else {
                (c.int(4)?, 4, b & 0x10 != 0, false)
            };
            let name = if prefix == 0 || index != 0 {
                let (n, v) = self.lookup(index)?;
                out.bytes.extend_from_slice(n);
                let name = field_start..out.bytes.len();
                if prefix == 0 {
                    out.bytes.extend_from_slice(v);
                }
                name
            } else {
                c.string(&mut out.bytes)?;
                field_start..out.bytes.len()
            };
            let known = if prefix != 0 {
                self.value(&mut c, &mut out.bytes)?
            } else {
                None
            };
            let value = name.end..out.bytes.len();
            let (n, v) = (&out.bytes[name.clone()], &out.bytes[value.clone()]);
            let verdict = match index {
                // A whole indexed field: static fields are valid, dynamic ones were checked
                // when they were inserted.
                62.. if prefix == 0 => (!self.table.valid(index - 62)).then_some(BAD_ENTRY),
                _ if prefix == 0 => None,
                _ => match known {
                    Some(value_verdict) => check_name(n).or(value_verdict),
                    None => check_field(n, v),
                },
            };
            if incremental {
                self.table.insert(n, v, verdict.is_none());
            }
            malformed = malformed.or(verdict);
            out.size += name.len() + value.len() + ENTRY_OVERHEAD;
            if out.size > self.max_list || malformed.is_some() {
                // Keep decoding for the table's sake, but keep nothing more.
                out.bytes.truncate(field_start);
                continue;
            }
            out.fields.push(Field {
                name,
                value,
                never_index: never,
            });
        }
        if out.size > self.max_list {
            return Err(HpackError::ListTooLarge(self.max_list));
        }
        match malformed {
            Some(why) => Err(HpackError::Malformed(why)),
            None => Ok(()),
        }
    }

    /// A literal field value: a long Huffman-coded one equal to the last one is copied from
    /// the memo instead of decoded again. `Some`: the value checks' verdict, known from the memo.
    fn value(
        &mut self,
        c: &mut Cursor<'_>,
        out: &mut Vec<u8>,
    ) -> Result<Option<Option<&'static str>>, HpackError> {
        let at = c.pos;
        if c.buf.get(at).ok_or(TRUNCATED)? & 0x80 == 0 {
            return c.string(out).map(|()| None);
        }
        let len = c.int(7)?;
        let end = c.pos.checked_add(len).ok_or(TRUNCATED)?;
        let raw = c.buf.get(c.pos..end).ok_or(TRUNCATED)?;
        c.pos = end;
        let memo = (MEMO_MIN..=MEMO_MAX).contains(&raw.len());
        if memo && raw == self.memo_raw.as_slice() {
            out.extend_from_slice(&self.memo_decoded);
            return Ok(Some(self.memo_verdict));
        }
        let start = out.len();
        huffman_decode(raw, out)?;
        if !memo {
            return Ok(None);
        }
        self.memo_raw.clear();
        self.memo_raw.extend_from_slice(raw);
        self.memo_decoded.clear();
        self.memo_decoded.extend_from_slice(&out[start..]);
        self.memo_verdict = check_value(&out[start..]);
        Ok(Some(self.memo_verdict))
    }

    fn lookup(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        match index {
            0 => Err(HpackError::Compression("index 0")),
            1..=61 => Ok(STATIC[index - 1]),
            _ => self
                .table
                .get(index - 62)
                .ok_or(HpackError::Compression("index past the dynamic table")),
        }
    }
}

/// RFC 9113 §8.2.1 field syntax: lowercase token names (or a pseudo-header name), values
/// without NUL, CR or LF and without leading or trailing whitespace.
fn check_field(name: &[u8], value: &[u8]) -> Option<&'static str> {
    check_name(name).or_else(|| check_value(value))
}

/// RFC 9113 §8.2.1 on a name: a lowercase token (after the colon of a pseudo-header field).
fn check_name(name: &[u8]) -> Option<&'static str> {
    let body = match name {
        [] => return Some("empty name"),
        [b':', rest @ ..] => rest,
        _ => name,
    };
    if body.is_empty() || !body.iter().all(|&b| LOWER_TCHAR[b as usize]) {
        return Some("field name not a lowercase token");
    }
    None
}

/// RFC 9113 §8.2.1 on a value: no NUL, CR or LF, no whitespace at either end.
fn check_value(value: &[u8]) -> Option<&'static str> {
    if has_nul_cr_lf(value) {
        return Some("NUL, CR or LF in a field value");
    }
    let ws = |b: Option<&u8>| matches!(b, Some(b' ' | b'\t'));
    if ws(value.first()) || ws(value.last()) {
        return Some("whitespace around a field value");
    }
    None
}

/// Whether `value` holds NUL, CR or LF, eight bytes a step (values such as macaroons are the
/// long part of a request block).
fn has_nul_cr_lf(value: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Nonzero iff some byte of `w` is zero (the classic SWAR test; exact as a yes/no).
    let zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGH;
    let mut chunks = value.chunks_exact(8);
    for c in &mut chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        let w = u64::from_ne_bytes(b);
        if zero(w) | zero(w ^ (ONES * 0x0a)) | zero(w ^ (ONES * 0x0d)) != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b == 0 || b == b'\r' || b == b'\n')
}

/// RFC 9110 tchar without uppercase letters, as a lookup table.
static LOWER_TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = matches!(b as u8, b'a'..=b'z' | b'0'..=b'9' | b'!' | b'#' | b'$' | b'%' | b'&'
            | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~');
        b += 1;
    }
    t
};

// ---------- encoding ----------

/// Appends an integer with an `n`-bit prefix; `flags` fills the bits above the prefix.
pub fn encode_int(value: usize, n: u32, flags: u8, out: &mut Vec<u8>) {
    let mask = (1usize << n) - 1;
    if value < mask {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | mask as u8);
    let mut rest = value - mask;
    while rest >= 0x80 {
        out.push((rest as u8 & 0x7f) | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Appends a string literal, Huffman-coded when that is shorter.
pub fn encode_string(s: &[u8], out: &mut Vec<u8>) {
    let h = huffman_len(s);
    if h < s.len() {
        encode_int(h, 7, 0x80, out);
        huffman_encode(s, out);
    } else {
        encode_int(s.len(), 7, 0, out);
        out.extend_from_slice(s);
    }
}

/// The encoding side of one connection.
#[derive(Debug)]
pub struct Encoder {
    table: DynTable,
    /// A size update owed at the start of the next block (RFC 7541 §4.2), after the peer's
    /// SETTINGS_HEADER_TABLE_SIZE changed: the final size, and the smallest one since the last
    /// block (both are signalled when the peer lowered then raised it: the decoder must drop
    /// what we dropped).
    pending_update: Option<(usize, usize)>,
    /// For the field at each position of the last block, the insertion number of the table
    /// entry it was sent as (`u64::MAX`: none). Answers from one upstream repeat their fields
    /// in the same order, so the field at the same position is checked against that one entry
    /// first, before any search of the table.
    recent: Vec<u64>,
    /// The position of the next field in the block being written.
    at: usize,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            table: DynTable::new(4096),
            pending_update: None,
            recent: Vec::new(),
            at: 0,
        }
    }
}

impl Encoder {
    /// The peer's SETTINGS_HEADER_TABLE_SIZE; we never use more than 4096 bytes of it.
    pub fn set_peer_table_size(&mut self, size: usize) {
        let size = size.min(4096);
        if size != self.table.max {
            let smallest = self.pending_update.map_or(size, |(_, s)| s.min(size));
            self.table.set_max(size);
            self.pending_update = Some((size, smallest));
        }
    }

    /// Starts a header block: emits the pending table size updates (the smallest size first
    /// when it was below the final one, RFC 7541 §4.2).
    pub fn begin_block(&mut self, out: &mut Vec<u8>) {
        self.at = 0;
        if let Some((size, smallest)) = self.pending_update.take() {
            if smallest < size {
                encode_int(smallest, 5, 0x20, out);
            }
            encode_int(size, 5, 0x20, out);
        }
    }

    /// Appends `:status` (static-table indexed for the seven codes it has).
    pub fn status(&mut self, status: u16, out: &mut Vec<u8>) {
        let index = match status {
            200 => 8,
            204 => 9,
            206 => 10,
            304 => 11,
            400 => 12,
            404 => 13,
            500 => 14,
            _ => {
                let mut digits = [0u8; 3];
                let s = status.min(999);
                digits[0] = b'0' + (s / 100) as u8;
                digits[1] = b'0' + (s / 10 % 10) as u8;
                digits[2] = b'0' + (s % 10) as u8;
                encode_int(8, 4, 0x00, out);
                encode_string(&digits, out);
                return;
            }
        };
        encode_int(index, 7, 0x80, out);
    }

    /// Appends one field (`name` lowercase). A `sensitive` field is sent never-indexed
    /// (RFC 7541 §7.1.3); others are indexed when they fit the table.
    pub fn field(&mut self, name: &[u8], value: &[u8], sensitive: bool, out: &mut Vec<u8>) {
        let at = self.at;
        self.at += 1;
        if !sensitive {
            if let Some(i) = self.recent_match(at, name, value, false) {
                return encode_int(62 + i, 7, 0x80, out);
            }
        }
        let sent_as = self.field_searched(name, value, sensitive, out);
        self.remember(at, sent_as);
    }

    /// [`Encoder::field`] for a name in any case (an HTTP/1.1 upstream's): compared with the
    /// position's last entry ignoring case first, lowercased only when that misses.
    pub fn field_any_case(&mut self, name: &[u8], value: &[u8], out: &mut Vec<u8>) {
        let at = self.at;
        self.at += 1;
        if let Some(i) = self.recent_match(at, name, value, true) {
            return encode_int(62 + i, 7, 0x80, out);
        }
        let mut low = [0u8; 64];
        let sent_as = match low.get_mut(..name.len()) {
            Some(low) => {
                for (d, c) in low.iter_mut().zip(name) {
                    *d = c.to_ascii_lowercase();
                }
                self.field_searched(low, value, false, out)
            }
            None => self.field_searched(&name.to_ascii_lowercase(), value, false, out),
        };
        self.remember(at, sent_as);
    }

    fn remember(&mut self, at: usize, sent_as: u64) {
        if at < self.recent.len() {
            self.recent[at] = sent_as;
        } else if at == self.recent.len() && at < 64 {
            self.recent.push(sent_as);
        }
    }

    /// The index of the entry the field at position `at` of the last block was sent as, when
    /// that entry is still in the table and equals (`name`, `value`) (the name compared
    /// ignoring ASCII case when `fold`: table names are lowercase).
    fn recent_match(&self, at: usize, name: &[u8], value: &[u8], fold: bool) -> Option<usize> {
        let n = *self.recent.get(at)?;
        let i = self.table.index_of(n)?;
        let (en, ev) = self.table.get(i)?;
        let same_name = if fold {
            en.eq_ignore_ascii_case(name)
        } else {
            en == name
        };
        (same_name && ev == value).then_some(i)
    }

    /// [`Encoder::field`] by searching the tables; returns the insertion number of the dynamic
    /// entry the field was sent as or inserted as (`u64::MAX`: none).
    fn field_searched(
        &mut self,
        name: &[u8],
        value: &[u8],
        sensitive: bool,
        out: &mut Vec<u8>,
    ) -> u64 {
        let (full, dyn_name) = if sensitive {
            (None, None)
        } else {
            self.table.find(name, value)
        };
        if let Some(i) = full {
            encode_int(62 + i, 7, 0x80, out);
            return self.table.number_of(i);
        }
        let static_name = static_name_index(name);
        let name_index = static_name.or(dyn_name.map(|i| 62 + i));
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        let (prefix, flags) = if sensitive {
            (4, 0x10)
        } else if size <= self.table.max / 2 {
            (6, 0x40)
        } else {
            (4, 0x00)
        };
        match name_index {
            Some(i) => encode_int(i, prefix, flags, out),
            None => {
                encode_int(0, prefix, flags, out);
                encode_string(name, out);
            }
        }
        encode_string(value, out);
        if flags != 0x40 {
            return u64::MAX;
        }
        self.table
            .insert(name, value, check_field(name, value).is_none());
        self.table.number_of(0)
    }
}

/// The static-table index of a name (first entry with it): a `match`, which compiles to a
/// switch on the length and a few comparisons, not a scan of 61 entries per field.
fn static_name_index(name: &[u8]) -> Option<usize> {
    Some(match name {
        b":authority" => 1,
        b":method" => 2,
        b":path" => 4,
        b":scheme" => 6,
        b":status" => 8,
        b"accept-charset" => 15,
        b"accept-encoding" => 16,
        b"accept-language" => 17,
        b"accept-ranges" => 18,
        b"accept" => 19,
        b"access-control-allow-origin" => 20,
        b"age" => 21,
        b"allow" => 22,
        b"authorization" => 23,
        b"cache-control" => 24,
        b"content-disposition" => 25,
        b"content-encoding" => 26,
        b"content-language" => 27,
        b"content-length" => 28,
        b"content-location" => 29,
        b"content-range" => 30,
        b"content-type" => 31,
        b"cookie" => 32,
        b"date" => 33,
        b"etag" => 34,
        b"expect" => 35,
        b"expires" => 36,
        b"from" => 37,
        b"host" => 38,
        b"if-match" => 39,
        b"if-modified-since" => 40,
        b"if-none-match" => 41,
        b"if-range" => 42,
        b"if-unmodified-since" => 43,
        b"last-modified" => 44,
        b"link" => 45,
        b"location" => 46,
        b"max-forwards" => 47,
        b"proxy-authenticate" => 48,
        b"proxy-authorization" => 49,
        b"range" => 50,
        b"referer" => 51,
        b"refresh" => 52,
        b"retry-after" => 53,
        b"server" => 54,
        b"set-cookie" => 55,
        b"strict-transport-security" => 56,
        b"transfer-encoding" => 57,
        b"user-agent" => 58,
        b"vary" => 59,
        b"via" => 60,
        b"www-authenticate" => 61,
        _ => return None,
    })
}

#[cfg(test)]
#[path = "hpack_tests.rs"]
mod tests;
