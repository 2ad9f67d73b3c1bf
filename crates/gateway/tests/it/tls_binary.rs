//! The real `whipgate` binary with TLS: a real SIGHUP reloads the certificate (and a broken
//! file on SIGHUP keeps the old one, the process running), and `whipgate ctl` reaches the TLS
//! control plane with `--ca-cert`.

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::harness::{PATIENCE, eventually};
use crate::tls_pki::TestPki;

const BIN: &str = env!("CARGO_BIN_EXE_whipgate");

/// The binary with TLS on both listeners, killed (by PID) on drop.
struct Running {
    child: Child,
    http: std::net::SocketAddr,
    grpc: std::net::SocketAddr,
}

async fn start(pki: &TestPki, data: &Path, log: &Path) -> Result<Running> {
    let mut command = Command::new(BIN);
    command
        .arg("--data-dir")
        .arg(data)
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
        ])
        .args(["--udp-listen", "127.0.0.1:0", "--tcp-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log)?)
        .kill_on_drop(true);
    for (key, _) in std::env::vars() {
        if key.starts_with("WHIPGATE_") {
            command.env_remove(key);
        }
    }
    // The environment form of the flags.
    command
        .env("WHIPGATE_TLS_CERT", pki.cert_path())
        .env("WHIPGATE_TLS_KEY", pki.key_path());
    let mut child = command.spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .context("no ready line")??
        .with_context(|| format!("gateway exited: {}", read(log)))?;
    let ready: Value = serde_json::from_str(&line)?;
    let addr = |key: &str| -> Result<std::net::SocketAddr> {
        Ok(ready[key].as_str().context("address missing")?.parse()?)
    };
    Ok(Running {
        http: addr("http")?,
        grpc: addr("grpc")?,
        child,
    })
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

fn hangup(child: &Child) -> Result<()> {
    let pid = child.id().context("the gateway has exited")?;
    kill(Pid::from_raw(i32::try_from(pid)?), Signal::SIGHUP)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_binary_and_ctl_speaks_tls() -> Result<()> {
    let pki = TestPki::new()?;
    let scratch = tempfile::tempdir()?;
    let log = scratch.path().join("whipgate.log");
    let mut gw = start(&pki, &scratch.path().join("data"), &log).await?;
    let first = CertificateDer::from_pem_slice(&std::fs::read(pki.cert_path())?)?.to_vec();
    assert_eq!(pki.presented(gw.http, &[]).await?.0, first);

    // A real SIGHUP: new handshakes on both listeners get the new certificate.
    let second = pki.write_leaf()?;
    hangup(&gw.child)?;
    eventually(PATIENCE, "the new certificate after SIGHUP", || async {
        let http = pki.presented(gw.http, &[]).await.ok()?.0;
        let grpc = pki.presented(gw.grpc, &[b"h2"]).await.ok()?.0;
        (http == second && grpc == second).then_some(())
    })
    .await?;
    assert!(gw.child.try_wait()?.is_none(), "SIGHUP stopped the gateway");
    assert!(
        read(&log).contains("TLS certificate reloaded"),
        "{}",
        read(&log)
    );

    // A broken file on SIGHUP: logged, the old certificate stays, the gateway runs on.
    std::fs::write(pki.cert_path(), "garbage")?;
    hangup(&gw.child)?;
    eventually(PATIENCE, "the failed reload in the log", || async {
        read(&log).contains("reload failed").then_some(())
    })
    .await?;
    assert!(
        gw.child.try_wait()?.is_none(),
        "a bad reload stopped the gateway"
    );
    assert_eq!(pki.presented(gw.http, &[]).await?.0, second);
    let health = pki
        .https()?
        .get(format!("https://{}/healthz", gw.http))
        .send()
        .await?;
    assert_eq!(health.status(), 200);

    // `whipgate ctl` over TLS: --ca-cert (and WHIPGATE_CA_CERT) trust the private CA.
    let addr = format!("https://{}", gw.grpc);
    let ca = pki.ca_path().to_string_lossy().into_owned();
    let (code, _, err) = ctl(&[
        "--addr",
        &addr,
        "--ca-cert",
        &ca,
        "register",
        "cam",
        "--video",
        "127.0.0.1:5004",
    ])
    .await?;
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = ctl_env(&["--addr", &addr, "--json", "list"], Some(&ca)).await?;
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(out.trim())?;
    assert!(out.contains("\"cam\""), "{listed}");
    // Without the CA the certificate is not trusted; plaintext to a TLS port fails too.
    let (code, _, err) = ctl(&["--addr", &addr, "list"]).await?;
    assert_eq!(code, 1, "{err}");
    let plain = format!("http://{}", gw.grpc);
    let (code, _, _) = ctl(&["--addr", &plain, "list"]).await?;
    assert_eq!(code, 1);
    let (code, _, err) = ctl(&["--addr", &plain, "--ca-cert", &ca, "list"]).await?;
    assert_eq!(code, 1);
    assert!(err.contains("https://"), "{err}");
    assert!(gw.child.try_wait()?.is_none());
    gw.child.kill().await?;
    Ok(())
}

async fn ctl(args: &[&str]) -> Result<(i32, String, String)> {
    ctl_env(args, None).await
}

/// Runs `whipgate ctl ARGS` (with WHIPGATE_CA_CERT when `ca`); (exit code, stdout, stderr).
async fn ctl_env(args: &[&str], ca: Option<&str>) -> Result<(i32, String, String)> {
    let mut cmd = Command::new(BIN);
    cmd.arg("ctl").args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("WHIPGATE_") {
            cmd.env_remove(key);
        }
    }
    if let Some(ca) = ca {
        cmd.env("WHIPGATE_CA_CERT", ca);
    }
    let out = tokio::time::timeout(PATIENCE, cmd.kill_on_drop(true).output())
        .await
        .context("ctl did not finish")??;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}
