//! Durations as (fractional) seconds: the `*_secs` flags, variables and file keys.

use std::time::Duration;

use crate::error::Error;
use serde::{Deserialize, Deserializer, Serializer};

/// Longest duration any setting takes: a year (timers add durations to the clock's now,
/// which a larger value would overflow).
const MAX_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// Parses a flag or environment value in seconds.
pub(super) fn parse_secs(value: &str) -> Result<Duration, Error> {
    let secs: f64 = value
        .trim()
        .parse()
        .map_err(|_| Error::Config(format!("invalid number of seconds {value:?}")))?;
    checked(secs)
}

/// `secs` as a duration, if it is a number of seconds from 0 to a year.
fn checked(secs: f64) -> Result<Duration, Error> {
    if !(0.0..=MAX_SECS).contains(&secs) {
        return Err(Error::Config(format!(
            "invalid duration {secs}: expected 0 to {MAX_SECS} seconds"
        )));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| Error::Config(format!("invalid duration {secs}")))
}

pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let secs = f64::deserialize(d)?;
    checked(secs).map_err(serde::de::Error::custom)
}
