//! Plain data the registry stores and hands out: ingest specs, session views, counters, caps.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::SystemTime;

use uuid::Uuid;

use super::RegistryError;
use whipgate_media::codec::{self, AudioCodec, VideoCodec};
use whipgate_media::facts::StreamFacts;
pub use whipgate_media::session::{CountersSnapshot, Limits, SessionCounters};

/// Longest accepted ingest id.
pub const MAX_INGEST_ID_LEN: usize = 128;

/// Checks an ingest id: 1 to 128 characters of `[A-Za-z0-9._~-]` (URL-safe, no escaping).
pub fn validate_ingest_id(id: &str) -> Result<(), RegistryError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_INGEST_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'));
    if ok {
        Ok(())
    } else {
        // Bounded: the id comes from outside and ends up in messages.
        let shown = id.chars().take(MAX_INGEST_ID_LEN + 1).collect();
        Err(RegistryError::InvalidIngestId(shown))
    }
}

/// Gateway-wide caps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Maximum live publishers across all ingests.
    pub max_publishers: usize,
}

/// What an orchestrator registers: a stream id and where its media goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestSpec {
    /// URL-safe stream id.
    pub id: String,
    /// Video RTP destination; `None` drops video.
    pub video_target: Option<SocketAddr>,
    /// Audio RTP destination; `None` drops audio.
    pub audio_target: Option<SocketAddr>,
    /// Required WHIP bearer token, if any, in clear as RegisterIngest gives it. The registry
    /// keeps only its salted hash ([`crate::secret::TokenHash`]): specs it hands out (views,
    /// admissions) always have `None` here.
    pub bearer_token: Option<String>,
    /// Free-form labels for the orchestrator.
    pub labels: BTreeMap<String, String>,
    /// Accepted video codecs in preference order (never empty).
    pub video_codecs: Vec<VideoCodec>,
    /// Accepted audio codecs in preference order (never empty).
    pub audio_codecs: Vec<AudioCodec>,
    /// Per-ingest limits.
    pub limits: Limits,
    /// Publishes are redirected (307) to this absolute WHIP URL on another node.
    pub redirect_url: Option<String>,
    /// Simulcast layer (RID) to forward; `None`: the highest bitrate.
    pub simulcast_layer: Option<String>,
    /// A new publisher replaces a live one instead of getting 409.
    pub replace_publisher: bool,
}

impl IngestSpec {
    /// The SDP a consumer opens for this ingest.
    pub fn consumer_sdp(&self) -> String {
        codec::consumer_sdp(
            &self.id,
            self.video_target.map(|t| (t, self.video_codecs.as_slice())),
            self.audio_target.map(|t| (t, self.audio_codecs.as_slice())),
        )
    }

    /// The SDP for what a session forwards: the negotiated codec of each kind (by its SDP
    /// encoding name), or every accepted one while it is not known yet.
    pub fn negotiated_sdp(&self, video: Option<&str>, audio: Option<&str>) -> String {
        let video = video
            .and_then(VideoCodec::from_encoding_name)
            .map_or_else(|| self.video_codecs.clone(), |c| vec![c]);
        let audio = audio
            .and_then(AudioCodec::from_encoding_name)
            .map_or_else(|| self.audio_codecs.clone(), |c| vec![c]);
        codec::consumer_sdp(
            &self.id,
            self.video_target.map(|t| (t, video.as_slice())),
            self.audio_target.map(|t| (t, audio.as_slice())),
        )
    }

    /// Whether a live publisher must be closed to move from `self` to `other` because its
    /// media changes. A changed token closes it too; the registry compares tokens against
    /// their stored hashes itself.
    pub fn media_differs(&self, other: &IngestSpec) -> bool {
        self.video_target != other.video_target
            || self.audio_target != other.audio_target
            || self.video_codecs != other.video_codecs
            || self.audio_codecs != other.audio_codecs
    }
}

/// Connection progress of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// Answer sent, ICE/DTLS not yet up.
    Connecting,
    /// ICE and DTLS up.
    Connected,
}

/// A live session as seen from outside.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionView {
    /// Session id (the last segment of the WHIP Location).
    pub id: Uuid,
    /// Connection progress.
    pub state: SessionState,
    /// Publisher address, once ICE saw it.
    pub remote_addr: Option<SocketAddr>,
    /// Negotiated video codec name.
    pub video_codec: Option<String>,
    /// Negotiated audio codec name.
    pub audio_codec: Option<String>,
    /// When the publish was accepted.
    pub started_at: SystemTime,
    /// Media counters.
    pub counters: CountersSnapshot,
    /// Simulcast layers offered (empty without simulcast).
    pub simulcast_layers: Vec<String>,
    /// The simulcast layer being forwarded.
    pub forwarded_layer: Option<String>,
    /// SDP for what this session forwards (the negotiated codecs only).
    pub consumer_sdp: String,
    /// Resolution, frame rate, keyframe interval, audio channels (as of the last stats).
    pub facts: StreamFacts,
    /// How long connecting and the first keyframe took.
    pub timings: SessionTimings,
}

/// How fast a publisher got going: what a user feels as "the first second".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionTimings {
    /// From admission (the POST accepted) to ICE + DTLS connected; `None` while connecting.
    pub connect: Option<std::time::Duration>,
    /// From connected to the first keyframe forwarded to the consumer; `None` until then.
    pub first_keyframe: Option<std::time::Duration>,
}

/// An ingest as seen from outside (no token, no hash).
#[derive(Clone, Debug, PartialEq)]
pub struct IngestView {
    /// The registration (its `bearer_token` is always `None` here).
    pub spec: IngestSpec,
    /// Whether WHIP needs a bearer token.
    pub has_bearer_token: bool,
    /// SDP for consumers.
    pub consumer_sdp: String,
    /// When it was registered.
    pub created_at: SystemTime,
    /// The live publisher, if any.
    pub session: Option<SessionView>,
}

#[cfg(test)]
mod tests;
