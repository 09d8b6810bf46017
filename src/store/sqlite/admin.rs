//! The admin API's tables on SQLite: migration 4 (the ledger rebuilt with a stable `id` and its
//! `kind`, the `services` table and its change counter) and the statements behind the admin
//! methods of [`super::SqliteStore`]: services, transactions, revenue, and the ledger rows a
//! session's credits write. The shared values and filter text are in [`crate::store::admin`].

use rusqlite::types::{ToSqlOutput, Value};
use rusqlite::{params, params_from_iter, Connection, ToSql};

use crate::store::admin::{
    days_of, refunds_filter, stats_of, Arg, DayRevenue, DbService, Filter, Stats, TxKind, TxQuery,
    TxRaw, DAYS_GROUP, DAYS_SELECT, REFUNDED_SELECT, STATS_GROUP, STATS_SELECT, TX_SELECT,
};
use crate::store::db::{to_i64, to_u64, Key32};
use crate::store::session::{OpenOutcome, SessionOpen, TopUpOutcome};

/// Migration 4. SQLite cannot add a primary key to a table, so the ledger is copied into one
/// with `id INTEGER PRIMARY KEY` (the rowid, stable across VACUUM), in `created_at` order, each
/// row's kind inferred (token id = payment hash: a charge). Then every session credit becomes
/// (or marks) its ledger row: the deposit's (`mpp_session_deposit`) and each top-up's
/// (`mpp_session_top_up`, under the deposit's service), settled when it was credited.
pub(super) const MIGRATION: &str = "
    CREATE TABLE ledger_v4 (
        id INTEGER PRIMARY KEY,
        payment_hash BLOB NOT NULL UNIQUE,
        token_id BLOB NOT NULL,
        service TEXT NOT NULL,
        price_sat INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        settled_at INTEGER,
        kind TEXT NOT NULL DEFAULT 'l402' CHECK (kind IN
            ('l402', 'mpp_charge', 'mpp_session_deposit', 'mpp_session_top_up'))
    );
    INSERT INTO ledger_v4 (payment_hash, token_id, service, price_sat, created_at, settled_at, kind)
        SELECT payment_hash, token_id, service, price_sat, created_at, settled_at,
            CASE WHEN token_id = payment_hash THEN 'mpp_charge' ELSE 'l402' END
        FROM ledger ORDER BY created_at, rowid;
    DROP TABLE ledger;
    ALTER TABLE ledger_v4 RENAME TO ledger;
    CREATE INDEX ledger_token_id ON ledger (token_id);
    CREATE INDEX ledger_created_at ON ledger (created_at);
    CREATE INDEX ledger_settled_at ON ledger (settled_at);
    CREATE INDEX ledger_service_created_at ON ledger (service, created_at);
    INSERT INTO ledger (payment_hash, token_id, service, price_sat, created_at, settled_at, kind)
        SELECT c.payment_hash, c.payment_hash,
            COALESCE((SELECT l.service FROM ledger l WHERE l.payment_hash = s.payment_hash), ''),
            c.amount_sats, c.created_at, c.created_at,
            CASE WHEN c.payment_hash = s.payment_hash
                THEN 'mpp_session_deposit' ELSE 'mpp_session_top_up' END
        FROM mpp_session_credits c JOIN mpp_sessions s ON s.session_id = c.session_id
        WHERE true ORDER BY c.id
        ON CONFLICT (payment_hash) DO UPDATE SET kind = excluded.kind,
            settled_at = COALESCE(ledger.settled_at, excluded.settled_at);
    CREATE TABLE services (
        name TEXT PRIMARY KEY NOT NULL,
        spec TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE services_version (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version INTEGER NOT NULL
    );
    INSERT INTO services_version (id, version) VALUES (1, 0);
";

/// The ledger insert of [`super::SqliteStore::apply`].
pub(super) const INSERT_LEDGER: &str = "INSERT INTO ledger \
    (payment_hash, token_id, service, price_sat, created_at, kind) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (payment_hash) DO NOTHING";

impl ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Arg::Text(s) => ToSqlOutput::Owned(Value::Text(s.clone())),
            Arg::Int(i) => ToSqlOutput::Owned(Value::Integer(*i)),
        })
    }
}

/// Opens the session and, when it opened, books its deposit in the ledger ([`credit`]).
pub(super) fn open_session(tx: &Connection, open: &SessionOpen) -> rusqlite::Result<OpenOutcome> {
    let outcome = super::sessions::open_session(tx, open)?;
    if outcome == OpenOutcome::Opened {
        let (hash, id, kind) = (&open.payment_hash, &open.session_id, TxKind::SessionDeposit);
        credit(tx, hash, id, open.deposit_sats, kind, open.now)?;
    }
    Ok(outcome)
}

/// Credits the top-up and, when it applied, books it in the ledger ([`credit`]).
pub(super) fn top_up(
    tx: &Connection,
    session_id: &str,
    hash: Key32,
    amount_sats: u64,
    holder: &str,
    now: u64,
) -> rusqlite::Result<TopUpOutcome> {
    let outcome = super::sessions::top_up(tx, session_id, hash, amount_sats, holder, now)?;
    if outcome == TopUpOutcome::Applied {
        credit(tx, &hash, session_id, amount_sats, TxKind::TopUp, now)?;
    }
    Ok(outcome)
}

/// A session credit in the ledger, in the credit's transaction: the row of `hash` (inserted
/// when missing, under the session deposit's service) gets `kind` and is settled `now` unless
/// it already was.
fn credit(
    tx: &Connection,
    hash: &Key32,
    session_id: &str,
    amount_sats: u64,
    kind: TxKind,
    now: u64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO ledger (payment_hash, token_id, service, price_sat, created_at, \
         settled_at, kind) \
         VALUES (?1, ?1, COALESCE((SELECT l.service FROM ledger l JOIN mpp_sessions s \
         ON l.payment_hash = s.payment_hash WHERE s.session_id = ?2), ''), ?3, ?4, ?4, ?5) \
         ON CONFLICT (payment_hash) DO UPDATE SET kind = excluded.kind, \
         settled_at = COALESCE(ledger.settled_at, excluded.settled_at)",
    )?
    .execute(params![
        &hash[..],
        session_id,
        to_i64(amount_sats),
        to_i64(now),
        kind.as_str()
    ])?;
    Ok(())
}

pub(super) fn list_services(conn: &Connection) -> rusqlite::Result<Vec<DbService>> {
    let mut stmt = conn
        .prepare_cached("SELECT name, spec, created_at, updated_at FROM services ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        Ok(DbService {
            name: r.get(0)?,
            spec: r.get(1)?,
            created_at: to_u64(r.get(2)?),
            updated_at: to_u64(r.get(3)?),
        })
    })?;
    rows.collect()
}

/// Runs one service write; when it changed a row, bumps the version. Returns whether it did.
fn changed(tx: &Connection, n: usize) -> rusqlite::Result<bool> {
    if n == 0 {
        return Ok(false);
    }
    tx.prepare_cached("UPDATE services_version SET version = version + 1 WHERE id = 1")?
        .execute([])?;
    Ok(true)
}

pub(super) fn create_service(
    tx: &Connection,
    name: &str,
    spec: &str,
    now: u64,
) -> rusqlite::Result<bool> {
    let n = tx
        .prepare_cached(
            "INSERT INTO services (name, spec, created_at, updated_at) VALUES (?1, ?2, ?3, ?3) \
             ON CONFLICT (name) DO NOTHING",
        )?
        .execute(params![name, spec, to_i64(now)])?;
    changed(tx, n)
}

pub(super) fn update_service(
    tx: &Connection,
    name: &str,
    spec: &str,
    now: u64,
) -> rusqlite::Result<bool> {
    let n = tx
        .prepare_cached("UPDATE services SET spec = ?2, updated_at = ?3 WHERE name = ?1")?
        .execute(params![name, spec, to_i64(now)])?;
    changed(tx, n)
}

pub(super) fn delete_service(tx: &Connection, name: &str) -> rusqlite::Result<bool> {
    let n = tx
        .prepare_cached("DELETE FROM services WHERE name = ?1")?
        .execute([name])?;
    changed(tx, n)
}

pub(super) fn services_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT version FROM services_version WHERE id = 1")?
        .query_row([], |r| r.get(0))
}

fn tx_raw(r: &rusqlite::Row<'_>) -> rusqlite::Result<TxRaw> {
    Ok(TxRaw {
        id: r.get(0)?,
        token_id: r.get(1)?,
        payment_hash: r.get(2)?,
        service: r.get(3)?,
        price_sat: r.get(4)?,
        created_at: r.get(5)?,
        settled_at: r.get(6)?,
        kind: r.get(7)?,
        revoked_at: r.get(8)?,
    })
}

/// The page and the total, read in one (deferred, so consistent) transaction.
pub(super) fn list_transactions(
    conn: &mut Connection,
    q: &TxQuery,
) -> rusqlite::Result<(Vec<TxRaw>, i64)> {
    let tx = conn.transaction()?;
    let mut f = q.filter('?');
    let filter = f.sql();
    let total: i64 = tx.query_row(
        &format!("SELECT count(*) FROM ledger l{filter}"),
        params_from_iter(f.args.iter()),
        |r| r.get(0),
    )?;
    let limit = f.bind(Arg::Int(i64::from(q.effective_limit())));
    let offset = f.bind(Arg::Int(i64::from(q.offset)));
    let sql = format!(
        "{TX_SELECT}{filter} ORDER BY l.created_at DESC, l.id DESC LIMIT {limit} OFFSET {offset}"
    );
    let rows = {
        let mut stmt = tx.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(f.args.iter()), tx_raw)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    tx.commit()?;
    Ok((rows, total))
}

pub(super) fn stats(
    conn: &mut Connection,
    from: Option<u64>,
    to: Option<u64>,
) -> rusqlite::Result<Stats> {
    let tx = conn.transaction()?;
    let f = Filter::new('?').settled(from, to);
    let rows = {
        let mut stmt = tx.prepare(&format!("{STATS_SELECT}{}{STATS_GROUP}", f.sql()))?;
        let rows = stmt.query_map(params_from_iter(f.args.iter()), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    let f = refunds_filter(from, to, '?');
    let refunded: i64 = tx.query_row(
        &format!("{REFUNDED_SELECT}{}", f.sql()),
        params_from_iter(f.args.iter()),
        |r| r.get(0),
    )?;
    tx.commit()?;
    Ok(stats_of(rows, refunded))
}

pub(super) fn revenue_by_day(
    conn: &Connection,
    from: Option<u64>,
    to: Option<u64>,
) -> rusqlite::Result<Vec<DayRevenue>> {
    let f = Filter::new('?').settled(from, to);
    let mut stmt = conn.prepare(&format!("{DAYS_SELECT}{}{DAYS_GROUP}", f.sql()))?;
    let rows = stmt.query_map(params_from_iter(f.args.iter()), |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })?;
    Ok(days_of(rows.collect::<rusqlite::Result<Vec<_>>>()?))
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use crate::store::admin::suite;
    use crate::store::sqlite::{SqliteStore, MIGRATIONS};

    fn fresh(dir: &tempfile::TempDir, name: &str) -> SqliteStore {
        SqliteStore::open(&dir.path().join(name), true).unwrap()
    }

    #[test]
    fn services_and_a_second_connection() {
        let dir = tempfile::tempdir().unwrap();
        let mut other = fresh(&dir, "a.db");
        suite::services(&mut fresh(&dir, "a.db"), &mut other);
    }

    #[test]
    fn transactions() {
        let dir = tempfile::tempdir().unwrap();
        suite::transactions(&mut fresh(&dir, "a.db"));
    }

    #[test]
    fn stats() {
        let dir = tempfile::tempdir().unwrap();
        suite::stats(&mut fresh(&dir, "a.db"));
    }

    #[test]
    fn session_credits() {
        let dir = tempfile::tempdir().unwrap();
        suite::session_credits(&mut fresh(&dir, "a.db"));
    }

    #[test]
    fn pending_usage() {
        let dir = tempfile::tempdir().unwrap();
        suite::pending_usage(&mut fresh(&dir, "a.db"));
    }

    /// A file at schema 3 with ledger rows and sessions, migrated to 4.
    #[test]
    fn migration_4_keeps_the_ledger_and_books_the_session_credits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE aperture_schema (version INTEGER NOT NULL)")
            .unwrap();
        for (i, sql) in MIGRATIONS[..3].iter().enumerate() {
            conn.execute_batch(sql).unwrap();
            conn.execute("INSERT INTO aperture_schema (version) VALUES (?1)", [i + 1])
                .unwrap();
        }
        let rows = suite::schema3_rows(|n| format!("X'{}'", hex::encode([n; 32])));
        conn.execute_batch(&rows).unwrap();
        drop(conn);
        suite::schema3_migrated(&mut SqliteStore::open(&path, true).unwrap());
    }
}
