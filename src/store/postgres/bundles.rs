//! The built-in meter's bundles (`meter_bundles`): the model each token bought and its unspent
//! tokens, so balances survive a restart (PostgreSQL dialect). Debits are relative, so a write
//! never loses another's.

use postgres::{Client, Transaction};

use crate::store::db::{to_i64, unix_now, BundleRow, Key32};

pub(super) const MIGRATION: &str = "
    CREATE TABLE meter_bundles (
        token_id BYTEA PRIMARY KEY,
        service TEXT NOT NULL,
        model TEXT NOT NULL,
        remaining BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
";

pub(super) fn insert(tx: &mut Transaction<'_>, r: &BundleRow) -> Result<u64, postgres::Error> {
    tx.execute(
        "INSERT INTO meter_bundles (token_id, service, model, remaining, updated_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (token_id) DO NOTHING",
        &[
            &&r.token_id[..],
            &r.service,
            &r.model,
            &to_i64(r.remaining),
            &to_i64(unix_now()),
        ],
    )
}

pub(super) fn debit(
    tx: &mut Transaction<'_>,
    token_id: &Key32,
    tokens: u64,
) -> Result<u64, postgres::Error> {
    tx.execute(
        "UPDATE meter_bundles SET remaining = GREATEST(remaining - $2, 0), updated_at = $3 \
         WHERE token_id = $1",
        &[&&token_id[..], &to_i64(tokens), &to_i64(unix_now())],
    )
}

pub(super) fn get(
    client: &mut Client,
    token_id: &Key32,
) -> Result<Option<BundleRow>, postgres::Error> {
    let row = client.query_opt(
        "SELECT service, model, remaining FROM meter_bundles WHERE token_id = $1",
        &[&&token_id[..]],
    )?;
    Ok(row.map(|row| {
        let remaining: i64 = row.get(2);
        BundleRow {
            token_id: *token_id,
            service: row.get(0),
            model: row.get(1),
            remaining: u64::try_from(remaining).unwrap_or(0),
        }
    }))
}
