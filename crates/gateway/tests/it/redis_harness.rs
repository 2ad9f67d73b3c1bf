//! Private Redis for the cluster tests: a `redis-server` on a free loopback port with
//! persistence on (AOF in a temp dir) that a test can kill, stop and restart on the same data,
//! and a Sentinel set (master, replica, three `redis-sentinel`) for failover tests.
//!
//! Each process runs under `timeout -s KILL` in a process group of its own, is killed by that
//! group id on drop, and dies after `LIFETIME` even if the test binary is killed first.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use std::os::unix::process::CommandExt;

use crate::harness::eventually;

/// Upper bound on any helper process's life.
const LIFETIME: &str = "900";
/// The Sentinel master name.
pub const MASTER_NAME: &str = "mymaster";

/// A free loopback port (bound then released).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One helper process, in its own process group.
struct Proc {
    child: Child,
}

impl Proc {
    fn spawn(program: &str, args: &[String], log: &Path) -> Result<Self> {
        let out = std::fs::File::create(log)?;
        let child = Command::new("timeout")
            .args(["-s", "KILL", LIFETIME, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .with_context(|| {
                format!("starting {program} (apt-get install redis-server redis-sentinel)")
            })?;
        Ok(Proc { child })
    }

    /// Sends `signal` to the whole group (`timeout` and the server) and waits for it to exit.
    fn signal_and_wait(&mut self, signal: &str) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-s", signal, "--", &group])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.signal_and_wait("KILL");
    }
}

/// A private `redis-server`.
pub struct RedisServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    proc: Option<Proc>,
    _tmp: Option<tempfile::TempDir>,
}

impl RedisServer {
    /// A server with AOF persistence in a fresh temp dir.
    pub async fn start() -> Result<Self> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().to_path_buf();
        let mut s = Self::start_in(&dir, Vec::new()).await?;
        s._tmp = Some(tmp);
        Ok(s)
    }

    /// A server whose data lives in `dir`, with extra arguments (e.g. `--replicaof`).
    pub async fn start_in(dir: &Path, extra: Vec<String>) -> Result<Self> {
        let mut s = RedisServer {
            port: free_port()?,
            dir: dir.to_path_buf(),
            extra,
            proc: None,
            _tmp: None,
        };
        s.restart().await?;
        Ok(s)
    }

    /// `redis://127.0.0.1:<port>/0`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills it abruptly (SIGKILL): nothing is flushed beyond what the AOF already has.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.signal_and_wait("KILL");
        }
    }

    /// Stops it cleanly (SIGTERM).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.signal_and_wait("TERM");
        }
    }

    /// (Re)starts it on the same port and data dir and waits until it answers PING.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        let data = self.dir.join(format!("data-{}", self.port));
        std::fs::create_dir_all(&data)?;
        let mut args: Vec<String> = [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--dir",
            &data.to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(self.extra.iter().cloned());
        let log = self.dir.join(format!("redis-{}.log", self.port));
        self.proc = Some(Proc::spawn("redis-server", &args, &log)?);
        wait_ping(self.port).await
    }

    /// One command on a fresh connection (test plumbing).
    pub async fn cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        command(self.port, cmd).await
    }
}

/// One command to 127.0.0.1:`port` on a fresh connection.
pub async fn command<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> Result<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut conn = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .context("connect timeout")??;
    Ok(
        tokio::time::timeout(Duration::from_secs(5), cmd.query_async(&mut conn))
            .await
            .context("command timeout")??,
    )
}

async fn wait_ping(port: u16) -> Result<()> {
    eventually(Duration::from_secs(10), "redis PING", || async move {
        command::<String>(port, &redis::cmd("PING"))
            .await
            .ok()
            .filter(|p| p == "PONG")
    })
    .await
    .map(|_| ())
}

/// A private `redis-server` that speaks only TLS (on `port`, with `cert`/`key`), with extra
/// arguments (an ACL user, say); no persistence. Not waited for: the caller checks it answers.
pub struct TlsRedisServer {
    /// Its TLS port on 127.0.0.1.
    pub port: u16,
    _proc: Proc,
}

impl TlsRedisServer {
    /// Starts it; logs go to `dir`.
    pub fn start(dir: &Path, cert: &Path, key: &Path, extra: &[&str]) -> Result<Self> {
        let port = free_port()?;
        let mut args: Vec<String> = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            &cert.to_string_lossy(),
            "--tls-key-file",
            &key.to_string_lossy(),
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir.to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = dir.join(format!("redis-tls-{port}.log"));
        Ok(TlsRedisServer {
            port,
            _proc: Proc::spawn("redis-server", &args, &log)?,
        })
    }
}

/// A master, a replica and three sentinels watching them, all private.
pub struct SentinelSet {
    /// The master at start.
    pub master: RedisServer,
    /// Its replica.
    pub replica: RedisServer,
    /// Sentinel ports.
    pub sentinel_ports: Vec<u16>,
    sentinels: Vec<Proc>,
    _tmp: tempfile::TempDir,
}

impl SentinelSet {
    /// Starts everything and waits until the sentinels know each other and the replica.
    pub async fn start() -> Result<Self> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().to_path_buf();
        let master = RedisServer::start_in(&dir, Vec::new()).await?;
        let replica = RedisServer::start_in(
            &dir,
            vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                master.port.to_string(),
            ],
        )
        .await?;
        let mut sentinels = Vec::new();
        let mut sentinel_ports = Vec::new();
        for i in 0..3 {
            let port = free_port()?;
            let conf = dir.join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 5000\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n",
                    dir = dir.display(),
                    master = master.port,
                ),
            )?;
            let log = dir.join(format!("sentinel-{i}.log"));
            sentinels.push(Proc::spawn(
                "redis-sentinel",
                &[conf.to_string_lossy().into_owned()],
                &log,
            )?);
            sentinel_ports.push(port);
        }
        let set = SentinelSet {
            master,
            replica,
            sentinel_ports,
            sentinels,
            _tmp: tmp,
        };
        set.wait_ready().await?;
        Ok(set)
    }

    /// `redis+sentinel://127.0.0.1:a,127.0.0.1:b,127.0.0.1:c/mymaster/0`
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinel_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}/0", hosts.join(","))
    }

    async fn wait_ready(&self) -> Result<()> {
        let replica = self.replica.port;
        eventually(Duration::from_secs(20), "replica in sync", || async move {
            let info: String = command(replica, redis::cmd("INFO").arg("replication"))
                .await
                .ok()?;
            info.contains("master_link_status:up").then_some(())
        })
        .await?;
        for &port in &self.sentinel_ports {
            eventually(
                Duration::from_secs(30),
                "sentinels know each other and the replica",
                || async move {
                    let others: Vec<redis::Value> = command(
                        port,
                        redis::cmd("SENTINEL").arg("sentinels").arg(MASTER_NAME),
                    )
                    .await
                    .ok()?;
                    let replicas: Vec<redis::Value> = command(
                        port,
                        redis::cmd("SENTINEL").arg("replicas").arg(MASTER_NAME),
                    )
                    .await
                    .ok()?;
                    (others.len() == 2 && replicas.len() == 1).then_some(())
                },
            )
            .await?;
        }
        Ok(())
    }

    /// The master's port according to the first sentinel that answers.
    pub async fn master_port(&self) -> Result<u16> {
        for &port in &self.sentinel_ports {
            let addr: Result<(String, String)> = command(
                port,
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(MASTER_NAME),
            )
            .await;
            if let Ok((_, p)) = addr {
                return Ok(p.parse()?);
            }
        }
        bail!("no sentinel answered")
    }

    /// Stops the sentinels first (so none acts on a half-torn-down set).
    pub fn shutdown(&mut self) {
        self.sentinels.clear();
    }
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        self.shutdown();
    }
}
