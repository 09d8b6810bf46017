//! Revocations pushed through PostgreSQL's `LISTEN/NOTIFY`: two instances (each its own store
//! thread and bridge, with four subscribed "cores" on the second) share a database; a revoke
//! through another connection reaches every core of the second instance at once, not at its
//! safety-net poll ([`aperture::store::service::SAFETY_NET_POLL`], 5 s). The latency is
//! printed (`--nocapture`); docs/operations.md records the figure. The listening connection,
//! killed by the server, comes back by itself.
//!
//! Needs `APERTURE_TEST_PG` (see tests/it/store.rs).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use aperture::store::postgres::PgStore;
use aperture::store::service::SAFETY_NET_POLL;
use aperture::store::{self, Key32, Store, StoreService};
use lnd_bridge::{BackendConfig, Bridge, BridgeConfig, Event};
use postgres::{Client, NoTls};

use crate::support::wait_until;

/// The bound each revocation must meet: far under the safety-net poll, so a pass shows the
/// push worked (a poll-only instance would miss it in most of the rounds).
const GENEROUS: Duration = Duration::from_secs(2);
const CORES: usize = 4;

/// A database of its own, dropped at the end (its listeners are then easy to find).
struct FreshDb {
    server: String,
    name: String,
    url: String,
}

impl FreshDb {
    fn new() -> Option<FreshDb> {
        let server = crate::store::pg_url()?;
        let name = format!("aperture_notify_{}", hex::encode(rand::random::<[u8; 6]>()));
        let mut client = Client::connect(&server, NoTls).unwrap();
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let (head, query) = server.split_at(server.find('?').unwrap_or(server.len()));
        let base = &head[..head.rfind('/').unwrap()];
        let url = format!("{base}/{name}{query}");
        Some(FreshDb { server, name, url })
    }

    /// The backend pids of the connections waiting in `LISTEN` on this database.
    fn listeners(&self) -> Vec<i32> {
        let mut client = Client::connect(&self.server, NoTls).unwrap();
        client
            .query(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN%'",
                &[&self.name],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

impl Drop for FreshDb {
    fn drop(&mut self) {
        if let Ok(mut client) = Client::connect(&self.server, NoTls) {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            if let Err(e) = client.batch_execute(&sql) {
                eprintln!("cannot drop the test database {}: {e}", self.name);
            }
        }
    }
}

/// One instance: its bridge (the cores' event source) and its store thread on `url`.
fn instance(url: &str) -> (Bridge, StoreService) {
    let bridge = lnd_bridge::start(BridgeConfig::new(BackendConfig::Disabled)).unwrap();
    let publisher = bridge.handle();
    let service = store::start_with(
        Box::new(PgStore::connect(url, true).unwrap()),
        Some(bridge.handle().subscribe()),
        Box::new(move |token_id| publisher.publish(Event::TokenRevoked { token_id })),
        "holder",
        store::no_payer("tests"),
    )
    .unwrap();
    (bridge, service)
}

/// `CORES` threads, each draining one subscription of `bridge` as a worker core does and
/// reporting `(token id, when it arrived)`.
fn cores(bridge: &Bridge) -> mpsc::Receiver<(Key32, Instant)> {
    let (tx, rx) = mpsc::channel();
    for _ in 0..CORES {
        let mut events = bridge.handle().subscribe();
        let tx = tx.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            while let Some(event) = rt.block_on(tokio_stream::StreamExt::next(&mut events)) {
                if let Event::TokenRevoked { token_id } = event {
                    if tx.send((token_id, Instant::now())).is_err() {
                        return;
                    }
                }
            }
        });
    }
    rx
}

/// Revokes a fresh token through `via` and returns how long until every core had it.
fn revoke_and_time(via: &mut PgStore, cores: &mpsc::Receiver<(Key32, Instant)>) -> Duration {
    let id: Key32 = rand::random();
    let start = Instant::now();
    assert!(via.revoke(id).unwrap());
    let (mut seen, mut last) = (0, start);
    while seen < CORES {
        let left = (start + GENEROUS).saturating_duration_since(Instant::now());
        let (got, at) = cores
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("{seen} of {CORES} cores had the revocation after {GENEROUS:?} (the safety-net poll is {SAFETY_NET_POLL:?})"));
        if got == id {
            seen += 1;
            last = last.max(at);
        }
    }
    last - start
}

#[test]
fn a_revoke_reaches_every_core_of_another_instance_at_once() {
    let Some(db) = FreshDb::new() else { return };
    let (_bridge_a, service_a) = instance(&db.url);
    let (bridge_b, service_b) = instance(&db.url);
    let cores_b = cores(&bridge_b);
    wait_until("both listeners", Duration::from_secs(5), || {
        db.listeners().len() == 2
    });
    // Revoked through a third connection, as `aperture token revoke` or the admin API of
    // instance A do it.
    let mut via = PgStore::connect(&db.url, false).unwrap();
    let mut took: Vec<Duration> = (0..20)
        .map(|_| revoke_and_time(&mut via, &cores_b))
        .collect();
    took.sort();
    eprintln!(
        "revocation on every one of {CORES} cores of the other instance, 20 rounds: median {:?}, max {:?} (safety-net poll {SAFETY_NET_POLL:?})",
        took[took.len() / 2],
        took[took.len() - 1]
    );
    service_a.shutdown();
    service_b.shutdown();
}

#[test]
fn the_listener_reconnects_after_its_connection_is_killed() {
    let Some(db) = FreshDb::new() else { return };
    let (bridge, service) = instance(&db.url);
    let cores = cores(&bridge);
    wait_until("the listener", Duration::from_secs(5), || {
        db.listeners().len() == 1
    });
    let old = db.listeners();
    let mut admin = Client::connect(&db.server, NoTls).unwrap();
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&old[0]])
        .unwrap();
    wait_until("a new listening connection", Duration::from_secs(5), || {
        let now = db.listeners();
        now.len() == 1 && now != old
    });
    let mut via = PgStore::connect(&db.url, false).unwrap();
    let took = revoke_and_time(&mut via, &cores);
    eprintln!("after a reconnect, a revocation reached every core in {took:?}");
    service.shutdown();
}
