//! Top-level validation: raw mirror → typed [`Config`], applying Go aperture's defaults and the
//! checks of `config-reference.md` §3/§4. Services are validated in `service.rs`. Errors name the
//! key and say how to fix it; warnings go into `Config::warnings`, never to stdout.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::raw::{RawAuthenticator, RawConfig};
use super::values::{expand_tilde, parse_duration, parse_go_duration, parse_listen_addr, IpNet};
use super::{
    service, Authenticator, Autocert, Backend, Config, ConfigError, Db, Mpp, Network, PgVerify,
    Postgres, Sessions,
};
use crate::l402::{ChallengeShape, UpstreamAuthorization};

/// Validation context: where errors point, and the warnings collected so far.
pub(crate) struct Ctx<'a> {
    pub origin: &'a str,
    pub warnings: Vec<String>,
}

impl Ctx<'_> {
    pub fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.to_owned(),
            key: key.into(),
            message: message.into(),
        }
    }

    pub fn warn(&mut self, message: impl Into<String>) {
        self.warnings
            .push(format!("{}: {}", self.origin, message.into()));
    }

    /// A Go duration for `key`, or `default` when unset.
    pub fn duration(
        &self,
        key: &str,
        v: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match v.map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(default),
            Some(s) => parse_duration(s).map_err(|m| self.invalid(key, m)),
        }
    }
}

/// Non-empty, trimmed string, or `None`.
pub(crate) fn nonempty(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|s| !s.is_empty())
}

pub(crate) fn validate(mut raw: RawConfig, origin: &str) -> Result<Config, ConfigError> {
    let mut cx = Ctx {
        origin,
        warnings: Vec::new(),
    };
    let listen_addr = match nonempty(raw.listenaddr.as_deref()) {
        None => return Err(cx.invalid(
            "listenaddr",
            "is required: set the address the proxy listens on, e.g. listenaddr: \"0.0.0.0:8081\"",
        )),
        Some(s) => parse_listen_addr(s).map_err(|m| cx.invalid("listenaddr", m))?,
    };
    check_go_only(&raw, &mut cx)?;
    let basedir_set = nonempty(raw.basedir.as_deref()).map(expand_tilde);
    let [idle_timeout, read_timeout, write_timeout, upstream_timeout] = timeouts(&raw, &cx)?;
    let (max_header_bytes, max_body_bytes) = limits(&raw, &cx)?;
    let upstream_idle_timeout = cx.duration(
        "upstreamidletimeout",
        raw.upstreamidletimeout.as_deref(),
        Duration::from_secs(90),
    )?;
    let upstream_max_idle = upstream_max_idle(&raw, &cx)?;
    let http2 = super::http2::http2(raw.http2.as_ref(), idle_timeout, &cx)?;
    let challenge_shape = challenge_shape(&raw, &mut cx)?;
    let rate_limit_steering = match nonempty(raw.ratelimitsteering.as_deref()) {
        None | Some("ip") => true,
        Some("off") => false,
        Some(other) => {
            return Err(cx.invalid(
                "ratelimitsteering",
                format!("unknown value {other:?}: use ip (steer connections to cores by client address, the default) or off (behind a load balancer that owns every connection)"),
            ))
        }
    };
    let upstream_authorization = match nonempty(raw.upstreamauthorization.as_deref()) {
        None => UpstreamAuthorization::default(),
        Some(s) => s
            .parse()
            .map_err(|m| cx.invalid("upstreamauthorization", m))?,
    };
    let rate_limit_backend = super::redis::backend(&raw, &mut cx)?;
    let blocklist = blocklist(&raw, &cx)?;
    let trusted_proxies = nets(
        "trustedproxies",
        raw.trustedproxies.as_deref().unwrap_or_default(),
        &cx,
    )?;
    let proxy_protocol = raw.proxyprotocol.unwrap_or(false);
    if proxy_protocol && trusted_proxies.is_empty() {
        return Err(cx.invalid(
            "proxyprotocol",
            "needs `trustedproxies` (the load balancers whose connections carry a PROXY header)",
        ));
    }
    let server_name = nonempty(raw.servername.as_deref()).map(str::to_owned);
    let autocert = autocert(&raw, server_name.as_deref(), listen_addr, &mut cx)?;
    let logging =
        super::logging::logging(raw.debuglevel.as_deref(), raw.logging.as_ref(), &mut cx)?;
    let db = db(&raw, basedir_set.is_some(), &mut cx)?;
    let prometheus = prometheus(&raw, &cx)?;
    let basedir = basedir_set.unwrap_or_else(Config::default_basedir);
    let admin = super::admin::admin(&raw, &basedir, prometheus, &mut cx)?;
    let static_root = static_root(&raw, &cx)?;
    let listen_text = nonempty(raw.listenaddr.as_deref())
        .unwrap_or_default()
        .to_owned();
    let authenticator =
        authenticator(raw.authenticator.unwrap_or_default(), &listen_text, &mut cx)?;
    let challenge_rate_limits =
        service::challenge_rate_limits(raw.challengeratelimits.take(), &mut cx)?;
    let mut services = service::services(raw.services.unwrap_or_default(), &mut cx)?;
    service::resolve_schemes(&mut services, authenticator.mpp.is_some(), &mut cx);
    Ok(Config {
        listen_addr,
        basedir,
        insecure: raw.insecure.unwrap_or(false),
        server_name,
        autocert,
        strict_verify: raw.strictverify.unwrap_or(false),
        debug_level: nonempty(raw.debuglevel.as_deref())
            .unwrap_or("info")
            .to_owned(),
        logging,
        idle_timeout,
        read_timeout,
        write_timeout,
        max_header_bytes,
        max_body_bytes,
        upstream_timeout,
        upstream_idle_timeout,
        upstream_max_idle,
        http2,
        challenge_shape,
        upstream_authorization,
        rate_limit_steering,
        challenge_rate_limits,
        rate_limit_backend,
        blocklist,
        trusted_proxies,
        proxy_protocol,
        authenticator,
        db,
        prometheus,
        admin,
        static_root,
        services,
        warnings: cx.warnings,
    })
}

/// `autocert` and our `autocert*` keys. `None` when off (or ignored under `insecure`, warned).
fn autocert(
    raw: &RawConfig,
    server_name: Option<&str>,
    listen_addr: SocketAddr,
    cx: &mut Ctx<'_>,
) -> Result<Option<Autocert>, ConfigError> {
    let ours = [
        ("autocertdirectory", raw.autocertdirectory.as_deref()),
        ("autocertdirectoryca", raw.autocertdirectoryca.as_deref()),
        ("autocerthttplisten", raw.autocerthttplisten.as_deref()),
    ];
    let on = raw.autocert.unwrap_or(false);
    if on && raw.insecure.unwrap_or(false) {
        cx.warn("autocert: ignored: `insecure: true` serves plaintext, so there is no certificate to get; remove one of the two");
    }
    if !on || raw.insecure.unwrap_or(false) {
        for (key, value) in ours {
            if nonempty(value).is_some() {
                cx.warn(format!(
                    "{key}: has no effect without `autocert: true` on a TLS listener; ignored"
                ));
            }
        }
        return Ok(None);
    }
    let Some(domain) = server_name else {
        return Err(cx.invalid(
            "autocert",
            "needs `servername` (the public DNS name to get a Let's Encrypt certificate for)",
        ));
    };
    let is_dns_name = domain.parse::<std::net::IpAddr>().is_err()
        && !domain.contains('*')
        && rustls::pki_types::DnsName::try_from(domain).is_ok();
    if !is_dns_name {
        return Err(cx.invalid(
            "servername",
            format!("{domain:?} is not a DNS name; autocert gets certificates for a public host name such as \"api.example.com\" (no IP address, port or wildcard)"),
        ));
    }
    let directory = nonempty(raw.autocertdirectory.as_deref())
        .unwrap_or(super::LETS_ENCRYPT_DIRECTORY)
        .to_owned();
    if !directory.starts_with("https://") {
        return Err(cx.invalid(
            "autocertdirectory",
            format!("{directory:?} is not an https:// URL; ACME directories are served over HTTPS (default {})", super::LETS_ENCRYPT_DIRECTORY),
        ));
    }
    let directory_ca = nonempty(raw.autocertdirectoryca.as_deref()).map(expand_tilde);
    let http_listen = match nonempty(raw.autocerthttplisten.as_deref()) {
        None => None,
        Some(s) => {
            let addr = parse_listen_addr(s).map_err(|m| cx.invalid("autocerthttplisten", m))?;
            if addr.port() == listen_addr.port() {
                return Err(cx.invalid(
                    "autocerthttplisten",
                    format!("port {} is the proxy's own (listenaddr); HTTP-01 needs its own plaintext port, normally \":80\"", addr.port()),
                ));
            }
            Some(addr)
        }
    };
    if directory.contains(".api.letsencrypt.org/")
        && listen_addr.port() != 443
        && http_listen.is_none()
    {
        cx.warn(format!(
            "autocert: Let's Encrypt validates TLS-ALPN-01 on port 443 only and listenaddr is on port {}: forward port 443 to it, or set autocerthttplisten: \":80\" to answer HTTP-01",
            listen_addr.port()
        ));
    }
    Ok(Some(Autocert {
        domain: domain.to_owned(),
        directory,
        directory_ca,
        http_listen,
    }))
}

/// `servestatic` and `staticroot`: with `servestatic: true`, the canonical `staticroot`, which
/// must be an existing directory (Go would serve its working directory for an empty one).
/// A relative `staticroot` is relative to the working directory, as in Go aperture.
fn static_root(raw: &RawConfig, cx: &Ctx<'_>) -> Result<Option<std::path::PathBuf>, ConfigError> {
    if !raw.servestatic.unwrap_or(false) {
        return Ok(None);
    }
    let Some(root) = nonempty(raw.staticroot.as_deref()) else {
        return Err(cx.invalid(
            "staticroot",
            "is required with `servestatic: true`: set it to the directory to serve, e.g. staticroot: \"/var/www/aperture\"",
        ));
    };
    let path = expand_tilde(root);
    let fix = "create it, point staticroot at your site's directory, or set servestatic: false";
    let meta = std::fs::metadata(&path).map_err(|e| {
        cx.invalid(
            "staticroot",
            format!("{}: {e}\n  fix: {fix}", path.display()),
        )
    })?;
    if !meta.is_dir() {
        return Err(cx.invalid(
            "staticroot",
            format!("{} is not a directory\n  fix: {fix}", path.display()),
        ));
    }
    std::fs::canonicalize(&path)
        .map(Some)
        .map_err(|e| cx.invalid("staticroot", format!("{}: {e}", path.display())))
}

/// idle, read, write (0 = none, as in Go) and upstream (> 0) timeouts.
fn timeouts(raw: &RawConfig, cx: &Ctx<'_>) -> Result<[Duration; 4], ConfigError> {
    let secs = Duration::from_secs;
    let upstream = cx.duration("upstreamtimeout", raw.upstreamtimeout.as_deref(), secs(30))?;
    if upstream.is_zero() {
        return Err(cx.invalid("upstreamtimeout", "must be greater than 0 (e.g. 30s)"));
    }
    Ok([
        cx.duration("idletimeout", raw.idletimeout.as_deref(), secs(120))?,
        cx.duration("readtimeout", raw.readtimeout.as_deref(), secs(15))?,
        cx.duration("writetimeout", raw.writetimeout.as_deref(), secs(30))?,
        upstream,
    ])
}

fn upstream_max_idle(raw: &RawConfig, cx: &Ctx<'_>) -> Result<usize, ConfigError> {
    match raw.upstreammaxidle {
        None => Ok(1024),
        Some(n) if n <= 65_536 => Ok(n as usize),
        Some(n) => Err(cx.invalid(
            "upstreammaxidle",
            format!("{n} is out of range; use 0 to 65536 idle connections per core (default 1024)"),
        )),
    }
}

fn limits(raw: &RawConfig, cx: &Ctx<'_>) -> Result<(usize, u64), ConfigError> {
    let header = match raw.maxheaderbytes {
        None => 65536,
        Some(n) if (1024..=u64::from(u32::MAX)).contains(&n) => n as usize,
        Some(n) => {
            return Err(cx.invalid(
                "maxheaderbytes",
                format!("{n} is out of range; use 1024 or more (default 65536)"),
            ))
        }
    };
    Ok((header, raw.maxbodybytes.unwrap_or(67_108_864)))
}

fn challenge_shape(raw: &RawConfig, cx: &mut Ctx<'_>) -> Result<ChallengeShape, ConfigError> {
    let shape = match nonempty(raw.challengeshape.as_deref()) {
        None => ChallengeShape::default(),
        Some(s) => s
            .parse::<ChallengeShape>()
            .map_err(|m| cx.invalid("challengeshape", m))?,
    };
    if shape == ChallengeShape::SpecStrict {
        cx.warn("challengeshape: spec-strict sends no macaroon= parameter; most deployed L402 clients (lnget, Loop, the Go client, pyl402) cannot pay it");
    }
    Ok(shape)
}

fn blocklist(raw: &RawConfig, cx: &Ctx<'_>) -> Result<Vec<IpNet>, ConfigError> {
    nets(
        "blocklist",
        raw.blocklist.as_deref().unwrap_or_default(),
        cx,
    )
}

fn nets(key: &str, entries: &[String], cx: &Ctx<'_>) -> Result<Vec<IpNet>, ConfigError> {
    entries
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<IpNet>()
                .map_err(|m| cx.invalid(format!("{key}[{i}]"), m))
        })
        .collect()
}

fn prometheus(raw: &RawConfig, cx: &Ctx<'_>) -> Result<Option<SocketAddr>, ConfigError> {
    match &raw.prometheus {
        Some(p) if p.enabled.unwrap_or(false) => {
            let addr = nonempty(p.listenaddr.as_deref()).unwrap_or("localhost:9000");
            Ok(Some(
                parse_listen_addr(addr).map_err(|m| cx.invalid("prometheus.listenaddr", m))?,
            ))
        }
        _ => Ok(None),
    }
}

/// Go aperture's own checks on keys we parse but do not use, and warnings for features we accept
/// for compatibility but do not implement (so nobody believes they are on).
fn check_go_only(raw: &RawConfig, cx: &mut Ctx<'_>) -> Result<(), ConfigError> {
    if let Some(n) = raw.invoicebatchsize.filter(|n| *n <= 0) {
        return Err(cx.invalid(
            "invoicebatchsize",
            format!("{n} must be greater than 0 (default 100000)"),
        ));
    }
    if let Some(n) = raw.invoicebatchsize.filter(|n| *n != 100_000) {
        cx.warn(format!("invoicebatchsize: {n} has no effect here: no invoices are loaded at start-up (strictverify looks each payment hash up when it is first used); ignored"));
    }
    if let Some(path) = nonempty(raw.configfile.as_deref()) {
        cx.warn(format!("configfile: {path:?} has no effect inside a config file (this file is the one loaded); pass --config PATH to choose the file; ignored"));
    }
    let ping = signed_duration(cx, "wspinginterval", raw.wspinginterval.as_deref(), 30)?;
    let pong = signed_duration(cx, "wspongwait", raw.wspongwait.as_deref(), 15)?;
    if ping < 0 || pong < 0 {
        return Err(cx.invalid("wspinginterval/wspongwait", "must be 0 or more"));
    }
    if ping > 0 && pong >= ping {
        return Err(cx.invalid(
            "wspongwait",
            "must be shorter than wspinginterval when pings are on",
        ));
    }
    match raw.profile.unwrap_or(0) {
        0 => {}
        p if (1024..=65535).contains(&p) => cx.warn("profile: pprof is not supported; ignored"),
        p => {
            return Err(cx.invalid(
                "profile",
                format!("{p} is not a port in 1024..65535 (0 disables)"),
            ))
        }
    }
    if raw.tor.as_ref().is_some_and(|t| t.v3.unwrap_or(false)) {
        cx.warn("tor.v3: onion services are not supported yet; the tor section (control, listenport, virtualport) is ignored");
    }
    if let Some(h) = &raw.hashmail {
        signed_duration(cx, "hashmail.messagerate", h.messagerate.as_deref(), 0)?;
        signed_duration(cx, "hashmail.staletimeout", h.staletimeout.as_deref(), 0)?;
        if h.enabled.unwrap_or(false) {
            cx.warn("hashmail.enabled: hashmail is not supported yet; the hashmail section (messagerate, messageburstallowance, staletimeout) and its WebSocket keepalive (wspinginterval, wspongwait) are ignored");
        }
    }
    Ok(())
}

fn signed_duration(
    cx: &Ctx<'_>,
    key: &str,
    v: Option<&str>,
    default_s: i128,
) -> Result<i128, ConfigError> {
    match nonempty(v) {
        None => Ok(default_s * 1_000_000_000),
        Some(s) => parse_go_duration(s).map_err(|m| cx.invalid(key, m)),
    }
}

fn network(cx: &Ctx<'_>, v: Option<&str>) -> Result<Network, ConfigError> {
    Ok(match nonempty(v).map(str::to_ascii_lowercase).as_deref() {
        None | Some("mainnet") => Network::Mainnet,
        Some("testnet") => Network::Testnet,
        Some("regtest") => Network::Regtest,
        Some("simnet") => Network::Simnet,
        Some("signet") => Network::Signet,
        Some(other) => {
            return Err(cx.invalid(
                "authenticator.network",
                format!(
                    "{other:?} is not a network; use mainnet, testnet, regtest, simnet or signet"
                ),
            ))
        }
    })
}

fn authenticator(
    a: RawAuthenticator,
    listen_addr: &str,
    cx: &mut Ctx<'_>,
) -> Result<Authenticator, ConfigError> {
    let network = network(cx, a.network.as_deref())?;
    let disable = a.disable.unwrap_or(false);
    let set: Vec<&str> = [
        ("lndhost", nonempty(a.lndhost.as_deref()).is_some()),
        ("passphrase", nonempty(a.passphrase.as_deref()).is_some()),
        (
            "wavelengthgateway",
            nonempty(a.wavelengthgateway.as_deref()).is_some(),
        ),
        ("dev", a.dev.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, on)| on.then_some(k))
    .collect();
    let mpp = mpp(&a, listen_addr, cx)?;
    let lnd_files = [("tlspath", &a.tlspath), ("macdir", &a.macdir)]
        .into_iter()
        .filter_map(|(k, v)| nonempty(v.as_deref()).map(|_| k))
        .collect::<Vec<_>>();
    if !lnd_files.is_empty() && !set.contains(&"lndhost") {
        cx.warn(format!(
            "authenticator.{} only apply to an lnd backend (lndhost); ignored",
            lnd_files.join("/")
        ));
    }
    if disable {
        if !set.is_empty() {
            cx.warn(format!(
                "authenticator.disable is true: auth is off and authenticator.{} is ignored",
                set.join("/")
            ));
        }
        return Ok(Authenticator {
            network,
            disable,
            backend: Backend::None,
            mpp,
        });
    }
    let backend = match set.as_slice() {
        [] => return Err(cx.invalid("authenticator", "no invoice backend: set authenticator.lndhost (with tlspath and macdir) for lnd, or `dev: {}` for the embedded dev backend, or `disable: true` to turn auth off")),
        ["lndhost"] => lnd(&a, network),
        ["dev"] => {
            let addr = nonempty(a.dev.as_ref().and_then(|d| d.listenaddr.as_deref())).unwrap_or("127.0.0.1:8089");
            Backend::Dev { listen_addr: parse_listen_addr(addr).map_err(|m| cx.invalid("authenticator.dev.listenaddr", m))? }
        }
        [one @ ("passphrase" | "wavelengthgateway")] => return Err(unsupported_backend(cx, one)),
        many => return Err(cx.invalid("authenticator", format!("exactly one invoice backend may be set, but found {}; keep one", many.join(", ")))),
    };
    Ok(Authenticator {
        network,
        disable,
        backend,
        mpp,
    })
}

/// `enablempp` and its companions: the realm and the session intent (`enablesessions`, its
/// deposit multiplier and idle timeout; Go's defaults 20 and 300 s, a value ≤ 0 meaning the
/// default as in Go).
fn mpp(
    a: &RawAuthenticator,
    listen_addr: &str,
    cx: &mut Ctx<'_>,
) -> Result<Option<Mpp>, ConfigError> {
    let sessions_on = a.enablesessions.unwrap_or(false);
    if !a.enablempp.unwrap_or(false) {
        if sessions_on {
            return Err(cx.invalid(
                "authenticator.enablesessions",
                "sessions are an intent of the Payment scheme: set authenticator.enablempp: true as well, or remove enablesessions",
            ));
        }
        if nonempty(a.mpprealm.as_deref()).is_some() {
            cx.warn("authenticator.mpprealm is set but enablempp is off; ignored");
        }
        if a.sessiondepositmultiplier.is_some() || a.sessionidletimeout.is_some() {
            cx.warn("authenticator.sessiondepositmultiplier/sessionidletimeout are set but enablempp and enablesessions are off; ignored");
        }
        return Ok(None);
    }
    let realm = nonempty(a.mpprealm.as_deref()).unwrap_or(listen_addr);
    let sessions = if sessions_on {
        let positive =
            |v: Option<i64>, default: u64| v.filter(|v| *v > 0).map_or(default, |v| v as u64);
        let deposit_multiplier = positive(a.sessiondepositmultiplier, 20);
        let idle_timeout_secs = positive(a.sessionidletimeout, 300);
        if deposit_multiplier > 1_000_000 {
            return Err(cx.invalid(
                "authenticator.sessiondepositmultiplier",
                format!("{deposit_multiplier} is not a sane deposit (unit price × N); use at most 1000000"),
            ));
        }
        if idle_timeout_secs > 30 * 86_400 {
            return Err(cx.invalid(
                "authenticator.sessionidletimeout",
                format!("{idle_timeout_secs} s is longer than 30 days; a session's unspent deposit waits that long for its refund"),
            ));
        }
        Some(Sessions {
            deposit_multiplier,
            idle_timeout_secs,
        })
    } else {
        if a.sessiondepositmultiplier.is_some() || a.sessionidletimeout.is_some() {
            cx.warn("authenticator.sessiondepositmultiplier/sessionidletimeout only apply with enablesessions: true; ignored");
        }
        None
    };
    Ok(Some(Mpp {
        realm: realm.to_owned(),
        sessions,
    }))
}

fn lnd(a: &RawAuthenticator, network: Network) -> Backend {
    // lnd's own default locations, so a local lnd works with just `lndhost`.
    let net_dir = format!("{network:?}").to_ascii_lowercase();
    Backend::Lnd {
        host: nonempty(a.lndhost.as_deref())
            .unwrap_or_default()
            .to_owned(),
        tls_path: expand_tilde(nonempty(a.tlspath.as_deref()).unwrap_or("~/.lnd/tls.cert")),
        mac_dir: match nonempty(a.macdir.as_deref()) {
            Some(d) => expand_tilde(d),
            None => expand_tilde("~/.lnd/data/chain/bitcoin").join(net_dir),
        },
    }
}

fn unsupported_backend(cx: &Ctx<'_>, key: &str) -> ConfigError {
    let what = if key == "passphrase" {
        "lnd over LNC (passphrase, mailboxaddress, devserver)"
    } else {
        "the Wavelength invoice gateway (wavelengthgateway, wavelengthmacaroonpath)"
    };
    ConfigError::Unsupported {
        origin: cx.origin.to_owned(),
        key: format!("authenticator.{key}"),
        message: format!("{what} is not supported yet; connect to lnd directly with authenticator.lndhost, tlspath and macdir"),
    }
}

fn db(raw: &RawConfig, basedir_set: bool, cx: &mut Ctx<'_>) -> Result<Db, ConfigError> {
    let backend = match nonempty(raw.dbbackend.as_deref()).map(str::to_ascii_lowercase) {
        Some(b) => b,
        None => {
            cx.warn("dbbackend is not set: using sqlite. Go aperture would have used etcd here (its code default, despite its sample's comment); set `dbbackend: sqlite` to silence this");
            "sqlite".to_owned()
        }
    };
    match backend.as_str() {
        "sqlite" => Ok(sqlite(raw, basedir_set, cx)),
        "postgres" => postgres(raw, cx),
        "etcd" => {
            let e = raw.etcd.as_ref();
            let host = nonempty(e.and_then(|e| e.host.as_deref())).ok_or_else(|| {
                cx.invalid(
                    "etcd.host",
                    "dbbackend is etcd but etcd.host (host:port) is not set",
                )
            })?;
            Ok(Db::Etcd {
                host: host.to_owned(),
                user: e.and_then(|e| e.user.clone()).unwrap_or_default(),
                password: e.and_then(|e| e.password.clone()).unwrap_or_default(),
            })
        }
        other => Err(cx.invalid(
            "dbbackend",
            format!("{other:?} is not a database backend; use sqlite, postgres or etcd"),
        )),
    }
}

fn sqlite(raw: &RawConfig, basedir_set: bool, cx: &mut Ctx<'_>) -> Db {
    let s = raw.sqlite.as_ref();
    let path = match nonempty(s.and_then(|s| s.databasefilename.as_deref())) {
        Some(p) => expand_tilde(p),
        None => {
            if basedir_set {
                cx.warn("sqlite.databasefilename is not set: the database is ~/.aperture/aperture.db (Go aperture's default), not inside basedir; set it explicitly to move it");
            }
            expand_tilde("~/.aperture/aperture.db")
        }
    };
    let skip_migrations = s.and_then(|s| s.skipmigrations).unwrap_or(false);
    Db::Sqlite {
        path,
        skip_migrations,
    }
}

fn postgres(raw: &RawConfig, cx: &Ctx<'_>) -> Result<Db, ConfigError> {
    let p = raw.postgres.as_ref().ok_or_else(|| {
        cx.invalid(
            "postgres",
            "dbbackend is postgres but the `postgres:` section is missing",
        )
    })?;
    let max = p.maxopenconnections.unwrap_or(25);
    let max = u32::try_from(max).ok().filter(|m| *m > 0).ok_or_else(|| {
        cx.invalid(
            "postgres.maxopenconnections",
            format!("{max} must be at least 1 (default 25)"),
        )
    })?;
    let (require_ssl, tls_cert_path, tls_verify) = postgres_tls(p, cx)?;
    Ok(Db::Postgres(Postgres {
        host: nonempty(p.host.as_deref())
            .unwrap_or("localhost")
            .to_owned(),
        port: p.port.unwrap_or(5432),
        user: p.user.clone().unwrap_or_default(),
        password: p.password.clone().unwrap_or_default(),
        dbname: p.dbname.clone().unwrap_or_default(),
        max_open_connections: max,
        require_ssl,
        skip_migrations: p.skipmigrations.unwrap_or(false),
        tls_cert_path,
        tls_verify,
    }))
}

/// `postgres.tlscertpath` and `postgres.tlsverify`: they only mean something with
/// `requiressl: true`, so either without it is an error rather than a silent no-op.
fn postgres_tls(
    p: &super::raw::RawPostgres,
    cx: &Ctx<'_>,
) -> Result<(bool, Option<PathBuf>, PgVerify), ConfigError> {
    let require_ssl = p.requiressl.unwrap_or(false);
    let cert = nonempty(p.tlscertpath.as_deref()).map(expand_tilde);
    let verify = match nonempty(p.tlsverify.as_deref()) {
        None | Some("full") => PgVerify::Full,
        Some("ca") => PgVerify::Ca,
        Some(other) => {
            return Err(cx.invalid(
                "postgres.tlsverify",
                format!(
                    "{other:?} is not a verification mode: use `full` (the certificate's chain \
                     and host name, the default; libpq's verify-full) or `ca` (the chain only; \
                     libpq's verify-ca)"
                ),
            ))
        }
    };
    if !require_ssl {
        for (key, set) in [
            ("postgres.tlscertpath", cert.is_some()),
            ("postgres.tlsverify", p.tlsverify.is_some()),
        ] {
            if set {
                return Err(cx.invalid(
                    key,
                    "only applies over TLS: set `requiressl: true` too (or remove this key)",
                ));
            }
        }
    }
    Ok((require_ssl, cert, verify))
}

#[cfg(test)]
pub(crate) fn addr(s: &str) -> SocketAddr {
    parse_listen_addr(s).unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    const MIN: &str =
        "listenaddr: \"127.0.0.1:8081\"\ndbbackend: sqlite\nauthenticator:\n  dev: {}\n";

    fn err(extra: &str) -> String {
        parse(&format!("{MIN}{extra}"), "t")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn minimal_defaults() {
        let c = parse(MIN, "t").unwrap();
        assert_eq!(c.listen_addr, addr("127.0.0.1:8081"));
        assert_eq!(c.idle_timeout, Duration::from_secs(120));
        assert_eq!(c.read_timeout, Duration::from_secs(15));
        assert_eq!(c.write_timeout, Duration::from_secs(30));
        assert_eq!(c.upstream_timeout, Duration::from_secs(30));
        assert_eq!((c.max_header_bytes, c.max_body_bytes), (65536, 67_108_864));
        assert_eq!(c.challenge_shape, ChallengeShape::Superset);
        assert_eq!(
            c.authenticator.backend,
            Backend::Dev {
                listen_addr: addr("127.0.0.1:8089")
            }
        );
        assert_eq!(c.debug_level, "info");
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("no services"), "{:?}", c.warnings);
    }

    #[test]
    fn listenaddr_required() {
        let e = parse("authenticator:\n  dev: {}\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listenaddr") && e.contains("required"), "{e}");
    }

    #[test]
    fn backends() {
        let e = parse("listenaddr: \":1\"\n", "t").unwrap_err().to_string();
        assert!(e.contains("no invoice backend"), "{e}");
        assert!(err("  lndhost: \"localhost:10009\"\n").contains("exactly one"));
        let e = parse(
            "listenaddr: \":1\"\nauthenticator:\n  passphrase: x y z\n",
            "t",
        )
        .unwrap_err();
        assert!(
            matches!(e, ConfigError::Unsupported { .. })
                && e.to_string().contains("not supported yet"),
            "{e}"
        );
        let c = parse("listenaddr: \":1\"\ndbbackend: sqlite\nauthenticator:\n  network: testnet\n  lndhost: \"localhost:10009\"\n", "t").unwrap();
        match c.authenticator.backend {
            Backend::Lnd { host, mac_dir, .. } => {
                assert_eq!(host, "localhost:10009");
                assert!(
                    mac_dir.ends_with("data/chain/bitcoin/testnet"),
                    "{mac_dir:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        let c = parse(
            "listenaddr: \":1\"\ndbbackend: sqlite\nauthenticator:\n  disable: true\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.authenticator.backend, Backend::None);
    }

    #[test]
    fn top_level_checks() {
        assert!(err("blocklist: [\"1.2.3.4\", \"nope\"]\n").contains("blocklist[1]"));
        assert!(err("challengeshape: weird\n").contains("spec-strict"));
        assert!(err("idletimeout: 10\n").contains("without a unit"));
        assert!(err("autocert: true\n").contains("servername"));
        assert!(err("invoicebatchsize: 0\n").contains("invoicebatchsize"));
        assert!(err("wspinginterval: 10s\nwspongwait: 20s\n").contains("wspongwait"));
        assert!(err("dbbackend: mysql\n").contains("dbbackend"));
        let c = parse(&format!("{MIN}blocklist: [\"10.0.0.0/8\"]\nchallengeshape: spec-strict\nprometheus:\n  enabled: true\n"), "t").unwrap();
        assert_eq!(c.blocklist.len(), 1);
        assert_eq!(c.prometheus, Some(addr("127.0.0.1:9000")));
        assert!(c.warnings.iter().any(|w| w.contains("spec-strict")));
    }

    #[test]
    fn dbbackend_default_warns() {
        let c = parse("listenaddr: \":1\"\nauthenticator:\n  dev: {}\n", "t").unwrap();
        assert!(matches!(c.db, Db::Sqlite { .. }));
        assert!(
            c.warnings.iter().any(|w| w.contains("etcd")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn postgres_section() {
        let c = parse("listenaddr: \":1\"\ndbbackend: postgres\nauthenticator:\n  dev: {}\npostgres:\n  host: db\n  requiressl: true\n", "t").unwrap();
        match c.db {
            Db::Postgres(p) => {
                assert!(p.require_ssl && p.max_open_connections == 25 && p.host == "db")
            }
            other => panic!("{other:?}"),
        }
        let pg = |keys: &str| {
            let yaml = format!("listenaddr: \":1\"\ndbbackend: postgres\nauthenticator:\n  dev: {{}}\npostgres:\n  host: db\n{keys}");
            parse(&yaml, "t").map(|c| match c.db {
                Db::Postgres(p) => p,
                other => panic!("{other:?}"),
            })
        };
        let p = pg("  requiressl: true\n").unwrap();
        assert_eq!((p.tls_cert_path, p.tls_verify), (None, PgVerify::Full));
        let p = pg("  requiressl: true\n  tlscertpath: /etc/ca.pem\n  tlsverify: ca\n").unwrap();
        assert_eq!(p.tls_cert_path, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(p.tls_verify, PgVerify::Ca);
        let e = pg("  tlscertpath: /etc/ca.pem\n").unwrap_err().to_string();
        assert!(
            e.contains("postgres.tlscertpath") && e.contains("requiressl: true"),
            "{e}"
        );
        let e = pg("  requiressl: false\n  tlsverify: full\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("postgres.tlsverify"), "{e}");
        let e = pg("  requiressl: true\n  tlsverify: none\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("postgres.tlsverify") && e.contains("`full`"),
            "{e}"
        );
    }

    #[test]
    fn dynamic_price_settings() {
        let svc = |dp: &str| {
            format!(
                "services:\n  - name: s\n    hostregexp: '^x$'\n    address: \"127.0.0.1:1\"\n    \
                 protocol: http\n    dynamicprice:\n{dp}"
            )
        };
        let ok = parse(
            &format!(
                "{MIN}{}",
                svc("      enabled: true\n      grpcaddress: \"127.0.0.1:10010\"\n      insecure: true\n")
            ),
            "t",
        )
        .unwrap();
        let dp = ok.services[0].dynamic_price.clone().unwrap();
        assert_eq!(
            (dp.grpc_address.as_str(), dp.insecure),
            ("127.0.0.1:10010", true)
        );
        let e = err(&svc(
            "      enabled: true\n      grpcaddress: \"127.0.0.1:10010\"\n",
        ));
        assert!(
            e.contains("dynamicprice.tlscertpath") && e.contains("insecure"),
            "{e}"
        );
        let ok = parse(
            &format!(
                "{MIN}{}",
                svc("      enabled: true\n      grpcaddress: \"127.0.0.1:1\"\n      insecure: true\n      metered: true\n")
            ),
            "t",
        )
        .unwrap();
        let dp = ok.services[0].dynamic_price.clone().unwrap();
        assert!(dp.metered);
        assert_eq!(dp.usage_tail_bytes, 16384);
        let e = err(&svc(
            "      enabled: true\n      grpcaddress: \"127.0.0.1:1\"\n      insecure: true\n      metered: true\n      usagetailbytes: 1048577\n",
        ));
        assert!(e.contains("dynamicprice.usagetailbytes"), "{e}");
        let e = err(&svc("      metered: true\n"));
        assert!(e.contains("requires dynamicprice.enabled"), "{e}");
    }

    #[test]
    fn proxy_protocol_needs_trusted_proxies() {
        assert!(!parse(MIN, "t").unwrap().proxy_protocol);
        let e = err("proxyprotocol: true\n");
        assert!(
            e.contains("proxyprotocol") && e.contains("trustedproxies"),
            "{e}"
        );
        let c = parse(
            &format!("{MIN}proxyprotocol: true\ntrustedproxies: [\"10.0.0.0/8\"]\n"),
            "t",
        )
        .unwrap();
        assert!(c.proxy_protocol);
    }

    #[test]
    fn autocert_keys_default_validate_and_warn() {
        let on = "autocert: true\nservername: \"api.example.com\"\n";
        let c = parse(&format!("{MIN}{on}"), "t").unwrap();
        let a = c.autocert.unwrap();
        assert_eq!(a.domain, "api.example.com");
        assert_eq!(a.directory, super::super::LETS_ENCRYPT_DIRECTORY);
        assert_eq!((a.directory_ca, a.http_listen), (None, None));
        // Let's Encrypt validates TLS-ALPN-01 on 443 only: a listener elsewhere is warned about.
        assert!(
            c.warnings.iter().any(|w| w.contains("port 443")),
            "{:?}",
            c.warnings
        );
        let ours = "autocertdirectory: \"https://127.0.0.1:14000/dir\"\n\
                    autocertdirectoryca: \"/etc/pebble/ca.pem\"\nautocerthttplisten: \":80\"\n";
        let c = parse(&format!("{MIN}{on}{ours}"), "t").unwrap();
        let a = c.autocert.unwrap();
        assert_eq!(a.directory, "https://127.0.0.1:14000/dir");
        assert_eq!(
            a.directory_ca.unwrap(),
            std::path::Path::new("/etc/pebble/ca.pem")
        );
        assert_eq!(a.http_listen, Some(addr("0.0.0.0:80")));
        assert!(
            !c.warnings.iter().any(|w| w.contains("autocert")),
            "{:?}",
            c.warnings
        );
        // Errors name the key and the fix.
        assert!(err("autocert: true\n").contains("servername"));
        let e = err("autocert: true\nservername: \"10.0.0.1\"\n");
        assert!(e.contains("`servername`") && e.contains("DNS name"), "{e}");
        let e = err(&format!("{on}autocertdirectory: \"http://x/dir\"\n"));
        assert!(
            e.contains("`autocertdirectory`") && e.contains("https://"),
            "{e}"
        );
        let e = err(&format!("{on}autocerthttplisten: \"0.0.0.0:8081\"\n"));
        assert!(
            e.contains("`autocerthttplisten`") && e.contains("own"),
            "{e}"
        );
        // Never silently ignored: our keys without autocert, autocert under insecure.
        let c = parse(&format!("{MIN}autocerthttplisten: \":80\"\n"), "t").unwrap();
        assert!(c.autocert.is_none());
        assert!(
            c.warnings.iter().any(|w| w.contains("autocerthttplisten")),
            "{:?}",
            c.warnings
        );
        let c = parse(&format!("{MIN}{on}insecure: true\n"), "t").unwrap();
        assert!(c.autocert.is_none());
        assert!(
            c.warnings.iter().any(|w| w.contains("autocert: ignored")),
            "{:?}",
            c.warnings
        );
    }
}
