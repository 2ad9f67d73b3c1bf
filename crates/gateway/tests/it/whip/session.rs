//! WHIP edge: the session resource over time (trickle PATCH, vanishing publishers,
//! unregister, ICE-TCP, ICE restart, the replace policy, tokens on PATCH and DELETE).

use std::time::Duration;

use anyhow::Result;
use whipgate_proto::pb;

use crate::harness::{PATIENCE, TestGateway, Topo, UdpSink, header, on_both_topologies};
use crate::publisher::{Publisher, Video};

on_both_topologies!(trickle_patch_checks_content_type_etag_and_session);

async fn trickle_patch_checks_content_type_etag_and_session(topo: Topo) -> Result<()> {
    let mut gw = TestGateway::start_on(topo, |_| {}).await?;
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

on_both_topologies!(unregister_closes_the_live_publisher);

async fn unregister_closes_the_live_publisher(topo: Topo) -> Result<()> {
    let mut gw = TestGateway::start_on(topo, |_| {}).await?;
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
    assert_eq!(ghost_delete.status(), 200, "the ghost's DELETE is harmless");
    assert!(gw.session("ghost").await?.is_some());
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
    assert_eq!(r.status(), 200);
    gw.all_clean().await?;
    gw.stop().await
}
