//! TLS termination: the generated self-signed pair (files, modes), HTTP/1.1 402 → pay → 200 over
//! TLS with ALPN `http/1.1`, and a broken pair refused at start-up by the binary (exit 64).

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};

use crate::support::{self, challenge, pay, service, Origin, Proxy, Response};

/// The top-level config for a TLS listener.
pub const TLS_TOP: &str = "insecure: false\nservername: \"aperture.test\"\n";

/// A rustls client config trusting only the proxy's certificate in `basedir`, offering `alpn`.
pub fn client_config(basedir: &Path, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let cert = std::fs::read(basedir.join("tls.cert")).expect("tls.cert");
    let mut roots = rustls::RootCertStore::empty();
    for der in rustls::pki_types::pem::PemObject::pem_slice_iter(&cert) {
        let der: CertificateDer<'static> = der.expect("pem");
        roots.add(der).expect("trust the generated cert");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

type TlsConn = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Opens a TLS connection to `addr` (SNI `localhost`) and completes the handshake.
fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> BufReader<TlsConn> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .expect("handshake");
    }
    BufReader::new(stream)
}

fn request(conn: &mut BufReader<TlsConn>, path: &str, extra: &str) -> Response {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n");
    conn.get_mut().write_all(raw.as_bytes()).unwrap();
    support::read_response(conn, false).expect("response")
}

#[test]
fn http1_over_tls_pays_and_gets_through() {
    let origin = Origin::start();
    let proxy = Proxy::start_with(&service("svc", origin.addr, ""), 2, TLS_TOP, 4096);
    let dir = proxy.basedir.path();
    let mode = |f: &str| std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("tls.key"), 0o600, "the key is private");
    assert_eq!(mode("tls.cert"), 0o644);
    let config = client_config(dir, &[b"http/1.1"]);
    let mut conn = connect(proxy.addr, config.clone());
    assert_eq!(conn.get_ref().conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let resp = request(&mut conn, "/paid", "");
    assert_eq!(resp.status, 402, "{}", resp.text());
    let (mac, invoice) = challenge(&resp);
    let preimage = pay(proxy.wallet, &invoice);
    let auth = format!("Authorization: L402 {mac}:{preimage}\r\n");
    // Same connection (keep-alive over TLS), then a fresh one.
    let resp = request(&mut conn, "/paid", &auth);
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (200, "origin saw /paid")
    );
    let mut fresh = connect(proxy.addr, config);
    let resp = request(&mut fresh, "/big?n=300000", &auth);
    assert_eq!((resp.status, resp.body.len()), (200, 300_000));
}

#[test]
fn plaintext_on_a_tls_port_is_a_counted_handshake_failure() {
    let origin = Origin::start();
    let proxy = Proxy::start_with(&service("svc", origin.addr, ""), 1, TLS_TOP, 4096);
    let mut tcp = TcpStream::connect(proxy.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut reply = Vec::new();
    let _ = std::io::Read::read_to_end(&mut tcp, &mut reply);
    assert!(!reply.starts_with(b"HTTP/"), "no HTTP answer on a TLS port");
    let metrics = proxy.server().metrics().clone();
    support::wait_until("the failure is counted", Duration::from_secs(10), || {
        metrics.total(aperture::metrics::Counter::TlsHandshakeFailures) == 1
    });
}

#[test]
fn a_broken_certificate_stops_start_up_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("aperture.yaml");
    std::fs::write(
        &config,
        "listenaddr: \"127.0.0.1:0\"\ninsecure: false\ndbbackend: sqlite\n\
         authenticator:\n  network: regtest\n  dev:\n    listenaddr: \"127.0.0.1:0\"\nservices: []\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("tls.cert"), "not a certificate\n").unwrap();
    std::fs::write(dir.path().join("tls.key"), "not a key\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_aperture"))
        .args(["--config", config.to_str().unwrap()])
        .args(["--basedir", dir.path().to_str().unwrap(), "--cores", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("tls.cert"), "{stderr}");
    let cert = std::fs::read_to_string(dir.path().join("tls.cert")).unwrap();
    assert_eq!(cert, "not a certificate\n", "never regenerated silently");
}
