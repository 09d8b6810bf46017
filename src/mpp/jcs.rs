//! JSON Canonicalization Scheme (RFC 8785) as Go aperture's `mpp/jcs.go` applies it to the
//! challenge `request`: parse to generic values (every number an IEEE 754 double), then
//! re-serialize with members sorted by UTF-16 code units, ECMAScript string escaping and
//! ECMAScript `Number::toString`. Owns canonical bytes only; it must not reorder arrays, escape
//! HTML characters, or accept NaN/infinities.
//!
//! Canonical form matters beyond taste: mppx re-serializes the echoed `request` with its own JCS,
//! so a request that is not canonical breaks the client's HMAC echo.
//!
//! Known difference from Go: a lone UTF-16 surrogate escape (`"\ud800"`) is an error here
//! (serde_json refuses it) where Go substitutes U+FFFD. Our own requests never contain one.

use std::cmp::Ordering;
use std::fmt::Write as _;

use serde_json::Value;
use thiserror::Error;

/// Why a document has no canonical form.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum JcsError {
    #[error("malformed JSON: {0}")]
    Parse(String),
    #[error("{0} has no JSON representation")]
    NonFinite(f64),
}

/// Canonicalizes raw JSON text. Invalid UTF-8 is replaced first, one U+FFFD per bad byte,
/// which is what Go's decoder does inside strings (outside strings it then fails to parse,
/// as in Go).
pub fn canonicalize(json: &[u8]) -> Result<String, JcsError> {
    let text = replace_invalid_utf8(json);
    let value: Value = serde_json::from_str(&text).map_err(|e| JcsError::Parse(e.to_string()))?;
    canonicalize_value(&value)
}

/// Canonicalizes an already parsed value.
pub fn canonicalize_value(value: &Value) -> Result<String, JcsError> {
    let mut out = String::new();
    write_value(&mut out, value)?;
    Ok(out)
}

/// Go's `utf8.DecodeRune` treats each byte of an invalid sequence as one error, so the
/// replacement is per byte, not per maximal subpart as `String::from_utf8_lossy` does it.
fn replace_invalid_utf8(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return s.into();
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    let mut rest = bytes;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                // `good` is valid UTF-8 by construction of `valid_up_to`.
                out.push_str(std::str::from_utf8(good).unwrap_or_default());
                out.push('\u{FFFD}');
                rest = &bad[1..];
            }
        }
    }
    out.into()
}

fn write_value(out: &mut String, value: &Value) -> Result<(), JcsError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::String(s) => write_string(out, s),
        Value::Number(n) => {
            // Integers that fit u64/i64 are exact in serde_json; JCS wants them as the nearest
            // double, which `as` gives (round to nearest, ties to even), same as parsing.
            let f = if let Some(u) = n.as_u64() {
                u as f64
            } else if let Some(i) = n.as_i64() {
                i as f64
            } else {
                n.as_f64().unwrap_or(f64::NAN)
            };
            write_number(out, f)?;
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| cmp_utf16(a, b));
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_value(out, &map[key])?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// Orders member names by UTF-16 code units (RFC 8785 §3.2.3). Differs from byte order only
/// above the BMP: a surrogate pair (0xD800..) sorts before U+E000..U+FFFF.
pub fn cmp_utf16(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// A JSON string as ECMAScript's `JSON.stringify` writes it: `"` and `\` escaped, the five
/// short control escapes, other C0 controls as `\u00xx` (lowercase), everything else raw.
pub fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// ECMAScript `Number::toString` of a double (RFC 8785 §3.2.2.3): shortest round-tripping
/// digits, positional for 1e-6 <= |x| < 1e21, otherwise `d[.ddd]e±n`; both zeros are `0`.
pub fn write_number(out: &mut String, x: f64) -> Result<(), JcsError> {
    if !x.is_finite() {
        return Err(JcsError::NonFinite(x));
    }
    if x == 0.0 {
        out.push('0');
        return Ok(());
    }
    if x < 0.0 {
        out.push('-');
    }
    // Rust's `{:e}` is the shortest round-tripping digit string: "d.ddde<exp>".
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let k = digits.len() as i32;
    // n: position of the decimal point relative to the digit string (value = 0.digits × 10^n).
    let n = exp + 1;
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = n - 1;
        let _ = write!(out, "e{}{}", if e < 0 { '-' } else { '+' }, e.abs());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(x: f64) -> String {
        let mut s = String::new();
        write_number(&mut s, x).unwrap();
        s
    }

    #[test]
    fn ecmascript_numbers() {
        assert_eq!(num(1.0), "1");
        assert_eq!(num(-0.0), "0");
        assert_eq!(num(123.456), "123.456");
        assert_eq!(num(1e21), "1e+21");
        assert_eq!(num(1e-7), "1e-7");
        assert_eq!(num(1.5e-7), "1.5e-7");
        assert_eq!(num(0.000001), "0.000001");
        assert_eq!(num(0.0000015), "0.0000015");
        assert_eq!(num(1e20), "100000000000000000000");
        assert_eq!(num(123456789012345680000.0), "123456789012345680000");
        assert_eq!(num(-4.35), "-4.35");
        assert_eq!(num(5e-324), "5e-324");
        assert_eq!(num(f64::MAX), "1.7976931348623157e+308");
        assert!(write_number(&mut String::new(), f64::NAN).is_err());
        assert!(write_number(&mut String::new(), f64::INFINITY).is_err());
    }

    #[test]
    fn invalid_utf8_is_replaced_per_byte_inside_strings() {
        // E2 82 is a truncated 3-byte sequence: Go yields two U+FFFD, not one.
        let out = canonicalize(b"{\"s\":\"a\xe2\x82b\"}").unwrap();
        assert_eq!(out, "{\"s\":\"a\u{FFFD}\u{FFFD}b\"}");
        assert!(canonicalize(b"{\"s\":1}\xff").is_err());
    }

    #[test]
    fn duplicate_members_keep_the_last_like_go() {
        assert_eq!(canonicalize(br#"{"a":1,"a":2}"#).unwrap(), r#"{"a":2}"#);
    }

    #[test]
    fn scalars_and_trailing_garbage() {
        assert_eq!(canonicalize(b" \"x\" ").unwrap(), "\"x\"");
        assert_eq!(canonicalize(b"1E2").unwrap(), "100");
        assert!(canonicalize(b"{} {}").is_err());
        assert!(canonicalize(b"1e400").is_err());
    }
}
