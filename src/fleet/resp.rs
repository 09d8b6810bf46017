//! RESP2, the Redis wire protocol, as far as this proxy speaks it: commands out as arrays of bulk
//! strings, replies in as the five RESP2 types. Pure: encoding appends to a buffer, parsing reads
//! a byte slice and says how much it used (or that it needs more). Never panics on server input.

/// One reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Simple(String),
    /// `-ERR …`.
    Error(String),
    /// `:42`.
    Int(i64),
    /// `$n` bulk string; `None` is the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `*n` array; `None` is the null array.
    Array(Option<Vec<Reply>>),
}

/// A reply that cannot be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed Redis reply: {0}")]
pub struct RespError(pub &'static str);

/// Bulk strings and arrays larger than this are refused (ours are a few numbers).
const MAX_LEN: i64 = 16 << 20;
/// Nesting deeper than this is refused.
const MAX_DEPTH: usize = 8;

/// Appends one command (an array of bulk strings) to `out`.
pub fn encode(args: &[&[u8]], out: &mut Vec<u8>) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        out.extend_from_slice(a.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses one reply from the start of `buf`: `Ok(None)` when `buf` holds only part of it,
/// else the reply and the bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, RespError> {
    parse_at(buf, 0)
}

fn parse_at(buf: &[u8], depth: usize) -> Result<Option<(Reply, usize)>, RespError> {
    if depth > MAX_DEPTH {
        return Err(RespError("nested too deeply"));
    }
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let Some((&kind, line)) = buf[..end].split_first() else {
        return Err(RespError("empty line"));
    };
    let text = || String::from_utf8_lossy(line).into_owned();
    let after = end + 2;
    let reply = match kind {
        b'+' => Reply::Simple(text()),
        b'-' => Reply::Error(text()),
        b':' => Reply::Int(number(line)?),
        b'$' => {
            let n = number(line)?;
            if n < 0 {
                return Ok(Some((Reply::Bulk(None), after)));
            }
            if n > MAX_LEN {
                return Err(RespError("bulk string too long"));
            }
            let n = n as usize;
            if buf.len() < after + n + 2 {
                return Ok(None);
            }
            if &buf[after + n..after + n + 2] != b"\r\n" {
                return Err(RespError("bulk string not terminated"));
            }
            return Ok(Some((
                Reply::Bulk(Some(buf[after..after + n].to_vec())),
                after + n + 2,
            )));
        }
        b'*' => {
            let n = number(line)?;
            if n < 0 {
                return Ok(Some((Reply::Array(None), after)));
            }
            if n > MAX_LEN {
                return Err(RespError("array too long"));
            }
            let mut items = Vec::with_capacity((n as usize).min(64));
            let mut at = after;
            for _ in 0..n {
                match parse_at(&buf[at..], depth + 1)? {
                    None => return Ok(None),
                    Some((item, used)) => {
                        items.push(item);
                        at += used;
                    }
                }
            }
            return Ok(Some((Reply::Array(Some(items)), at)));
        }
        _ => return Err(RespError("unknown reply type")),
    };
    Ok(Some((reply, after)))
}

fn number(line: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(RespError("not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        encode(&[b"AUTH", b"p w"], &mut out);
        assert_eq!(out, b"*2\r\n$4\r\nAUTH\r\n$3\r\np w\r\n");
    }

    #[test]
    fn parses_every_type() {
        let all = b"+OK\r\n-NOSCRIPT x\r\n:-7\r\n$3\r\na\rb\r\n$-1\r\n*2\r\n:1\r\n*1\r\n$0\r\n\r\n*-1\r\n";
        let mut at = 0;
        let mut got = Vec::new();
        while at < all.len() {
            let (r, used) = parse(&all[at..]).unwrap().unwrap();
            got.push(r);
            at += used;
        }
        assert_eq!(
            got,
            vec![
                Reply::Simple("OK".into()),
                Reply::Error("NOSCRIPT x".into()),
                Reply::Int(-7),
                Reply::Bulk(Some(b"a\rb".to_vec())),
                Reply::Bulk(None),
                Reply::Array(Some(vec![
                    Reply::Int(1),
                    Reply::Array(Some(vec![Reply::Bulk(Some(vec![]))]))
                ])),
                Reply::Array(None),
            ]
        );
    }

    #[test]
    fn partial_input_asks_for_more() {
        let whole = b"*2\r\n:1\r\n$5\r\nhello\r\n";
        for cut in 0..whole.len() {
            assert_eq!(parse(&whole[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(parse(whole).unwrap().is_some());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b"?x\r\n"[..],
            b"\r\n",
            b":x\r\n",
            b"$3\r\nabcde\r\n",
            b"$99999999999\r\n",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
