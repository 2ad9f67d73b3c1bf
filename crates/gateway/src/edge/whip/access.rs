//! Who may read the gateway's read surfaces (`GET /api/ingests`, `GET /events`,
//! `POST /events/token`), and what they see.
//!
//! - **The API key** (`Authorization: Bearer <key>`, compared by digest in constant time):
//!   everything.
//! - **An events token** from `POST /events/token` (for `EventSource`, which cannot send
//!   headers): opens `GET /events` once, with the filter it was issued for, within
//!   [`TOKEN_TTL`]. Its MAC is keyed with a key derived from the API key for this one purpose
//!   (never the API key itself), and covers the scope, the expiry, a random nonce and the
//!   filter; each node accepts a nonce once (a bounded table of spent nonces).
//! - **Anyone**, only with `--public-dashboard`: the same routes, redacted
//!   ([`whipgate_proto::json::redact_public`]: no RTP targets, consumer SDPs, publisher
//!   addresses, session ids or redirect URLs).
//!
//! Without an API key and without `--public-dashboard` the read surfaces are off (403, with
//! how to turn them on): nothing the gateway knows is served to a stranger by default.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::Error;
use crate::secret::Secret;

/// How long a token from `POST /events/token` is accepted.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Spent nonces remembered at most (each for its token's lifetime); beyond, new tokens are
/// refused until old ones expire.
const MAX_SPENT: usize = 16_384;
/// What the read API says when it is off.
pub const OFF: &str = "the dashboard's data (/api/ingests, /events) is off: this gateway has no \
    API key. Start it with --api-key-file <file> (or WHIPGATE_API_KEY) and open /dashboard with \
    that key, or pass --public-dashboard for a redacted view anyone can read";

/// What a reader may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reader {
    /// Holds the API key (or a token made with it): everything.
    Full,
    /// Anonymous, with `--public-dashboard`: redacted.
    Public,
}

/// The read surfaces' credentials.
#[derive(Clone)]
pub struct ReadAccess {
    key: Option<Secret>,
    token_key: Option<hmac::Key>,
    public: bool,
    spent: Arc<Mutex<HashMap<[u8; 16], u64>>>,
}

impl ReadAccess {
    /// Access with `api_key` (if any), open to anonymous readers when `public`.
    pub fn new(api_key: Option<&str>, public: bool) -> Self {
        ReadAccess {
            key: api_key.map(Secret::new),
            token_key: api_key.map(derive_token_key),
            public,
            spent: Arc::default(),
        }
    }

    /// Whether an API key is configured (tokens can be issued).
    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    /// The reader behind `headers`: the API key, or else anonymous when public.
    pub fn check_key(&self, headers: &HeaderMap) -> Result<Reader, Error> {
        if let (Some(key), Some(given)) = (&self.key, super::bearer(headers))
            && key.matches(given)
        {
            return Ok(Reader::Full);
        }
        self.anonymous()
    }

    /// The reader of `GET /events`: the API key, a token for `filter`, or else anonymous.
    pub fn check_events(
        &self,
        headers: &HeaderMap,
        token: Option<&str>,
        filter: &str,
        now: SystemTime,
    ) -> Result<Reader, Error> {
        if let Ok(Reader::Full) = self.check_key(headers) {
            return Ok(Reader::Full);
        }
        match (token, &self.token_key) {
            (Some(token), Some(key)) if !token.is_empty() => {
                if self.redeem(key, token, filter, now) {
                    Ok(Reader::Full)
                } else {
                    Err(Error::Unauthorized)
                }
            }
            _ => self.anonymous(),
        }
    }

    /// A new token for `GET /events` with `filter`, if a key is configured.
    pub fn issue(&self, filter: &str, now: SystemTime) -> Result<String, Error> {
        let key = self
            .token_key
            .as_ref()
            .ok_or_else(|| Error::Forbidden(OFF.into()))?;
        let mut nonce = [0u8; 16];
        SystemRandom::new().fill(&mut nonce).map_err(|_| {
            Error::internal(std::io::Error::other("no randomness for an events token"))
        })?;
        Ok(issue_token(
            key,
            unix_secs(now) + TOKEN_TTL.as_secs(),
            &nonce,
            filter,
        ))
    }

    fn anonymous(&self) -> Result<Reader, Error> {
        if self.public {
            Ok(Reader::Public)
        } else if self.key.is_some() {
            Err(Error::Unauthorized)
        } else {
            Err(Error::Forbidden(OFF.into()))
        }
    }

    /// Verifies `token` for `filter` and spends its nonce.
    fn redeem(&self, key: &hmac::Key, token: &str, filter: &str, now: SystemTime) -> bool {
        let Some((expiry, nonce)) = verify_token(key, token, filter, now) else {
            return false;
        };
        let now = unix_secs(now);
        let mut spent = self.spent.lock().unwrap_or_else(|p| p.into_inner());
        if spent.contains_key(&nonce) {
            return false;
        }
        if spent.len() >= MAX_SPENT {
            spent.retain(|_, until| *until >= now);
            if spent.len() >= MAX_SPENT {
                return false;
            }
        }
        spent.insert(nonce, expiry);
        true
    }
}

/// The token MAC key: HMAC-SHA256 of a fixed label under the API key, so a token's tag says
/// nothing usable about the key and a key for another purpose cannot make one.
pub(crate) fn derive_token_key(api_key: &str) -> hmac::Key {
    let master = hmac::Key::new(hmac::HMAC_SHA256, api_key.as_bytes());
    let derived = hmac::sign(&master, b"whipgate/v1/events-token-key");
    hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref())
}

fn token_payload(expiry: u64, nonce: &[u8; 16], filter: &str) -> String {
    format!("events\n{expiry}\n{}\n{filter}", hex::encode(nonce))
}

/// `<expiry>.<nonce hex>.<tag hex>`.
pub(crate) fn issue_token(key: &hmac::Key, expiry: u64, nonce: &[u8; 16], filter: &str) -> String {
    let tag = hmac::sign(key, token_payload(expiry, nonce, filter).as_bytes());
    format!(
        "{expiry}.{}.{}",
        hex::encode(nonce),
        hex::encode(tag.as_ref())
    )
}

/// The expiry and nonce of a token valid at `now` for `filter`.
pub(crate) fn verify_token(
    key: &hmac::Key,
    token: &str,
    filter: &str,
    now: SystemTime,
) -> Option<(u64, [u8; 16])> {
    let mut parts = token.split('.');
    let (expiry, nonce, tag) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || tag.len() != 64 || nonce.len() != 32 {
        return None;
    }
    let expiry = expiry.parse::<u64>().ok()?;
    let nonce: [u8; 16] = hex::decode(nonce).ok()?.try_into().ok()?;
    let tag = hex::decode(tag).ok()?;
    let now = unix_secs(now);
    let fresh = expiry >= now && expiry <= now + TOKEN_TTL.as_secs();
    (fresh && hmac::verify(key, token_payload(expiry, &nonce, filter).as_bytes(), &tag).is_ok())
        .then_some((expiry, nonce))
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
