//! Constant-time checks of shared secrets (the control-plane API key, WHIP bearer tokens)
//! that leak neither content nor length: both sides are hashed with SHA-256 and the
//! fixed-size digests compared with `subtle`.

use ring::digest::{SHA256, digest};
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

fn sha256(value: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, value.as_bytes()).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_secrets_match_and_others_do_not() {
        let key = Secret::new("s3cret");
        assert!(key.matches("s3cret"));
        assert!(!key.matches("s3cre"), "prefix");
        assert!(!key.matches("s3cret "), "longer");
        assert!(!key.matches(""));
        assert!(secrets_equal("", ""));
        assert!(!secrets_equal("a", "b"));
        assert_eq!(format!("{key:?}"), "Secret(..)", "no digest in logs");
    }
}
