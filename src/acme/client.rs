//! The HTTPS client instant-acme talks to the ACME directory through: hyper over rustls with the
//! ring provider (never the process-wide default), HTTP/1.1, a connect timeout, and explicit
//! roots: the public web PKI (`webpki-roots`, the same on every machine) or, with
//! `autocertdirectoryca`, only the CAs of that PEM file (Pebble, a private ACME server).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use super::AcmeError;

/// How long connecting to the directory may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The roots to verify the directory's certificate against.
pub fn roots(directory_ca: Option<&Path>) -> Result<RootCertStore, AcmeError> {
    let Some(path) = directory_ca else {
        return Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    };
    let invalid = |reason: String| AcmeError::DirectoryCa {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| invalid(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| invalid(format!("not a PEM certificate file: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| invalid(format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(invalid("no PEM certificate in the file".into()));
    }
    Ok(roots)
}

/// The client (must be created inside the ACME thread's tokio runtime).
pub fn https(roots: RootCertStore) -> Result<Box<dyn HttpClient>, AcmeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AcmeError::Client(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    let client = Client::builder(TokioExecutor::new()).build(connector);
    Ok(Box::new(Https(client)))
}

struct Https(Client<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>);

impl HttpClient for Https {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let response = self.0.request(req);
        Box::pin(async move {
            match response.await {
                Ok(response) => Ok(BytesResponse::from(response)),
                Err(e) => Err(instant_acme::Error::Other(Box::new(e))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_default_to_the_web_pki_or_come_from_the_file() {
        assert!(roots(None).unwrap().len() > 100);
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.pem()).unwrap();
        assert_eq!(roots(Some(&path)).unwrap().len(), 1);
        std::fs::write(&path, "nothing").unwrap();
        let e = roots(Some(&path)).err().unwrap().to_string();
        assert!(
            e.contains("autocertdirectoryca") && e.contains("ca.pem"),
            "{e}"
        );
        let e = roots(Some(&dir.path().join("missing.pem")))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("missing.pem"), "{e}");
    }
}
