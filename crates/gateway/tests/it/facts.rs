//! Stream facts and synthesized Sender Reports end to end: a real webrtc-rs publisher that
//! sends real H.264 parameter sets and slice headers (x264's) and, as OBS, no RTCP at all.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use rtc::rtcp::sender_report::SenderReport;
use rtc::shared::marshal::Unmarshal;
use tokio::net::UdpSocket;
use whipgate_proto::pb;
use whipgate_proto::pb::EventKind as K;
use whipgate_proto::pb::event::Payload;

use crate::harness::{PATIENCE, TestGateway, eventually};
use crate::publisher::{Frame, Publisher, Video};

/// x264, Constrained Baseline, 1280x720, 25 fps (VUI timing), and its PPS.
const SPS_720P: &str = "6742c01fd9005005bb011000000300100000030320f1832480";
const PPS: [u8; 4] = [0x68, 0xcb, 0x83, 0xcb];
/// Slice headers as x264 writes them: IDR (I), P, and a non-reference B slice.
const IDR: [u8; 3] = [0x65, 0x88, 0x84];
const P_SLICE: [u8; 3] = [0x41, 0x9a, 0x23];
const B_SLICE: [u8; 3] = [0x01, 0x9e, 0x62];
/// 25 fps: 40 ms, 3600 ticks of the 90 kHz clock.
const FRAME: Duration = Duration::from_millis(40);
const FRAME_TICKS: u32 = 3600;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_default())
        .collect()
}

/// H.264 at 25 fps with a keyframe (STAP-A of SPS and PPS, then the IDR) every second. With
/// `b_frames`, frames go in decode order P B B with presentation timestamps reordered.
fn h264(b_frames: bool) -> impl FnMut(u32) -> Frame + Send + 'static {
    let sps = hex(SPS_720P);
    move |n| {
        let slice = |header: &[u8]| [header, &[0xab; 300][..]].concat();
        let pts = match (b_frames, n % 3) {
            (false, _) => n,
            (true, 0) => n + 2,
            (true, _) => n - 1,
        };
        let timestamp = 90_000 + pts * FRAME_TICKS;
        let packets = if n % 24 == 0 {
            let mut stap = vec![0x78];
            for nal in [&sps[..], &PPS[..]] {
                stap.extend_from_slice(&(nal.len() as u16).to_be_bytes());
                stap.extend_from_slice(nal);
            }
            vec![stap, slice(&IDR)]
        } else if b_frames && n % 3 != 0 {
            vec![slice(&B_SLICE)]
        } else {
            vec![slice(&P_SLICE)]
        };
        Frame { timestamp, packets }
    }
}

/// An RTP port and its RTCP port (RTP + 1), as a consumer opens them.
async fn rtp_rtcp_pair() -> Result<(UdpSocket, UdpSocket)> {
    for _ in 0..50 {
        let rtp = UdpSocket::bind("127.0.0.1:0").await?;
        let Some(next) = rtp.local_addr()?.port().checked_add(1) else {
            continue;
        };
        if let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", next)).await {
            return Ok((rtp, rtcp));
        }
    }
    bail!("no two consecutive free UDP ports")
}

/// What a consumer port saw: RTP arrivals (wall clock, SSRC, timestamp) and Sender Reports.
#[derive(Default)]
struct Seen {
    rtp: Vec<(SystemTime, u32, u32)>,
    reports: Vec<SenderReport>,
}

/// Records what arrives on an RTP/RTCP port pair until the test ends.
fn record(rtp: UdpSocket, rtcp: UdpSocket) -> (Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let out = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        let (mut a, mut b) = ([0u8; 2048], [0u8; 2048]);
        loop {
            tokio::select! {
                Ok((n, _)) = rtp.recv_from(&mut a) => if n >= 12 {
                    let ssrc = u32::from_be_bytes([a[8], a[9], a[10], a[11]]);
                    let ts = u32::from_be_bytes([a[4], a[5], a[6], a[7]]);
                    out.lock().unwrap_or_else(PoisonError::into_inner).rtp.push((SystemTime::now(), ssrc, ts));
                },
                Ok((n, _)) = rtcp.recv_from(&mut b) => {
                    if let Ok(report) = SenderReport::unmarshal(&mut &b[..n]) {
                        out.lock().unwrap_or_else(PoisonError::into_inner).reports.push(report);
                    }
                }
            }
        }
    });
    (seen, task)
}

/// Seconds since the Unix epoch of an NTP timestamp.
fn ntp_to_unix(ntp: u64) -> f64 {
    (ntp >> 32) as f64 - 2_208_988_800.0 + (ntp & 0xffff_ffff) as f64 / 4_294_967_296.0
}

/// How far (in ms) a report's RTP time is from what the consumer's own arrivals say the
/// stream's RTP clock read at the report's NTP time (least-delayed packet of the 2 s before).
fn report_error_ms(seen: &Seen, report: &SenderReport, clock_rate: f64) -> Option<f64> {
    let at = ntp_to_unix(report.ntp_time);
    let unix = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64()
    };
    let window = seen
        .rtp
        .iter()
        .filter(|(t, ssrc, _)| *ssrc == report.ssrc && (at - 2.0..=at).contains(&unix(*t)));
    // Relative to the report: how late each packet arrived for its timestamp.
    let lateness = |(t, _, ts): &(SystemTime, u32, u32)| {
        let ticks = f64::from(ts.wrapping_sub(report.rtp_time) as i32);
        (unix(*t) - at) - ticks / clock_rate
    };
    let least = window.map(lateness).reduce(f64::min)?;
    Some(least * 1000.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_without_sender_reports_gets_reports_on_one_clock() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    let (video_rtp, video_rtcp) = rtp_rtcp_pair().await?;
    let (audio_rtp, audio_rtcp) = rtp_rtcp_pair().await?;
    let addr = |s: &UdpSocket| s.local_addr().map(|a: SocketAddr| a.to_string());
    gw.register_with(pb::RegisterIngestRequest {
        ingest_id: "obs".into(),
        video_target: addr(&video_rtp)?,
        audio_target: addr(&audio_rtp)?,
        ..Default::default()
    })
    .await?;
    let (video, _video_task) = record(video_rtp, video_rtcp);
    let (audio, _audio_task) = record(audio_rtp, audio_rtcp);
    let publisher = publish_h264(&gw, "obs", false).await?;

    let enough = |seen: &Arc<Mutex<Seen>>| {
        seen.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .reports
            .len()
            >= 3
    };
    eventually(
        Duration::from_secs(15),
        "three reports on each RTCP port",
        || {
            let done = enough(&video) && enough(&audio);
            async move { done.then_some(()) }
        },
    )
    .await?;
    publisher.stop_media();
    let synthesized = gw.registry.metrics().sender_reports_synthesized.get();
    assert!(
        synthesized >= 6,
        "{synthesized} reports made by the gateway"
    );
    let take = |seen: &Arc<Mutex<Seen>>| {
        std::mem::take(&mut *seen.lock().unwrap_or_else(PoisonError::into_inner))
    };
    let (video, audio) = (take(&video), take(&audio));
    for (seen, what) in [(&video, "video"), (&audio, "audio")] {
        let forwarded_ssrc = seen.rtp.last().context("no RTP")?.1;
        for report in &seen.reports {
            assert_eq!(
                report.ssrc, forwarded_ssrc,
                "{what} report names the output SSRC"
            );
            assert!(report.packet_count > 0 && report.octet_count > 0);
        }
    }
    // Each report maps its NTP time to the RTP time the stream had then, on the wall clock
    // both streams share: the consumer aligns audio and video to within a few ms.
    let last_video = video.reports.last().context("video report")?;
    let last_audio = audio.reports.last().context("audio report")?;
    let video_error = report_error_ms(&video, last_video, 90_000.0).context("video window")?;
    let audio_error = report_error_ms(&audio, last_audio, 48_000.0).context("audio window")?;
    assert!(video_error.abs() < 40.0, "video off by {video_error:.1} ms");
    assert!(audio_error.abs() < 40.0, "audio off by {audio_error:.1} ms");
    assert!(
        (video_error - audio_error).abs() < 25.0,
        "audio and video disagree: {video_error:.1} vs {audio_error:.1} ms"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_sender_reports_are_forwarded_and_none_are_made() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    let (video_rtp, video_rtcp) = rtp_rtcp_pair().await?;
    gw.register_with(pb::RegisterIngestRequest {
        ingest_id: "browser".into(),
        video_target: video_rtp.local_addr()?.to_string(),
        ..Default::default()
    })
    .await?;
    let (video, _task) = record(video_rtp, video_rtcp);
    // The usual test publisher sends Sender Reports, as browsers do.
    let _published = gw.publish("browser", Some(Video::H264), false).await?;
    // Past the grace period, with the publisher's reports arriving.
    eventually(Duration::from_secs(15), "five forwarded reports", || {
        let done = video
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .reports
            .len()
            >= 5;
        async move { done.then_some(()) }
    })
    .await?;
    assert_eq!(gw.registry.metrics().sender_reports_synthesized.get(), 0);
    gw.stop().await
}

/// Publishes H.264 (x264 headers) + audio without RTCP reports.
async fn publish_h264(gw: &TestGateway, ingest: &str, b_frames: bool) -> Result<Publisher> {
    let (mut publisher, offer) = Publisher::without_sender_reports(Some(Video::H264), true).await?;
    let response = gw.post_offer(ingest, &offer, None).await?;
    if response.status() != 201 {
        bail!("publish answered {}", response.status());
    }
    publisher.set_answer(response.text().await?).await?;
    publisher.connected(PATIENCE).await?;
    publisher.start_media_from(FRAME, h264(b_frames)).await?;
    Ok(publisher)
}

async fn watch(gw: &TestGateway, ingest: &str) -> Result<tonic::Streaming<pb::Event>> {
    let request = pb::WatchEventsRequest {
        ingest_ids: vec![ingest.to_owned()],
        kinds: vec![K::SessionStats as i32, K::StreamWarning as i32],
        ..Default::default()
    };
    Ok(gw.grpc.clone().watch_events(request).await?.into_inner())
}

async fn next_event(events: &mut tonic::Streaming<pb::Event>) -> Result<Payload> {
    let event = tokio::time::timeout(PATIENCE, events.message()).await;
    event
        .context("no event in time")??
        .context("event stream ended")?
        .payload
        .context("event without payload")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_facts_show_in_stats_events_and_get_ingest() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    let mut events = watch(&gw, "facts").await?;
    let (video_rtp, video_rtcp) = rtp_rtcp_pair().await?;
    let (audio_rtp, audio_rtcp) = rtp_rtcp_pair().await?;
    gw.register_with(pb::RegisterIngestRequest {
        ingest_id: "facts".into(),
        video_target: video_rtp.local_addr()?.to_string(),
        audio_target: audio_rtp.local_addr()?.to_string(),
        ..Default::default()
    })
    .await?;
    let _sinks = (record(video_rtp, video_rtcp), record(audio_rtp, audio_rtcp));
    let _publisher = publish_h264(&gw, "facts", false).await?;
    // Stats until the frame rate and keyframe interval are measured (two keyframes).
    let facts = loop {
        match next_event(&mut events).await? {
            Payload::SessionStats(stats) => {
                let facts = stats.facts.context("stats without facts")?;
                let ready = facts
                    .video
                    .as_ref()
                    .is_some_and(|v| v.fps > 0.0 && v.keyframe_interval_millis > 0);
                if ready {
                    break facts;
                }
            }
            Payload::StreamWarning(w) => bail!("unexpected warning: {}", w.detail),
            _ => {}
        }
    };
    let video = facts.video.context("video facts")?;
    assert_eq!((video.width, video.height), (1280, 720));
    assert!((video.fps - 25.0).abs() < 0.5, "fps {}", video.fps);
    assert_eq!(video.declared_fps, 25.0);
    assert_eq!(
        video.keyframe_interval_millis, 960,
        "every 24 frames at 25 fps"
    );
    assert_eq!((video.profile_idc, video.level_idc), (66, 31));
    assert!(!video.b_frames);
    let audio = facts.audio.context("audio facts")?;
    assert_eq!((audio.sample_rate, audio.channels), (48_000, 2));
    // GetIngest's live session has them too.
    let session = gw.session("facts").await?.context("live session")?;
    let live = session
        .facts
        .context("session facts")?
        .video
        .context("video")?;
    assert_eq!((live.width, live.height), (1280, 720));
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_frames_produce_one_warning_event() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    let mut events = watch(&gw, "bframes").await?;
    let (video_rtp, video_rtcp) = rtp_rtcp_pair().await?;
    gw.register_with(pb::RegisterIngestRequest {
        ingest_id: "bframes".into(),
        video_target: video_rtp.local_addr()?.to_string(),
        ..Default::default()
    })
    .await?;
    let _sink = record(video_rtp, video_rtcp);
    let _publisher = publish_h264(&gw, "bframes", true).await?;
    let warning = loop {
        if let Payload::StreamWarning(warning) = next_event(&mut events).await? {
            break warning;
        }
    };
    assert_eq!(warning.warning, pb::StreamWarningKind::BFrames as i32);
    assert_eq!(warning.kind, pb::MediaKind::Video as i32);
    assert!(warning.detail.contains("B-frames"), "{}", warning.detail);
    // Later stats say so too, and no second warning comes.
    let mut stats_seen = 0;
    while stats_seen < 3 {
        match next_event(&mut events).await? {
            Payload::SessionStats(stats) => {
                let video = stats.facts.and_then(|f| f.video).context("video facts")?;
                assert!(video.b_frames);
                stats_seen += 1;
            }
            Payload::StreamWarning(_) => bail!("a second warning"),
            _ => {}
        }
    }
    gw.stop().await
}
