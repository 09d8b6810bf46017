//! The `Accept-Payment` request header (core draft "Client Payment Preferences"): a list of
//! `method/intent` ranges (`*` wildcards) with RFC 9110 `q` weights, and the order in which to
//! offer our Payment challenges given it. Owns parsing and ranking only; it must not decide which
//! intents a service offers (the caller passes them in its own preference order). Go aperture
//! ignores this header.

use thiserror::Error;

use super::{Intent, METHOD_LIGHTNING};

/// Why an `Accept-Payment` value is malformed (the whole header is then ignored, as allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AcceptError {
    #[error("element {0} is not method/intent")]
    BadRange(usize),
    #[error("element {0} has a parameter other than one q=qvalue")]
    BadParam(usize),
}

/// One `method/intent[;q=…]` range; `None` is the `*` wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRange {
    pub method: Option<String>,
    pub intent: Option<String>,
    /// Weight in thousandths (0..=1000); omitted means 1000.
    pub q: u16,
}

impl PaymentRange {
    /// How specifically this range names (method, intent): `None` if it does not match,
    /// else the number of non-wildcard parts (0..=2).
    pub fn specificity(&self, method: &str, intent: &str) -> Option<u8> {
        let part = |range: &Option<String>, value: &str| match range {
            None => Some(0),
            Some(r) if r == value => Some(1),
            Some(_) => None,
        };
        Some(part(&self.method, method)? + part(&self.intent, intent)?)
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn range_part(s: &str) -> Option<Option<String>> {
    match s {
        "*" => Some(None),
        s if !s.is_empty() && s.bytes().all(is_tchar) => Some(Some(s.to_owned())),
        _ => None,
    }
}

/// RFC 9110 §12.4.2 qvalue: `0[.ddd]` or `1[.000]`, as thousandths.
fn parse_qvalue(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |a, b| a * 10 + u16::from(b - b'0'));
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Parses an `Accept-Payment` value (several field lines joined with `,`). Empty list elements
/// are skipped, as RFC 9110 lists allow.
pub fn parse_accept_payment(value: &str) -> Result<Vec<PaymentRange>, AcceptError> {
    let mut out = Vec::new();
    for (i, element) in value.split(',').enumerate() {
        let element = element.trim_matches([' ', '\t']);
        if element.is_empty() {
            continue;
        }
        let mut parts = element.split(';');
        let token = parts
            .next()
            .unwrap_or_default()
            .trim_end_matches([' ', '\t']);
        let (method, intent) = token.split_once('/').ok_or(AcceptError::BadRange(i))?;
        let method = range_part(method).ok_or(AcceptError::BadRange(i))?;
        let intent = range_part(intent).ok_or(AcceptError::BadRange(i))?;
        let mut q = None;
        for param in parts {
            let (name, v) = param
                .trim_matches([' ', '\t'])
                .split_once('=')
                .ok_or(AcceptError::BadParam(i))?;
            if !name.eq_ignore_ascii_case("q") || q.is_some() {
                return Err(AcceptError::BadParam(i));
            }
            q = Some(parse_qvalue(v).ok_or(AcceptError::BadParam(i))?);
        }
        out.push(PaymentRange {
            method,
            intent,
            q: q.unwrap_or(1000),
        });
    }
    Ok(out)
}

/// The order in which to offer `offers` (given in our own preference order). Each offer takes the
/// weight of its most specific matching range (the first listed among equally specific ones);
/// unmatched or `q=0` offers are dropped; higher `q` first, ties keep our order. An absent or
/// malformed header, or one that leaves nothing, yields `offers` unchanged: the draft allows
/// ignoring it, and a 402 without any challenge helps no one.
pub fn preference_order(accept_payment: Option<&str>, offers: &[Intent]) -> Vec<Intent> {
    let Some(Ok(ranges)) = accept_payment.map(parse_accept_payment) else {
        return offers.to_vec();
    };
    let mut weighted: Vec<(u16, Intent)> = offers
        .iter()
        .filter_map(|&offer| {
            let mut best: Option<(u8, u16)> = None;
            for r in &ranges {
                if let Some(s) = r.specificity(METHOD_LIGHTNING, offer.as_str()) {
                    if best.is_none_or(|(bs, _)| s > bs) {
                        best = Some((s, r.q));
                    }
                }
            }
            best.filter(|&(_, q)| q > 0).map(|(_, q)| (q, offer))
        })
        .collect();
    if weighted.is_empty() {
        return offers.to_vec();
    }
    weighted.sort_by_key(|&(q, _)| std::cmp::Reverse(q));
    weighted.into_iter().map(|(_, offer)| offer).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Intent::{Charge, Session};

    const BOTH: [Intent; 2] = [Charge, Session];

    #[test]
    fn parses_the_draft_examples() {
        let r = parse_accept_payment(
            "tempo/charge, tempo/session, stripe/charge;q=0.5, solana/charge;q=0.3",
        )
        .unwrap();
        assert_eq!(
            r.iter().map(|r| r.q).collect::<Vec<_>>(),
            [1000, 1000, 500, 300]
        );
        let r = parse_accept_payment("tempo/*, solana/*;q=0.6, */session;q=0.3").unwrap();
        assert_eq!((r[0].intent.clone(), r[2].method.clone()), (None, None));
        assert_eq!(
            parse_accept_payment(" , lightning/charge ;Q=1.000 ,")
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn malformed_values() {
        for bad in [
            "lightning",
            "/charge",
            "lightning/",
            "a/b/c",
            "a b/c",
            "a/b;q",
            "a/b;q=2",
            "a/b;q=1.001",
            "a/b;q=0.1234",
            "a/b;q=.5",
            "a/b;x=1",
            "a/b;q=1;q=1",
            "a/b;q=0.5x",
        ] {
            assert!(parse_accept_payment(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_qvalue("0"), Some(0));
        assert_eq!(parse_qvalue("0.05"), Some(50));
        assert_eq!(parse_qvalue("1."), Some(1000));
    }

    #[test]
    fn ranking() {
        assert_eq!(preference_order(None, &BOTH), BOTH);
        assert_eq!(
            preference_order(Some("lightning/session, lightning/charge;q=0.5"), &BOTH),
            [Session, Charge]
        );
        assert_eq!(preference_order(Some("lightning/*"), &BOTH), BOTH);
        assert_eq!(
            preference_order(Some("lightning/*, lightning/charge;q=0"), &BOTH),
            [Session]
        );
        // The more specific range wins even when listed later or weighted lower.
        assert_eq!(
            preference_order(Some("*/*;q=0.9, lightning/session;q=0.1"), &BOTH),
            [Charge, Session]
        );
        // Equally specific ranges: the first listed applies.
        assert_eq!(
            preference_order(Some("*/charge;q=0.2, lightning/*;q=0.8"), &BOTH),
            [Session, Charge]
        );
        assert_eq!(
            preference_order(Some("lightning/*;q=0.2, */charge;q=0.8"), &[Charge]),
            [Charge]
        );
        // Nothing acceptable, or malformed: ignore the header.
        assert_eq!(preference_order(Some("tempo/charge"), &BOTH), BOTH);
        assert_eq!(preference_order(Some("lightning/*;q=0"), &BOTH), BOTH);
        assert_eq!(preference_order(Some("lightning/session;q=2"), &BOTH), BOTH);
        assert_eq!(preference_order(Some(""), &[Session]), [Session]);
    }
}
