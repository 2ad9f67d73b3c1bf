//! `--cluster-redis` URLs: a plain `redis://[user:password@]host:port/db` (`rediss://`: TLS),
//! or Sentinel's `redis+sentinel://[user:password@]host:port,host:port/<master-name>[/db]`
//! (`rediss+sentinel://`: TLS to the master and replicas; the sentinels themselves are reached
//! in plain text).
//!
//! redis-rs parses the plain form itself but has no URL syntax for Sentinel (it takes a list
//! of sentinel addresses, a master name and the data nodes' connection info), so the Sentinel
//! form is split here into exactly those parts. The credentials, if any, are the data nodes'
//! (the master's and replicas'); sentinels are reached without credentials.

use super::ClusterError;

/// Default sentinel port when an address has none.
const SENTINEL_PORT: u16 = 26379;

/// Where the cluster's Redis is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisTarget {
    /// One Redis server (`redis://`, `rediss://` or `unix://`), as redis-rs parses it.
    Direct(String),
    /// A master found through Sentinel.
    Sentinel {
        /// Sentinel addresses as `redis://host:port`.
        sentinels: Vec<String>,
        /// The monitored master's name.
        master: String,
        /// Database number on the master.
        db: i64,
        /// Username for the master, if any.
        username: Option<String>,
        /// Password for the master, if any.
        password: Option<String>,
        /// TLS to the master and replicas (`rediss+sentinel://`).
        tls: bool,
    },
}

impl RedisTarget {
    /// Parses a `--cluster-redis` value.
    pub fn parse(url: &str) -> Result<Self, ClusterError> {
        let bad = |why: &str| ClusterError::BadUrl(format!("{}: {why}", redact(url)));
        let sentinel = url
            .strip_prefix("redis+sentinel://")
            .map(|rest| (rest, false))
            .or_else(|| url.strip_prefix("rediss+sentinel://").map(|r| (r, true)));
        if let Some((rest, tls)) = sentinel {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let (userinfo, hosts) = match authority.rsplit_once('@') {
                Some((u, h)) => (Some(u), h),
                None => (None, authority),
            };
            let (username, password) = match userinfo {
                None => (None, None),
                Some(u) => match u.split_once(':') {
                    Some((user, pass)) => (non_empty(user), non_empty(pass)),
                    None => (non_empty(u), None),
                },
            };
            let mut sentinels = Vec::new();
            for host in hosts.split(',') {
                if host.is_empty() {
                    return Err(bad("empty sentinel address"));
                }
                let (name, port) = split_host_port(host).map_err(bad)?;
                sentinels.push(format!("redis://{name}:{port}"));
            }
            let mut parts = path.split('/').filter(|p| !p.is_empty());
            let master = parts
                .next()
                .ok_or_else(|| bad("missing master name (redis+sentinel://host:port/<master>/db)"))?
                .to_string();
            let db = match parts.next() {
                Some(d) => d.parse::<i64>().map_err(|_| bad("bad database number"))?,
                None => 0,
            };
            if parts.next().is_some() {
                return Err(bad("unexpected path after the database number"));
            }
            return Ok(RedisTarget::Sentinel {
                sentinels,
                master,
                db,
                username,
                password,
                tls,
            });
        }
        if url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://")
        {
            // Let redis-rs validate the rest now, not on first use.
            redis::Client::open(url).map_err(|e| bad(&e.to_string()))?;
            return Ok(RedisTarget::Direct(url.to_string()));
        }
        Err(bad(
            "expected redis://host:port/db or redis+sentinel://host:port,host:port/<master>/db \
             (rediss:// and rediss+sentinel:// for TLS)",
        ))
    }
}

/// `host:port`, `host`, `[v6]:port` or `[v6]`; the name keeps its brackets (URL form).
fn split_host_port(host: &str) -> Result<(&str, u16), &'static str> {
    let (name, port) = if host.starts_with('[') {
        match host.split_once(']') {
            Some((_, "")) => (host, None),
            Some((v6, rest)) => (
                &host[..v6.len() + 1],
                Some(rest.strip_prefix(':').ok_or("bad sentinel address")?),
            ),
            None => return Err("bad sentinel address"),
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    if name.is_empty() || name == "[]" {
        return Err("empty sentinel host");
    }
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| "bad sentinel port")?,
        None => SENTINEL_PORT,
    };
    Ok((name, port))
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// The URL without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, _)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{}", &rest[userinfo.len() + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests;
