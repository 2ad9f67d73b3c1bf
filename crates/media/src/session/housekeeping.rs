//! A session's periodic work: caps and timeouts, simulcast layer review, statistics.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::statistics::StatsSelector;
use rtc::statistics::report::RTCStatsReportEntry;

use super::{Core, EndCause, Event, Output, Progress};
use crate::codec::MediaKind;

impl Core {
    /// Re-ranks simulcast layers and asks the layer to switch to for a keyframe (at `now`).
    pub(super) fn review_layers(&mut self, p: &mut Progress, now: Instant) {
        if self.plan.simulcast_rids.is_empty() {
            return;
        }
        p.housekeeping_ticks += 1;
        if p.housekeeping_ticks.is_multiple_of(2) {
            self.layers.evaluate();
        }
        if let Some(ssrc) = self.layers.pending_switch() {
            self.send_pli(ssrc, now);
        }
    }

    /// Ends the session when it never connected, went quiet or outlived its cap (at `now`).
    pub(super) fn check_limits(&mut self, p: &mut Progress, now: Instant) {
        let idle = now.saturating_duration_since(p.last_media);
        let age = now.saturating_duration_since(p.started);
        if !p.connected && age > self.timers.connect_timeout {
            p.end = Some((EndCause::Inactivity, "never connected".into()));
        } else if p.connected && idle > self.timers.media_timeout {
            p.end = Some((
                EndCause::Inactivity,
                format!("no media for {}s", idle.as_secs()),
            ));
        }
        if let Some(max) = self.limits.max_session
            && age >= max
        {
            p.end = Some((
                EndCause::DurationCap,
                format!("session longer than {}s", max.as_secs()),
            ));
        }
    }

    /// Reports statistics for the `elapsed` time up to `now`, and applies the bitrate cap.
    pub(super) fn report_stats(&mut self, p: &mut Progress, elapsed: Duration, now: Instant) {
        let counters = &self.counters;
        let mut lost = 0i64;
        let mut jitter_ms = 0.0;
        let report = self.peer.get_stats(now, StatsSelector::None);
        for entry in report.iter() {
            if let RTCStatsReportEntry::InboundRtp(inbound) = entry {
                let received = &inbound.received_rtp_stream_stats;
                lost += received.packets_lost.max(0);
                if received.rtp_stream_stats.kind == RtpCodecKind::Video {
                    jitter_ms = jitter_millis(received.jitter, VIDEO_CLOCK_RATE);
                }
            }
        }
        let lost = u64::try_from(lost).unwrap_or(0);
        let previous_lost = counters.packets_lost.swap(lost, Ordering::Relaxed);
        self.meter.packets_lost(lost.saturating_sub(previous_lost));

        let snapshot = counters.snapshot();
        let video = snapshot.video_bytes.saturating_sub(p.bytes_at_last_stats.0);
        let audio = snapshot.audio_bytes.saturating_sub(p.bytes_at_last_stats.1);
        p.bytes_at_last_stats = (snapshot.video_bytes, snapshot.audio_bytes);
        let secs = elapsed.as_secs_f64().max(0.001);
        let bitrate = ((video + audio) as f64 * 8.0 / secs) as u64;
        for (kind, delta) in [(MediaKind::Video, video), (MediaKind::Audio, audio)] {
            self.meter.ingest_bytes_received(&self.ingest, kind, delta);
        }
        if let Some(max) = self.limits.max_bitrate_bps
            && bitrate > max
            && p.connected
        {
            p.end = Some((
                EndCause::BitrateCap,
                format!("{bitrate} bps above the cap of {max} bps"),
            ));
        }
        self.out.push_back(Output::Event(Event::Stats {
            facts: self.stream_facts(),
            bitrate_bps: bitrate,
            video_jitter_ms: jitter_ms,
        }));
    }
}

/// Every WebRTC video codec (H264, VP8, VP9, AV1, H265) runs its RTP clock at 90 kHz.
const VIDEO_CLOCK_RATE: f64 = 90_000.0;

/// Inter-arrival jitter in milliseconds. rtc 0.21 documents `jitter` in seconds but fills it
/// with the receiver report's value, which RFC 3550 §6.4.1 counts in RTP timestamp units.
fn jitter_millis(rtp_units: f64, clock_rate: f64) -> f64 {
    rtp_units * 1000.0 / clock_rate
}

#[cfg(test)]
mod tests;
