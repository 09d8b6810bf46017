//! autocert (layer 1): obtains and renews the listener's certificate for `servername` from an
//! ACME CA (Let's Encrypt by default, `autocertdirectory`) with instant-acme, on its own
//! `aperture-acme` thread running a small current-thread tokio runtime, never on a worker core.
//!
//! - Start-up ([`Autocert::prepare`], main thread): the cached certificate in
//!   `<basedir>/autocert/` if still valid, else the self-signed `tls.cert` pair until the first
//!   one is issued (logged); the optional HTTP-01 listener is bound here so that a port problem
//!   fails the start.
//! - Validation: TLS-ALPN-01 on the main listener (the [`CertResolver`] answers an `acme-tls/1`
//!   ClientHello with the challenge certificate) and, with `autocerthttplisten`, HTTP-01 there
//!   (tried first; a failure switches to the other type on the next attempt).
//! - Renewal once 2/3 of the lifetime has passed (day 60 of Let's Encrypt's 90), retried with
//!   exponential backoff (2 min doubling to 2 h); the new certificate is swapped into the
//!   resolver, which every core's next handshake reads (open connections keep theirs), and saved
//!   (0600) so a restart serves it without asking the CA.

mod client;
mod files;
mod http01;
mod resolver;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, Order, OrderStatus, RetryPolicy,
};
use rustls::RootCertStore;
use tokio::sync::{watch, Notify};

pub use files::{cert_path, DIR};
pub use resolver::{challenge_certificate, is_acme_hello, CertResolver};

/// Why autocert could not start.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("autocertdirectoryca: {}: {reason}\n  fix: point it at the PEM file of the CA that signed the ACME directory's HTTPS certificate", path.display())]
    DirectoryCa { path: PathBuf, reason: String },
    #[error("autocert: {}: {reason}", path.display())]
    Files { path: PathBuf, reason: String },
    #[error("autocerthttplisten: cannot listen on {addr}: {source}\n  fix: {hint}")]
    HttpListen {
        addr: SocketAddr,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("autocert: the self-signed certificate served until the first one is issued: {0}")]
    Fallback(#[from] crate::tls::TlsError),
    #[error("autocert: {0}")]
    Tls(String),
    #[error("autocert: cannot start the ACME HTTPS client: {0}")]
    Client(String),
    #[error("autocert: cannot start the aperture-acme thread: {0}")]
    Thread(String),
}

/// When to renew and how to retry.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Renew once this fraction of the certificate's lifetime has passed.
    pub renew_fraction: f64,
    /// The wait after a first failure; doubled after each further one.
    pub first_retry: Duration,
    /// The longest wait between attempts.
    pub max_retry: Duration,
    /// The longest one attempt (order, validation, issuance) may take.
    pub attempt_timeout: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            renew_fraction: 2.0 / 3.0,
            first_retry: Duration::from_secs(120),
            max_retry: Duration::from_secs(2 * 3600),
            attempt_timeout: Duration::from_secs(300),
        }
    }
}

impl Policy {
    /// The wait before attempt `failures + 1` after `failures` failures in a row (±10% jitter).
    fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(20);
        let base = self
            .first_retry
            .saturating_mul(1u32 << doublings)
            .min(self.max_retry);
        base.mul_f64(0.9 + rand::random::<f64>() * 0.2)
    }
}

/// Autocert set up on the main thread: the server config the cores share, ready to start.
pub struct Autocert {
    settings: crate::config::Autocert,
    dir: PathBuf,
    roots: RootCertStore,
    resolver: Arc<CertResolver>,
    server_config: Arc<rustls::ServerConfig>,
    /// Validity of the cached certificate being served, if any.
    current: Option<(SystemTime, SystemTime)>,
    http: Option<std::net::TcpListener>,
    https_port: u16,
    policy: Policy,
}

impl Autocert {
    /// Reads the cache and the directory CA, picks the certificate served at first, binds the
    /// HTTP-01 listener. File I/O only; no network request.
    pub fn prepare(
        settings: &crate::config::Autocert,
        basedir: &Path,
        listen: SocketAddr,
    ) -> Result<Autocert, AcmeError> {
        let roots = client::roots(settings.directory_ca.as_deref())?;
        let dir = files::dir(basedir);
        files::create_dir(&dir)?;
        let domain = &settings.domain;
        let now = SystemTime::now();
        let cached = match files::read_cert(&dir, domain) {
            Ok(Some(issued)) if issued.not_after > now => Some(issued),
            Ok(Some(_)) => {
                tracing::warn!(
                    "autocert: the cached certificate for {domain} has expired; getting a new one"
                );
                None
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(
                    "autocert: ignoring {}: {e}; getting a new certificate",
                    files::cert_path(&dir, domain).display()
                );
                None
            }
        };
        let (initial, current) = match cached {
            Some(issued) => {
                let validity = (issued.not_before, issued.not_after);
                tracing::info!(
                    "autocert: serving the cached certificate for {domain} ({}): valid until {}, renewal from {}",
                    files::cert_path(&dir, domain).display(),
                    httpdate::fmt_http_date(issued.not_after),
                    httpdate::fmt_http_date(issued.renew_at(Policy::default().renew_fraction)),
                );
                let served = resolver::certified(issued.chain, issued.key).map_err(|e| {
                    AcmeError::Files {
                        path: files::cert_path(&dir, domain),
                        reason: format!("key and certificate do not match: {e}; remove the file"),
                    }
                })?;
                (served, Some(validity))
            }
            None => {
                let pair = crate::tls::load_or_create_pair(basedir, Some(domain))?;
                tracing::warn!(
                    fingerprint = %pair.fingerprint,
                    "autocert: no certificate for {domain} yet: serving the self-signed {} until {} issues one (clients that verify will fail until then)",
                    basedir.join(crate::tls::CERT_FILE).display(),
                    settings.directory,
                );
                let served = resolver::certified(pair.certs, pair.key)
                    .map_err(|e| AcmeError::Tls(format!("{}: {e}", basedir.display())))?;
                (served, None)
            }
        };
        let resolver = Arc::new(CertResolver::new(initial));
        let server_config =
            crate::tls::resolver_config(resolver.clone()).map_err(AcmeError::Tls)?;
        let http = settings.http_listen.map(bind_http).transpose()?;
        Ok(Autocert {
            settings: settings.clone(),
            dir,
            roots,
            resolver,
            server_config: Arc::new(server_config),
            current,
            http,
            https_port: listen.port(),
            policy: Policy::default(),
        })
    }

    /// Replaces the renewal and retry policy (tests renew sooner).
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The TLS server config every core's acceptor shares.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server_config.clone()
    }

    /// The resolver whose certificate handshakes get.
    pub fn resolver(&self) -> Arc<CertResolver> {
        self.resolver.clone()
    }

    /// The HTTP-01 listener's address, when `autocerthttplisten` is set.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Starts the `aperture-acme` thread: the first order at once when no valid certificate is
    /// cached, else at renewal time. Call once the listener serves (validation connects to it).
    pub fn start(self) -> Result<AutocertService, AcmeError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let renew = Arc::new(Notify::new());
        let obtained = Arc::new(AtomicU64::new(0));
        let http_challenge = self.http.is_some();
        let origin = match self.https_port {
            443 => format!("https://{}", self.settings.domain),
            port => format!("https://{}:{port}", self.settings.domain),
        };
        let manager = Manager {
            domain: self.settings.domain.clone(),
            directory: self.settings.directory.clone(),
            dir: self.dir,
            roots: self.roots,
            resolver: self.resolver,
            answers: Arc::new(http01::Answers::default()),
            http_challenge,
            policy: self.policy,
            renew: renew.clone(),
            obtained: obtained.clone(),
            account: None,
            current: self.current,
            failures: 0,
        };
        let http = self.http;
        let thread = std::thread::Builder::new()
            .name("aperture-acme".into())
            .spawn(move || run(manager, http, http01::Redirect { origin }, stop_rx))
            .map_err(|e| AcmeError::Thread(e.to_string()))?;
        Ok(AutocertService {
            thread: Some(thread),
            stop: stop_tx,
            renew,
            obtained,
        })
    }
}

fn bind_http(addr: SocketAddr) -> Result<std::net::TcpListener, AcmeError> {
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| AcmeError::HttpListen {
            addr,
            hint: if source.kind() == std::io::ErrorKind::PermissionDenied {
                "ports below 1024 need CAP_NET_BIND_SERVICE (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE; or setcap 'cap_net_bind_service=+ep' on the binary)"
            } else {
                "another process holds the port, or the address is not on this host; free it or remove autocerthttplisten (TLS-ALPN-01 on the listener needs no extra port)"
            },
            source,
        })?;
    Ok(listener)
}

/// The running ACME client thread.
pub struct AutocertService {
    thread: Option<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    renew: Arc<Notify>,
    obtained: Arc<AtomicU64>,
}

impl AutocertService {
    /// Renews now instead of at the scheduled time (or retries now after a failure).
    pub fn renew_now(&self) {
        self.renew.notify_one();
    }

    /// How many certificates this process has obtained from the CA and installed.
    pub fn obtained(&self) -> u64 {
        self.obtained.load(Ordering::Acquire)
    }

    /// Stops the thread (an order in flight is abandoned) and joins it.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for AutocertService {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn run(
    manager: Manager,
    http: Option<std::net::TcpListener>,
    redirect: http01::Redirect,
    mut stop: watch::Receiver<bool>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("autocert: cannot build the ACME thread's runtime: {e}; no certificate will be obtained");
            return;
        }
    };
    rt.block_on(async move {
        if let Some(listener) = http {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => {
                    if let Ok(addr) = listener.local_addr() {
                        tracing::info!("autocert: answering HTTP-01 on http://{addr}");
                    }
                    tokio::spawn(http01::serve(listener, manager.answers.clone(), redirect));
                }
                Err(e) => tracing::error!("autocert: the HTTP-01 listener: {e}"),
            }
        }
        tokio::select! {
            () = manager.run() => {}
            _ = stop.wait_for(|stop| *stop) => {}
        }
    });
    // A name lookup stuck in the blocking pool must not hold up the process's exit.
    rt.shutdown_timeout(Duration::from_secs(1));
}

/// The ACME client's state, owned by its thread.
struct Manager {
    domain: String,
    directory: String,
    dir: PathBuf,
    roots: RootCertStore,
    resolver: Arc<CertResolver>,
    answers: Arc<http01::Answers>,
    http_challenge: bool,
    policy: Policy,
    renew: Arc<Notify>,
    obtained: Arc<AtomicU64>,
    account: Option<Account>,
    /// Validity of the ACME certificate being served (none yet: the self-signed fallback).
    current: Option<(SystemTime, SystemTime)>,
    failures: u32,
}

/// Why one attempt failed, which decides what the log line tells the operator to check.
#[derive(Debug)]
enum Failure {
    /// Reaching or talking to the ACME server (network, TLS, account, order, download).
    Directory(String),
    /// The CA could not validate control of the name.
    Validation(String),
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Directory(message)
    }
}

/// An instant-acme error with its sources (hyper's own message is only "client error (Connect)").
fn chain(error: &instant_acme::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

/// Longest single sleep: the schedule is recomputed at least daily (clock jumps, suspend).
const MAX_SLEEP: Duration = Duration::from_secs(86_400);

impl Manager {
    async fn run(mut self) {
        loop {
            let wait = self.next_wait(SystemTime::now());
            if !wait.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(wait.min(MAX_SLEEP)) => {
                        if wait > MAX_SLEEP {
                            continue;
                        }
                    }
                    () = self.renew.notified() => {
                        tracing::info!("autocert: renewal of the certificate for {} asked for", self.domain);
                    }
                }
            }
            let kind = self.challenge_kind();
            let outcome =
                match tokio::time::timeout(self.policy.attempt_timeout, self.obtain(kind.clone()))
                    .await
                {
                    Ok(outcome) => outcome,
                    Err(_) => Err(Failure::Directory(format!(
                        "no certificate within {} s",
                        self.policy.attempt_timeout.as_secs()
                    ))),
                };
            self.resolver.clear_challenge();
            self.answers.clear();
            match outcome {
                Ok(()) => self.failures = 0,
                Err(e) => {
                    self.failures += 1;
                    self.log_failure(&kind, &e);
                }
            }
        }
    }

    /// How long until the next attempt.
    fn next_wait(&self, now: SystemTime) -> Duration {
        if self.failures > 0 {
            return self.policy.backoff(self.failures);
        }
        match self.current {
            None => Duration::ZERO,
            Some((not_before, not_after)) => {
                let life = not_after.duration_since(not_before).unwrap_or_default();
                let at = not_before + life.mul_f64(self.policy.renew_fraction.clamp(0.0, 1.0));
                at.duration_since(now).unwrap_or_default()
            }
        }
    }

    /// HTTP-01 first when its listener is configured (it works whatever port the TLS listener is
    /// on), TLS-ALPN-01 otherwise; after a failure, the other one.
    fn challenge_kind(&self) -> ChallengeType {
        let kinds: &[ChallengeType] = if self.http_challenge {
            &[ChallengeType::Http01, ChallengeType::TlsAlpn01]
        } else {
            &[ChallengeType::TlsAlpn01]
        };
        kinds[self.failures as usize % kinds.len()].clone()
    }

    fn log_failure(&self, kind: &ChallengeType, failure: &Failure) {
        let retry = self.policy.backoff(self.failures);
        let serving = if self.current.is_some() {
            "the current certificate stays in place"
        } else {
            "the self-signed certificate stays in place"
        };
        let (error, check) = match failure {
            Failure::Directory(error) => (
                error,
                format!(
                    "Check that this host reaches {} over HTTPS (outbound firewall, DNS, a proxy) and, \
                     for a private ACME server, autocertdirectoryca",
                    self.directory
                ),
            ),
            Failure::Validation(error) => {
                let reach = match kind {
                    ChallengeType::Http01 => {
                        "port 80 of that host reaches autocerthttplisten (HTTP-01)"
                    }
                    _ => "port 443 of that host reaches listenaddr (TLS-ALPN-01)",
                };
                (
                    error,
                    format!(
                        "Check that {} resolves to this host, that {reach}, and that nothing in \
                         front of the proxy terminates TLS",
                        self.domain
                    ),
                )
            }
        };
        tracing::error!(
            attempt = self.failures,
            "autocert: cannot get a certificate for {} from {}: {error}; {serving}; retrying in {} s. {check}",
            self.domain,
            self.directory,
            retry.as_secs(),
        );
    }

    /// The ACME account: loaded from its file, else registered (terms of service agreed) and saved.
    async fn account(&mut self) -> Result<Account, String> {
        if let Some(account) = &self.account {
            return Ok(account.clone());
        }
        let path = files::account_path(&self.dir, &self.directory);
        let http = client::https(self.roots.clone()).map_err(|e| e.to_string())?;
        let account = match std::fs::read(&path) {
            Ok(bytes) => {
                let credentials: AccountCredentials =
                    serde_json::from_slice(&bytes).map_err(|e| {
                        format!(
                            "{} is not an ACME account file ({e}); remove it to register a new account",
                            path.display()
                        )
                    })?;
                Account::builder_with_http(http)
                    .from_credentials(credentials)
                    .await
                    .map_err(|e| format!("the ACME directory: {}", chain(&e)))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (account, credentials) = Account::builder_with_http(http)
                    .create(
                        &NewAccount {
                            contact: &[],
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        self.directory.clone(),
                        None,
                    )
                    .await
                    .map_err(|e| format!("registering an ACME account: {}", chain(&e)))?;
                let json = serde_json::to_vec_pretty(&credentials).map_err(|e| e.to_string())?;
                files::write_private(&path, &json).map_err(|e| e.to_string())?;
                tracing::info!(
                    "autocert: registered an ACME account at {} (saved in {})",
                    self.directory,
                    path.display()
                );
                account
            }
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        self.account = Some(account.clone());
        Ok(account)
    }

    /// One attempt: order, validate with `kind`, finalize, install and save.
    async fn obtain(&mut self, kind: ChallengeType) -> Result<(), Failure> {
        let account = self.account().await?;
        let identifiers = [Identifier::Dns(self.domain.clone())];
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|e| format!("new order: {}", chain(&e)))?;
        self.answer_challenges(&mut order, &kind).await?;
        let retries = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
            .timeout(Duration::from_secs(120));
        let status = order
            .poll_ready(&retries)
            .await
            .map_err(|e| Failure::Validation(format!("waiting for validation: {}", chain(&e))))?;
        self.resolver.clear_challenge();
        self.answers.clear();
        if status != OrderStatus::Ready {
            return Err(Failure::Validation(why_invalid(&mut order, &kind).await));
        }
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| e.to_string())?;
        let mut params =
            rcgen::CertificateParams::new(vec![self.domain.clone()]).map_err(|e| e.to_string())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .map_err(|e| format!("the certificate request: {e}"))?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| format!("finalizing the order: {}", chain(&e)))?;
        let chain_pem = order
            .poll_certificate(&retries)
            .await
            .map_err(|e| format!("downloading the certificate: {}", chain(&e)))?;
        Ok(self.install(&key.serialize_pem(), &chain_pem)?)
    }

    /// Sets up the `kind` response for every pending authorization and tells the CA to validate.
    async fn answer_challenges(
        &self,
        order: &mut Order,
        kind: &ChallengeType,
    ) -> Result<(), String> {
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization =
                authorization.map_err(|e| format!("authorization: {}", chain(&e)))?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(format!(
                        "the authorization for {} is {other:?}",
                        self.domain
                    ))
                }
            }
            let mut challenge = authorization.challenge(kind.clone()).ok_or_else(|| {
                format!(
                    "the CA offers no {} challenge for {}",
                    kind_name(kind),
                    self.domain
                )
            })?;
            let key_authorization = challenge.key_authorization();
            match kind {
                ChallengeType::Http01 => self
                    .answers
                    .set(&challenge.token, key_authorization.as_str()),
                _ => {
                    let cert =
                        challenge_certificate(&self.domain, key_authorization.digest().as_ref())?;
                    self.resolver.set_challenge(&self.domain, cert);
                }
            }
            challenge.set_ready().await.map_err(|e| {
                format!("starting the {} validation: {}", kind_name(kind), chain(&e))
            })?;
        }
        Ok(())
    }

    /// Serves the new certificate on every core, then saves it (0600).
    fn install(&mut self, key_pem: &str, chain_pem: &str) -> Result<(), String> {
        let issued = files::Issued::from_pem(format!("{key_pem}\n{chain_pem}").as_bytes())
            .map_err(|e| format!("the issued certificate: {e}"))?;
        let validity = (issued.not_before, issued.not_after);
        let renew_at = issued.renew_at(self.policy.renew_fraction);
        let served = resolver::certified(issued.chain, issued.key)
            .map_err(|e| format!("the issued certificate: {e}"))?;
        self.resolver.set_current(served);
        self.current = Some(validity);
        self.obtained.fetch_add(1, Ordering::Release);
        tracing::info!(
            "autocert: new certificate for {} from {} now served on every core: valid until {}, renewal from {}",
            self.domain,
            self.directory,
            httpdate::fmt_http_date(validity.1),
            httpdate::fmt_http_date(renew_at),
        );
        if let Err(e) = files::write_cert(&self.dir, &self.domain, key_pem, chain_pem) {
            tracing::error!(
                "{e}; the certificate is served but will be obtained again after a restart"
            );
        }
        Ok(())
    }
}

/// Why an order went invalid, from its authorizations' challenge errors.
async fn why_invalid(order: &mut Order, kind: &ChallengeType) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        if let Ok(state) = authorization.refresh().await {
            for challenge in &state.challenges {
                if let Some(problem) = &challenge.error {
                    reasons.push(format!("{}: {problem}", kind_name(&challenge.r#type)));
                }
            }
        }
    }
    if reasons.is_empty() {
        format!("the {} validation failed", kind_name(kind))
    } else {
        format!(
            "the {} validation failed: {}",
            kind_name(kind),
            reasons.join("; ")
        )
    }
}

fn kind_name(kind: &ChallengeType) -> &str {
    match kind {
        ChallengeType::Http01 => "http-01",
        ChallengeType::TlsAlpn01 => "tls-alpn-01",
        ChallengeType::Dns01 => "dns-01",
        ChallengeType::Unknown(name) => name,
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manager(http_challenge: bool, current: Option<(SystemTime, SystemTime)>) -> Manager {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        Manager {
            domain: "a.example".into(),
            directory: crate::config::LETS_ENCRYPT_DIRECTORY.into(),
            dir: PathBuf::from("/nonexistent"),
            roots: RootCertStore::empty(),
            resolver: Arc::new(CertResolver::new(
                resolver::certified(vec![cert.der().clone()], key).unwrap(),
            )),
            answers: Arc::default(),
            http_challenge,
            policy: Policy::default(),
            renew: Arc::default(),
            obtained: Arc::default(),
            account: None,
            current,
            failures: 0,
        }
    }

    #[test]
    fn first_order_at_once_renewal_at_two_thirds_retries_after_backoff() {
        let day = Duration::from_secs(86_400);
        let start = SystemTime::UNIX_EPOCH + 20_000 * day;
        let mut m = manager(false, None);
        assert_eq!(
            m.next_wait(start),
            Duration::ZERO,
            "no certificate yet: order now"
        );
        m.current = Some((start, start + 90 * day));
        assert_eq!(m.next_wait(start), 60 * day);
        assert_eq!(m.next_wait(start + 59 * day), day);
        assert_eq!(
            m.next_wait(start + 61 * day),
            Duration::ZERO,
            "overdue: now"
        );
        m.failures = 1;
        let wait = m.next_wait(start);
        assert!(wait >= Duration::from_secs(108) && wait <= Duration::from_secs(132));
    }

    #[test]
    fn http01_first_when_configured_then_alternates_after_failures() {
        let mut m = manager(false, None);
        assert_eq!(m.challenge_kind(), ChallengeType::TlsAlpn01);
        m.failures = 1;
        assert_eq!(m.challenge_kind(), ChallengeType::TlsAlpn01);
        let mut m = manager(true, None);
        assert_eq!(m.challenge_kind(), ChallengeType::Http01);
        m.failures = 1;
        assert_eq!(m.challenge_kind(), ChallengeType::TlsAlpn01);
        m.failures = 2;
        assert_eq!(m.challenge_kind(), ChallengeType::Http01);
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter() {
        let policy = Policy::default();
        let within = |d: Duration, secs: u64| {
            let s = d.as_secs_f64();
            (secs as f64 * 0.9..=secs as f64 * 1.1).contains(&s)
        };
        assert!(within(policy.backoff(1), 120));
        assert!(within(policy.backoff(2), 240));
        assert!(within(policy.backoff(3), 480));
        assert!(within(policy.backoff(10), 7200));
        assert!(within(policy.backoff(u32::MAX), 7200));
    }
}
