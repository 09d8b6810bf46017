//! The token database: the store thread (batched ledger, settlements from bridge events,
//! revocation polling and fan-out), an outage, the `token`/`import` commands, Go aperture's
//! `secrets` import (wire-format.md vector 2), and PostgreSQL shared by two instances.
//!
//! PostgreSQL tests need `APERTURE_TEST_PG` (scripts/test.sh starts a server and sets it); they
//! skip with a printed reason only when it is unset outside CI, and fail in CI.

use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aperture::config::{self, Db};
use aperture::l402::{
    parse_credentials, verify_with_root_key, CaveatError, VerifyError, VerifyRequest,
};
use aperture::store::postgres::PgStore;
use aperture::store::sqlite::SqliteStore;
use aperture::store::{
    self, Challenge, ChargeClaim, DbError, Key32, LedgerRow, Op, Store, StoreService, TokenQuery,
};
use futures_channel::mpsc::UnboundedReceiver;
use lnd_bridge::{BackendConfig, Bridge, BridgeConfig, Event};

use crate::support::wait_until;

/// wire-format.md §8, vector 2: minted the Go way with the random root key 32×01.
const V2_B64: &str = "AgEEbHNhdAJCAAB1h3u0HTk7X7hFXOYOzY3aAB0GMWSWsU36f4lWVu7KSgMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAAITc2VydmljZXM9c2VydmljZTE6MAACInNlcnZpY2UxX2NhcGFiaWxpdGllcz1hZGQsc3VidHJhY3QAAh9zZXJ2aWNlMV92YWxpZF91bnRpbD0xNzAwMDAwMDAwAAAGIIyT/ng3b4GEWaFfSvxvUs9nsmSxMHNbxwRbDWXHURl8";
const V2_ID_HASH: &str = "002b3039613d2b94bb1a864563058d8521305f8b73c986ef1d100c9914a72559";

fn bridge() -> Bridge {
    lnd_bridge::start(BridgeConfig::new(BackendConfig::Disabled)).unwrap()
}

fn sqlite_db(dir: &Path) -> Db {
    Db::Sqlite {
        path: dir.join("aperture.db"),
        skip_migrations: false,
    }
}

fn rows(store: &mut dyn Store, token_id: Key32) -> Vec<LedgerRow> {
    let q = TokenQuery {
        token_id: Some(token_id),
        limit: 0,
    };
    store.list_tokens(&q).unwrap()
}

/// Waits for `TokenRevoked { token_id }` on `events`; returns how long it took.
fn wait_revoked(events: &mut UnboundedReceiver<Event>, token_id: Key32, within: Duration) {
    wait_until("the TokenRevoked event", within, || {
        while let Ok(ev) = events.try_recv() {
            if ev == (Event::TokenRevoked { token_id }) {
                return true;
            }
        }
        false
    });
}

#[test]
fn ledger_records_challenges_and_settlements_from_bridge_events() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_db(dir.path());
    let bridge = bridge();
    let service = store::start(&db, &bridge.handle(), "holder").unwrap();
    let handle = service.handle();
    for n in 0..300u16 {
        let mut id = [0u8; 32];
        id[..2].copy_from_slice(&n.to_be_bytes());
        let mut hash = id;
        hash[31] = 0xff;
        assert!(handle.try_record_challenge(id, hash, "svc", 21, 1_700_000_000 + u64::from(n)));
    }
    let mut reader = store::open(&db).unwrap();
    wait_until("300 ledger rows", Duration::from_secs(5), || {
        reader.list_tokens(&TokenQuery::default()).unwrap().len() == 300
    });
    let (id, mut hash) = ([0u8; 32], [0u8; 32]);
    hash[31] = 0xff;
    bridge.handle().publish(Event::InvoiceSettled {
        payment_hash: hash,
        settle_index: 1,
    });
    wait_until("the settlement", Duration::from_secs(5), || {
        rows(reader.as_mut(), id)[0].settled_at.is_some()
    });
    let newest = reader
        .list_tokens(&TokenQuery {
            token_id: None,
            limit: 1,
        })
        .unwrap();
    assert_eq!(newest[0].created_at, 1_700_000_299);
    assert_eq!(
        (newest[0].service.as_str(), newest[0].price_sat),
        ("svc", 21)
    );
    let stats = handle.stats();
    assert_eq!(stats.challenges_recorded.load(Ordering::Relaxed), 300);
    assert_eq!(stats.settlements_recorded.load(Ordering::Relaxed), 1);
    assert!(
        stats.batches_committed.load(Ordering::Relaxed) >= 2,
        "MAX_BATCH is 256"
    );
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);
    let mut text = String::new();
    handle.render_metrics(&mut text);
    assert!(
        text.contains("aperture_store_challenges_recorded_total 300"),
        "{text}"
    );
    service.shutdown();
}

#[test]
fn revocation_reaches_every_subscriber_within_a_second_and_is_loaded_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_db(dir.path());
    let mut cli = store::open(&db).unwrap();
    assert!(cli.revoke([1; 32]).unwrap());
    let bridge = bridge();
    let mut core = bridge.handle().subscribe(); // what a worker core's event task sees
    let service = store::start(&db, &bridge.handle(), "holder").unwrap();
    assert_eq!(service.handle().revoked_snapshot(), vec![[1; 32]]);
    // As `aperture token revoke` does it: a separate connection, no running proxy involved.
    let started = Instant::now();
    assert!(cli.revoke([2; 32]).unwrap());
    wait_revoked(&mut core, [2; 32], Duration::from_secs(1));
    assert!(started.elapsed() < Duration::from_secs(1));
    let mut snapshot = service.handle().revoked_snapshot();
    snapshot.sort();
    assert_eq!(snapshot, vec![[1; 32], [2; 32]]);
    let handle = service.handle();
    assert_eq!(
        handle.stats().revocations_published.load(Ordering::Relaxed),
        1,
        "the start-up set is not re-published"
    );
    service.shutdown();
}

/// A [`Store`] whose writes fail while `down` is set; otherwise the SQLite store.
struct Flaky {
    inner: SqliteStore,
    down: Arc<AtomicBool>,
}

impl Store for Flaky {
    fn apply(&mut self, ops: &[Op]) -> Result<(), DbError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(DbError::Import("simulated outage".into()));
        }
        self.inner.apply(ops)
    }
    fn revoke(&mut self, token_id: Key32) -> Result<bool, DbError> {
        self.inner.revoke(token_id)
    }
    fn revoked_since(&mut self, cursor: i64) -> Result<(Vec<Key32>, i64), DbError> {
        self.inner.revoked_since(cursor)
    }
    fn revoked_at(&mut self, token_id: Key32) -> Result<Option<u64>, DbError> {
        self.inner.revoked_at(token_id)
    }
    fn list_tokens(&mut self, query: &TokenQuery) -> Result<Vec<LedgerRow>, DbError> {
        self.inner.list_tokens(query)
    }
    fn import_legacy_keys(&mut self, keys: &[(Key32, Key32)]) -> Result<usize, DbError> {
        self.inner.import_legacy_keys(keys)
    }
    fn legacy_root_key(&mut self, hash: &Key32) -> Result<Option<Key32>, DbError> {
        self.inner.legacy_root_key(hash)
    }
    fn legacy_keys(&mut self) -> Result<Vec<(Key32, Key32)>, DbError> {
        self.inner.legacy_keys()
    }
    fn claim_charges(&mut self, claims: &[ChargeClaim]) -> Result<Vec<bool>, DbError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(DbError::Import("simulated outage".into()));
        }
        self.inner.claim_charges(claims)
    }
    fn prune_charges(&mut self, before: u64) -> Result<usize, DbError> {
        self.inner.prune_charges(before)
    }
}

#[test]
fn an_outage_is_counted_and_the_writes_land_once_the_store_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let down = Arc::new(AtomicBool::new(true));
    let flaky = Flaky {
        inner: SqliteStore::open(&path, true).unwrap(),
        down: down.clone(),
    };
    let service: StoreService = store::start_with(
        Box::new(flaky),
        None,
        Box::new(|_| {}),
        "holder",
        store::no_payer("tests"),
    )
    .unwrap();
    let handle = service.handle();
    assert!(handle.try_record_challenge([9; 32], [8; 32], "svc", 1, 5));
    let stats = handle.stats();
    wait_until("a counted write error", Duration::from_secs(5), || {
        stats.write_errors.load(Ordering::Relaxed) > 0
    });
    assert_eq!(stats.up.load(Ordering::Relaxed), 0);
    let mut text = String::new();
    handle.render_metrics(&mut text);
    assert!(text.contains("aperture_store_up 0"), "{text}");
    down.store(false, Ordering::SeqCst);
    let mut reader = SqliteStore::open(&path, true).unwrap();
    wait_until("the retried write", Duration::from_secs(10), || {
        rows(&mut reader, [9; 32]).len() == 1
    });
    assert_eq!(stats.up.load(Ordering::Relaxed), 1);
    service.shutdown();
}

#[test]
fn shutdown_commits_pending_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_db(dir.path());
    let service = store::start_with(
        store::open(&db).unwrap(),
        None,
        Box::new(|_| {}),
        "holder",
        store::no_payer("tests"),
    )
    .unwrap();
    assert!(service
        .handle()
        .try_record_challenge([4; 32], [5; 32], "s", 3, 7));
    service.shutdown();
    assert_eq!(rows(store::open(&db).unwrap().as_mut(), [4; 32]).len(), 1);
}

#[test]
fn etcd_is_refused_with_what_to_use_instead() {
    let yaml = "listenaddr: \":1\"\ndbbackend: etcd\netcd:\n  host: \"localhost:2379\"\nauthenticator:\n  disable: true\n";
    let config = config::parse(yaml, "t").unwrap();
    let err = store::open(&config.db).err().unwrap();
    assert!(err.is_config_error());
    assert!(
        err.to_string()
            .contains("etcd is not supported; use sqlite (default) or postgres"),
        "{err}"
    );
    let err = store::load_legacy_keys(&config).unwrap_err();
    assert!(matches!(err, DbError::EtcdUnsupported));
}

/// A SQLite file laid out like Go aperture's, holding vector 2's root key and the MPP secret.
fn go_aperture_sqlite(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE secrets (id INTEGER PRIMARY KEY, hash BLOB UNIQUE NOT NULL, \
         secret BLOB UNIQUE NOT NULL, created_at TIMESTAMP NOT NULL)",
    )
    .unwrap();
    let mpp: [u8; 32] =
        <sha2::Sha256 as sha2::Digest>::digest(b"aperture-mpp-hmac-secret-v1").into();
    for (hash, secret) in [
        (hex::decode(V2_ID_HASH).unwrap(), vec![1u8; 32]),
        (mpp.to_vec(), vec![9u8; 32]),
    ] {
        conn.execute(
            "INSERT INTO secrets (hash, secret, created_at) VALUES (?1, ?2, CURRENT_TIMESTAMP)",
            rusqlite::params![hash, secret],
        )
        .unwrap();
    }
}

fn vector_2_verifies_with(keys: &store::LegacyKeys) {
    let header = format!("L402 {V2_B64}:{}", "02".repeat(32));
    let cred = parse_credentials([("Authorization", header.as_bytes())])
        .remove(0)
        .unwrap();
    let id_hash: Key32 = <sha2::Sha256 as sha2::Digest>::digest(&cred.macaroon.identifier).into();
    assert_eq!(hex::encode(id_hash), V2_ID_HASH);
    let root = keys
        .get(&id_hash)
        .expect("vector 2's root key was imported");
    let req = |now_unix| VerifyRequest {
        service: "service1",
        capability: None,
        now_unix,
    };
    assert_eq!(
        verify_with_root_key(&cred, root, &req(1_699_999_999)),
        Ok([3; 32])
    );
    assert_eq!(
        verify_with_root_key(&cred, root, &req(1_700_000_000)),
        Err(VerifyError::Caveat(CaveatError::Expired))
    );
    assert_eq!(
        verify_with_root_key(&cred, &[2; 32], &req(1_699_999_999)),
        Err(VerifyError::BadSignature),
        "only the imported key verifies it"
    );
}

fn aperture(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = crate::support::aperture_command()
        .args(args)
        .args(["--basedir", dir.to_str().unwrap()])
        .env("HOME", dir) // never the real ~/.aperture
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

#[test]
fn go_aperture_import_keeps_vector_2_verifying() {
    let dir = tempfile::tempdir().unwrap();
    let go_db = dir.path().join("go-aperture.db");
    go_aperture_sqlite(&go_db);
    let db_path = dir.path().join("ours.db");
    let config_path = dir.path().join("aperture.yaml");
    std::fs::write(
        &config_path,
        format!(
            "listenaddr: \":1\"\ndbbackend: sqlite\nsqlite:\n  databasefilename: \"{}\"\nauthenticator:\n  disable: true\n",
            db_path.display()
        ),
    )
    .unwrap();
    let (code, out, err) = aperture(
        dir.path(),
        &[
            "import",
            "--from-sqlite",
            go_db.to_str().unwrap(),
            "--config",
            config_path.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("imported 1 new root key(s), skipped 0 (malformed); carried the Payment (MPP) HMAC secret"),
        "{out}"
    );
    let config = config::load(&config_path).unwrap();
    let keys = store::load_legacy_keys(&config).unwrap();
    assert_eq!(keys.len(), 1, "the MPP HMAC secret is not a token key");
    vector_2_verifies_with(&keys);
    // Importing again adds nothing.
    let (code, out, _) = aperture(
        dir.path(),
        &[
            "import",
            "--from-sqlite",
            go_db.to_str().unwrap(),
            "--config",
            config_path.to_str().unwrap(),
        ],
    );
    assert_eq!((code, out.contains("imported 0 new")), (0, true), "{out}");
    let (code, _, err) = aperture(
        dir.path(),
        &["import", "--from-sqlite", "/nonexistent/x.db"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Go aperture database"), "{err}");
}

#[test]
fn token_commands_revoke_list_and_show() {
    let dir = tempfile::tempdir().unwrap();
    // No config file: the database is <basedir>/aperture.db, as `aperture --dev` uses it.
    let db = sqlite_db(dir.path());
    let mut s = store::open(&db).unwrap();
    s.record_challenge(&Challenge {
        token_id: [0xab; 32],
        payment_hash: [0xcd; 32],
        service: "demo".into(),
        price_sat: 10,
        created_at: 1_700_000_000,
    })
    .unwrap();
    s.mark_settled([0xcd; 32], 1_700_000_005).unwrap();
    let id = "ab".repeat(32);
    let (code, out, err) = aperture(dir.path(), &["token", "revoke", &id]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("revoked {id}")), "{out}");
    let (_, out, _) = aperture(dir.path(), &["token", "revoke", &id]);
    assert!(out.contains("already revoked"), "{out}");
    assert!(s.revoked_at([0xab; 32]).unwrap().is_some());
    let (code, out, _) = aperture(dir.path(), &["token", "list"]);
    assert_eq!(code, 0);
    let line = out
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("demo") && line.contains("1700000005"),
        "{line}"
    );
    let (code, out, _) = aperture(dir.path(), &["token", "show", &id]);
    assert_eq!(code, 0);
    assert!(
        out.contains("settled at: 1700000005") && out.contains("revoked at:"),
        "{out}"
    );
    let (code, _, err) = aperture(dir.path(), &["token", "revoke", "xyz"]);
    assert_eq!(code, 64, "{err}");
    let (_, out, _) = aperture(dir.path(), &["token", "revoke", &"11".repeat(32)]);
    assert!(out.contains("no challenge"), "{out}");
}

/// The config's database section for the PostgreSQL at `url` (`dbbackend` and `postgres:`).
pub(crate) fn pg_yaml(url: &str) -> String {
    let parsed: postgres::Config = url.parse().unwrap();
    let host = match &parsed.get_hosts()[0] {
        postgres::config::Host::Tcp(h) => h.clone(),
        other => panic!("{other:?}"),
    };
    format!(
        "dbbackend: postgres\npostgres:\n  host: \"{host}\"\n  port: {}\n  user: \"{}\"\n  password: \"\"\n  dbname: \"{}\"\n",
        parsed.get_ports()[0],
        parsed.get_user().unwrap_or("postgres"),
        parsed.get_dbname().unwrap_or("postgres"),
    )
}

/// `APERTURE_TEST_PG`, or a printed skip outside CI; in CI its absence fails the test.
pub(crate) fn pg_url() -> Option<String> {
    match std::env::var("APERTURE_TEST_PG") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI is set but APERTURE_TEST_PG is not: PostgreSQL must run for the store tests (scripts/test.sh starts one)")
        }
        _ => {
            eprintln!("skipping: APERTURE_TEST_PG is unset (scripts/test.sh starts a PostgreSQL and sets it)");
            None
        }
    }
}

#[test]
fn postgres_two_instances_share_revocations_and_the_ledger() {
    let Some(url) = pg_url() else { return };
    let (id, hash): (Key32, Key32) = (rand::random(), rand::random());
    // Instance A and instance B: each its own bridge (its own cores) and store thread.
    let (bridge_a, bridge_b) = (bridge(), bridge());
    let mut cores_b = bridge_b.handle().subscribe();
    let store_a = PgStore::connect(&url, true).unwrap();
    let service_a = store::start_with(
        Box::new(store_a),
        Some(bridge_a.handle().subscribe()),
        {
            let h = bridge_a.handle();
            Box::new(move |token_id| h.publish(Event::TokenRevoked { token_id }))
        },
        "holder",
        store::no_payer("tests"),
    )
    .unwrap();
    let store_b = PgStore::connect(&url, true).unwrap();
    let service_b = store::start_with(
        Box::new(store_b),
        Some(bridge_b.handle().subscribe()),
        {
            let h = bridge_b.handle();
            Box::new(move |token_id| h.publish(Event::TokenRevoked { token_id }))
        },
        "holder",
        store::no_payer("tests"),
    )
    .unwrap();
    // A mints; the settlement arrives at B (whose lnd saw it); the shared ledger has both.
    assert!(service_a
        .handle()
        .try_record_challenge(id, hash, "svc", 42, 1_700_000_000));
    let mut reader = PgStore::connect(&url, true).unwrap();
    wait_until("A's ledger row", Duration::from_secs(5), || {
        rows(&mut reader, id).len() == 1
    });
    bridge_b.handle().publish(Event::InvoiceSettled {
        payment_hash: hash,
        settle_index: 1,
    });
    wait_until("the settlement via B", Duration::from_secs(5), || {
        rows(&mut reader, id)[0].settled_at.is_some()
    });
    // Revoked through A's database connection: B's cores learn it within 1 s.
    let mut on_a = PgStore::connect(&url, false).unwrap();
    assert!(on_a.revoke(id).unwrap());
    let mut on_b = PgStore::connect(&url, false).unwrap();
    assert!(on_b.revoked_since(0).unwrap().0.contains(&id));
    wait_revoked(&mut cores_b, id, Duration::from_secs(1));
    assert!(service_b.handle().revoked_snapshot().contains(&id));
    assert!(rows(&mut reader, id)[0].revoked_at.is_some());
    service_a.shutdown();
    service_b.shutdown();
}

#[test]
fn postgres_import_from_go_aperture_and_load_through_config() {
    let Some(url) = pg_url() else { return };
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS secrets (id BIGSERIAL PRIMARY KEY, hash BYTEA UNIQUE NOT NULL, \
             secret BYTEA UNIQUE NOT NULL, created_at TIMESTAMP NOT NULL DEFAULT now())",
        )
        .unwrap();
    client
        .execute(
            "INSERT INTO secrets (hash, secret) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&hex::decode(V2_ID_HASH).unwrap(), &vec![1u8; 32]],
        )
        .unwrap();
    let mut ours = PgStore::connect(&url, true).unwrap();
    store::import(&mut ours, store::ImportSource::Postgres(&url)).unwrap();
    let id_hash: Key32 = hex::decode(V2_ID_HASH).unwrap().try_into().unwrap();
    assert_eq!(ours.legacy_root_key(&id_hash).unwrap(), Some([1; 32]));
    // The same database through the config keys (`dbbackend: postgres`).
    let parsed = postgres::Config::from_str(&url).unwrap();
    let host = match &parsed.get_hosts()[0] {
        postgres::config::Host::Tcp(h) => h.clone(),
        other => panic!("{other:?}"),
    };
    let yaml = format!(
        "listenaddr: \":1\"\ndbbackend: postgres\npostgres:\n  host: \"{host}\"\n  port: {}\n  user: \"{}\"\n  password: \"\"\n  dbname: \"{}\"\nauthenticator:\n  disable: true\n",
        parsed.get_ports()[0],
        parsed.get_user().unwrap_or("postgres"),
        parsed.get_dbname().unwrap_or("postgres"),
    );
    let config = config::parse(&yaml, "t").unwrap();
    vector_2_verifies_with(&store::load_legacy_keys(&config).unwrap());
}

fn claim(hash: Key32, expires_at: u64) -> ChargeClaim {
    ChargeClaim {
        payment_hash: hash,
        challenge_id: "id".into(),
        expires_at,
        consumed_at: 1,
    }
}

#[test]
fn a_charge_is_claimed_once_through_the_store_thread() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("a.db"), true).unwrap();
    let service = store::start_with(
        Box::new(store),
        None,
        Box::new(|_| {}),
        "holder",
        store::no_payer("tests"),
    )
    .unwrap();
    let handle = service.handle();
    let hash: Key32 = rand::random();
    let answer = |h: &store::StoreHandle| {
        let rx = h.try_claim_charge(claim(hash, u64::MAX / 4)).unwrap();
        futures_executor_block_on(rx).unwrap()
    };
    assert_eq!(answer(&handle), Ok(true), "the first use");
    assert_eq!(answer(&handle), Ok(false), "a replay");
    let stats = handle.stats();
    assert_eq!(stats.charges_claimed.load(Ordering::Relaxed), 1);
    assert_eq!(stats.charges_replayed.load(Ordering::Relaxed), 1);
    service.shutdown();
}

#[test]
fn a_database_outage_answers_a_claim_with_an_error_never_a_second_use() {
    let dir = tempfile::tempdir().unwrap();
    let down = Arc::new(AtomicBool::new(true));
    let flaky = Flaky {
        inner: SqliteStore::open(&dir.path().join("a.db"), true).unwrap(),
        down: down.clone(),
    };
    let service = store::start_with(
        Box::new(flaky),
        None,
        Box::new(|_| {}),
        "holder",
        store::no_payer("tests"),
    )
    .unwrap();
    let handle = service.handle();
    let hash: Key32 = rand::random();
    let rx = handle.try_claim_charge(claim(hash, u64::MAX / 4)).unwrap();
    assert_eq!(futures_executor_block_on(rx).unwrap(), Err(()));
    down.store(false, Ordering::SeqCst);
    let rx = handle.try_claim_charge(claim(hash, u64::MAX / 4)).unwrap();
    assert_eq!(futures_executor_block_on(rx).unwrap(), Ok(true));
    service.shutdown();
}

#[test]
fn expired_claims_are_pruned_and_the_mpp_secret_is_made_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(&dir.path().join("a.db"), true).unwrap();
    let (old, new): (Key32, Key32) = (rand::random(), rand::random());
    assert_eq!(
        store
            .claim_charges(&[claim(old, 100), claim(new, 10_000)])
            .unwrap(),
        vec![true, true]
    );
    assert_eq!(store.prune_charges(5_000).unwrap(), 1);
    assert_eq!(store.claim_charges(&[claim(old, 100)]).unwrap(), vec![true]);
    assert_eq!(
        store.claim_charges(&[claim(new, 100)]).unwrap(),
        vec![false]
    );
    let first = store.mpp_secret([7; 32]).unwrap();
    assert_eq!(first, [7; 32]);
    assert_eq!(
        store.mpp_secret([8; 32]).unwrap(),
        [7; 32],
        "kept, not replaced"
    );
}

#[test]
fn postgres_two_instances_claiming_one_charge_at_once_exactly_one_wins() {
    let Some(url) = pg_url() else { return };
    let hash: Key32 = rand::random();
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let wins: Vec<bool> = (0..2)
        .map(|_| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut store = PgStore::connect(&url, true).unwrap();
                barrier.wait();
                store.claim_charges(&[claim(hash, u64::MAX / 4)]).unwrap()[0]
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{wins:?}");
    // And both instances agree on one MPP secret.
    let mut a = PgStore::connect(&url, true).unwrap();
    let mut b = PgStore::connect(&url, true).unwrap();
    assert_eq!(
        a.mpp_secret(rand::random()).unwrap(),
        b.mpp_secret(rand::random()).unwrap()
    );
}

/// Waits for a future on this thread (the store answers from its own thread).
fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}
