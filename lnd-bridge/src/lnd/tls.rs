//! TLS to lnd: certificate pinning and the connector tonic dials through.
//!
//! Owns reading `tls.cert`, the pinned-certificate verifier and the TCP+TLS connector. lnd's
//! certificate is self-signed with CA:TRUE, which webpki refuses as an end-entity
//! certificate, so instead of chain validation we accept exactly the certificate in the
//! file (byte-for-byte DER) and still verify the handshake signature against it. The file
//! is re-read on every connect because lnd rotates it (expiry, new SANs). Must not cache
//! the certificate across connections, and must not block: file reads are small and rare.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::protocol::BridgeError;

/// The crypto provider every TLS config here uses (ring: small, no cmake).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the first certificate from `path` (PEM, as lnd writes it).
pub(crate) fn load_cert(path: &Path) -> Result<CertificateDer<'static>, BridgeError> {
    let err = |reason: String| BridgeError::TlsCert {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| err(format!("read: {e}")))?;
    let der = CertificateDer::pem_slice_iter(&bytes)
        .next()
        .ok_or_else(|| err("no PEM CERTIFICATE block".into()))?
        .map_err(|e| err(format!("bad PEM: {e}")))?;
    // Parse it once so that a corrupt body fails at start-up, not at every handshake.
    webpki::EndEntityCert::try_from(&der).map_err(|e| err(format!("not a certificate: {e}")))?;
    Ok(der)
}

/// Accepts exactly one certificate (by DER) and checks handshake signatures against it.
#[derive(Debug)]
pub(crate) struct PinnedCert {
    der: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl PinnedCert {
    pub(crate) fn new(der: CertificateDer<'static>, provider: Arc<CryptoProvider>) -> Self {
        PinnedCert { der, provider }
    }
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Name and validity period are not checked, as with lnd's own pinned clients: the
        // operator vouched for this exact certificate by configuring its file.
        if end_entity.as_ref() == self.der.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Dials lnd: TCP, then TLS pinned to the certificate currently in `tls_path`.
#[derive(Clone)]
pub(crate) struct Connector {
    /// What is dialed, for logs: `"lnd"` or `"pricer"` (the dynamic pricer reuses this).
    pub(crate) peer: &'static str,
    /// `host:port` as configured.
    pub(crate) addr: String,
    pub(crate) server_name: ServerName<'static>,
    pub(crate) tls_path: PathBuf,
    pub(crate) provider: Arc<CryptoProvider>,
    /// Set on every handshake outcome; read by readiness.
    pub(crate) connected: Arc<AtomicBool>,
    pub(crate) dial: Arc<Mutex<DialBackoff>>,
}

/// Spaces out dials to an lnd that keeps failing: every call made while lnd is down would
/// otherwise start its own connect attempt (and log line). Calls in the wait fail at once.
#[derive(Default)]
pub(crate) struct DialBackoff {
    failures: u32,
    next_try: Option<Instant>,
}

/// First wait after a failed dial; doubles per failure up to [`DIAL_BACKOFF_CAP`].
const DIAL_BACKOFF_BASE: Duration = Duration::from_millis(100);
const DIAL_BACKOFF_CAP: Duration = Duration::from_secs(5);

impl DialBackoff {
    /// `Err(wait)` while the previous failure's backoff runs.
    fn check(&self, now: Instant) -> Result<(), Duration> {
        match self.next_try {
            Some(t) if now < t => Err(t - now),
            _ => Ok(()),
        }
    }

    fn record(&mut self, ok: bool, now: Instant) {
        if ok {
            *self = DialBackoff::default();
            return;
        }
        let exp = DIAL_BACKOFF_BASE.saturating_mul(1u32 << self.failures.min(16));
        self.failures = self.failures.saturating_add(1);
        self.next_try = Some(now + exp.min(DIAL_BACKOFF_CAP));
    }
}

impl Connector {
    async fn connect(self) -> io::Result<TokioIo<TlsStream<TcpStream>>> {
        let waiting = lock(&self.dial).check(Instant::now());
        if let Err(wait) = waiting {
            return Err(io::Error::other(format!(
                "{} unreachable; next connect attempt in {} ms",
                self.peer,
                wait.as_millis()
            )));
        }
        let result = self.handshake().await;
        lock(&self.dial).record(result.is_ok(), Instant::now());
        self.connected.store(result.is_ok(), Ordering::Release);
        match &result {
            Ok(_) => tracing::info!(peer = self.peer, addr = %self.addr, "connected"),
            Err(e) => {
                tracing::warn!(peer = self.peer, addr = %self.addr, error = %e, "connect failed")
            }
        }
        result
    }

    async fn handshake(&self) -> io::Result<TokioIo<TlsStream<TcpStream>>> {
        let der = load_cert(&self.tls_path).map_err(io::Error::other)?;
        let verifier = PinnedCert::new(der, self.provider.clone());
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        // grpc-go (lnd) refuses TLS connections that did not negotiate h2 by ALPN.
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = TcpStream::connect(&self.addr).await?;
        tcp.set_nodelay(true)?;
        let tls = TlsConnector::from(Arc::new(config))
            .connect(self.server_name.clone(), tcp)
            .await?;
        Ok(TokioIo::new(tls))
    }
}

fn lock(m: &Mutex<DialBackoff>) -> MutexGuard<'_, DialBackoff> {
    // Two plain fields assigned together; a poisoned value is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        // The URI is the one we built from `addr`; dial `addr` itself.
        Box::pin(self.clone().connect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_backoff_grows_caps_and_resets() {
        let mut b = DialBackoff::default();
        let t0 = Instant::now();
        assert!(b.check(t0).is_ok());
        b.record(false, t0);
        assert_eq!(b.check(t0), Err(DIAL_BACKOFF_BASE));
        assert!(b.check(t0 + DIAL_BACKOFF_BASE).is_ok());
        for _ in 0..40 {
            b.record(false, t0);
        }
        assert_eq!(b.check(t0), Err(DIAL_BACKOFF_CAP));
        b.record(true, t0);
        assert!(b.check(t0).is_ok());
    }
}
