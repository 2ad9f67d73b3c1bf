//! Two registries on one store stand in for two cluster nodes: refreshes bring the other's
//! writes in without events, and never undo a local change that is still being written.

use std::sync::Arc;

use crate::registry::*;
use crate::store::embedded::EmbeddedStore;
use whipgate_media::codec::{AudioCodec, VideoCodec};

fn spec(id: &str, token: &str) -> IngestSpec {
    IngestSpec {
        id: id.to_owned(),
        video_target: Some("127.0.0.1:5004".parse().expect("addr")),
        audio_target: None,
        bearer_token: Some(token.into()),
        labels: Default::default(),
        video_codecs: vec![VideoCodec::H264],
        audio_codecs: AudioCodec::DEFAULT.to_vec(),
        limits: Limits::default(),
        redirect_url: None,
        simulcast_layer: None,
        replace_publisher: false,
    }
}

async fn two_nodes() -> (Registry, Registry) {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory().expect("store"));
    let node = |store: Arc<dyn Store>| async move {
        let metrics = Arc::new(Metrics::new(false).expect("metrics"));
        let caps = Caps { max_publishers: 4 };
        Registry::restore(store, caps, 64, metrics)
            .await
            .expect("restore")
    };
    (node(Arc::clone(&store)).await, node(store).await)
}

#[tokio::test]
async fn a_refresh_brings_another_nodes_writes_in_without_events() {
    let (a, b) = two_nodes().await;
    let mut events = b.subscribe(0).expect("subscribe");
    a.register(spec("cam", "one"), false).expect("register");
    a.persist().ingest("cam").await.expect("persist");
    assert!(b.get("cam").is_err(), "not yet");
    b.refresh("cam").await.expect("refresh");
    assert!(b.get("cam").expect("shared").has_bearer_token);

    a.register(spec("cam", "two"), true).expect("replace");
    a.persist().ingest("cam").await.expect("persist");
    b.refresh("cam").await.expect("refresh");
    assert!(matches!(
        b.admit("cam", Some("one"), |_| Ok(())),
        Err(RegistryError::Unauthorized)
    ));

    a.unregister("cam").expect("unregister");
    a.persist().ingest("cam").await.expect("persist");
    b.refresh_all().await.expect("refresh");
    assert!(b.get("cam").is_err(), "gone");
    // Only the refused admission's own event: applying emits nothing.
    let kinds: Vec<&str> = std::iter::from_fn(|| events.live.try_recv().ok())
        .map(|e| e.payload.kind_name())
        .collect();
    assert_eq!(kinds, ["publish_rejected"]);
}

#[tokio::test]
async fn a_local_change_being_written_is_not_undone_by_a_refresh() {
    let (a, b) = two_nodes().await;
    a.register(spec("cam", "one"), false).expect("register");
    a.persist().ingest("cam").await.expect("persist");
    // B registers a replacement; before its write lands, a refresh reads the old record.
    b.register(spec("cam", "two"), true).expect("replace");
    b.refresh("cam").await.expect("refresh");
    b.refresh_all().await.expect("refresh");
    assert!(matches!(
        b.admit("cam", Some("one"), |_| Ok(())),
        Err(RegistryError::Unauthorized)
    ));
    b.persist().ingest("cam").await.expect("persist");
    a.refresh("cam").await.expect("refresh");
    assert!(matches!(
        a.admit("cam", Some("one"), |_| Ok(())),
        Err(RegistryError::Unauthorized)
    ));
    // An unregistration being written is not brought back either.
    b.unregister("cam").expect("unregister");
    b.refresh("cam").await.expect("refresh");
    assert!(b.get("cam").is_err());
}

#[tokio::test]
async fn a_change_made_for_another_node_does_not_hold_its_reloads_back() {
    let (a, b) = two_nodes().await;
    a.register(spec("cam", "one"), false).expect("register");
    a.persist().ingest("cam").await.expect("persist");
    b.refresh("cam").await.expect("refresh");
    // A routed call run on B for A (A writes the store itself).
    b.set_limits("cam", Limits::default()).expect("limits");
    b.settle("cam");
    a.register(spec("cam", "two"), true).expect("replace");
    a.persist().ingest("cam").await.expect("persist");
    b.refresh("cam").await.expect("refresh");
    assert!(matches!(
        b.admit("cam", Some("one"), |_| Ok(())),
        Err(RegistryError::Unauthorized)
    ));
}
