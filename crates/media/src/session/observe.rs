//! What a session learns from the packets it forwards: stream facts ([`crate::facts`]) from
//! the publisher's packets, and the clock mapping of the Sender Reports it makes for
//! publishers that send none ([`super::sr`]) from the output packets. Per packet this is a
//! few field updates: no allocation, no lock.

use std::time::{Instant, SystemTime};

use rtc::rtp;
use rtc::shared::marshal::Marshal;

use super::forward::Targets;
use super::sr::{SenderReports, WallClock};
use super::{Core, Event, Forward, Forwarded, Output};
use crate::codec::{MediaKind, OfferPlan};
use crate::facts::{AudioTracker, StreamFacts, VideoPacket, VideoTracker};

/// A session's fact trackers and Sender Report clocks, for the kinds it forwards.
pub(crate) struct Observers {
    video: Option<VideoTracker>,
    audio: Option<AudioTracker>,
    reports: SenderReports,
}

impl Observers {
    /// For the negotiated codecs of the kinds the ingest forwards, starting at `now`, when the
    /// wall clock read `wall_clock` (the NTP time of synthesized Sender Reports).
    pub(crate) fn new(
        plan: &OfferPlan,
        targets: Targets,
        now: Instant,
        wall_clock: SystemTime,
    ) -> Self {
        let video = plan.video.as_ref().filter(|_| targets.video.is_some());
        let audio = plan.audio.as_ref().filter(|_| targets.audio.is_some());
        Observers {
            video: video.map(|v| VideoTracker::new(v.codec, v.clock_rate)),
            audio: audio.map(|a| {
                AudioTracker::new(a.codec.encoding_name(), a.clock_rate, a.channels, &a.fmtp)
            }),
            reports: SenderReports::new(
                WallClock::new(now, wall_clock),
                video.map(|v| v.clock_rate),
                audio.map(|a| a.clock_rate),
            ),
        }
    }

    /// The facts so far.
    pub(crate) fn facts(&self) -> StreamFacts {
        StreamFacts {
            video: self.video.as_ref().map(VideoTracker::facts),
            audio: self.audio.as_ref().map(AudioTracker::facts),
        }
    }
}

impl Core {
    /// A publisher packet about to be forwarded (its own SSRC, sequence and timestamp).
    pub(super) fn observe_input(&mut self, kind: MediaKind, packet: &rtp::Packet, keyframe: bool) {
        match kind {
            MediaKind::Video => {
                let Some(tracker) = self.observers.video.as_mut() else {
                    return;
                };
                let warning = tracker.observe(VideoPacket {
                    ssrc: packet.header.ssrc,
                    seq: packet.header.sequence_number,
                    timestamp: packet.header.timestamp,
                    keyframe,
                    payload: &packet.payload,
                });
                if let Some(warning) = warning {
                    tracing::warn!(
                        ingest = %self.ingest,
                        warning = warning.as_str(),
                        "{}",
                        warning.detail()
                    );
                    self.out
                        .push_back(Output::Event(Event::Warning { kind, warning }));
                }
            }
            MediaKind::Audio => {
                if let Some(tracker) = self.observers.audio.as_mut() {
                    tracker.observe(&packet.payload);
                }
            }
        }
    }

    /// A packet that arrived at `now` and was sent to the consumer, with the output stream's
    /// header.
    pub(super) fn observe_output(&mut self, kind: MediaKind, packet: &rtp::Packet, now: Instant) {
        self.observers.reports.on_forwarded(
            kind,
            now,
            packet.header.ssrc,
            packet.header.timestamp,
            packet.payload.len(),
        );
    }

    /// The publisher sent a Sender Report (arrived at `now`): its own clock wins for a while.
    pub(super) fn observe_publisher_report(&mut self, now: Instant) {
        self.observers.reports.on_publisher_report(now);
    }

    /// Sends the Sender Reports that are due at `now` (housekeeping, a few times a second).
    pub(super) fn send_reports(&mut self, now: Instant) {
        for report in self.observers.reports.poll(now).into_iter().flatten() {
            let Some(to) = self.forwarder.rtcp_addr(report.kind) else {
                continue;
            };
            match report.to_rtcp().marshal() {
                Ok(bytes) => {
                    self.out.push_back(Output::Forward(Forward {
                        kind: report.kind,
                        to,
                        packet: Forwarded::Rtcp(bytes.freeze()),
                    }));
                    self.meter.sender_report_synthesized();
                }
                Err(err) => tracing::debug!(%err, "marshalling a Sender Report"),
            }
        }
    }

    /// The facts so far (stats).
    pub(super) fn stream_facts(&self) -> StreamFacts {
        self.observers.facts()
    }
}
