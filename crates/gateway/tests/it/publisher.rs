//! A real WebRTC publisher for the tests: webrtc-rs's async `webrtc` crate (its own driver and
//! sockets, independent of the gateway's sans-IO loop) sending synthetic H264/VP8 + Opus RTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use rtc::ice::network_type::NetworkType;
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_nack, register_default_interceptors,
};
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8, MIME_TYPE_VP9, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use tokio::sync::watch;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState,
};
use webrtc::rtp_transceiver::RtpSender;

/// Video codec the publisher offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Video {
    /// H.264 at payload type 102 (the consumer SDP says 96: the gateway must rewrite).
    H264,
    /// VP8 at payload type 100 (consumer: 97).
    Vp8,
    /// VP9 at payload type 101 (consumer: 98).
    Vp9,
}

/// Offer payload types: deliberately not the consumer SDP's, so rewriting is observable.
pub const OFFER_H264_PT: u8 = 102;
pub const OFFER_VP8_PT: u8 = 100;
pub const OFFER_VP9_PT: u8 = 101;
pub const OFFER_OPUS_PT: u8 = 109;

struct Handler {
    gathered: watch::Sender<bool>,
    state: watch::Sender<RTCPeerConnectionState>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.send(state);
    }
}

/// A video frame a test makes: its RTP timestamp and one payload per packet.
pub struct Frame {
    pub timestamp: u32,
    pub packets: Vec<Vec<u8>>,
}

/// How fast the synthetic video goes (audio is always 50 packets/s of 80 bytes).
#[derive(Clone, Copy, Debug)]
pub struct MediaRate {
    /// Time between video packets (one packet per frame).
    pub video_interval: Duration,
    /// Video payload bytes per packet.
    pub video_payload: usize,
    /// After every this many frames, two padding-only packets (as Chrome's bandwidth probes).
    pub padding_every: Option<u32>,
}

impl Default for MediaRate {
    fn default() -> Self {
        MediaRate {
            video_interval: Duration::from_millis(33),
            video_payload: 400,
            padding_every: None,
        }
    }
}

/// A loopback peer connection with the default (sender) interceptors, and watches on its ICE
/// gathering and connection states.
pub(crate) async fn peer(
    media: MediaEngine,
    tcp_only: bool,
) -> Result<(
    Arc<dyn PeerConnection>,
    watch::Receiver<bool>,
    watch::Receiver<RTCPeerConnectionState>,
)> {
    peer_with(media, tcp_only, true).await
}

/// Like [`peer`]; without `rtcp_reports` the peer sends no RTCP Sender or Receiver Reports
/// (as OBS), only NACKs.
async fn peer_with(
    mut media: MediaEngine,
    tcp_only: bool,
    rtcp_reports: bool,
) -> Result<(
    Arc<dyn PeerConnection>,
    watch::Receiver<bool>,
    watch::Receiver<RTCPeerConnectionState>,
)> {
    let registry = if rtcp_reports {
        register_default_interceptors(Registry::new(), &mut media)?
    } else {
        configure_nack(Registry::new(), &mut media)
    };
    let (gathered_tx, gathered) = watch::channel(false);
    let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
    let builder = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler {
            gathered: gathered_tx,
            state: state_tx,
        }));
    let builder = if tcp_only {
        let settings = SettingEngineBuilder::new()
            .with_network_types(vec![NetworkType::Tcp4])
            .build();
        builder
            .with_setting_engine(settings)
            .with_tcp_addrs(vec!["127.0.0.1:0".to_owned()])
            .with_udp_addrs(Vec::<String>::new())
    } else {
        builder.with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
    };
    let pc: Arc<dyn PeerConnection> = Arc::new(builder.build().await?);
    Ok((pc, gathered, state))
}

/// A publisher: one peer connection with a video and/or an audio track.
pub struct Publisher {
    pc: Arc<dyn PeerConnection>,
    video: Option<(Arc<TrackLocalStaticRTP>, Arc<dyn RtpSender>, Video)>,
    audio: Option<(Arc<TrackLocalStaticRTP>, Arc<dyn RtpSender>)>,
    state: watch::Receiver<RTCPeerConnectionState>,
    gathered: watch::Receiver<bool>,
    sending: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

pub(crate) fn codec(mime: &str, clock_rate: u32, channels: u16, fmtp: &str) -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: mime.to_owned(),
        clock_rate,
        channels,
        sdp_fmtp_line: fmtp.to_owned(),
        rtcp_feedback: vec![],
    }
}

fn video_codec(video: Video) -> (RTCRtpCodec, u8) {
    match video {
        Video::H264 => (
            codec(
                MIME_TYPE_H264,
                90000,
                0,
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
            ),
            OFFER_H264_PT,
        ),
        Video::Vp8 => (codec(MIME_TYPE_VP8, 90000, 0, ""), OFFER_VP8_PT),
        Video::Vp9 => (codec(MIME_TYPE_VP9, 90000, 0, "profile-id=0"), OFFER_VP9_PT),
    }
}

fn track(kind: RtpCodecKind, codec: RTCRtpCodec, ssrc: u32) -> Arc<TrackLocalStaticRTP> {
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "whipgate-test".to_owned(),
        format!("test-{kind}"),
        format!("test-{kind}"),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    )))
}

impl Publisher {
    /// Builds the peer connection and returns it with its complete (non-trickle) offer.
    pub async fn new(video: Option<Video>, audio: bool) -> Result<(Self, String)> {
        Self::with_transport(video, audio, false).await
    }

    /// Like `new`; with `tcp_only` the publisher has no UDP at all and must reach the gateway
    /// over ICE-TCP (as behind a firewall that blocks UDP).
    pub async fn with_transport(
        video: Option<Video>,
        audio: bool,
        tcp_only: bool,
    ) -> Result<(Self, String)> {
        Self::with_options(video, audio, tcp_only, true).await
    }

    /// Like `new`, but the publisher sends no RTCP Sender Reports (as OBS).
    pub async fn without_sender_reports(
        video: Option<Video>,
        audio: bool,
    ) -> Result<(Self, String)> {
        Self::with_options(video, audio, false, false).await
    }

    async fn with_options(
        video: Option<Video>,
        audio: bool,
        tcp_only: bool,
        rtcp_reports: bool,
    ) -> Result<(Self, String)> {
        let mut media = MediaEngine::default();
        if let Some(v) = video {
            let (c, pt) = video_codec(v);
            media.register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: c,
                    payload_type: pt,
                },
                RtpCodecKind::Video,
            )?;
        }
        if audio {
            media.register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: codec(MIME_TYPE_OPUS, 48000, 2, "minptime=10;useinbandfec=1"),
                    payload_type: OFFER_OPUS_PT,
                },
                RtpCodecKind::Audio,
            )?;
        }
        let (pc, gathered, state) = peer_with(media, tcp_only, rtcp_reports).await?;
        let video = match video {
            Some(v) => {
                let t = track(RtpCodecKind::Video, video_codec(v).0, random_ssrc());
                let sender = pc.add_track(Arc::clone(&t) as Arc<dyn TrackLocal>).await?;
                Some((t, sender, v))
            }
            None => None,
        };
        let audio = if audio {
            let t = track(
                RtpCodecKind::Audio,
                codec(MIME_TYPE_OPUS, 48000, 2, "minptime=10;useinbandfec=1"),
                random_ssrc(),
            );
            let sender = pc.add_track(Arc::clone(&t) as Arc<dyn TrackLocal>).await?;
            Some((t, sender))
        } else {
            None
        };
        let offer = pc.create_offer(None).await?;
        pc.set_local_description(offer).await?;
        let mut publisher = Publisher {
            pc,
            video,
            audio,
            state,
            gathered,
            sending: Arc::new(AtomicBool::new(false)),
            tasks: Vec::new(),
        };
        tokio::time::timeout(Duration::from_secs(5), publisher.gathered.wait_for(|g| *g))
            .await
            .context("ICE gathering timed out")??;
        let sdp = publisher
            .pc
            .local_description()
            .await
            .ok_or_else(|| anyhow!("no local description"))?
            .sdp;
        Ok((publisher, sdp))
    }

    /// Applies the gateway's answer.
    pub async fn set_answer(&self, sdp: String) -> Result<()> {
        self.pc
            .set_remote_description(RTCSessionDescription::answer(sdp.clone())?)
            .await?;
        // webrtc-rs's async driver dials a passive TCP candidate only when it is added as a
        // remote candidate, not when it sits in the answer: hand those over explicitly.
        for line in sdp.lines().filter(|l| l.contains("tcptype passive")) {
            if let Some(candidate) = line.strip_prefix("a=") {
                self.pc
                    .add_ice_candidate(RTCIceCandidateInit {
                        candidate: candidate.to_owned(),
                        sdp_mid: Some("0".to_owned()),
                        sdp_mline_index: Some(0),
                        ..Default::default()
                    })
                    .await?;
            }
        }
        Ok(())
    }

    /// Restarts ICE: a new local offer with fresh credentials, whose ufrag/pwd go to the gateway
    /// with `patch` (the WHIP PATCH); the gateway's fragment then updates the remote answer.
    pub async fn restart_ice<F, Fut>(&self, patch: F) -> Result<String>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Result<String>>,
    {
        self.pc.restart_ice().await?;
        let offer = self.pc.create_offer(None).await?;
        self.pc.set_local_description(offer).await?;
        let local = self
            .pc
            .local_description()
            .await
            .context("local description")?
            .sdp;
        let (ufrag, pwd) = credentials(&local).context("new local credentials")?;
        let fragment = format!(
            "a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
        );
        let answer_fragment = patch(fragment).await?;
        let (their_ufrag, their_pwd) =
            credentials(&answer_fragment).context("gateway credentials")?;
        let remote = self
            .pc
            .remote_description()
            .await
            .context("remote description")?
            .sdp;
        let answer: String = remote
            .lines()
            .map(|l| {
                if l.starts_with("a=ice-ufrag:") {
                    format!("a=ice-ufrag:{their_ufrag}\r\n")
                } else if l.starts_with("a=ice-pwd:") {
                    format!("a=ice-pwd:{their_pwd}\r\n")
                } else {
                    format!("{l}\r\n")
                }
            })
            .collect();
        self.pc
            .set_remote_description(RTCSessionDescription::answer(answer)?)
            .await?;
        Ok(their_ufrag)
    }

    /// Waits until ICE + DTLS are up.
    pub async fn connected(&mut self, patience: Duration) -> Result<()> {
        tokio::time::timeout(
            patience,
            self.state
                .wait_for(|s| *s == RTCPeerConnectionState::Connected),
        )
        .await
        .context("publisher did not connect")??;
        Ok(())
    }

    /// Starts sending synthetic media (30 fps video, 50 pps audio) until [`Publisher::stop_media`].
    pub async fn start_media(&mut self) -> Result<()> {
        self.start_media_with(MediaRate::default()).await
    }

    /// Starts sending at a chosen video packet rate and size (benchmarks).
    pub async fn start_media_with(&mut self, rate: MediaRate) -> Result<()> {
        self.sending.store(true, Ordering::SeqCst);
        if let Some((track, sender, video)) = &self.video {
            let pt = negotiated_pt(sender).await?;
            let ssrc = first_ssrc(track).await?;
            let (track, video, sending) = (Arc::clone(track), *video, Arc::clone(&self.sending));
            self.tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(rate.video_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let (mut n, mut seq): (u32, u32) = (0, 0);
                while sending.load(Ordering::SeqCst) {
                    tick.tick().await;
                    let keyframe = n.is_multiple_of(30);
                    let payload: Vec<u8> = match video {
                        Video::H264 => [
                            &[if keyframe { 0x65 } else { 0x41 }][..],
                            &vec![0xAB; rate.video_payload],
                        ]
                        .concat(),
                        Video::Vp8 => [
                            &[0x10, if keyframe { 0x00 } else { 0x01 }][..],
                            &vec![0xCD; rate.video_payload],
                        ]
                        .concat(),
                        Video::Vp9 => [
                            &[if keyframe { 0x08 } else { 0x48 }][..],
                            &vec![0xEF; rate.video_payload],
                        ]
                        .concat(),
                    };
                    let ts = n.wrapping_mul(3000);
                    let _ = track
                        .write_rtp(packet(pt, ssrc, seq, ts, true, payload))
                        .await;
                    seq = seq.wrapping_add(1);
                    if rate.padding_every.is_some_and(|k| n.is_multiple_of(k)) {
                        for _ in 0..2 {
                            let mut padding = packet(pt, ssrc, seq, ts, false, Vec::new());
                            padding.header.padding = true;
                            let _ = track.write_rtp(padding).await;
                            seq = seq.wrapping_add(1);
                        }
                    }
                    n = n.wrapping_add(1);
                }
            }));
        }
        self.start_audio().await
    }

    /// Starts sending video frames the test makes (`frames(n)` for the n-th frame, one every
    /// `interval`; the last packet of a frame carries the marker bit), and the usual audio.
    pub async fn start_media_from(
        &mut self,
        interval: Duration,
        mut frames: impl FnMut(u32) -> Frame + Send + 'static,
    ) -> Result<()> {
        self.sending.store(true, Ordering::SeqCst);
        if let Some((track, sender, _)) = &self.video {
            let pt = negotiated_pt(sender).await?;
            let ssrc = first_ssrc(track).await?;
            let (track, sending) = (Arc::clone(track), Arc::clone(&self.sending));
            self.tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                let (mut n, mut seq): (u32, u32) = (0, 0);
                while sending.load(Ordering::SeqCst) {
                    tick.tick().await;
                    let frame = frames(n);
                    let last = frame.packets.len().saturating_sub(1);
                    for (i, payload) in frame.packets.into_iter().enumerate() {
                        let rtp = packet(pt, ssrc, seq, frame.timestamp, i == last, payload);
                        let _ = track.write_rtp(rtp).await;
                        seq = seq.wrapping_add(1);
                    }
                    n = n.wrapping_add(1);
                }
            }));
        }
        self.start_audio().await
    }

    /// 50 Opus-like packets a second (TOC byte 0xFC: stereo) until `stop_media`.
    async fn start_audio(&mut self) -> Result<()> {
        if let Some((track, sender)) = &self.audio {
            let pt = negotiated_pt(sender).await?;
            let ssrc = first_ssrc(track).await?;
            let (track, sending) = (Arc::clone(track), Arc::clone(&self.sending));
            self.tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                let mut n: u32 = 0;
                while sending.load(Ordering::SeqCst) {
                    tick.tick().await;
                    let _ = track
                        .write_rtp(packet(
                            pt,
                            ssrc,
                            n,
                            n.wrapping_mul(960),
                            false,
                            vec![0xFC; 80],
                        ))
                        .await;
                    n = n.wrapping_add(1);
                }
            }));
        }
        Ok(())
    }

    /// The video track with its negotiated payload type and SSRC, for a test that sends its
    /// own packets (e.g. a real encoded clip).
    pub async fn video_track(&self) -> Result<(Arc<TrackLocalStaticRTP>, u8, u32)> {
        let (track, sender, _) = self.video.as_ref().context("no video track")?;
        Ok((
            Arc::clone(track),
            negotiated_pt(sender).await?,
            first_ssrc(track).await?,
        ))
    }

    /// Stops sending media (the connection stays up).
    pub fn stop_media(&self) {
        self.sending.store(false, Ordering::SeqCst);
    }

    /// Current connection state.
    pub fn state(&self) -> RTCPeerConnectionState {
        *self.state.borrow()
    }

    /// Closes the connection without telling the gateway (a publisher that vanished).
    pub async fn close(mut self) {
        self.stop_media();
        for task in self.tasks.drain(..) {
            task.abort();
        }
        let _ = self.pc.close().await;
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.sending.store(false, Ordering::SeqCst);
        for task in &self.tasks {
            task.abort();
        }
    }
}

pub(crate) fn packet(
    pt: u8,
    ssrc: u32,
    seq: u32,
    timestamp: u32,
    marker: bool,
    payload: Vec<u8>,
) -> rtp::Packet {
    rtp::Packet {
        header: rtp::Header {
            version: 2,
            payload_type: pt,
            ssrc,
            sequence_number: seq as u16,
            timestamp,
            marker,
            ..Default::default()
        },
        payload: payload.into(),
    }
}

async fn first_ssrc(track: &Arc<TrackLocalStaticRTP>) -> Result<u32> {
    use webrtc::media_stream::Track;
    track
        .ssrcs()
        .await
        .first()
        .copied()
        .ok_or_else(|| anyhow!("track has no SSRC"))
}

pub(crate) async fn negotiated_pt(sender: &Arc<dyn RtpSender>) -> Result<u8> {
    sender
        .get_parameters()
        .await?
        .rtp_parameters
        .codecs
        .first()
        .map(|c| c.payload_type)
        .ok_or_else(|| anyhow!("sender has no negotiated codec"))
}

fn credentials(sdp: &str) -> Option<(String, String)> {
    let value = |key: &str| {
        sdp.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(str::to_owned)
    };
    Some((value("a=ice-ufrag:")?, value("a=ice-pwd:")?))
}

pub(crate) fn random_ssrc() -> u32 {
    (uuid::Uuid::new_v4().as_u128() & 0xffff_ffff) as u32
}
