//! Store round trips on the embedded implementation (in memory and on disk), the errors a
//! damaged, truncated, empty, missing or foreign store file gives, the files' permissions, and
//! bearer tokens at rest (salted hashes; older clear-token records migrated).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::embedded::{EmbeddedStore, FILE_NAME};
use super::file;
use super::*;
use crate::secret::TokenHash;
use whipgate_media::continuity::{LastOut, OutputState};

/// A stored token hash (fixed, so records compare equal).
fn fixed_hash() -> TokenHash {
    TokenHash::try_from(format!("sha256:{}:{}", "11".repeat(16), "22".repeat(32))).expect("hash")
}

fn ingest(id: &str) -> IngestRecord {
    IngestRecord {
        id: id.to_owned(),
        video_target: Some("127.0.0.1:5004".parse().expect("addr")),
        audio_target: None,
        bearer_token_hash: Some(fixed_hash()),
        clear_token: None,
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

/// A store file with one registration, as whipgate writes it; returns its bytes.
async fn a_real_store(dir: &std::path::Path) -> Vec<u8> {
    {
        let store = EmbeddedStore::open(dir).expect("create");
        store.put_ingest(&ingest("a")).await.expect("put");
    }
    std::fs::read(dir.join(FILE_NAME)).expect("read")
}

/// The error of opening `dir`, which must be a clean [`StoreError::Open`] naming the file.
fn refused(dir: &std::path::Path) -> String {
    let err = EmbeddedStore::open(dir).err().expect("refused");
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&dir.join(FILE_NAME).display().to_string()),
        "{text}"
    );
    text
}

#[tokio::test]
async fn a_truncated_store_file_is_refused_naming_it_and_the_way_out() {
    let dir = Scratch::new("truncated");
    let bytes = a_real_store(&dir.0).await;
    for len in [bytes.len() - 4096, 3000, 100] {
        std::fs::write(dir.0.join(FILE_NAME), &bytes[..len]).expect("truncate");
        let text = refused(&dir.0);
        assert!(text.contains("truncated"), "{len}: {text}");
        assert!(text.contains("restore it from a backup"), "{len}: {text}");
        assert!(text.contains("move it aside"), "{len}: {text}");
    }
    std::fs::write(dir.0.join(FILE_NAME), &bytes).expect("restore");
    assert_eq!(
        EmbeddedStore::open(&dir.0)
            .expect("the whole file opens")
            .load()
            .await
            .expect("load")
            .ingests,
        [ingest("a")]
    );
}

#[tokio::test]
async fn a_panic_inside_redb_becomes_an_open_error() {
    let dir = Scratch::new("redb-panic");
    let mut bytes = a_real_store(&dir.0).await;
    // A header that passes the up-front checks but names another page size (512): redb
    // asserts on it while opening.
    bytes[12..16].copy_from_slice(&512u32.to_le_bytes());
    std::fs::write(dir.0.join(FILE_NAME), &bytes).expect("damage");
    let text = refused(&dir.0);
    assert!(text.contains("damaged (redb: "), "{text}");
    assert!(text.contains("restore it from a backup"), "{text}");
}

#[test]
fn an_empty_store_file_is_refused_not_started_empty() {
    let dir = Scratch::new("empty");
    std::fs::create_dir_all(&dir.0).expect("dir");
    std::fs::write(dir.0.join(FILE_NAME), b"").expect("empty file");
    let text = refused(&dir.0);
    assert!(text.contains("empty (0 bytes)"), "{text}");
    assert!(text.contains("to start with an empty store"), "{text}");
    assert_eq!(
        std::fs::metadata(dir.0.join(FILE_NAME))
            .expect("kept")
            .len(),
        0,
        "nothing written over it"
    );
}

#[tokio::test]
async fn a_store_file_missing_where_one_was_created_is_refused() {
    let dir = Scratch::new("missing");
    a_real_store(&dir.0).await;
    assert!(dir.0.join(file::MARKER_NAME).is_file(), "marker written");
    std::fs::remove_file(dir.0.join(FILE_NAME)).expect("lose the store");
    let text = refused(&dir.0);
    assert!(text.contains("missing"), "{text}");
    assert!(text.contains(file::MARKER_NAME), "{text}");
    assert!(!dir.0.join(FILE_NAME).exists(), "no new empty store");
    // The way out the message gives: delete the marker to start empty.
    std::fs::remove_file(dir.0.join(file::MARKER_NAME)).expect("remove marker");
    let store = EmbeddedStore::open(&dir.0).expect("starts empty");
    assert_eq!(store.load().await.expect("load"), Stored::default());
}

#[tokio::test]
async fn an_existing_store_without_a_marker_opens_and_gets_one() {
    // A data dir of an older whipgate: a store, no marker.
    let dir = Scratch::new("no-marker");
    a_real_store(&dir.0).await;
    std::fs::remove_file(dir.0.join(file::MARKER_NAME)).expect("as before markers");
    let store = EmbeddedStore::open(&dir.0).expect("opens");
    assert_eq!(store.load().await.expect("load").ingests, [ingest("a")]);
    assert!(dir.0.join(file::MARKER_NAME).is_file());
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_dir_is_0700_the_files_0600_and_looser_ones_are_tightened() {
    use std::os::unix::fs::PermissionsExt;
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    let dir = Scratch::new("modes");
    let data = dir.0.join("data");
    a_real_store(&data).await;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join(FILE_NAME)), 0o600);
    assert_eq!(mode(&data.join(file::MARKER_NAME)), 0o600);

    let loose = std::fs::Permissions::from_mode;
    std::fs::set_permissions(&data, loose(0o755)).expect("chmod dir");
    std::fs::set_permissions(data.join(FILE_NAME), loose(0o644)).expect("chmod file");
    let store = EmbeddedStore::open(&data).expect("opens");
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join(FILE_NAME)), 0o600);
    assert_eq!(store.load().await.expect("load").ingests, [ingest("a")]);
}

/// The `ingests` table's raw JSON, as any reader of the file sees it.
fn raw_ingests(path: &std::path::Path) -> Vec<String> {
    use redb::ReadableTable;
    let db = redb::Database::open(path).expect("raw open");
    let tx = db.begin_read().expect("tx");
    let table: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("ingests");
    let t = tx.open_table(table).expect("table");
    t.iter()
        .expect("iter")
        .map(|row| {
            let (_, v) = row.expect("row");
            String::from_utf8(v.value().to_vec()).expect("json")
        })
        .collect()
}

#[tokio::test]
async fn tokens_are_stored_as_salted_hashes_only() {
    let dir = Scratch::new("hashed");
    let store = EmbeddedStore::open(&dir.0).expect("create");
    let mut record = ingest("a");
    record.bearer_token_hash = Some(TokenHash::new("s3cret-token"));
    store.put_ingest(&record).await.expect("put");
    drop(store);
    let raw = raw_ingests(&dir.0.join(FILE_NAME));
    assert_eq!(raw.len(), 1);
    assert!(!raw[0].contains("s3cret-token"), "{}", raw[0]);
    assert!(!raw[0].contains("\"bearer_token\""), "{}", raw[0]);
    assert!(
        raw[0].contains("\"bearer_token_hash\":\"sha256:"),
        "{}",
        raw[0]
    );
    let bytes = std::fs::read(dir.0.join(FILE_NAME)).expect("file");
    assert!(
        !bytes.windows(12).any(|w| w == b"s3cret-token"),
        "the token appears nowhere in the file"
    );
    let loaded = EmbeddedStore::open(&dir.0).expect("reopen").load().await;
    let hash = loaded.expect("load").ingests[0]
        .bearer_token_hash
        .clone()
        .expect("hash");
    assert!(hash.matches("s3cret-token") && !hash.matches("other"));
}

#[tokio::test]
async fn a_store_with_clear_tokens_is_migrated_to_hashes_at_open() {
    // A store as the previous whipgate wrote it: layout 1, the token in clear.
    let dir = Scratch::new("layout1");
    std::fs::create_dir_all(&dir.0).expect("dir");
    let path = dir.0.join(FILE_NAME);
    let old = r#"{"id":"old","video_target":"127.0.0.1:5004","audio_target":null,
        "bearer_token":"clear-t0ken","labels":{},"video_codecs":["H264"],"audio_codecs":["opus"],
        "limits":{"max_bitrate_bps":null,"max_session_ms":null},"redirect_url":null,
        "simulcast_layer":null,"replace_publisher":false,"created_at_ms":1700000000000,
        "limits_override":null,"layer_override":null}"#;
    {
        let db = redb::Database::create(&path).expect("raw create");
        let tx = db.begin_write().expect("tx");
        {
            let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
            tx.open_table(meta)
                .expect("meta")
                .insert("schema", 1)
                .expect("schema");
            let ingests: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("ingests");
            tx.open_table(ingests)
                .expect("ingests")
                .insert("old", old.as_bytes())
                .expect("insert");
        }
        tx.commit().expect("commit");
    }
    let store = EmbeddedStore::open(&dir.0).expect("an older store opens");
    let loaded = store.load().await.expect("load");
    let record = &loaded.ingests[0];
    assert_eq!(record.id, "old");
    assert_eq!(record.clear_token, None);
    let hash = record.bearer_token_hash.clone().expect("hashed");
    assert!(hash.matches("clear-t0ken") && !hash.matches("clear-t0ke"));
    drop(store);
    let raw = raw_ingests(&path);
    assert!(!raw[0].contains("clear-t0ken"), "rewritten: {}", raw[0]);
    assert!(raw[0].contains("\"bearer_token_hash\""), "{}", raw[0]);
    {
        let db = redb::Database::open(&path).expect("raw open");
        let tx = db.begin_read().expect("tx");
        let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
        let schema = tx
            .open_table(meta)
            .expect("meta")
            .get("schema")
            .expect("get")
            .map(|v| v.value());
        assert_eq!(schema, Some(2), "the layout version says tokens are hashed");
    }
    // The migration happened once: the stored hash stays across opens.
    let again = EmbeddedStore::open(&dir.0).expect("reopen").load().await;
    assert_eq!(
        again.expect("load").ingests[0].bearer_token_hash,
        Some(hash)
    );
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
