//! Simulcast: a publisher sending three layers; one is forwarded, switches wait for keyframes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_VP8, MediaEngine};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::shared::marshal::{Marshal, MarshalSize};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::{PeerConnection, RTCPeerConnectionState};
use whipgate_proto::pb;

use crate::harness::{PATIENCE, TestGateway, UdpSink, eventually};
use crate::publisher::{codec, negotiated_pt, peer, random_ssrc};

/// Layers, lowest first: (rid, payload bytes, marker byte in the payload).
const LAYERS: [(&str, usize, u8); 3] = [("q", 150, 0xA1), ("h", 500, 0xA2), ("f", 1100, 0xA3)];

/// An SDES text header extension value (MID / RID).
struct Text(&'static str);
impl MarshalSize for Text {
    fn marshal_size(&self) -> usize {
        self.0.len()
    }
}
impl Marshal for Text {
    fn marshal_to(&self, buf: &mut [u8]) -> rtc::shared::error::Result<usize> {
        buf[..self.0.len()].copy_from_slice(self.0.as_bytes());
        Ok(self.0.len())
    }
}

struct SimulcastPublisher {
    pc: Arc<dyn PeerConnection>,
    sending: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for SimulcastPublisher {
    fn drop(&mut self) {
        self.sending.store(false, Ordering::SeqCst);
        for t in &self.tasks {
            t.abort();
        }
        let pc = Arc::clone(&self.pc);
        tokio::spawn(async move {
            let _ = pc.close().await;
        });
    }
}

/// Publishes VP8 in three layers to `ingest`; each layer has a keyframe every 15 frames.
async fn publish_simulcast(gw: &TestGateway, ingest: &str) -> Result<SimulcastPublisher> {
    let vp8 = codec(MIME_TYPE_VP8, 90000, 0, "");
    let mut media = MediaEngine::default();
    media.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: vp8.clone(),
            payload_type: 96,
        },
        RtpCodecKind::Video,
    )?;
    let (pc, mut gathered, mut state) = peer(media, false).await?;
    let ssrcs: Vec<u32> = LAYERS.iter().map(|_| random_ssrc()).collect();
    let encodings = LAYERS
        .iter()
        .zip(&ssrcs)
        .map(|((rid, ..), ssrc)| RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                rid: (*rid).to_owned(),
                ssrc: Some(*ssrc),
                ..Default::default()
            },
            codec: vp8.clone(),
            ..Default::default()
        })
        .collect();
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "sim".into(),
        "sim-video".into(),
        "sim-video".into(),
        RtpCodecKind::Video,
        encodings,
    )));
    let sender = pc
        .add_track(Arc::clone(&track) as Arc<dyn TrackLocal>)
        .await?;
    let offer = pc.create_offer(None).await?;
    pc.set_local_description(offer).await?;
    tokio::time::timeout(PATIENCE, gathered.wait_for(|g| *g)).await??;
    let offer = pc.local_description().await.context("offer")?.sdp;
    assert!(
        offer.contains("a=simulcast:send"),
        "three-layer offer: {offer}"
    );
    let r = gw.post_offer(ingest, &offer, None).await?;
    if r.status() != 201 {
        return Err(anyhow!(
            "publish answered {}: {}",
            r.status(),
            r.text().await?
        ));
    }
    let answer = r.text().await?;
    assert!(
        answer.contains("a=simulcast:recv"),
        "answer accepts the layers: {answer}"
    );
    pc.set_remote_description(RTCSessionDescription::answer(answer)?)
        .await?;
    tokio::time::timeout(
        PATIENCE,
        state.wait_for(|s| *s == RTCPeerConnectionState::Connected),
    )
    .await??;
    let pt = negotiated_pt(&sender).await?;
    let sending = Arc::new(AtomicBool::new(true));
    let mut tasks = Vec::new();
    for ((rid, size, marker), ssrc) in LAYERS.into_iter().zip(ssrcs) {
        let (track, sending) = (Arc::clone(&track), Arc::clone(&sending));
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(33));
            let mut n: u32 = 0;
            while sending.load(Ordering::SeqCst) {
                tick.tick().await;
                let keyframe = n.is_multiple_of(15);
                // VP8 descriptor (S=1), payload header (P bit), then the layer marker.
                let mut payload = vec![0x10, if keyframe { 0x00 } else { 0x01 }, marker];
                payload.resize(size, 0x55);
                let packet = rtp::Packet {
                    header: rtp::Header {
                        version: 2,
                        payload_type: pt,
                        ssrc,
                        sequence_number: n as u16,
                        timestamp: n.wrapping_mul(3000),
                        marker: true,
                        ..Default::default()
                    },
                    payload: payload.into(),
                };
                let extensions = [
                    rtp::extension::HeaderExtension::Custom {
                        uri: sdp::extmap::SDES_MID_URI.into(),
                        extension: Box::new(Text("0")),
                    },
                    rtp::extension::HeaderExtension::Custom {
                        uri: sdp::extmap::SDES_RTP_STREAM_ID_URI.into(),
                        extension: Box::new(Text(rid)),
                    },
                ];
                let _ = track.write_rtp_with_extensions(packet, &extensions).await;
                n = n.wrapping_add(1);
            }
        }));
    }
    Ok(SimulcastPublisher { pc, sending, tasks })
}

/// Marker byte of a forwarded VP8 packet (third payload byte).
async fn next_layer(sink: &UdpSink) -> Result<(u8, bool, u16)> {
    let p = sink.recv_rtp(PATIENCE).await?;
    Ok((
        p.payload.get(2).copied().unwrap_or(0),
        p.payload.get(1) == Some(&0x00),
        p.sequence,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_highest_layer_is_forwarded_and_a_live_switch_waits_for_a_keyframe() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    let video = UdpSink::bind().await?;
    gw.register_with(pb::RegisterIngestRequest {
        ingest_id: "sim".into(),
        video_target: video.addr.to_string(),
        video_codecs: vec![pb::VideoCodec::Vp8 as i32],
        ..Default::default()
    })
    .await?;
    let _publisher = publish_simulcast(&gw, "sim").await?;

    // By default the layer with the highest bitrate ("f") ends up forwarded, alone.
    eventually(PATIENCE, "the f layer to be forwarded alone", || {
        let video = &video;
        async move {
            let (marker, ..) = next_layer(video).await.ok()?;
            (marker == 0xA3).then_some(())
        }
    })
    .await?;
    // Only f from then on: twenty packets in a row are all f and their sequence numbers are
    // consecutive (another layer interleaved would show as another marker or as a gap).
    let (_, _, mut sequence) = next_layer(&video).await?;
    for _ in 0..20 {
        let (marker, _, next) = next_layer(&video).await?;
        assert_eq!(marker, 0xA3, "only f once switched");
        assert_eq!(next, sequence.wrapping_add(1), "one layer, no gap");
        sequence = next;
    }
    let session = gw.session("sim").await?.context("live")?;
    assert_eq!(session.simulcast_layers, ["q", "h", "f"]);
    assert_eq!(session.forwarded_layer, "f");

    // Switch live to "q": the first q packet the consumer sees is a keyframe, and sequence
    // numbers stay continuous across the switch.
    let r = gw
        .grpc
        .select_simulcast_layer(pb::SelectSimulcastLayerRequest {
            ingest_id: "sim".into(),
            rid: "q".into(),
        })
        .await?
        .into_inner();
    assert!(r.session_live);
    let mut previous = next_layer(&video).await?;
    let switched = loop {
        let packet = next_layer(&video).await?;
        assert_eq!(
            packet.2,
            previous.2.wrapping_add(1),
            "no gap in the output sequence"
        );
        if packet.0 != previous.0 {
            break packet;
        }
        previous = packet;
    };
    assert_eq!(switched.0, 0xA1, "switched to q");
    assert!(switched.1, "the switch happens on a keyframe");
    for _ in 0..10 {
        assert_eq!(next_layer(&video).await?.0, 0xA1);
    }
    gw.stop().await
}
