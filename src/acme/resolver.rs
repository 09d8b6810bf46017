//! The listener's certificate under autocert: a rustls [`ResolvesServerCert`] that every core's
//! handshakes read. It holds the certificate being served (swapped by the ACME thread when one is
//! issued or renewed) and, while a TLS-ALPN-01 validation is pending, the challenge certificate
//! (RFC 8737) answered only to a ClientHello that offers exactly ALPN `acme-tls/1` for that name.
//! Both sit behind `arc-swap` pointers: a handshake does one atomic load, never takes a lock, and
//! a swap is seen by the next handshake on every core without a message.

use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::tls::ALPN_ACME;

/// A certificate chain and its key as rustls serves them.
pub type Served = Arc<CertifiedKey>;

/// A pending TLS-ALPN-01 challenge: the name it validates and the certificate to show.
#[derive(Debug)]
struct Challenge {
    domain: String,
    key: Served,
}

/// The autocert certificate resolver (shared by every core through the server config).
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
    challenge: ArcSwapOption<Challenge>,
}

impl CertResolver {
    /// A resolver serving `initial` (the cached ACME certificate, or the self-signed fallback).
    pub fn new(initial: Served) -> Self {
        Self {
            current: ArcSwap::new(initial),
            challenge: ArcSwapOption::empty(),
        }
    }

    /// Serves `key` to every handshake from now on (connections already open keep theirs).
    pub fn set_current(&self, key: Served) {
        self.current.store(key);
    }

    /// The certificate being served now.
    pub fn current(&self) -> Served {
        self.current.load_full()
    }

    /// Answers `acme-tls/1` handshakes for `domain` with `key` until [`Self::clear_challenge`].
    pub fn set_challenge(&self, domain: &str, key: Served) {
        self.challenge.store(Some(Arc::new(Challenge {
            domain: domain.to_ascii_lowercase(),
            key,
        })));
    }

    /// No validation pending: `acme-tls/1` handshakes fail again.
    pub fn clear_challenge(&self) {
        self.challenge.store(None);
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if !is_acme_hello(&hello) {
            return Some(self.current.load_full());
        }
        // A validation handshake: the challenge certificate for its name, or no handshake at all
        // (never the real certificate under the `acme-tls/1` protocol).
        let pending = self.challenge.load();
        let challenge = pending.as_ref()?;
        let sni = hello.server_name()?;
        sni.eq_ignore_ascii_case(&challenge.domain)
            .then(|| challenge.key.clone())
    }
}

/// Whether the ClientHello offers ALPN `acme-tls/1` and nothing else, as RFC 8737 validators do.
pub fn is_acme_hello(hello: &ClientHello<'_>) -> bool {
    let Some(mut offered) = hello.alpn() else {
        return false;
    };
    offered.next() == Some(ALPN_ACME) && offered.next().is_none()
}

/// A served certificate from a chain and its key (the key must match the leaf).
pub fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Served, String> {
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// The RFC 8737 challenge certificate: self-signed for `domain`, with the critical
/// `id-pe-acmeIdentifier` extension holding SHA-256 of the key authorization.
pub fn challenge_certificate(
    domain: &str,
    key_authorization_sha256: &[u8],
) -> Result<Served, String> {
    if key_authorization_sha256.len() != 32 {
        return Err("the key authorization digest is not SHA-256".into());
    }
    let err = |e: rcgen::Error| e.to_string();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let mut params = rcgen::CertificateParams::new(vec![domain.to_owned()]).map_err(err)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(
        key_authorization_sha256,
    )];
    let cert = params.self_signed(&key).map_err(err)?;
    let key = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| e.to_string())?;
    // Not `certified`: its key check parses the certificate with webpki, which refuses the
    // critical acmeIdentifier extension. The key is the one just generated for it.
    let signer = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str) -> Served {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let key = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        certified(vec![cert.der().clone()], key).unwrap()
    }

    #[test]
    fn challenge_certificate_carries_the_critical_acme_identifier() {
        let digest = [7u8; 32];
        let served = challenge_certificate("example.org", &digest).unwrap();
        let der = served.cert[0].as_ref();
        // id-pe-acmeIdentifier (1.3.6.1.5.5.7.1.31), critical, OCTET STRING { OCTET STRING[32] }.
        let oid = [0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x1f];
        let at = der
            .windows(oid.len())
            .position(|w| w == oid)
            .expect("the acmeIdentifier extension");
        let rest = &der[at + oid.len()..];
        assert_eq!(&rest[..3], &[0x01, 0x01, 0xff], "critical");
        assert_eq!(&rest[3..7], &[0x04, 0x22, 0x04, 0x20]);
        assert_eq!(&rest[7..39], &digest);
        assert!(challenge_certificate("example.org", &[0; 20]).is_err());
    }

    /// Trusts any certificate and signature (webpki refuses the challenge certificate's critical
    /// extension): these tests only look at which certificate the server shows.
    #[derive(Debug)]
    struct AnyCert(rustls::crypto::CryptoProvider);

    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }

        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// An in-memory handshake: the leaf the server showed and the protocol ALPN picked.
    fn handshake(
        server: Arc<rustls::ServerConfig>,
        sni: &str,
        alpn: &[&[u8]],
    ) -> Result<(Vec<u8>, Option<Vec<u8>>), rustls::Error> {
        let provider = rustls::crypto::ring::default_provider();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider.clone()))
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(config), name)?;
        let mut server = rustls::ServerConnection::new(server)?;
        for _ in 0..10 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            server.read_tls(&mut &wire[..]).unwrap();
            server.process_new_packets()?;
            let mut wire = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut wire).unwrap();
            }
            client.read_tls(&mut &wire[..]).unwrap();
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                let leaf = client.peer_certificates().unwrap()[0].to_vec();
                return Ok((leaf, client.alpn_protocol().map(<[u8]>::to_vec)));
            }
        }
        panic!("the handshake stalled");
    }

    #[test]
    fn acme_tls_alone_gets_the_challenge_certificate_everything_else_the_current_one() {
        let current = self_signed("a.example");
        let resolver = Arc::new(CertResolver::new(current.clone()));
        let config = Arc::new(crate::tls::resolver_config(resolver.clone()).unwrap());
        let leaf = |k: &Served| k.cert[0].to_vec();
        let (shown, alpn) = handshake(config.clone(), "a.example", &[b"h2", b"http/1.1"]).unwrap();
        assert_eq!((shown, alpn), (leaf(&current), Some(b"h2".to_vec())));
        // No validation pending: an acme-tls/1 handshake fails rather than show the real cert.
        assert!(handshake(config.clone(), "a.example", &[ALPN_ACME]).is_err());
        let challenge = challenge_certificate("a.example", &[1; 32]).unwrap();
        resolver.set_challenge("a.example", challenge.clone());
        let (shown, alpn) = handshake(config.clone(), "A.EXAMPLE", &[ALPN_ACME]).unwrap();
        assert_eq!((shown, alpn), (leaf(&challenge), Some(ALPN_ACME.to_vec())));
        assert!(handshake(config.clone(), "b.example", &[ALPN_ACME]).is_err());
        // acme-tls/1 among others is an ordinary client.
        let (shown, alpn) =
            handshake(config.clone(), "a.example", &[ALPN_ACME, b"http/1.1"]).unwrap();
        assert_eq!((shown, alpn), (leaf(&current), Some(b"http/1.1".to_vec())));
        // A swap is what the next handshake shows.
        let renewed = self_signed("a.example");
        resolver.set_current(renewed.clone());
        let (shown, _) = handshake(config, "a.example", &[]).unwrap();
        assert_eq!(shown, leaf(&renewed));
    }

    #[test]
    fn a_swap_is_seen_by_the_next_resolve_and_challenges_come_and_go() {
        let first = self_signed("a.example");
        let resolver = CertResolver::new(first.clone());
        assert!(Arc::ptr_eq(&resolver.current(), &first));
        let second = self_signed("a.example");
        resolver.set_current(second.clone());
        assert!(Arc::ptr_eq(&resolver.current(), &second));
        resolver.set_challenge("A.Example", first.clone());
        assert_eq!(
            resolver.challenge.load().as_ref().unwrap().domain,
            "a.example"
        );
        resolver.clear_challenge();
        assert!(resolver.challenge.load().is_none());
    }
}
