//! autocert's files in `<basedir>/autocert/` (directory 0700, files 0600, written atomically):
//! `<servername>`, the private key then the certificate chain in PEM (Go's `autocert.DirCache`
//! layout, so a cache carried over from Go aperture is served as is), and
//! `account-<directory host>.json`, the ACME account (its key and URL) for that directory. Also
//! reads a certificate's validity window (a small DER walk, no X.509 crate), which decides when
//! to renew.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::AcmeError;

/// The subdirectory of the basedir (Go aperture's name).
pub const DIR: &str = "autocert";

/// The cache directory under `basedir`.
pub fn dir(basedir: &Path) -> PathBuf {
    basedir.join(DIR)
}

/// Creates the cache directory (0700) if needed.
pub fn create_dir(dir: &Path) -> Result<(), AcmeError> {
    crate::store::create_basedir(dir).map_err(|e| AcmeError::Files {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The certificate file for `domain`.
pub fn cert_path(dir: &Path, domain: &str) -> PathBuf {
    dir.join(domain.to_ascii_lowercase())
}

/// The account file for the directory at `directory_url` (one account per ACME server).
pub fn account_path(dir: &Path, directory_url: &str) -> PathBuf {
    let host = directory_url
        .strip_prefix("https://")
        .unwrap_or(directory_url)
        .split('/')
        .next()
        .unwrap_or_default();
    let safe: String = host
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => c,
            _ => '_',
        })
        .collect();
    dir.join(format!("account-{safe}.json"))
}

/// A certificate chain and its key, with the leaf's validity.
pub struct Issued {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Issued {
    /// Parses `<key PEM><chain PEM>` (either order; Go writes the key first).
    pub fn from_pem(pem: &[u8]) -> Result<Issued, String> {
        let chain = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("not a PEM certificate chain: {e}"))?;
        let leaf = chain.first().ok_or("no certificate in the file")?;
        let (not_before, not_after) = validity(leaf.as_ref())?;
        let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("no private key: {e}"))?;
        Ok(Issued {
            chain,
            key,
            not_before,
            not_after,
        })
    }

    /// When to renew: once `fraction` of the lifetime has passed (e.g. day 60 of 90 at 2/3).
    pub fn renew_at(&self, fraction: f64) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + life.mul_f64(fraction.clamp(0.0, 1.0))
    }
}

/// Reads the cached certificate of `domain`: `Ok(None)` when there is none.
pub fn read_cert(dir: &Path, domain: &str) -> Result<Option<Issued>, String> {
    let path = cert_path(dir, domain);
    match std::fs::read(&path) {
        Ok(pem) => Issued::from_pem(&pem).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Writes the key and chain PEM for `domain` (0600).
pub fn write_cert(
    dir: &Path,
    domain: &str,
    key_pem: &str,
    chain_pem: &str,
) -> Result<(), AcmeError> {
    let path = cert_path(dir, domain);
    let mut data = String::with_capacity(key_pem.len() + chain_pem.len() + 1);
    data.push_str(key_pem);
    if !data.ends_with('\n') {
        data.push('\n');
    }
    data.push_str(chain_pem);
    write_private(&path, data.as_bytes())
}

/// Writes a private file (0600) atomically.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), AcmeError> {
    crate::store::write_atomically(path, data, 0o600).map_err(|e| AcmeError::Files {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// `notBefore` and `notAfter` of a DER certificate.
pub fn validity(der: &[u8]) -> Result<(SystemTime, SystemTime), String> {
    let (cert, _) = element(der, 0x30).map_err(|e| format!("certificate: {e}"))?;
    let (mut tbs, _) = element(cert, 0x30).map_err(|e| format!("tbsCertificate: {e}"))?;
    if tbs.first() == Some(&0xa0) {
        tbs = skip(tbs)?; // [0] version
    }
    tbs = skip(tbs)?; // serialNumber
    tbs = skip(tbs)?; // signature AlgorithmIdentifier
    tbs = skip(tbs)?; // issuer
    let (validity, _) = element(tbs, 0x30).map_err(|e| format!("validity: {e}"))?;
    let (not_before, rest) = time(validity)?;
    let (not_after, _) = time(rest)?;
    Ok((not_before, not_after))
}

/// One DER element of tag `tag`: its content and what follows it.
fn element(der: &[u8], tag: u8) -> Result<(&[u8], &[u8]), String> {
    let (&t, rest) = der.split_first().ok_or("truncated")?;
    if t != tag {
        return Err(format!("expected tag {tag:#04x}, found {t:#04x}"));
    }
    let (len, rest) = length(rest)?;
    if rest.len() < len {
        return Err("truncated".into());
    }
    Ok(rest.split_at(len))
}

/// Skips one DER element of any tag.
fn skip(der: &[u8]) -> Result<&[u8], String> {
    let tag = *der.first().ok_or("truncated")?;
    Ok(element(der, tag)?.1)
}

fn length(der: &[u8]) -> Result<(usize, &[u8]), String> {
    let (&first, rest) = der.split_first().ok_or("truncated length")?;
    if first < 0x80 {
        return Ok((first as usize, rest));
    }
    let n = (first & 0x7f) as usize;
    if n == 0 || n > 4 || rest.len() < n {
        return Err("bad length".into());
    }
    let len = rest[..n]
        .iter()
        .fold(0usize, |acc, &b| (acc << 8) | b as usize);
    Ok((len, &rest[n..]))
}

/// A UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time(der: &[u8]) -> Result<(SystemTime, &[u8]), String> {
    let tag = *der.first().ok_or("truncated time")?;
    let (text, rest) = element(der, tag)?;
    let digits = match (tag, text.len()) {
        (0x17, 13) => {
            let yy = two(&text[0..2])?;
            // RFC 5280: UTCTime years 50..99 are 19xx, 00..49 are 20xx.
            let century = if yy >= 50 { 1900 } else { 2000 };
            (century + yy, &text[2..12])
        }
        (0x18, 15) => (two(&text[0..2])? * 100 + two(&text[2..4])?, &text[4..14]),
        _ => return Err("unsupported time encoding".into()),
    };
    if text.last() != Some(&b'Z') {
        return Err("time not in UTC".into());
    }
    let (year, md) = digits;
    let (month, day) = (two(&md[0..2])?, two(&md[2..4])?);
    let (hour, min, sec) = (two(&md[4..6])?, two(&md[6..8])?, two(&md[8..10])?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return Err("time out of range".into());
    }
    let days = days_from_civil(year as i64, month, day);
    let secs = days * 86_400 + (hour * 3600 + min * 60 + sec) as i64;
    let at = if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    };
    Ok((at, rest))
}

fn two(b: &[u8]) -> Result<u32, String> {
    match b {
        [a @ b'0'..=b'9', c @ b'0'..=b'9'] => Ok(u32::from(a - b'0') * 10 + u32::from(c - b'0')),
        _ => Err("not a digit".into()),
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn cert_between(from: (i32, u8, u8), to: (i32, u8, u8)) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.example".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
        let cert = params.self_signed(&key).unwrap();
        (key.serialize_pem(), cert.pem())
    }

    fn unix(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn validity_of_utc_and_generalized_times() {
        // rcgen writes UTCTime up to 2049 and GeneralizedTime from 2050 on.
        let (_, pem) = cert_between((2024, 2, 29), (2051, 1, 1));
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (from, to) = validity(der.as_ref()).unwrap();
        assert_eq!(from, unix(1_709_164_800)); // 2024-02-29T00:00:00Z
        assert_eq!(to, unix(2_556_144_000)); // 2051-01-01T00:00:00Z
        assert!(validity(&der.as_ref()[..40]).is_err());
        assert!(validity(b"").is_err());
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }

    #[test]
    fn renews_at_two_thirds_of_the_lifetime() {
        let (key, pem) = cert_between((2025, 1, 1), (2025, 4, 1)); // 90 days
        let issued = Issued::from_pem(format!("{key}{pem}").as_bytes()).unwrap();
        let sixty_days = Duration::from_secs(60 * 86_400);
        assert_eq!(issued.renew_at(2.0 / 3.0), issued.not_before + sixty_days);
        assert_eq!(issued.renew_at(0.0), issued.not_before);
    }

    #[test]
    fn the_cache_round_trips_in_go_layout_with_private_modes() {
        let base = tempfile::tempdir().unwrap();
        let dir = dir(base.path());
        create_dir(&dir).unwrap();
        assert!(read_cert(&dir, "a.example").unwrap().is_none());
        let (key, pem) = cert_between((2025, 1, 1), (2025, 4, 1));
        write_cert(&dir, "A.Example", &key, &pem).unwrap();
        let path = cert_path(&dir, "a.example");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("-----BEGIN PRIVATE KEY-----"),
            "key first, as Go"
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir), 0o700);
        let issued = read_cert(&dir, "a.example").unwrap().unwrap();
        assert_eq!(issued.chain.len(), 1);
        std::fs::write(&path, "garbage").unwrap();
        assert!(read_cert(&dir, "a.example").is_err());
        assert_eq!(
            account_path(&dir, "https://acme-v02.api.letsencrypt.org/directory"),
            dir.join("account-acme-v02.api.letsencrypt.org.json")
        );
        assert_eq!(
            account_path(&dir, "https://localhost:14000/dir"),
            dir.join("account-localhost_14000.json")
        );
    }
}
