//! Migration from Go aperture: reads its `secrets` table (`hash` = sha256(identifier), `secret` =
//! the token's random 32-byte root key) from its SQLite file or PostgreSQL database into our
//! `legacy_keys` table, and loads those keys at start-up for the worker cores, which consult them
//! when the derived key does not verify a token. Blocking I/O: CLI or start-up only.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};

use super::db::{open, DbError, Key32};
use crate::config::Config;

/// `sha256(identifier) → root key` of tokens minted by Go aperture.
pub type LegacyKeys = HashMap<Key32, Key32>;

/// One raw `(hash, secret)` row of Go aperture's `secrets` table, unchecked.
pub type SecretRow = (Vec<u8>, Vec<u8>);

/// What an import found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Rows read from the `secrets` table.
    pub read: usize,
    /// Keys new to our database.
    pub imported: usize,
    /// Rows that are not 32 + 32 bytes.
    pub skipped: usize,
    /// Whether Go's Payment (MPP) HMAC secret was among the rows: it is carried over (under
    /// the same key), so Payment challenges Go minted keep verifying.
    pub mpp_secret: bool,
}

/// Go aperture stores its MPP HMAC secret in `secrets` too, under this key; it is not a token's
/// root key (the verifier never loads it), but it is carried over.
fn mpp_secret_hash() -> Key32 {
    let hash: Key32 = Sha256::digest(b"aperture-mpp-hmac-secret-v1").into();
    debug_assert_eq!(hash, super::db::MPP_SECRET_KEY);
    hash
}

/// Keeps the well-formed rows; counts the rest in `skipped`.
fn filter_rows(rows: Vec<SecretRow>, report: &mut ImportReport) -> Vec<(Key32, Key32)> {
    let mpp = mpp_secret_hash();
    report.read = rows.len();
    let keys: Vec<(Key32, Key32)> = rows
        .into_iter()
        .filter_map(|(hash, secret)| {
            let hash = Key32::try_from(hash.as_slice()).ok()?;
            let secret = Key32::try_from(secret.as_slice()).ok()?;
            Some((hash, secret))
        })
        .collect();
    report.skipped = report.read - keys.len();
    report.mpp_secret = keys.iter().any(|(h, _)| *h == mpp);
    keys
}

/// Reads Go aperture's `secrets` table from its SQLite file, read-only.
pub fn read_go_sqlite(path: &Path) -> Result<Vec<SecretRow>, DbError> {
    let shown = path.display().to_string();
    let err = |what: &str| {
        let context = format!("Go aperture database {shown}: {what}");
        move |source| DbError::Sqlite { context, source }
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err("open"))?;
    let mut stmt = conn
        .prepare("SELECT hash, secret FROM secrets")
        .map_err(err("read the secrets table"))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(err("read the secrets table"))?;
    rows.collect::<Result<_, _>>()
        .map_err(err("read the secrets table"))
}

/// Reads Go aperture's `secrets` table from PostgreSQL (`dsn` as in `postgres://…`).
pub fn read_go_postgres(dsn: &str) -> Result<Vec<SecretRow>, DbError> {
    let mut client = super::postgres::connect(dsn)?;
    let rows = client
        .query("SELECT hash, secret FROM secrets", &[])
        .map_err(|source| DbError::Postgres {
            context: "Go aperture database: read the secrets table".into(),
            source,
        })?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Where to import from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportSource<'a> {
    Sqlite(&'a Path),
    Postgres(&'a str),
}

/// Copies Go aperture's root keys from `source` into `store`.
pub fn import(
    store: &mut dyn super::Store,
    source: ImportSource<'_>,
) -> Result<ImportReport, DbError> {
    let rows = match source {
        ImportSource::Sqlite(path) => read_go_sqlite(path)?,
        ImportSource::Postgres(dsn) => read_go_postgres(dsn)?,
    };
    let mut report = ImportReport::default();
    let keys = filter_rows(rows, &mut report);
    report.imported = store.import_legacy_keys(&keys)?;
    Ok(report)
}

/// Every imported legacy key of the configured database, `sha256(identifier) → root key`, for
/// the worker cores. Opens its own short-lived connection (blocking): call it at start-up.
pub fn load_legacy_keys(config: &Config) -> Result<LegacyKeys, DbError> {
    let mpp = mpp_secret_hash();
    let keys = open(&config.db)?.legacy_keys()?.into_iter();
    Ok(keys.filter(|(h, _)| *h != mpp).collect())
}

/// The Payment scheme's HMAC secret from the configured database, made (random) and stored on
/// first use; shared by every instance on that database. Blocking: call it at start-up.
pub fn load_mpp_secret(config: &Config) -> Result<Key32, DbError> {
    open(&config.db)?.mpp_secret(rand::random())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_mpp_secret_and_skips_malformed_rows() {
        let rows = vec![
            (vec![1; 32], vec![2; 32]),
            (mpp_secret_hash().to_vec(), vec![3; 32]),
            (vec![4; 31], vec![5; 32]),
            (vec![6; 32], vec![7; 33]),
        ];
        let mut report = ImportReport::default();
        let keys = filter_rows(rows, &mut report);
        assert_eq!(keys, vec![([1; 32], [2; 32]), (mpp_secret_hash(), [3; 32])]);
        assert_eq!((report.read, report.skipped), (4, 2));
        assert!(report.mpp_secret);
    }
}
