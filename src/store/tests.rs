//! Store round trips on the embedded implementation (in memory and on disk), and the errors a
//! damaged or foreign store file gives.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::embedded::{EmbeddedStore, FILE_NAME};
use super::*;
use crate::continuity::{LastOut, OutputState};

fn ingest(id: &str) -> IngestRecord {
    IngestRecord {
        id: id.to_owned(),
        video_target: Some("127.0.0.1:5004".parse().expect("addr")),
        audio_target: None,
        bearer_token: Some("secret".into()),
        labels: BTreeMap::from([("room".to_owned(), "1".to_owned())]),
        video_codecs: vec!["H264".into(), "VP8".into()],
        audio_codecs: vec!["opus".into()],
        limits: LimitsRecord::default(),
        redirect_url: None,
        simulcast_layer: None,
        replace_publisher: true,
        created_at_ms: 1_700_000_000_000,
        limits_override: Some(LimitsRecord {
            max_bitrate_bps: Some(2_000_000),
            max_session_ms: None,
        }),
        layer_override: Some(LayerChoice {
            rid: Some("h".into()),
        }),
    }
}

fn stream(id: &str, seq: u16) -> StreamRecord {
    let out = OutputState {
        ssrc: 0xdead_beef,
        last: Some(LastOut {
            seq,
            ts: 90_000,
            at_unix_ms: 1_700_000_000_500,
        }),
        packets_per_sec: 30.0,
    };
    StreamRecord {
        ingest_id: id.to_owned(),
        at_ms: 1_700_000_001_000,
        video: out,
        audio: OutputState::default(),
    }
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "whipgate-store-{name}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn records_round_trip_and_deletes_take_stream_state_along() {
    let store = EmbeddedStore::in_memory().expect("store");
    assert_eq!(store.load().await.expect("load"), Stored::default());
    store.put_ingest(&ingest("a")).await.expect("put a");
    store.put_ingest(&ingest("b")).await.expect("put b");
    let caps = CapsRecord {
        max_publishers: 3,
        configured: 64,
    };
    store.put_caps(&caps).await.expect("caps");
    store
        .put_streams(&[stream("a", 10), stream("b", 20), stream("gone", 30)])
        .await
        .expect("streams");
    let loaded = store.load().await.expect("load");
    assert_eq!(loaded.ingests, [ingest("a"), ingest("b")]);
    assert_eq!(loaded.caps, Some(caps));
    assert_eq!(
        loaded.streams,
        [stream("a", 10), stream("b", 20)],
        "no stream state for ingests that are not registered"
    );
    store.delete_ingest("a").await.expect("delete");
    store.delete_ingest("never").await.expect("absent is fine");
    let loaded = store.load().await.expect("load");
    assert_eq!(loaded.ingests, [ingest("b")]);
    assert_eq!(loaded.streams, [stream("b", 20)]);
}

#[tokio::test]
async fn epochs_count_up_and_sequence_numbers_never_repeat() {
    let store = EmbeddedStore::in_memory().expect("store");
    let first = store.begin_epoch(1000).await.expect("epoch");
    assert_eq!(
        (first.epoch, first.first_seq, first.reserved_to),
        (1, 1, 1000)
    );
    store.reserve_seq(2500).await.expect("reserve");
    store.reserve_seq(2000).await.expect("never lowers");
    let second = store.begin_epoch(1000).await.expect("epoch");
    assert_eq!(
        (second.epoch, second.first_seq, second.reserved_to),
        (2, 2501, 3500)
    );
}

#[tokio::test]
async fn a_store_on_disk_survives_reopening() {
    let dir = Scratch::new("reopen");
    {
        let store = EmbeddedStore::open(&dir.0).expect("create");
        store.put_ingest(&ingest("a")).await.expect("put");
        store.begin_epoch(1000).await.expect("epoch");
    }
    let store = EmbeddedStore::open(&dir.0).expect("reopen");
    assert_eq!(store.load().await.expect("load").ingests, [ingest("a")]);
    assert_eq!(store.begin_epoch(1000).await.expect("epoch").epoch, 2);
}

#[tokio::test]
async fn a_second_process_on_the_same_data_dir_is_refused_clearly() {
    let dir = Scratch::new("locked");
    let _first = EmbeddedStore::open(&dir.0).expect("first");
    let err = EmbeddedStore::open(&dir.0)
        .err()
        .expect("second open fails");
    let text = err.to_string();
    assert!(text.contains(FILE_NAME), "{text}");
    assert!(text.contains("another whipgate process"), "{text}");
}

#[test]
fn a_file_that_is_not_a_store_is_refused_clearly() {
    let dir = Scratch::new("garbage");
    std::fs::create_dir_all(&dir.0).expect("dir");
    std::fs::write(dir.0.join(FILE_NAME), vec![0x5a; 8192]).expect("garbage");
    let err = EmbeddedStore::open(&dir.0).err().expect("refused");
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains(FILE_NAME), "{err}");
}

#[tokio::test]
async fn a_damaged_record_names_itself() {
    let dir = Scratch::new("damaged");
    {
        let store = EmbeddedStore::open(&dir.0).expect("create");
        store.put_ingest(&ingest("ok")).await.expect("put");
    }
    // Overwrite one record with bytes that are not a registration, as a bad disk or an
    // incompatible writer would.
    {
        let db = redb::Database::open(dir.0.join(FILE_NAME)).expect("raw open");
        let tx = db.begin_write().expect("tx");
        {
            let table: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("ingests");
            let mut t = tx.open_table(table).expect("table");
            t.insert("bad", b"{\"id\": 7}".as_slice()).expect("insert");
        }
        tx.commit().expect("commit");
    }
    let store = EmbeddedStore::open(&dir.0).expect("the file itself is fine");
    let err = store.load().await.expect_err("the record is not");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("ingests/bad"), "{err}");
}

#[tokio::test]
async fn open_creates_a_missing_data_dir() {
    let dir = Scratch::new("fresh");
    let nested = dir.0.join("a").join("b");
    let store = open(Some(&nested)).expect("open");
    store.put_ingest(&ingest("x")).await.expect("put");
    assert!(nested.join(FILE_NAME).is_file());
}

/// Not a check: prints what a durable write costs on this disk. Run with
/// `cargo test --lib store::tests::durable_write_latency -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn durable_write_latency() {
    let dir = Scratch::new("latency");
    let store = EmbeddedStore::open(&dir.0).expect("open");
    let mut times = Vec::new();
    for i in 0..200 {
        let started = std::time::Instant::now();
        store
            .put_ingest(&ingest(&format!("cam-{i}")))
            .await
            .expect("put");
        times.push(started.elapsed());
    }
    times.sort();
    let batch: Vec<StreamRecord> = (0..200).map(|i| stream(&format!("cam-{i}"), 1)).collect();
    let started = std::time::Instant::now();
    store.put_streams(&batch).await.expect("checkpoint");
    println!(
        "put_ingest p50 {:?} p99 {:?}; checkpoint of 200 streams {:?}",
        times[100],
        times[198],
        started.elapsed()
    );
}
