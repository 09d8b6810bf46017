//! Where a [`super::PgStore`] connects and how: [`PgTarget`] holds the client settings and, with
//! `requiressl: true`, a rustls connector ([`RustlsConnect`], tokio-postgres's
//! `MakeTlsConnect` over tokio-rustls, the stack the rest of aperture uses) that verifies the
//! server's certificate against `postgres.tlscertpath` (else the bundled web PKI roots) and,
//! with `tlsverify: full` (the default), its host name. Connection failures that are about TLS
//! become errors that name the server, the CA file and the fix. Blocking: store thread, the
//! listener thread or a CLI command only.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use postgres::config::{Host, SslMode};
use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use postgres::{Client, Config, NoTls, Socket};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::{PgVerify, Postgres};
use crate::store::db::DbError;

/// How long a connection attempt may take before it counts as failed (an unreachable host
/// would otherwise hold the store thread for the kernel's SYN timeout, minutes).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A PostgreSQL server to connect to, with or without TLS. Cheap to clone.
#[derive(Clone)]
pub struct PgTarget {
    config: Config,
    tls: Option<RustlsConnect>,
    /// The host name (or address) the certificate must hold.
    host: String,
    /// `host:port`, for messages.
    shown: String,
}

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTarget")
            .field("server", &self.shown)
            .field("tls", &self.tls.as_ref().map(|t| (&t.ca_file, t.verify)))
            .finish()
    }
}

impl PgTarget {
    /// The server the `postgres:` section names. Reads `tlscertpath` now, so a missing or
    /// malformed CA file is a start-up error.
    pub fn from_config(pg: &Postgres) -> Result<PgTarget, DbError> {
        let mut config = Config::new();
        config
            .host(&pg.host)
            .port(pg.port)
            .user(&pg.user)
            .password(&pg.password)
            .dbname(&pg.dbname);
        let tls = if pg.require_ssl {
            Some(RustlsConnect::new(
                pg.tls_cert_path.as_deref(),
                pg.tls_verify,
            )?)
        } else {
            None
        };
        Ok(PgTarget::new(config, tls))
    }

    /// The server a connection URL names (`postgres://user:pass@host:port/db?…`, as Go
    /// aperture's DSN and `aperture import --from-postgres` take it). Besides what
    /// tokio-postgres parses, it understands libpq's `sslmode=verify-full|verify-ca` and
    /// `sslrootcert=PATH`; `sslmode=require` verifies like `verify-full` (never unverified).
    /// `prefer`, `allow` and no `sslmode` connect without TLS, as before.
    pub fn from_dsn(dsn: &str) -> Result<PgTarget, DbError> {
        let bad = |e: String| DbError::Unavailable(format!("postgres: invalid DSN: {e}"));
        let (head, query) = dsn.split_once('?').unwrap_or((dsn, ""));
        let (mut mode, mut root) = (None, None);
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("sslmode", v)) => mode = Some(v.to_owned()),
                Some(("sslrootcert", v)) => root = Some(PathBuf::from(v)),
                _ => kept.push(pair),
            }
        }
        let (verify, tls) = match mode.as_deref() {
            None | Some("disable" | "allow" | "prefer") => (PgVerify::Full, false),
            Some("require" | "verify-full") => (PgVerify::Full, true),
            Some("verify-ca") => (PgVerify::Ca, true),
            Some(other) => return Err(bad(format!("unknown sslmode {other:?}"))),
        };
        if root.is_some() && !tls {
            return Err(bad(
                "sslrootcert needs sslmode=verify-full, verify-ca or require".into(),
            ));
        }
        let rest = if kept.is_empty() {
            String::new()
        } else {
            format!("?{}", kept.join("&"))
        };
        let config = Config::from_str(&format!("{head}{rest}")).map_err(|e| bad(e.to_string()))?;
        let tls = tls
            .then(|| RustlsConnect::new(root.as_deref(), verify))
            .transpose()?;
        Ok(PgTarget::new(config, tls))
    }

    fn new(mut config: Config, tls: Option<RustlsConnect>) -> PgTarget {
        config.connect_timeout(CONNECT_TIMEOUT);
        config.ssl_mode(if tls.is_some() {
            SslMode::Require
        } else {
            SslMode::Disable
        });
        let host = match config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        PgTarget {
            config,
            tls,
            shown: format!("{host}:{port}"),
            host,
        }
    }

    /// The same server with TCP keepalives probing an idle connection every few seconds, so
    /// a listening connection notices a vanished server within about half a minute.
    pub(crate) fn with_fast_keepalives(&self) -> PgTarget {
        let mut target = self.clone();
        target
            .config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3);
        target
    }

    /// Whether connections use TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Opens one connection.
    pub fn connect(&self) -> Result<Client, DbError> {
        let result = match &self.tls {
            None => self.config.connect(NoTls),
            Some(tls) => self.config.connect(tls.clone()),
        };
        result.map_err(|e| self.connect_error(e))
    }

    /// A TLS failure explained (which server, which CA, what to change); anything else as is.
    fn connect_error(&self, e: postgres::Error) -> DbError {
        let Some(tls) = &self.tls else {
            return pg_connect_err(&self.shown, e);
        };
        let server = &self.shown;
        let trusted_by = match &tls.ca_file {
            Some(path) => format!("the CA file {} (postgres.tlscertpath)", path.display()),
            None => "the bundled web PKI roots (no postgres.tlscertpath is set)".into(),
        };
        let reason = if let Some(cert) = rustls_error(&e) {
            match cert {
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                ) => format!(
                    "the server's TLS certificate is signed by a trusted CA but is not valid for \
                     the host name {} ({cert}); set postgres.host to a name the certificate \
                     holds, or `tlsverify: ca` to check the chain only",
                    self.host
                ),
                rustls::Error::InvalidCertificate(
                    CertificateError::Expired
                    | CertificateError::ExpiredContext { .. }
                    | CertificateError::NotValidYet
                    | CertificateError::NotValidYetContext { .. },
                ) => format!(
                    "the server's TLS certificate is outside its validity period ({cert}); \
                     renew it on the server, or check this machine's clock"
                ),
                rustls::Error::InvalidCertificate(_) => format!(
                    "the server's TLS certificate is not trusted by {trusted_by} ({cert}); set \
                     postgres.tlscertpath to the CA that signed the server's certificate"
                ),
                _ => format!("the TLS handshake failed: {}", causes(&e)),
            }
        } else if causes(&e).contains("server does not support TLS") {
            "the server does not accept TLS, but requiressl is true; turn TLS on in the server \
             (ssl = on, ssl_cert_file, ssl_key_file in postgresql.conf), or, on a trusted \
             private network only, set requiressl: false"
                .to_owned()
        } else if e.to_string().starts_with("error performing TLS handshake") {
            format!("the TLS handshake failed: {}", causes(&e))
        } else {
            return pg_connect_err(server, e);
        };
        DbError::PostgresTls {
            server: server.clone(),
            reason,
        }
    }
}

/// A connect failure with its cause spelled out ("connection refused", "password
/// authentication failed"), which postgres::Error's own text leaves out.
fn pg_connect_err(server: &str, source: postgres::Error) -> DbError {
    let shown = causes(&source);
    let detail = shown
        .strip_prefix(&source.to_string())
        .unwrap_or("")
        .trim_start_matches(": ");
    DbError::Postgres {
        context: if detail.is_empty() {
            format!("connect to {server}")
        } else {
            format!("connect to {server} ({detail})")
        },
        source,
    }
}

/// The error and its causes, as one line (postgres::Error's own text leaves the cause out).
fn causes(e: &postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(err) = cause {
        text.push_str(": ");
        text.push_str(&err.to_string());
        cause = err.source();
    }
    text
}

/// The rustls error under a connect failure, if there is one.
fn rustls_error(e: &postgres::Error) -> Option<&rustls::Error> {
    let mut cause = std::error::Error::source(e);
    while let Some(err) = cause {
        if let Some(found) = err.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(found) = err
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(found);
        }
        cause = err.source();
    }
    None
}

/// tokio-postgres's TLS hook over rustls.
#[derive(Clone)]
pub struct RustlsConnect {
    config: Arc<ClientConfig>,
    ca_file: Option<PathBuf>,
    verify: PgVerify,
}

impl RustlsConnect {
    /// Trusts the CA certificates in `ca_file` (PEM), else the bundled web PKI roots.
    fn new(ca_file: Option<&Path>, verify: PgVerify) -> Result<RustlsConnect, DbError> {
        let mut roots = RootCertStore::empty();
        let unusable = |path: &Path, reason: String| {
            DbError::Unavailable(format!("postgres.tlscertpath {}: {reason}", path.display()))
        };
        match ca_file {
            Some(path) => {
                let certs = crate::tls::read_certs(path)
                    .map_err(|e| DbError::Unavailable(format!("postgres.tlscertpath: {e}")))?;
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(|e| unusable(path, format!("not a usable CA certificate: {e}")))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| DbError::Unavailable(format!("postgres TLS: {e}")))?;
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| DbError::Unavailable(format!("postgres TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier { webpki, verify }))
            .with_no_client_auth();
        Ok(RustlsConnect {
            config: Arc::new(config),
            ca_file: ca_file.map(Path::to_path_buf),
            verify,
        })
    }
}

/// The web PKI verifier, with the host name check dropped for `tlsverify: ca`. rustls checks
/// the chain before the name, so a name error means the chain was good.
#[derive(Debug)]
struct Verifier {
    webpki: Arc<WebPkiServerVerifier>,
    verify: PgVerify,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let result = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match (result, self.verify) {
            (
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )),
                PgVerify::Ca,
            ) => Ok(ServerCertVerified::assertion()),
            (result, _) => result,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

impl MakeTlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type TlsConnect = RustlsHandshake;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsHandshake, Self::Error> {
        Ok(RustlsHandshake {
            config: self.config.clone(),
            name: ServerName::try_from(domain)?.to_owned(),
        })
    }
}

/// One connection's handshake.
pub struct RustlsHandshake {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl TlsConnect<Socket> for RustlsHandshake {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config);
        Box::pin(async move {
            let tls = connector.connect(self.name, stream).await?;
            Ok(RustlsStream(Box::new(tls)))
        })
    }
}

/// The encrypted connection. No channel binding (SCRAM-SHA-256 without `-PLUS`): the
/// certificate check already binds the session to the server.
pub struct RustlsStream(Box<tokio_rustls::client::TlsStream<Socket>>);

impl postgres::tls::TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_modes() {
        let t = PgTarget::from_dsn("postgres://u@h:5433/d?sslmode=disable").unwrap();
        assert!(!t.is_tls() && t.shown == "h:5433");
        assert!(!PgTarget::from_dsn("postgres://u@h/d").unwrap().is_tls());
        let t = PgTarget::from_dsn("postgres://u@h/d?sslmode=require").unwrap();
        assert!(t.is_tls());
        assert_eq!(t.tls.as_ref().unwrap().verify, PgVerify::Full);
        let t = PgTarget::from_dsn("postgres://u@h/d?sslmode=verify-ca").unwrap();
        assert_eq!(t.tls.as_ref().unwrap().verify, PgVerify::Ca);
        let e = PgTarget::from_dsn("postgres://u@h/d?sslmode=weird").unwrap_err();
        assert!(e.to_string().contains("sslmode"), "{e}");
        let e = PgTarget::from_dsn("postgres://u@h/d?sslrootcert=/x.pem").unwrap_err();
        assert!(e.to_string().contains("sslrootcert"), "{e}");
        let e = PgTarget::from_dsn("postgres://u@h/d?sslmode=verify-full&sslrootcert=/nope.pem")
            .unwrap_err();
        assert!(e.to_string().contains("/nope.pem"), "{e}");
    }
}
