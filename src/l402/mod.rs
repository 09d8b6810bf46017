//! L402 token core (layer 0): identifier, macaroon codec, caveats, credential headers, challenge
//! headers and verification. Pure: no I/O, no threads, no clock reads (`now` is always passed in).

use std::fmt;
use std::str::FromStr;

pub mod caveat;
pub mod header;
pub mod identifier;
pub mod macaroon;
pub mod verify;

pub use caveat::{check_caveats, mint_caveats, split_caveat, CaveatContext, CaveatError};
pub use header::{
    challenge_values, macaroon_from_base64, parse_credentials, upstream_authorization, Credential,
    CredentialError, CredentialSource, Scheme,
};
pub use identifier::{Identifier, IdentifierError, IDENTIFIER_LEN};
pub use macaroon::{Macaroon, MacaroonError, MacaroonRef, LOCATION};
pub use verify::{
    derive_root_key, verify_with_root_key, AuthOutcome, TokenId, Verifier, VerifyError,
    VerifyRequest,
};

/// Which `WWW-Authenticate` fields a 402 carries (`wire-format.md` §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChallengeShape {
    /// Go aperture's exact two fields: `LSAT macaroon,invoice` then `L402 macaroon,invoice`.
    Aperture,
    /// Default: the LSAT field, then `L402 macaroon,invoice,version,token`.
    #[default]
    Superset,
    /// The LSAT field, then `L402 version,token,invoice` (PR #208).
    Pr208,
    /// `L402 version,token,invoice` only; most deployed clients fail on it.
    SpecStrict,
}

impl FromStr for ChallengeShape {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "aperture" => Ok(Self::Aperture),
            "superset" => Ok(Self::Superset),
            "pr208" => Ok(Self::Pr208),
            "spec-strict" => Ok(Self::SpecStrict),
            other => Err(format!(
                "unknown challenge shape {other:?}: use one of aperture, superset, pr208, spec-strict"
            )),
        }
    }
}

impl fmt::Display for ChallengeShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Aperture => "aperture",
            Self::Superset => "superset",
            Self::Pr208 => "pr208",
            Self::SpecStrict => "spec-strict",
        })
    }
}

/// Which `Authorization` fields go upstream for a request with a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamAuthorization {
    /// One field, `L402 <macaroon>:<preimage>` (default). `Authorization` is a singleton field
    /// (RFC 9110 §11.6.2): nginx, for one, answers 400 to a request that carries two.
    #[default]
    L402,
    /// Go aperture's two fields, `LSAT …` then `L402 …`, for backends that expect exactly that.
    Aperture,
}

impl FromStr for UpstreamAuthorization {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "l402" => Ok(Self::L402),
            "aperture" => Ok(Self::Aperture),
            other => Err(format!(
                "unknown upstream authorization form {other:?}: use l402 (one field) or aperture (Go aperture's LSAT + L402 pair)"
            )),
        }
    }
}
