//! WHIP edge: publishing, forwarding, every status code, cleanup.

use std::time::Duration;

use anyhow::Result;
use whipgate::control::pb;

use crate::harness::{PATIENCE, TestGateway, UdpSink, header};
use crate::publisher::{Publisher, Video};

const MINIMAL_OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";

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

    assert_eq!(gw.delete(&published.location).await?, 204);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_is_idempotent_and_unknown_sessions_are_204() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    gw.register("a", None, None).await?;
    let published = gw.publish("a", Some(Video::H264), false).await?;
    assert_eq!(gw.delete(&published.location).await?, 204);
    assert_eq!(gw.delete(&published.location).await?, 204);
    assert_eq!(gw.delete("/whip/a/not-a-uuid").await?, 204);
    assert_eq!(
        gw.delete(&format!("/whip/nope/{}", uuid::Uuid::new_v4()))
            .await?,
        204
    );
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_status_and_leave_nothing_behind() -> Result<()> {
    let mut gw = TestGateway::start_with(|c| c.max_sdp_bytes = 4096).await?;
    gw.register("cam", None, None).await?;
    let (_publisher, offer) = Publisher::new(Some(Video::H264), true).await?;

    // 404: no such ingest.
    let r = gw.post_offer("ghost", &offer, None).await?;
    assert_eq!(r.status(), 404);
    // 415: wrong content type.
    let r = gw
        .http
        .post(gw.whip_url("cam"))
        .header("content-type", "text/plain")
        .body(offer.clone())
        .send()
        .await?;
    assert_eq!(r.status(), 415);
    // 413: too large.
    let r = gw.post_offer("cam", &"a".repeat(10_000), None).await?;
    assert_eq!(r.status(), 413);
    // 400: not SDP, no media, recvonly, unsupported codec (with the 415 above: 5 bad_sdp).
    for bad in [
        "hello".to_owned(),
        MINIMAL_OFFER.to_owned(),
        offer
            .replace("a=sendrecv", "a=recvonly")
            .replace("a=sendonly", "a=recvonly"),
        offer
            .replace("H264/90000", "XYZ/90000")
            .replace("opus/48000", "pcmu/48000"),
    ] {
        let r = gw.post_offer("cam", &bad, None).await?;
        assert_eq!(r.status(), 400, "offer should be refused: {bad:.60}");
        assert!(!r.text().await?.is_empty(), "error carries a message");
    }
    assert_eq!(gw.registry.live_count(), 0);
    let metrics = gw.metrics().await?;
    assert!(
        metrics.contains("whipgate_publish_rejections_total{reason=\"bad_sdp\"} 5"),
        "{metrics}"
    );
    assert!(metrics.contains("whipgate_publish_rejections_total{reason=\"not_found\"} 1"));
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_is_required_when_registered() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    gw.register_with(pb::RegisterIngestRequest {
        ingest_id: "secure".into(),
        bearer_token: "s3cret".into(),
        ..Default::default()
    })
    .await?;
    let (mut publisher, offer) = Publisher::new(Some(Video::H264), true).await?;
    let r = gw.post_offer("secure", &offer, None).await?;
    assert_eq!(r.status(), 401);
    assert_eq!(header(&r, "www-authenticate")?, "Bearer realm=\"whipgate\"");
    assert_eq!(
        gw.post_offer("secure", &offer, Some("wrong"))
            .await?
            .status(),
        401
    );
    let r = gw.post_offer("secure", &offer, Some("s3cret")).await?;
    assert_eq!(r.status(), 201);
    publisher.set_answer(r.text().await?).await?;
    publisher.connected(PATIENCE).await?;
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_publisher_gets_409_and_racing_posts_have_one_winner() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    gw.register("race", None, None).await?;
    let mut offers = Vec::new();
    for _ in 0..4 {
        offers.push(Publisher::new(Some(Video::H264), true).await?);
    }
    let posts = offers
        .iter()
        .map(|(_, offer)| gw.post_offer("race", offer, None));
    let statuses: Vec<u16> = futures_util::future::join_all(posts)
        .await
        .into_iter()
        .map(|r| r.map(|r| r.status().as_u16()).unwrap_or(0))
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(gw.registry.live_count(), 1);
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_cap_answers_503_with_retry_after() -> Result<()> {
    let mut gw = TestGateway::start_with(|c| c.max_publishers = 1).await?;
    gw.register("one", None, None).await?;
    gw.register("two", None, None).await?;
    let _first = gw.publish("one", Some(Video::H264), false).await?;
    let (_p, offer) = Publisher::new(Some(Video::H264), false).await?;
    let r = gw.post_offer("two", &offer, None).await?;
    assert_eq!(r.status(), 503);
    assert!(header(&r, "retry-after").is_ok());
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_deadline_exceeded_is_504_and_releases_the_slot() -> Result<()> {
    let mut gw = TestGateway::start_with(|c| c.answer_timeout = Duration::from_nanos(1)).await?;
    gw.register("slow", None, None).await?;
    let (_p, offer) = Publisher::new(Some(Video::H264), true).await?;
    let r = gw.post_offer("slow", &offer, None).await?;
    assert_eq!(r.status(), 504);
    assert_eq!(gw.registry.live_count(), 0);
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_and_exposed_headers() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    gw.register("cors", None, None).await?;
    let r = gw
        .http
        .request(reqwest::Method::OPTIONS, gw.whip_url("cors"))
        .header("origin", "https://studio.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,authorization",
        )
        .send()
        .await?;
    assert!(r.status().is_success());
    assert_eq!(header(&r, "access-control-allow-origin")?, "*");
    let r = gw
        .http
        .request(reqwest::Method::OPTIONS, gw.whip_url("cors"))
        .send()
        .await?;
    assert_eq!(header(&r, "accept-post")?, "application/sdp");
    let (_p, offer) = Publisher::new(Some(Video::H264), false).await?;
    let r = gw
        .http
        .post(gw.whip_url("cors"))
        .header("origin", "https://studio.example")
        .header("content-type", "application/sdp")
        .body(offer)
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    let exposed = header(&r, "access-control-expose-headers")?.to_ascii_lowercase();
    for h in ["location", "etag", "link", "accept-patch"] {
        assert!(exposed.contains(h), "{h} exposed: {exposed}");
    }
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickle_patch_checks_content_type_etag_and_session() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    gw.register("t", None, None).await?;
    let published = gw.publish("t", Some(Video::H264), false).await?;
    let url = gw.url(&published.location);
    let frag = "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n";
    let patch = |ct: &'static str, if_match: Option<String>, url: String| {
        let mut r = gw.http.patch(url).header("content-type", ct).body(frag);
        if let Some(m) = if_match {
            r = r.header("if-match", m);
        }
        r.send()
    };
    assert_eq!(
        patch("application/sdp", Some(published.etag.clone()), url.clone())
            .await?
            .status(),
        415
    );
    assert_eq!(
        patch("application/trickle-ice-sdpfrag", None, url.clone())
            .await?
            .status(),
        428
    );
    assert_eq!(
        patch(
            "application/trickle-ice-sdpfrag",
            Some("\"nope\"".into()),
            url.clone()
        )
        .await?
        .status(),
        412
    );
    assert_eq!(
        patch(
            "application/trickle-ice-sdpfrag",
            Some(published.etag.clone()),
            url.clone()
        )
        .await?
        .status(),
        204
    );
    let unknown = gw.url(&format!("/whip/t/{}", uuid::Uuid::new_v4()));
    assert_eq!(
        patch(
            "application/trickle-ice-sdpfrag",
            Some(published.etag.clone()),
            unknown
        )
        .await?
        .status(),
        404
    );
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_vanishes_is_cleaned_up() -> Result<()> {
    let mut gw = TestGateway::start_with(|c| c.media_timeout = Duration::from_secs(1)).await?;
    let video = UdpSink::bind().await?;
    gw.register("gone", Some(&video), None).await?;
    let published = gw.publish("gone", Some(Video::H264), true).await?;
    video.recv_rtp(PATIENCE).await?;
    // No DELETE: the publisher just stops sending (its process froze or its network dropped).
    published.publisher.stop_media();
    gw.all_clean().await?;
    assert!(gw.session("gone").await?.is_none());
    let metrics = gw.metrics().await?;
    assert!(
        metrics.contains("whipgate_sessions_ended_total{reason=\"inactivity\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("whipgate_live_publishers 0"));
    published.publisher.close().await;
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregister_closes_the_live_publisher() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    gw.register("bye", None, None).await?;
    let _published = gw.publish("bye", Some(Video::H264), true).await?;
    let r = gw
        .grpc
        .unregister_ingest(pb::UnregisterIngestRequest {
            ingest_id: "bye".into(),
        })
        .await?
        .into_inner();
    assert!(r.session_closed);
    gw.all_clean().await?;
    let (_p, offer) = Publisher::new(Some(Video::H264), true).await?;
    assert_eq!(gw.post_offer("bye", &offer, None).await?.status(), 404);
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
    assert_eq!(gw.delete(&first.location).await?, 204);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_ice_servers_are_offered_as_link_headers() -> Result<()> {
    use whipgate::config::IceServer;
    let mut gw = TestGateway::start_with(|c| {
        c.ice_servers = vec![
            IceServer {
                url: "stun:stun.example.net".into(),
                username: None,
                credential: None,
            },
            IceServer {
                url: "turn:turn.example.net?transport=udp".into(),
                username: Some("u".into()),
                credential: Some("p".into()),
            },
        ]
    })
    .await?;
    gw.register("links", None, None).await?;
    let (_p, offer) = Publisher::new(Some(Video::H264), false).await?;
    let r = gw.post_offer("links", &offer, None).await?;
    assert_eq!(r.status(), 201);
    let links: Vec<&str> = r
        .headers()
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(
        links,
        [
            "<stun:stun.example.net>; rel=\"ice-server\"",
            "<turn:turn.example.net?transport=udp>; rel=\"ice-server\"; username=\"u\"; credential=\"p\"; credential-type=\"password\"",
        ]
    );
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirected_ingest_answers_307_to_its_node() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    gw.register_with(pb::RegisterIngestRequest {
        ingest_id: "elsewhere".into(),
        redirect_url: "https://node-b.example.net/whip/elsewhere".into(),
        ..Default::default()
    })
    .await?;
    let (_p, offer) = Publisher::new(Some(Video::H264), false).await?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let r = client
        .post(gw.whip_url("elsewhere"))
        .header("content-type", "application/sdp")
        .body(offer)
        .send()
        .await?;
    assert_eq!(r.status(), 307);
    assert_eq!(
        header(&r, "location")?,
        "https://node-b.example.net/whip/elsewhere"
    );
    assert_eq!(gw.registry.live_count(), 0);
    let bad = gw
        .grpc
        .register_ingest(pb::RegisterIngestRequest {
            ingest_id: "x".into(),
            redirect_url: "ftp://nope".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(
        bad.map(|_| ()).unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_without_udp_connects_over_ice_tcp() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    let tcp = gw.bound.tcp.expect("ICE-TCP is on by default");
    let video = UdpSink::bind().await?;
    gw.register("tcp", Some(&video), None).await?;
    let (mut publisher, offer) = Publisher::with_transport(Some(Video::H264), true, true).await?;
    assert!(
        !offer.contains(" udp "),
        "the publisher offers no UDP candidate"
    );
    let r = gw.post_offer("tcp", &offer, None).await?;
    assert_eq!(r.status(), 201);
    let answer = r.text().await?;
    assert!(
        answer.contains(&format!("{} typ host tcptype passive", tcp.port())),
        "passive TCP candidate on the ICE-TCP port: {answer}"
    );
    publisher.set_answer(answer).await?;
    publisher.connected(PATIENCE).await?;
    publisher.start_media().await?;
    let v = video.recv_n(10, PATIENCE).await?;
    assert!(v.iter().all(|p| p.payload_type == 96));
    let session = gw.session("tcp").await?.expect("live");
    assert_eq!(session.state, pb::SessionState::Connected as i32);
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_restart_by_patch_keeps_media_flowing() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    let video = UdpSink::bind().await?;
    gw.register("restart", Some(&video), None).await?;
    let published = gw.publish("restart", Some(Video::H264), true).await?;
    video.recv_n(5, PATIENCE).await?;
    let url = gw.url(&published.location);
    let patch = |body: String, if_match: &'static str| {
        gw.http
            .patch(url.clone())
            .header("content-type", "application/trickle-ice-sdpfrag")
            .header("if-match", if_match)
            .body(body)
            .send()
    };
    // A restart fragment without credentials fails and leaves the session alone.
    let r = patch("a=mid:0\r\n".into(), "*").await?;
    assert_eq!(r.status(), 400);

    let new_etag = std::sync::Mutex::new(String::new());
    let ufrag = published
        .publisher
        .restart_ice(|fragment| async {
            let r = patch(fragment, "*").await?;
            anyhow::ensure!(r.status() == 200, "restart answered {}", r.status());
            assert_eq!(
                header(&r, "content-type")?,
                "application/trickle-ice-sdpfrag"
            );
            *new_etag.lock().unwrap() = header(&r, "etag")?;
            Ok(r.text().await?)
        })
        .await?;
    let new_etag = new_etag.into_inner().unwrap();
    assert_ne!(new_etag, published.etag, "a new ICE session has a new ETag");
    assert_eq!(new_etag, format!("\"{ufrag}\""));
    // Media keeps arriving over the new ICE session, and the old ETag no longer matches.
    video.drain();
    video.recv_n(20, PATIENCE).await?;
    assert_eq!(
        published.publisher.state(),
        webrtc::peer_connection::RTCPeerConnectionState::Connected
    );
    let session = gw.session("restart").await?.expect("same session");
    assert!(published.location.ends_with(&session.session_id));
    let r = gw
        .http
        .patch(url.clone())
        .header("content-type", "application/trickle-ice-sdpfrag")
        .header("if-match", published.etag.clone())
        .body("a=mid:0\r\n")
        .send()
        .await?;
    assert_eq!(r.status(), 412);
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_replace_policy_a_reconnecting_publisher_takes_over_its_ghost() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    let video = UdpSink::bind().await?;
    gw.register_with(pb::RegisterIngestRequest {
        ingest_id: "ghost".into(),
        video_target: video.addr.to_string(),
        bearer_token: "t".into(),
        conflict_policy: pb::ConflictPolicy::Replace as i32,
        ..Default::default()
    })
    .await?;
    let (mut first, offer) = Publisher::new(Some(Video::H264), false).await?;
    let r = gw.post_offer("ghost", &offer, Some("t")).await?;
    assert_eq!(r.status(), 201);
    let first_location = header(&r, "location")?;
    first.set_answer(r.text().await?).await?;
    first.connected(PATIENCE).await?;
    first.start_media().await?;
    let ssrc = video.recv_rtp(PATIENCE).await?.ssrc;
    // The publisher's network blips: it publishes again while its old session still lives.
    let (mut second, offer) = Publisher::new(Some(Video::H264), false).await?;
    let r = gw.post_offer("ghost", &offer, Some("t")).await?;
    assert_eq!(r.status(), 201, "replaces instead of 409");
    second.set_answer(r.text().await?).await?;
    second.connected(PATIENCE).await?;
    second.start_media().await?;
    let session = gw.session("ghost").await?.expect("live");
    assert!(
        !first_location.ends_with(&session.session_id),
        "the new session is the live one"
    );
    assert_eq!(gw.registry.live_count(), 1);
    video.drain();
    assert_eq!(
        video.recv_rtp(PATIENCE).await?.ssrc,
        ssrc,
        "the consumer sees one stream"
    );
    let ghost_delete = gw
        .http
        .delete(gw.url(&first_location))
        .bearer_auth("t")
        .send()
        .await?;
    assert_eq!(ghost_delete.status(), 204, "the ghost's DELETE is harmless");
    assert!(gw.session("ghost").await?.is_some());
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
            include_str!("fixtures/firefox-esr-153-vp8-offer.sdp"),
        ),
        (
            "gstreamer",
            include_str!("fixtures/gstreamer-1.22-vp8-offer.sdp"),
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
        assert_eq!(gw.delete(&location).await?, 204);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_protected_session_wants_the_token_on_patch_and_delete() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    gw.register_with(pb::RegisterIngestRequest {
        ingest_id: "locked".into(),
        bearer_token: "s3cret".into(),
        ..Default::default()
    })
    .await?;
    let (mut publisher, offer) = Publisher::new(Some(Video::H264), false).await?;
    let r = gw.post_offer("locked", &offer, Some("s3cret")).await?;
    assert_eq!(r.status(), 201);
    let (location, etag) = (header(&r, "location")?, header(&r, "etag")?);
    publisher.set_answer(r.text().await?).await?;
    publisher.connected(PATIENCE).await?;
    let url = gw.url(&location);
    let patch = gw
        .http
        .patch(url.clone())
        .header("content-type", "application/trickle-ice-sdpfrag")
        .header("if-match", etag.clone())
        .body("a=mid:0\r\n");
    assert_eq!(patch.try_clone().unwrap().send().await?.status(), 401);
    assert_eq!(patch.bearer_auth("s3cret").send().await?.status(), 204);
    assert_eq!(
        gw.delete(&location).await?,
        401,
        "a leaked session URL cannot end the stream"
    );
    assert!(gw.session("locked").await?.is_some());
    let r = gw.http.delete(url).bearer_auth("s3cret").send().await?;
    assert_eq!(r.status(), 204);
    gw.all_clean().await?;
    gw.stop().await
}
