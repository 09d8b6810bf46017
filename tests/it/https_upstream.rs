//! `protocol: https` upstreams: HTTP/1.1 over TLS verified against `tlscertpath`, refused when
//! the self-signed origin is checked against the bundled roots, accepted with `tlsskipverify`;
//! pooled TLS connections; HTTP/2 downstream reaching an h2-over-TLS origin (the gRPC case of a
//! Go aperture config) and falling back to HTTP/1.1 over TLS when the origin offers only that.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use aperture::metrics::Counter;
use bytes::Bytes;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::support::{buy_token, get, Conn, Proxy};

/// A self-signed certificate for `localhost` / `127.0.0.1`, its PEM written to a temp file.
struct Identity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    cert_path: PathBuf,
    _dir: tempfile::TempDir,
}

fn identity() -> Identity {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("rcgen");
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("origin.pem");
    std::fs::write(&cert_path, ck.cert.pem()).unwrap();
    Identity {
        cert: ck.cert.der().clone(),
        key: PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()),
        cert_path,
        _dir: dir,
    }
}

fn server_config(id: &Identity, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![id.cert.clone()],
            PrivateKeyDer::Pkcs8(id.key.clone_key()),
        )
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// An HTTP/1.1 origin behind TLS (ALPN `http/1.1` only), on std threads.
struct TlsOrigin {
    addr: SocketAddr,
    /// TLS connections whose handshake completed.
    handshakes: Arc<AtomicUsize>,
    id: Identity,
}

fn tls_origin() -> TlsOrigin {
    let id = identity();
    let config = server_config(&id, &[b"http/1.1"]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counted = handshakes.clone();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let (config, counted) = (config.clone(), counted.clone());
            std::thread::spawn(move || serve_tls_h1(tcp, config, &counted));
        }
    });
    TlsOrigin {
        addr,
        handshakes,
        id,
    }
}

fn serve_tls_h1(mut tcp: TcpStream, config: Arc<rustls::ServerConfig>, handshakes: &AtomicUsize) {
    let Ok(mut conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    while conn.is_handshaking() {
        if conn.complete_io(&mut tcp).is_err() {
            return;
        }
    }
    handshakes.fetch_add(1, Ordering::SeqCst);
    let mut reader = BufReader::new(rustls::StreamOwned::new(conn, tcp));
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let target = head.split(' ').nth(1).unwrap_or("/").to_string();
        let lower = head.to_ascii_lowercase();
        if let Some(i) = lower.find("content-length:") {
            let n: usize = lower[i + 15..]
                .split("\r\n")
                .next()
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let mut body = vec![0u8; n];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
        }
        let body = format!("tls origin saw {target}");
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let out = reader.get_mut();
        if out.write_all(resp.as_bytes()).is_err() || out.flush().is_err() {
            return;
        }
    }
}

fn https_service(origin: SocketAddr, extra: &str) -> String {
    format!(
        "  - name: \"tls\"\n    hostregexp: \".*\"\n    address: \"{origin}\"\n    protocol: https\n    price: 10\n{extra}"
    )
}

#[test]
fn verified_against_tlscertpath_402_pay_200_on_one_pooled_connection() {
    let origin = tls_origin();
    let extra = format!("    tlscertpath: \"{}\"\n", origin.id.cert_path.display());
    let proxy = Proxy::start(&https_service(origin.addr, &extra), 1);
    assert_eq!(get(proxy.addr, "/paid", "").status, 402);
    let auth = buy_token(&proxy, "/paid");
    let mut conn = Conn::open(proxy.addr);
    for path in ["/paid", "/paid/again"] {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: test\r\nAuthorization: {auth}\r\n\r\n");
        let resp = conn.request(raw.as_bytes());
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.text(), format!("tls origin saw {path}"));
        assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
    }
    assert_eq!(
        origin.handshakes.load(Ordering::SeqCst),
        1,
        "the second request reused the pooled TLS connection"
    );
    let metrics = proxy.server().metrics();
    assert_eq!(metrics.total(Counter::UpstreamErrors), 0);
}

#[test]
fn a_self_signed_origin_checked_against_the_system_roots_is_a_counted_502() {
    let origin = tls_origin();
    let proxy = Proxy::start(&https_service(origin.addr, "    auth: \"off\"\n"), 1);
    let resp = get(proxy.addr, "/x", "");
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert_eq!(origin.handshakes.load(Ordering::SeqCst), 0);
    let metrics = proxy.server().metrics();
    assert_eq!(metrics.total(Counter::UpstreamErrors), 1);
}

#[test]
fn tlsskipverify_accepts_the_self_signed_origin() {
    let origin = tls_origin();
    let extra = "    auth: \"off\"\n    tlsskipverify: true\n";
    let proxy = Proxy::start(&https_service(origin.addr, extra), 1);
    let resp = get(proxy.addr, "/skip", "");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), "tls origin saw /skip");
}

/// An HTTP/2-only origin behind TLS (ALPN `h2`) on tokio, answering like a gRPC server: a body
/// naming the path, then `grpc-status: 0` trailers.
fn h2_tls_origin(id: &Identity) -> SocketAddr {
    let config = server_config(id, &[b"h2"]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut h2) = h2::server::handshake(tls).await else {
                        return;
                    };
                    while let Some(Ok((req, mut respond))) = h2.accept().await {
                        let body = format!("h2 origin saw {}", req.uri().path());
                        let head = http::Response::builder()
                            .status(200)
                            .header("content-type", "application/grpc")
                            .body(())
                            .unwrap();
                        let Ok(mut send) = respond.send_response(head, false) else {
                            continue;
                        };
                        let _ = send.send_data(Bytes::from(body), false);
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        let _ = send.send_trailers(trailers);
                    }
                });
            }
        });
    });
    addr
}

/// One call over h2c prior knowledge to the proxy: status, body, trailers.
async fn h2c_call(proxy: SocketAddr, path: &str) -> (u16, Vec<u8>, Option<http::HeaderMap>) {
    let tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (mut send, conn) = h2::client::handshake(tcp).await.expect("h2c handshake");
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://test{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (resp, _) = send.send_request(req, true).expect("send");
    let resp = resp.await.expect("response");
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("body");
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.expect("trailers");
    (status, bytes, trailers)
}

#[tokio::test(flavor = "current_thread")]
async fn grpc_over_h2c_downstream_reaches_an_h2_over_tls_origin() {
    let id = identity();
    let origin = h2_tls_origin(&id);
    let extra = format!(
        "    auth: \"off\"\n    tlscertpath: \"{}\"\n",
        id.cert_path.display()
    );
    let proxy = Proxy::start(&https_service(origin, &extra), 1);
    for _ in 0..2 {
        let (status, body, trailers) = h2c_call(proxy.addr, "/pkg.Svc/Call").await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(body, b"h2 origin saw /pkg.Svc/Call");
        let trailers = trailers.expect("the origin's trailers");
        assert_eq!(trailers["grpc-status"], "0");
    }
    let metrics = proxy.server().metrics();
    assert_eq!(metrics.total(Counter::UpstreamErrors), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn http2_downstream_falls_back_to_http1_over_tls() {
    let origin = tls_origin();
    let extra = format!(
        "    auth: \"off\"\n    tlscertpath: \"{}\"\n",
        origin.id.cert_path.display()
    );
    let proxy = Proxy::start(&https_service(origin.addr, &extra), 1);
    for path in ["/one", "/two"] {
        let (status, body, _) = h2c_call(proxy.addr, path).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(body, format!("tls origin saw {path}").as_bytes());
    }
    assert_eq!(
        origin.handshakes.load(Ordering::SeqCst),
        2,
        "one h2 probe answered with http/1.1, then one pooled HTTP/1.1 connection for both calls"
    );
}
