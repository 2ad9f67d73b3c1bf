use super::*;
use crate::registry::Caps;

#[tokio::test]
async fn alone_every_answer_comes_from_the_registry() {
    let metrics = crate::metrics::Metrics::new(false).expect("metrics");
    let registry = Registry::new(Caps { max_publishers: 2 }, 16, Arc::new(metrics));
    let node = NodeInfo {
        id: "n1".into(),
        advertise_url: "http://n1".into(),
    };
    let local = Local::new(registry.clone(), node);
    assert!(!local.clustered());
    assert_eq!(local.owner_elsewhere("cam").await, Ok(None));
    assert_eq!(local.placement("cam").await, None);
    assert!(
        local.learn("cam", None).await.is_none(),
        "nowhere else to look"
    );
    let nodes = local.nodes().await.expect("nodes");
    assert_eq!(nodes.len(), 1);
    assert_eq!(
        (nodes[0].node_id.as_str(), nodes[0].publisher_capacity),
        ("n1", 2)
    );

    registry.set_max_publishers(3);
    let mut replayed = local.subscribe(0, 1).await.expect("replay");
    assert_eq!(replayed.checked_epoch, None, "the registry's own log");
    assert_eq!(replayed.replay.len(), 1);
    assert_eq!(replayed.replay[0].node_id, "n1", "named after this node");
    registry.set_max_publishers(4);
    let live = replayed.live.recv().await.expect("live");
    assert_eq!((live.seq, live.node_id.as_str()), (2, "n1"));
}
