//! What a session tells its owner about itself ([`Output::Event`]): connected, a track
//! started, simulcast state, the first keyframe, a stream warning, statistics. The gateway's
//! driver records each in its registry as it polls it, in order with the session's other
//! output: a `Connected` comes before the DTLS flight that completes the publisher's
//! handshake, so nobody sees the publisher connected before the registry does.
//!
//! [`Output::Event`]: super::Output::Event

use std::net::SocketAddr;
use std::time::Duration;

use crate::codec::MediaKind;
use crate::facts::{StreamFacts, StreamWarning};

/// One change of a live session.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// ICE and DTLS are done; the publisher's address.
    Connected {
        /// Where the publisher's datagrams come from.
        remote: Option<SocketAddr>,
    },
    /// A media stream's first packet (per SSRC for video: each simulcast layer).
    TrackStarted {
        /// Video or audio.
        kind: MediaKind,
        /// The negotiated codec's encoding name.
        codec: &'static str,
        /// The publisher's SSRC.
        ssrc: u32,
        /// The simulcast RID, if any.
        rid: Option<String>,
    },
    /// The simulcast layers offered and the one forwarded now.
    Simulcast {
        /// Every RID offered.
        layers: Vec<String>,
        /// The one forwarded.
        forwarded: Option<String>,
    },
    /// The first keyframe reached the consumer, `after` the session connected.
    FirstKeyframe {
        /// Since DTLS connected.
        after: Duration,
    },
    /// Something about the stream a consumer should know (B-frames, ...).
    Warning {
        /// The stream's kind.
        kind: MediaKind,
        /// What.
        warning: StreamWarning,
    },
    /// Periodic statistics, with the stream facts as they stand.
    Stats {
        /// Resolution, frame rate, ... so far.
        facts: StreamFacts,
        /// Both kinds, over the last statistics interval.
        bitrate_bps: u64,
        /// The video stream's inter-arrival jitter.
        video_jitter_ms: f64,
    },
}
