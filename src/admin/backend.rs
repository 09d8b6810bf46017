//! The seam between the admin API server and the rest of the process: the [`AdminBackend`]
//! trait and the plain values that cross it. The server (gRPC, REST, dashboard) depends on this
//! trait only, so it is tested with [`FakeBackend`](super::fake::FakeBackend); `main.rs` wires the
//! real one (store connection, bridge stats, the services reload hook).
//!
//! The shapes follow Go aperture's `adminrpc/admin.proto` (field names and meanings); fields Go
//! does not have are marked **ours**. The values are *checked* ones: the API layer has already
//! parsed the wire (hex token ids, RFC 3339 dates, Go's "empty means unchanged" rules, the
//! service field checks Go makes), so a backend only applies them.
//!
//! This module owns no I/O and no threads; every method is called from the `aperture-admin`
//! thread (never a worker core) and may block briefly (a store round trip).

use std::fmt;

/// Go's `AuthScheme` enum: which payment scheme(s) a service offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AuthScheme {
    /// `AUTH_SCHEME_L402` (0), the default; stored as `"l402"`.
    #[default]
    L402,
    /// `AUTH_SCHEME_MPP` (1): the Payment scheme only; `"mpp"`.
    Mpp,
    /// `AUTH_SCHEME_L402_MPP` (2): both; `"l402+mpp"`.
    L402Mpp,
}

impl AuthScheme {
    /// Go's config/database spelling (`authscheme`).
    pub fn as_str(self) -> &'static str {
        match self {
            AuthScheme::L402 => "l402",
            AuthScheme::Mpp => "mpp",
            AuthScheme::L402Mpp => "l402+mpp",
        }
    }

    /// Go's `stringToAuthScheme`: anything unknown is L402.
    pub fn from_config(s: &str) -> AuthScheme {
        match s {
            "mpp" => AuthScheme::Mpp,
            "l402+mpp" => AuthScheme::L402Mpp,
            _ => AuthScheme::L402,
        }
    }

    /// The proto enum number.
    pub fn number(self) -> i32 {
        match self {
            AuthScheme::L402 => 0,
            AuthScheme::Mpp => 1,
            AuthScheme::L402Mpp => 2,
        }
    }

    /// From the proto enum number (unknown numbers are `None`).
    pub fn from_number(n: i32) -> Option<AuthScheme> {
        match n {
            0 => Some(AuthScheme::L402),
            1 => Some(AuthScheme::Mpp),
            2 => Some(AuthScheme::L402Mpp),
            _ => None,
        }
    }

    /// The proto enum name (`AUTH_SCHEME_L402`, ...), as Go's REST gateway writes it.
    pub fn proto_name(self) -> &'static str {
        match self {
            AuthScheme::L402 => "AUTH_SCHEME_L402",
            AuthScheme::Mpp => "AUTH_SCHEME_MPP",
            AuthScheme::L402Mpp => "AUTH_SCHEME_L402_MPP",
        }
    }

    /// From the proto enum name.
    pub fn from_proto_name(s: &str) -> Option<AuthScheme> {
        [AuthScheme::L402, AuthScheme::Mpp, AuthScheme::L402Mpp]
            .into_iter()
            .find(|a| a.proto_name() == s)
    }
}

/// Where a service comes from (**ours**; Go has no such field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceSource {
    /// The config file's `services` list.
    File,
    /// Created through the admin API, stored in the database.
    Db,
}

impl ServiceSource {
    /// The wire value: `"file"` or `"db"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceSource::File => "file",
            ServiceSource::Db => "db",
        }
    }
}

/// Go's `GetInfoResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Info {
    /// `authenticator.network` (mainnet, testnet, regtest, ...).
    pub network: String,
    /// The main listener's address.
    pub listen_addr: String,
    pub insecure: bool,
    /// The Payment (MPP) scheme is on.
    pub mpp_enabled: bool,
    /// Payment sessions are on.
    pub sessions_enabled: bool,
    pub mpp_realm: String,
}

/// Go's `Service` message, as ListServices and the mutations return it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceView {
    pub name: String,
    /// The upstream, `host:port`.
    pub address: String,
    /// `http` or `https`.
    pub protocol: String,
    pub host_regexp: String,
    pub path_regexp: String,
    /// The static price in satoshis.
    pub price: u64,
    /// `on`, `off`, `freebie N` (Go's auth level text; empty means the default, on).
    pub auth: String,
    pub auth_scheme: AuthScheme,
    /// **Ours**: where the service is defined. Not on the gRPC wire (Go's proto has no field for
    /// it); REST and the dashboard show it.
    pub source: Option<ServiceSource>,
    /// **Ours**: the service's other config keys (`dynamicprice`, `ratelimits`, `caveats`,
    /// `headers`, `timeout`, `authwhitelistpaths`, ...) as a JSON object, with the config file's
    /// key names. REST only.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ServiceView {
    /// Whether `source` is `Some(ServiceSource::Db)`.
    pub fn is_db(&self) -> bool {
        self.source == Some(ServiceSource::Db)
    }
}

/// Go's `CreateServiceRequest`, checked: `name` and `address` are non-empty, `protocol` is
/// `http`/`https` (defaulted to `http`), `host_regexp` defaulted to `.*`, both regexes compile,
/// are at most 1024 bytes, and `path_regexp` is non-empty and does not match Go's reserved
/// paths, `auth` is normalized (lowercase) or empty.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceSpec {
    pub name: String,
    pub address: String,
    pub protocol: String,
    pub host_regexp: String,
    pub path_regexp: String,
    pub price: u64,
    pub auth: String,
    pub auth_scheme: AuthScheme,
    /// **Ours** (REST only): further config keys, as [`ServiceView::extra`]. The backend
    /// validates them with the config file's rules and names a bad key in
    /// [`AdminError::BadRequest`].
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Go's `UpdateServiceRequest`, checked like [`ServiceSpec`]: `None` leaves a field as it is
/// (Go's rule: an empty string, an unset price, or `AUTH_SCHEME_L402` means "unchanged").
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServicePatch {
    pub address: Option<String>,
    pub protocol: Option<String>,
    pub host_regexp: Option<String>,
    pub path_regexp: Option<String>,
    pub price: Option<u64>,
    pub auth: Option<String>,
    pub auth_scheme: Option<AuthScheme>,
    /// **Ours** (REST only): config keys to set; a JSON `null` removes the key.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Go's transaction states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxState {
    Pending,
    Settled,
}

impl TxState {
    /// Go's wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            TxState::Pending => "pending",
            TxState::Settled => "settled",
        }
    }

    /// From Go's wire value.
    pub fn parse(s: &str) -> Option<TxState> {
        match s {
            "pending" => Some(TxState::Pending),
            "settled" => Some(TxState::Settled),
            _ => None,
        }
    }
}

/// Go's `ListTransactionsRequest`, checked: dates parsed (both or neither), `end >= start`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TxQuery {
    /// Only this service's rows (Go's `service`; empty means all).
    pub service: Option<String>,
    pub state: Option<TxState>,
    /// **Ours**: only rows of this kind (`l402`, `mpp_charge`, `mpp_session_deposit`,
    /// `mpp_session_top_up`).
    pub kind: Option<String>,
    /// Go's `start_date`, unix seconds (applied to `settled_at`, both ends inclusive).
    pub start: Option<u64>,
    /// Go's `end_date`, unix seconds.
    pub end: Option<u64>,
    /// Page size: 0 means Go's default (50), more than 1000 means 1000.
    pub limit: u32,
    pub offset: u32,
}

/// Go's `Transaction`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tx {
    pub id: i64,
    pub token_id: [u8; 32],
    pub payment_hash: [u8; 32],
    pub service_name: String,
    pub price_sats: u64,
    pub state: TxState,
    /// Unix seconds (RFC 3339 on the wire).
    pub created_at: u64,
    pub settled_at: Option<u64>,
    /// **Ours**: what the row was sold as (`l402`, `mpp_charge`, `mpp_session_deposit`,
    /// `mpp_session_top_up`). REST only.
    pub kind: String,
    /// **Ours**: when the token was revoked, if it was. REST only.
    pub revoked_at: Option<u64>,
}

/// Go's `ListTransactionsResponse` / `ListTokensResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TxPage {
    pub transactions: Vec<Tx>,
    /// All rows matching the filter (not just this page).
    pub total_count: u64,
}

/// Go's `ServiceRevenue`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceRevenue {
    pub service_name: String,
    pub total_revenue_sats: u64,
    /// **Ours**: how many settled rows.
    pub count: u64,
}

/// Go's `GetStatsResponse` (settled rows only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stats {
    pub total_revenue_sats: u64,
    pub transaction_count: u64,
    /// By service name.
    pub service_breakdown: Vec<ServiceRevenue>,
    /// **Ours**: session refunds paid back in the range (not subtracted from the revenue).
    pub refunded_sats: u64,
}

/// **Ours**: settled revenue of one service on one UTC day (the dashboard's chart).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DayRevenue {
    /// Unix seconds of 00:00 UTC.
    pub day_start: u64,
    pub service_name: String,
    pub revenue_sats: u64,
    pub count: u64,
}

/// **Ours**: the node's state for the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeState {
    /// The Lightning backend (`lnd`, `dev`, `none`).
    pub backend: String,
    /// Whether the backend is connected (always true for `dev`).
    pub lnd_connected: bool,
    /// Bridge calls queued or running now.
    pub bridge_queue_depth: u64,
    /// Most calls in flight before new ones are refused.
    pub bridge_queue_capacity: u64,
    /// Worker cores serving.
    pub cores: u32,
    /// aperture's version (with the git revision).
    pub version: String,
}

/// Who is at fault when a backend call fails; the API maps it to an HTTP status and a gRPC
/// code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// 400 / `InvalidArgument`: the request is wrong; the text names the field.
    #[error("{0}")]
    BadRequest(String),
    /// 404 / `NotFound`: e.g. "service not found", "token not found".
    #[error("{0}")]
    NotFound(String),
    /// 409 / `AlreadyExists`: e.g. "service already exists".
    #[error("{0}")]
    Conflict(String),
    /// 503 / `Unavailable`: e.g. the database is down or not configured.
    #[error("{0}")]
    Unavailable(String),
    /// 500 / `Internal`.
    #[error("{0}")]
    Internal(String),
}

impl AdminError {
    /// The HTTP status a REST answer carries.
    pub fn http_status(&self) -> u16 {
        match self {
            AdminError::BadRequest(_) => 400,
            AdminError::NotFound(_) => 404,
            AdminError::Conflict(_) => 409,
            AdminError::Unavailable(_) => 503,
            AdminError::Internal(_) => 500,
        }
    }

    /// The gRPC status code number (InvalidArgument 3, NotFound 5, AlreadyExists 6,
    /// Unavailable 14, Internal 13), also the `code` of a REST error body (grpc-gateway's).
    pub fn grpc_code(&self) -> i32 {
        match self {
            AdminError::BadRequest(_) => 3,
            AdminError::NotFound(_) => 5,
            AdminError::Conflict(_) => 6,
            AdminError::Unavailable(_) => 14,
            AdminError::Internal(_) => 13,
        }
    }
}

/// What the admin API needs from the process. Implementations must be cheap to call from one
/// thread at a time and must not panic; every fallible call says who is at fault.
pub trait AdminBackend: Send + Sync + 'static {
    /// Go's `GetInfo`.
    fn info(&self) -> Info;
    /// Every service the proxy routes: the config file's and the database's, with `source`.
    fn list_services(&self) -> Result<Vec<ServiceView>, AdminError>;
    /// Creates a database service and applies it (validate-then-swap, as SIGHUP);
    /// `Conflict` when the name exists, `BadRequest` naming the field when the result does not
    /// validate.
    fn create_service(&self, spec: ServiceSpec) -> Result<ServiceView, AdminError>;
    /// Changes a service (`NotFound` when there is none by that name).
    fn update_service(&self, name: &str, patch: ServicePatch) -> Result<ServiceView, AdminError>;
    /// Deletes a service (`NotFound` when there is none by that name).
    fn delete_service(&self, name: &str) -> Result<(), AdminError>;
    /// Go's `ListTransactions`: newest first.
    fn list_transactions(&self, q: TxQuery) -> Result<TxPage, AdminError>;
    /// Go's `ListTokens`: settled rows, newest first.
    fn list_tokens(&self, limit: u32, offset: u32) -> Result<TxPage, AdminError>;
    /// Revokes a token through the existing revocation path (`NotFound` when no settled row
    /// has it).
    fn revoke_token(&self, token_id: [u8; 32]) -> Result<(), AdminError>;
    /// Go's `GetStats` over `[from, to]` (unix seconds, inclusive; `None` is unbounded).
    fn stats(&self, from: Option<u64>, to: Option<u64>) -> Result<Stats, AdminError>;
    /// **Ours**: per-day revenue over `[from, to]`, by day then service.
    fn revenue_by_day(
        &self,
        from: Option<u64>,
        to: Option<u64>,
    ) -> Result<Vec<DayRevenue>, AdminError>;
    /// **Ours**: the node's state.
    fn node(&self) -> NodeState;
}

impl fmt::Display for TxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_scheme_spellings_roundtrip() {
        for a in [AuthScheme::L402, AuthScheme::Mpp, AuthScheme::L402Mpp] {
            assert_eq!(AuthScheme::from_config(a.as_str()), a);
            assert_eq!(AuthScheme::from_number(a.number()), Some(a));
            assert_eq!(AuthScheme::from_proto_name(a.proto_name()), Some(a));
        }
        assert_eq!(AuthScheme::from_config("bogus"), AuthScheme::L402);
        assert_eq!(AuthScheme::from_number(3), None);
        assert_eq!(AuthScheme::from_proto_name("L402"), None);
    }

    #[test]
    fn errors_map_to_statuses_and_codes() {
        let all = [
            (AdminError::BadRequest("price".into()), 400, 3),
            (AdminError::NotFound("x".into()), 404, 5),
            (AdminError::Conflict("x".into()), 409, 6),
            (AdminError::Unavailable("x".into()), 503, 14),
            (AdminError::Internal("x".into()), 500, 13),
        ];
        for (e, status, code) in all {
            assert_eq!((e.http_status(), e.grpc_code()), (status, code), "{e:?}");
        }
        assert_eq!(TxState::parse("settled"), Some(TxState::Settled));
        assert_eq!(TxState::parse("paid"), None);
    }
}
