//! The dev backend's node key: a secp256k1 secret persisted in `basedir/dev-node.key`.
//!
//! Owns loading and first-time creation of that file. The file holds 64 hex characters
//! (plus an optional newline); 32 raw bytes are accepted too. A malformed file is an error
//! and is never replaced: silently minting a new identity would orphan every invoice that
//! clients hold. Creation is atomic (temp file, fsync, no-clobber link) with mode 0600.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use bitcoin::secp256k1::SecretKey;

use crate::protocol::BridgeError;

/// File name of the node key inside the dev backend's base directory.
pub const NODE_KEY_FILE: &str = "dev-node.key";

/// Loads the node key from `basedir`, creating `basedir` and the key if absent.
pub fn load_or_create(basedir: &Path) -> Result<SecretKey, BridgeError> {
    let path = basedir.join(NODE_KEY_FILE);
    match fs::read(&path) {
        Ok(bytes) => parse(&bytes).map_err(|reason| key_err(&path, reason)),
        Err(e) if e.kind() == ErrorKind::NotFound => create(basedir, &path),
        Err(e) => Err(key_err(&path, format!("read: {e}"))),
    }
}

fn key_err(path: &Path, reason: impl Into<String>) -> BridgeError {
    BridgeError::NodeKey {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Parses the file's contents: 32 raw bytes, or hex with optional surrounding whitespace.
fn parse(bytes: &[u8]) -> Result<SecretKey, String> {
    let raw: [u8; 32] = if bytes.len() == 32 && !bytes.iter().all(u8::is_ascii_hexdigit) {
        // Exactly 32 bytes that are not all hex digits can only be the raw form.
        let mut k = [0u8; 32];
        k.copy_from_slice(bytes);
        k
    } else {
        let text = std::str::from_utf8(bytes).map_err(|_| "neither 32 raw bytes nor hex")?;
        let text = text.trim();
        if text.len() != 64 {
            return Err(format!("expected 64 hex characters, found {}", text.len()));
        }
        let mut k = [0u8; 32];
        hex::decode_to_slice(text, &mut k).map_err(|e| format!("bad hex: {e}"))?;
        k
    };
    SecretKey::from_slice(&raw).map_err(|_| "not a valid secp256k1 secret key".to_owned())
}

/// Writes a fresh key without ever overwriting an existing file: if another process won
/// the race, its key is the one we use.
fn create(basedir: &Path, path: &Path) -> Result<SecretKey, BridgeError> {
    fs::create_dir_all(basedir).map_err(|e| key_err(path, format!("create {basedir:?}: {e}")))?;
    let key = SecretKey::new(&mut rand::thread_rng());
    let tmp = temp_path(basedir);
    let written = write_private(&tmp, &key).map_err(|e| key_err(path, format!("write: {e}")));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // A hard link fails with AlreadyExists instead of clobbering, unlike rename.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(basedir);
            tracing::info!(path = %path.display(), "created dev node key");
            Ok(key)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let bytes = fs::read(path).map_err(|e| key_err(path, format!("read: {e}")))?;
            parse(&bytes).map_err(|reason| key_err(path, reason))
        }
        Err(e) => Err(key_err(path, format!("link into place: {e}"))),
    }
}

fn temp_path(basedir: &Path) -> PathBuf {
    let nonce: u64 = rand::random();
    basedir.join(format!(
        ".{NODE_KEY_FILE}.{}.{nonce:016x}.tmp",
        std::process::id()
    ))
}

fn write_private(tmp: &Path, key: &SecretKey) -> std::io::Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(tmp)?;
    let mut text = hex::encode(key.secret_bytes());
    text.push('\n');
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// Makes the new directory entry durable; best effort, as not every filesystem allows it.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reused_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("nested/dev");
        let a = load_or_create(&base).unwrap();
        let b = load_or_create(&base).unwrap();
        assert_eq!(a, b);
        let path = base.join(NODE_KEY_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim(), hex::encode(a.secret_bytes()));
        let leftovers: Vec<_> = fs::read_dir(&base).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temp file removed");
    }

    #[test]
    fn raw_32_bytes_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let mut raw = [0x11u8; 32];
        raw[0] = 0xff; // not an ASCII hex digit, so this is unambiguously raw
        fs::write(dir.path().join(NODE_KEY_FILE), raw).unwrap();
        let k = load_or_create(dir.path()).unwrap();
        assert_eq!(k.secret_bytes(), raw);
    }

    #[test]
    fn malformed_files_are_errors_and_left_alone() {
        let zero = "0".repeat(64);
        let cases: [&[u8]; 4] = [b"not a key", b"", zero.as_bytes(), &[0xffu8; 31]];
        for bad in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(NODE_KEY_FILE);
            fs::write(&path, bad).unwrap();
            let err = load_or_create(dir.path()).unwrap_err();
            assert!(matches!(err, BridgeError::NodeKey { .. }), "{err:?}");
            assert_eq!(fs::read(&path).unwrap(), bad, "file must not be replaced");
        }
    }
}
