//! The admin API's request checks and answer shapes, shared by gRPC ([`super::grpc`]) and REST
//! ([`super::rest`]): both decode into Go's `adminrpc` request messages, which are checked here
//! exactly as Go's `admin/server.go` checks them (same rules, same messages) and turned into
//! the [`AdminBackend`](super::AdminBackend)'s plain values; backend values are turned back
//! into Go's response messages here too.
//!
//! Pure: no I/O, no backend calls.

use regex::Regex;

use super::backend::{
    AdminError, AuthScheme, Info, ServicePatch, ServiceSpec, ServiceView, Stats, Tx, TxQuery,
    TxState,
};
use super::proto as pb;
use super::rfc3339;

/// Go's `maxRegexpLen`.
pub const MAX_REGEXP_LEN: usize = 1024;
/// Go's `reservedPaths`: a service's `path_regexp` must match none of them.
pub const RESERVED_PATHS: [&str; 3] = ["/api/admin/", "/api/proxy/", "/_next/"];

/// Extra service keys a REST body carries beyond Go's fields (ours).
pub type Extra = serde_json::Map<String, serde_json::Value>;

fn bad(msg: impl Into<String>) -> AdminError {
    AdminError::BadRequest(msg.into())
}

fn check_protocol(p: &str) -> Result<(), AdminError> {
    if p == "http" || p == "https" {
        Ok(())
    } else {
        Err(bad(format!(
            "protocol must be 'http' or 'https', got {p:?}"
        )))
    }
}

/// Length and compilation (Go's checks on `host_regexp` and `path_regexp`).
fn check_regexp(field: &str, re: &str) -> Result<(), AdminError> {
    if re.len() > MAX_REGEXP_LEN {
        return Err(bad(format!("{field} exceeds max length {MAX_REGEXP_LEN}")));
    }
    Regex::new(re).map(|_| ()).map_err(|e| {
        // The regex crate's message spans lines (a caret diagram); its last line says it.
        let text = e.to_string();
        let last = text.lines().last().unwrap_or_default().trim();
        bad(format!("invalid {field}: {last}"))
    })
}

/// Go's `pathRegexpConflictsWithReserved` (an empty pattern conflicts: it matches everything).
fn check_path_reserved(re: &str) -> Result<(), AdminError> {
    let conflicts =
        re.is_empty() || Regex::new(re).is_ok_and(|r| RESERVED_PATHS.iter().any(|p| r.is_match(p)));
    if conflicts {
        Err(bad(
            "path_regexp must not match reserved paths (/api/admin/, /api/proxy/, /_next/)",
        ))
    } else {
        Ok(())
    }
}

fn check_price(price: i64) -> Result<u64, AdminError> {
    u64::try_from(price).map_err(|_| bad("price must be >= 0"))
}

/// Go's `validateAuthLevel`: the lowercased level.
pub fn check_auth(s: &str) -> Result<String, AdminError> {
    let lower = s.to_lowercase();
    if matches!(lower.as_str(), "on" | "off" | "true" | "false" | "") {
        return Ok(lower);
    }
    if let Some(n) = lower.strip_prefix("freebie ") {
        return match n.parse::<i64>() {
            Ok(n) if n > 0 => Ok(lower),
            _ => Err(bad("invalid freebie count, must be a positive integer")),
        };
    }
    Err(bad(format!(
        "invalid auth level {s:?}, must be 'on', 'off', or 'freebie N'"
    )))
}

/// Go's proto enum number to our scheme (Go's `authSchemeToString`: unknown numbers are L402).
fn scheme(n: i32) -> AuthScheme {
    AuthScheme::from_number(n).unwrap_or_default()
}

/// Go's `CreateService` checks, in Go's order.
pub fn create_spec(req: pb::CreateServiceRequest, extra: Extra) -> Result<ServiceSpec, AdminError> {
    if req.name.is_empty() {
        return Err(bad("name is required"));
    }
    if req.address.is_empty() {
        return Err(bad("address is required"));
    }
    let protocol = if req.protocol.is_empty() {
        "http".to_owned()
    } else {
        req.protocol
    };
    check_protocol(&protocol)?;
    let host_regexp = if req.host_regexp.is_empty() {
        ".*".to_owned()
    } else {
        req.host_regexp
    };
    check_regexp("host_regexp", &host_regexp)?;
    if !req.path_regexp.is_empty() {
        check_regexp("path_regexp", &req.path_regexp)?;
    }
    check_path_reserved(&req.path_regexp)?;
    let price = check_price(req.price)?;
    let auth = check_auth(&req.auth)?;
    Ok(ServiceSpec {
        name: req.name,
        address: req.address,
        protocol,
        host_regexp,
        path_regexp: req.path_regexp,
        price,
        auth,
        auth_scheme: scheme(req.auth_scheme),
        extra,
    })
}

/// Go's `UpdateService` checks: the name, and the fields to change (an empty string, an unset
/// price or `AUTH_SCHEME_L402` leaves a field as it is).
pub fn update_patch(
    req: pb::UpdateServiceRequest,
    extra: Extra,
) -> Result<(String, ServicePatch), AdminError> {
    if req.name.is_empty() {
        return Err(bad("missing service name"));
    }
    let some = |s: String| (!s.is_empty()).then_some(s);
    let protocol = some(req.protocol);
    if let Some(p) = &protocol {
        check_protocol(p)?;
    }
    let host_regexp = some(req.host_regexp);
    if let Some(re) = &host_regexp {
        check_regexp("host_regexp", re)?;
    }
    let path_regexp = some(req.path_regexp);
    if let Some(re) = &path_regexp {
        check_regexp("path_regexp", re)?;
        check_path_reserved(re)?;
    }
    let price = req.price.map(check_price).transpose()?;
    let auth = some(req.auth).map(|a| check_auth(&a)).transpose()?;
    let auth_scheme = (req.auth_scheme != 0).then(|| scheme(req.auth_scheme));
    Ok((
        req.name,
        ServicePatch {
            address: some(req.address),
            protocol,
            host_regexp,
            path_regexp,
            price,
            auth,
            auth_scheme,
            extra,
        },
    ))
}

/// Go's `DeleteService` check.
pub fn delete_name(req: pb::DeleteServiceRequest) -> Result<String, AdminError> {
    if req.name.is_empty() {
        return Err(bad("missing service name"));
    }
    Ok(req.name)
}

/// Go's page arguments: a limit of 0 or less is the default, an offset must not be negative.
pub fn page(limit: i32, offset: i32) -> Result<(u32, u32), AdminError> {
    let offset = u32::try_from(offset).map_err(|_| bad("offset must be >= 0"))?;
    Ok((u32::try_from(limit).unwrap_or(0), offset))
}

/// Go's `ListTransactions` checks. `kind` is ours (REST only).
pub fn tx_query(
    req: pb::ListTransactionsRequest,
    kind: Option<String>,
) -> Result<TxQuery, AdminError> {
    let (limit, offset) = page(req.limit, req.offset)?;
    let state = match req.state.as_str() {
        "" => None,
        s => Some(TxState::parse(s).ok_or_else(|| {
            bad(format!(
                "invalid state {s:?}, must be 'pending' or 'settled'"
            ))
        })?),
    };
    let (start, end) = match (req.start_date.as_str(), req.end_date.as_str()) {
        ("", "") => (None, None),
        ("", _) | (_, "") => return Err(bad("both start_date and end_date must be set together")),
        (s, e) => {
            let s = rfc3339::parse(s).ok_or_else(|| bad("invalid start_date format"))?;
            let e = rfc3339::parse(e).ok_or_else(|| bad("invalid end_date format"))?;
            if e < s {
                return Err(bad("end_date must be >= start_date"));
            }
            (Some(s), Some(e))
        }
    };
    Ok(TxQuery {
        service: (!req.service.is_empty()).then_some(req.service),
        state,
        kind: kind.filter(|k| !k.is_empty()),
        start,
        end,
        limit,
        offset,
    })
}

/// Go's `RevokeToken` checks: 32 bytes of hex.
pub fn token_id(s: &str) -> Result<[u8; 32], AdminError> {
    if s.is_empty() {
        return Err(bad("missing token ID"));
    }
    let bytes = hex::decode(s).map_err(|_| bad("invalid token ID"))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| bad(format!("token ID must be 32 bytes, got {}", bytes.len())))
}

/// Go's `GetStats` range: both or neither, RFC 3339, `to >= from`.
pub fn stats_range(from: &str, to: &str) -> Result<(Option<u64>, Option<u64>), AdminError> {
    match (from, to) {
        ("", "") => Ok((None, None)),
        ("", _) | (_, "") => Err(bad("both 'from' and 'to' must be set together")),
        (f, t) => {
            let f = rfc3339::parse(f).ok_or_else(|| bad("invalid 'from' time format"))?;
            let t = rfc3339::parse(t).ok_or_else(|| bad("invalid 'to' time format"))?;
            if t < f {
                return Err(bad("'to' must be greater than or equal to 'from'"));
            }
            Ok((Some(f), Some(t)))
        }
    }
}

/// An unsigned count as Go's `int64` (saturating).
pub fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub fn info_pb(i: Info) -> pb::GetInfoResponse {
    pb::GetInfoResponse {
        network: i.network,
        listen_addr: i.listen_addr,
        insecure: i.insecure,
        mpp_enabled: i.mpp_enabled,
        sessions_enabled: i.sessions_enabled,
        mpp_realm: i.mpp_realm,
    }
}

pub fn service_pb(v: &ServiceView) -> pb::Service {
    pb::Service {
        name: v.name.clone(),
        address: v.address.clone(),
        protocol: v.protocol.clone(),
        host_regexp: v.host_regexp.clone(),
        path_regexp: v.path_regexp.clone(),
        price: i64_of(v.price),
        auth: v.auth.clone(),
        auth_scheme: v.auth_scheme.number(),
    }
}

pub fn tx_pb(t: &Tx) -> pb::Transaction {
    pb::Transaction {
        // Go's `int32 id`: ids past it wrap as Go's conversion does.
        id: t.id as i32,
        token_id: hex::encode(t.token_id),
        payment_hash: hex::encode(t.payment_hash),
        service_name: t.service_name.clone(),
        price_sats: i64_of(t.price_sats),
        state: t.state.as_str().to_owned(),
        created_at: rfc3339::format(t.created_at),
        settled_at: t.settled_at.map(rfc3339::format).unwrap_or_default(),
    }
}

pub fn stats_pb(s: &Stats) -> pb::GetStatsResponse {
    pb::GetStatsResponse {
        total_revenue_sats: i64_of(s.total_revenue_sats),
        transaction_count: i64_of(s.transaction_count),
        service_breakdown: s
            .service_breakdown
            .iter()
            .map(|r| pb::ServiceRevenue {
                service_name: r.service_name.clone(),
                total_revenue_sats: i64_of(r.total_revenue_sats),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(f: impl FnOnce(&mut pb::CreateServiceRequest)) -> Result<ServiceSpec, AdminError> {
        let mut req = pb::CreateServiceRequest {
            name: "svc".into(),
            address: "127.0.0.1:9".into(),
            path_regexp: "^/svc/.*$".into(),
            ..Default::default()
        };
        f(&mut req);
        create_spec(req, Extra::new())
    }

    fn msg(r: Result<impl std::fmt::Debug, AdminError>) -> String {
        match r {
            Err(AdminError::BadRequest(m)) => m,
            other => panic!("not a bad request: {other:?}"),
        }
    }

    #[test]
    fn create_defaults_and_go_messages() {
        let s = create(|_| {}).unwrap();
        assert_eq!(
            (s.protocol.as_str(), s.host_regexp.as_str(), s.auth_scheme),
            ("http", ".*", AuthScheme::L402)
        );
        assert_eq!(msg(create(|r| r.name.clear())), "name is required");
        assert_eq!(msg(create(|r| r.address.clear())), "address is required");
        assert_eq!(
            msg(create(|r| r.protocol = "h2c".into())),
            "protocol must be 'http' or 'https', got \"h2c\""
        );
        assert_eq!(
            msg(create(|r| r.host_regexp = "a".repeat(1025))),
            "host_regexp exceeds max length 1024"
        );
        assert!(msg(create(|r| r.path_regexp = "(".into())).starts_with("invalid path_regexp: "));
        for reserved in ["", ".*", "^/api/", "/_next/"] {
            assert_eq!(
                msg(create(|r| r.path_regexp = reserved.into())),
                "path_regexp must not match reserved paths (/api/admin/, /api/proxy/, /_next/)",
                "{reserved:?}"
            );
        }
        assert_eq!(msg(create(|r| r.price = -1)), "price must be >= 0");
        assert_eq!(
            msg(create(|r| r.auth = "freebie 0".into())),
            "invalid freebie count, must be a positive integer"
        );
        assert!(msg(create(|r| r.auth = "maybe".into())).starts_with("invalid auth level"));
        let s = create(|r| {
            r.auth = "Freebie 3".into();
            r.auth_scheme = 2;
            r.price = 7;
        })
        .unwrap();
        assert_eq!(
            (s.auth.as_str(), s.auth_scheme, s.price),
            ("freebie 3", AuthScheme::L402Mpp, 7)
        );
        assert_eq!(
            create(|r| r.auth_scheme = 9).unwrap().auth_scheme,
            AuthScheme::L402
        );
    }

    #[test]
    fn update_leaves_empty_fields_alone() {
        let (name, p) = update_patch(
            pb::UpdateServiceRequest {
                name: "svc".into(),
                price: Some(0),
                ..Default::default()
            },
            Extra::new(),
        )
        .unwrap();
        assert_eq!(name, "svc");
        assert_eq!(
            p,
            ServicePatch {
                price: Some(0),
                ..ServicePatch::default()
            }
        );
        let upd = |f: fn(&mut pb::UpdateServiceRequest)| {
            let mut r = pb::UpdateServiceRequest {
                name: "svc".into(),
                ..Default::default()
            };
            f(&mut r);
            update_patch(r, Extra::new())
        };
        assert_eq!(msg(upd(|r| r.name.clear())), "missing service name");
        assert!(msg(upd(|r| r.path_regexp = "/api/admin/.*".into()))
            .starts_with("path_regexp must not"));
        assert_eq!(msg(upd(|r| r.price = Some(-5))), "price must be >= 0");
        assert_eq!(
            upd(|r| r.auth_scheme = 1).unwrap().1.auth_scheme,
            Some(AuthScheme::Mpp)
        );
    }

    #[test]
    fn transactions_tokens_and_stats_arguments() {
        let q = |f: fn(&mut pb::ListTransactionsRequest)| {
            let mut r = pb::ListTransactionsRequest::default();
            f(&mut r);
            tx_query(r, None)
        };
        assert_eq!(q(|_| {}).unwrap(), TxQuery::default());
        assert_eq!(q(|r| r.limit = -3).unwrap().limit, 0);
        assert_eq!(msg(q(|r| r.offset = -1)), "offset must be >= 0");
        assert_eq!(
            msg(q(|r| r.state = "paid".into())),
            "invalid state \"paid\", must be 'pending' or 'settled'"
        );
        assert_eq!(
            msg(q(|r| r.start_date = "2024-01-01T00:00:00Z".into())),
            "both start_date and end_date must be set together"
        );
        assert_eq!(
            msg(q(|r| {
                r.start_date = "2024-01-02T00:00:00Z".into();
                r.end_date = "2024-01-01T00:00:00Z".into();
            })),
            "end_date must be >= start_date"
        );
        let ok = q(|r| {
            r.start_date = "2024-01-01T00:00:00Z".into();
            r.end_date = "2024-01-02T00:00:00Z".into();
            r.state = "settled".into();
            r.service = "a".into();
        })
        .unwrap();
        assert_eq!(
            (ok.start, ok.end, ok.state, ok.service.as_deref()),
            (
                Some(1_704_067_200),
                Some(1_704_153_600),
                Some(TxState::Settled),
                Some("a")
            )
        );
        assert_eq!(msg(token_id("")), "missing token ID");
        assert_eq!(msg(token_id("xyz")), "invalid token ID");
        assert_eq!(msg(token_id("abcd")), "token ID must be 32 bytes, got 2");
        assert_eq!(token_id(&"ab".repeat(32)).unwrap(), [0xab; 32]);
        assert_eq!(stats_range("", ""), Ok((None, None)));
        assert_eq!(
            msg(stats_range("x", "")),
            "both 'from' and 'to' must be set together"
        );
        assert_eq!(msg(stats_range("x", "y")), "invalid 'from' time format");
        assert_eq!(
            msg(stats_range("2024-01-02T00:00:00Z", "2024-01-01T00:00:00Z")),
            "'to' must be greater than or equal to 'from'"
        );
    }

    #[test]
    fn answers_in_go_shapes() {
        let t = Tx {
            id: 4,
            token_id: [1; 32],
            payment_hash: [2; 32],
            service_name: "s".into(),
            price_sats: 21,
            state: TxState::Pending,
            created_at: 1_700_000_000,
            settled_at: None,
            kind: "l402".into(),
            revoked_at: None,
        };
        let p = tx_pb(&t);
        assert_eq!(p.token_id, "01".repeat(32));
        assert_eq!(
            (p.created_at.as_str(), p.settled_at.as_str()),
            ("2023-11-14T22:13:20Z", "")
        );
        assert_eq!(i64_of(u64::MAX), i64::MAX);
    }
}
