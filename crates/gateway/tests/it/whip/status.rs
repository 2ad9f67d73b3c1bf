//! WHIP edge: every status code and header of the HTTP surface (DELETE, bad requests,
//! tokens, conflicts, caps, deadlines, CORS, ICE servers, redirects).

use std::time::Duration;

use anyhow::Result;
use whipgate_proto::pb;

use crate::harness::{PATIENCE, TestGateway, header};
use crate::publisher::{Publisher, Video};

const MINIMAL_OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_is_idempotent_and_unknown_sessions_are_200() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    gw.register("a", None, None).await?;
    let published = gw.publish("a", Some(Video::H264), false).await?;
    assert_eq!(gw.delete(&published.location).await?, 200);
    assert_eq!(gw.delete(&published.location).await?, 200);
    assert_eq!(gw.delete("/whip/a/not-a-uuid").await?, 200);
    assert_eq!(
        gw.delete(&format!("/whip/nope/{}", uuid::Uuid::new_v4()))
            .await?,
        200
    );
    // OBS accepts only 200; FFmpeg 9's HTTP client needs a Content-Length to read an answer.
    let answered = gw.http.delete(gw.url(&published.location)).send().await?;
    assert_eq!(answered.status(), 200);
    let h = answered.headers();
    assert_eq!(
        h.get("content-length").and_then(|v| v.to_str().ok()),
        Some("0")
    );
    assert!(h.get("transfer-encoding").is_none(), "never chunked");
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
async fn configured_ice_servers_are_offered_as_link_headers() -> Result<()> {
    use whipgate::app::config::IceServer;
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
