//! Control plane: RPCs, events, caps, auth, health, metrics.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use whipgate::control::pb;
use whipgate::control::pb::EventKind as K;
use whipgate::control::pb::event::Payload;

use crate::harness::{PATIENCE, TestGateway, UdpSink, eventually, header};
use crate::publisher::{Publisher, Video};

type Events = tonic::Streaming<pb::Event>;

const CONTROL: &str = "whipgate.v1.IngestControl";

/// The payload of `event` if it is `$variant`, else the test fails.
macro_rules! payload {
    ($event:expr, $variant:ident) => {
        match &$event.payload {
            Some(Payload::$variant(p)) => p,
            other => bail!("expected {}, got {other:?}", stringify!($variant)),
        }
    };
}

fn kind(event: &pb::Event) -> K {
    match event.payload {
        Some(Payload::IngestRegistered(_)) => K::IngestRegistered,
        Some(Payload::IngestUpdated(_)) => K::IngestUpdated,
        Some(Payload::IngestUnregistered(_)) => K::IngestUnregistered,
        Some(Payload::PublishAccepted(_)) => K::PublishAccepted,
        Some(Payload::PublishRejected(_)) => K::PublishRejected,
        Some(Payload::SessionConnected(_)) => K::SessionConnected,
        Some(Payload::TrackStarted(_)) => K::TrackStarted,
        Some(Payload::SessionStats(_)) => K::SessionStats,
        Some(Payload::SessionEnded(_)) => K::SessionEnded,
        Some(Payload::CapsChanged(_)) => K::CapsChanged,
        None => K::Unspecified,
    }
}

/// Kinds in order, without the periodic stats (their ticks may fall anywhere in a session).
fn kinds_but_stats(events: &[pb::Event]) -> Vec<K> {
    events
        .iter()
        .map(kind)
        .filter(|k| *k != K::SessionStats)
        .collect()
}

/// The gRPC code of an answer (`Code::Ok` on success).
fn code<T>(result: Result<T, Status>) -> Code {
    result.err().map_or(Code::Ok, |status| status.code())
}

/// The session id at the end of a WHIP Location.
fn session_of(location: &str) -> &str {
    location.rsplit('/').next().unwrap_or_default()
}

fn get(ingest_id: &str) -> pb::GetIngestRequest {
    pb::GetIngestRequest {
        ingest_id: ingest_id.into(),
    }
}

fn max_publishers(n: u32) -> pb::SetCapsRequest {
    pb::SetCapsRequest {
        max_publishers: Some(n),
        ..Default::default()
    }
}

/// (max_publishers, live_publishers) from GetCaps.
async fn caps(gw: &mut TestGateway) -> Result<(u32, u32)> {
    let caps = gw.grpc.get_caps(pb::GetCapsRequest {}).await?.into_inner();
    Ok((
        caps.caps.context("caps")?.max_publishers,
        caps.live_publishers,
    ))
}

async fn teardown(gw: &mut TestGateway, ingest_id: &str, reason: &str) -> Result<bool, Status> {
    let (ingest_id, reason) = (ingest_id.into(), reason.into());
    let request = pb::TeardownStreamRequest { ingest_id, reason };
    Ok(gw
        .grpc
        .teardown_stream(request)
        .await?
        .into_inner()
        .session_closed)
}

async fn watch(gw: &TestGateway, ingests: &[&str], kinds: &[K], from_seq: u64) -> Result<Events> {
    let request = pb::WatchEventsRequest {
        ingest_ids: ingests.iter().map(|i| i.to_string()).collect(),
        kinds: kinds.iter().map(|k| *k as i32).collect(),
        from_seq,
    };
    Ok(gw.grpc.clone().watch_events(request).await?.into_inner())
}

async fn next(events: &mut Events) -> Result<pb::Event> {
    let message = tokio::time::timeout(PATIENCE, events.message()).await;
    message
        .context("no event in time")??
        .context("event stream ended")
}

/// Every event up to and including the next one of `wanted`.
async fn until(events: &mut Events, wanted: K) -> Result<Vec<pb::Event>> {
    let mut seen = Vec::new();
    loop {
        let event = next(events).await?;
        let done = kind(&event) == wanted;
        seen.push(event);
        if done {
            return Ok(seen);
        }
    }
}

/// The next event of `wanted`, skipping others.
async fn next_of(events: &mut Events, wanted: K) -> Result<pb::Event> {
    until(events, wanted).await?.pop().context("no event")
}

/// A Watch on the health of the control service, after its first status (SERVING).
async fn watch_health(gw: &TestGateway) -> Result<tonic::Streaming<HealthCheckResponse>> {
    let request = HealthCheckRequest {
        service: CONTROL.into(),
    };
    let mut statuses = gw.health().await?.watch(request).await?.into_inner();
    ensure!(next_status(&mut statuses).await? == ServingStatus::Serving);
    Ok(statuses)
}

async fn next_status(
    statuses: &mut tonic::Streaming<HealthCheckResponse>,
) -> Result<ServingStatus> {
    let message = tokio::time::timeout(PATIENCE, statuses.message()).await;
    let status = message
        .context("no health status in time")??
        .context("health stream ended")?;
    Ok(ServingStatus::try_from(status.status)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_is_idempotent_refuses_conflicts_replaces_and_validates() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    let (v1, v2) = (UdpSink::bind().await?, UdpSink::bind().await?);
    let cam = |video: &UdpSink| pb::RegisterIngestRequest {
        ingest_id: "cam".into(),
        video_target: video.addr.to_string(),
        bearer_token: "tok-s3cret".into(),
        labels: [("site".to_owned(), "north".to_owned())].into(),
        ..Default::default()
    };
    let first = gw.grpc.register_ingest(cam(&v1)).await?.into_inner();
    assert!(first.created);
    let again = gw.grpc.register_ingest(cam(&v1)).await?.into_inner();
    assert!(!again.created, "identical re-register is a no-op");
    assert_eq!(again.ingest, first.ingest);
    let conflict = gw.grpc.register_ingest(cam(&v2)).await;
    assert_eq!(code(conflict), Code::AlreadyExists);
    let replace = pb::RegisterIngestRequest {
        replace: true,
        ..cam(&v2)
    };
    gw.grpc.register_ingest(replace).await?;
    let replaced = gw.grpc.get_ingest(get("cam")).await?.into_inner().ingest;
    assert_eq!(
        replaced.context("ingest")?.video_target,
        v2.addr.to_string()
    );

    let invalid = |ingest_id: &str, video: &str, audio: &str| pb::RegisterIngestRequest {
        ingest_id: ingest_id.into(),
        video_target: video.into(),
        audio_target: audio.into(),
        ..Default::default()
    };
    let long = "x".repeat(129);
    for request in [
        invalid("", "", ""),
        invalid("a/b", "", ""),
        invalid(&long, "", ""),
        invalid("t", "nonsense", ""),
        invalid("t", "127.0.0.1:0", ""),
        invalid("t", "", "nonsense"),
        invalid("t", "", "127.0.0.1:0"),
    ] {
        let what = format!("{request:?}");
        let answer = gw.grpc.register_ingest(request).await;
        assert_eq!(code(answer), Code::InvalidArgument, "{what}");
    }
    assert_eq!(code(gw.grpc.get_ingest(get("ghost")).await), Code::NotFound);
    let unregister = pb::UnregisterIngestRequest {
        ingest_id: "ghost".into(),
    };
    assert_eq!(
        code(gw.grpc.unregister_ingest(unregister).await),
        Code::NotFound
    );

    for id in ["zeta", "alpha", "Mid"] {
        gw.register(id, None, None).await?;
    }
    let list = gw
        .grpc
        .list_ingests(pb::ListIngestsRequest::default())
        .await?
        .into_inner();
    let ids: Vec<&str> = list.ingests.iter().map(|i| i.ingest_id.as_str()).collect();
    assert_eq!(
        ids,
        ["Mid", "alpha", "cam", "zeta"],
        "sorted, nothing invalid kept"
    );
    for ingest in &list.ingests {
        assert_eq!(ingest.has_bearer_token, ingest.ingest_id == "cam");
    }
    assert!(
        !format!("{list:?}").contains("tok-s3cret"),
        "token never listed"
    );
    // Nor in the events that carry the ingest (registered, then updated by the replace).
    let history = until(&mut watch(&gw, &[], &[], 1).await?, K::IngestUpdated).await?;
    assert_eq!(history.len(), 2);
    assert!(!format!("{history:?}").contains("tok-s3cret"));
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_events_follow_one_publish_lifecycle_in_order() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    let mut events = watch(&gw, &[], &[], 0).await?;
    let (video, audio) = (UdpSink::bind().await?, UdpSink::bind().await?);
    gw.register("life", Some(&video), Some(&audio)).await?;
    let published = gw.publish("life", Some(Video::H264), true).await?;
    let mut seen = until(&mut events, K::TrackStarted).await?;
    seen.extend(until(&mut events, K::TrackStarted).await?);
    // A stats tick after both tracks started, then the publisher leaves.
    seen.extend(until(&mut events, K::SessionStats).await?);
    assert_eq!(gw.delete(&published.location).await?, 204);
    seen.extend(until(&mut events, K::SessionEnded).await?);

    let seqs: Vec<u64> = seen.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "seq starts at 1 and grows by exactly 1");
    let lifecycle = [
        K::IngestRegistered,
        K::PublishAccepted,
        K::SessionConnected,
        K::TrackStarted,
        K::TrackStarted,
        K::SessionEnded,
    ];
    assert_eq!(kinds_but_stats(&seen), lifecycle);
    let mut tracks = BTreeMap::new();
    for event in seen.iter().filter(|e| kind(e) == K::TrackStarted) {
        let track = payload!(event, TrackStarted);
        tracks.insert(track.kind, track.codec.as_str());
    }
    assert_eq!(tracks[&(pb::MediaKind::Video as i32)], "H264");
    assert_eq!(tracks[&(pb::MediaKind::Audio as i32)], "opus");
    let session_id = session_of(&published.location);
    for event in &seen {
        assert_eq!(event.ingest_id, "life");
        let registered = kind(event) == K::IngestRegistered;
        assert_eq!(event.session_id, if registered { "" } else { session_id });
    }
    let ended = payload!(seen[seen.len() - 1], SessionEnded);
    assert_eq!(ended.reason, pb::EndReason::PublisherDelete as i32);
    let counters = ended.counters.context("final counters")?;
    assert!(counters.video_packets > 0 && counters.audio_packets > 0);
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_watchers_see_the_same_sequence() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    let mut a = watch(&gw, &[], &[], 0).await?;
    let mut b = watch(&gw, &[], &[], 0).await?;
    gw.register("one", None, None).await?;
    gw.register("two", None, None).await?;
    let published = gw.publish("one", Some(Video::H264), true).await?;
    gw.grpc.set_caps(max_publishers(8)).await?;
    assert_eq!(gw.delete(&published.location).await?, 204);
    let summary = |events: Vec<pb::Event>| -> Vec<(u64, K)> {
        events.iter().map(|e| (e.seq, kind(e))).collect()
    };
    let seen_a = summary(until(&mut a, K::SessionEnded).await?);
    let seen_b = summary(until(&mut b, K::SessionEnded).await?);
    // Registered x2, accepted, connected, caps-changed, ended, and whatever media came.
    assert!(seen_a.len() >= 6, "{seen_a:?}");
    assert_eq!(seen_a, seen_b);
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_replays_from_seq_then_continues_live_and_refuses_lost_history() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    for id in ["r1", "r2", "r3", "r4", "r5"] {
        gw.register(id, None, None).await?;
    }
    let mut resumed = watch(&gw, &[], &[], 3).await?;
    gw.register("r6", None, None).await?;
    for (seq, id) in [(3, "r3"), (4, "r4"), (5, "r5"), (6, "r6")] {
        let event = next(&mut resumed).await?;
        assert_eq!((event.seq, event.ingest_id.as_str()), (seq, id));
        assert_eq!(kind(&event), K::IngestRegistered);
    }
    gw.stop().await?;

    let mut gw = TestGateway::start_with(|c| c.event_history = 4).await?;
    for id in ["h1", "h2", "h3", "h4", "h5", "h6"] {
        gw.register(id, None, None).await?;
    }
    let from_1 = pb::WatchEventsRequest {
        from_seq: 1,
        ..Default::default()
    };
    assert_eq!(code(gw.grpc.watch_events(from_1).await), Code::OutOfRange);
    // The oldest event still held (6 - 4 + 1) can be resumed from.
    assert_eq!(next(&mut watch(&gw, &[], &[], 3).await?).await?.seq, 3);
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_filters_by_ingest_and_by_kind() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    let mut only_b = watch(&gw, &["b"], &[], 0).await?;
    let mut only_ended = watch(&gw, &[], &[K::SessionEnded], 0).await?;
    gw.register("a", None, None).await?;
    gw.register("b", None, None).await?;
    let published = gw.publish("a", Some(Video::H264), true).await?;
    assert_eq!(gw.delete(&published.location).await?, 204);
    gw.grpc.set_caps(max_publishers(8)).await?;
    // b: a publish answered but never connected, then torn down.
    let (_p, offer) = Publisher::new(Some(Video::H264), false).await?;
    assert_eq!(gw.post_offer("b", &offer, None).await?.status(), 201);
    assert!(teardown(&mut gw, "b", "").await?);

    let b_events = until(&mut only_b, K::SessionEnded).await?;
    assert!(b_events.iter().all(|e| e.ingest_id == "b"), "{b_events:?}");
    let b_kinds = [K::IngestRegistered, K::PublishAccepted, K::SessionEnded];
    assert_eq!(kinds_but_stats(&b_events), b_kinds);

    let mut ended = Vec::new();
    for _ in 0..2 {
        let event = next(&mut only_ended).await?;
        ended.push((
            event.ingest_id.clone(),
            payload!(event, SessionEnded).reason,
        ));
    }
    let expected = [
        ("a".to_owned(), pb::EndReason::PublisherDelete as i32),
        ("b".to_owned(), pb::EndReason::Teardown as i32),
    ];
    assert_eq!(
        ended, expected,
        "only session-ended events, nothing before them"
    );
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_closes_the_live_session_and_keeps_the_registration() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    gw.register("td", None, None).await?;
    assert!(
        !teardown(&mut gw, "td", "").await?,
        "no live session to close"
    );
    assert_eq!(code(teardown(&mut gw, "ghost", "").await), Code::NotFound);

    let first = gw.publish("td", Some(Video::H264), true).await?;
    let mut events = watch(&gw, &[], &[], 0).await?;
    assert!(teardown(&mut gw, "td", "operator says stop").await?);
    let event = next_of(&mut events, K::SessionEnded).await?;
    assert_eq!(event.session_id, session_of(&first.location));
    let ended = payload!(event, SessionEnded);
    assert_eq!(ended.reason, pb::EndReason::Teardown as i32);
    assert_eq!(ended.detail, "operator says stop");

    assert!(
        gw.session("td").await?.is_none(),
        "registration stays, session gone"
    );
    assert_eq!(gw.registry.live_count(), 0);
    assert_eq!(gw.delete(&first.location).await?, 204);
    let second = gw.publish("td", Some(Video::H264), true).await?;
    assert_ne!(second.location, first.location);
    assert!(gw.session("td").await?.is_some());
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_are_reported_changed_and_enforced_with_503() -> Result<()> {
    let mut small = TestGateway::start_with(|c| c.max_publishers = 3).await?;
    assert_eq!(caps(&mut small).await?, (3, 0));
    small.stop().await?;

    let mut gw = TestGateway::start().await?;
    assert_eq!(caps(&mut gw).await?, (64, 0), "the default");
    gw.register("live", None, None).await?;
    gw.register("late", None, None).await?;
    let _live = gw.publish("live", Some(Video::H264), true).await?;
    let mut events = watch(&gw, &[], &[], 0).await?;

    let set = gw.grpc.set_caps(max_publishers(1)).await?.into_inner();
    assert_eq!(
        (set.caps.map(|c| c.max_publishers), set.live_publishers),
        (Some(1), 1)
    );
    let event = next_of(&mut events, K::CapsChanged).await?;
    let changed = payload!(event, CapsChanged);
    assert_eq!(changed.caps.map(|c| c.max_publishers), Some(1));
    assert!(
        changed.limits.is_none() && event.ingest_id.is_empty(),
        "a global change"
    );

    let (_p, offer) = Publisher::new(Some(Video::H264), true).await?;
    let refused = gw.post_offer("late", &offer, None).await?;
    assert_eq!(refused.status(), 503);
    assert!(header(&refused, "retry-after").is_ok());
    let event = next_of(&mut events, K::PublishRejected).await?;
    assert_eq!(event.ingest_id, "late");
    assert_eq!(
        payload!(event, PublishRejected).reason,
        pb::RejectReason::Cap as i32
    );

    let live = gw
        .session("live")
        .await?
        .context("the live publisher stays")?;
    assert_eq!(live.state, pb::SessionState::Connected as i32);
    assert_eq!(caps(&mut gw).await?, (1, 1));
    let nothing = gw.grpc.set_caps(pb::SetCapsRequest::default()).await;
    assert_eq!(code(nothing), Code::InvalidArgument);
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ingest_duration_limit_ends_the_live_session() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    gw.register("short", None, None).await?;
    let published = gw.publish("short", Some(Video::H264), true).await?;
    let mut events = watch(&gw, &["short"], &[], 0).await?;
    let limits = pb::IngestLimits {
        max_session_seconds: 1,
        ..Default::default()
    };
    let request = pb::SetCapsRequest {
        ingest_id: "short".into(),
        limits: Some(limits),
        ..Default::default()
    };
    gw.grpc.set_caps(request).await?;
    let changed = next_of(&mut events, K::CapsChanged).await?;
    assert_eq!(payload!(changed, CapsChanged).limits, Some(limits));
    let event = next_of(&mut events, K::SessionEnded).await?;
    assert_eq!(
        payload!(event, SessionEnded).reason,
        pb::EndReason::DurationCap as i32
    );
    assert_eq!(event.session_id, session_of(&published.location));
    assert!(gw.session("short").await?.is_none());
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_keyframe_sends_a_pli_to_the_live_publisher() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    gw.register("kf", None, None).await?;
    gw.register("idle", None, None).await?;
    let _published = gw.publish("kf", Some(Video::H264), false).await?;
    let plis = || {
        let mut grpc = gw.grpc.clone();
        async move {
            let ingest = grpc.get_ingest(get("kf")).await.ok()?.into_inner().ingest?;
            ingest.session?.counters.map(|c| c.plis_sent)
        }
    };
    // The PLI the gateway sends by itself when the video track starts comes first.
    let before = eventually(PATIENCE, "the track-start PLI", || async {
        plis().await.filter(|n| *n >= 1)
    })
    .await?;
    let keyframe = |id: &str| pb::RequestKeyframeRequest {
        ingest_id: id.into(),
    };
    gw.grpc.clone().request_keyframe(keyframe("kf")).await?;
    eventually(PATIENCE, "the requested PLI", || async {
        plis().await.filter(|n| *n > before)
    })
    .await?;
    let no_session = gw.grpc.clone().request_keyframe(keyframe("idle")).await;
    assert_eq!(code(no_session), Code::NotFound);
    let unknown = gw.grpc.clone().request_keyframe(keyframe("ghost")).await;
    assert_eq!(code(unknown), Code::NotFound);
    gw.stop().await
}

fn with_auth<T>(message: T, authorization: &str) -> Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", authorization.parse()?);
    Ok(request)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_guards_control_rpcs_but_not_health() -> Result<()> {
    let mut gw = TestGateway::start_with(|c| c.api_key = Some("k".into())).await?;
    let list = || pb::ListIngestsRequest::default();
    assert_eq!(
        code(gw.grpc.list_ingests(list()).await),
        Code::Unauthenticated
    );
    for wrong in ["Bearer nope", "Bearer ", "Basic k", "k"] {
        let answer = gw.grpc.list_ingests(with_auth(list(), wrong)?).await;
        assert_eq!(code(answer), Code::Unauthenticated, "{wrong:?}");
    }
    let watch = gw
        .grpc
        .watch_events(pb::WatchEventsRequest::default())
        .await;
    assert_eq!(code(watch), Code::Unauthenticated);
    let register = pb::RegisterIngestRequest {
        ingest_id: "keyed".into(),
        ..Default::default()
    };
    assert_eq!(
        code(gw.grpc.register_ingest(register.clone()).await),
        Code::Unauthenticated
    );
    let created = gw
        .grpc
        .register_ingest(with_auth(register, "Bearer k")?)
        .await?;
    assert!(created.into_inner().created);
    let listed = gw.grpc.list_ingests(with_auth(list(), "Bearer k")?).await?;
    assert_eq!(listed.into_inner().ingests.len(), 1);

    let mut health = gw.health().await?;
    for service in ["", CONTROL] {
        let request = HealthCheckRequest {
            service: service.into(),
        };
        let status = health.check(request).await?.into_inner().status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flips_health_and_ends_live_sessions_with_reason_shutdown() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    let mut statuses = watch_health(&gw).await?;
    gw.register("bye", None, None).await?;
    let published = gw.publish("bye", Some(Video::H264), true).await?;
    let mut events = watch(&gw, &[], &[], 0).await?;

    let stopping = tokio::spawn(gw.stop());
    assert_eq!(next_status(&mut statuses).await?, ServingStatus::NotServing);
    drop(statuses); // See the next test.
    let event = next_of(&mut events, K::SessionEnded).await?;
    assert_eq!(
        payload!(event, SessionEnded).reason,
        pb::EndReason::Shutdown as i32
    );
    assert_eq!(event.session_id, session_of(&published.location));
    // Then the event stream ends: UNAVAILABLE, or a clean end.
    match tokio::time::timeout(PATIENCE, events.message()).await? {
        Err(status) => assert_eq!(status.code(), Code::Unavailable),
        Ok(None) => {}
        Ok(Some(event)) => bail!("event after shutdown: {event:?}"),
    }
    stopping.await??;
    published.publisher.close().await;
    Ok(())
}

/// gRPC client-side health checking keeps a Watch open on every connection: that must not hold
/// the gateway's shutdown for its whole grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_health_watch_does_not_hold_shutdown_for_the_grace() -> Result<()> {
    let gw = TestGateway::start_with(|c| c.shutdown_grace = Duration::from_secs(10)).await?;
    let mut statuses = watch_health(&gw).await?;
    let started = Instant::now();
    let stopping = tokio::spawn(gw.stop());
    assert_eq!(next_status(&mut statuses).await?, ServingStatus::NotServing);
    // The watcher keeps reading; the gateway should end the stream once it stops serving.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = statuses.message().await {}
    });
    ensure!(
        ended.await.is_ok(),
        "health Watch stream still open {:?} into shutdown: it is never ended, so the gRPC \
         server's graceful shutdown waits for the whole shutdown_grace",
        started.elapsed()
    );
    tokio::time::timeout(Duration::from_secs(5), stopping).await???;
    Ok(())
}

/// One sample of Prometheus text exposition.
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text format: every non-comment line is `name{label="value",...} value`.
fn parse_prometheus(text: &str) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').context(format!("no value: {line}"))?;
        let value: f64 = value.parse().context(format!("not a float: {line}"))?;
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.strip_suffix('}').context("unclosed {")?),
            None => (series, ""),
        };
        let valid = |(i, c): (usize, char)| {
            c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
        };
        ensure!(
            !name.is_empty() && name.char_indices().all(valid),
            "bad name: {line}"
        );
        let mut map = BTreeMap::new();
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once("=\"")
                .context(format!("bad label: {line}"))?;
            map.insert(key.to_owned(), value.trim_end_matches('"').to_owned());
        }
        let (name, labels) = (name.to_owned(), map);
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    Ok(samples)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_with_bounded_labels() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    let video = UdpSink::bind().await?;
    gw.register("m", Some(&video), None).await?;
    let published = gw.publish("m", Some(Video::H264), true).await?;
    video.recv_n(5, PATIENCE).await?;
    assert_eq!(gw.post_offer("ghost", "v=0\r\n", None).await?.status(), 404);
    assert_eq!(gw.delete(&published.location).await?, 204);

    let text = gw.metrics().await?;
    let samples = parse_prometheus(&text)?;
    let value = |name: &str, labels: &[(&str, &str)]| {
        let matches = |s: &&Sample| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|l| l == v))
        };
        samples.iter().find(matches).map(|s| s.value)
    };
    for status in ["201", "404"] {
        let labels = [
            ("route", "/whip/{ingest_id}"),
            ("method", "POST"),
            ("code", status),
        ];
        let requests = value("whipgate_whip_requests_total", &labels);
        assert_eq!(requests, Some(1.0), "{status}\n{text}");
    }
    assert_eq!(value("whipgate_sessions_started_total", &[]), Some(1.0));
    let deleted = value(
        "whipgate_sessions_ended_total",
        &[("reason", "publisher_delete")],
    );
    assert_eq!(deleted, Some(1.0));
    let video = [("kind", "video")];
    let received = value("whipgate_rtp_packets_received_total", &video);
    assert!(received.is_some_and(|v| v > 0.0), "{text}");
    let forwarded = value("whipgate_rtp_packets_forwarded_total", &video);
    assert!(forwarded.is_some_and(|v| v > 0.0), "{text}");
    let register_ok = [("method", "RegisterIngest"), ("code", "OK")];
    assert_eq!(
        value("whipgate_control_requests_total", &register_ok),
        Some(1.0)
    );
    let connected = [("result", "connected")];
    let connects = value("whipgate_ice_connect_duration_seconds_count", &connected);
    assert_eq!(connects, Some(1.0));
    let per_ingest: Vec<&str> = samples
        .iter()
        .filter(|s| s.labels.contains_key("ingest"))
        .map(|s| s.name.as_str())
        .collect();
    assert!(
        per_ingest.is_empty(),
        "ingest label without opting in: {per_ingest:?}"
    );
    gw.stop().await
}
