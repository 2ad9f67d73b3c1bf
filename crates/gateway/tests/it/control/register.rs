//! Control plane: RegisterIngest idempotence, conflicts, replacement and validation.

use anyhow::{Context, Result};
use tonic::Code;
use whipgate_proto::pb;
use whipgate_proto::pb::EventKind as K;

use super::{code, get, until, watch};
use crate::harness::{TestGateway, Topo, UdpSink, on_both_topologies};

on_both_topologies!(register_is_idempotent_refuses_conflicts_replaces_and_validates);

async fn register_is_idempotent_refuses_conflicts_replaces_and_validates(topo: Topo) -> Result<()> {
    let mut gw = TestGateway::start_on(topo, |_| {}).await?;
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
