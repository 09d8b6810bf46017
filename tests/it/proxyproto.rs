//! PROXY protocol (`proxyprotocol: true`) from trusted peers: the v1 and v2 headers' source
//! address is the client for IP-keyed rate limits and the blocklist (decided on the core that
//! owns that address, whichever core accepted the connection), a trusted peer without a header
//! is cut off, and an untrusted peer's PROXY header is not honoured.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use aperture::ratelimit::{owner_core, ClientKey};

use crate::support::{service, Conn, Origin, Proxy, Response};

/// The trusted load balancer's address; tests connect from it by binding the client socket.
const LB: &str = "127.0.0.2";

fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: SocketAddr = format!("{source}:0").parse().unwrap();
    sock.bind(&from.into()).unwrap();
    sock.connect(&to.into()).unwrap();
    sock.into()
}

fn v1(client: &str) -> Vec<u8> {
    format!("PROXY TCP4 {client} 10.0.0.1 40000 443\r\n").into_bytes()
}

fn v2(client: &str) -> Vec<u8> {
    let ip: std::net::Ipv4Addr = client.parse().unwrap();
    let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11".to_vec();
    let mut body = ip.octets().to_vec();
    body.extend_from_slice(&[10, 0, 0, 1, 0x9c, 0x40, 0x01, 0xbb]);
    body.extend_from_slice(&[0x04, 0x00, 0x01, 0x00]); // a NOOP TLV, skipped
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(&body);
    h
}

/// One GET through the load balancer, announcing `header` first.
fn through_lb(proxy: &Proxy, header: &[u8]) -> Response {
    let mut stream = connect_from(LB, proxy.addr);
    stream.write_all(header).unwrap();
    Conn::from_stream(stream).request(b"GET /x HTTP/1.1\r\nHost: test\r\n\r\n")
}

fn start(origin: &Origin) -> Proxy {
    let extra = "    auth: \"off\"\n    ratelimits:\n      - requests: 1\n        per: 1h\n        burst: 1\n";
    let top = format!(
        "trustedproxies: [\"{LB}/32\"]\nproxyprotocol: true\nblocklist: [\"198.51.100.0/24\"]"
    );
    Proxy::start_with(&service("svc", origin.addr, extra), 2, &top, 4096)
}

#[test]
fn the_carried_address_is_the_client_for_limits_and_the_blocklist() {
    let origin = Origin::start();
    let proxy = start(&origin);
    // Clients owned by each core: whichever core accepts, decisions for a client are exact.
    let owner = |ip: &str| owner_core(&ClientKey::ip(ip.parse::<IpAddr>().unwrap()), 2);
    let clients = [
        "203.0.113.7",
        "192.0.2.10",
        "203.0.114.7",
        "192.0.3.10",
        "203.0.115.7",
    ];
    assert!(clients.iter().any(|c| owner(c) == 0) && clients.iter().any(|c| owner(c) == 1));
    for client in clients {
        // The first request of each client passes; the second, in the other header form on a
        // new connection, finds that client's bucket empty: all come from one TCP peer.
        let first = through_lb(&proxy, &v1(client));
        assert_eq!(first.status, 200, "{client}: {}", first.text());
        let second = through_lb(&proxy, &v2(client));
        assert_eq!(second.status, 429, "{client}: {}", second.text());
    }
    let blocked = through_lb(&proxy, &v2("198.51.100.5"));
    assert_eq!(blocked.status, 403);
    let blocked = through_lb(&proxy, &v1("198.51.100.6"));
    assert_eq!(blocked.status, 403);
    // LOCAL (a health check) keeps the load balancer's own address as the client.
    let local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
    assert_eq!(through_lb(&proxy, local).status, 200);
}

#[test]
fn a_trusted_peer_without_a_valid_header_is_cut_off() {
    let origin = Origin::start();
    let proxy = start(&origin);
    for opening in [
        &b"GET /x HTTP/1.1\r\nHost: test\r\n\r\n"[..],
        b"PROXY TCP4 not-an-ip 10.0.0.1 1 2\r\nGET /x HTTP/1.1\r\nHost: test\r\n\r\n",
    ] {
        let mut stream = connect_from(LB, proxy.addr);
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(opening).unwrap();
        // Closed without an answer: EOF, or a reset since the request was left unread.
        let mut b = [0u8; 1];
        let cut = match stream.read(&mut b) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        };
        assert!(cut, "{}", String::from_utf8_lossy(opening));
    }
    assert_eq!(origin.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[test]
fn an_untrusted_peers_proxy_header_is_not_honoured() {
    let origin = Origin::start();
    let proxy = start(&origin);
    // 127.0.0.1 is not the trusted load balancer: its header is just bytes, not an HTTP request.
    let mut stream = connect_from("127.0.0.1", proxy.addr);
    stream.write_all(&v1("203.0.113.99")).unwrap();
    let resp = Conn::from_stream(stream).request(b"GET /x HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(resp.status, 400, "{}", resp.text());
    // Without a header it is served under its own address.
    let stream = connect_from("127.0.0.1", proxy.addr);
    let resp = Conn::from_stream(stream).request(b"GET /x HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[test]
fn the_header_comes_before_tls() {
    let origin = Origin::start();
    let extra = "    auth: \"off\"\n    ratelimits:\n      - requests: 1\n        per: 1h\n        burst: 1\n";
    let top = format!(
        "{}trustedproxies: [\"{LB}/32\"]\nproxyprotocol: true",
        crate::tls::TLS_TOP
    );
    let proxy = Proxy::start_with(&service("svc", origin.addr, extra), 2, &top, 4096);
    let config = crate::tls::client_config(proxy.basedir.path(), &[b"http/1.1"]);
    let mut statuses = Vec::new();
    for header in [v2("203.0.113.50"), v1("203.0.113.50"), v1("192.0.2.50")] {
        let mut tcp = connect_from(LB, proxy.addr);
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        tcp.write_all(&header).unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(b"GET /x HTTP/1.1\r\nHost: test\r\n\r\n")
            .unwrap();
        let mut reader = std::io::BufReader::new(tls);
        let resp = crate::support::read_response(&mut reader, false).expect("response");
        statuses.push(resp.status);
    }
    // The same carried client twice (v2 then v1) shares one bucket; another client has its own.
    assert_eq!(statuses, [200, 429, 200]);
}
