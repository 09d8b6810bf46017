//! Durable state (layer 1): the master secret in the basedir that every token's root key is
//! derived from and this instance's id (this file; main thread, start-up only), and the token
//! database behind the [`Store`] trait: the ledger, revocations, Go aperture's imported root
//! keys, consumed Payment charges, Payment sessions, and the admin API's services, transactions
//! and revenue ([`db`], [`session`], [`admin`], [`sqlite`], [`postgres`], [`legacy`]), driven at
//! run time only by the `aperture-store` thread ([`service`]) or the admin plane's own
//! connection, never by a worker core.
//!
//! The secret is written once, atomically (temp file, fsync, rename, fsync of the directory), with
//! mode 0600, before the first challenge is ever minted: a token that was handed out must verify
//! after any crash or restart. A present but malformed file is an error, never silently replaced,
//! because replacing it would invalidate every token already sold.

pub mod admin;
pub mod db;
pub mod legacy;
pub mod postgres;
pub mod service;
pub mod session;
pub mod sqlite;

pub use admin::{DayRevenue, DbService, ServiceRevenue, Stats, TxKind, TxQuery, TxRow, TxState};
pub use db::{
    open, unix_now, BundleRow, Challenge, ChargeClaim, DbError, Key32, LedgerRow, Op, Store,
    TokenQuery, MPP_SECRET_KEY,
};
pub use legacy::{
    import, load_legacy_keys, load_mpp_secret, ImportReport, ImportSource, LegacyKeys,
};
pub use service::{
    bridge_payer, no_payer, start, start_with, PayFuture, PayOutcome, Payer, RefundPayment,
    SessionReply, StoreHandle, StoreService, StoreStats,
};
pub use session::{
    refund_split, CloseOutcome, LeaseOutcome, OpenOutcome, RefundRow, RefundStatus, SessionOpen,
    SessionRow, SessionStatus, TopUpOutcome,
};

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The file name of the master secret inside the basedir.
pub const MASTER_SECRET_FILE: &str = "master.secret";
/// The file name of this instance's id (the holder of its session leases) inside the basedir.
pub const INSTANCE_ID_FILE: &str = "instance-id";

/// Errors reading or creating durable state.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the base directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot read the master secret {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "the master secret {path} is malformed ({len} bytes, expected 32); it is never replaced \
         automatically because every token sold so far depends on it: restore it from a backup, \
         or delete it to invalidate all existing tokens"
    )]
    Malformed { path: PathBuf, len: usize },
    #[error("cannot write the master secret {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "the instance id {path} is unusable ({reason}); delete it to start with a new one \
         (session leases held under the old id are then only given back by a force close)"
    )]
    InstanceId { path: PathBuf, reason: String },
}

/// Loads the 32-byte master secret from `basedir`, creating it (and the directory, mode 0700)
/// when it does not exist yet.
pub fn load_or_create_master_secret(basedir: &Path) -> Result<[u8; 32], StoreError> {
    create_basedir(basedir)?;
    let path = basedir.join(MASTER_SECRET_FILE);
    match File::open(&path) {
        Ok(mut file) => read_secret(&mut file, &path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut secret = [0u8; 32];
            rand::Rng::fill(&mut rand::rngs::OsRng, &mut secret[..]);
            write_atomically(&path, &secret, 0o600).map_err(|source| StoreError::Write {
                path: path.clone(),
                source,
            })?;
            Ok(secret)
        }
        Err(source) => Err(StoreError::Read { path, source }),
    }
}

/// Loads this instance's id from `basedir` (`instance-id`: 32 hex digits), creating it (16
/// random bytes, written atomically) when it does not exist yet. A restarted process keeps its
/// id, so it can give back the session leases its previous run held.
pub fn load_or_create_instance_id(basedir: &Path) -> Result<String, StoreError> {
    create_basedir(basedir)?;
    let path = basedir.join(INSTANCE_ID_FILE);
    let unusable = |reason: String| StoreError::InstanceId {
        path: path.clone(),
        reason,
    };
    match File::open(&path) {
        Ok(file) => {
            let mut text = String::new();
            file.take(256)
                .read_to_string(&mut text)
                .map_err(|e| unusable(e.to_string()))?;
            let id = text.trim();
            if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(id.to_ascii_lowercase())
            } else {
                Err(unusable("expected 32 hex digits".into()))
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let id = hex::encode(rand::random::<[u8; 16]>());
            write_atomically(&path, format!("{id}\n").as_bytes(), 0o644)
                .map_err(|e| unusable(e.to_string()))?;
            Ok(id)
        }
        Err(e) => Err(unusable(e.to_string())),
    }
}

/// Creates the basedir with mode 0700 when missing.
pub fn create_basedir(basedir: &Path) -> Result<(), StoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(basedir)
        .map_err(|source| StoreError::CreateDir {
            path: basedir.to_path_buf(),
            source,
        })
}

fn read_secret(file: &mut File, path: &Path) -> Result<[u8; 32], StoreError> {
    let mut bytes = Vec::with_capacity(33);
    file.take(4096)
        .read_to_end(&mut bytes)
        .map_err(|source| StoreError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| StoreError::Malformed {
        path: path.to_path_buf(),
        len: bytes.len(),
    })
}

/// Writes `data` to `path` so that a crash leaves either no file or the whole file: a temp file
/// in the same directory, fsync, rename over the target, fsync of the directory.
pub fn write_atomically(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed the mode further; it must not have widened it.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(data)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("nested/base");
        let first = load_or_create_master_secret(&base).unwrap();
        let second = load_or_create_master_secret(&base).unwrap();
        assert_eq!(first, second);
        let meta = fs::metadata(base.join(MASTER_SECRET_FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            fs::metadata(&base).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn instance_id_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        let first = load_or_create_instance_id(&base).unwrap();
        assert_eq!(first.len(), 32);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(load_or_create_instance_id(&base).unwrap(), first);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create_instance_id(other.path()).unwrap(), first);
        fs::write(base.join(INSTANCE_ID_FILE), b"not an id").unwrap();
        let err = load_or_create_instance_id(&base).unwrap_err();
        assert!(matches!(err, StoreError::InstanceId { .. }), "{err}");
        assert_eq!(fs::read(base.join(INSTANCE_ID_FILE)).unwrap(), b"not an id");
    }

    #[test]
    fn malformed_secret_is_an_error_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MASTER_SECRET_FILE);
        fs::write(&path, b"short").unwrap();
        let err = load_or_create_master_secret(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Malformed { len: 5, .. }), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"short");
    }
}
