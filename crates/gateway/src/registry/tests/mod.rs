//! Registry transitions, without a runtime.

use std::sync::Arc;

mod durable;
mod shared;

use super::*;
use whipgate_media::codec::{AudioCodec, VideoCodec};

fn registry(max: usize) -> Registry {
    let metrics = Arc::new(Metrics::new(false).expect("metrics"));
    Registry::new(
        Caps {
            max_publishers: max,
        },
        64,
        metrics,
    )
}

fn spec(id: &str) -> IngestSpec {
    IngestSpec {
        id: id.to_owned(),
        video_target: Some("127.0.0.1:5004".parse().expect("addr")),
        audio_target: None,
        bearer_token: None,
        labels: Default::default(),
        video_codecs: VideoCodec::DEFAULT.to_vec(),
        audio_codecs: AudioCodec::DEFAULT.to_vec(),
        limits: Limits::default(),
        redirect_url: None,
        simulcast_layer: None,
        replace_publisher: false,
    }
}

/// Admits with a planner that accepts any offer.
fn admit(r: &Registry, id: &str, token: Option<&str>) -> Result<Admission, RegistryError> {
    match r.admit(id, token, |_| Ok(()))? {
        Admitted::Session(admission, ()) => Ok(*admission),
        Admitted::Redirect(url) => panic!("unexpected redirect to {url}"),
    }
}

fn kinds(sub: &mut Subscription) -> Vec<&'static str> {
    let mut out = Vec::new();
    while let Ok(e) = sub.live.try_recv() {
        out.push(e.payload.kind_name());
    }
    out
}

#[test]
fn register_is_idempotent_and_conflicts_need_replace() {
    let r = registry(4);
    assert!(r.register(spec("a"), false).expect("first").1);
    assert!(!r.register(spec("a"), false).expect("identical").1);
    let mut other = spec("a");
    other.labels.insert("k".into(), "v".into());
    assert!(matches!(
        r.register(other.clone(), false),
        Err(RegistryError::IngestExists(_))
    ));
    assert!(r.register(other, true).is_ok());
    assert_eq!(r.get("a").expect("get").spec.labels["k"], "v");
}

#[test]
fn one_publisher_per_ingest_and_the_global_cap_hold() {
    let r = registry(1);
    r.register(spec("a"), false).expect("a");
    r.register(spec("b"), false).expect("b");
    let first = admit(&r, "a", None).expect("first publisher");
    assert!(matches!(
        admit(&r, "a", None),
        Err(RegistryError::PublisherConflict(_))
    ));
    assert!(matches!(
        admit(&r, "b", None),
        Err(RegistryError::CapReached(1))
    ));
    drop(first);
    assert_eq!(
        r.live_count(),
        0,
        "dropping the admission releases the slot"
    );
    assert!(admit(&r, "b", None).is_ok());
}

#[test]
fn re_registering_is_checked_against_the_stored_token_hash() {
    let r = registry(4);
    let with = |token: &str| {
        let mut s = spec("a");
        s.bearer_token = Some(token.into());
        s
    };
    assert!(r.register(with("t1"), false).expect("first").1);
    let (view, created) = r
        .register(with("t1"), false)
        .expect("same token: unchanged");
    assert!(!created && view.has_bearer_token);
    assert!(matches!(
        r.register(with("t2"), false),
        Err(RegistryError::IngestExists(_))
    ));
    assert!(matches!(
        r.register(spec("a"), false),
        Err(RegistryError::IngestExists(_))
    ));
    let live = admit(&r, "a", Some("t1")).expect("t1 admitted");
    r.register(with("t2"), true).expect("replaced");
    assert!(
        live.cancel.is_cancelled(),
        "a new token closes the live publisher"
    );
    drop(live);
    assert!(matches!(
        admit(&r, "a", Some("t1")),
        Err(RegistryError::Unauthorized)
    ));
    let live = admit(&r, "a", Some("t2")).expect("t2 admitted");
    let mut relabelled = with("t2");
    relabelled.labels.insert("k".into(), "v".into());
    r.register(relabelled, true).expect("replaced, same token");
    assert!(
        !live.cancel.is_cancelled(),
        "the same token and media keep the publisher"
    );
}

#[test]
fn tokens_are_checked() {
    let r = registry(4);
    let mut s = spec("a");
    s.bearer_token = Some("t".into());
    r.register(s, false).expect("register");
    assert!(matches!(
        admit(&r, "a", None),
        Err(RegistryError::Unauthorized)
    ));
    assert!(matches!(
        admit(&r, "a", Some("x")),
        Err(RegistryError::Unauthorized)
    ));
    assert!(admit(&r, "a", Some("t")).is_ok());
    assert!(
        r.get("a").expect("get").spec.bearer_token.is_none(),
        "views never carry the token"
    );
}

#[test]
fn a_session_ends_once_and_cancels_its_task() {
    let r = registry(4);
    r.register(spec("a"), false).expect("register");
    let mut sub = r.subscribe(0).expect("subscribe");
    let admission = admit(&r, "a", None).expect("admit");
    assert!(r.publish_accepted(admission.session_id, None, "\"e\""));
    assert!(r.end_session(admission.session_id, EndReason::PublisherDelete, "bye"));
    assert!(!r.end_session(admission.session_id, EndReason::Error, "again"));
    assert!(admission.cancel.is_cancelled());
    drop(admission);
    assert_eq!(kinds(&mut sub), ["publish_accepted", "session_ended"]);
}

#[test]
fn an_unannounced_session_vanishes_without_events() {
    let r = registry(4);
    r.register(spec("a"), false).expect("register");
    let mut sub = r.subscribe(0).expect("subscribe");
    drop(admit(&r, "a", None).expect("admit"));
    assert!(kinds(&mut sub).is_empty());
    assert_eq!(r.live_count(), 0);
}

#[test]
fn teardown_keeps_the_ingest_and_unregister_removes_it() {
    let r = registry(4);
    r.register(spec("a"), false).expect("register");
    let admission = admit(&r, "a", None).expect("admit");
    assert!(r.publish_accepted(admission.session_id, None, "\"e\""));
    assert!(r.teardown("a", "").expect("teardown"));
    assert!(!r.teardown("a", "").expect("nothing live"));
    assert!(r.get("a").is_ok());
    assert!(admission.cancel.is_cancelled());
    let again = admit(&r, "a", None).expect("reconnect after teardown");
    assert!(r.unregister("a").expect("unregister"));
    assert!(again.cancel.is_cancelled());
    assert!(matches!(r.get("a"), Err(RegistryError::IngestNotFound(_))));
}

#[test]
fn replacing_media_parameters_closes_the_live_publisher() {
    let r = registry(4);
    r.register(spec("a"), false).expect("register");
    let admission = admit(&r, "a", None).expect("admit");
    let mut moved = spec("a");
    moved.video_target = Some("127.0.0.1:6000".parse().expect("addr"));
    r.register(moved, true).expect("replace");
    assert!(admission.cancel.is_cancelled());
    assert_eq!(r.live_count(), 0);
}

#[test]
fn draining_ends_everything_and_refuses_new_publishes() {
    let r = registry(4);
    r.register(spec("a"), false).expect("register");
    let admission = admit(&r, "a", None).expect("admit");
    r.start_draining();
    assert!(admission.cancel.is_cancelled());
    assert!(matches!(admit(&r, "a", None), Err(RegistryError::Draining)));
}

#[test]
fn lowering_the_cap_keeps_live_publishers() {
    let r = registry(4);
    r.register(spec("a"), false).expect("a");
    r.register(spec("b"), false).expect("b");
    let live = admit(&r, "a", None).expect("admit");
    let (caps, count) = r.set_max_publishers(1);
    assert_eq!((caps.max_publishers, count), (1, 1));
    assert!(!live.cancel.is_cancelled());
    assert!(matches!(
        admit(&r, "b", None),
        Err(RegistryError::CapReached(1))
    ));
}

#[test]
fn limits_set_live_win_but_do_not_break_idempotent_registration() {
    let r = registry(4);
    r.register(spec("a"), false).expect("register");
    let limits = Limits {
        max_bitrate_bps: Some(1_000_000),
        max_session: None,
    };
    r.set_limits("a", limits).expect("set limits");
    assert_eq!(r.limits("a"), Some(limits));
    assert!(
        !r.register(spec("a"), false)
            .expect("same registration again")
            .1
    );
    assert_eq!(
        r.get("a").expect("get").spec.limits,
        limits,
        "views show the effective limits"
    );
}

#[test]
fn a_replacing_ingest_hands_the_stream_to_the_new_publisher() {
    let r = registry(1);
    let mut s = spec("a");
    s.replace_publisher = true;
    r.register(s, false).expect("register");
    let first = admit(&r, "a", None).expect("first");
    assert!(r.publish_accepted(first.session_id, None, "\"e\""));
    let mut sub = r.subscribe(0).expect("subscribe");
    let second = admit(&r, "a", None).expect("the cap counts the replaced slot as free");
    assert!(first.cancel.is_cancelled());
    assert!(!second.cancel.is_cancelled());
    assert_eq!(r.live_count(), 1);
    let ended = sub.live.try_recv().expect("event");
    assert!(matches!(
        ended.payload,
        EventPayload::SessionEnded {
            reason: EndReason::Replaced,
            ..
        }
    ));
}

#[test]
fn a_session_ended_during_negotiation_is_not_announced() {
    let r = registry(1);
    r.register(spec("a"), false).expect("register");
    let admission = admit(&r, "a", None).expect("admit");
    let mut sub = r.subscribe(0).expect("subscribe");
    r.teardown("a", "operator").expect("teardown");
    assert!(
        !r.publish_accepted(admission.session_id, None, "\"e\""),
        "no 201 for a torn-down session"
    );
    let mut kinds = Vec::new();
    while let Ok(event) = sub.live.try_recv() {
        kinds.push(event.payload.kind_name());
    }
    // An unannounced session ends silently: no publish_accepted, and nothing to end.
    assert!(kinds.is_empty(), "{kinds:?}");
}

#[test]
fn refusals_for_unknown_ingests_are_counted_not_announced() {
    let r = registry(1);
    let mut sub = r.subscribe(0).expect("subscribe");
    r.publish_rejected("nobody", RejectReason::NotFound, "no such ingest: nobody");
    assert!(sub.live.try_recv().is_err());
    r.register(spec("a"), false).expect("register");
    let long = format!("\n{}", "x".repeat(1000));
    r.publish_rejected("a", RejectReason::BadSdp, &long);
    let mut detail = None;
    while let Ok(event) = sub.live.try_recv() {
        if let EventPayload::PublishRejected { detail: d, .. } = &event.payload {
            detail = Some(d.clone());
        }
    }
    let detail = detail.expect("an event for a registered ingest");
    assert!(
        detail.len() <= crate::net::untrusted::MAX_LOGGED_BYTES + 3,
        "bounded"
    );
    assert!(!detail.contains('\n'), "escaped");
}

#[test]
fn a_redirect_url_is_shown_only_to_a_publisher_with_the_token() {
    let r = registry(4);
    let mut s = spec("moved");
    s.bearer_token = Some("t0ken".into());
    s.redirect_url = Some("https://elsewhere.example/whip/moved".into());
    r.register(s, false).expect("register");
    for wrong in [None, Some("guess")] {
        assert!(matches!(
            r.admit("moved", wrong, |_| Ok(())),
            Err(RegistryError::Unauthorized)
        ));
    }
    assert!(matches!(
        r.admit("moved", Some("t0ken"), |_| Ok(())),
        Ok(Admitted::Redirect(url)) if url.ends_with("/whip/moved")
    ));
}

#[test]
fn a_burst_of_refusals_is_one_event_with_its_count() {
    let r = registry(4);
    let mut s = spec("cam");
    s.bearer_token = Some("t0ken".into());
    r.register(s, false).expect("register");
    let mut sub = r.subscribe(0).expect("subscribe");
    for _ in 0..21 {
        assert!(admit(&r, "cam", Some("wrong")).is_err());
    }
    let rejected: Vec<_> = std::iter::from_fn(|| sub.live.try_recv().ok())
        .filter_map(|e| match &e.payload {
            EventPayload::PublishRejected { count, .. } => Some(*count),
            _ => None,
        })
        .collect();
    assert_eq!(rejected, [1], "one event for the burst");
    assert!(
        admit(&r, "cam", Some("t0ken")).is_ok(),
        "the right token still works"
    );
}
