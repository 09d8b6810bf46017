//! The 66-byte L402 token identifier (`wire-format.md` §6.1): `u16 BE version ‖ payment_hash ‖
//! token_id`. Owns only the byte layout; it knows nothing of macaroons, keys or payment checks.

use thiserror::Error;

/// Exact encoded length: 2 (version) + 32 (payment hash) + 32 (token id).
pub const IDENTIFIER_LEN: usize = 66;

/// The only identifier version ever minted.
pub const IDENTIFIER_VERSION: u16 = 0;

/// A decoded identifier. The version is implicit: only version 0 exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identifier {
    /// sha256 of the invoice preimage.
    pub payment_hash: [u8; 32],
    /// Random id, stable across re-mints; the rate-limit and metering key.
    pub token_id: [u8; 32],
}

/// Why an identifier was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum IdentifierError {
    /// Go never checks the length; we require exactly 66 bytes (lnget does too).
    #[error("identifier is {0} bytes, expected {IDENTIFIER_LEN}")]
    Length(usize),
    #[error("unsupported identifier version {0}")]
    Version(u16),
}

impl Identifier {
    /// Big-endian encoding, version 0.
    pub fn encode(&self) -> [u8; IDENTIFIER_LEN] {
        let mut out = [0u8; IDENTIFIER_LEN];
        out[..2].copy_from_slice(&IDENTIFIER_VERSION.to_be_bytes());
        out[2..34].copy_from_slice(&self.payment_hash);
        out[34..].copy_from_slice(&self.token_id);
        out
    }

    /// Strict decode: exactly 66 bytes and version 0.
    pub fn decode(bytes: &[u8]) -> Result<Identifier, IdentifierError> {
        let bytes: &[u8; IDENTIFIER_LEN] = bytes
            .try_into()
            .map_err(|_| IdentifierError::Length(bytes.len()))?;
        let version = u16::from_be_bytes([bytes[0], bytes[1]]);
        if version != IDENTIFIER_VERSION {
            return Err(IdentifierError::Version(version));
        }
        let mut payment_hash = [0u8; 32];
        let mut token_id = [0u8; 32];
        payment_hash.copy_from_slice(&bytes[2..34]);
        token_id.copy_from_slice(&bytes[34..]);
        Ok(Identifier {
            payment_hash,
            token_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_layout() {
        let id = Identifier {
            payment_hash: [0x11; 32],
            token_id: [0x22; 32],
        };
        let enc = id.encode();
        assert_eq!(&enc[..2], &[0, 0]);
        assert_eq!(&enc[2..34], &[0x11; 32]);
        assert_eq!(&enc[34..], &[0x22; 32]);
        assert_eq!(Identifier::decode(&enc), Ok(id));
    }

    #[test]
    fn rejects_wrong_lengths() {
        let enc = Identifier {
            payment_hash: [1; 32],
            token_id: [2; 32],
        }
        .encode();
        for len in [0usize, 1, 2, 34, 65] {
            assert_eq!(
                Identifier::decode(&enc[..len]),
                Err(IdentifierError::Length(len))
            );
        }
        let mut long = enc.to_vec();
        long.push(0);
        assert_eq!(Identifier::decode(&long), Err(IdentifierError::Length(67)));
        // boltwall-style 132-char hex text is not our identifier.
        let hex_text = hex::encode(enc);
        assert_eq!(
            Identifier::decode(hex_text.as_bytes()),
            Err(IdentifierError::Length(132))
        );
    }

    #[test]
    fn rejects_other_versions() {
        let mut enc = Identifier {
            payment_hash: [1; 32],
            token_id: [2; 32],
        }
        .encode();
        enc[1] = 1;
        assert_eq!(Identifier::decode(&enc), Err(IdentifierError::Version(1)));
        enc[0] = 0xff;
        assert_eq!(
            Identifier::decode(&enc),
            Err(IdentifierError::Version(0xff01))
        );
    }
}
