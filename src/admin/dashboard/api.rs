//! The dashboard's JSON endpoints under `/dashboard/api/`, each a thin call of the
//! [`AdminBackend`]: the page's only way to the data. They are reached only after
//! [`Dashboard::serve`](super::Dashboard)'s checks (loopback peer, host, and for a mutation the
//! CSRF token and origin); nothing here trusts the request beyond parsing it, and every parse
//! failure is a 400 naming the field.
//!
//! | method | path | backend call |
//! |---|---|---|
//! | GET | `overview?days=N` (0: all time) | `stats`, `revenue_by_day`, `list_transactions` (counts), `list_services` |
//! | GET | `transactions?service&state&from&to&limit&offset` | `list_transactions` |
//! | GET | `transactions.csv?service&state&from&to` | `list_transactions`, every page |
//! | GET, POST | `services` | `list_services`, `create_service` |
//! | PUT, DELETE | `services/{name}` | `update_service` (`create_service` to override a file service), `delete_service` |
//! | DELETE | `tokens/{token_id hex}` | `revoke_token` |
//! | GET | `node` | `info`, `node` |
//!
//! Dates are `YYYY-MM-DD`, UTC days; `to` includes its whole day. Service bodies take Go's
//! field names (`host_regexp`, `auth_scheme`: `l402`, `mpp` or `l402+mpp`) and go through the
//! admin API's own checks ([`service_form`](super::service_form)), as do token ids.

use std::collections::HashMap;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use serde_json::{json, Value};

use super::format::{self, csv_field, DAY};
use super::page::node_fields;
use super::{respond, service_form};
use crate::admin::api as admin_api;
use crate::admin::backend::{
    AdminBackend, AdminError, ServiceSource, ServiceSpec, ServiceView, Tx, TxQuery, TxState,
};
use crate::admin::rfc3339::format as rfc3339;

/// The page size when the page asks for none.
const DEFAULT_PAGE: u32 = 25;
/// The most rows one CSV export holds.
pub const CSV_MAX_ROWS: u64 = 100_000;
/// The longest range the overview draws, in days (ten years).
const MAX_DAYS: u64 = 3_660;

/// Answers `rest` (the path after `/dashboard/api/`).
pub fn route(
    backend: &dyn AdminBackend,
    method: &Method,
    rest: &str,
    query: &str,
    body: &Bytes,
    now: u64,
) -> Response<Bytes> {
    let q = format::query(query);
    let result = match (method, rest) {
        (&Method::GET, "overview") => overview(backend, &q, now),
        (&Method::GET, "transactions") => transactions(backend, &q),
        (&Method::GET, "transactions.csv") => return csv(backend, &q),
        (&Method::GET, "services") => backend
            .list_services()
            .map(|list| Value::Array(list.iter().map(service_json).collect())),
        (&Method::POST, "services") => service_form::create(body)
            .and_then(|spec| backend.create_service(spec))
            .map(|s| service_json(&s)),
        (&Method::GET, "node") => Ok(node(backend)),
        _ => match (method, rest.split_once('/')) {
            (&Method::PUT, Some(("services", name))) => {
                path_name(name).and_then(|name| update(backend, &name, body))
            }
            (&Method::DELETE, Some(("services", name))) => path_name(name).and_then(|name| {
                backend
                    .delete_service(&name)
                    .map(|()| json!({ "status": "deleted" }))
            }),
            (&Method::DELETE, Some(("tokens", id))) => admin_api::token_id(id).and_then(|id| {
                backend
                    .revoke_token(id)
                    .map(|()| json!({ "status": "revoked" }))
            }),
            _ => return not_allowed(method, rest),
        },
    };
    match result {
        Ok(v) => respond(StatusCode::OK, "application/json", v.to_string()),
        Err(e) => error(&e),
    }
}

/// A service changed from the page. A database service is updated; a config-file service is
/// overridden by a database service of the same name (the precedence rule: the database's
/// wins by name) holding its fields with the change applied, and the answer says
/// `"overrides_file": true`. The file's block is never edited.
fn update(backend: &dyn AdminBackend, name: &str, body: &[u8]) -> Result<Value, AdminError> {
    let patch = service_form::patch(name, body)?;
    let current = backend
        .list_services()?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| AdminError::NotFound(format!("no service named {name:?}")))?;
    if current.source != Some(ServiceSource::File) {
        return backend
            .update_service(name, patch)
            .map(|s| service_json(&s));
    }
    let mut extra = current.extra;
    for (k, v) in patch.extra {
        if v.is_null() {
            extra.remove(&k);
        } else {
            extra.insert(k, v);
        }
    }
    let spec = ServiceSpec {
        name: current.name,
        address: patch.address.unwrap_or(current.address),
        protocol: patch.protocol.unwrap_or(current.protocol),
        host_regexp: patch.host_regexp.unwrap_or(current.host_regexp),
        path_regexp: patch.path_regexp.unwrap_or(current.path_regexp),
        price: patch.price.unwrap_or(current.price),
        auth: patch.auth.unwrap_or(current.auth),
        auth_scheme: patch.auth_scheme.unwrap_or(current.auth_scheme),
        extra,
    };
    let created = backend.create_service(spec)?;
    let mut v = service_json(&created);
    v["overrides_file"] = Value::Bool(true);
    Ok(v)
}

/// An [`AdminError`] as `{"error": "..."}` with its status.
pub fn error(e: &AdminError) -> Response<Bytes> {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    respond(
        status,
        "application/json",
        json!({ "error": e.to_string() }).to_string(),
    )
}

/// 405 for a known path asked with the wrong method, 404 otherwise.
fn not_allowed(method: &Method, rest: &str) -> Response<Bytes> {
    let allow = match rest.split_once('/').map_or(rest, |(first, _)| first) {
        "overview" | "transactions" | "transactions.csv" | "node" => "GET",
        "services" if rest.contains('/') => "PUT, DELETE",
        "services" => "GET, POST",
        "tokens" if rest.contains('/') => "DELETE",
        _ => {
            return error(&AdminError::NotFound(format!(
                "no dashboard endpoint /dashboard/api/{rest}"
            )))
        }
    };
    let mut resp = error(&AdminError::BadRequest(format!(
        "{method} is not allowed here"
    )));
    *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    resp.headers_mut()
        .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
    resp
}

fn bad(field: &str, why: &str) -> AdminError {
    AdminError::BadRequest(format!("{field}: {why}"))
}

/// A service name from the path (percent-encoded by the page).
fn path_name(raw: &str) -> Result<String, AdminError> {
    match format::decode(raw, false) {
        Some(name) if !name.is_empty() => Ok(name),
        _ => Err(bad("name", "missing or not percent-encoded UTF-8")),
    }
}

fn number<T: std::str::FromStr>(
    q: &HashMap<String, String>,
    name: &str,
    default: T,
) -> Result<T, AdminError> {
    match q.get(name).map(String::as_str) {
        None | Some("") => Ok(default),
        Some(v) => v.parse().map_err(|_| bad(name, "not a whole number")),
    }
}

fn service_json(s: &ServiceView) -> Value {
    json!({
        "name": s.name,
        "source": s.source.map_or("file", |src| src.as_str()),
        "address": s.address,
        "protocol": s.protocol,
        "host_regexp": s.host_regexp,
        "path_regexp": s.path_regexp,
        "price": s.price,
        "auth": s.auth,
        "auth_scheme": s.auth_scheme.as_str(),
        "extra": s.extra,
    })
}

fn tx_json(t: &Tx) -> Value {
    json!({
        "id": t.id,
        "token_id": hex::encode(t.token_id),
        "payment_hash": hex::encode(t.payment_hash),
        "service_name": t.service_name,
        "price_sats": t.price_sats,
        "state": t.state.as_str(),
        "created_at": t.created_at,
        "settled_at": t.settled_at,
        "kind": t.kind,
        "revoked_at": t.revoked_at,
    })
}

fn node(backend: &dyn AdminBackend) -> Value {
    let (info, node) = (backend.info(), backend.node());
    let fields: serde_json::Map<String, Value> = node_fields(&info, &node)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::String(v)))
        .collect();
    json!({
        "node": {
            "backend": node.backend,
            "lnd_connected": node.lnd_connected,
            "bridge_queue_depth": node.bridge_queue_depth,
            "bridge_queue_capacity": node.bridge_queue_capacity,
            "cores": node.cores,
            "version": node.version,
        },
        "info": {
            "network": info.network,
            "listen_addr": info.listen_addr,
            "insecure": info.insecure,
            "mpp_enabled": info.mpp_enabled,
            "sessions_enabled": info.sessions_enabled,
            "mpp_realm": info.mpp_realm,
        },
        "fields": fields,
    })
}

/// Tiles, the per-day series (every day of the range, zeros included) and the per-service
/// table of the home view.
fn overview(
    backend: &dyn AdminBackend,
    q: &HashMap<String, String>,
    now: u64,
) -> Result<Value, AdminError> {
    let days: u64 = number(q, "days", 30)?;
    if days > MAX_DAYS {
        return Err(bad("days", "at most 3660"));
    }
    let today = now / DAY * DAY;
    let from = (days > 0).then(|| today.saturating_sub((days - 1) * DAY));
    let stats = backend.stats(from, None)?;
    let by_day = backend.revenue_by_day(from, None)?;
    let count = |state| {
        backend
            .list_transactions(TxQuery {
                state: Some(state),
                limit: 1,
                ..TxQuery::default()
            })
            .map(|p| p.total_count)
    };
    let (settled, pending) = (count(TxState::Settled)?, count(TxState::Pending)?);
    let services = backend.list_services()?;
    // The series: from the range's first day (or the first day with revenue) to today (or
    // the last day with revenue, should a clock be ahead), at most MAX_DAYS days.
    let first = by_day.iter().map(|d| d.day_start).min().unwrap_or(today);
    let last = by_day.iter().map(|d| d.day_start).max().unwrap_or(today);
    let end = today.max(last / DAY * DAY);
    let start = from
        .unwrap_or(first / DAY * DAY)
        .max(end.saturating_sub((MAX_DAYS - 1) * DAY));
    let mut series: Vec<(u64, u64, u64)> = (0..=(end.saturating_sub(start) / DAY))
        .map(|i| (start + i * DAY, 0, 0))
        .collect();
    for d in &by_day {
        let day = d.day_start / DAY * DAY;
        if let Some(slot) = day
            .checked_sub(start)
            .and_then(|off| series.get_mut((off / DAY) as usize))
        {
            slot.1 = slot.1.saturating_add(d.revenue_sats);
            slot.2 = slot.2.saturating_add(d.count);
        }
    }
    Ok(json!({
        "from": from,
        "to": now,
        "revenue_sats": stats.total_revenue_sats,
        "transaction_count": stats.transaction_count,
        "refunded_sats": stats.refunded_sats,
        "settled_count": settled,
        "pending_count": pending,
        "active_services": services.len(),
        "db_services": services.iter().filter(|s| s.is_db()).count(),
        "per_service": stats.service_breakdown.iter().map(|s| json!({
            "service_name": s.service_name,
            "revenue_sats": s.total_revenue_sats,
            "count": s.count,
        })).collect::<Vec<_>>(),
        "days": series.iter().map(|&(day, sats, count)| json!({
            "day": format::date(day),
            "day_start": day,
            "revenue_sats": sats,
            "count": count,
        })).collect::<Vec<_>>(),
    }))
}

/// The transaction filter of a query string (`limit`/`offset` included).
fn tx_query(q: &HashMap<String, String>) -> Result<TxQuery, AdminError> {
    let date = |name: &str| -> Result<Option<u64>, AdminError> {
        match q.get(name).map(String::as_str) {
            None | Some("") => Ok(None),
            Some(v) => format::parse_date(v)
                .map(Some)
                .ok_or_else(|| bad(name, "expected a date, YYYY-MM-DD")),
        }
    };
    let start = date("from")?;
    let end = date("to")?.map(|d| d + DAY - 1);
    if let (Some(s), Some(e)) = (start, end) {
        if e < s {
            return Err(bad("to", "before from"));
        }
    }
    let state = match q.get("state").map(String::as_str) {
        None | Some("") => None,
        Some(s) => Some(TxState::parse(s).ok_or_else(|| bad("state", "pending or settled"))?),
    };
    let limit = number(q, "limit", DEFAULT_PAGE)?;
    if !(1..=1000).contains(&limit) {
        return Err(bad("limit", "1 to 1000"));
    }
    Ok(TxQuery {
        service: q.get("service").filter(|s| !s.is_empty()).cloned(),
        state,
        kind: None,
        start,
        end,
        limit,
        offset: number(q, "offset", 0)?,
    })
}

fn transactions(
    backend: &dyn AdminBackend,
    q: &HashMap<String, String>,
) -> Result<Value, AdminError> {
    let page = backend.list_transactions(tx_query(q)?)?;
    Ok(json!({
        "transactions": page.transactions.iter().map(tx_json).collect::<Vec<_>>(),
        "total_count": page.total_count,
    }))
}

/// Every transaction the filter selects (newest first, at most [`CSV_MAX_ROWS`]) as CSV, with
/// Go's field names as the header line and RFC 3339 times.
fn csv(backend: &dyn AdminBackend, q: &HashMap<String, String>) -> Response<Bytes> {
    let mut query = match tx_query(q) {
        Ok(query) => query,
        Err(e) => return error(&e),
    };
    query.limit = 1000;
    query.offset = 0;
    let mut out = String::from(
        "id,token_id,payment_hash,service_name,price_sats,state,created_at,settled_at,kind,revoked_at\r\n",
    );
    let mut written = 0u64;
    loop {
        let page = match backend.list_transactions(query.clone()) {
            Ok(page) => page,
            Err(e) => return error(&e),
        };
        let n = page.transactions.len() as u64;
        for t in &page.transactions {
            if written == CSV_MAX_ROWS {
                break;
            }
            let time = |t: Option<u64>| t.map(rfc3339).unwrap_or_default();
            let fields = [
                t.id.to_string(),
                hex::encode(t.token_id),
                hex::encode(t.payment_hash),
                csv_field(&t.service_name),
                t.price_sats.to_string(),
                t.state.as_str().to_owned(),
                rfc3339(t.created_at),
                time(t.settled_at),
                csv_field(&t.kind),
                time(t.revoked_at),
            ];
            out.push_str(&fields.join(","));
            out.push_str("\r\n");
            written += 1;
        }
        if n < u64::from(query.limit) || written >= CSV_MAX_ROWS || written >= page.total_count {
            break;
        }
        query.offset = query.offset.saturating_add(query.limit);
    }
    let mut resp = respond(StatusCode::OK, "text/csv; charset=utf-8", out);
    resp.headers_mut().insert(
        http::header::CONTENT_DISPOSITION,
        http::HeaderValue::from_static("attachment; filename=\"aperture-transactions.csv\""),
    );
    resp
}

#[cfg(test)]
#[path = "api_tests.rs"]
mod tests;
