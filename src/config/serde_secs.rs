//! Durations as (fractional) seconds: the `*_secs` flags, variables and file keys.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Parses a flag or environment value in seconds.
pub(super) fn parse_secs(value: &str) -> Result<Duration, String> {
    let secs: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("invalid number of seconds {value:?}"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("invalid duration {secs}"))
}

pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let secs = f64::deserialize(d)?;
    Duration::try_from_secs_f64(secs)
        .map_err(|_| serde::de::Error::custom(format!("invalid duration {secs}")))
}
