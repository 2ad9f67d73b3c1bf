//! `whipgate ctl` end to end: the real binary runs the gateway (with an API key), and the real
//! binary's `ctl` subcommands drive it, in human and JSON output.

use std::process::Stdio;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::harness::{PATIENCE, eventually};
use crate::publisher::{Publisher, Video};

const BIN: &str = env!("CARGO_BIN_EXE_whipgate");
const KEY: &str = "ctl-test-key";

/// The gateway binary, killed on drop, and its bound addresses from the ready line.
struct Running {
    _child: Child,
    // A fresh data dir: nothing in the work tree, and the event sequence starts at 1.
    _data: tempfile::TempDir,
    http: String,
    grpc: String,
}

async fn gateway() -> Result<Running> {
    let data = tempfile::tempdir()?;
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(data.path())
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--udp-listen",
            "127.0.0.1:0",
            // Every listener on a free port: tests run in parallel.
            "--tcp-listen",
            "127.0.0.1:0",
            "--stats-interval-secs",
            "0.5",
        ])
        .env("WHIPGATE_API_KEY", KEY)
        .env_remove("WHIPGATE_CTL_ADDR")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .context("no ready line")??
        .context("gateway exited")?;
    let ready: Value = serde_json::from_str(&line)?;
    Ok(Running {
        _child: child,
        _data: data,
        http: ready["http"].as_str().context("http")?.to_owned(),
        grpc: format!("http://{}", ready["grpc"].as_str().context("grpc")?),
    })
}

/// Runs `whipgate ctl ARGS` against `gw`; returns (exit code, stdout, stderr).
async fn ctl(gw: &Running, key: Option<&str>, args: &[&str]) -> Result<(i32, String, String)> {
    let mut cmd = Command::new(BIN);
    cmd.arg("ctl").args(args).env("WHIPGATE_CTL_ADDR", &gw.grpc);
    match key {
        Some(k) => cmd.env("WHIPGATE_API_KEY", k),
        None => cmd.env_remove("WHIPGATE_API_KEY"),
    };
    let out = tokio::time::timeout(PATIENCE, cmd.kill_on_drop(true).output())
        .await
        .context("ctl did not finish")??;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `ctl --json ARGS`, which must succeed; its JSON.
async fn json(gw: &Running, args: &[&str]) -> Result<Value> {
    let args: Vec<&str> = std::iter::once("--json")
        .chain(args.iter().copied())
        .collect();
    let (code, out, err) = ctl(gw, Some(KEY), &args).await?;
    if code != 0 {
        bail!("ctl {args:?} exited {code}: {err}");
    }
    Ok(serde_json::from_str(out.trim())?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_drives_a_running_gateway() -> Result<()> {
    let gw = gateway().await?;
    // No key: refused, with the gRPC code on stderr and exit 1.
    let (code, _, err) = ctl(&gw, None, &["list"]).await?;
    assert_eq!(code, 1);
    assert!(err.contains("UNAUTHENTICATED"), "{err}");

    let registered = json(
        &gw,
        &[
            "register",
            "cam",
            "--video",
            "127.0.0.1:5004",
            "--codec",
            "h264",
            "--codec",
            "vp8",
            "--label",
            "room=a",
        ],
    )
    .await?;
    assert_eq!(registered["created"], true);
    assert_eq!(
        registered["video_codecs"],
        serde_json::json!(["h264", "vp8"])
    );
    assert_eq!(registered["labels"]["room"], "a");
    // Human output by default; a key file works as well as the environment.
    let dir = std::env::temp_dir().join(format!("whipgate-ctl-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let key_file = dir.join("key");
    std::fs::write(&key_file, format!("{KEY}\n"))?;
    let key_path = key_file.to_string_lossy().into_owned();
    let (code, out, err) = ctl(&gw, None, &["--api-key-file", &key_path, "get", "cam"]).await?;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("ingest      cam") && out.contains("session     none"),
        "{out}"
    );
    assert!(out.contains("m=video 5004 RTP/AVP 96 97"), "{out}");

    let (code, _, err) = ctl(&gw, Some(KEY), &["get", "nope"]).await?;
    assert_eq!(code, 1);
    assert!(err.contains("NOT_FOUND"), "{err}");

    // A watcher sees the publish and its stats, live.
    let mut watch = Command::new(BIN)
        .args([
            "ctl",
            "--json",
            "watch",
            "--from-seq",
            "1",
            "--ingest",
            "cam",
        ])
        .env("WHIPGATE_CTL_ADDR", &gw.grpc)
        .env("WHIPGATE_API_KEY", KEY)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut watched = BufReader::new(watch.stdout.take().context("stdout")?).lines();

    let (mut publisher, offer) = Publisher::new(Some(Video::H264), true).await?;
    let response = reqwest::Client::new()
        .post(format!("http://{}/whip/cam", gw.http))
        .header("content-type", "application/sdp")
        .body(offer)
        .send()
        .await?;
    assert_eq!(response.status(), 201);
    publisher.set_answer(response.text().await?).await?;
    publisher.connected(PATIENCE).await?;
    publisher.start_media().await?;

    let mut kinds = Vec::new();
    while !kinds.iter().any(|k| k == "session_stats") {
        let line = tokio::time::timeout(PATIENCE, watched.next_line())
            .await
            .context("no event from ctl watch")??
            .context("ctl watch ended")?;
        let event: Value = serde_json::from_str(&line)?;
        assert_eq!(event["ingest_id"], "cam");
        kinds.push(event["kind"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(
        kinds[0], "ingest_registered",
        "replayed from seq 1: {kinds:?}"
    );
    assert!(kinds.iter().any(|k| k == "track_started"), "{kinds:?}");
    let _ = watch.kill().await;

    let live = eventually(PATIENCE, "a live session in ctl get", || async {
        let v = json(&gw, &["get", "cam"]).await.ok()?;
        (v["session"]["state"] == "connected").then_some(v)
    })
    .await?;
    assert_eq!(live["session"]["video_codec"], "H264");
    let sdp = live["session"]["consumer_sdp"].as_str().unwrap_or_default();
    assert!(sdp.contains("m=video 5004 RTP/AVP 96\r\n"), "{sdp}");
    let node_id = live["session"]["node_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let nodes = json(&gw, &["nodes"]).await?;
    let node = &nodes["nodes"][0];
    assert_eq!(node["node_id"], node_id.as_str());
    assert_eq!(node["advertise_url"], format!("http://{}", gw.http));
    assert_eq!(node["live_publishers"], 1);
    assert_eq!(node["draining"], false);
    let (code, out, _) = ctl(&gw, Some(KEY), &["nodes"]).await?;
    assert_eq!(code, 0);
    assert!(out.contains(&node_id) && out.contains("serving"), "{out}");

    assert_eq!(json(&gw, &["keyframe", "cam"]).await?["requested"], true);
    let caps = json(&gw, &["caps", "set", "--max-publishers", "3"]).await?;
    assert_eq!(caps["caps"]["max_publishers"], 3);
    assert_eq!(caps["live_publishers"], 1);
    let (_, out, _) = ctl(&gw, Some(KEY), &["caps", "get"]).await?;
    assert!(out.contains("max_publishers  3"), "{out}");
    let limited = json(
        &gw,
        &[
            "caps",
            "set",
            "--ingest",
            "cam",
            "--max-bitrate-bps",
            "9000000",
        ],
    )
    .await?;
    assert_eq!(limited["caps"]["max_publishers"], 3);
    let (_, list, _) = ctl(&gw, Some(KEY), &["list"]).await?;
    assert!(
        list.lines()
            .any(|l| l.starts_with("cam") && l.contains("connected")),
        "{list}"
    );

    let torn = json(&gw, &["teardown", "cam", "--reason", "maintenance"]).await?;
    assert_eq!(torn["session_closed"], true);
    let gone = json(&gw, &["unregister", "cam"]).await?;
    assert_eq!(gone["session_closed"], false);
    assert_eq!(
        json(&gw, &["list"]).await?["ingests"],
        serde_json::json!([])
    );
    let (code, _, err) = ctl(&gw, Some(KEY), &["caps", "set"]).await?;
    assert_eq!(code, 1, "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_host_port_addr_is_plaintext_grpc() -> Result<()> {
    let gw = gateway().await?;
    let bare = gw.grpc.trim_start_matches("http://").to_owned();
    let (code, out, err) = ctl(&gw, Some(KEY), &["--addr", &bare, "--json", "list"]).await?;
    assert_eq!(code, 0, "ctl --addr {bare}: {err}");
    serde_json::from_str::<Value>(out.trim())?;
    Ok(())
}
