//! Metered usage reports the pricer did not take (`pending_usage`), kept for a replay at the
//! next start so that no debit is lost (PostgreSQL dialect).

use lnd_bridge::{PricerTarget, UsageReport};
use postgres::{Client, Transaction};

use crate::store::db::{to_i64, unix_now};

pub(super) const MIGRATION: &str = "
    CREATE TABLE pending_usage (
        id BIGSERIAL PRIMARY KEY,
        pricer_address TEXT NOT NULL,
        pricer_insecure BOOLEAN NOT NULL,
        pricer_tls_cert TEXT,
        token_id TEXT NOT NULL,
        path TEXT NOT NULL,
        service TEXT NOT NULL,
        http_status INTEGER NOT NULL,
        content_type TEXT NOT NULL,
        content_encoding TEXT NOT NULL,
        complete BOOLEAN NOT NULL,
        response_tail BYTEA NOT NULL,
        reserved_estimate BIGINT NOT NULL,
        created_at BIGINT NOT NULL
    );
";

pub(super) fn insert(tx: &mut Transaction<'_>, r: &UsageReport) -> Result<u64, postgres::Error> {
    let tls = r
        .target
        .tls_cert_path
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned());
    tx.execute(
        "INSERT INTO pending_usage (pricer_address, pricer_insecure, pricer_tls_cert, token_id, \
         path, service, http_status, content_type, content_encoding, complete, response_tail, \
         reserved_estimate, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        &[
            &r.target.address,
            &r.target.insecure,
            &tls,
            &r.token_id,
            &r.path,
            &r.service_name,
            &r.http_status,
            &r.content_type,
            &r.content_encoding,
            &r.complete,
            &r.response_tail,
            &r.reserved_estimate,
            &to_i64(unix_now()),
        ],
    )
}

pub(super) fn delete(tx: &mut Transaction<'_>, id: i64) -> Result<u64, postgres::Error> {
    tx.execute("DELETE FROM pending_usage WHERE id = $1", &[&id])
}

pub(super) fn load(client: &mut Client, limit: u32) -> Result<Vec<UsageReport>, postgres::Error> {
    let rows = client.query(
        "SELECT id, pricer_address, pricer_insecure, pricer_tls_cert, token_id, path, service, \
         http_status, content_type, content_encoding, complete, response_tail, reserved_estimate \
         FROM pending_usage ORDER BY id LIMIT $1",
        &[&i64::from(limit)],
    )?;
    Ok(rows
        .iter()
        .map(|row| {
            let tls: Option<String> = row.get(3);
            UsageReport {
                persisted_id: Some(row.get(0)),
                target: PricerTarget {
                    address: row.get(1),
                    insecure: row.get(2),
                    tls_cert_path: tls.map(Into::into),
                },
                token_id: row.get(4),
                path: row.get(5),
                service_name: row.get(6),
                http_status: row.get(7),
                content_type: row.get(8),
                content_encoding: row.get(9),
                complete: row.get(10),
                response_tail: row.get(11),
                reserved_estimate: row.get(12),
            }
        })
        .collect())
}
