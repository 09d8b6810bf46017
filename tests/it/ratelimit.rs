//! Rate limits end to end: exact per-client rates across cores and connections.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use crate::support::{buy_token, service, wait_until, Conn, Origin, Proxy, Response};

/// A connection whose source address is `from` (any 127/8 address works on loopback).
fn conn_from(from: [u8; 4], to: SocketAddr) -> Conn {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    socket.connect(&to.into()).unwrap();
    Conn::from_stream(TcpStream::from(socket))
}

/// Sends `per_conn` pipelined requests on each connection, then reads every answer.
fn burst(conns: &mut [Conn], per_conn: usize, path: &str, extra: &str) -> Vec<Response> {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n");
    for c in conns.iter_mut() {
        for _ in 0..per_conn {
            c.send(raw.as_bytes());
        }
    }
    let mut out = Vec::new();
    for c in conns.iter_mut() {
        for _ in 0..per_conn {
            out.push(c.read_response(false));
        }
    }
    out
}

fn count(resps: &[Response], status: u16) -> usize {
    resps.iter().filter(|r| r.status == status).count()
}

/// Asserts that exactly the burst of a 10-per-second bucket passed: 10, plus at most the tokens
/// it could have earned while the burst was in flight (none when the burst takes under 100 ms,
/// as it normally does; a loaded CI machine can be slower). A limiter split per core or per
/// connection lets 20 or more through and fails.
fn assert_burst_of_ten(resps: &[Response], took: Duration) {
    let earned = (took.as_millis() / 100) as usize;
    let ok = count(resps, 200);
    assert!((10..=10 + earned).contains(&ok), "{ok} passed in {took:?}");
    assert_eq!(ok + count(resps, 429), resps.len());
}

const TEN_PER_SECOND: &str =
    "    ratelimits:\n      - requests: 10\n        per: 1s\n        burst: 10\n";

#[test]
fn one_ip_client_gets_exactly_its_burst_across_two_cores_and_eight_connections() {
    let origin = Origin::start();
    let extra = format!("    auth: \"off\"\n{TEN_PER_SECOND}");
    let proxy = Proxy::start(&service("free", origin.addr, &extra), 2);
    let mut conns: Vec<Conn> = (0..8).map(|_| Conn::open(proxy.addr)).collect();
    let start = std::time::Instant::now();
    let resps = burst(&mut conns, 5, "/", "");
    assert_burst_of_ten(&resps, start.elapsed());
    for r in resps.iter().filter(|r| r.status == 429) {
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(r.text(), "rate limit exceeded\n");
    }
    // The bucket refills at 10/s: a request succeeds again within the deadline.
    wait_until("the bucket to refill", Duration::from_secs(3), || {
        conns[0]
            .request(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .status
            == 200
    });
}

#[test]
fn a_token_used_from_two_addresses_is_limited_as_one_client() {
    let origin = Origin::start();
    let proxy = Proxy::start(&service("svc", origin.addr, TEN_PER_SECOND), 2);
    let auth = buy_token(&proxy, "/");
    let header = format!("Authorization: {auth}\r\n");
    let mut conns: Vec<Conn> = (0..8)
        .map(|i| {
            conn_from(
                if i % 2 == 0 {
                    [127, 0, 0, 1]
                } else {
                    [127, 0, 0, 2]
                },
                proxy.addr,
            )
        })
        .collect();
    let start = std::time::Instant::now();
    let resps = burst(&mut conns, 5, "/", &header);
    assert_burst_of_ten(&resps, start.elapsed());
    // Another client (no token, another /24) is unaffected by that token's bucket.
    let mut other = conn_from([127, 0, 1, 9], proxy.addr);
    assert_eq!(
        other.request(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").status,
        402
    );
}

#[test]
fn the_sample_configs_two_rules_behave_as_documented() {
    let origin = Origin::start();
    let extra = "    auth: \"off\"\n    ratelimits:\n      - requests: 100\n        per: 1s\n        burst: 100\n      - pathregexp: '^/api/v1/expensive.*$'\n        requests: 5\n        per: 1m\n        burst: 5\n";
    let proxy = Proxy::start(&service("free", origin.addr, extra), 2);
    let mut conn = Conn::open(proxy.addr);
    let resps = burst(
        std::slice::from_mut(&mut conn),
        6,
        "/api/v1/expensive/x",
        "",
    );
    assert_eq!(count(&resps, 200), 5);
    let denied = resps.last().unwrap();
    assert_eq!(denied.status, 429);
    // The next token of a 5-per-minute bucket is 12 s away.
    let retry: u64 = denied.header("retry-after").unwrap().parse().unwrap();
    assert!((11..=12).contains(&retry), "Retry-After {retry}");
    // Other paths use only the global rule, whose token the denied request did not consume.
    let resps = burst(std::slice::from_mut(&mut conn), 94, "/cheap", "");
    assert_eq!(count(&resps, 200), 94);
}

#[test]
fn minting_challenges_is_rate_limited_per_client_when_configured() {
    let origin = Origin::start();
    let top = "challengeratelimits:\n  - requests: 3\n    per: 1m\n    burst: 3";
    let proxy = Proxy::start_with(&service("svc", origin.addr, ""), 2, top, 4096);
    let first = crate::support::get(proxy.addr, "/", "");
    assert_eq!(first.status, 402);
    let mut conn = Conn::open(proxy.addr);
    let resps = burst(std::slice::from_mut(&mut conn), 3, "/", "");
    assert_eq!((count(&resps, 402), count(&resps, 429)), (2, 1));
    let retry: u64 = resps[2].header("retry-after").unwrap().parse().unwrap();
    assert!((19..=20).contains(&retry), "Retry-After {retry}");
    // Paying the first challenge still works: paid requests mint nothing.
    let (mac, invoice) = crate::support::challenge(&first);
    let preimage = crate::support::pay(proxy.wallet, &invoice);
    let paid = format!("Authorization: L402 {mac}:{preimage}\r\n");
    assert_eq!(crate::support::get(proxy.addr, "/", &paid).status, 200);
}

#[test]
fn behind_a_load_balancer_steering_off_spreads_one_address_and_stays_exact() {
    use aperture::metrics::Counter;
    let origin = Origin::start();
    let extra = format!("    auth: \"off\"\n{TEN_PER_SECOND}");
    // Steering on: every connection of one client address lands on the core owning its bucket.
    let proxy = Proxy::start(&service("free", origin.addr, &extra), 2);
    let mut conns: Vec<Conn> = (0..32).map(|_| Conn::open(proxy.addr)).collect();
    burst(&mut conns, 1, "/", "");
    let per_core = proxy.server().metrics().per_core(Counter::Requests);
    assert!(per_core.contains(&0), "steered to one core: {per_core:?}");
    // Steering off (a load balancer's one address): both cores serve, and the limit stays exact.
    let proxy = Proxy::start_with(
        &service("free", origin.addr, &extra),
        2,
        "ratelimitsteering: off",
        4096,
    );
    let mut conns: Vec<Conn> = (0..32).map(|_| Conn::open(proxy.addr)).collect();
    let start = std::time::Instant::now();
    let resps = burst(&mut conns, 1, "/", "");
    let per_core = proxy.server().metrics().per_core(Counter::Requests);
    assert!(
        per_core.iter().all(|&n| n > 0),
        "one core idle: {per_core:?}"
    );
    let earned = (start.elapsed().as_millis() / 100) as usize;
    assert!((10..=10 + earned).contains(&count(&resps, 200)));
}

#[test]
fn freebies_are_counted_per_client_prefix_across_cores() {
    let origin = Origin::start();
    let proxy = Proxy::start(&service("svc", origin.addr, "    auth: \"freebie 3\"\n"), 2);
    // Two addresses of one /24, several connections each: three free requests in all.
    let mut conns: Vec<Conn> = (0..4)
        .map(|i| {
            conn_from(
                if i % 2 == 0 {
                    [127, 0, 0, 1]
                } else {
                    [127, 0, 0, 77]
                },
                proxy.addr,
            )
        })
        .collect();
    let resps = burst(&mut conns, 2, "/", "");
    assert_eq!((count(&resps, 200), count(&resps, 402)), (3, 5));
    // Another /24 has its own three.
    let mut other = conn_from([127, 0, 5, 1], proxy.addr);
    let resps = burst(std::slice::from_mut(&mut other), 4, "/", "");
    assert_eq!((count(&resps, 200), count(&resps, 402)), (3, 1));
    // Paying still works once the free ones are gone.
    let auth = buy_token(&proxy, "/");
    assert_eq!(
        crate::support::get(proxy.addr, "/", &format!("Authorization: {auth}\r\n")).status,
        200
    );
}

#[test]
fn behind_a_trusted_proxy_limits_and_blocklist_follow_x_forwarded_for() {
    let origin = Origin::start();
    let extra = "    auth: \"off\"\n    ratelimits:\n      - requests: 2\n        per: 1m\n";
    let top = "trustedproxies: [\"127.0.0.1/32\"]\nblocklist: [\"198.51.100.0/24\"]";
    let proxy = Proxy::start_with(&service("free", origin.addr, extra), 2, top, 4096);
    // All requests come from the proxy's address 127.0.0.1; the clients are in the header.
    let from = |client: &str| format!("X-Forwarded-For: {client}\r\n");
    let mut conn = Conn::open(proxy.addr);
    let resps = burst(
        std::slice::from_mut(&mut conn),
        3,
        "/",
        &from("203.0.113.5"),
    );
    assert_eq!(
        (count(&resps, 200), count(&resps, 429)),
        (2, 1),
        "one client's limit"
    );
    let resps = burst(std::slice::from_mut(&mut conn), 2, "/", &from("192.0.2.9"));
    assert_eq!(count(&resps, 200), 2, "another client has its own bucket");
    // A client cannot dodge its bucket by prepending addresses: only the rightmost untrusted hop counts.
    let resps = burst(
        std::slice::from_mut(&mut conn),
        1,
        "/",
        &from("10.9.9.9, 203.0.113.5"),
    );
    assert_eq!(count(&resps, 429), 1);
    let resps = burst(
        std::slice::from_mut(&mut conn),
        1,
        "/",
        &from("198.51.100.7"),
    );
    assert_eq!(count(&resps, 403), 1, "the blocklist sees the real client");
    // From an untrusted peer the header is ignored: 127.0.0.2 is its own client.
    let mut direct = conn_from([127, 0, 0, 2], proxy.addr);
    let resps = burst(
        std::slice::from_mut(&mut direct),
        1,
        "/",
        &from("198.51.100.7"),
    );
    assert_eq!(count(&resps, 200), 1);
}
