//! Spoofed-source connectivity checks cannot divert a publisher's media.
//!
//! The test re-executes itself in a private user and network namespace (`unshare`), where a raw
//! socket may forge source addresses. Inside: the gateway, two real publishers A and B, and a
//! burst of binding requests that carry A's ufrag but come "from" B's address. Before the mux
//! authenticated checks, each such request moved B's address to A's session and B's media
//! stopped; now they are dropped and counted, and B's media keeps arriving in sequence.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{BINDING_REQUEST, Message, Setter};
use rtc::stun::textattrs::TextAttribute;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::harness::{PATIENCE, TestGateway, UdpSink, eventually};
use crate::publisher::Video;

/// Marks the re-executed child that runs inside the namespace.
const CHILD_ENV: &str = "WHIPGATE_TEST_IN_NETNS";
const TEST: &str = "spoof::spoofed_checks_from_a_publishers_address_do_not_divert_its_media";
/// Spoofed requests in the burst, and how long it lasts.
const BURST: usize = 3000;
const BURST_TIME: Duration = Duration::from_millis(1500);

#[tokio::test]
async fn spoofed_checks_from_a_publishers_address_do_not_divert_its_media() -> Result<()> {
    if std::env::var_os(CHILD_ENV).is_some() {
        return in_namespace().await;
    }
    let probe = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "true"])
        .stderr(Stdio::piped())
        .output();
    match probe {
        Err(err) => {
            eprintln!("SKIPPED: `unshare` is not available ({err}); this test needs it");
            return Ok(());
        }
        Ok(out) if !out.status.success() => {
            let why = String::from_utf8_lossy(&out.stderr);
            eprintln!("SKIPPED: user/network namespaces are not permitted here: {why}");
            return Ok(());
        }
        Ok(_) => {}
    }
    let exe = std::env::current_exe()?;
    let child = tokio::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "--", "sh", "-c"])
        // Multicast on lo: the publishers' mDNS sockets join a group (ENODEV without a route).
        .arg(r#"ip link set lo up multicast on && ip route add 224.0.0.0/4 dev lo && exec "$@""#)
        .arg("sh")
        .arg(exe)
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .context("the namespaced test did not finish in 120 s")??;
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || !log.contains("1 passed") {
        bail!("the namespaced test failed:\n{log}");
    }
    Ok(())
}

async fn in_namespace() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    let media_port = gw.media.local_addr()?;
    let (sink_a, sink_b) = (UdpSink::bind().await?, UdpSink::bind().await?);
    gw.register("a", Some(&sink_a), None).await?;
    gw.register("b", Some(&sink_b), None).await?;
    let a = gw.publish("a", Some(Video::H264), false).await?;
    let _b = gw.publish("b", Some(Video::H264), false).await?;
    let a_ufrag = a
        .answer
        .lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .context("no ufrag in A's answer")?
        .to_owned();
    let b_session = eventually(PATIENCE, "B connected with an address", || {
        let mut grpc = gw.grpc.clone();
        async move {
            let ingest = grpc
                .get_ingest(whipgate_proto::pb::GetIngestRequest {
                    ingest_id: "b".into(),
                })
                .await
                .ok()?
                .into_inner()
                .ingest?;
            let session = ingest.session?;
            (!session.remote_addr.is_empty()).then_some(session)
        }
    })
    .await?;
    let b_addr: SocketAddr = b_session.remote_addr.parse()?;
    let b_id: uuid::Uuid = b_session.session_id.parse()?;
    assert_eq!(gw.media.routed_session(b_addr), Some(b_id));
    let (SocketAddr::V4(from), SocketAddr::V4(to)) = (b_addr, media_port) else {
        bail!("IPv4 loopback expected: {b_addr} -> {media_port}");
    };
    let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, to.port());

    // B's media before, during and after the burst.
    sink_b.recv_n(10, PATIENCE).await?;
    let burst = tokio::task::spawn_blocking(move || spoof_burst(from, to, &a_ufrag));
    let mut seen = Vec::new();
    let until = Instant::now() + BURST_TIME + Duration::from_secs(1);
    while Instant::now() < until {
        let rtp = sink_b.recv_rtp(Duration::from_millis(500)).await;
        let rtp = rtp.context("B's media stopped during the spoofed burst")?;
        seen.push((Instant::now(), rtp.sequence));
    }
    let sent = burst.await??;
    assert_eq!(sent, BURST);

    let gaps: u32 = seen
        .windows(2)
        .map(|w| u32::from(w[1].1.wrapping_sub(w[0].1).wrapping_sub(1)))
        .sum();
    let longest = seen
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or_default();
    assert!(
        seen.len() >= 40,
        "B kept forwarding: {} packets",
        seen.len()
    );
    assert!(
        gaps <= 2,
        "B's forwarded sequence has {gaps} missing packets"
    );
    assert!(
        longest < Duration::from_millis(300),
        "B's media paused {longest:?}"
    );
    assert_eq!(
        gw.media.routed_session(b_addr),
        Some(b_id),
        "B's address moved"
    );
    let metrics = gw.metrics().await?;
    let dropped = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                "whipgate_media_dropped_total{reason=\"unauthenticated\",transport=\"udp\"}",
            )
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<usize>().ok())
        .context("no unauthenticated drops counted")?;
    assert!(dropped >= BURST * 9 / 10, "{dropped} of {BURST} counted");
    // A is untouched as well.
    sink_a.drain();
    sink_a.recv_n(5, PATIENCE).await?;
    Ok(())
}

/// Sends `BURST` binding requests naming A's ufrag, from B's address, in `BURST_TIME`; half
/// signed with a guessed password, half unsigned. Returns how many were sent.
fn spoof_burst(from: SocketAddrV4, to: SocketAddrV4, a_ufrag: &str) -> Result<usize> {
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255)))
        .context("raw socket (IPPROTO_RAW)")?;
    let provider = rtc::crypto::default_provider()?;
    let mut sent = 0;
    let pause = BURST_TIME / (BURST as u32 / 50);
    for i in 0..BURST {
        let mut m = Message::new();
        let user = TextAttribute::new(ATTR_USERNAME, format!("{a_ufrag}:spoof{i}"));
        let mut setters: Vec<Box<dyn Setter + '_>> =
            vec![Box::new(BINDING_REQUEST), Box::new(user)];
        if i % 2 == 0 {
            let key = format!("guessed-password-{i:06}");
            setters.push(Box::new(
                MessageIntegrity::new_short_term_integrity_with_provider(key, provider.crypto()),
            ));
        }
        setters.push(Box::new(FINGERPRINT));
        m.build(&setters)?;
        let packet = ipv4_udp(from, to, &m.raw);
        socket.send_to(&packet, &SockAddr::from(to))?;
        sent += 1;
        if i % 50 == 49 {
            std::thread::sleep(pause);
        }
    }
    Ok(sent)
}

/// An IPv4 + UDP datagram with a forged source (the kernel fills in the IP checksum; a zero
/// UDP checksum means none, RFC 768).
fn ipv4_udp(from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&from.ip().octets());
    p.extend_from_slice(&to.ip().octets());
    p.extend_from_slice(&from.port().to_be_bytes());
    p.extend_from_slice(&to.port().to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}
