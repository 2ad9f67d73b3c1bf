//! The registry and its store: reading everything back at boot, making control-plane changes
//! durable before their RPC answers, and checkpointing output stream state off the packet
//! path.
//!
//! Writes are serialised by one async lock; each writer reads the newest in-memory state once
//! it holds it, so concurrent changes can never leave an older state as the last one written.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use super::events::SEQ_BLOCK_SIZE;
use super::{Caps, IngestEntry, IngestSpec, Limits, Registry, RegistryError};
use crate::metrics::Metrics;
use crate::secret::TokenHash;
use crate::store::{
    CapsRecord, IngestRecord, LayerChoice, LimitsRecord, Store, StoreError, StreamRecord,
};
use whipgate_media::codec::{AudioCodec, VideoCodec};
use whipgate_media::continuity::{Continuity, OutputState, OutputStream};

/// How often output stream state is checkpointed (also at every session end).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// Event sequence numbers reserved in the store at a time.
pub const SEQ_BLOCK: u64 = SEQ_BLOCK_SIZE;

impl Registry {
    /// Reads a store back into a new registry and starts a new event epoch. Registrations,
    /// tokens, limits and layer choices come back as they were; each ingest's output streams
    /// continue (same SSRCs, sequence numbers past the restart margin); the cap set with
    /// SetCaps wins unless `--max-publishers` changed since.
    pub async fn restore(
        store: Arc<dyn Store>,
        caps: Caps,
        event_history: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Self, RegistryError> {
        let stored = store.load().await?;
        let clock = store.begin_epoch(SEQ_BLOCK).await?;
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut streams: HashMap<String, StreamRecord> = stored
            .streams
            .into_iter()
            .map(|s| (s.ingest_id.clone(), s))
            .collect();
        let mut ingests = HashMap::new();
        for record in stored.ingests {
            let mut entry = entry_from(&record)?;
            if let Some(stream) = streams.remove(&record.id) {
                let at = UNIX_EPOCH + Duration::from_millis(stream.at_ms);
                entry.continuity = Arc::new(Mutex::new(Continuity {
                    video: OutputStream::restore(&stream.video, at, now, wall),
                    audio: OutputStream::restore(&stream.audio, at, now, wall),
                }));
            }
            ingests.insert(record.id.clone(), entry);
        }
        let caps = match stored.caps {
            Some(c) if c.configured == caps.max_publishers as u64 => Caps {
                max_publishers: usize::try_from(c.max_publishers).unwrap_or(usize::MAX),
            },
            Some(c) => {
                tracing::info!(
                    stored = c.max_publishers,
                    configured = caps.max_publishers,
                    "--max-publishers changed since SetCaps: the configured value wins"
                );
                caps
            }
            None => caps,
        };
        tracing::info!(
            ingests = ingests.len(),
            epoch = clock.epoch,
            first_seq = clock.first_seq,
            "registry restored"
        );
        Ok(Self::with_state(
            caps,
            ingests,
            event_history,
            clock,
            metrics,
            Some(store),
        ))
    }

    /// Durable writes for the control plane: await them before answering the RPC.
    pub fn persist(&self) -> Persist<'_> {
        Persist { registry: self }
    }

    /// Checkpoints output stream state every [`CHECKPOINT_INTERVAL`] and at session ends, and
    /// keeps event sequence numbers reserved, until `cancel` (then checkpoints once more).
    pub async fn run_checkpoints(self, cancel: CancellationToken) {
        let Some(store) = self.inner.store.clone() else {
            return;
        };
        let mut written: HashMap<String, StreamRecord> = HashMap::new();
        let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stop = tokio::select! {
                _ = tick.tick() => false,
                _ = self.inner.checkpoint_soon.notified() => false,
                _ = cancel.cancelled() => true,
            };
            self.reserve_seqs(store.as_ref()).await;
            let due = self.streams_due(&mut written);
            if !due.is_empty() {
                match store.put_streams(&due).await {
                    Ok(()) => written.extend(due.into_iter().map(|s| (s.ingest_id.clone(), s))),
                    Err(err) => tracing::warn!(%err, "checkpointing output streams failed"),
                }
            }
            if stop {
                return;
            }
        }
    }

    async fn reserve_seqs(&self, store: &dyn Store) {
        let due = self.lock().events.reservation_due();
        if let Some(reserved_to) = due {
            match store.reserve_seq(reserved_to).await {
                Ok(()) => self.lock().events.reserved(reserved_to),
                Err(err) => tracing::warn!(%err, "reserving event sequence numbers failed"),
            }
        }
    }

    /// Output stream state that changed since it was last written (`written` forgets
    /// unregistered ingests).
    fn streams_due(&self, written: &mut HashMap<String, StreamRecord>) -> Vec<StreamRecord> {
        let all: Vec<(String, Arc<Mutex<Continuity>>)> = {
            let state = self.lock();
            written.retain(|id, _| state.ingests.contains_key(id));
            state
                .ingests
                .iter()
                .map(|(id, e)| (id.clone(), Arc::clone(&e.continuity)))
                .collect()
        };
        let (now, wall) = (Instant::now(), SystemTime::now());
        let at_ms = unix_ms(wall);
        let mut due = Vec::new();
        for (ingest_id, continuity) in all {
            let (mut video, mut audio, here) = {
                let c = continuity.lock().unwrap_or_else(|p| p.into_inner());
                let here = c.video.forwarded_here() || c.audio.forwarded_here();
                (c.video.state(now, wall), c.audio.state(now, wall), here)
            };
            // Only streams this process sent: what was read back at boot is already stored,
            // and in cluster mode another node may be sending (and checkpointing) it now.
            if !here {
                continue;
            }
            let previous = written.get(&ingest_id);
            if let Some(prev) = previous {
                if same_point(&prev.video, &video) && same_point(&prev.audio, &audio) {
                    continue;
                }
                video.packets_per_sec = video
                    .rate_since(&prev.video)
                    .unwrap_or(prev.video.packets_per_sec);
                audio.packets_per_sec = audio
                    .rate_since(&prev.audio)
                    .unwrap_or(prev.audio.packets_per_sec);
            }
            due.push(StreamRecord {
                ingest_id,
                at_ms,
                video,
                audio,
            });
        }
        due
    }

    /// The record of an ingest as it stands now (`None`: unregistered), and the revision of
    /// its unwritten local change.
    fn ingest_record(&self, ingest_id: &str) -> (Option<IngestRecord>, Option<u64>) {
        let state = self.lock();
        (
            state.ingests.get(ingest_id).map(record_of),
            Self::dirty_rev(&state, ingest_id),
        )
    }
}

/// Whether an output stream is where it was (same SSRC, same last packet).
fn same_point(before: &OutputState, now: &OutputState) -> bool {
    before.ssrc == now.ssrc && before.last == now.last
}

/// Awaitable durable writes of a registry (see [`Registry::persist`]).
pub struct Persist<'a> {
    registry: &'a Registry,
}

impl Persist<'_> {
    /// Writes an ingest's registration as it stands now, or removes it if it is gone.
    pub async fn ingest(&self, ingest_id: &str) -> Result<(), RegistryError> {
        let inner = &self.registry.inner;
        let Some(store) = &inner.store else {
            return Ok(());
        };
        let _writer = inner.write_lock.lock().await;
        let (record, rev) = self.registry.ingest_record(ingest_id);
        match record {
            Some(record) => store.put_ingest(&record).await?,
            None => store.delete_ingest(ingest_id).await?,
        }
        self.registry.persisted(ingest_id, rev);
        Ok(())
    }

    /// Writes the global cap as it stands now.
    pub async fn caps(&self) -> Result<(), RegistryError> {
        let inner = &self.registry.inner;
        let Some(store) = &inner.store else {
            return Ok(());
        };
        let _writer = inner.write_lock.lock().await;
        let record = CapsRecord {
            max_publishers: self.registry.lock().caps.max_publishers as u64,
            configured: inner.configured_max_publishers as u64,
        };
        store.put_caps(&record).await?;
        Ok(())
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn limits_record(l: Limits) -> LimitsRecord {
    LimitsRecord {
        max_bitrate_bps: l.max_bitrate_bps,
        max_session_ms: l
            .max_session
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    }
}

fn limits_of(l: LimitsRecord) -> Limits {
    Limits {
        max_bitrate_bps: l.max_bitrate_bps,
        max_session: l.max_session_ms.map(Duration::from_millis),
    }
}

pub(super) fn record_of(e: &IngestEntry) -> IngestRecord {
    let s = &e.spec;
    IngestRecord {
        id: s.id.clone(),
        video_target: s.video_target,
        audio_target: s.audio_target,
        bearer_token_hash: e.token.clone(),
        clear_token: None,
        labels: s.labels.clone(),
        video_codecs: s
            .video_codecs
            .iter()
            .map(|c| c.encoding_name().to_owned())
            .collect(),
        audio_codecs: s
            .audio_codecs
            .iter()
            .map(|c| c.encoding_name().to_owned())
            .collect(),
        limits: limits_record(s.limits),
        redirect_url: s.redirect_url.clone(),
        simulcast_layer: s.simulcast_layer.clone(),
        replace_publisher: s.replace_publisher,
        created_at_ms: unix_ms(e.created_at),
        limits_override: e.limits_override.map(limits_record),
        layer_override: e.layer_override.clone().map(|rid| LayerChoice { rid }),
    }
}

/// Whether a stored registration would be taken back at a restart (fuzzing, checks).
pub(crate) fn record_is_valid(r: &IngestRecord) -> bool {
    entry_from(r).is_ok()
}

pub(super) fn entry_from(r: &IngestRecord) -> Result<IngestEntry, RegistryError> {
    let corrupt = |detail: String| {
        RegistryError::Store(StoreError::Corrupt {
            key: format!("ingests/{}", r.id),
            detail,
        })
    };
    super::validate_ingest_id(&r.id).map_err(|_| corrupt("invalid ingest id".into()))?;
    let video_codecs = r
        .video_codecs
        .iter()
        .map(|n| {
            VideoCodec::from_encoding_name(n)
                .ok_or_else(|| corrupt(format!("unknown video codec {n:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let audio_codecs = r
        .audio_codecs
        .iter()
        .map(|n| {
            AudioCodec::from_encoding_name(n)
                .ok_or_else(|| corrupt(format!("unknown audio codec {n:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if video_codecs.is_empty() || audio_codecs.is_empty() {
        return Err(corrupt("empty codec list".into()));
    }
    // A store hashes clear tokens of older records as it reads them; one that did not still
    // never puts the clear token in memory.
    let token = match &r.clear_token {
        Some(clear) => Some(TokenHash::new(clear)),
        None => r.bearer_token_hash.clone(),
    };
    Ok(IngestEntry {
        token,
        spec: IngestSpec {
            id: r.id.clone(),
            video_target: r.video_target,
            audio_target: r.audio_target,
            bearer_token: None,
            labels: r.labels.clone(),
            video_codecs,
            audio_codecs,
            limits: limits_of(r.limits),
            redirect_url: r.redirect_url.clone(),
            simulcast_layer: r.simulcast_layer.clone(),
            replace_publisher: r.replace_publisher,
        },
        created_at: UNIX_EPOCH + Duration::from_millis(r.created_at_ms),
        session: None,
        continuity: Arc::default(),
        limits_override: r.limits_override.map(limits_of),
        layer_override: r.layer_override.clone().map(|c| c.rid),
        dirty: None,
        rejections: Default::default(),
    })
}
