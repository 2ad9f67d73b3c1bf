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
mod tests {
    use super::*;

    #[test]
    fn plain_urls_pass_through() {
        let t = RedisTarget::parse("redis://127.0.0.1:6379/2").expect("parse");
        assert_eq!(t, RedisTarget::Direct("redis://127.0.0.1:6379/2".into()));
    }

    #[test]
    fn sentinel_urls_split_into_sentinels_master_and_db() {
        let t = RedisTarget::parse("redis+sentinel://:s3cret@10.0.0.1:26380,10.0.0.2/mymaster/3")
            .expect("parse");
        assert_eq!(
            t,
            RedisTarget::Sentinel {
                sentinels: vec![
                    "redis://10.0.0.1:26380".into(),
                    "redis://10.0.0.2:26379".into()
                ],
                master: "mymaster".into(),
                db: 3,
                username: None,
                password: Some("s3cret".into()),
                tls: false,
            }
        );
        let t = RedisTarget::parse("redis+sentinel://h:1/m").expect("parse");
        assert!(matches!(t, RedisTarget::Sentinel { db: 0, .. }));
        let RedisTarget::Sentinel { sentinels, .. } =
            RedisTarget::parse("redis+sentinel://[::1]:5,[::1]/m").expect("parse")
        else {
            panic!("not sentinel")
        };
        assert_eq!(sentinels, ["redis://[::1]:5", "redis://[::1]:26379"]);
    }

    #[test]
    fn tls_and_credentials_parse() {
        let url = "rediss://app:pw@redis.example:6380/1";
        assert_eq!(
            RedisTarget::parse(url).expect("parse"),
            RedisTarget::Direct(url.into())
        );
        assert_eq!(redact(url), "rediss://app:***@redis.example:6380/1");
        let t = RedisTarget::parse("rediss+sentinel://app:pw@h:1/m").expect("parse");
        assert!(matches!(
            t,
            RedisTarget::Sentinel { tls: true, ref username, .. } if username.as_deref() == Some("app")
        ));
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, want) in [
            ("http://x", "expected redis://"),
            ("redis+sentinel://h:1", "missing master name"),
            ("redis+sentinel://h:x/m", "bad sentinel port"),
            ("redis+sentinel://h:1,/m", "empty sentinel address"),
            ("redis+sentinel://h:1/m/zz", "bad database number"),
            ("redis+sentinel://h:1/m/1/x", "unexpected path"),
        ] {
            let err = RedisTarget::parse(url).expect_err(url).to_string();
            assert!(err.contains(want), "{url}: {err}");
        }
    }

    #[test]
    fn passwords_never_reach_messages() {
        let err = RedisTarget::parse("redis+sentinel://u:hunter2@h:1")
            .expect_err("no master")
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert_eq!(redact("redis://:pw@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redact("redis://h:1/0"), "redis://h:1/0");
    }
}
