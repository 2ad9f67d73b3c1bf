//! The real binary's configuration: precedence flags > environment > file, refusing an open
//! control plane, and refusing a damaged or emptied store file, observed through what
//! `whipgate` refuses to start with.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Runs `whipgate` expecting it to refuse its configuration; returns its stderr. A gateway
/// that starts instead is killed after 20 s.
pub(crate) fn refused(args: &[&str], env: &[(&str, &str)]) -> Result<String> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_whipgate"));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars() {
        if key.starts_with("WHIPGATE_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    let mut child = command.spawn()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            bail!("whipgate {args:?} {env:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "{args:?} {env:?} started");
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut stderr)?;
    }
    Ok(stderr)
}

#[test]
fn an_open_control_plane_refuses_to_start_naming_the_api_key() -> Result<()> {
    let flag = refused(&["--grpc-listen", "0.0.0.0:0"], &[])?;
    assert!(flag.contains("--api-key"), "{flag}");
    let env = refused(&[], &[("WHIPGATE_GRPC_LISTEN", "0.0.0.0:0")])?;
    assert!(env.contains("--api-key"), "{env}");
    Ok(())
}

#[test]
fn flags_beat_the_environment_which_beats_the_file() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("whipgate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("whipgate.toml");
    std::fs::write(&file, "event_history = 0\n")?;
    let file_arg = file.to_str().context("path")?;
    let from_file = refused(&["--config", file_arg], &[])?;
    assert!(
        from_file.contains("event_history must be at least 1"),
        "{from_file}"
    );

    std::fs::write(&file, "event_history = 5\n")?;
    let env_over_file = refused(&["--config", file_arg], &[("WHIPGATE_EVENT_HISTORY", "0")])?;
    assert!(
        env_over_file.contains("event_history must be at least 1"),
        "{env_over_file}"
    );

    let flag_over_env = refused(
        &["--event-history", "0"],
        &[("WHIPGATE_EVENT_HISTORY", "5")],
    )?;
    assert!(
        flag_over_env.contains("event_history must be at least 1"),
        "{flag_over_env}"
    );
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// Runs `whipgate` on `data_dir` (every listener on 127.0.0.1:0) expecting a refusal; checks
/// that it is one clear line naming the store file, without a panic or a backtrace (even with
/// `RUST_BACKTRACE=1`), and returns that line.
fn refused_store(data_dir: &std::path::Path) -> Result<String> {
    let dir = data_dir.to_str().context("path")?;
    let stderr = refused(
        &[
            "--http-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--udp-listen",
            "127.0.0.1:0",
            "--tcp-listen",
            "127.0.0.1:0",
            "--data-dir",
            dir,
        ],
        &[("RUST_BACKTRACE", "1"), ("RUST_LOG", "info")],
    )?;
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("whipgate: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    let file = data_dir.join("whipgate.redb");
    assert!(
        errors[0].contains(&file.display().to_string()),
        "names the file: {stderr}"
    );
    Ok(errors[0].to_owned())
}

#[test]
fn a_truncated_store_file_stops_the_start_cleanly() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let data = scratch.path().join("data");
    // A real store (as a first run writes it), cut short as a full disk or a bad copy leaves it.
    drop(whipgate::store::embedded::EmbeddedStore::open(&data)?);
    let file = data.join("whipgate.redb");
    let bytes = std::fs::read(&file)?;
    std::fs::write(&file, &bytes[..3000])?;
    let line = refused_store(&data)?;
    assert!(line.contains("truncated"), "{line}");
    assert!(line.contains("restore it from a backup"), "{line}");
    assert!(line.contains("move it aside"), "{line}");
    assert_eq!(std::fs::metadata(&file)?.len(), 3000, "left as it was");
    Ok(())
}

#[test]
fn an_empty_store_file_stops_the_start() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let data = scratch.path().join("data");
    std::fs::create_dir_all(&data)?;
    std::fs::write(data.join("whipgate.redb"), b"")?;
    let line = refused_store(&data)?;
    assert!(line.contains("empty (0 bytes)"), "{line}");
    assert!(line.contains("delete"), "{line}");
    Ok(())
}

#[test]
fn a_port_clash_names_the_flag_and_the_address() -> Result<()> {
    for flag in [
        "--http-listen",
        "--grpc-listen",
        "--udp-listen",
        "--tcp-listen",
    ] {
        // Held for the whole run: the gateway must fail on this one listener.
        let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let taken = if flag == "--udp-listen" {
            udp.local_addr()?
        } else {
            tcp.local_addr()?
        };
        let taken = taken.to_string();
        let mut args = vec![];
        for other in [
            "--http-listen",
            "--grpc-listen",
            "--udp-listen",
            "--tcp-listen",
        ] {
            args.push(other);
            args.push(if other == flag {
                taken.as_str()
            } else {
                "127.0.0.1:0"
            });
        }
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        args.extend(["--data-dir", data.to_str().context("path")?]);
        let stderr = refused(&args, &[])?;
        let want = format!("{flag} {taken}: address in use");
        assert!(stderr.contains(&want), "{flag}: {stderr}");
        assert!(
            !stderr.contains("internal error") && !stderr.contains("panicked"),
            "{stderr}"
        );
        let said: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("whipgate:"))
            .collect();
        assert_eq!(said.len(), 1, "one line says why: {stderr}");
        assert!(said[0].contains(&want), "{stderr}");
    }
    Ok(())
}
