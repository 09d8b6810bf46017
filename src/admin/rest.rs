//! The REST mirror of `adminrpc.Admin` under `/api/admin/`, shaped as Go's grpc-gateway
//! answers it (`admin.yaml`'s paths and methods; protojson with `UseProtoNames` and
//! `EmitUnpopulated`: snake_case names, every field present, 64-bit integers as strings, enums
//! by name; errors as `{"code", "message", "details"}` with the HTTP status of the gRPC code),
//! plus our additions (marked): a service's `source` and other config keys, a transaction's
//! `kind` and `revoked_at`, `refunded_sats` and per-service `count` in stats, and
//! `GET /api/admin/revenue` and `GET /api/admin/node`.
//!
//! Requests are decoded into Go's request messages (accepting protojson's inputs: proto or
//! lowerCamel names, integers as numbers or strings, enums by name or number) and checked by
//! [`super::api`], the same as gRPC. The macaroon is checked here (`Grpc-Metadata-Macaroon`;
//! `GET /api/admin/health` is open), and CORS answered for `admin.corsorigins` only, never
//! with credentials. Synchronous and pure apart from the backend calls.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use serde_json::{json, Map, Value};

use super::api::{self, Extra};
use super::auth::{AdminKey, REST_HEADER};
use super::backend::{AdminBackend, AdminError, DayRevenue, NodeState, ServiceView, Stats, Tx};
use super::proto as pb;
use super::rfc3339;

/// Where the REST API lives.
pub const PREFIX: &str = "/api/admin/";

/// The REST API over a backend.
pub struct Rest {
    pub backend: Arc<dyn AdminBackend>,
    pub key: AdminKey,
    /// `admin.corsorigins`: exact origins, or `*` for any.
    pub cors_origins: Vec<String>,
}

/// A REST answer before the server adds its headers.
pub type Answer = Response<Bytes>;

fn json_answer(status: StatusCode, v: &Value) -> Answer {
    let mut r = Response::new(Bytes::from(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// grpc-gateway's error body.
fn error_answer(status: StatusCode, code: i32, message: &str) -> Answer {
    json_answer(
        status,
        &json!({"code": code, "message": message, "details": []}),
    )
}

fn backend_error(e: &AdminError) -> Answer {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error_answer(status, e.grpc_code(), &e.to_string())
}

fn bad(msg: impl Into<String>) -> AdminError {
    AdminError::BadRequest(msg.into())
}

/// The routes: which handler a path's segments name, and the methods it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Info,
    Health,
    Services,
    Service(String),
    Transactions,
    Tokens,
    Token(String),
    Stats,
    /// Ours.
    Revenue,
    /// Ours.
    Node,
}

impl Route {
    fn of(rest: &str) -> Option<Route> {
        let segs: Vec<&str> = rest.split('/').collect();
        Some(match segs.as_slice() {
            ["info"] => Route::Info,
            ["health"] => Route::Health,
            ["services"] => Route::Services,
            ["services", name] if !name.is_empty() => Route::Service(unescape(name)?),
            ["transactions"] => Route::Transactions,
            ["tokens"] => Route::Tokens,
            ["tokens", id] if !id.is_empty() => Route::Token(unescape(id)?),
            ["stats"] => Route::Stats,
            ["revenue"] => Route::Revenue,
            ["node"] => Route::Node,
            _ => return None,
        })
    }

    fn methods(&self) -> &'static [Method] {
        match self {
            Route::Services => &[Method::GET, Method::POST],
            Route::Service(_) => &[Method::PUT, Method::DELETE],
            Route::Token(_) => &[Method::DELETE],
            _ => &[Method::GET],
        }
    }
}

/// Percent-decoding (`+` stays `+` in a path; `plus` turns it into a space, as in a query).
fn percent_decode(s: &str, plus: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn unescape(seg: &str) -> Option<String> {
    percent_decode(seg, false)
}

/// A query string's pairs, decoded (a pair that does not decode is dropped).
fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect()
}

/// `snake_case` to protojson's `lowerCamel` name.
fn camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut up = false;
    for c in name.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The query's value for a field, by its proto or JSON name (the first one given).
fn query_get(pairs: &[(String, String)], field: &str) -> Option<String> {
    let alt = camel(field);
    pairs
        .iter()
        .find(|(k, _)| k == field || *k == alt)
        .map(|(_, v)| v.clone())
}

fn query_string(pairs: &[(String, String)], field: &str) -> String {
    query_get(pairs, field).unwrap_or_default()
}

fn query_i32(pairs: &[(String, String)], field: &str) -> Result<i32, AdminError> {
    match query_get(pairs, field) {
        None => Ok(0),
        Some(v) => v
            .parse()
            .map_err(|_| bad(format!("invalid value for int32 field {field}: {v:?}"))),
    }
}

/// A JSON request body as protojson reads it into a message: known fields are taken out by
/// name; what remains is ours ([`Extra`]).
struct Fields(Map<String, Value>);

impl Fields {
    fn parse(body: &[u8]) -> Result<Fields, AdminError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Fields(Map::new()));
        }
        match serde_json::from_slice(body) {
            Ok(Value::Object(m)) => Ok(Fields(m)),
            Ok(_) => Err(bad("the request body must be a JSON object")),
            Err(e) => Err(bad(format!("invalid JSON body: {e}"))),
        }
    }

    /// The value of `field` (proto or lowerCamel name); `null` counts as absent.
    fn take(&mut self, field: &str) -> Option<Value> {
        let v = self
            .0
            .remove(field)
            .or_else(|| self.0.remove(&camel(field)));
        v.filter(|v| !v.is_null())
    }

    fn string(&mut self, field: &str) -> Result<String, AdminError> {
        match self.take(field) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s),
            Some(v) => Err(bad(format!("invalid value for string field {field}: {v}"))),
        }
    }

    /// An `int64`: a JSON integer or a string holding one.
    fn int64(&mut self, field: &str) -> Result<Option<i64>, AdminError> {
        let v = match self.take(field) {
            None => return Ok(None),
            Some(v) => v,
        };
        let n = match &v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        n.map(Some)
            .ok_or_else(|| bad(format!("invalid value for int64 field {field}: {v}")))
    }

    /// The `AuthScheme` enum: its name or its number.
    fn auth_scheme(&mut self, field: &str) -> Result<i32, AdminError> {
        let v = match self.take(field) {
            None => return Ok(0),
            Some(v) => v,
        };
        let n = match &v {
            Value::String(s) => super::backend::AuthScheme::from_proto_name(s).map(|a| a.number()),
            Value::Number(n) => n.as_i64().and_then(|n| i32::try_from(n).ok()),
            _ => None,
        };
        n.ok_or_else(|| bad(format!("invalid value for enum field {field}: {v}")))
    }

    /// What no field took: ours (other service keys). `source` is an answer's field, dropped.
    fn extra(mut self) -> Extra {
        self.0.remove("source");
        self.0
    }
}

fn service_json(v: &ServiceView) -> Value {
    let mut m = Map::new();
    // Ours first, so Go's fields win a clash.
    for (k, val) in &v.extra {
        m.insert(k.clone(), val.clone());
    }
    if let Some(source) = v.source {
        m.insert("source".into(), source.as_str().into());
    }
    for (k, val) in [
        ("name", json!(v.name)),
        ("address", json!(v.address)),
        ("protocol", json!(v.protocol)),
        ("host_regexp", json!(v.host_regexp)),
        ("path_regexp", json!(v.path_regexp)),
        ("price", json!(api::i64_of(v.price).to_string())),
        ("auth", json!(v.auth)),
        ("auth_scheme", json!(v.auth_scheme.proto_name())),
    ] {
        m.insert(k.into(), val);
    }
    Value::Object(m)
}

fn tx_json(t: &Tx) -> Value {
    let p = api::tx_pb(t);
    json!({
        "id": p.id,
        "token_id": p.token_id,
        "payment_hash": p.payment_hash,
        "service_name": p.service_name,
        "price_sats": p.price_sats.to_string(),
        "state": p.state,
        "created_at": p.created_at,
        "settled_at": p.settled_at,
        "kind": t.kind,
        "revoked_at": t.revoked_at.map(rfc3339::format).unwrap_or_default(),
    })
}

fn stats_json(s: &Stats) -> Value {
    let n = |x: u64| api::i64_of(x).to_string();
    json!({
        "total_revenue_sats": n(s.total_revenue_sats),
        "transaction_count": n(s.transaction_count),
        "service_breakdown": s.service_breakdown.iter().map(|r| json!({
            "service_name": r.service_name,
            "total_revenue_sats": n(r.total_revenue_sats),
            "count": n(r.count),
        })).collect::<Vec<_>>(),
        "refunded_sats": n(s.refunded_sats),
    })
}

fn days_json(days: &[DayRevenue]) -> Value {
    let n = |x: u64| api::i64_of(x).to_string();
    json!({
        "days": days.iter().map(|d| json!({
            "day": rfc3339::format(d.day_start),
            "service_name": d.service_name,
            "revenue_sats": n(d.revenue_sats),
            "count": n(d.count),
        })).collect::<Vec<_>>(),
    })
}

fn node_json(n: &NodeState) -> Value {
    json!({
        "backend": n.backend,
        "lnd_connected": n.lnd_connected,
        "bridge_queue_depth": n.bridge_queue_depth.to_string(),
        "bridge_queue_capacity": n.bridge_queue_capacity.to_string(),
        "cores": n.cores,
        "version": n.version,
    })
}

impl Rest {
    /// Answers one request under [`PREFIX`] (`path` without its query).
    pub fn handle(&self, parts: &http::request::Parts, body: &[u8]) -> Answer {
        let origin = parts.headers.get(header::ORIGIN).cloned();
        let mut answer = self.route(parts, body);
        self.cors(origin.as_ref(), &mut answer);
        answer
    }

    fn origin_allowed(&self, origin: &HeaderValue) -> bool {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        self.cors_origins.iter().any(|o| o == "*" || o == origin)
    }

    /// Go's `allowCORS` (only listed origins; never credentials).
    fn cors(&self, origin: Option<&HeaderValue>, answer: &mut Answer) {
        let Some(origin) = origin.filter(|o| self.origin_allowed(o)) else {
            return;
        };
        let h = answer.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Content-Type, Accept, Grpc-Metadata-Macaroon"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, DELETE"),
        );
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }

    fn route(&self, parts: &http::request::Parts, body: &[u8]) -> Answer {
        let path = parts.uri.path();
        let Some(route) = path.strip_prefix(PREFIX).and_then(Route::of) else {
            return error_answer(StatusCode::NOT_FOUND, 5, "Not Found");
        };
        let preflight = parts.method == Method::OPTIONS
            && parts
                .headers
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if preflight {
            let allowed = parts
                .headers
                .get(header::ORIGIN)
                .is_some_and(|o| self.origin_allowed(o));
            let mut r = Response::new(Bytes::new());
            *r.status_mut() = if allowed {
                StatusCode::NO_CONTENT
            } else {
                StatusCode::FORBIDDEN
            };
            return r;
        }
        if !route.methods().contains(&parts.method) {
            let mut r = error_answer(StatusCode::METHOD_NOT_ALLOWED, 12, "Method Not Allowed");
            let allow: Vec<&str> = route.methods().iter().map(Method::as_str).collect();
            if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
                r.headers_mut().insert(header::ALLOW, v);
            }
            return r;
        }
        if route != Route::Health {
            let presented = parts.headers.get(REST_HEADER).map(HeaderValue::as_bytes);
            if let Err(e) = self.key.check(presented) {
                return error_answer(StatusCode::UNAUTHORIZED, 16, &e.to_string());
            }
        }
        let query = query_pairs(parts.uri.query().unwrap_or(""));
        match self.call(&parts.method, route, &query, body) {
            Ok(v) => json_answer(StatusCode::OK, &v),
            Err(e) => backend_error(&e),
        }
    }

    fn call(
        &self,
        method: &Method,
        route: Route,
        q: &[(String, String)],
        body: &[u8],
    ) -> Result<Value, AdminError> {
        let b = &self.backend;
        Ok(match (route, method) {
            (Route::Info, _) => {
                let i = api::info_pb(b.info());
                json!({
                    "network": i.network,
                    "listen_addr": i.listen_addr,
                    "insecure": i.insecure,
                    "mpp_enabled": i.mpp_enabled,
                    "sessions_enabled": i.sessions_enabled,
                    "mpp_realm": i.mpp_realm,
                })
            }
            (Route::Health, _) => json!({"status": "ok"}),
            (Route::Services, &Method::GET) => {
                let list = b.list_services()?;
                json!({"services": list.iter().map(service_json).collect::<Vec<_>>()})
            }
            (Route::Services, _) => {
                let mut f = Fields::parse(body)?;
                let req = pb::CreateServiceRequest {
                    name: f.string("name")?,
                    address: f.string("address")?,
                    protocol: f.string("protocol")?,
                    host_regexp: f.string("host_regexp")?,
                    path_regexp: f.string("path_regexp")?,
                    price: f.int64("price")?.unwrap_or(0),
                    auth: f.string("auth")?,
                    auth_scheme: f.auth_scheme("auth_scheme")?,
                };
                let spec = api::create_spec(req, f.extra())?;
                service_json(&b.create_service(spec)?)
            }
            (Route::Service(name), &Method::PUT) => {
                let mut f = Fields::parse(body)?;
                // The path's name wins over the body's (grpc-gateway sets it last).
                f.string("name")?;
                let req = pb::UpdateServiceRequest {
                    name,
                    address: f.string("address")?,
                    protocol: f.string("protocol")?,
                    host_regexp: f.string("host_regexp")?,
                    path_regexp: f.string("path_regexp")?,
                    price: f.int64("price")?,
                    auth: f.string("auth")?,
                    auth_scheme: f.auth_scheme("auth_scheme")?,
                };
                let (name, patch) = api::update_patch(req, f.extra())?;
                service_json(&b.update_service(&name, patch)?)
            }
            (Route::Service(name), _) => {
                let name = api::delete_name(pb::DeleteServiceRequest { name })?;
                b.delete_service(&name)?;
                json!({"status": "deleted"})
            }
            (Route::Transactions, _) => {
                let req = pb::ListTransactionsRequest {
                    service: query_string(q, "service"),
                    state: query_string(q, "state"),
                    start_date: query_string(q, "start_date"),
                    end_date: query_string(q, "end_date"),
                    limit: query_i32(q, "limit")?,
                    offset: query_i32(q, "offset")?,
                };
                let page = b.list_transactions(api::tx_query(req, query_get(q, "kind"))?)?;
                json!({
                    "transactions": page.transactions.iter().map(tx_json).collect::<Vec<_>>(),
                    "total_count": api::i64_of(page.total_count).to_string(),
                })
            }
            (Route::Tokens, _) => {
                let (limit, offset) = api::page(query_i32(q, "limit")?, query_i32(q, "offset")?)?;
                let page = b.list_tokens(limit, offset)?;
                json!({
                    "tokens": page.transactions.iter().map(tx_json).collect::<Vec<_>>(),
                    "total_count": api::i64_of(page.total_count).to_string(),
                })
            }
            (Route::Token(id), _) => {
                b.revoke_token(api::token_id(&id)?)?;
                json!({"status": "revoked"})
            }
            (Route::Stats, _) => {
                let (from, to) =
                    api::stats_range(&query_string(q, "from"), &query_string(q, "to"))?;
                stats_json(&b.stats(from, to)?)
            }
            (Route::Revenue, _) => {
                let (from, to) =
                    api::stats_range(&query_string(q, "from"), &query_string(q, "to"))?;
                days_json(&b.revenue_by_day(from, to)?)
            }
            (Route::Node, _) => node_json(&b.node()),
        })
    }
}

#[cfg(test)]
mod tests;
