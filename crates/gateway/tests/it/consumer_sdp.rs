//! The consumer SDP decodes whatever the publisher negotiated: a default registration (H264
//! only) with an H264 publisher, and a multi-codec registration with a VP8 publisher whose
//! track-started event carries an SDP with only VP8. FFmpeg (when installed) decodes real
//! encoded clips from the SDP the orchestrator holds.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use whipgate_proto::pb;
use whipgate_proto::pb::event::Payload;

use crate::harness::{PATIENCE, TestGateway};
use crate::publisher::{Publisher, Video, packet};

/// FFmpeg, or `None` with a loud message (the FFmpeg half of these tests is then skipped).
fn ffmpeg() -> Option<&'static str> {
    let found = std::process::Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!(
            "\n*** SKIPPING the FFmpeg decode: ffmpeg is not installed (apt-get install ffmpeg; \
             scripts/test installs it) ***\n"
        );
    }
    found.then_some("ffmpeg")
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("whipgate-{name}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Encodes 2 s of a test pattern (160x120, 30 fps, a keyframe every 15 frames) with FFmpeg and
/// returns its frames: H264 as Annex B access units, VP8 as IVF frames.
async fn encode_clip(ffmpeg: &str, dir: &Path, video: Video) -> Result<Vec<Vec<u8>>> {
    let (codec, format, file): (&[&str], _, _) = match video {
        Video::H264 => (
            &[
                "-c:v",
                "libx264",
                "-profile:v",
                "baseline",
                "-bsf:v",
                "h264_mp4toannexb",
            ],
            "h264",
            dir.join("clip.h264"),
        ),
        Video::Vp8 => (
            &["-c:v", "libvpx", "-b:v", "300k"],
            "ivf",
            dir.join("clip.ivf"),
        ),
        Video::Vp9 => bail!("no VP9 clip"),
    };
    let status = tokio::process::Command::new(ffmpeg)
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc=size=160x120:rate=30")
        .args(["-t", "2", "-g", "15", "-pix_fmt", "yuv420p"])
        .args(codec)
        .args(["-f", format])
        .arg(&file)
        .kill_on_drop(true)
        .status();
    let status = tokio::time::timeout(Duration::from_secs(60), status).await??;
    if !status.success() {
        bail!("ffmpeg could not encode the {video:?} clip");
    }
    let bytes = std::fs::read(&file)?;
    match video {
        Video::H264 => Ok(h264_access_units(&bytes)),
        _ => ivf_frames(&bytes),
    }
}

/// NAL units of an Annex B stream, grouped into access units (a new one at each slice NAL).
fn h264_access_units(stream: &[u8]) -> Vec<Vec<u8>> {
    let mut nals = Vec::new();
    let mut i = 0;
    let mut start = None;
    while i + 3 <= stream.len() {
        if stream[i..i + 3] == [0, 0, 1] {
            if let Some(s) = start {
                let end = if i > 0 && stream[i - 1] == 0 {
                    i - 1
                } else {
                    i
                };
                nals.push(stream[s..end].to_vec());
            }
            i += 3;
            start = Some(i);
        } else {
            i += 1;
        }
    }
    if let Some(s) = start {
        nals.push(stream[s..].to_vec());
    }
    // Each access unit: parameter sets and SEI joined with the slice that follows them.
    let mut units: Vec<Vec<u8>> = Vec::new();
    let mut pending: Vec<Vec<u8>> = Vec::new();
    for nal in nals.into_iter().filter(|n| !n.is_empty()) {
        let slice = matches!(nal[0] & 0x1f, 1 | 5);
        pending.push(nal);
        if slice {
            units.push(encode_units(&std::mem::take(&mut pending)));
        }
    }
    units
}

/// Joins NAL units with a 4-byte length prefix (split again by `h264_packets`).
fn encode_units(nals: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for nal in nals {
        out.extend_from_slice(&u32::try_from(nal.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(nal);
    }
    out
}

/// RTP payloads of one H264 access unit (RFC 6184): single NAL units, FU-A above 1000 bytes.
fn h264_packets(unit: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = unit;
    while rest.len() >= 4 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let nal = &rest[4..(4 + len).min(rest.len())];
        rest = &rest[(4 + len).min(rest.len())..];
        if nal.len() <= 1000 {
            out.push(nal.to_vec());
            continue;
        }
        let (header, body) = (nal[0], &nal[1..]);
        let chunks: Vec<&[u8]> = body.chunks(1000).collect();
        for (n, chunk) in chunks.iter().enumerate() {
            let mut fu_header = header & 0x1f;
            if n == 0 {
                fu_header |= 0x80;
            }
            if n + 1 == chunks.len() {
                fu_header |= 0x40;
            }
            out.push([&[(header & 0xe0) | 28, fu_header][..], chunk].concat());
        }
    }
    out
}

/// The frames of an IVF file.
fn ivf_frames(file: &[u8]) -> Result<Vec<Vec<u8>>> {
    if file.get(..4) != Some(b"DKIF") {
        bail!("not an IVF file");
    }
    let mut at = usize::from(u16::from_le_bytes([file[6], file[7]]));
    let mut frames = Vec::new();
    while at + 12 <= file.len() {
        let size =
            u32::from_le_bytes([file[at], file[at + 1], file[at + 2], file[at + 3]]) as usize;
        let frame = file.get(at + 12..at + 12 + size).context("truncated IVF")?;
        frames.push(frame.to_vec());
        at += 12 + size;
    }
    Ok(frames)
}

/// RTP payloads of one VP8 frame (RFC 7741): a one-byte descriptor, S set on the first.
fn vp8_packets(frame: &[u8]) -> Vec<Vec<u8>> {
    frame
        .chunks(1000)
        .enumerate()
        .map(|(n, chunk)| [&[if n == 0 { 0x10 } else { 0x00 }][..], chunk].concat())
        .collect()
}

/// Sends the clip in a loop at 30 fps until the task is aborted.
fn send_clip(
    track: Arc<TrackLocalStaticRTP>,
    pt: u8,
    ssrc: u32,
    video: Video,
    frames: Vec<Vec<u8>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(33));
        let (mut seq, mut n) = (0u32, 0u32);
        loop {
            for frame in &frames {
                tick.tick().await;
                let payloads = match video {
                    Video::H264 => h264_packets(frame),
                    _ => vp8_packets(frame),
                };
                let last = payloads.len().saturating_sub(1);
                for (i, payload) in payloads.into_iter().enumerate() {
                    let p = packet(pt, ssrc, seq, n.wrapping_mul(3000), i == last, payload);
                    let _ = track.write_rtp(p).await;
                    seq = seq.wrapping_add(1);
                }
                n = n.wrapping_add(1);
            }
        }
    })
}

/// Two consecutive free UDP ports, the first even (FFmpeg binds RTP and RTP + 1).
fn free_rtp_port() -> Result<u16> {
    for _ in 0..200 {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let port = probe.local_addr()?.port();
        if port % 2 == 0 && std::net::UdpSocket::bind(("127.0.0.1", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free RTP port pair")
}

/// Starts FFmpeg on `sdp`; it exits once it decoded 10 video frames.
fn start_ffmpeg(ffmpeg: &str, dir: &Path, sdp: &str) -> Result<tokio::process::Child> {
    let path = dir.join("consumer.sdp");
    std::fs::write(&path, sdp)?;
    Ok(tokio::process::Command::new(ffmpeg)
        .args([
            "-v",
            "error",
            "-nostdin",
            "-protocol_whitelist",
            "file,udp,rtp",
            "-i",
        ])
        .arg(&path)
        .args(["-map", "0:v", "-frames:v", "10", "-f", "framecrc", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?)
}

/// Waits for FFmpeg (killed after 30 s) and returns how many video frames it decoded.
async fn decoded_frames(child: tokio::process::Child) -> Result<usize> {
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .context("ffmpeg did not decode 10 frames in 30 s")??;
    let text = String::from_utf8_lossy(&output.stdout);
    let frames = text.lines().filter(|l| !l.starts_with('#')).count();
    if frames == 0 {
        bail!(
            "ffmpeg decoded nothing: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(frames)
}

async fn track_started_sdp(events: &mut tonic::Streaming<pb::Event>) -> Result<String> {
    loop {
        let event = tokio::time::timeout(PATIENCE, events.message())
            .await
            .context("no track_started in time")??
            .context("event stream ended")?;
        if let Some(Payload::TrackStarted(t)) = event.payload
            && t.kind == pb::MediaKind::Video as i32
        {
            return Ok(t.consumer_sdp);
        }
    }
}

/// A connected publisher that sends nothing yet (the test sends its clip).
async fn connect(gw: &TestGateway, ingest_id: &str, video: Video) -> Result<Publisher> {
    let (mut publisher, offer) = Publisher::new(Some(video), false).await?;
    let response = gw.post_offer(ingest_id, &offer, None).await?;
    if response.status() != 201 {
        bail!("publish answered {}", response.status());
    }
    publisher.set_answer(response.text().await?).await?;
    publisher.connected(PATIENCE).await?;
    Ok(publisher)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_registration_decodes_an_h264_publisher_and_refuses_vp8_only() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    let port = free_rtp_port()?;
    let ingest = gw
        .register_with(pb::RegisterIngestRequest {
            ingest_id: "default".into(),
            video_target: format!("127.0.0.1:{port}"),
            ..Default::default()
        })
        .await?;
    assert_eq!(ingest.video_codecs, [pb::VideoCodec::H264 as i32]);
    assert!(
        ingest
            .consumer_sdp
            .contains(&format!("m=video {port} RTP/AVP 96\r\n"))
    );
    assert!(
        !ingest.consumer_sdp.contains("i="),
        "{}",
        ingest.consumer_sdp
    );

    // VP8-only publishers (Firefox ESR without OpenH264) get a 400 naming the accepted codec.
    let (_vp8, offer) = Publisher::new(Some(Video::Vp8), true).await?;
    let refused = gw.post_offer("default", &offer, None).await?;
    assert_eq!(refused.status(), 400);
    let body = refused.text().await?;
    assert!(body.contains("accepted: H264"), "{body}");

    let scratch = Scratch::new("h264")?;
    let ffmpeg = ffmpeg();
    let consumer = match ffmpeg {
        Some(f) => Some((
            encode_clip(f, &scratch.0, Video::H264).await?,
            start_ffmpeg(f, &scratch.0, &ingest.consumer_sdp)?,
        )),
        None => None,
    };
    let publisher = connect(&gw, "default", Video::H264).await?;
    let session = gw.session("default").await?.context("live")?;
    assert_eq!(session.video_codec, "H264");
    assert_eq!(
        session.consumer_sdp, ingest.consumer_sdp,
        "one codec: the same SDP"
    );
    assert!(!session.node_id.is_empty());
    if let Some((clip, child)) = consumer {
        let (track, pt, ssrc) = publisher.video_track().await?;
        let sender = send_clip(track, pt, ssrc, Video::H264, clip);
        let frames = decoded_frames(child).await;
        sender.abort();
        assert!(frames? >= 10);
    }
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_codec_ingest_gives_the_negotiated_vp8_sdp_with_track_started() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    let port = free_rtp_port()?;
    let mut events = gw
        .grpc
        .watch_events(pb::WatchEventsRequest {
            kinds: vec![pb::EventKind::TrackStarted as i32],
            ..Default::default()
        })
        .await?
        .into_inner();
    let ingest = gw
        .register_with(pb::RegisterIngestRequest {
            ingest_id: "multi".into(),
            video_target: format!("127.0.0.1:{port}"),
            video_codecs: vec![pb::VideoCodec::H264 as i32, pb::VideoCodec::Vp8 as i32],
            ..Default::default()
        })
        .await?;
    assert!(
        ingest
            .consumer_sdp
            .contains(&format!("m=video {port} RTP/AVP 96 97\r\n"))
    );
    assert!(ingest.consumer_sdp.contains("i=lists several video codecs"));

    let publisher = connect(&gw, "multi", Video::Vp8).await?;
    let (track, pt, ssrc) = publisher.video_track().await?;
    let scratch = Scratch::new("vp8")?;
    let ffmpeg = ffmpeg();
    let clip = match ffmpeg {
        Some(f) => encode_clip(f, &scratch.0, Video::Vp8).await?,
        // Without FFmpeg: any VP8-shaped frames start the track.
        None => vec![vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a]; 15],
    };
    let sender = send_clip(track, pt, ssrc, Video::Vp8, clip);
    let sdp = track_started_sdp(&mut events).await?;
    assert!(
        sdp.contains(&format!("m=video {port} RTP/AVP 97\r\n")),
        "{sdp}"
    );
    assert!(sdp.contains("a=rtpmap:97 VP8/90000"), "{sdp}");
    assert!(!sdp.contains("H264") && !sdp.contains("i="), "{sdp}");
    let session = gw.session("multi").await?.context("live")?;
    assert_eq!(
        session.consumer_sdp, sdp,
        "GetIngest's live session has the same SDP"
    );
    if let Some(f) = ffmpeg {
        // Started after media flows, FFmpeg begins at the clip's next keyframe.
        let frames = decoded_frames(start_ffmpeg(f, &scratch.0, &sdp)?).await;
        sender.abort();
        assert!(frames? >= 10);
    } else {
        sender.abort();
    }
    gw.stop().await
}
