//! What publishers trip over (issue 20), where whipgate decides the outcome: the candidate
//! order of the answer with `--public-ip` (libdatachannel/OBS and FFmpeg use the first one),
//! and offers with no candidates at all (libdatachannel posts before gathering, FFmpeg never
//! includes any). The media-level pitfalls (SPS/PPS and slices, no consent checks after
//! connecting) are on simulated time in `src/media/pitfall_tests.rs`.

use std::net::IpAddr;

use anyhow::{Context, Result};

use crate::harness::{PATIENCE, TestGateway, UdpSink, header};
use crate::publisher::{Publisher, Video};

/// One `a=candidate` line of an answer: transport, address, port, `tcptype` if any.
#[derive(Debug, PartialEq, Eq)]
struct Candidate {
    component: u16,
    transport: String,
    ip: IpAddr,
    port: u16,
    typ: String,
    tcptype: Option<String>,
}

/// Every `a=candidate` line of `sdp`, in order.
fn candidates(sdp: &str) -> Result<Vec<Candidate>> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=candidate:"))
        .map(|l| {
            // foundation component transport priority address port typ <type> [tcptype <t>]
            let f: Vec<&str> = l.split_whitespace().collect();
            let field = |i: usize| f.get(i).copied().with_context(|| format!("field {i}: {l}"));
            let tcptype = f
                .iter()
                .position(|w| *w == "tcptype")
                .and_then(|i| f.get(i + 1))
                .map(|t| (*t).to_owned());
            Ok(Candidate {
                component: field(1)?.parse()?,
                transport: field(2)?.to_ascii_lowercase(),
                ip: field(4)?.parse()?,
                port: field(5)?.parse()?,
                typ: field(7)?.to_owned(),
                tcptype,
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_public_ips_the_answer_lists_them_udp_first_and_ipv4_before_ipv6() -> Result<()> {
    let v4: IpAddr = "203.0.113.7".parse()?;
    let v6: IpAddr = "2001:db8::7".parse()?;
    // IPv6 named first on the command line: the answer still leads with IPv4, the family
    // every publisher can reach and the one that FFmpeg (first `typ host` UDP candidate) and
    // libdatachannel try first.
    let mut gw = TestGateway::start_with(|c| c.public_ip = vec![v6, v4]).await?;
    let sink = UdpSink::bind().await?;
    gw.register("cam", Some(&sink), None).await?;
    let (_publisher, offer) = Publisher::new(Some(Video::H264), false).await?;
    let response = gw.post_offer("cam", &offer, None).await?;
    assert_eq!(response.status(), 201);
    let answer = response.text().await?;
    let udp = gw.bound.udp.port();
    let tcp = gw.bound.tcp.context("ICE-TCP is on")?.port();

    let found = candidates(&answer)?;
    // rtc also lists each candidate for component 2 (RTCP), right after component 1's.
    let summary: Vec<(&str, IpAddr, u16)> = found
        .iter()
        .filter(|c| c.component == 1)
        .map(|c| (c.transport.as_str(), c.ip, c.port))
        .collect();
    assert_eq!(
        summary,
        [
            ("udp", v4, udp),
            ("udp", v6, udp),
            ("tcp", v4, tcp),
            ("tcp", v6, tcp)
        ],
        "{answer}"
    );
    let first = &found[0];
    assert_eq!(
        (
            first.component,
            first.transport.as_str(),
            first.ip,
            first.port
        ),
        (1, "udp", v4, udp),
        "{answer}"
    );
    assert!(found.iter().all(|c| c.typ == "host"), "{answer}");
    assert!(
        found
            .iter()
            .all(|c| (c.transport == "tcp") == (c.tcptype.as_deref() == Some("passive"))),
        "{answer}"
    );
    // Only the public addresses: the bound loopback address is never advertised next to them.
    assert!(found.iter().all(|c| !c.ip.is_loopback()), "{answer}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_without_candidates_connects_from_its_checks_and_is_forwarded() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    let (video, audio) = (UdpSink::bind().await?, UdpSink::bind().await?);
    gw.register("cam", Some(&video), Some(&audio)).await?;
    let (mut publisher, gathered) = Publisher::new(Some(Video::H264), true).await?;
    assert!(
        gathered.contains("a=candidate:"),
        "the publisher gathered: {gathered}"
    );
    // As libdatachannel (OBS) posts before gathering and FFmpeg always does: no candidate,
    // no end-of-candidates, and no trickle PATCH afterwards.
    let offer: String = gathered
        .lines()
        .filter(|l| !l.starts_with("a=candidate:") && !l.starts_with("a=end-of-candidates"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    assert!(!offer.contains("a=candidate"), "{offer}");
    let response = gw.post_offer("cam", &offer, None).await?;
    assert_eq!(response.status(), 201);
    let location = header(&response, "location")?;
    publisher.set_answer(response.text().await?).await?;
    publisher.connected(PATIENCE).await?;
    publisher.start_media().await?;

    let v = video.recv_n(10, PATIENCE).await?;
    assert!(v.iter().all(|p| p.payload_type == 96), "{v:?}");
    let a = audio.recv_n(10, PATIENCE).await?;
    assert!(a.iter().all(|p| p.payload_type == 111), "{a:?}");
    // The address it came from was learnt from its authenticated checks alone.
    let session = gw.session("cam").await?.context("a live session")?;
    let remote = session.remote_addr.parse::<std::net::SocketAddr>()?;
    assert!(remote.ip().is_loopback(), "{remote}");
    assert!(location.ends_with(&session.session_id), "{location}");
    assert_eq!(
        gw.media.routed_session(remote),
        Some(session.session_id.parse()?)
    );
    Ok(())
}
