//! One cheap-to-clone handle to the cluster's Redis, direct or through Sentinel.
//!
//! redis-rs's `ConnectionManager` reconnects to the address it was built with, so it cannot
//! follow a Sentinel failover; this handle keeps one multiplexed connection and, when a command
//! fails in a way that means "this connection or this server is gone" (I/O error, timeout,
//! `READONLY` from a demoted master, `MASTERDOWN`), drops it, so the next command asks the
//! sentinels for the current master again. Every command has a deadline: with Redis down a call
//! fails in at most [`Timeouts::command`] with [`ClusterError::Unavailable`]; right after a
//! failed connect, calls fail at once for [`Timeouts::retry_after_failure`] instead of queueing
//! behind new connection attempts.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, ErrorKind, RedisConnectionInfo, RedisError, RedisResult,
    ServerErrorKind,
};
use tokio::sync::Mutex;

use super::ClusterError;
use super::trust::Trust;
use super::url::{RedisTarget, redact};

/// Deadlines for talking to Redis.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Connecting (and, with Sentinel, finding the master).
    pub connect: Duration,
    /// One command or script, answer included.
    pub command: Duration,
    /// After a failed connect, calls fail at once for this long.
    pub retry_after_failure: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(1),
            command: Duration::from_secs(1),
            retry_after_failure: Duration::from_millis(250),
        }
    }
}

/// A handle to the cluster's Redis (clones share one connection).
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

struct Inner {
    shown: String,
    timeouts: Timeouts,
    trust: Trust,
    source: Source,
    state: Mutex<State>,
}

enum Source {
    Direct(Client),
    Sentinel(Mutex<SentinelClient>),
}

#[derive(Default)]
struct State {
    conn: Option<MultiplexedConnection>,
    failed: Option<(Instant, String)>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("url", &self.inner.shown)
            .finish()
    }
}

impl Redis {
    /// A handle for `url` (see [`RedisTarget::parse`]) whose records and calls are
    /// authenticated with `trust`; connects lazily, on first use.
    pub fn open(url: &str, timeouts: Timeouts, trust: Trust) -> Result<Self, ClusterError> {
        Redis::open_with_ca(url, timeouts, trust, None)
    }

    /// [`Redis::open`], trusting only the CA certificates in `ca_pem` (PEM) for `rediss://`
    /// (`None`: the system's roots).
    pub fn open_with_ca(
        url: &str,
        timeouts: Timeouts,
        trust: Trust,
        ca_pem: Option<Vec<u8>>,
    ) -> Result<Self, ClusterError> {
        let bad = |e: redis::RedisError| ClusterError::BadUrl(format!("{}: {e}", redact(url)));
        let certs = |ca: &Option<Vec<u8>>| redis::TlsCertificates {
            client_tls: None,
            root_cert: ca.clone(),
        };
        let source = match RedisTarget::parse(url)? {
            RedisTarget::Direct(u) => Source::Direct(match &ca_pem {
                Some(_) if u.starts_with("rediss://") => {
                    Client::build_with_tls(u.as_str(), certs(&ca_pem)).map_err(bad)?
                }
                Some(_) => {
                    return Err(ClusterError::BadUrl(format!(
                        "{}: --cluster-redis-ca needs a rediss:// URL",
                        redact(url)
                    )));
                }
                None => Client::open(u.as_str()).map_err(bad)?,
            }),
            RedisTarget::Sentinel {
                sentinels,
                master,
                db,
                username,
                password,
                tls,
            } => {
                let mut info = RedisConnectionInfo::default().set_db(db);
                if let Some(u) = username {
                    info = info.set_username(u);
                }
                if let Some(p) = password {
                    info = info.set_password(p);
                }
                let mut node =
                    SentinelNodeConnectionInfo::default().set_redis_connection_info(info);
                if tls {
                    node = node.set_tls_mode(redis::TlsMode::Secure);
                }
                if ca_pem.is_some() {
                    // redis-rs takes custom roots for Sentinel only through its builder of
                    // parsed addresses; the system's roots serve rediss+sentinel:// here.
                    return Err(ClusterError::BadUrl(format!(
                        "{}: --cluster-redis-ca is not supported with Sentinel (the system's \
                         CA roots are used for rediss+sentinel://)",
                        redact(url)
                    )));
                }
                let client = SentinelClient::build(
                    sentinels,
                    master,
                    Some(node),
                    SentinelServerType::Master,
                )
                .map_err(bad)?;
                Source::Sentinel(Mutex::new(client))
            }
        };
        Ok(Redis {
            inner: Arc::new(Inner {
                shown: redact(url),
                timeouts,
                trust,
                source,
                state: Mutex::new(State::default()),
            }),
        })
    }

    /// The URL, password redacted.
    pub fn describe(&self) -> &str {
        &self.inner.shown
    }

    /// The keys that authenticate what goes through this handle.
    pub fn trust(&self) -> &Trust {
        &self.inner.trust
    }

    /// The deadlines in force.
    pub fn timeouts(&self) -> Timeouts {
        self.inner.timeouts
    }

    /// The shared connection, (re)connecting if needed.
    pub async fn connection(&self) -> Result<MultiplexedConnection, ClusterError> {
        let mut state = self.inner.state.lock().await;
        if let Some(conn) = &state.conn {
            return Ok(conn.clone());
        }
        if let Some((at, why)) = &state.failed
            && at.elapsed() < self.inner.timeouts.retry_after_failure
        {
            return Err(ClusterError::Unavailable(why.clone()));
        }
        match self.connect(Some(self.inner.timeouts.command)).await {
            Ok(conn) => {
                state.conn = Some(conn.clone());
                state.failed = None;
                Ok(conn)
            }
            Err(e) => {
                let why = e.to_string();
                state.failed = Some((Instant::now(), why));
                Err(e)
            }
        }
    }

    /// A connection of its own, for blocking commands (`XREAD BLOCK`, `BLPOP`) that would stall
    /// every other caller of the shared one; `response_timeout` must exceed the block time.
    pub async fn dedicated(
        &self,
        response_timeout: Option<Duration>,
    ) -> Result<MultiplexedConnection, ClusterError> {
        self.connect(response_timeout).await
    }

    async fn connect(
        &self,
        response_timeout: Option<Duration>,
    ) -> Result<MultiplexedConnection, ClusterError> {
        let t = self.inner.timeouts;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(t.connect))
            .set_response_timeout(response_timeout);
        let attempt = async {
            let client = match &self.inner.source {
                Source::Direct(c) => c.clone(),
                Source::Sentinel(s) => s.lock().await.async_get_client().await?,
            };
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
        };
        match tokio::time::timeout(t.connect, attempt).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(ClusterError::Unavailable(format!(
                "connecting to {}: {e}",
                self.inner.shown
            ))),
            Err(_) => Err(ClusterError::Unavailable(format!(
                "connecting to {}: no answer within {:?}",
                self.inner.shown, t.connect
            ))),
        }
    }

    /// Drops the shared connection, so the next call reconnects (and re-resolves the master).
    pub async fn reset(&self) {
        self.inner.state.lock().await.conn = None;
    }

    /// Runs `f` on the shared connection under the command deadline, mapping failures.
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, ClusterError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let conn = self.connection().await?;
        match tokio::time::timeout(self.inner.timeouts.command, f(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if needs_reconnect(&e) {
                    self.reset().await;
                }
                Err(map_error(&e))
            }
            Err(_) => {
                self.reset().await;
                Err(ClusterError::Unavailable(format!(
                    "{}: no answer within {:?}",
                    self.inner.shown, self.inner.timeouts.command
                )))
            }
        }
    }

    /// Sends one command.
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, ClusterError> {
        self.run(|mut c| async move { cmd.query_async(&mut c).await })
            .await
    }

    /// Sends a pipeline (use `.atomic()` for MULTI/EXEC).
    pub async fn pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, ClusterError> {
        self.run(|mut c| async move { pipe.query_async(&mut c).await })
            .await
    }

    /// Runs a Lua script (EVALSHA, loading it again after a restart or failover).
    pub async fn script<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, ClusterError> {
        self.run(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await
    }
}

/// Whether the error means the connection (or the server behind it) is no longer usable.
pub(crate) fn needs_reconnect(e: &RedisError) -> bool {
    e.is_unrecoverable_error()
        || e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
}

/// Redis errors as cluster errors: "retry later" or "not what we wrote".
pub(crate) fn map_error(e: &RedisError) -> ClusterError {
    let transient = needs_reconnect(e)
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::BusyLoading | ServerErrorKind::TryAgain)
                | ErrorKind::MasterNameNotFoundBySentinel
                | ErrorKind::AuthenticationFailed
        );
    if transient {
        ClusterError::Unavailable(e.to_string())
    } else {
        ClusterError::Corrupt(e.to_string())
    }
}
