//! Signed publish tokens (`--token-keys-file`): a real WebRTC publisher with a JWT, every
//! refusal a 401 that leaves no state, a static token still working, and key rotation on
//! reload while a session stays live.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, ensure};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use whipgate_proto::pb;

use crate::harness::{PATIENCE, TestGateway, UdpSink, header};
use crate::publisher::{Publisher, Video};

const OLD: &[u8] = b"0123456789abcdef0123456789abcdef";
const NEW: &[u8] = b"fedcba9876543210fedcba9876543210";

fn keys_file(kid: &str, secret: &[u8]) -> Value {
    let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    json!({"keys": [{"kty": "oct", "kid": kid, "k": k}]})
}

fn token(kid: &str, secret: &[u8], claims: Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).expect("sign")
}

fn in_a_minute() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        + 60
}

fn publish_claims(sub: &str) -> Value {
    json!({"sub": sub, "scope": "publish", "exp": in_a_minute()})
}

/// The value of one series in the metrics text.
fn series(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_token_publishes_and_every_refusal_is_a_401_that_leaves_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let keys = dir.path().join("keys.json");
    std::fs::write(&keys, keys_file("k1", OLD).to_string())?;
    let path = keys.clone();
    let mut gw = TestGateway::start_with(move |c| {
        c.token_keys_file = Some(path);
        c.token_audience = Some("whipgate-test".into());
    })
    .await?;
    let video = UdpSink::bind().await?;
    gw.register("cam", Some(&video), None).await?;
    gw.register_with(pb::RegisterIngestRequest {
        ingest_id: "studio".into(),
        bearer_token: "static-secret".into(),
        ..Default::default()
    })
    .await?;
    let mut events = gw.registry.subscribe(0)?;
    let (_unused, offer) = Publisher::new(Some(Video::H264), false).await?;

    // Refused: no token, a token for another ingest, expired, view scope, wrong key, other
    // audience, not a token at all. Each a 401 with why; no session, no route.
    let now_minus = in_a_minute() - 120;
    let refusals = [
        (None, "needs a signed publish token"),
        (
            Some(token("k1", OLD, publish_claims("studio"))),
            "another ingest",
        ),
        (
            Some(token(
                "k1",
                OLD,
                json!({"sub": "cam", "scope": "publish", "exp": now_minus}),
            )),
            "expired",
        ),
        (
            Some(token(
                "k1",
                OLD,
                json!({"sub": "cam", "scope": "view", "exp": in_a_minute()}),
            )),
            "scope",
        ),
        (Some(token("k1", NEW, publish_claims("cam"))), "signature"),
        (
            Some(token(
                "k1",
                OLD,
                json!({"sub": "cam", "scope": "publish", "exp": in_a_minute(), "aud": "elsewhere"}),
            )),
            "audience",
        ),
        (Some("a.b.c".to_owned()), "not a signed token"),
    ];
    for (bearer, why) in &refusals {
        let response = gw.post_offer("cam", &offer, bearer.as_deref()).await?;
        let status = response.status();
        let body = response.text().await?;
        ensure!(status == 401, "{why}: answered {status}: {body}");
        ensure!(body.contains(why), "{why}: the 401 says {body:?}");
    }
    ensure!(
        gw.registry.live_count() == 0,
        "a refused POST admitted nobody"
    );
    ensure!(gw.media.routes() == 0, "a refused POST routed nothing");
    let metrics = gw.metrics().await?;
    ensure!(
        series(
            &metrics,
            "whipgate_signed_tokens_total{result=\"wrong_subject\"}"
        ) == 1
    );
    ensure!(series(&metrics, "whipgate_signed_tokens_total{result=\"expired\"}") == 1);
    ensure!(
        series(
            &metrics,
            "whipgate_signed_tokens_total{result=\"bad_signature\"}"
        ) == 1
    );
    ensure!(
        series(
            &metrics,
            "whipgate_publish_rejections_total{reason=\"auth\"}"
        ) >= 7
    );
    // The refusals are one aggregated publish_rejected event for the ingest (not one each).
    let mut rejected = 0;
    while let Ok(Ok(event)) =
        tokio::time::timeout(Duration::from_millis(300), events.live.recv()).await
    {
        if event.payload.kind_name() == "publish_rejected" {
            ensure!(event.ingest_id == "cam");
            rejected += 1;
        }
    }
    ensure!(rejected >= 1, "no publish_rejected event for the refusals");
    ensure!(
        rejected < refusals.len(),
        "{rejected} events: not aggregated"
    );

    // A static token keeps working on an ingest registered with one.
    let response = gw
        .post_offer("studio", &offer, Some("static-secret"))
        .await?;
    ensure!(
        response.status() == 201,
        "static token: {}",
        response.status()
    );
    let location = header(&response, "location")?;
    let deleted = gw
        .http
        .delete(gw.url(&location))
        .bearer_auth("static-secret")
        .send()
        .await?;
    ensure!(deleted.status() == 200);

    // A real publisher with a signed token: connected, media forwarded.
    let signed = token("k1", OLD, publish_claims("cam"));
    let (mut publisher, offer) = Publisher::new(Some(Video::H264), false).await?;
    let response = gw.post_offer("cam", &offer, Some(&signed)).await?;
    ensure!(
        response.status() == 201,
        "signed token: {}",
        response.status()
    );
    let location = header(&response, "location")?;
    publisher.set_answer(response.text().await?).await?;
    publisher.connected(PATIENCE).await?;
    publisher.start_media().await?;
    video.recv_rtp(PATIENCE).await?;

    // Rotation: the new key opens, the old one no longer does; the live session goes on.
    std::fs::write(&keys, keys_file("k2", NEW).to_string())?;
    gw.reloader.reload()?;
    let (_unused, offer) = Publisher::new(Some(Video::H264), false).await?;
    let old = gw.post_offer("cam", &offer, Some(&signed)).await?;
    ensure!(
        old.status() == 401,
        "an old key after rotation: {}",
        old.status()
    );
    video.drain();
    video.recv_rtp(PATIENCE).await?;
    ensure!(
        gw.session("cam").await?.is_some(),
        "the live session survived the reload"
    );
    // A broken file keeps the keys.
    std::fs::write(&keys, "{ not json")?;
    ensure!(gw.reloader.reload().is_err());

    // DELETE needs the token too (a leaked session URL ends nothing).
    ensure!(gw.delete(&location).await? == 401);
    let fresh = token("k2", NEW, publish_claims("cam"));
    let deleted = gw
        .http
        .delete(gw.url(&location))
        .bearer_auth(&fresh)
        .send()
        .await?;
    ensure!(
        deleted.status() == 200,
        "DELETE with the token: {}",
        deleted.status()
    );
    drop(publisher);
    gw.all_clean().await?;
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_file_that_does_not_load_stops_the_start_naming_the_flag() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let keys = dir.path().join("keys.json");
    std::fs::write(&keys, json!({"keys": []}).to_string())?;
    let started = TestGateway::start_with(move |c| c.token_keys_file = Some(keys)).await;
    let Err(err) = started else {
        anyhow::bail!("started with an empty keys file");
    };
    ensure!(format!("{err:#}").contains("--token-keys-file"), "{err:#}");
    Ok(())
}
