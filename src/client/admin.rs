//! `aperture admin …`: a blocking client of a running instance's admin REST API, which is Go
//! aperture's `adminrpc.Admin` as its grpc-gateway serves it: the paths under `/api/admin/`, proto
//! field names in the JSON, int64 values as strings, enums by name. Scripts written against Go's
//! API and this client see the same wire.
//!
//! One request per command on a fresh HTTP/1.1 connection (the `h1` module, http:// only: the
//! admin listener is loopback by default). The admin macaroon is read from its file and sent
//! hex-encoded in `Grpc-Metadata-Macaroon`; GetHealth is sent without one.
//!
//! What this module owns: the HTTP request each command maps to ([`Request::http`]), the request
//! bodies of CreateService/UpdateService from flags and a `--spec` file ([`service_body`]), where
//! the API and the macaroon are when the command line does not say ([`resolve_endpoint`]), what a
//! failure means ([`AdminError`]: not running, macaroon refused, not found, ...), and the two
//! renderings of a reply ([`render`]): the server's JSON exactly as received, or aligned tables
//! for a terminal. It prints nothing itself.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use thiserror::Error;

use super::h1::{exchange, Body, Request as H1Request, Target};
use super::ClientError;

/// Where the admin API listens when neither `--admin` nor the config says (`admin.listenaddr`'s
/// default).
pub const DEFAULT_URL: &str = "http://127.0.0.1:8082";
/// The file name of the admin macaroon in the basedir when `admin.macaroonpath` is unset.
pub const MACAROON_FILE: &str = "admin.macaroon";
/// Cap on a reply body (a page of 1000 transactions is well under 1 MiB).
const MAX_REPLY_BYTES: u64 = 16 * 1024 * 1024;
/// Cap on the macaroon file (a macaroon without caveats is ~100 bytes).
const MAX_MACAROON_BYTES: u64 = 64 * 1024;

/// Why an admin command failed. [`AdminError::exit_code`]: 64 for what the user fixes on the
/// command line (or the server called a bad request), 1 for the rest.
#[derive(Debug, Error)]
pub enum AdminError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot read the --spec file {path}: {reason}")]
    Spec { path: PathBuf, reason: String },
    #[error("cannot reach the admin API: is the proxy running with admin.enabled? tried {url} ({source})")]
    NotRunning { url: String, source: std::io::Error },
    #[error("talking to the admin API at {url}: {source}")]
    Transport { url: String, source: ClientError },
    #[error("cannot read the admin macaroon at {path}: {source} (the proxy writes it on its first start with admin.enabled; pass --macaroon PATH or set admin.macaroonpath)")]
    Macaroon {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the admin macaroon at {path} was refused (HTTP {status}: {message}); is it the one this instance wrote (admin.macaroonpath)?")]
    Refused {
        path: PathBuf,
        status: u16,
        message: String,
    },
    #[error("the admin API refused the request (HTTP 400): {0}")]
    BadRequest(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("no admin API at {url} (HTTP 404: {message}); point --admin at the admin listener (admin.listenaddr, or prometheus.listenaddr when prometheus is enabled)")]
    NoApi { url: String, message: String },
    #[error("conflict (HTTP 409): {0}")]
    Conflict(String),
    #[error("the admin API is unavailable (HTTP 503): {0}")]
    Unavailable(String),
    #[error("the admin API answered HTTP {status}: {message}")]
    Server { status: u16, message: String },
    #[error("the admin API at {url} answered something that is not JSON: {reason}")]
    NotJson { url: String, reason: String },
}

impl AdminError {
    /// 64: a usage error (flags, the spec file, a request the server calls bad); 1: the rest.
    pub fn exit_code(&self) -> i32 {
        match self {
            AdminError::Usage(_) | AdminError::Spec { .. } | AdminError::BadRequest(_) => 64,
            _ => 1,
        }
    }
}

/// Where to send requests and which macaroon to present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Base URL, `http://host:port` (a path prefix is kept).
    pub url: String,
    pub macaroon: PathBuf,
    /// Connect, read and write timeout.
    pub timeout: Duration,
}

/// A transaction's state, as ListTransactions filters it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TxState {
    Pending,
    Settled,
}

impl TxState {
    fn as_str(self) -> &'static str {
        match self {
            TxState::Pending => "pending",
            TxState::Settled => "settled",
        }
    }
}

/// A service's payment scheme(s): the config's `authscheme` values, Go's `AuthScheme` enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthScheme {
    L402,
    Mpp,
    #[value(name = "l402+mpp")]
    L402Mpp,
}

impl AuthScheme {
    /// Go's enum name, as grpc-gateway writes and reads it.
    pub fn proto_name(self) -> &'static str {
        match self {
            AuthScheme::L402 => "AUTH_SCHEME_L402",
            AuthScheme::Mpp => "AUTH_SCHEME_MPP",
            AuthScheme::L402Mpp => "AUTH_SCHEME_L402_MPP",
        }
    }

    /// The config file's `authscheme` value.
    pub fn config_name(self) -> &'static str {
        match self {
            AuthScheme::L402 => "l402",
            AuthScheme::Mpp => "mpp",
            AuthScheme::L402Mpp => "l402+mpp",
        }
    }

    /// From the config's spelling (case-insensitive, `mpp+l402` too).
    fn from_config(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "l402" => Some(AuthScheme::L402),
            "mpp" => Some(AuthScheme::Mpp),
            "l402+mpp" | "mpp+l402" => Some(AuthScheme::L402Mpp),
            _ => None,
        }
    }
}

/// A page of a list: `limit` (1..=1000, the server's default 50) and `offset`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Page {
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

/// A time range, each end RFC 3339 (see [`parse_time`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Range {
    pub from: Option<String>,
    pub to: Option<String>,
}

/// ListTransactions' filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxFilter {
    pub service: Option<String>,
    pub state: Option<TxState>,
    pub range: Range,
    pub page: Page,
}

/// One admin RPC, with its arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Info,
    Health,
    ListServices,
    /// The JSON body (see [`service_body`]).
    CreateService(Map<String, Value>),
    UpdateService {
        name: String,
        body: Map<String, Value>,
    },
    DeleteService {
        name: String,
    },
    ListTransactions(TxFilter),
    ListTokens(Page),
    /// Hex token ID.
    RevokeToken {
        token_id: String,
    },
    Stats(Range),
}

/// The HTTP form of a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    pub method: &'static str,
    /// Path and query under the base URL, percent-encoded.
    pub path: String,
    pub body: Option<Vec<u8>>,
    /// Whether the macaroon goes with it (every RPC but GetHealth).
    pub authenticated: bool,
}

impl Request {
    /// Go's REST mapping (adminrpc/admin.yaml).
    pub fn http(&self) -> HttpCall {
        let call = |method, path: String, body: Option<&Map<String, Value>>| HttpCall {
            method,
            path,
            body: body.map(|b| Value::Object(b.clone()).to_string().into_bytes()),
            authenticated: !matches!(self, Request::Health),
        };
        match self {
            Request::Info => call("GET", "/api/admin/info".into(), None),
            Request::Health => call("GET", "/api/admin/health".into(), None),
            Request::ListServices => call("GET", "/api/admin/services".into(), None),
            Request::CreateService(body) => call("POST", "/api/admin/services".into(), Some(body)),
            Request::UpdateService { name, body } => call(
                "PUT",
                format!("/api/admin/services/{}", encode(name)),
                Some(body),
            ),
            Request::DeleteService { name } => call(
                "DELETE",
                format!("/api/admin/services/{}", encode(name)),
                None,
            ),
            Request::ListTransactions(f) => {
                let query = [
                    ("service", f.service.clone()),
                    ("state", f.state.map(|s| s.as_str().to_owned())),
                    ("start_date", f.range.from.clone()),
                    ("end_date", f.range.to.clone()),
                    ("limit", f.page.limit.map(|n| n.to_string())),
                    ("offset", f.page.offset.map(|n| n.to_string())),
                ];
                call("GET", with_query("/api/admin/transactions", &query), None)
            }
            Request::ListTokens(p) => {
                let query = [
                    ("limit", p.limit.map(|n| n.to_string())),
                    ("offset", p.offset.map(|n| n.to_string())),
                ];
                call("GET", with_query("/api/admin/tokens", &query), None)
            }
            Request::RevokeToken { token_id } => call(
                "DELETE",
                format!("/api/admin/tokens/{}", encode(token_id)),
                None,
            ),
            Request::Stats(r) => {
                let query = [("from", r.from.clone()), ("to", r.to.clone())];
                call("GET", with_query("/api/admin/stats", &query), None)
            }
        }
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn with_query(path: &str, params: &[(&str, Option<String>)]) -> String {
    let mut out = path.to_owned();
    for (i, (name, value)) in params
        .iter()
        .filter_map(|(n, v)| v.as_ref().map(|v| (n, v)))
        .enumerate()
    {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(name);
        out.push('=');
        out.push_str(&encode(value));
    }
    out
}

/// `--from`/`--to`: an RFC 3339 timestamp (passed as written) or unix seconds (sent as RFC 3339
/// UTC, which is what the API reads).
pub fn parse_time(s: &str) -> Result<String, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let unix: u64 = s
            .parse()
            .map_err(|_| format!("{s:?} is too large for unix seconds"))?;
        if unix > 253_402_300_799 {
            return Err(format!("{s:?} is after the year 9999"));
        }
        return Ok(crate::mpp::format_rfc3339(unix));
    }
    crate::mpp::parse_rfc3339(s).map_err(|_| {
        format!("{s:?} is not a time: write RFC 3339 (2026-03-01T00:00:00Z) or unix seconds")
    })?;
    Ok(s.to_owned())
}

/// The service fields the command line sets: Go's CreateService/UpdateService fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceFields {
    pub name: Option<String>,
    pub address: Option<String>,
    pub protocol: Option<String>,
    pub host_regexp: Option<String>,
    pub path_regexp: Option<String>,
    pub price: Option<u64>,
    pub auth: Option<String>,
    pub auth_scheme: Option<AuthScheme>,
}

/// Reads a `--spec` file: one service block in aperture.yaml's syntax (YAML or JSON), as a
/// mapping, a one-item list (`- name: …`, copied from `services:`), or `services:` with one item.
pub fn read_spec(path: &Path) -> Result<Map<String, Value>, AdminError> {
    let bad = |reason: String| AdminError::Spec {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    parse_spec(&text).map_err(bad)
}

fn parse_spec(text: &str) -> Result<Map<String, Value>, String> {
    let value: Value = serde_saphyr::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let value = match value {
        Value::Object(mut m) if m.len() == 1 && m.contains_key("services") => {
            m.remove("services").unwrap_or(Value::Null)
        }
        v => v,
    };
    let value = match value {
        Value::Array(mut items) if items.len() == 1 => items.remove(0),
        Value::Array(items) => {
            return Err(format!(
                "holds {} services; give one service block",
                items.len()
            ))
        }
        v => v,
    };
    match value {
        Value::Object(m) => Ok(m),
        _ => Err("expected one service block (name: …, address: …)".to_owned()),
    }
}

/// The config file's keys that are Go's CreateService/UpdateService fields, with their wire
/// names; every other key of a `--spec` travels beside them under its config name.
const GO_FIELDS: [(&str, &str); 8] = [
    ("name", "name"),
    ("address", "address"),
    ("protocol", "protocol"),
    ("hostregexp", "host_regexp"),
    ("pathregexp", "path_regexp"),
    ("price", "price"),
    ("auth", "auth"),
    ("authscheme", "auth_scheme"),
];

/// The JSON body of CreateService (`create`) or UpdateService: Go's fields (`name`, `address`,
/// `protocol`, `host_regexp`, `path_regexp`, `price`, `auth`, `auth_scheme`) from the flags, else
/// from the spec's keys of the same meaning (`hostregexp`, ...); and **ours**, beside them in the
/// same object: the spec's other keys with the config file's names and values (`ratelimits`,
/// `dynamicprice`, `headers`, `timeout`, ...; in an update a `null` removes the key), which the
/// API takes as the service's further keys (what no Go field takes). Flags win over the spec.
/// The whole block is checked here with the config's parser (unknown keys, types), so a typo
/// fails before anything is sent; the server validates the meaning.
///
/// CreateService needs `name` and `address`. An update sends only what was given (Go's partial
/// update; `price` and `auth_scheme` are `optional` there); its name is in the path, not here.
pub fn service_body(
    fields: &ServiceFields,
    spec: Option<Map<String, Value>>,
    create: bool,
) -> Result<Map<String, Value>, AdminError> {
    let spec = spec.unwrap_or_default();
    let spec_str = |key: &str| -> Result<Option<String>, AdminError> {
        match spec.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(AdminError::Usage(format!(
                "--spec: {key} must be a string, not {other}"
            ))),
        }
    };
    let name = pick(&fields.name, || spec_str("name"))?;
    let price = match fields.price {
        Some(p) => Some(p),
        None => match spec.get("price") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                AdminError::Usage(format!(
                    "--spec: price must be a whole number of sats, not {v}"
                ))
            })?),
        },
    };
    let auth_scheme = match fields.auth_scheme {
        Some(a) => Some(a),
        None => match spec_str("authscheme")? {
            None => None,
            Some(s) => Some(AuthScheme::from_config(&s).ok_or_else(|| {
                AdminError::Usage(format!(
                    "--spec: authscheme {s:?} is not l402, mpp or l402+mpp"
                ))
            })?),
        },
    };
    if !spec.is_empty() {
        let label = name.as_deref().unwrap_or("(unnamed)");
        crate::config::check_service_spec(&Value::Object(spec.clone()).to_string(), label)
            .map_err(|e| AdminError::Usage(format!("--spec: {e}")))?;
    }

    let mut body = Map::new();
    let mut put = |key: &str, v: Option<String>| {
        if let Some(v) = v {
            body.insert(key.to_owned(), Value::from(v));
        }
    };
    if create {
        put("name", name.clone());
    }
    put("address", pick(&fields.address, || spec_str("address"))?);
    put("protocol", pick(&fields.protocol, || spec_str("protocol"))?);
    put(
        "host_regexp",
        pick(&fields.host_regexp, || spec_str("hostregexp"))?,
    );
    put(
        "path_regexp",
        pick(&fields.path_regexp, || spec_str("pathregexp"))?,
    );
    if let Some(p) = price {
        body.insert("price".into(), Value::from(p));
    }
    let auth = pick(&fields.auth, || spec_str("auth"))?;
    if let Some(a) = auth {
        body.insert("auth".into(), Value::from(a));
    }
    if let Some(a) = auth_scheme {
        body.insert("auth_scheme".into(), Value::from(a.proto_name()));
    }
    body.extend(
        spec.into_iter()
            .filter(|(k, _)| !GO_FIELDS.iter().any(|(key, _)| key == k)),
    );
    if create && name.is_none() {
        return Err(AdminError::Usage(
            "a service needs a name: --name NAME (or name: in --spec)".into(),
        ));
    }
    if create && !body.contains_key("address") {
        return Err(AdminError::Usage(
            "a service needs an address: --address HOST:PORT (or address: in --spec)".into(),
        ));
    }
    if !create && body.is_empty() {
        return Err(AdminError::Usage(
            "nothing to update: give at least one of --address, --protocol, --host-regexp, \
             --path-regexp, --price, --auth, --auth-scheme, --spec"
                .into(),
        ));
    }
    Ok(body)
}

fn pick(
    flag: &Option<String>,
    spec: impl FnOnce() -> Result<Option<String>, AdminError>,
) -> Result<Option<String>, AdminError> {
    match flag {
        Some(v) => Ok(Some(v.clone())),
        None => spec(),
    }
}

/// The keys of the config file [`resolve_endpoint`] reads (everything else is ignored, so a
/// config this version cannot fully load still names the API and the macaroon).
#[derive(Debug, Default, Deserialize)]
struct EndpointKeys {
    basedir: Option<String>,
    admin: Option<AdminKeys>,
    prometheus: Option<PrometheusKeys>,
}

#[derive(Debug, Default, Deserialize)]
struct AdminKeys {
    macaroonpath: Option<String>,
    listenaddr: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct PrometheusKeys {
    enabled: Option<bool>,
    listenaddr: Option<String>,
}

/// Where the API is and which macaroon to present, when the command line does not say:
/// - URL: the admin listener the config names (`prometheus.listenaddr` when prometheus is
///   enabled, else `admin.listenaddr`; an unspecified address means loopback), else
///   [`DEFAULT_URL`];
/// - macaroon: `admin.macaroonpath`, else `<basedir>/admin.macaroon` (`--basedir`, else the
///   config's `basedir`, else `~/.aperture`).
///
/// `config` is the config file's text, if there is one.
pub fn resolve_endpoint(
    url: Option<&str>,
    macaroon: Option<&Path>,
    config: Option<&str>,
    basedir: Option<&Path>,
) -> Endpoint {
    let keys: EndpointKeys = config
        .and_then(|text| serde_saphyr::from_str(text).ok())
        .unwrap_or_default();
    let url = match url {
        Some(u) if u.contains("://") => u.to_owned(),
        Some(u) => format!("http://{u}"),
        None => config_url(&keys).unwrap_or_else(|| DEFAULT_URL.to_owned()),
    };
    let macaroon = match macaroon {
        Some(p) => p.to_owned(),
        None => match keys
            .admin
            .as_ref()
            .and_then(|a| a.macaroonpath.as_deref())
            .filter(|p| !p.trim().is_empty())
        {
            Some(p) => expand_tilde(p),
            None => basedir
                .map(Path::to_owned)
                .or_else(|| {
                    keys.basedir
                        .as_deref()
                        .filter(|b| !b.trim().is_empty())
                        .map(expand_tilde)
                })
                .unwrap_or_else(crate::config::Config::default_basedir)
                .join(MACAROON_FILE),
        },
    };
    Endpoint {
        url,
        macaroon,
        timeout: Duration::from_secs(30),
    }
}

fn config_url(keys: &EndpointKeys) -> Option<String> {
    let prometheus = keys
        .prometheus
        .as_ref()
        .filter(|p| p.enabled == Some(true))
        .and_then(|p| p.listenaddr.as_deref());
    let addr = prometheus
        .or_else(|| keys.admin.as_ref().and_then(|a| a.listenaddr.as_deref()))
        .map(str::trim)
        .filter(|a| !a.is_empty())?;
    // Port only, or an unspecified host: the listener takes every address, loopback included.
    let (host, port) = addr.rsplit_once(':')?;
    let host = match host {
        "" | "0.0.0.0" => "127.0.0.1",
        "[::]" | "::" => "[::1]",
        h => h,
    };
    Some(format!("http://{host}:{port}"))
}

fn expand_tilde(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) if !home.is_empty() => PathBuf::from(home).join(rest),
        _ if path == "~" => std::env::var_os("HOME").map_or_else(|| path.into(), PathBuf::from),
        _ => PathBuf::from(path),
    }
}

/// The macaroon file as hex: Go writes the binary macaroon; a file that already holds hex (as
/// some scripts keep it) is sent as it is.
fn macaroon_hex(path: &Path) -> Result<String, AdminError> {
    let err = |source| AdminError::Macaroon {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(err)?
        .take(MAX_MACAROON_BYTES)
        .read_to_end(&mut bytes)
        .map_err(err)?;
    let text = bytes.trim_ascii();
    if text.is_empty() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is empty",
        )));
    }
    if text.len() % 2 == 0 && text.iter().all(u8::is_ascii_hexdigit) {
        return Ok(String::from_utf8_lossy(text).to_ascii_lowercase());
    }
    Ok(hex::encode(&bytes))
}

/// Sends `request` and returns the reply body of a 2xx answer (JSON, checked); anything else is
/// classified into an [`AdminError`].
pub fn call(endpoint: &Endpoint, request: &Request) -> Result<Vec<u8>, AdminError> {
    let http = request.http();
    let base =
        Target::parse(&endpoint.url).map_err(|e| AdminError::Usage(format!("--admin: {e}")))?;
    let url = format!("http://{}{}", base.host, base.path.trim_end_matches('/'));
    let mut headers = vec![("Accept".to_owned(), "application/json".to_owned())];
    if http.authenticated {
        headers.push((
            "Grpc-Metadata-Macaroon".to_owned(),
            macaroon_hex(&endpoint.macaroon)?,
        ));
    }
    if http.body.is_some() {
        headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
    }
    let target = Target {
        path: format!("{}{}", base.path.trim_end_matches('/'), http.path),
        ..base
    };
    let transport = |source: ClientError| match source {
        ClientError::Connect { source, .. } => AdminError::NotRunning {
            url: url.clone(),
            source,
        },
        source => AdminError::Transport {
            url: url.clone(),
            source,
        },
    };
    let (head, mut reader) = exchange(
        &target,
        &H1Request {
            method: http.method,
            headers: &headers,
            body: http.body.as_deref(),
        },
        endpoint.timeout,
    )
    .map_err(transport)?;
    let mut body = Vec::new();
    Body::new(&mut reader, &head, false)
        .take(MAX_REPLY_BYTES)
        .read_to_end(&mut body)
        .map_err(|source| {
            transport(ClientError::Io {
                addr: target.connect.clone(),
                source,
            })
        })?;
    classify(head.status, body, &url, &endpoint.macaroon)
}

/// A reply by status: 2xx with a JSON body is the answer; the rest is an error saying whose.
fn classify(status: u16, body: Vec<u8>, url: &str, macaroon: &Path) -> Result<Vec<u8>, AdminError> {
    let message = error_message(&body);
    match status {
        200..=299 => {
            if body.trim_ascii().is_empty() {
                return Ok(b"{}".to_vec());
            }
            serde_json::from_slice::<Value>(&body).map_err(|e| AdminError::NotJson {
                url: url.to_owned(),
                reason: format!("{e}: {}", snippet(&body)),
            })?;
            Ok(body)
        }
        400 => Err(AdminError::BadRequest(message)),
        401 | 403 => Err(AdminError::Refused {
            path: macaroon.to_owned(),
            status,
            message,
        }),
        // A gRPC status body means the API answered (the service or token is not there);
        // anything else is some other listener.
        404 if is_status_body(&body) => Err(AdminError::NotFound(message)),
        404 => Err(AdminError::NoApi {
            url: url.to_owned(),
            message,
        }),
        409 => Err(AdminError::Conflict(message)),
        503 => Err(AdminError::Unavailable(message)),
        _ => Err(AdminError::Server { status, message }),
    }
}

fn is_status_body(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .is_some_and(|v| v.get("message").is_some_and(Value::is_string))
}

/// grpc-gateway's error body (`{"code": 5, "message": "…", "details": []}`): its message; else
/// the body's first line.
fn error_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        if let Some(m) = v.get("message").and_then(Value::as_str) {
            return m.to_owned();
        }
        if let Some(m) = v.get("error").and_then(Value::as_str) {
            return m.to_owned();
        }
    }
    match snippet(body) {
        s if s.is_empty() => "(empty body)".to_owned(),
        s => s,
    }
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text.trim().lines().next().unwrap_or("").trim();
    let mut out: String = line.chars().take(200).collect();
    if out.len() < line.len() {
        out.push('…');
    }
    out
}

/// How a reply is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The server's JSON as received (Go's wire shape), one document per command.
    Json,
    /// Aligned tables and `key: value` lines.
    Human,
}

impl Output {
    /// `--json`/`--human`, else JSON unless stdout is a terminal.
    pub fn choose(json: bool, human: bool, stdout_is_terminal: bool) -> Output {
        if json || (!human && !stdout_is_terminal) {
            Output::Json
        } else {
            Output::Human
        }
    }
}

/// What to print for `request`'s reply `body` (a JSON body checked by [`call`]); ends with a
/// newline.
pub fn render(request: &Request, body: &[u8], output: Output) -> String {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if output == Output::Json {
        let text = String::from_utf8_lossy(body);
        return format!("{}\n", text.trim_end());
    }
    match request {
        Request::Info => fields(&value, &INFO_FIELDS),
        Request::Health => fields(&value, &[("status", "status")]),
        Request::ListServices => services_table(&value),
        Request::CreateService(_) => format!(
            "created service {:?}\n{}",
            text(value.get("name")),
            fields(&value, &SERVICE_FIELDS)
        ),
        Request::UpdateService { name, .. } => format!(
            "updated service {name:?}\n{}",
            fields(&value, &SERVICE_FIELDS)
        ),
        Request::DeleteService { name } => {
            status_line(&format!("deleted service {name:?}"), &value)
        }
        Request::ListTransactions(f) => tx_table(&value, "transactions", f.page.offset),
        Request::ListTokens(p) => tx_table(&value, "tokens", p.offset),
        Request::RevokeToken { token_id } => {
            status_line(&format!("revoked token {token_id}"), &value)
        }
        Request::Stats(_) => stats(&value),
    }
}

const INFO_FIELDS: [(&str, &str); 6] = [
    ("network", "network"),
    ("listen address", "listen_addr"),
    ("insecure", "insecure"),
    ("payment scheme (MPP)", "mpp_enabled"),
    ("payment sessions", "sessions_enabled"),
    ("payment realm", "mpp_realm"),
];

const SERVICE_FIELDS: [(&str, &str); 9] = [
    ("name", "name"),
    ("source", "source"),
    ("address", "address"),
    ("protocol", "protocol"),
    ("host regexp", "host_regexp"),
    ("path regexp", "path_regexp"),
    ("price (sats)", "price"),
    ("auth", "auth"),
    ("auth scheme", "auth_scheme"),
];

/// A JSON scalar as text: strings bare, int64-as-string as is, null as empty.
fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Go's AuthScheme (name or number) as the config spells it.
fn scheme(v: Option<&Value>) -> String {
    match text(v).as_str() {
        "" | "0" | "AUTH_SCHEME_L402" => "l402".to_owned(),
        "1" | "AUTH_SCHEME_MPP" => "mpp".to_owned(),
        "2" | "AUTH_SCHEME_L402_MPP" => "l402+mpp".to_owned(),
        other => other.to_owned(),
    }
}

/// `label: value` lines for `known` fields (those present), then any other field of `value`.
fn fields(value: &Value, known: &[(&str, &str)]) -> String {
    let Some(obj) = value.as_object() else {
        return format!("{value}\n");
    };
    let mut rows: Vec<(String, String)> = known
        .iter()
        .filter(|(_, key)| obj.contains_key(*key))
        .map(|(label, key)| {
            let v = if *key == "auth_scheme" {
                scheme(obj.get(*key))
            } else {
                text(obj.get(*key))
            };
            ((*label).to_owned(), v)
        })
        .collect();
    rows.extend(
        obj.iter()
            .filter(|(k, _)| !known.iter().any(|(_, key)| key == k))
            .map(|(k, v)| (k.replace('_', " "), text(Some(v)))),
    );
    let width = rows
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0)
        + 1;
    rows.iter()
        .map(|(l, v)| {
            format!("{:<width$} {v}\n", format!("{l}:"))
                .trim_end()
                .to_owned()
                + "\n"
        })
        .collect()
}

fn status_line(done: &str, value: &Value) -> String {
    match value.get("status").and_then(Value::as_str) {
        Some(s) if !s.is_empty() && s != "ok" => format!("{done} ({s})\n"),
        _ => format!("{done}\n"),
    }
}

/// Aligned columns: text left-aligned, `right` columns (numbers) right-aligned.
struct Table {
    header: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[(&'static str, bool)]) -> Self {
        Table {
            header: header.iter().map(|(h, _)| *h).collect(),
            right: header.iter().map(|(_, r)| *r).collect(),
            rows: Vec::new(),
        }
    }

    fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut out = String::new();
            for (i, cell) in cells.enumerate() {
                let w = widths.get(i).copied().unwrap_or(0);
                if i > 0 {
                    out.push_str("  ");
                }
                if self.right.get(i).copied().unwrap_or(false) {
                    out.push_str(&format!("{cell:>w$}"));
                } else {
                    out.push_str(&format!("{cell:<w$}"));
                }
            }
            out.trim_end().to_owned() + "\n"
        };
        let mut out = line(&mut self.header.iter().copied());
        for row in &self.rows {
            out.push_str(&line(&mut row.iter().map(String::as_str)));
        }
        out
    }
}

fn services_table(value: &Value) -> String {
    let services = value
        .get("services")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if services.is_empty() {
        return "no services\n".to_owned();
    }
    // `source` (file | db) is ours; Go's Service has none.
    let with_source = services.iter().any(|s| s.get("source").is_some());
    let mut header = vec![("NAME", false)];
    if with_source {
        header.push(("SOURCE", false));
    }
    header.extend([
        ("ADDRESS", false),
        ("PROTOCOL", false),
        ("HOST", false),
        ("PATH", false),
        ("PRICE", true),
        ("AUTH", false),
        ("SCHEME", false),
    ]);
    let mut table = Table::new(&header);
    for s in &services {
        let mut row = vec![text(s.get("name"))];
        if with_source {
            row.push(text(s.get("source")));
        }
        row.extend([
            text(s.get("address")),
            text(s.get("protocol")),
            text(s.get("host_regexp")),
            text(s.get("path_regexp")),
            text(s.get("price")),
            text(s.get("auth")),
            scheme(s.get("auth_scheme")),
        ]);
        table.rows.push(row);
    }
    table.render()
}

fn tx_table(value: &Value, key: &str, offset: Option<u32>) -> String {
    let rows = value
        .get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let total = text(value.get("total_count"));
    let first = u64::from(offset.unwrap_or(0));
    let mut out = if rows.is_empty() {
        format!(
            "no {key} (total {})\n",
            if total.is_empty() { "0" } else { &total }
        )
    } else {
        format!(
            "{key} {}-{} of {}\n",
            first + 1,
            first + rows.len() as u64,
            if total.is_empty() { "?" } else { &total }
        )
    };
    if rows.is_empty() {
        return out;
    }
    let mut table = Table::new(&[
        ("ID", true),
        ("TOKEN ID", false),
        ("SERVICE", false),
        ("SATS", true),
        ("STATE", false),
        ("CREATED", false),
        ("SETTLED", false),
    ]);
    for t in &rows {
        let or_dash = |s: String| if s.is_empty() { "-".to_owned() } else { s };
        table.rows.push(vec![
            text(t.get("id")),
            or_dash(text(t.get("token_id"))),
            or_dash(text(t.get("service_name"))),
            text(t.get("price_sats")),
            text(t.get("state")),
            or_dash(text(t.get("created_at"))),
            or_dash(text(t.get("settled_at"))),
        ]);
    }
    out.push_str(&table.render());
    out
}

fn stats(value: &Value) -> String {
    let Some(obj) = value.as_object() else {
        return format!("{value}\n");
    };
    let mut out = fields(
        &Value::Object(
            obj.iter()
                .filter(|(k, _)| *k != "service_breakdown")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        &[
            ("revenue (sats)", "total_revenue_sats"),
            ("settled transactions", "transaction_count"),
        ],
    );
    let breakdown = obj
        .get("service_breakdown")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !breakdown.is_empty() {
        let mut table = Table::new(&[("SERVICE", false), ("SATS", true)]);
        for s in &breakdown {
            table.rows.push(vec![
                text(s.get("service_name")),
                text(s.get("total_revenue_sats")),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn go_paths_and_methods() {
        let cases = [
            (Request::Info, "GET", "/api/admin/info", true),
            (Request::Health, "GET", "/api/admin/health", false),
            (Request::ListServices, "GET", "/api/admin/services", true),
            (
                Request::DeleteService {
                    name: "a b/c".into(),
                },
                "DELETE",
                "/api/admin/services/a%20b%2Fc",
                true,
            ),
            (
                Request::RevokeToken {
                    token_id: "ab".repeat(32),
                },
                "DELETE",
                &format!("/api/admin/tokens/{}", "ab".repeat(32)),
                true,
            ),
            (
                Request::Stats(Range::default()),
                "GET",
                "/api/admin/stats",
                true,
            ),
            (
                Request::ListTokens(Page {
                    limit: Some(5),
                    offset: None,
                }),
                "GET",
                "/api/admin/tokens?limit=5",
                true,
            ),
        ];
        for (req, method, path, auth) in cases {
            let h = req.http();
            assert_eq!(
                (h.method, h.path.as_str(), h.authenticated),
                (method, path, auth)
            );
            assert!(h.body.is_none());
        }
    }

    #[test]
    fn transaction_filters_become_gos_query_names() {
        let req = Request::ListTransactions(TxFilter {
            service: Some("my api".into()),
            state: Some(TxState::Settled),
            range: Range {
                from: Some("2026-03-01T00:00:00+01:00".into()),
                to: Some("2026-03-31T23:59:59Z".into()),
            },
            page: Page {
                limit: Some(20),
                offset: Some(40),
            },
        });
        assert_eq!(
            req.http().path,
            "/api/admin/transactions?service=my%20api&state=settled\
             &start_date=2026-03-01T00%3A00%3A00%2B01%3A00&end_date=2026-03-31T23%3A59%3A59Z\
             &limit=20&offset=40"
        );
        let req = Request::ListTransactions(TxFilter {
            state: Some(TxState::Pending),
            ..TxFilter::default()
        });
        assert_eq!(req.http().path, "/api/admin/transactions?state=pending");
        let req = Request::Stats(Range {
            from: Some("2026-01-01T00:00:00Z".into()),
            to: None,
        });
        assert_eq!(
            req.http().path,
            "/api/admin/stats?from=2026-01-01T00%3A00%3A00Z"
        );
    }

    #[test]
    fn bodies_are_json() {
        let body = obj(json!({"name": "a", "address": "h:1"}));
        let h = Request::CreateService(body.clone()).http();
        assert_eq!((h.method, h.path.as_str()), ("POST", "/api/admin/services"));
        let sent: Value = serde_json::from_slice(&h.body.unwrap()).unwrap();
        assert_eq!(sent, Value::Object(body.clone()));
        let h = Request::UpdateService {
            name: "a".into(),
            body,
        }
        .http();
        assert_eq!(
            (h.method, h.path.as_str()),
            ("PUT", "/api/admin/services/a")
        );
    }

    #[test]
    fn times_are_rfc3339_or_unix() {
        assert_eq!(parse_time("0").unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(parse_time("1773176400").unwrap(), "2026-03-10T21:00:00Z");
        assert_eq!(
            parse_time("2026-03-01T00:00:00+01:00").unwrap(),
            "2026-03-01T00:00:00+01:00"
        );
        assert_eq!(
            parse_time(" 2026-03-01T00:00:00Z ").unwrap(),
            "2026-03-01T00:00:00Z"
        );
        for bad in [
            "",
            "yesterday",
            "2026-03-01",
            "2026-13-01T00:00:00Z",
            "-5",
            "99999999999999999999",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert!(parse_time("yesterday").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn create_body_from_flags() {
        let fields = ServiceFields {
            name: Some("api".into()),
            address: Some("127.0.0.1:9000".into()),
            path_regexp: Some("^/v1/.*".into()),
            price: Some(100),
            auth: Some("freebie 3".into()),
            auth_scheme: Some(AuthScheme::L402Mpp),
            ..ServiceFields::default()
        };
        let body = service_body(&fields, None, true).unwrap();
        assert_eq!(
            Value::Object(body),
            json!({
                "name": "api", "address": "127.0.0.1:9000", "path_regexp": "^/v1/.*",
                "price": 100, "auth": "freebie 3", "auth_scheme": "AUTH_SCHEME_L402_MPP"
            })
        );
        let no_address = ServiceFields {
            name: Some("api".into()),
            ..ServiceFields::default()
        };
        let e = service_body(&no_address, None, true).unwrap_err();
        assert!(e.to_string().contains("--address"), "{e}");
        assert_eq!(e.exit_code(), 64);
        let e = service_body(&ServiceFields::default(), None, true).unwrap_err();
        assert!(e.to_string().contains("--name"), "{e}");
    }

    #[test]
    fn update_body_sends_only_what_was_given() {
        let fields = ServiceFields {
            price: Some(0),
            ..ServiceFields::default()
        };
        assert_eq!(
            Value::Object(service_body(&fields, None, false).unwrap()),
            json!({"price": 0})
        );
        let fields = ServiceFields {
            auth_scheme: Some(AuthScheme::L402),
            ..ServiceFields::default()
        };
        assert_eq!(
            Value::Object(service_body(&fields, None, false).unwrap()),
            json!({"auth_scheme": "AUTH_SCHEME_L402"})
        );
        let e = service_body(&ServiceFields::default(), None, false).unwrap_err();
        assert!(e.to_string().contains("nothing to update"), "{e}");
    }

    #[test]
    fn spec_carries_every_key_and_flags_win() {
        let spec = parse_spec(
            "- name: api\n  address: 127.0.0.1:9000\n  hostregexp: '^api\\.'\n  pathregexp: '^/v1/'\n  \
             price: 50\n  authscheme: mpp\n  timeout: 3600\n  ratelimits:\n    - requests: 5\n      per: 1s\n",
        )
        .unwrap();
        let fields = ServiceFields {
            price: Some(70),
            ..ServiceFields::default()
        };
        let body = service_body(&fields, Some(spec.clone()), true).unwrap();
        assert_eq!(
            Value::Object(body),
            json!({
                "name": "api", "address": "127.0.0.1:9000", "host_regexp": "^api\\.",
                "path_regexp": "^/v1/", "price": 70, "auth_scheme": "AUTH_SCHEME_MPP",
                "timeout": 3600, "ratelimits": [{"requests": 5, "per": "1s"}]
            })
        );
        // An update: no name in the body; a null removes a key.
        let spec = parse_spec("timeout: null\nheaders:\n  X-Tier: gold\n").unwrap();
        let body = service_body(&ServiceFields::default(), Some(spec), false).unwrap();
        assert_eq!(
            Value::Object(body),
            json!({"timeout": null, "headers": {"X-Tier": "gold"}})
        );
    }

    #[test]
    fn spec_shapes_and_mistakes() {
        let one = json!({"name": "a", "address": "h:1"});
        for text in [
            "name: a\naddress: h:1\n",
            "- name: a\n  address: h:1\n",
            "services:\n  - name: a\n    address: h:1\n",
            "{\"name\": \"a\", \"address\": \"h:1\"}",
        ] {
            assert_eq!(Value::Object(parse_spec(text).unwrap()), one, "{text}");
        }
        assert!(parse_spec("- name: a\n- name: b\n")
            .unwrap_err()
            .contains("2 services"));
        assert!(parse_spec("just text").is_err());
        // A typo is caught before anything is sent, naming the key.
        let spec = parse_spec("name: a\naddress: h:1\npricee: 5\n").unwrap();
        let e = service_body(&ServiceFields::default(), Some(spec), true).unwrap_err();
        assert!(e.to_string().contains("pricee"), "{e}");
        let spec = parse_spec("name: a\naddress: h:1\nauthscheme: lnurl\n").unwrap();
        let e = service_body(&ServiceFields::default(), Some(spec), true).unwrap_err();
        assert!(e.to_string().contains("lnurl"), "{e}");
        let spec = parse_spec("name: a\naddress: h:1\nprice: -1\n").unwrap();
        assert!(service_body(&ServiceFields::default(), Some(spec), true).is_err());
        let dir = tempfile::tempdir().unwrap();
        let e = read_spec(&dir.path().join("missing.yaml")).unwrap_err();
        assert!(e.to_string().contains("missing.yaml"), "{e}");
        assert_eq!(e.exit_code(), 64);
    }

    #[test]
    fn endpoint_defaults() {
        let base = Path::new("/srv/ap");
        let e = resolve_endpoint(None, None, None, Some(base));
        assert_eq!(e.url, DEFAULT_URL);
        assert_eq!(e.macaroon, base.join("admin.macaroon"));
        let e = resolve_endpoint(None, None, None, None);
        assert_eq!(
            e.macaroon,
            crate::config::Config::default_basedir().join("admin.macaroon")
        );
        // The config's keys; everything else in it is ignored (even keys this version rejects).
        let config = "listenaddr: 0.0.0.0:8081\nbogus: [1, 2]\nbasedir: /var/lib/aperture\n\
                      admin:\n  enabled: true\n  listenaddr: \"[::]:9090\"\n";
        let e = resolve_endpoint(None, None, Some(config), None);
        assert_eq!(e.url, "http://[::1]:9090");
        assert_eq!(e.macaroon, Path::new("/var/lib/aperture/admin.macaroon"));
        let e = resolve_endpoint(None, None, Some(config), Some(base));
        assert_eq!(e.macaroon, base.join("admin.macaroon"), "--basedir wins");
        let config = "prometheus:\n  enabled: true\n  listenaddr: \"localhost:8989\"\n\
                      admin:\n  macaroonpath: /etc/ap/admin.macaroon\n  listenaddr: \":1\"\n";
        let e = resolve_endpoint(None, None, Some(config), Some(base));
        assert_eq!(e.url, "http://localhost:8989");
        assert_eq!(e.macaroon, Path::new("/etc/ap/admin.macaroon"));
        let config = "prometheus:\n  enabled: false\n  listenaddr: \"localhost:8989\"\n\
                      admin:\n  listenaddr: \":8099\"\n";
        let e = resolve_endpoint(None, None, Some(config), None);
        assert_eq!(e.url, "http://127.0.0.1:8099");
        // The command line wins; a bare host:port is http.
        let e = resolve_endpoint(
            Some("10.0.0.1:1"),
            Some(Path::new("m")),
            Some(config),
            Some(base),
        );
        assert_eq!(
            (e.url.as_str(), e.macaroon.as_path()),
            ("http://10.0.0.1:1", Path::new("m"))
        );
        let e = resolve_endpoint(None, None, Some("not: [valid"), None);
        assert_eq!(e.url, DEFAULT_URL);
    }

    #[test]
    fn macaroon_is_sent_as_hex() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("admin.macaroon");
        std::fs::write(&bin, [0x02, 0x01, 0xff]).unwrap();
        assert_eq!(macaroon_hex(&bin).unwrap(), "0201ff");
        std::fs::write(&bin, "0201FF\n").unwrap();
        assert_eq!(macaroon_hex(&bin).unwrap(), "0201ff");
        std::fs::write(&bin, "").unwrap();
        assert!(macaroon_hex(&bin).is_err());
        let e = macaroon_hex(&dir.path().join("none")).unwrap_err();
        assert!(
            e.to_string().contains("none") && e.to_string().contains("--macaroon"),
            "{e}"
        );
    }

    #[test]
    fn statuses_say_whose_fault() {
        let mac = Path::new("/m/admin.macaroon");
        let url = "http://127.0.0.1:8082";
        let status = |code: i32, m: &str| {
            json!({"code": code, "message": m, "details": []})
                .to_string()
                .into_bytes()
        };
        assert_eq!(
            classify(200, b"{\"a\":1}".to_vec(), url, mac).unwrap(),
            b"{\"a\":1}"
        );
        assert_eq!(classify(200, Vec::new(), url, mac).unwrap(), b"{}");
        assert!(matches!(
            classify(200, b"<html>".to_vec(), url, mac),
            Err(AdminError::NotJson { .. })
        ));
        let e = classify(401, status(16, "invalid macaroon"), url, mac).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the admin macaroon at /m/admin.macaroon was refused (HTTP 401: invalid macaroon); \
             is it the one this instance wrote (admin.macaroonpath)?"
        );
        let e = classify(400, status(3, "path_regexp: bad"), url, mac).unwrap_err();
        assert_eq!(e.exit_code(), 64);
        assert!(e.to_string().contains("path_regexp: bad"));
        let e = classify(404, status(5, "service not found"), url, mac).unwrap_err();
        assert!(
            matches!(&e, AdminError::NotFound(m) if m == "service not found"),
            "{e}"
        );
        let e = classify(404, b"not here\n".to_vec(), url, mac).unwrap_err();
        assert!(matches!(e, AdminError::NoApi { .. }), "{e}");
        assert!(e.to_string().contains(url) && e.to_string().contains("not here"));
        assert!(matches!(
            classify(409, status(6, "exists"), url, mac),
            Err(AdminError::Conflict(_))
        ));
        assert!(matches!(
            classify(503, status(14, "db down"), url, mac),
            Err(AdminError::Unavailable(_))
        ));
        let e = classify(500, Vec::new(), url, mac).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the admin API answered HTTP 500: (empty body)"
        );
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn not_running_names_the_url() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let endpoint = Endpoint {
            url: format!("http://127.0.0.1:{port}"),
            macaroon: PathBuf::from("/nonexistent"),
            timeout: Duration::from_secs(5),
        };
        let e = call(&endpoint, &Request::Health).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("is the proxy running with admin.enabled? tried http://127.0.0.1:")
                && msg.contains(&port.to_string()),
            "{msg}"
        );
        let e = call(
            &Endpoint {
                url: "https://x".into(),
                ..endpoint
            },
            &Request::Health,
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), 64, "{e}");
    }

    #[test]
    fn output_choice() {
        assert_eq!(Output::choose(false, false, true), Output::Human);
        assert_eq!(Output::choose(false, false, false), Output::Json);
        assert_eq!(Output::choose(true, false, true), Output::Json);
        assert_eq!(Output::choose(false, true, false), Output::Human);
    }

    #[test]
    fn json_output_is_the_wire() {
        let body = br#"{"network":"regtest","insecure":true}"#;
        assert_eq!(
            render(&Request::Info, body, Output::Json),
            "{\"network\":\"regtest\",\"insecure\":true}\n"
        );
    }

    #[test]
    fn human_info_and_health() {
        let body = json!({
            "network": "regtest", "listen_addr": "127.0.0.1:8081", "insecure": true,
            "mpp_enabled": false, "sessions_enabled": false, "mpp_realm": ""
        })
        .to_string();
        assert_eq!(
            render(&Request::Info, body.as_bytes(), Output::Human),
            "network:              regtest\n\
             listen address:       127.0.0.1:8081\n\
             insecure:             true\n\
             payment scheme (MPP): false\n\
             payment sessions:     false\n\
             payment realm:\n"
        );
        assert_eq!(
            render(&Request::Health, br#"{"status":"ok"}"#, Output::Human),
            "status: ok\n"
        );
    }

    #[test]
    fn human_services() {
        let body = json!({"services": [
            {"name": "echo", "address": "127.0.0.1:9000", "protocol": "http", "host_regexp": ".*",
             "path_regexp": "^/echo", "price": "10", "auth": "on", "auth_scheme": "AUTH_SCHEME_L402",
             "source": "file"},
            {"name": "premium-api", "address": "10.0.0.2:443", "protocol": "https", "host_regexp": ".*",
             "path_regexp": "^/p", "price": "1250", "auth": "freebie 2", "auth_scheme": "AUTH_SCHEME_L402_MPP",
             "source": "db"}
        ]})
        .to_string();
        assert_eq!(
            render(&Request::ListServices, body.as_bytes(), Output::Human),
            "NAME         SOURCE  ADDRESS         PROTOCOL  HOST  PATH    PRICE  AUTH       SCHEME\n\
             echo         file    127.0.0.1:9000  http      .*    ^/echo     10  on         l402\n\
             premium-api  db      10.0.0.2:443    https     .*    ^/p      1250  freebie 2  l402+mpp\n"
        );
        assert_eq!(
            render(&Request::ListServices, br#"{"services":[]}"#, Output::Human),
            "no services\n"
        );
        let created =
            json!({"name": "x", "address": "h:1", "protocol": "http", "host_regexp": ".*",
            "path_regexp": "^/x", "price": "5", "auth": "on", "auth_scheme": "AUTH_SCHEME_MPP"})
            .to_string();
        let out = render(
            &Request::CreateService(Map::new()),
            created.as_bytes(),
            Output::Human,
        );
        assert!(out.starts_with("created service \"x\"\nname:"), "{out}");
        assert!(
            out.contains("price (sats): 5\n") && out.contains("auth scheme:  mpp\n"),
            "{out}"
        );
        assert_eq!(
            render(
                &Request::DeleteService { name: "x".into() },
                br#"{"status":"deleted"}"#,
                Output::Human
            ),
            "deleted service \"x\" (deleted)\n"
        );
    }

    #[test]
    fn human_transactions() {
        let body = json!({"transactions": [
            {"id": 7, "token_id": "aa", "payment_hash": "bb", "service_name": "echo",
             "price_sats": "10", "state": "settled", "created_at": "2026-03-01T10:00:00Z",
             "settled_at": "2026-03-01T10:00:05Z"},
            {"id": 12, "token_id": "cc", "payment_hash": "dd", "service_name": "premium",
             "price_sats": "1250", "state": "pending", "created_at": "2026-03-01T11:00:00Z",
             "settled_at": ""}
        ], "total_count": "57"})
        .to_string();
        let req = Request::ListTransactions(TxFilter {
            page: Page {
                limit: Some(2),
                offset: Some(10),
            },
            ..TxFilter::default()
        });
        assert_eq!(
            render(&req, body.as_bytes(), Output::Human),
            "transactions 11-12 of 57\n\
             ID  TOKEN ID  SERVICE  SATS  STATE    CREATED               SETTLED\n\
             \x207  aa        echo       10  settled  2026-03-01T10:00:00Z  2026-03-01T10:00:05Z\n\
             12  cc        premium  1250  pending  2026-03-01T11:00:00Z  -\n"
        );
        assert_eq!(
            render(
                &Request::ListTokens(Page::default()),
                br#"{"tokens":[],"total_count":"0"}"#,
                Output::Human
            ),
            "no tokens (total 0)\n"
        );
    }

    #[test]
    fn human_stats_and_revoke() {
        let body = json!({"total_revenue_sats": "2450", "transaction_count": "17",
        "service_breakdown": [
            {"service_name": "echo-api", "total_revenue_sats": "1200"},
            {"service_name": "premium-api", "total_revenue_sats": "1250"}
        ]})
        .to_string();
        assert_eq!(
            render(
                &Request::Stats(Range::default()),
                body.as_bytes(),
                Output::Human
            ),
            "revenue (sats):       2450\n\
             settled transactions: 17\n\
             \n\
             SERVICE      SATS\n\
             echo-api     1200\n\
             premium-api  1250\n"
        );
        // Fields beyond Go's still show.
        let out = render(
            &Request::Stats(Range::default()),
            br#"{"total_revenue_sats":"5","transaction_count":"1","refunded_sats":"2"}"#,
            Output::Human,
        );
        assert!(out.ends_with("refunded sats:        2\n"), "{out}");
        assert_eq!(
            render(
                &Request::RevokeToken {
                    token_id: "ab".into()
                },
                br#"{"status":"ok"}"#,
                Output::Human
            ),
            "revoked token ab\n"
        );
    }
}
