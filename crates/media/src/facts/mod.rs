//! Stream facts: what a live session's media is, read from the RTP it carries (no decoding,
//! no webrtc-rs): video resolution, profile and level, declared and measured frame rate,
//! keyframe interval, B-frames; audio channels and sample rate.
//!
//! [`VideoTracker`] and [`AudioTracker`] are fed every forwarded packet by the session; they
//! keep fixed-size state and allocate nothing per packet (an H.264 SPS is parsed again only
//! when its bytes change). The session copies [`StreamFacts`] into its stats events.
//!
//! B-frames: two signals, either one is enough.
//! - A coded H.264 slice whose header says B (`slice_type` 1 or 6), in a stream whose SPS
//!   allows B slices (not Baseline). Definitive, and seen on the first B frame.
//! - Presentation order that is not transmission order: two packets with consecutive
//!   sequence numbers whose RTP timestamps go backwards, seen twice. This is what actually
//!   hurts a WebRTC receiver (frames are reordered, so the jitter buffer must hold them) and
//!   it also catches H.265 B-frames. Network reordering or loss cannot fake it, since only
//!   consecutive sequence numbers are compared.
//!
//! The SPS `max_num_reorder_frames` only declares what the encoder may do; it is reported
//! with the facts but not warned about.

mod clock;
mod h264;
mod headers;
#[cfg(test)]
mod tests;

use std::time::Duration;

use crate::codec::VideoCodec;
use clock::{FrameClock, KeyframeClock, ReorderDetector};
use h264::H264Scanner;

/// What the video of a session is. Unknown values are `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct VideoFacts {
    /// Width and height in pixels (after cropping).
    pub resolution: Option<(u32, u32)>,
    /// Frames per second measured from the RTP timestamps of recent frames.
    pub fps: Option<f64>,
    /// Frames per second the H.264 SPS declares (VUI timing information).
    pub declared_fps: Option<f64>,
    /// Time between the last two keyframes, from their RTP timestamps.
    pub keyframe_interval: Option<Duration>,
    /// H.264 / H.265 `profile_idc`.
    pub profile_idc: Option<u8>,
    /// H.264 / H.265 `level_idc`.
    pub level_idc: Option<u8>,
    /// Whether the stream has B-frames (frames out of presentation order).
    pub b_frames: bool,
}

/// What the audio of a session is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AudioFacts {
    /// Samples per second of the decoded audio (the RTP clock rate for Opus).
    pub sample_rate: u32,
    /// Channels: the Opus TOC byte of recent packets, else what the SDP negotiated.
    pub channels: u8,
}

/// Facts of a live session's forwarded streams.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StreamFacts {
    /// The forwarded video stream, if any.
    pub video: Option<VideoFacts>,
    /// The forwarded audio stream, if any.
    pub audio: Option<AudioFacts>,
}

/// Something worth telling the operator about a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamWarning {
    /// The video has B-frames: WebRTC receivers and many consumers handle them badly.
    BFrames {
        /// How they were found.
        signal: BFrameSignal,
    },
}

/// How B-frames were detected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BFrameSignal {
    /// An H.264 slice header said B.
    SliceType,
    /// RTP timestamps went backwards between consecutive packets.
    Reordering,
}

impl StreamWarning {
    /// Stable name (event payloads, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            StreamWarning::BFrames { .. } => "b_frames",
        }
    }

    /// One line for humans: what was seen and what to do.
    pub fn detail(self) -> &'static str {
        match self {
            StreamWarning::BFrames {
                signal: BFrameSignal::SliceType,
            } => {
                "the H.264 stream has B-frames (B slices), which WebRTC carries badly: \
                 turn B-frames off in the encoder (OBS: set B-frames to 0)"
            }
            StreamWarning::BFrames {
                signal: BFrameSignal::Reordering,
            } => {
                "the video has B-frames (frames arrive out of presentation order), which \
                 WebRTC carries badly: turn B-frames off in the encoder (OBS: set B-frames to 0)"
            }
        }
    }
}

/// One forwarded video packet, as the facts need it.
#[derive(Clone, Copy, Debug)]
pub struct VideoPacket<'a> {
    /// Publisher SSRC (a change, e.g. a simulcast switch, restarts the measurements).
    pub ssrc: u32,
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Whether the packet starts a keyframe.
    pub keyframe: bool,
    /// RTP payload.
    pub payload: &'a [u8],
}

/// H.264 Baseline `profile_idc`: no B slices.
const BASELINE: u8 = 66;

/// What an SPS says (H.264 or H.265).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SpsFacts {
    pub width: u32,
    pub height: u32,
    pub profile_idc: u8,
    pub level_idc: u8,
    pub declared_fps: Option<f64>,
    pub max_num_reorder_frames: Option<u32>,
}

/// Video facts of one session, updated per packet.
pub struct VideoTracker {
    codec: VideoCodec,
    clock_rate: u32,
    ssrc: Option<u32>,
    h264: Box<H264Scanner>,
    facts: VideoFacts,
    frames: FrameClock,
    keyframes: KeyframeClock,
    reorder: ReorderDetector,
    warned: bool,
}

impl VideoTracker {
    /// A tracker for a negotiated codec and RTP clock rate (90 kHz for every video codec).
    pub fn new(codec: VideoCodec, clock_rate: u32) -> Self {
        VideoTracker {
            codec,
            clock_rate: clock_rate.max(1),
            ssrc: None,
            h264: Box::default(),
            facts: VideoFacts::default(),
            frames: FrameClock::default(),
            keyframes: KeyframeClock::default(),
            reorder: ReorderDetector::default(),
            warned: false,
        }
    }

    /// Takes one forwarded packet; returns a warning the first time B-frames show.
    pub fn observe(&mut self, packet: VideoPacket<'_>) -> Option<StreamWarning> {
        if self.ssrc != Some(packet.ssrc) {
            // A new layer or publisher SSRC: its timestamps have their own origin.
            self.ssrc = Some(packet.ssrc);
            self.frames = FrameClock::default();
            self.keyframes = KeyframeClock::default();
            self.reorder = ReorderDetector::default();
        }
        let ext = self.frames.observe(packet.seq, packet.timestamp);
        if packet.keyframe {
            self.keyframes.observe(ext);
        }
        let mut signal = self
            .reorder
            .observe(packet.seq, packet.timestamp)
            .then_some(BFrameSignal::Reordering);
        match self.codec {
            VideoCodec::H264 => {
                let scan = self.h264.scan(packet.payload, packet.seq);
                if let Some(sps) = scan.sps {
                    self.apply_sps(sps);
                }
                // Only behind an SPS that allows B slices (not Baseline): without one the
                // slice cannot be decoded anyway, and bytes that merely look like a B slice
                // header (a synthetic or damaged stream) must not warn.
                let b_allowed = self.facts.profile_idc.is_some_and(|p| p != BASELINE);
                if scan.b_slice && b_allowed {
                    signal = Some(BFrameSignal::SliceType);
                }
            }
            VideoCodec::H265 => {
                if let Some(sps) = headers::h265_sps(packet.payload) {
                    self.apply_sps(sps);
                }
            }
            VideoCodec::Vp8 if packet.keyframe => {
                self.apply_size(headers::vp8_keyframe_size(packet.payload));
            }
            VideoCodec::Vp9 => self.apply_size(headers::vp9_size(packet.payload)),
            VideoCodec::Av1 if packet.keyframe => {
                self.apply_size(headers::av1_size(packet.payload));
            }
            VideoCodec::Vp8 | VideoCodec::Av1 => {}
        }
        let signal = signal?;
        self.facts.b_frames = true;
        if self.warned {
            return None;
        }
        self.warned = true;
        Some(StreamWarning::BFrames { signal })
    }

    /// The facts so far.
    pub fn facts(&self) -> VideoFacts {
        VideoFacts {
            fps: self.frames.fps(self.clock_rate),
            keyframe_interval: self.keyframes.interval(self.clock_rate),
            ..self.facts
        }
    }

    fn apply_sps(&mut self, sps: SpsFacts) {
        self.facts.resolution = Some((sps.width, sps.height));
        self.facts.profile_idc = Some(sps.profile_idc);
        self.facts.level_idc = Some(sps.level_idc);
        self.facts.declared_fps = sps.declared_fps;
    }

    fn apply_size(&mut self, size: Option<headers::Size>) {
        if let Some(size) = size.filter(|s| s.width > 0 && s.height > 0) {
            self.facts.resolution = Some((size.width, size.height));
        }
    }
}

/// Audio facts of one session.
#[derive(Clone, Copy, Debug)]
pub struct AudioTracker {
    facts: AudioFacts,
    opus: bool,
}

impl AudioTracker {
    /// From the negotiated codec: its clock rate, rtpmap channels and fmtp. For Opus the
    /// rtpmap always says 2 (RFC 7587); `stereo=1` / `sprop-stereo=1` say whether the
    /// stream is stereo until the packets themselves tell.
    pub fn new(encoding_name: &str, clock_rate: u32, channels: u16, fmtp: &str) -> Self {
        let opus = encoding_name.eq_ignore_ascii_case("opus");
        let channels = if opus {
            let stereo = fmtp.split(';').map(str::trim).any(|p| {
                p.eq_ignore_ascii_case("stereo=1") || p.eq_ignore_ascii_case("sprop-stereo=1")
            });
            if stereo { 2 } else { 1 }
        } else {
            u8::try_from(channels.max(1)).unwrap_or(u8::MAX)
        };
        AudioTracker {
            facts: AudioFacts {
                sample_rate: clock_rate,
                channels,
            },
            opus,
        }
    }

    /// Takes one forwarded packet: the Opus TOC byte's `s` bit says stereo (RFC 6716 §3.1).
    pub fn observe(&mut self, payload: &[u8]) {
        if let (true, Some(&toc)) = (self.opus, payload.first()) {
            self.facts.channels = if toc & 0x04 != 0 { 2 } else { 1 };
        }
    }

    /// The facts so far.
    pub fn facts(&self) -> AudioFacts {
        self.facts
    }
}
