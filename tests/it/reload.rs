//! Hot reload: a new routing snapshot reaches every core without failing a request, and
//! requests already in flight finish on the snapshot they started with.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aperture::proxy::Routes;
use aperture::runtime::Control;

use crate::support::{challenge, get, reload_routes, wait_until, Conn, Origin, Proxy};

fn services(
    paid_price: u64,
    free_origin: std::net::SocketAddr,
    paid_origin: std::net::SocketAddr,
) -> String {
    format!(
        "  - name: free\n    hostregexp: \".*\"\n    pathregexp: '^/(free|hold)'\n    address: \"{free_origin}\"\n    protocol: http\n    auth: \"off\"\n\
         \x20 - name: paid\n    hostregexp: \".*\"\n    address: \"{paid_origin}\"\n    protocol: http\n    price: {paid_price}\n"
    )
}

fn routes(services_yaml: &str) -> Arc<Routes> {
    Arc::new(reload_routes(services_yaml))
}

#[test]
fn reload_swaps_price_and_upstream_under_load_without_failing_a_request() {
    let (old_origin, new_origin) = (Origin::start(), Origin::start());
    let proxy = Proxy::start(&services(10, old_origin.addr, old_origin.addr), 2);
    // A long-lived request that started on the old snapshot.
    let mut held = Conn::open(proxy.addr);
    held.send(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
    wait_until(
        "the held request to reach the old origin",
        Duration::from_secs(5),
        || old_origin.holding() == 1,
    );
    // Continuous load on both services from four threads.
    let stop = Arc::new(AtomicBool::new(false));
    let (failures, served) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..4)
        .map(|i| {
            let (stop, failures, served, addr) =
                (stop.clone(), failures.clone(), served.clone(), proxy.addr);
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr);
                let path = if i % 2 == 0 { "/free" } else { "/paid" };
                while !stop.load(Ordering::Relaxed) {
                    let r =
                        conn.request(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
                    if r.status == 200 || r.status == 402 {
                        served.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    wait_until("load to run", Duration::from_secs(5), || {
        served.load(Ordering::Relaxed) > 50
    });
    let new = routes(&services(20, new_origin.addr, new_origin.addr));
    proxy.server().broadcast(|| Control::Routes(new.clone()));
    wait_until("the new upstream to answer", Duration::from_secs(5), || {
        get(proxy.addr, "/free", "").text() == "origin saw /free"
            && new_origin.hits.load(Ordering::SeqCst) > 0
    });
    wait_until(
        "the new price on every core",
        Duration::from_secs(5),
        || {
            (0..8).all(|_| {
                challenge(&get(proxy.addr, "/paid", ""))
                    .1
                    .starts_with("lnbcrt200n1")
            })
        },
    );
    let before = served.load(Ordering::Relaxed);
    wait_until(
        "load to continue after the reload",
        Duration::from_secs(5),
        || served.load(Ordering::Relaxed) > before + 50,
    );
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    // The held request finishes on the old snapshot's upstream.
    old_origin.release();
    let r = held.read_response(false);
    assert_eq!((r.status, r.text().as_str()), (200, "released"));
}

#[test]
fn reload_keeps_the_buckets_of_unchanged_rules() {
    let origin = Origin::start();
    let limited = format!(
        "  - name: free\n    hostregexp: \".*\"\n    address: \"{}\"\n    protocol: http\n    auth: \"off\"\n    ratelimits:\n      - requests: 3\n        per: 1m\n",
        origin.addr
    );
    let proxy = Proxy::start(&limited, 1);
    for _ in 0..3 {
        assert_eq!(get(proxy.addr, "/", "").status, 200);
    }
    assert_eq!(get(proxy.addr, "/", "").status, 429);
    let same = routes(&limited);
    proxy.server().broadcast(|| Control::Routes(same.clone()));
    // The reload is applied in the core's control task; a request after it still meets the
    // drained bucket (a reset would let three more through).
    let marker = format!(
        "  - name: marker\n    hostregexp: '^marker$'\n    address: \"{}\"\n    protocol: http\n    auth: \"off\"\n",
        origin.addr
    );
    let probe = routes(&format!("{marker}{limited}"));
    proxy.server().broadcast(|| Control::Routes(probe.clone()));
    wait_until("the reload to apply", Duration::from_secs(5), || {
        Conn::open(proxy.addr)
            .request(b"GET / HTTP/1.1\r\nHost: marker\r\n\r\n")
            .status
            == 200
    });
    assert_eq!(get(proxy.addr, "/", "").status, 429);
}
