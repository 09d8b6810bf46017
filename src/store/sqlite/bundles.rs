//! The built-in meter's bundles (`meter_bundles`): the model each token bought and its unspent
//! tokens, so balances survive a restart (SQLite dialect). Debits are relative, so a write
//! never loses another's.

use rusqlite::{params, Connection, OptionalExtension};

use crate::store::db::{to_i64, unix_now, BundleRow, Key32};

pub(super) const MIGRATION: &str = "
    CREATE TABLE meter_bundles (
        token_id BLOB PRIMARY KEY NOT NULL,
        service TEXT NOT NULL,
        model TEXT NOT NULL,
        remaining INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
";

pub(super) fn insert(tx: &Connection, r: &BundleRow) -> rusqlite::Result<usize> {
    tx.prepare_cached(
        "INSERT INTO meter_bundles (token_id, service, model, remaining, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (token_id) DO NOTHING",
    )?
    .execute(params![
        &r.token_id[..],
        r.service,
        r.model,
        to_i64(r.remaining),
        to_i64(unix_now())
    ])
}

pub(super) fn debit(tx: &Connection, token_id: &Key32, tokens: u64) -> rusqlite::Result<usize> {
    tx.prepare_cached(
        "UPDATE meter_bundles SET remaining = MAX(remaining - ?2, 0), updated_at = ?3 \
         WHERE token_id = ?1",
    )?
    .execute(params![&token_id[..], to_i64(tokens), to_i64(unix_now())])
}

pub(super) fn get(conn: &Connection, token_id: &Key32) -> rusqlite::Result<Option<BundleRow>> {
    conn.prepare_cached("SELECT service, model, remaining FROM meter_bundles WHERE token_id = ?1")?
        .query_row(params![&token_id[..]], |row| {
            let remaining: i64 = row.get(2)?;
            Ok(BundleRow {
                token_id: *token_id,
                service: row.get(0)?,
                model: row.get(1)?,
                remaining: u64::try_from(remaining).unwrap_or(0),
            })
        })
        .optional()
}
