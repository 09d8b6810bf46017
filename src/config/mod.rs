//! Configuration (layer 1): reads Go aperture's `aperture.yaml` (plus our additions) through a raw
//! serde mirror that rejects unknown keys, then validates it into the typed [`Config`] the other
//! layers consume. Owns every user-facing config error message. It must not print or log:
//! warnings are collected in [`Config::warnings`] for the binary to log. The only file I/O is
//! reading the config file itself ([`load`]), `!file+hex:`/`!file+base64:` header values, and
//! resolving `staticroot` (it must be a directory).

mod admin;
mod http2;
mod logging;
mod meter;
mod raw;
mod redis;
mod service;
mod validate;
pub(crate) mod values;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;

use crate::l402::{ChallengeShape, UpstreamAuthorization};

pub use admin::{AdminConfig, DEFAULT_ADMIN_ADDR, DEFAULT_MACAROON_FILE};
pub use http2::Http2;
pub use logging::{Callsite, Level, LogFormat, Logging};
pub use redis::{RateLimitBackend, Redis, DEFAULT_KEY_PREFIX};
pub use values::IpNet;

/// Exit code for any configuration error (sysexits' `EX_USAGE`).
pub const EXIT_CONFIG: i32 = 64;

/// A configuration error. `Display` is the message shown to the operator: it names the file, the
/// key and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}\n  fix: create it (see sample-conf.yaml) or pass --config PATH", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// YAML syntax or type error (message carries line, column and a snippet).
    #[error("{origin}: {message}")]
    Yaml { origin: String, message: String },
    /// A key Go aperture would have silently ignored.
    #[error("{origin}{}: unknown key `{key}`: {hint}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    UnknownKey {
        origin: String,
        key: String,
        line: Option<u64>,
        hint: String,
    },
    /// A value that does not validate.
    #[error("{origin}: `{key}`: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
    /// A valid Go aperture feature this implementation does not support yet.
    #[error("{origin}: `{key}`: {message}")]
    Unsupported {
        origin: String,
        key: String,
        message: String,
    },
    /// A `!file+hex:`/`!file+base64:` header file could not be read.
    #[error("{origin}: `{key}`: cannot read header file {}: {source}", path.display())]
    HeaderFile {
        origin: String,
        key: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ConfigError {
    /// Process exit code for this error: always 64 (`EX_USAGE`), the config-error code.
    pub fn exit_code(&self) -> i32 {
        EXIT_CONFIG
    }
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen_addr: SocketAddr,
    /// Holds tls.cert/tls.key, the autocert cache and the default database.
    pub basedir: PathBuf,
    /// Plaintext (h2c) listener, for use behind a TLS-terminating load balancer.
    pub insecure: bool,
    pub server_name: Option<String>,
    /// Let's Encrypt (ACME) for `servername`, when `autocert: true` on a TLS listener.
    pub autocert: Option<Autocert>,
    /// Require the invoice to be settled on each authenticated request.
    pub strict_verify: bool,
    /// `debuglevel` as written; [`Config::logging`] holds what it means.
    pub debug_level: String,
    /// Log level and line format (`debuglevel`, `logging:`).
    pub logging: Logging,
    /// Zero means no timeout (as in Go).
    pub idle_timeout: Duration,
    /// Zero means no timeout (as in Go).
    pub read_timeout: Duration,
    /// Zero means no timeout (as in Go).
    pub write_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    pub upstream_timeout: Duration,
    /// How long an idle keep-alive connection to an upstream is kept (`upstreamidletimeout`,
    /// ours; zero: none is kept).
    pub upstream_idle_timeout: Duration,
    /// Idle upstream connections kept per core, all upstreams together (`upstreammaxidle`).
    pub upstream_max_idle: usize,
    /// Downstream HTTP/2 limits (`http2:`, ours).
    pub http2: Http2,
    pub challenge_shape: ChallengeShape,
    /// Which `Authorization` fields a paid request carries upstream.
    pub upstream_authorization: UpstreamAuthorization,
    /// Steer connections to cores by client /24 (/48) so IP-keyed rate-limit decisions stay on
    /// the accepting core (`ratelimitsteering: ip`, the default) or not (`off`).
    pub rate_limit_steering: bool,
    /// Rules on minting 402 challenges, keyed by client IP (empty: unlimited, as Go aperture).
    pub challenge_rate_limits: Vec<RateLimitRule>,
    /// Where rate-limit buckets live: this process (exact per instance) or a shared Redis
    /// (`ratelimitbackend`, `redis:`; ours).
    pub rate_limit_backend: RateLimitBackend,
    pub blocklist: Vec<IpNet>,
    /// Peers (load balancers) whose `X-Forwarded-For` names the real client (ours).
    pub trusted_proxies: Vec<IpNet>,
    /// Connections from `trusted_proxies` must open with a PROXY protocol v1/v2 header, whose
    /// source address is then the client (ours; `proxyprotocol`).
    pub proxy_protocol: bool,
    pub authenticator: Authenticator,
    pub db: Db,
    /// Metrics listener, when `prometheus.enabled`.
    pub prometheus: Option<SocketAddr>,
    /// The admin API, when `admin.enabled`.
    pub admin: Option<AdminConfig>,
    /// The static site served for requests no service matches (`servestatic: true`): the
    /// canonical `staticroot` directory, checked at load.
    pub static_root: Option<PathBuf>,
    /// Tried in order; the first whose host (and path) regexp matches wins.
    pub services: Vec<Service>,
    /// Human-readable warnings for the binary to log; config code never prints them.
    pub warnings: Vec<String>,
}

/// Let's Encrypt's production ACME directory, `autocertdirectory`'s default.
pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// `autocert: true`: obtain and renew the listener's certificate over ACME.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Autocert {
    /// The DNS name to get the certificate for (`servername`).
    pub domain: String,
    /// The ACME directory URL (`autocertdirectory`, ours; default Let's Encrypt production).
    pub directory: String,
    /// A PEM file of the CAs to trust for the directory's own HTTPS (`autocertdirectoryca`,
    /// ours; default: the public web PKI roots).
    pub directory_ca: Option<PathBuf>,
    /// Where to answer HTTP-01 challenges (`autocerthttplisten`, ours; default off: TLS-ALPN-01
    /// on the main listener only).
    pub http_listen: Option<SocketAddr>,
}

/// Lightning network the invoice backend runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    Mainnet,
    Testnet,
    Regtest,
    Simnet,
    Signet,
}

impl Network {
    /// The same network as the Lightning bridge names it.
    pub fn to_bridge(self) -> lnd_bridge::Network {
        match self {
            Network::Mainnet => lnd_bridge::Network::Mainnet,
            Network::Testnet => lnd_bridge::Network::Testnet,
            Network::Regtest => lnd_bridge::Network::Regtest,
            Network::Simnet => lnd_bridge::Network::Simnet,
            Network::Signet => lnd_bridge::Network::Signet,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Authenticator {
    pub network: Network,
    /// Auth off entirely: no challenges, every request passes.
    pub disable: bool,
    pub backend: Backend,
    /// The Payment (MPP) scheme, when `enablempp` is on.
    pub mpp: Option<Mpp>,
}

/// The Payment scheme's settings (`authenticator.enablempp`, `mpprealm`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mpp {
    /// The `realm` auth-param (covered by the challenge HMAC): `mpprealm`, else `listenaddr`
    /// as written in the file, as Go aperture does.
    pub realm: String,
    /// The session intent, when `enablesessions` is on.
    pub sessions: Option<Sessions>,
}

/// The Payment session intent's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sessions {
    /// Deposit = unit price × this (`sessiondepositmultiplier`, default 20).
    pub deposit_multiplier: u64,
    /// A session with no debit for this long is closed and refunded (`sessionidletimeout`,
    /// default 300 s; Go only advertises it).
    pub idle_timeout_secs: u64,
}

/// Which credential schemes a service accepts and offers (`authscheme`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schemes {
    /// L402 (and its LSAT spelling).
    pub l402: bool,
    /// Payment (MPP), intent `charge`.
    pub payment: bool,
}

impl Default for Schemes {
    fn default() -> Self {
        Schemes {
            l402: true,
            payment: false,
        }
    }
}

/// Where invoices come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// lnd over gRPC; `invoice.macaroon` is read from `mac_dir`.
    Lnd {
        host: String,
        tls_path: PathBuf,
        mac_dir: PathBuf,
    },
    /// The embedded dev Lightning backend (fake invoices, pays itself), listening on `listen_addr`.
    Dev { listen_addr: SocketAddr },
    /// Only with `authenticator.disable`.
    None,
}

/// Token database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite {
        path: PathBuf,
        skip_migrations: bool,
    },
    Postgres(Postgres),
    Etcd {
        host: String,
        user: String,
        password: String,
    },
}

/// `Debug` redacts the password, so a logged config never leaks it.
#[derive(Clone, PartialEq, Eq)]
pub struct Postgres {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub dbname: String,
    pub max_open_connections: u32,
    pub require_ssl: bool,
    pub skip_migrations: bool,
    /// With `require_ssl`: the CA certificates (PEM) that sign the server's certificate;
    /// `None`: the bundled web PKI roots.
    pub tls_cert_path: Option<PathBuf>,
    /// With `require_ssl`: what of the server's certificate is checked.
    pub tls_verify: PgVerify,
}

/// How much of a PostgreSQL server's certificate is verified (`postgres.tlsverify`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PgVerify {
    /// The chain to a trusted CA and the host name (libpq's `sslmode=verify-full`).
    #[default]
    Full,
    /// The chain only, any host name (libpq's `sslmode=verify-ca`).
    Ca,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("dbname", &self.dbname)
            .field("max_open_connections", &self.max_open_connections)
            .field("require_ssl", &self.require_ssl)
            .field("skip_migrations", &self.skip_migrations)
            .field("tls_cert_path", &self.tls_cert_path)
            .field("tls_verify", &self.tls_verify)
            .finish()
    }
}

impl Postgres {
    /// `postgres://user:pass@host:port/dbname?sslmode=…`, as Go aperture builds it.
    pub fn dsn(&self) -> String {
        let mode = if self.require_ssl {
            "require"
        } else {
            "disable"
        };
        format!(
            "postgres://{}:{}@{}:{}/{}?sslmode={mode}",
            self.user, self.password, self.host, self.port, self.dbname
        )
    }
}

/// Backend protocol of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Https,
    /// Cleartext HTTP/2 (prior knowledge), e.g. for gRPC backends without TLS.
    H2c,
}

/// A service's auth level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    On,
    Off,
    /// N free requests per masked client IP, then payment.
    Freebie(u16),
}

#[derive(Clone, Debug)]
pub struct Service {
    pub name: String,
    /// The config file or the database (a service created through the admin API).
    pub source: ServiceSource,
    pub host_regexp: Regex,
    pub path_regexp: Option<Regex>,
    /// Backend `host:port`.
    pub address: String,
    pub protocol: Protocol,
    pub tls_cert_path: Option<PathBuf>,
    pub tls_skip_verify: bool,
    pub auth: Auth,
    /// Sats, 1..=10^13 (0/unset became 1).
    pub price: u64,
    /// Seconds until minted tokens expire (`<name>_valid_until`); `None`: never.
    pub timeout: Option<u64>,
    pub capabilities: Option<String>,
    /// Extra caveats, sorted by key so minting is deterministic.
    pub constraints: Vec<(String, String)>,
    pub auth_whitelist_paths: Vec<Regex>,
    pub auth_skip_invoice_creation_paths: Vec<Regex>,
    /// Set on every upstream request (replacing the client's value); sorted by name.
    pub headers: Vec<(String, String)>,
    pub rewrite_prefix: Option<String>,
    pub rate_limits: Vec<RateLimitRule>,
    pub dynamic_price: Option<DynamicPrice>,
    /// `metering: openai`: the built-in meter's price table (ours; no pricer daemon).
    pub meter: Option<std::sync::Arc<crate::usage::PriceTable>>,
    /// The schemes this service accepts and offers; resolved against `enablempp` at load.
    pub schemes: Schemes,
    /// `authscheme` as written (`None`: unset), for that resolution.
    pub auth_scheme_raw: Option<Schemes>,
}

#[derive(Clone, Debug)]
pub struct RateLimitRule {
    /// `None`: every path.
    pub path_regexp: Option<Regex>,
    pub requests: u32,
    pub per: Duration,
    /// Bucket capacity (0/omitted became `requests`).
    pub burst: u32,
}

/// gRPC pricer settings (only present when `dynamicprice.enabled`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynamicPrice {
    pub grpc_address: String,
    pub insecure: bool,
    pub tls_cert_path: Option<PathBuf>,
    pub metered: bool,
    pub usage_tail_bytes: u32,
}

impl Config {
    /// `~/.aperture/aperture.yaml`.
    pub fn default_path() -> PathBuf {
        values::expand_tilde("~/.aperture/aperture.yaml")
    }

    /// `~/.aperture`.
    pub fn default_basedir() -> PathBuf {
        values::expand_tilde("~/.aperture")
    }
}

/// Reads, parses and validates the config file at `path` (`~` expanded).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let path = values::expand_tilde(&path.to_string_lossy());
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// A service kept in the token database (created through the admin API): its name and its
/// block in the config file's service syntax (YAML; JSON is YAML too), every service key allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbService {
    pub name: String,
    pub spec: String,
}

/// Where a service was defined. A database service replaces the file's service of the same
/// name (Go aperture's rule), and otherwise comes after the file's services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceSource {
    #[default]
    File,
    Db,
}

impl Service {
    /// The upstream credential fields go out only when `headers` does not set `Authorization`
    /// itself: Go `Set`s the configured headers after rewriting the credential, so a configured
    /// `Authorization` replaces it (an API key for the upstream instead of the client's token).
    pub fn forwards_credential(&self) -> bool {
        !self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("authorization"))
    }
}

impl ServiceSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceSource::File => "file",
            ServiceSource::Db => "db",
        }
    }
}

/// [`parse`] with the database's services applied over the file's (see [`ServiceSource`]),
/// then validated together: a database service is held to every rule a file service is.
pub fn parse_with_db(text: &str, origin: &str, db: &[DbService]) -> Result<Config, ConfigError> {
    let mut raw = raw::from_yaml(text, origin)?;
    let services = raw.services.get_or_insert_with(Vec::new);
    for d in db {
        let label = format!("{origin} (database service {:?})", d.name);
        let mut service = raw::service_from_yaml(&d.spec, &label)?;
        service.name = Some(d.name.clone());
        match services
            .iter_mut()
            .find(|s| s.name.as_deref() == Some(d.name.as_str()))
        {
            Some(slot) => *slot = service,
            None => services.push(service),
        }
    }
    let mut config = validate::validate(raw, origin)?;
    for s in &mut config.services {
        if db.iter().any(|d| d.name == s.name) {
            s.source = ServiceSource::Db;
        }
    }
    Ok(config)
}

/// Checks one service block (the admin API's input) in the file's syntax, alone: `Err` names
/// the field. Cross-service rules (unique names) are checked when it is applied.
pub fn check_service_spec(spec: &str, name: &str) -> Result<(), ConfigError> {
    let label = format!("database service {name:?}");
    raw::service_from_yaml(spec, &label).map(|_| ())
}

/// Parses and validates YAML `text`; `origin` names it in error messages (usually the path).
/// No file I/O except reading `!file+` header values and checking that `staticroot` is a
/// directory (with `servestatic: true`).
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let raw = raw::from_yaml(text, origin)?;
    validate::validate(raw, origin)
}

/// The YAML behind `--dev`; `{origin}` is replaced with the demo upstream's address. It goes
/// through the same validation as a user's file.
const DEV_YAML: &str = r#"
listenaddr: "127.0.0.1:8081"
insecure: true
dbbackend: sqlite
authenticator:
  network: regtest
  dev:
    listenaddr: "127.0.0.1:8089"
services:
  - name: demo-llm
    hostregexp: '.*'
    pathregexp: '^/v1/chat/completions$'
    address: "{origin}"
    protocol: http
    authscheme: l402
    metering: openai
    meter:
      bundletokens: 10000
      estimatedtokens: 256
      defaultmodel: demo-small
      models:
        demo-small: {inputmsatpertoken: 1, outputmsatpertoken: 3}
        demo-large: {inputmsatpertoken: 10, outputmsatpertoken: 30}
  - name: demo
    hostregexp: '.*'
    address: "{origin}"
    protocol: http
    price: 10
    auth: "on"
"#;

/// The `--dev` config: plaintext listener on 127.0.0.1:8081, the embedded dev Lightning backend
/// on 127.0.0.1:8089 (regtest), a metered `demo-llm` (`POST /v1/chat/completions`, the built-in
/// meter: bundles of 10,000 tokens, 20 sats of `demo-small`) and `demo` (every other path, 10
/// sats), both proxying to `origin`.
/// The database lives in `basedir`.
pub fn dev(basedir: &Path, origin: SocketAddr) -> Config {
    let text = DEV_YAML.replace("{origin}", &origin.to_string());
    // Only `origin` is substituted and a SocketAddr always renders as a valid host:port, so the
    // embedded config cannot fail validation (a unit test pins this).
    let config = parse(&text, "<dev config>").expect("embedded dev config validates");
    dev_paths(config, basedir)
}

/// [`dev`] with the database's services applied (see [`parse_with_db`]); `Err` when one of
/// them does not validate.
pub fn dev_with_db(
    basedir: &Path,
    origin: SocketAddr,
    db: &[DbService],
) -> Result<Config, ConfigError> {
    let text = DEV_YAML.replace("{origin}", &origin.to_string());
    Ok(dev_paths(
        parse_with_db(&text, "<dev config>", db)?,
        basedir,
    ))
}

/// [`load`] with the database's services applied (see [`parse_with_db`]).
pub fn load_with_db(path: &Path, db: &[DbService]) -> Result<Config, ConfigError> {
    let path = values::expand_tilde(&path.to_string_lossy());
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    parse_with_db(&text, &path.display().to_string(), db)
}

fn dev_paths(mut config: Config, basedir: &Path) -> Config {
    config.basedir = basedir.to_path_buf();
    config.db = Db::Sqlite {
        path: basedir.join("aperture.db"),
        skip_migrations: false,
    };
    // The "dbbackend" and basedir warnings do not apply to the generated config.
    config.warnings.clear();
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_config_validates() {
        let origin: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        let c = dev(Path::new("/tmp/ap"), origin);
        assert_eq!(c.listen_addr.to_string(), "127.0.0.1:8081");
        assert!(c.insecure);
        assert_eq!(c.authenticator.network, Network::Regtest);
        assert_eq!(
            c.authenticator.backend,
            Backend::Dev {
                listen_addr: "127.0.0.1:8089".parse().unwrap()
            }
        );
        assert_eq!(c.services.len(), 2);
        assert!(c.services[0].meter.is_some());
        let s = &c.services[1];
        assert_eq!(
            (s.name.as_str(), s.address.as_str(), s.price),
            ("demo", "127.0.0.1:9999", 10)
        );
        assert_eq!((s.protocol, s.auth), (Protocol::Http, Auth::On));
        assert!(s.host_regexp.is_match("anything:8081"));
        assert_eq!(
            c.db,
            Db::Sqlite {
                path: "/tmp/ap/aperture.db".into(),
                skip_migrations: false
            }
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn postgres_dsn() {
        let p = Postgres {
            host: "h".into(),
            port: 5432,
            user: "u".into(),
            password: "p".into(),
            dbname: "d".into(),
            max_open_connections: 25,
            require_ssl: true,
            skip_migrations: false,
            tls_cert_path: None,
            tls_verify: PgVerify::Full,
        };
        assert_eq!(p.dsn(), "postgres://u:p@h:5432/d?sslmode=require");
        let shown = format!("{p:?}");
        assert!(
            shown.contains("<redacted>") && !shown.contains("\"p\""),
            "{shown}"
        );
    }

    #[test]
    fn exit_code_is_64() {
        let e = parse("", "x").unwrap_err();
        assert_eq!(e.exit_code(), 64);
    }
}
