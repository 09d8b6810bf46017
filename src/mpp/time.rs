//! RFC 3339 timestamps for the Payment scheme: formatting a unix time the way Go's
//! `t.UTC().Format(time.RFC3339)` does (second precision, `Z`), for challenge `expires` and
//! receipt `timestamp`; and parsing `expires` the way Go's `time.Parse(time.RFC3339, …)` fast
//! path accepts it. Owns calendar arithmetic only (days-from-civil, no chrono); never reads a
//! clock: every `now` comes from the caller.
//!
//! Parsing accepts `YYYY-MM-DDTHH:MM:SS[.frac](Z|±hh:mm)` with Go's ranges (year 0000-9999,
//! real month lengths, hour 0-23, seconds 0-59, offsets up to 23:59). Go's slow-path leniencies
//! (one-digit hours, `,` before the fraction) are refused: `expires` is HMAC-bound, and every
//! issuer (Go or us) mints the `Z` form, so they cannot occur in a credential that verifies.

use thiserror::Error;

/// How long a minted challenge stays valid (Go aperture's `defaultChallengeExpiry`, 15 min).
pub const CHALLENGE_TTL_SECS: u64 = 15 * 60;

/// Why an `expires` value is not an RFC 3339 timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("not an RFC 3339 timestamp")]
pub struct TimeError;

/// A parsed instant: seconds since the unix epoch (may be negative) plus nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    pub unix: i64,
    pub nanos: u32,
}

impl Timestamp {
    /// Go's `now.After(t)` for a whole-second `now`: strictly later than this instant.
    pub fn has_passed(&self, now_unix: u64) -> bool {
        // now > unix + nanos/1e9  <=>  now > unix (nanos < 1e9, now has none).
        i128::from(now_unix) > i128::from(self.unix)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(month) + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse: (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a unix time, as Go's `time.RFC3339` formats a UTC time.
pub fn format_rfc3339(unix: u64) -> String {
    let secs = i64::try_from(unix).unwrap_or(i64::MAX);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The `expires` value of a challenge minted at `now_unix`: now + 15 minutes.
pub fn challenge_expires(now_unix: u64) -> String {
    format_rfc3339(now_unix.saturating_add(CHALLENGE_TTL_SECS))
}

/// Fixed-width decimal field within `[lo, hi]`.
fn field(s: &[u8], lo: u32, hi: u32) -> Result<u32, TimeError> {
    let mut v = 0u32;
    for &b in s {
        if !b.is_ascii_digit() {
            return Err(TimeError);
        }
        v = v * 10 + u32::from(b - b'0');
    }
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(TimeError)
    }
}

/// Parses an RFC 3339 timestamp as Go's `time.Parse(time.RFC3339, s)` fast path does.
pub fn parse_rfc3339(s: &str) -> Result<Timestamp, TimeError> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return Err(TimeError);
    }
    let seps = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if seps.iter().any(|&(i, c)| b[i] != c) {
        return Err(TimeError);
    }
    let year = i64::from(field(&b[0..4], 0, 9999)?);
    let month = field(&b[5..7], 1, 12)?;
    let day = field(&b[8..10], 1, days_in_month(year, month))?;
    let hour = field(&b[11..13], 0, 23)?;
    let min = field(&b[14..16], 0, 59)?;
    let sec = field(&b[17..19], 0, 59)?;
    let mut rest = &b[19..];
    let mut nanos = 0u32;
    if rest.len() >= 2 && rest[0] == b'.' && rest[1].is_ascii_digit() {
        let n = 1 + rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        // Go keeps nanosecond precision and ignores further digits.
        for (i, &d) in rest[1..n].iter().take(9).enumerate() {
            nanos += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
        }
        rest = &rest[n..];
    }
    let offset = match rest {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let secs =
                i64::from(field(&[*h1, *h2], 0, 23)? * 3600 + field(&[*m1, *m2], 0, 59)? * 60);
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return Err(TimeError),
    };
    let local =
        days_from_civil(year, month, day) * 86_400 + i64::from(hour * 3600 + min * 60 + sec);
    Ok(Timestamp {
        unix: local - offset,
        nanos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_rfc3339(1_786_623_300), "2026-08-13T12:15:00Z");
        assert_eq!(format_rfc3339(1_773_176_400), "2026-03-10T21:00:00Z");
        assert_eq!(format_rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(challenge_expires(1_786_622_400), "2026-08-13T12:15:00Z");
    }

    #[test]
    fn parse_inverts_format_over_a_wide_range() {
        let mut t = 0u64;
        while t < 253_402_300_800 {
            let s = format_rfc3339(t);
            assert_eq!(
                parse_rfc3339(&s),
                Ok(Timestamp {
                    unix: t as i64,
                    nanos: 0
                }),
                "{s}"
            );
            t += 86_399 * 37 + 12_345;
        }
    }

    #[test]
    fn fractions_and_offsets() {
        let base = parse_rfc3339("2026-08-13T12:15:00Z").unwrap().unix;
        let p = parse_rfc3339("2026-08-13T12:15:00.5Z").unwrap();
        assert_eq!(
            p,
            Timestamp {
                unix: base,
                nanos: 500_000_000
            }
        );
        let p = parse_rfc3339("2026-08-13T12:15:00.1234567891Z").unwrap();
        assert_eq!(p.nanos, 123_456_789);
        assert_eq!(
            parse_rfc3339("2026-08-13T14:15:00+02:00").unwrap().unix,
            base
        );
        assert_eq!(
            parse_rfc3339("2026-08-13T11:45:00-00:30").unwrap().unix,
            base
        );
        assert_eq!(
            parse_rfc3339("0000-01-01T00:00:00+01:00").unwrap().unix,
            -62_167_222_800
        );
    }

    #[test]
    fn refuses_what_go_refuses() {
        for bad in [
            "",
            "2026-08-13",
            "2026-08-13 12:15:00Z",
            "2026-08-13t12:15:00Z",
            "2026-08-13T12:15:00z",
            "2026-08-13T12:15:00",
            "2026-08-13T24:00:00Z",
            "2026-08-13T12:60:00Z",
            "2026-08-13T12:15:60Z",
            "2026-02-29T12:15:00Z",
            "2026-13-01T12:15:00Z",
            "2026-00-01T12:15:00Z",
            "2026-08-13T12:15:00.Z",
            "2026-08-13T12:15:00+0200",
            "2026-08-13T12:15:00+24:00",
            "2026-08-13T12:15:00Zjunk",
            "+026-08-13T12:15:00Z",
            "2026-08-13T12:15:00,5Z",
        ] {
            assert_eq!(parse_rfc3339(bad), Err(TimeError), "{bad:?}");
        }
        assert!(parse_rfc3339("2024-02-29T00:00:00Z").is_ok());
    }

    #[test]
    fn expiry_is_strictly_after() {
        let t = parse_rfc3339("2026-08-13T12:15:00Z").unwrap();
        assert!(!t.has_passed(t.unix as u64));
        assert!(t.has_passed(t.unix as u64 + 1));
        let half = parse_rfc3339("2026-08-13T12:15:00.5Z").unwrap();
        assert!(!half.has_passed(t.unix as u64));
        assert!(half.has_passed(t.unix as u64 + 1));
    }
}
