//! Signed publish tokens (JWT, RFC 7519): a publisher's bearer may be a token an orchestrator
//! signed, so that no round trip to the orchestrator and no per-ingest secret are needed.
//!
//! Keys come from a JWKS file (`--token-keys-file`, RFC 7517): `kty` `oct` for HS256, `EC`
//! (P-256) for ES256, `OKP` (Ed25519) for EdDSA. A token's header names its key (`kid`; it may be
//! left out when the file holds one key) and its `alg` must be the key's: a token cannot choose a
//! weaker algorithm than the key was made for. Its claims:
//!
//! | claim | |
//! |---|---|
//! | `sub` | the ingest id; a token opens that ingest only |
//! | `scope` | required: `publish` publishes (space-separated scopes; `view` is for playback and never publishes) |
//! | `exp` | required: expiry (seconds since the epoch); no leeway beyond [`LEEWAY`] |
//! | `nbf` | checked when present |
//! | `aud` | checked when present and `--token-audience` is set: it must name that audience |
//!
//! Verified with `jsonwebtoken` (ring underneath, like the rest of the gateway's crypto). The key
//! set sits behind an `ArcSwap`: [`SignedTokens::reload`] (SIGHUP in the binary) swaps it whole;
//! a file that does not load keeps the current keys. Live sessions never depend on the keys.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::error::Error;

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(5);
/// Longest bearer looked at as a token (a header of a few claims is far smaller).
const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Keys a file may hold (rotation needs two or three).
const MAX_KEYS: usize = 64;

/// What a token allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Publish to the ingest (WHIP).
    Publish,
    /// Watch the ingest (WHEP playback); never publishes.
    View,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Publish => "publish",
            Scope::View => "view",
        }
    }
}

/// Why a token was refused: a fixed set (the metric's label, the 401's text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a token, or not one whipgate reads.
    Malformed,
    /// No key with its `kid` (or no `kid` with several keys).
    UnknownKey,
    /// Its `alg` is not its key's.
    WrongAlgorithm,
    /// The signature does not verify.
    BadSignature,
    /// Past `exp`, or no `exp`.
    Expired,
    /// Before `nbf`.
    NotYetValid,
    /// `aud` does not name this gateway's audience.
    WrongAudience,
    /// No scope for this use.
    WrongScope,
    /// `sub` names another ingest.
    WrongSubject,
}

impl Refusal {
    /// Lower-case name (metric label, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::UnknownKey => "unknown_key",
            Refusal::WrongAlgorithm => "wrong_algorithm",
            Refusal::BadSignature => "bad_signature",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::WrongAudience => "wrong_audience",
            Refusal::WrongScope => "wrong_scope",
            Refusal::WrongSubject => "wrong_subject",
        }
    }

    /// What the publisher is told (a 401's body).
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Malformed => "the bearer token is not a signed token this gateway reads",
            Refusal::UnknownKey => "the signed token names no key this gateway has",
            Refusal::WrongAlgorithm => "the signed token's algorithm is not its key's",
            Refusal::BadSignature => "the signed token's signature does not verify",
            Refusal::Expired => "the signed token has expired (or has no exp)",
            Refusal::NotYetValid => "the signed token is not valid yet (nbf)",
            Refusal::WrongAudience => "the signed token is for another audience",
            Refusal::WrongScope => "the signed token's scope does not allow this",
            Refusal::WrongSubject => "the signed token is for another ingest",
        }
    }

    /// Every refusal (metric labels at start).
    pub const ALL: [Refusal; 9] = [
        Refusal::Malformed,
        Refusal::UnknownKey,
        Refusal::WrongAlgorithm,
        Refusal::BadSignature,
        Refusal::Expired,
        Refusal::NotYetValid,
        Refusal::WrongAudience,
        Refusal::WrongScope,
        Refusal::WrongSubject,
    ];
}

/// Whether a bearer has the shape of a JWS compact serialization (three base64url parts).
pub fn looks_signed(bearer: &str) -> bool {
    bearer.len() <= MAX_TOKEN_LEN
        && bearer.split('.').count() == 3
        && bearer
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// One usable key.
struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// The keys of one file.
struct KeySet {
    keys: Vec<Key>,
}

/// The claims whipgate reads (others are ignored).
#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
}

/// `aud`: one audience or several.
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The configured keys and audience.
pub struct SignedTokens {
    file: PathBuf,
    audience: Option<String>,
    keys: ArcSwap<KeySet>,
}

impl SignedTokens {
    /// Loads the JWKS file `file`; `audience` is `--token-audience`.
    pub fn load(file: &Path, audience: Option<String>) -> Result<Self, Error> {
        let keys = load_keys(file)?;
        Ok(SignedTokens {
            file: file.to_owned(),
            audience,
            keys: ArcSwap::from_pointee(keys),
        })
    }

    /// Re-reads the file; on failure the current keys stay.
    pub fn reload(&self) -> Result<(), Error> {
        let keys = load_keys(&self.file)?;
        let count = keys.keys.len();
        self.keys.store(Arc::new(keys));
        tracing::info!(file = %self.file.display(), keys = count, "signed-token keys reloaded");
        Ok(())
    }

    /// Checks `token` for `scope` on `ingest_id`.
    pub fn verify(&self, token: &str, ingest_id: &str, scope: Scope) -> Result<(), Refusal> {
        if !looks_signed(token) {
            return Err(Refusal::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::Malformed)?;
        let keys = self.keys.load();
        let key = match &header.kid {
            Some(kid) => keys
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid.as_str())),
            None if keys.keys.len() == 1 => keys.keys.first(),
            None => None,
        }
        .ok_or(Refusal::UnknownKey)?;
        if header.alg != key.algorithm {
            return Err(Refusal::WrongAlgorithm);
        }
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|err| {
            use jsonwebtoken::errors::ErrorKind;
            match err.kind() {
                ErrorKind::InvalidSignature => Refusal::BadSignature,
                ErrorKind::ExpiredSignature => Refusal::Expired,
                ErrorKind::ImmatureSignature => Refusal::NotYetValid,
                ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => Refusal::Expired,
                _ => Refusal::Malformed,
            }
        })?;
        let claims = data.claims;
        if let (Some(expected), Some(aud)) = (&self.audience, &claims.aud) {
            let names = match aud {
                Audience::One(one) => one == expected,
                Audience::Many(many) => many.iter().any(|a| a == expected),
            };
            if !names {
                return Err(Refusal::WrongAudience);
            }
        }
        let scopes = claims.scope.as_deref().unwrap_or_default();
        if !scopes.split_ascii_whitespace().any(|s| s == scope.as_str()) {
            return Err(Refusal::WrongScope);
        }
        if claims.sub != ingest_id {
            return Err(Refusal::WrongSubject);
        }
        Ok(())
    }
}

/// Reads a JWKS file into usable keys; refuses a file with none, or with a key it cannot use.
fn load_keys(file: &Path) -> Result<KeySet, Error> {
    let bad = |what: String| -> Error {
        Error::Config(format!("--token-keys-file {}: {what}", file.display()))
    };
    let text = std::fs::read_to_string(file).map_err(|e| bad(e.to_string()))?;
    let set: JwkSet =
        serde_json::from_str(&text).map_err(|e| bad(format!("not a JWKS document: {e}")))?;
    if set.keys.is_empty() {
        return Err(bad("no keys".into()));
    }
    if set.keys.len() > MAX_KEYS {
        return Err(bad(format!("{} keys (at most {MAX_KEYS})", set.keys.len())));
    }
    let keys = set
        .keys
        .iter()
        .map(|jwk| key_of(jwk, bad))
        .collect::<Result<Vec<_>, _>>()?;
    if keys.len() > 1 && keys.iter().any(|k| k.kid.is_none()) {
        return Err(bad("with several keys, each needs a kid".into()));
    }
    Ok(KeySet { keys })
}

/// One JWK as a key, with the algorithm its type implies; `bad` says what is wrong with it.
fn key_of(jwk: &Jwk, bad: impl Fn(String) -> Error) -> Result<Key, Error> {
    let kid = jwk.common.key_id.clone();
    let name = kid.as_deref().unwrap_or("(no kid)").to_owned();
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::OctetKey(_) => Algorithm::HS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => {
            return Err(bad(format!(
                "key {name}: only oct (HS256), EC P-256 (ES256) and OKP Ed25519 (EdDSA) keys are read"
            )));
        }
    };
    if let Some(declared) = jwk.common.key_algorithm {
        let declared = format!("{declared:?}");
        if declared != format!("{algorithm:?}") {
            return Err(bad(format!(
                "key {name}: its alg {declared} is not what its type is for ({algorithm:?})"
            )));
        }
    }
    if let AlgorithmParameters::OctetKey(oct) = &jwk.algorithm {
        // RFC 7518 section 3.2: an HS256 key has at least 256 bits.
        let bytes = base64_len(&oct.value);
        if bytes < 32 {
            return Err(bad(format!(
                "key {name}: an HS256 key needs at least 32 bytes ({bytes})"
            )));
        }
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(format!("key {name}: {e}")))?;
    Ok(Key {
        kid,
        algorithm,
        key,
    })
}

/// Bytes a base64url value (no padding) decodes to.
fn base64_len(value: &str) -> usize {
    value.trim_end_matches('=').len() * 3 / 4
}

#[cfg(test)]
mod tests;
