//! The admin macaroon (Go aperture's `admin/auth.go`): created on first start at
//! `admin.macaroonpath` (location `aperture`, identifier `admin`, no caveats; V2 binary, 0600),
//! its 32-byte root key beside it (`.macaroon` replaced by `.rootkey`, 0600), and the check of
//! what a request presents: hex in the gRPC metadata `macaroon` or the REST header
//! `Grpc-Metadata-Macaroon`, compared in constant time with the file's bytes, or verified with
//! the root key (a macaroon Go mints from the same key, byte-identical anyway).
//!
//! File I/O happens once, at start; the check is pure. Owns nothing else.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

use crate::l402::macaroon::{Macaroon, MacaroonRef};

/// Go's macaroon location and identifier.
pub const LOCATION: &str = "aperture";
pub const IDENTIFIER: &[u8] = b"admin";
/// The gRPC metadata key (REST: `Grpc-Metadata-Macaroon`, which grpc-gateway maps to it).
pub const METADATA_KEY: &str = "macaroon";
pub const REST_HEADER: &str = "grpc-metadata-macaroon";

/// What a request is checked against.
#[derive(Clone)]
pub struct AdminKey {
    root_key: [u8; 32],
    macaroon: Vec<u8>,
}

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminKey(..)")
    }
}

/// Why a request is refused (the text of the `Unauthenticated` answer, as Go's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing macaroon")]
    Missing,
    #[error("invalid macaroon encoding")]
    Encoding,
    #[error("macaroon verification failed")]
    Failed,
}

/// Where the root key lives: Go's `TrimSuffix(macPath, ".macaroon") + ".rootkey"`.
pub fn root_key_path(macaroon_path: &Path) -> PathBuf {
    let s = macaroon_path.as_os_str().to_string_lossy();
    PathBuf::from(format!(
        "{}.rootkey",
        s.strip_suffix(".macaroon").unwrap_or(&s)
    ))
}

impl AdminKey {
    /// A key from its parts (tests; [`AdminKey::load_or_create`] in the binary).
    pub fn from_root_key(root_key: [u8; 32]) -> AdminKey {
        let macaroon = mint(&root_key);
        AdminKey { root_key, macaroon }
    }

    /// Reads the root key (creating it, 0600, if absent) and the macaroon (minting and writing
    /// it, 0600, if absent), creating their directory (0700) as needed. Returns whether the
    /// macaroon was created.
    pub fn load_or_create(macaroon_path: &Path) -> io::Result<(AdminKey, bool)> {
        let key_path = root_key_path(macaroon_path);
        for p in [macaroon_path, key_path.as_path()] {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)?;
            }
        }
        let root_key = match fs::read(&key_path) {
            Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: a root key is 32 bytes, this file has {}",
                        key_path.display(),
                        bytes.len()
                    ),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::Rng::fill(&mut rand::rngs::OsRng, &mut key[..]);
                write_private(&key_path, &key)?;
                key
            }
            Err(e) => return Err(e),
        };
        let (macaroon, created) = match fs::read(macaroon_path) {
            Ok(bytes) => (bytes, false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let bytes = mint(&root_key);
                write_private(macaroon_path, &bytes)?;
                (bytes, true)
            }
            Err(e) => return Err(e),
        };
        Ok((AdminKey { root_key, macaroon }, created))
    }

    /// The macaroon's bytes (what a client presents, hex-encoded).
    pub fn macaroon(&self) -> &[u8] {
        &self.macaroon
    }

    /// The macaroon, hex-encoded, as a header value carries it.
    pub fn macaroon_hex(&self) -> String {
        hex::encode(&self.macaroon)
    }

    /// Checks a presented value (`None`: the header was absent).
    pub fn check(&self, presented: Option<&[u8]>) -> Result<(), AuthError> {
        let presented = match presented {
            None | Some([]) => return Err(AuthError::Missing),
            Some(v) => v,
        };
        let bytes = hex::decode(presented.trim_ascii()).map_err(|_| AuthError::Encoding)?;
        if bool::from(bytes.as_slice().ct_eq(&self.macaroon)) {
            return Ok(());
        }
        match MacaroonRef::parse_v2(&bytes) {
            Ok(m)
                if m.identifier == IDENTIFIER
                    && m.caveat_count() == 0
                    && m.verify_signature(&self.root_key) =>
            {
                Ok(())
            }
            _ => Err(AuthError::Failed),
        }
    }
}

/// Go's `GenerateAdminMacaroon`, serialized.
fn mint(root_key: &[u8; 32]) -> Vec<u8> {
    Macaroon::mint(root_key, LOCATION, IDENTIFIER, &[] as &[&[u8]]).encode_v2()
}

/// Writes a new file readable by its owner only (refusing to replace one).
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_with_private_modes_and_checks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/admin.macaroon");
        let (key, created) = AdminKey::load_or_create(&path).unwrap();
        assert!(created);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("sub/admin.rootkey")), 0o600);
        assert_eq!(mode(&dir.path().join("sub")), 0o700);
        let (again, created) = AdminKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(again.macaroon(), key.macaroon());

        let m = MacaroonRef::parse_v2(key.macaroon()).unwrap();
        assert_eq!(m.identifier, IDENTIFIER);
        assert_eq!(m.caveat_count(), 0);

        let hexed = key.macaroon_hex();
        assert_eq!(key.check(Some(hexed.as_bytes())), Ok(()));
        assert_eq!(key.check(Some(hexed.to_uppercase().as_bytes())), Ok(()));
        assert_eq!(key.check(None), Err(AuthError::Missing));
        assert_eq!(key.check(Some(b"")), Err(AuthError::Missing));
        assert_eq!(key.check(Some(b"zz")), Err(AuthError::Encoding));
        assert_eq!(key.check(Some(b"00ff")), Err(AuthError::Failed));
        // Another root key's admin macaroon, and ours with a caveat, are refused.
        let other = hex::encode(mint(&[7; 32]));
        assert_eq!(key.check(Some(other.as_bytes())), Err(AuthError::Failed));
        let mut with_caveat = Macaroon::decode_v2(key.macaroon()).unwrap();
        with_caveat.add_first_party_caveat("x=y");
        let with_caveat = hex::encode(with_caveat.encode_v2());
        assert_eq!(
            key.check(Some(with_caveat.as_bytes())),
            Err(AuthError::Failed)
        );
    }

    #[test]
    fn a_short_root_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.rootkey"), b"short").unwrap();
        let e = AdminKey::load_or_create(&dir.path().join("a.macaroon")).unwrap_err();
        assert!(e.to_string().contains("32 bytes"), "{e}");
        assert_eq!(
            root_key_path(Path::new("/x/admin.macaroon")),
            Path::new("/x/admin.rootkey")
        );
        assert_eq!(
            root_key_path(Path::new("/x/mac")),
            Path::new("/x/mac.rootkey")
        );
    }
}
