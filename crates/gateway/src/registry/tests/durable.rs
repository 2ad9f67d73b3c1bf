//! The registry with a store: what a restart brings back, and the single admission call.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::Error;
use crate::registry::*;
use crate::store::embedded::EmbeddedStore;
use whipgate_media::codec::{AudioCodec, VideoCodec};
use whipgate_media::continuity::{InputPacket, RESTORE_MAX_JUMP};

fn metrics() -> Arc<Metrics> {
    Arc::new(Metrics::new(false).expect("metrics"))
}

fn caps(max: usize) -> Caps {
    Caps {
        max_publishers: max,
    }
}

fn spec(id: &str) -> IngestSpec {
    IngestSpec {
        id: id.to_owned(),
        video_target: Some("127.0.0.1:5004".parse().expect("addr")),
        audio_target: None,
        bearer_token: Some("t0ken".into()),
        labels: Default::default(),
        video_codecs: vec![VideoCodec::Vp8, VideoCodec::H264],
        audio_codecs: AudioCodec::DEFAULT.to_vec(),
        limits: Limits::default(),
        redirect_url: None,
        simulcast_layer: None,
        replace_publisher: false,
    }
}

async fn boot(store: &Arc<dyn Store>, max: usize) -> Registry {
    Registry::restore(Arc::clone(store), caps(max), 64, metrics())
        .await
        .expect("restore")
}

/// One checkpoint pass (the checkpointer runs once more when cancelled).
async fn checkpoint(r: &Registry) {
    let cancel = CancellationToken::new();
    cancel.cancel();
    r.clone().run_checkpoints(cancel).await;
}

fn admit(r: &Registry, id: &str, token: Option<&str>) -> Result<Admission, RegistryError> {
    match r.admit(id, token, |_| Ok(()))? {
        Admitted::Session(admission, ()) => Ok(*admission),
        Admitted::Redirect(url) => panic!("unexpected redirect to {url}"),
    }
}

fn packet(seq: u16) -> InputPacket {
    InputPacket {
        session: Uuid::new_v4(),
        ssrc: 42,
        seq,
        ts: u32::from(seq) * 3000,
        clock_rate: 90_000,
    }
}

#[tokio::test]
async fn only_the_tokens_salted_hash_is_stored() {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory().expect("store"));
    let r = boot(&store, 64).await;
    r.register(spec("a"), false).expect("register");
    r.persist().ingest("a").await.expect("persist");
    let record = store.get_ingest("a").await.expect("get").expect("stored");
    let json = serde_json::to_string(&record).expect("json");
    assert!(!json.contains("t0ken"), "{json}");
    assert_eq!(record.clear_token, None);
    let hash = record.bearer_token_hash.expect("a hash");
    assert!(hash.matches("t0ken") && !hash.matches("t0ke"));
    // Re-registering with the same token changes nothing, stored hash included.
    let (_, created) = r.register(spec("a"), false).expect("unchanged");
    assert!(!created);
    r.persist().ingest("a").await.expect("persist");
    let again = store.get_ingest("a").await.expect("get").expect("stored");
    assert_eq!(again.bearer_token_hash, Some(hash));
}

#[tokio::test]
async fn a_restart_brings_back_registrations_caps_choices_and_streams() {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory().expect("store"));
    let first = boot(&store, 64).await;
    first.register(spec("a"), false).expect("register");
    first.persist().ingest("a").await.expect("persist");
    let limits = Limits {
        max_bitrate_bps: Some(3_000_000),
        max_session: None,
    };
    first.set_limits("a", limits).expect("limits");
    first.persist().ingest("a").await.expect("persist");
    first.select_layer("a", Some("l".into())).expect("layer");
    first.persist().ingest("a").await.expect("persist");
    first.set_max_publishers(5);
    first.persist().caps().await.expect("persist caps");
    let admission = admit(&first, "a", Some("t0ken")).expect("admit");
    let (ssrc, last_seq) = {
        let mut c = admission.continuity.lock().expect("continuity");
        let now = Instant::now();
        let mut last = 0;
        for seq in 100..200 {
            last = c.video.map(packet(seq), now).seq;
        }
        (c.video.ssrc, last)
    };
    checkpoint(&first).await;
    let old_epoch = first.epoch();
    drop(admission);
    drop(first);

    let second = boot(&store, 64).await;
    assert_eq!(second.epoch(), old_epoch + 1);
    let view = second.get("a").expect("registration survives");
    assert!(view.has_bearer_token);
    assert_eq!(view.spec.limits, limits);
    assert_eq!(view.spec.simulcast_layer.as_deref(), Some("l"));
    assert_eq!(view.spec.video_codecs, [VideoCodec::Vp8, VideoCodec::H264]);
    assert_eq!(second.caps().0.max_publishers, 5);
    assert!(matches!(
        admit(&second, "a", None),
        Err(RegistryError::Unauthorized)
    ));
    let admission = admit(&second, "a", Some("t0ken")).expect("the old token works");
    assert_eq!(admission.spec.simulcast_layer.as_deref(), Some("l"));
    let next = admission
        .continuity
        .lock()
        .expect("continuity")
        .video
        .map(packet(7), Instant::now());
    assert_eq!(next.ssrc, ssrc, "same output SSRC after the restart");
    let jump = next.seq.wrapping_sub(last_seq);
    assert!(
        (1..=RESTORE_MAX_JUMP).contains(&jump),
        "sequence numbers move forward by at most the margin: {last_seq} -> {}",
        next.seq
    );
}

#[tokio::test]
async fn unregistering_is_durable_and_a_changed_configured_cap_wins() {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory().expect("store"));
    let first = boot(&store, 64).await;
    first.register(spec("a"), false).expect("register");
    first.persist().ingest("a").await.expect("persist");
    first.set_max_publishers(2);
    first.persist().caps().await.expect("caps");
    first.unregister("a").expect("unregister");
    first.persist().ingest("a").await.expect("persist");
    drop(first);
    let second = boot(&store, 64).await;
    assert!(matches!(
        second.get("a"),
        Err(RegistryError::IngestNotFound(_))
    ));
    assert_eq!(second.caps().0.max_publishers, 2, "SetCaps survives");
    drop(second);
    let third = boot(&store, 10).await;
    assert_eq!(
        third.caps().0.max_publishers,
        10,
        "an operator who changed --max-publishers gets it"
    );
}

#[tokio::test]
async fn events_of_an_earlier_run_are_refused_clearly() {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory().expect("store"));
    let first = boot(&store, 64).await;
    let mut sub = first.subscribe(0).expect("subscribe");
    first.register(spec("a"), false).expect("register");
    let old = sub.live.try_recv().expect("event");
    assert_eq!((old.epoch, old.seq), (1, 1));
    drop(first);

    let second = boot(&store, 64).await;
    let mut sub = second.subscribe(0).expect("subscribe");
    second.register(spec("b"), false).expect("register");
    let new = sub.live.try_recv().expect("event");
    assert_eq!(new.epoch, 2);
    assert!(
        new.seq > SEQ_BLOCK,
        "above everything run 1 reserved: {}",
        new.seq
    );
    assert!(matches!(
        second.subscribe_at(1, old.seq),
        Err(RegistryError::StaleEpoch {
            requested: 1,
            current: 2,
            ..
        })
    ));
    assert!(matches!(
        second.subscribe(old.seq),
        Err(RegistryError::EventsGone { oldest, .. }) if oldest == new.seq
    ));
    assert!(second.subscribe_at(2, new.seq).is_ok());
}

#[test]
fn one_admission_call_checks_in_order_and_plans_once() {
    let metrics = metrics();
    let r = Registry::new(caps(4), 64, Arc::clone(&metrics));
    let mut redirected = spec("r");
    redirected.redirect_url = Some("https://other.example/whip/r".into());
    r.register(redirected, false).expect("register");
    r.register(spec("a"), false).expect("register");
    let mut sub = r.subscribe(0).expect("subscribe");

    let planned = std::cell::Cell::new(0);
    let plan = |_: &IngestSpec| {
        planned.set(planned.get() + 1);
        Ok::<_, Error>(())
    };
    // The token before the redirect: its URL is not shown to whoever guesses the id.
    assert!(matches!(
        r.admit("r", None, plan),
        Err(RegistryError::Unauthorized)
    ));
    assert!(matches!(
        r.admit("r", Some("t0ken"), plan),
        Ok(Admitted::Redirect(url)) if url.ends_with("/whip/r")
    ));
    assert!(matches!(
        r.admit("a", Some("wrong"), plan),
        Err(RegistryError::Unauthorized)
    ));
    assert_eq!(
        planned.get(),
        0,
        "nothing is planned before the checks pass"
    );
    let bad = r.admit("a", Some("t0ken"), |_| {
        Err::<(), _>(Error::BadRequest("no codec".into()))
    });
    assert!(matches!(bad, Err(RegistryError::BadOffer(ref m)) if m.to_string() == "no codec"));
    let first = match r.admit("a", Some("t0ken"), plan) {
        Ok(Admitted::Session(admission, ())) => admission,
        _ => panic!("admitted"),
    };
    assert_eq!(planned.get(), 1);
    assert!(matches!(
        r.admit("a", Some("t0ken"), plan),
        Err(RegistryError::PublisherConflict(_))
    ));
    drop(first);
    // Each refusal is counted once with the reason the registry derived; the events of one
    // ingest's refusals are one per interval (the first here).
    let counted = |reason: &str| {
        metrics
            .publish_rejections
            .with_label_values(&[reason])
            .get()
    };
    assert_eq!(
        [counted("auth"), counted("bad_sdp"), counted("conflict")],
        [2, 1, 1],
        "each refusal is recorded once, its reason derived by the registry"
    );
    let events: Vec<(RejectReason, u32)> = std::iter::from_fn(|| sub.live.try_recv().ok())
        .filter_map(|e| match &e.payload {
            EventPayload::PublishRejected { reason, count, .. } => Some((*reason, *count)),
            _ => None,
        })
        .collect();
    assert_eq!(events, [(RejectReason::Auth, 1), (RejectReason::Auth, 1)]);
}
