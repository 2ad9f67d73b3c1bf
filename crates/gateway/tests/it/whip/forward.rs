//! WHIP edge: what gets forwarded (codecs, payload types, Sender Reports, continuity,
//! padding, bundle-only offers of real peers).

use std::time::Duration;

use anyhow::Result;
use whipgate_proto::pb;

use crate::harness::{PATIENCE, TestGateway, UdpSink, header};
use crate::publisher::{Publisher, Video};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_and_opus_are_forwarded_with_the_consumer_payload_types() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    let (video, audio) = (UdpSink::bind().await?, UdpSink::bind().await?);
    let ingest = gw.register("cam1", Some(&video), Some(&audio)).await?;
    assert!(
        ingest
            .consumer_sdp
            .contains(&format!("m=video {} RTP/AVP 96", video.addr.port()))
    );

    let published = gw.publish("cam1", Some(Video::H264), true).await?;
    assert!(published.location.starts_with("/whip/cam1/"));
    let session_id = published.location.rsplit('/').next().unwrap_or_default();
    assert!(
        uuid::Uuid::parse_str(session_id).is_ok(),
        "session id is a UUID"
    );
    assert!(published.etag.starts_with('"'), "strong ETag");
    assert!(published.answer.contains("a=ice-lite"));
    assert!(published.answer.contains("a=recvonly"));
    // Bandwidth feedback, so that publishers ramp up: TWCC when offered.
    assert!(
        published.answer.contains("transport-cc"),
        "{}",
        published.answer
    );

    let v = video.recv_n(20, PATIENCE).await?;
    assert!(
        v.iter().all(|p| p.payload_type == 96),
        "video PT rewritten to 96: {v:?}"
    );
    let a = audio.recv_n(20, PATIENCE).await?;
    assert!(
        a.iter().all(|p| p.payload_type == 111),
        "audio PT rewritten to 111"
    );

    let session = gw.session("cam1").await?.expect("live session");
    assert_eq!(session.state, pb::SessionState::Connected as i32);
    assert_eq!(session.video_codec, "H264");
    assert_eq!(session.audio_codec, "opus");
    assert!(
        session.counters.as_ref().is_some_and(|c| c.plis_sent >= 1),
        "PLI sent at track start"
    );

    assert_eq!(gw.delete(&published.location).await?, 200);
    assert!(gw.session("cam1").await?.is_none());
    gw.all_clean().await?;
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp8_is_forwarded_at_its_own_payload_type() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    let video = UdpSink::bind().await?;
    gw.register_with(pb::RegisterIngestRequest {
        ingest_id: "vp8cam".into(),
        video_target: video.addr.to_string(),
        video_codecs: vec![pb::VideoCodec::Vp8 as i32],
        ..Default::default()
    })
    .await?;
    let _published = gw.publish("vp8cam", Some(Video::Vp8), true).await?;
    let v = video.recv_n(10, PATIENCE).await?;
    assert!(v.iter().all(|p| p.payload_type == 97));
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp9_is_forwarded_when_the_ingest_accepts_it() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    let video = UdpSink::bind().await?;
    let ingest = gw
        .register_with(pb::RegisterIngestRequest {
            ingest_id: "vp9cam".into(),
            video_target: video.addr.to_string(),
            video_codecs: vec![pb::VideoCodec::Vp9 as i32],
            ..Default::default()
        })
        .await?;
    assert!(ingest.consumer_sdp.contains("a=rtpmap:98 VP9/90000"));
    let _published = gw.publish("vp9cam", Some(Video::Vp9), false).await?;
    let v = video.recv_n(10, PATIENCE).await?;
    assert!(v.iter().all(|p| p.payload_type == 98));
    let session = gw.session("vp9cam").await?.expect("live");
    assert_eq!(session.video_codec, "VP9");
    // The default codec set (H264 only) refuses a VP9-only publisher.
    gw.register("default", None, None).await?;
    let (_p, offer) = Publisher::new(Some(Video::Vp9), false).await?;
    assert_eq!(gw.post_offer("default", &offer, None).await?.status(), 400);
    gw.stop().await
}

/// An RTP sink and a raw socket on the port above it (where RTCP goes).
async fn rtp_and_rtcp_sinks() -> Result<(UdpSink, tokio::net::UdpSocket)> {
    for _ in 0..50 {
        let rtp = UdpSink::bind().await?;
        let Some(next) = rtp.addr.port().checked_add(1) else {
            continue;
        };
        if let Ok(rtcp) = tokio::net::UdpSocket::bind(("127.0.0.1", next)).await {
            return Ok((rtp, rtcp));
        }
    }
    anyhow::bail!("no free adjacent UDP ports")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_reports_reach_the_consumer_rtcp_port() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    let (video, video_rtcp) = rtp_and_rtcp_sinks().await?;
    gw.register("sync", Some(&video), None).await?;
    let _published = gw.publish("sync", Some(Video::H264), true).await?;
    let ssrc = video.recv_rtp(PATIENCE).await?.ssrc;
    let mut buf = [0u8; 1500];
    let (n, _) = tokio::time::timeout(PATIENCE, video_rtcp.recv_from(&mut buf)).await??;
    assert!(n >= 28, "a sender report is at least 28 bytes");
    assert_eq!(buf[1], 200, "RTCP packet type SR");
    assert_eq!(
        u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        ssrc,
        "SR of the forwarded stream"
    );
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_publisher_continues_the_same_output_stream() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    let video = UdpSink::bind().await?;
    gw.register("again", Some(&video), None).await?;
    let first = gw.publish("again", Some(Video::H264), false).await?;
    let mut last = video
        .recv_n(10, PATIENCE)
        .await?
        .last()
        .cloned()
        .expect("packets");
    assert_eq!(gw.delete(&first.location).await?, 200);
    // The session has ended: what is still queued at the sink is all it sent.
    while let Ok(p) = video.recv_rtp(Duration::from_millis(300)).await {
        last = p;
    }
    first.publisher.close().await;

    let _second = gw.publish("again", Some(Video::H264), false).await?;
    let next = video.recv_rtp(PATIENCE).await?;
    assert_eq!(
        next.ssrc, last.ssrc,
        "same output SSRC across the reconnect"
    );
    assert_eq!(
        next.sequence,
        last.sequence.wrapping_add(1),
        "sequence numbers continue"
    );
    gw.stop().await
}

/// Offers captured from Firefox ESR 153 and GStreamer 1.22 webrtcbin (max-bundle: every
/// section after the first has port 0 and `a=bundle-only`, RFC 8843).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_only_sections_of_real_offers_are_answered_live() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    // These offers are VP8-only: the default registration (H264) would refuse them.
    gw.register_with(pb::RegisterIngestRequest {
        ingest_id: "bundle".into(),
        video_codecs: vec![pb::VideoCodec::Vp8 as i32],
        ..Default::default()
    })
    .await?;
    for (name, offer) in [
        (
            "firefox",
            include_str!("../fixtures/firefox-esr-153-vp8-offer.sdp"),
        ),
        (
            "gstreamer",
            include_str!("../fixtures/gstreamer-1.22-vp8-offer.sdp"),
        ),
    ] {
        let r = gw.post_offer("bundle", offer, None).await?;
        assert_eq!(r.status(), 201, "{name}");
        let location = header(&r, "location")?;
        let answer = r.text().await?;
        let bundle = answer
            .lines()
            .find(|l| l.starts_with("a=group:BUNDLE"))
            .unwrap_or_default();
        assert!(
            bundle.split_whitespace().count() == 3,
            "{name}: both sections bundled: {answer}"
        );
        assert!(
            !answer.contains("m=video 0 ") && !answer.contains("m=audio 0 "),
            "{name}: no rejected section: {answer}"
        );
        assert!(
            answer.contains("VP8/90000") && answer.to_lowercase().contains("opus/48000"),
            "{name}: {answer}"
        );
        assert_eq!(gw.delete(&location).await?, 200);
    }
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn padding_only_packets_are_not_forwarded_and_leave_no_gap() -> Result<()> {
    use crate::publisher::MediaRate;
    let mut gw = TestGateway::start().await?;
    let video = UdpSink::bind().await?;
    gw.register("pad", Some(&video), None).await?;
    let (mut publisher, offer) = Publisher::new(Some(Video::H264), false).await?;
    let r = gw.post_offer("pad", &offer, None).await?;
    assert_eq!(r.status(), 201);
    publisher.set_answer(r.text().await?).await?;
    publisher.connected(PATIENCE).await?;
    publisher
        .start_media_with(MediaRate {
            padding_every: Some(2),
            ..MediaRate::default()
        })
        .await?;
    let packets = video.recv_n(30, PATIENCE).await?;
    assert!(
        packets.iter().all(|p| !p.payload.is_empty()),
        "no empty packet reaches the consumer"
    );
    for pair in packets.windows(2) {
        assert_eq!(
            pair[1].sequence,
            pair[0].sequence.wrapping_add(1),
            "no gap: {packets:?}"
        );
    }
    let session = gw.session("pad").await?.expect("live");
    let counters = session.counters.expect("counters");
    assert!(
        counters.video_packets > counters.packets_forwarded + 10,
        "padding did arrive and was dropped: {counters:?}"
    );
    gw.stop().await
}
