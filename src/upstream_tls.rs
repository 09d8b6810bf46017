//! Client-side TLS for `protocol: https` upstreams (layer 1): builds, once per service at route
//! resolution (main thread: it reads `tlscertpath`), the rustls client configs the cores share.
//! Verification is against `tlscertpath` when set, else the bundled webpki roots (pure data, so
//! the trust set does not depend on the host), or nothing at all with `tlsskipverify` (the
//! handshake signature is still checked). No network I/O here.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::Service;
use crate::tls::{read_certs, TlsError, ALPN_H2, ALPN_HTTP11};

/// The client configs and server name of one `https` upstream.
#[derive(Debug)]
pub struct UpstreamTls {
    /// ALPN `http/1.1` only: an HTTP/1.1 request must not land on an h2 connection.
    pub h1: Arc<ClientConfig>,
    /// ALPN `h2` then `http/1.1`: for HTTP/2 requests (gRPC), falling back to HTTP/1.1.
    pub any: Arc<ClientConfig>,
    /// SNI and the name the certificate is checked against (an IP address sends no SNI).
    pub server_name: ServerName<'static>,
}

/// Builds the TLS settings of `service`, `None` unless its protocol is `https`.
pub fn for_service(service: &Service) -> Result<Option<UpstreamTls>, TlsError> {
    if service.protocol != crate::config::Protocol::Https {
        return Ok(None);
    }
    let invalid = |reason: String| TlsError::Invalid {
        path: service
            .tls_cert_path
            .clone()
            .unwrap_or_else(|| service.address.clone().into()),
        reason,
    };
    let server_name = ServerName::try_from(host_of(&service.address).to_string())
        .map_err(|e| invalid(format!("no usable server name in the address: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?;
    let config = if service.tls_skip_verify {
        tracing::warn!(
            service = %service.name,
            "tlsskipverify: the upstream's certificate is NOT verified (anyone on the path can impersonate it)"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        match &service.tls_cert_path {
            Some(path) => {
                for cert in read_certs(path)? {
                    roots
                        .add(cert)
                        .map_err(|e| invalid(format!("not a usable CA certificate: {e}")))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    let with_alpn = |alpn: &[&[u8]]| {
        let mut c = config.clone();
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(c)
    };
    Ok(Some(UpstreamTls {
        h1: with_alpn(&[ALPN_HTTP11]),
        any: with_alpn(&[ALPN_H2, ALPN_HTTP11]),
        server_name,
    }))
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
fn host_of(address: &str) -> &str {
    let host = match address.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => address,
    };
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// `tlsskipverify`: accepts any certificate, but still checks that the server holds the key of
/// the one it sent (so the handshake itself is sound).
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn the_host_part_of_an_address() {
        assert_eq!(host_of("localhost:8443"), "localhost");
        assert_eq!(host_of("127.0.0.1:443"), "127.0.0.1");
        assert_eq!(host_of("[::1]:443"), "::1");
        assert_eq!(host_of("example.com"), "example.com");
    }

    #[test]
    fn an_ip_address_is_an_ip_server_name() {
        let name = rustls::pki_types::ServerName::try_from(host_of("127.0.0.1:1").to_string());
        assert!(matches!(
            name,
            Ok(rustls::pki_types::ServerName::IpAddress(_))
        ));
    }
}
