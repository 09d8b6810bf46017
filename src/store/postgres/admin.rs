//! The admin API's tables on PostgreSQL: migration 4 (SQLite's in PostgreSQL's dialect: the
//! ledger gains its `kind` and a stable `id` from a sequence, numbered in `created_at` order;
//! the `services` table and its change counter) and the statements behind the admin methods of
//! [`super::PgStore`]. The change counter is a row, bumped in the same transaction as the
//! change, so a reader that sees the new version also sees the change (a sequence would not:
//! `nextval` is visible before its transaction commits).

use postgres::types::ToSql;
use postgres::{Client, IsolationLevel, Transaction};

use crate::store::admin::{
    days_of, refunds_filter, stats_of, Arg, DayRevenue, DbService, Filter, Stats, TxKind, TxQuery,
    TxRaw, DAYS_GROUP, DAYS_SELECT, REFUNDED_SELECT, STATS_GROUP, STATS_SELECT, TX_SELECT,
};
use crate::store::db::{to_i64, to_u64, Key32};
use crate::store::session::{OpenOutcome, SessionOpen, TopUpOutcome};

type PgResult<T> = Result<T, postgres::Error>;

/// Migration 4. The session credits' rows are written before the ids are numbered, so every
/// row gets one in `created_at` order.
pub(super) const MIGRATION: &str = "
    ALTER TABLE ledger ADD COLUMN kind TEXT NOT NULL DEFAULT 'l402' CHECK (kind IN
        ('l402', 'mpp_charge', 'mpp_session_deposit', 'mpp_session_top_up'));
    UPDATE ledger SET kind = 'mpp_charge' WHERE token_id = payment_hash;
    INSERT INTO ledger (payment_hash, token_id, service, price_sat, created_at, settled_at, kind)
        SELECT c.payment_hash, c.payment_hash,
            COALESCE((SELECT l.service FROM ledger l WHERE l.payment_hash = s.payment_hash), ''),
            c.amount_sats, c.created_at, c.created_at,
            CASE WHEN c.payment_hash = s.payment_hash
                THEN 'mpp_session_deposit' ELSE 'mpp_session_top_up' END
        FROM mpp_session_credits c JOIN mpp_sessions s ON s.session_id = c.session_id
        ON CONFLICT (payment_hash) DO UPDATE SET kind = EXCLUDED.kind,
            settled_at = COALESCE(ledger.settled_at, EXCLUDED.settled_at);
    CREATE SEQUENCE ledger_id_seq;
    ALTER TABLE ledger ADD COLUMN id BIGINT;
    UPDATE ledger SET id = o.n FROM (SELECT payment_hash,
        row_number() OVER (ORDER BY created_at, payment_hash) AS n FROM ledger) o
        WHERE ledger.payment_hash = o.payment_hash;
    SELECT setval('ledger_id_seq', (SELECT COALESCE(max(id), 0) + 1 FROM ledger), false);
    ALTER TABLE ledger ALTER COLUMN id SET DEFAULT nextval('ledger_id_seq'),
        ALTER COLUMN id SET NOT NULL;
    ALTER SEQUENCE ledger_id_seq OWNED BY ledger.id;
    CREATE UNIQUE INDEX ledger_id ON ledger (id);
    DROP INDEX ledger_created_at;
    CREATE INDEX ledger_created_at_id ON ledger (created_at, id);
    CREATE INDEX ledger_settled_at ON ledger (settled_at);
    CREATE INDEX ledger_service_created_at_id ON ledger (service, created_at, id);
    CREATE TABLE services (
        name TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE TABLE services_version (
        id SMALLINT PRIMARY KEY CHECK (id = 1),
        version BIGINT NOT NULL
    );
    INSERT INTO services_version (id, version) VALUES (1, 0);
";

/// The ledger insert of [`super::PgStore::apply`].
pub(super) const INSERT_LEDGER: &str = "INSERT INTO ledger \
    (payment_hash, token_id, service, price_sat, created_at, kind) \
    VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (payment_hash) DO NOTHING";

/// A filter's values as the client binds them.
fn bound(args: &[Arg]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter()
        .map(|a| match a {
            Arg::Text(s) => s as &(dyn ToSql + Sync),
            Arg::Int(i) => i as &(dyn ToSql + Sync),
        })
        .collect()
}

/// Opens the session and, when it opened, books its deposit in the ledger ([`credit`]).
pub(super) fn open_session(tx: &mut Transaction<'_>, open: &SessionOpen) -> PgResult<OpenOutcome> {
    let outcome = super::sessions::open_session(tx, open)?;
    if outcome == OpenOutcome::Opened {
        let (hash, id, kind) = (&open.payment_hash, &open.session_id, TxKind::SessionDeposit);
        credit(tx, hash, id, open.deposit_sats, kind, open.now)?;
    }
    Ok(outcome)
}

/// Credits the top-up and, when it applied, books it in the ledger ([`credit`]).
pub(super) fn top_up(
    tx: &mut Transaction<'_>,
    session_id: &str,
    hash: Key32,
    amount_sats: u64,
    holder: &str,
    now: u64,
) -> PgResult<TopUpOutcome> {
    let outcome = super::sessions::top_up(tx, session_id, hash, amount_sats, holder, now)?;
    if outcome == TopUpOutcome::Applied {
        credit(tx, &hash, session_id, amount_sats, TxKind::TopUp, now)?;
    }
    Ok(outcome)
}

/// A session credit in the ledger, in the credit's transaction (see SQLite's `credit`).
fn credit(
    tx: &mut Transaction<'_>,
    hash: &Key32,
    session_id: &str,
    amount_sats: u64,
    kind: TxKind,
    now: u64,
) -> PgResult<()> {
    tx.execute(
        "INSERT INTO ledger (payment_hash, token_id, service, price_sat, created_at, \
         settled_at, kind) \
         VALUES ($1, $1, COALESCE((SELECT l.service FROM ledger l JOIN mpp_sessions s \
         ON l.payment_hash = s.payment_hash WHERE s.session_id = $2), ''), $3, $4, $4, $5) \
         ON CONFLICT (payment_hash) DO UPDATE SET kind = EXCLUDED.kind, \
         settled_at = COALESCE(ledger.settled_at, EXCLUDED.settled_at)",
        &[
            &&hash[..],
            &session_id,
            &to_i64(amount_sats),
            &to_i64(now),
            &kind.as_str(),
        ],
    )?;
    Ok(())
}

pub(super) fn list_services(client: &mut Client) -> PgResult<Vec<DbService>> {
    let rows = client.query(
        "SELECT name, spec, created_at, updated_at FROM services",
        &[],
    )?;
    let mut services: Vec<DbService> = rows
        .iter()
        .map(|r| DbService {
            name: r.get(0),
            spec: r.get(1),
            created_at: to_u64(r.get(2)),
            updated_at: to_u64(r.get(3)),
        })
        .collect();
    // By byte order, as SQLite's: the server's collation may order differently.
    services.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(services)
}

/// After one service write: when it changed a row, bumps the version and announces it (the
/// `NOTIFY` is delivered when this transaction commits, never before). Returns whether it did.
fn changed(tx: &mut Transaction<'_>, n: u64) -> PgResult<bool> {
    if n == 0 {
        return Ok(false);
    }
    tx.execute(
        "UPDATE services_version SET version = version + 1 WHERE id = 1",
        &[],
    )?;
    tx.execute(
        &format!(
            "SELECT pg_notify('{}', version::text) FROM services_version WHERE id = 1",
            super::CHANNEL_SERVICES
        ),
        &[],
    )?;
    Ok(true)
}

pub(super) fn create_service(
    tx: &mut Transaction<'_>,
    name: &str,
    spec: &str,
    now: u64,
) -> PgResult<bool> {
    let n = tx.execute(
        "INSERT INTO services (name, spec, created_at, updated_at) VALUES ($1, $2, $3, $3) \
         ON CONFLICT (name) DO NOTHING",
        &[&name, &spec, &to_i64(now)],
    )?;
    changed(tx, n)
}

pub(super) fn update_service(
    tx: &mut Transaction<'_>,
    name: &str,
    spec: &str,
    now: u64,
) -> PgResult<bool> {
    let n = tx.execute(
        "UPDATE services SET spec = $2, updated_at = $3 WHERE name = $1",
        &[&name, &spec, &to_i64(now)],
    )?;
    changed(tx, n)
}

pub(super) fn delete_service(tx: &mut Transaction<'_>, name: &str) -> PgResult<bool> {
    let n = tx.execute("DELETE FROM services WHERE name = $1", &[&name])?;
    changed(tx, n)
}

pub(super) fn services_version(client: &mut Client) -> PgResult<i64> {
    Ok(client
        .query_one("SELECT version FROM services_version WHERE id = 1", &[])?
        .get(0))
}

/// A read-only snapshot: a page and its total, or the sums of one range, agree.
fn snapshot(client: &mut Client) -> PgResult<Transaction<'_>> {
    client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
}

pub(super) fn list_transactions(client: &mut Client, q: &TxQuery) -> PgResult<(Vec<TxRaw>, i64)> {
    let mut tx = snapshot(client)?;
    let mut f = q.filter('$');
    let filter = f.sql();
    let total: i64 = tx
        .query_one(
            &format!("SELECT count(*) FROM ledger l{filter}"),
            &bound(&f.args),
        )?
        .get(0);
    let limit = f.bind(Arg::Int(i64::from(q.effective_limit())));
    let offset = f.bind(Arg::Int(i64::from(q.offset)));
    let sql = format!(
        "{TX_SELECT}{filter} ORDER BY l.created_at DESC, l.id DESC LIMIT {limit} OFFSET {offset}"
    );
    let rows = tx
        .query(&sql, &bound(&f.args))?
        .iter()
        .map(|r| TxRaw {
            id: r.get(0),
            token_id: r.get(1),
            payment_hash: r.get(2),
            service: r.get(3),
            price_sat: r.get(4),
            created_at: r.get(5),
            settled_at: r.get(6),
            kind: r.get(7),
            revoked_at: r.get(8),
        })
        .collect();
    tx.commit()?;
    Ok((rows, total))
}

pub(super) fn stats(client: &mut Client, from: Option<u64>, to: Option<u64>) -> PgResult<Stats> {
    let mut tx = snapshot(client)?;
    let f = Filter::new('$').settled(from, to);
    let rows = tx
        .query(
            &format!("{STATS_SELECT}{}{STATS_GROUP}", f.sql()),
            &bound(&f.args),
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let f = refunds_filter(from, to, '$');
    let refunded: i64 = tx
        .query_one(&format!("{REFUNDED_SELECT}{}", f.sql()), &bound(&f.args))?
        .get(0);
    tx.commit()?;
    Ok(stats_of(rows, refunded))
}

pub(super) fn revenue_by_day(
    client: &mut Client,
    from: Option<u64>,
    to: Option<u64>,
) -> PgResult<Vec<DayRevenue>> {
    let f = Filter::new('$').settled(from, to);
    let rows = client
        .query(
            &format!("{DAYS_SELECT}{}{DAYS_GROUP}", f.sql()),
            &bound(&f.args),
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    Ok(days_of(rows))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use postgres::{Client, NoTls};

    use crate::store::admin::suite;
    use crate::store::postgres::{PgStore, MIGRATIONS};
    use crate::store::Store;

    /// `APERTURE_TEST_PG`, or a printed skip outside CI; in CI its absence fails the test.
    fn pg_url() -> Option<String> {
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

    /// A database of its own on the test server (the suite asserts exact totals), dropped at
    /// the end.
    struct FreshDb {
        server: String,
        name: String,
        url: String,
    }

    impl FreshDb {
        fn new() -> Option<FreshDb> {
            let server = pg_url()?;
            let name = format!("aperture_admin_{}", hex::encode(rand::random::<[u8; 6]>()));
            let mut client = Client::connect(&server, NoTls).unwrap();
            client
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .unwrap();
            let (head, query) = server.split_at(server.find('?').unwrap_or(server.len()));
            let base = match head.rfind('/') {
                Some(i) if !head[..i].ends_with('/') => &head[..i],
                _ => head,
            };
            let url = format!("{base}/{name}{query}");
            Some(FreshDb { server, name, url })
        }

        fn store(&self) -> PgStore {
            PgStore::connect(&self.url, true).unwrap()
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

    #[test]
    fn services_and_a_second_connection() {
        let Some(db) = FreshDb::new() else { return };
        suite::services(&mut db.store(), &mut db.store());
    }

    #[test]
    fn transactions() {
        let Some(db) = FreshDb::new() else { return };
        suite::transactions(&mut db.store());
    }

    #[test]
    fn stats() {
        let Some(db) = FreshDb::new() else { return };
        suite::stats(&mut db.store());
    }

    #[test]
    fn session_credits() {
        let Some(db) = FreshDb::new() else { return };
        suite::session_credits(&mut db.store());
    }

    #[test]
    fn pending_usage() {
        let Some(db) = FreshDb::new() else { return };
        suite::pending_usage(&mut db.store());
    }

    #[test]
    fn instances_see_each_others_service_changes() {
        let Some(db) = FreshDb::new() else { return };
        suite::feed(Box::new(db.store()), &mut db.store());
    }

    /// Two instances creating the same service at once: one wins, the counter moves once.
    #[test]
    fn a_service_is_created_once_across_instances() {
        let Some(db) = FreshDb::new() else { return };
        let v0 = db.store().services_version().unwrap();
        for round in 0..10 {
            let start = Arc::new(Barrier::new(2));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let (mut s, start) = (db.store(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        s.create_service(&format!("svc-{round}"), "{}", 1).unwrap()
                    })
                })
                .collect();
            let won: Vec<bool> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            assert_eq!(won.iter().filter(|w| **w).count(), 1, "round {round}");
        }
        assert_eq!(db.store().services_version().unwrap(), v0 + 10);
    }

    #[test]
    fn migration_4_keeps_the_ledger_and_books_the_session_credits() {
        let Some(db) = FreshDb::new() else { return };
        let mut client = Client::connect(&db.url, NoTls).unwrap();
        client
            .batch_execute("CREATE TABLE aperture_schema (version BIGINT NOT NULL)")
            .unwrap();
        for (i, sql) in MIGRATIONS[..3].iter().enumerate() {
            client.batch_execute(sql).unwrap();
            client
                .execute(
                    "INSERT INTO aperture_schema (version) VALUES ($1)",
                    &[&(i as i64 + 1)],
                )
                .unwrap();
        }
        let rows = suite::schema3_rows(|n| format!("'\\x{}'::bytea", hex::encode([n; 32])));
        client.batch_execute(&rows).unwrap();
        drop(client);
        suite::schema3_migrated(&mut db.store());
    }
}
