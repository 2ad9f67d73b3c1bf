//! Constant-time checks of shared secrets (the control-plane API key, WHIP bearer tokens)
//! that leak neither content nor length: both sides are hashed with SHA-256 and the
//! fixed-size digests compared with `subtle`. Bearer tokens are kept (in memory and in every
//! store) only as a [`TokenHash`]: a random salt and SHA-256(salt || token).

use crate::error::Error;
use ring::digest::{Context, SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

/// A secret kept as its SHA-256 digest, checked in constant time.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl Secret {
    /// Remembers `value`'s digest.
    pub fn new(value: &str) -> Self {
        Secret(sha256(value))
    }

    /// Whether `given` is the secret (time independent of where or whether they differ).
    pub fn matches(&self, given: &str) -> bool {
        bool::from(self.0.ct_eq(&sha256(given)))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Compares two secrets in constant time, lengths included.
pub fn secrets_equal(expected: &str, given: &str) -> bool {
    Secret::new(expected).matches(given)
}

/// Bytes of a [`TokenHash`]'s salt.
const SALT_LEN: usize = 16;
/// How a [`TokenHash`] is written: `sha256:<salt, 32 hex>:<digest, 64 hex>`.
const TOKEN_HASH_SCHEME: &str = "sha256";

/// A bearer token at rest: a random 16-byte salt and SHA-256(salt || token). The registry and
/// the stores keep only this; a token is checked by hashing the given one with the same salt
/// and comparing the digests in constant time. Two hashes of one token differ (their salts
/// do): equality of `TokenHash`es means "the same stored hash", not "the same token".
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TokenHash {
    salt: [u8; SALT_LEN],
    digest: [u8; 32],
}

impl TokenHash {
    /// Hashes `token` with a fresh random salt.
    pub fn new(token: &str) -> Self {
        let mut salt = [0u8; SALT_LEN];
        // As `Uuid::new_v4` (session ids) does, treat a failing OS random source as fatal:
        // there is no safe fallback for a salt.
        SystemRandom::new()
            .fill(&mut salt)
            .expect("the OS random number generator failed");
        TokenHash {
            digest: salted_sha256(&salt, token),
            salt,
        }
    }

    /// Whether `given` is the token this hash was made from (constant time in `given`'s
    /// content and length).
    pub fn matches(&self, given: &str) -> bool {
        bool::from(self.digest.ct_eq(&salted_sha256(&self.salt, given)))
    }

    /// Whether `token` is the token behind `stored` (`None` on both sides: no token).
    pub fn same_token(stored: Option<&TokenHash>, token: Option<&str>) -> bool {
        match (stored, token) {
            (None, None) => true,
            (Some(hash), Some(token)) => hash.matches(token),
            _ => false,
        }
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

impl From<TokenHash> for String {
    fn from(hash: TokenHash) -> String {
        format!(
            "{TOKEN_HASH_SCHEME}:{}:{}",
            hex::encode(hash.salt),
            hex::encode(hash.digest)
        )
    }
}

impl TryFrom<String> for TokenHash {
    type Error = Error;

    fn try_from(text: String) -> Result<Self, Error> {
        let bad = || "not a token hash (expected sha256:<32 hex>:<64 hex>)".to_owned();
        let mut parts = text.split(':');
        let (Some(TOKEN_HASH_SCHEME), Some(salt), Some(digest), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::BadRequest(bad()));
        };
        let mut hash = TokenHash {
            salt: [0; SALT_LEN],
            digest: [0; 32],
        };
        hex::decode_to_slice(salt, &mut hash.salt).map_err(|_| Error::BadRequest(bad()))?;
        hex::decode_to_slice(digest, &mut hash.digest).map_err(|_| Error::BadRequest(bad()))?;
        Ok(hash)
    }
}

fn salted_sha256(salt: &[u8], value: &str) -> [u8; 32] {
    let mut ctx = Context::new(&SHA256);
    ctx.update(salt);
    ctx.update(value.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn sha256(value: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, value.as_bytes()).as_ref());
    out
}

#[cfg(test)]
mod tests;
