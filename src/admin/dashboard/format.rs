//! Small text helpers of the dashboard, none of which may panic on what a client sends: query
//! strings and percent-decoding, UTC calendar dates (`YYYY-MM-DD` in and out, on the admin
//! API's [`rfc3339`](crate::admin::rfc3339); the dashboard's days are UTC days, as the store's
//! day buckets are), HTML escaping, and CSV fields (RFC 4180 quoting, spreadsheet formulas
//! defused).

use std::collections::HashMap;

use crate::admin::rfc3339;

/// Seconds in a day.
pub const DAY: u64 = 86_400;

/// The decoded `name=value` pairs of a query string; the last of a repeated name wins. Names
/// or values that do not decode to UTF-8 are dropped.
pub fn query(raw: &str) -> HashMap<String, String> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode(k, true)?, decode(v, true)?))
        })
        .collect()
}

/// Percent-decodes `s` (`+` is a space when `plus` is set); `None` for a malformed escape or
/// bytes that are not UTF-8.
pub fn decode(s: &str, plus: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = hex_val(*bytes.get(i + 1)?)?;
                let lo = hex_val(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Unix seconds of 00:00 UTC on `YYYY-MM-DD`; `None` when it is not such a date (or before
/// 1970).
pub fn parse_date(s: &str) -> Option<u64> {
    if s.len() != 10 || !s.is_ascii() {
        return None;
    }
    rfc3339::parse(&format!("{s}T00:00:00Z"))
}

/// `YYYY-MM-DD` of the UTC day holding `secs`.
pub fn date(secs: u64) -> String {
    let t = rfc3339::format(secs);
    t.split_once('T').map_or(t.clone(), |(d, _)| d.to_owned())
}

/// `s` with HTML's special characters escaped (text and quoted attribute values).
pub fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One CSV field: quoted when it holds a separator, quote or line break (RFC 4180), and
/// prefixed with `'` when a spreadsheet would read it as a formula (`=`, `+`, `-`, `@`, tab,
/// carriage return first).
pub fn csv_field(s: &str) -> String {
    let defused;
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        defused = format!("'{s}");
        defused.as_str()
    } else {
        s
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_and_malformed_parts_are_dropped() {
        let q = query("service=my+svc%2Fv1&state=settled&bad=%zz&empty&&x=%E2%82%AC");
        assert_eq!(q["service"], "my svc/v1");
        assert_eq!(q["state"], "settled");
        assert_eq!(q["empty"], "");
        assert_eq!(q["x"], "€");
        assert!(!q.contains_key("bad"));
        assert_eq!(decode("a%2", false), None);
        assert_eq!(decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(decode("%ff", false), None);
    }

    #[test]
    fn dates_roundtrip_and_reject_nonsense() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2000-03-01"), Some(951_868_800));
        assert_eq!(parse_date("2024-02-29"), Some(1_709_164_800));
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-00-10",
            "1969-12-31",
            "2024-1-01",
            "2024-01-0a",
            "+024-01-01",
            "2024/01/01",
            "",
            "2024-01-01T",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
        for day in [0u64, 11_016, 19_782, 20_000, 2_932_896] {
            let secs = day * DAY + 4_000;
            assert_eq!(parse_date(&date(secs)), Some(day * DAY), "{day}");
        }
        assert_eq!(date(1_700_000_150), "2023-11-14");
        assert!(date(u64::MAX).len() >= 10);
    }

    #[test]
    fn html_and_csv_escape() {
        assert_eq!(
            html("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(csv_field("-1,2"), "\"'-1,2\"");
        assert_eq!(csv_field("line\nbreak"), "\"line\nbreak\"");
    }
}
