//! One generated publisher: its offer from a sans-IO `rtc` peer connection, then the lean
//! transport of [`super::lean`] (or, with `--full-rtc`, that peer connection; for the relay
//! floor, plain RTP) on its own UDP socket, a pacer for video frames and 20 ms audio packets, and nothing
//! else: no task, no timer of its own. A worker calls [`Publisher::service`] whenever the
//! publisher may have something to do and learns when to come back.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::certificate::RTCCertificate;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCDtlsTransportState;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::marshal::{Marshal, MarshalSize};
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::statistics::StatsSelector;

use super::MediaPlan;
use super::gso::gso_state;
use super::lean::{self, Lean};
use super::offer::{self, AUDIO_PT, VIDEO_PT};
use super::outbox::Outbox;
use super::payload::{self, Stamp};

/// A pacer this far behind skips ahead instead of bursting to catch up.
const MAX_LAG: Duration = Duration::from_millis(500);
/// A connected publisher only hears RTCP and consent answers: its socket (non-blocking, not
/// registered with the runtime, so arrivals wake nothing) is read this often, not on every
/// wake-up of its worker.
const READ_INTERVAL: Duration = Duration::from_millis(20);

/// Counters a worker accumulates and publishes in bulk.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Tally {
    pub(crate) video_packets: u64,
    pub(crate) audio_packets: u64,
    pub(crate) bytes: u64,
    pub(crate) send_errors: u64,
    pub(crate) keyframe_requests: u64,
    pub(crate) nacks: u64,
}

/// Where a publisher is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Connecting,
    Connected,
    Failed,
}

struct Stream {
    ssrc: u32,
    seq: u16,
    count: u64,
    interval: Duration,
    next_due: Instant,
    sender: Option<RTCRtpSenderId>,
    to: Option<SocketAddr>,
}

enum Transport {
    Webrtc(Box<RTCPeerConnection>),
    /// ICE, DTLS and SRTP without the peer connection's pipeline (the default).
    Lean(Box<Lean>),
    Plain,
}

/// What a lean publisher needs once the answer is in: its offer and certificate.
struct LeanSetup {
    offer: String,
    certificate: RTCCertificate,
}

/// One publisher.
pub(crate) struct Publisher {
    pub(crate) index: u32,
    socket: UdpSocket,
    /// What a service of the publisher sends, batched.
    out: Outbox,
    local: SocketAddr,
    transport: Transport,
    video: Option<Stream>,
    audio: Option<Stream>,
    plan: MediaPlan,
    pub(crate) phase: Phase,
    /// When the publish started (before the POST), for the connect time.
    pub(crate) started: Instant,
    pub(crate) connected_after: Option<Duration>,
    next_timeout: Option<Instant>,
    /// When a connected publisher's socket is read next.
    next_read: Instant,
    want_keyframe: bool,
    /// Set for a lean publisher until its answer arrives.
    lean: Option<Box<LeanSetup>>,
    /// A marshalled RTP packet before encryption (lean publishers).
    scratch: Vec<u8>,
}

/// A random non-zero SSRC.
fn ssrc() -> u32 {
    (uuid::Uuid::new_v4().as_u128() as u32).max(1)
}

fn stream(interval: Duration, now: Instant) -> Stream {
    Stream {
        ssrc: ssrc(),
        seq: (uuid::Uuid::new_v4().as_u128() >> 64) as u16,
        count: 0,
        interval,
        next_due: now,
        sender: None,
        to: None,
    }
}

impl Publisher {
    /// A WebRTC publisher and its complete offer (the host candidate included).
    pub(crate) fn webrtc(
        index: u32,
        socket: UdpSocket,
        plan: MediaPlan,
        certificate: &RTCCertificate,
        gso: bool,
        lean: bool,
    ) -> rtc::shared::error::Result<(Publisher, String)> {
        let now = Instant::now();
        let local = socket.local_addr()?;
        let mut video = stream(plan.frame_interval(), now);
        let mut audio = plan.audio.then(|| stream(Duration::from_millis(20), now));
        let (peer, senders, sdp) = offer::peer_connection(
            index,
            local,
            plan,
            certificate,
            [Some(video.ssrc), audio.as_ref().map(|a| a.ssrc)],
            now,
        )?;
        video.sender = senders[0];
        if let Some(a) = &mut audio {
            a.sender = senders[1];
        }
        let udp = gso.then(|| gso_state(&socket)).flatten();
        let publisher = Publisher {
            index,
            socket,
            local,
            transport: Transport::Webrtc(Box::new(peer)),
            video: Some(video),
            audio,
            plan,
            phase: Phase::Connecting,
            started: now,
            connected_after: None,
            next_timeout: Some(now),
            next_read: now,
            want_keyframe: true,
            out: Outbox::new(udp),
            lean: lean.then(|| {
                Box::new(LeanSetup {
                    offer: sdp.clone(),
                    certificate: certificate.clone(),
                })
            }),
            scratch: Vec::new(),
        };
        Ok((publisher, sdp))
    }

    /// A plain RTP publisher (no WebRTC): the floor a bare UDP relay is measured with.
    pub(crate) fn plain(
        index: u32,
        socket: UdpSocket,
        plan: MediaPlan,
        video_to: SocketAddr,
        audio_to: SocketAddr,
    ) -> std::io::Result<Publisher> {
        let now = Instant::now();
        let local = socket.local_addr()?;
        let mut video = stream(plan.frame_interval(), now);
        video.to = Some(video_to);
        let audio = plan.audio.then(|| {
            let mut a = stream(Duration::from_millis(20), now);
            a.to = Some(audio_to);
            a
        });
        let mut p = Publisher {
            index,
            socket,
            local,
            transport: Transport::Plain,
            video: Some(video),
            audio,
            plan,
            phase: Phase::Connecting,
            started: now,
            connected_after: None,
            next_timeout: None,
            next_read: now,
            want_keyframe: true,
            out: Outbox::default(),
            lean: None,
            scratch: Vec::new(),
        };
        p.on_connected(now);
        Ok(p)
    }

    /// Applies the gateway's answer. Passive ICE-TCP candidates are dropped: this client
    /// only speaks UDP.
    pub(crate) fn set_answer(&mut self, answer: &str) -> rtc::shared::error::Result<()> {
        if let Some(setup) = self.lean.take() {
            let now = Instant::now();
            let lean = Lean::new(self.local, &setup.offer, answer, &setup.certificate, now)
                .map_err(|e| rtc::shared::error::Error::Other(e.to_string()))?;
            self.transport = Transport::Lean(Box::new(lean));
            self.next_timeout = Some(now);
            return Ok(());
        }
        let Transport::Webrtc(peer) = &mut self.transport else {
            return Ok(());
        };
        let sdp: String = answer
            .lines()
            .filter(|l| !(l.starts_with("a=candidate") && l.to_ascii_lowercase().contains(" tcp ")))
            .flat_map(|l| [l, "\r\n"])
            .collect();
        peer.set_remote_description(Instant::now(), RTCSessionDescription::answer(sdp)?)?;
        self.next_timeout = Some(Instant::now());
        Ok(())
    }

    fn on_connected(&mut self, now: Instant) {
        self.phase = Phase::Connected;
        self.connected_after = Some(now.duration_since(self.started));
        // Spread publishers over the frame interval, as independent encoders would be.
        let phase = |s: &mut Stream, salt: u32| {
            let frac = f64::from(self.index.wrapping_mul(2_654_435_761).wrapping_add(salt) % 1000)
                / 1000.0;
            s.next_due = now + s.interval.mul_f64(frac);
        };
        if let Some(v) = &mut self.video {
            phase(v, 0);
        }
        if let Some(a) = &mut self.audio {
            phase(a, 7);
        }
    }

    /// Does whatever is due: reads, protocol timeouts, media. Returns when to come back.
    pub(crate) fn service(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        tally: &mut Tally,
    ) -> Option<Instant> {
        if self.phase == Phase::Failed {
            return None;
        }
        let mut touched = false;
        if self.phase == Phase::Connecting || now >= self.next_read {
            self.next_read = now + READ_INTERVAL;
            touched = self.read(now, buf);
        }
        if let Some(due) = self.next_timeout
            && due <= now
        {
            match &mut self.transport {
                Transport::Webrtc(peer) => {
                    let _ = peer.handle_timeout(now);
                }
                Transport::Lean(lean) => lean.handle_timeout(now),
                Transport::Plain => {}
            }
            touched = true;
        }
        if touched {
            self.drain(now, tally);
        }
        if self.phase == Phase::Connected && self.send_media(now, tally) {
            touched = true;
        }
        // Flushing and asking for the next timeout walk the whole handler chain: only after
        // something happened, not on every wake-up of the worker.
        if touched {
            self.flush(tally);
            match &mut self.transport {
                Transport::Webrtc(peer) => self.next_timeout = peer.poll_timeout(),
                Transport::Lean(lean) => self.next_timeout = lean.poll_timeout(),
                Transport::Plain => {}
            }
        }
        [
            self.next_timeout,
            (self.phase == Phase::Connected)
                .then_some(())
                .and(self.video.as_ref().map(|s| s.next_due)),
            (self.phase == Phase::Connected)
                .then_some(())
                .and(self.audio.as_ref().map(|s| s.next_due)),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Feeds every queued datagram to the peer connection; true if there was one.
    fn read(&mut self, now: Instant, buf: &mut [u8]) -> bool {
        let mut any = false;
        while let Ok((n, from)) = self.socket.recv_from(buf) {
            any = true;
            if let Transport::Lean(lean) = &mut self.transport {
                lean.handle_read(now, from, &buf[..n]);
            } else if let Transport::Webrtc(peer) = &mut self.transport {
                let _ = peer.handle_read(TaggedBytesMut {
                    now,
                    transport: TransportContext {
                        local_addr: self.local,
                        peer_addr: from,
                        ecn: None,
                        transport_protocol: TransportProtocol::UDP,
                    },
                    message: BytesMut::from(&buf[..n]),
                });
            }
        }
        any
    }

    /// Handles the peer's events and incoming RTCP.
    fn drain(&mut self, now: Instant, tally: &mut Tally) {
        if let Transport::Lean(lean) = &mut self.transport {
            let requests = std::mem::take(&mut lean.keyframe_requests);
            tally.keyframe_requests += requests;
            tally.nacks += std::mem::take(&mut lean.nacks);
            self.want_keyframe |= requests > 0;
            match lean.state {
                lean::State::Connected if self.phase == Phase::Connecting => self.on_connected(now),
                lean::State::Failed => self.phase = Phase::Failed,
                _ => {}
            }
            return;
        }
        let Transport::Webrtc(peer) = &mut self.transport else {
            return;
        };
        let mut connected = false;
        while let Some(event) = peer.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                match state {
                    RTCPeerConnectionState::Connected => connected = true,
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        self.phase = Phase::Failed;
                    }
                    _ => {}
                }
            }
        }
        while let Some(message) = peer.poll_read() {
            if let RTCMessage::RtcpPacket(_, packets) = message.message {
                for p in &packets {
                    let any = p.as_any();
                    if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                        tally.keyframe_requests += 1;
                        self.want_keyframe = true;
                    } else if any.is::<TransportLayerNack>() {
                        tally.nacks += 1;
                    }
                }
            }
        }
        if connected && self.phase == Phase::Connecting {
            // rtc also reports "connected" when ICE is up and DTLS *closed* (the gateway gave
            // up on a handshake that never completed): only a connected DTLS counts.
            let dtls_up = peer
                .get_stats(now, StatsSelector::None)
                .transport()
                .is_some_and(|t| t.dtls_state == RTCDtlsTransportState::Connected);
            if dtls_up {
                self.on_connected(now);
            } else {
                self.phase = Phase::Failed;
            }
        }
    }

    /// Sends the frames and audio packets that are due; true if it sent any.
    fn send_media(&mut self, now: Instant, tally: &mut Tally) -> bool {
        let due = |s: &Option<Stream>| s.as_ref().is_some_and(|s| s.next_due <= now);
        if !due(&self.video) && !due(&self.audio) {
            return false;
        }
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let stamp = Stamp {
            sent_us: wall,
            publisher: self.index,
        };
        let plan = self.plan;
        if let Some(mut v) = self.video.take() {
            while v.next_due <= now {
                let keyframe = self.want_keyframe || v.count % plan.keyframe_frames() == 0;
                self.want_keyframe = false;
                let frame = plan.frame_bytes(keyframe);
                let packets =
                    payload::video_frame(plan.codec, keyframe, frame, plan.payload_size, stamp);
                let ts = (v.count * 90_000 / u64::from(plan.fps.max(1))) as u32;
                let last = packets.len() - 1;
                for (i, p) in packets.into_iter().enumerate() {
                    tally.video_packets += 1;
                    self.write(now, &mut v, VIDEO_PT, ts, i == last, p, tally);
                }
                v.count += 1;
                advance(&mut v, now);
            }
            self.video = Some(v);
        }
        if let Some(mut a) = self.audio.take() {
            while a.next_due <= now {
                let ts = (a.count * 960) as u32;
                tally.audio_packets += 1;
                self.write(
                    now,
                    &mut a,
                    AUDIO_PT,
                    ts,
                    false,
                    payload::audio_packet(plan.audio_bytes, stamp),
                    tally,
                );
                a.count += 1;
                advance(&mut a, now);
            }
            self.audio = Some(a);
        }
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        now: Instant,
        s: &mut Stream,
        pt: u8,
        timestamp: u32,
        marker: bool,
        payload: Bytes,
        tally: &mut Tally,
    ) {
        let packet = rtp::Packet {
            header: rtp::Header {
                version: 2,
                payload_type: pt,
                sequence_number: s.seq,
                timestamp,
                ssrc: s.ssrc,
                marker,
                ..Default::default()
            },
            payload,
        };
        s.seq = s.seq.wrapping_add(1);
        match (&mut self.transport, s.sender, s.to) {
            (Transport::Webrtc(peer), Some(id), _) => {
                if let Some(mut sender) = peer.rtp_sender(id)
                    && sender.write_rtp(now, packet).is_err()
                {
                    tally.send_errors += 1;
                }
            }
            (Transport::Lean(lean), _, _) => {
                let size = packet.marshal_size();
                self.scratch.resize(size, 0);
                let sealed = packet
                    .marshal_to(&mut self.scratch)
                    .ok()
                    .and_then(|n| lean.protect(&self.scratch[..n], &packet.header));
                match sealed {
                    Some(datagram) => {
                        tally.bytes += datagram.len() as u64;
                        let to = lean.remote();
                        self.out.push(&self.socket, to, datagram, tally);
                    }
                    None => tally.send_errors += 1,
                }
            }
            (Transport::Plain, _, Some(to)) => match packet.marshal() {
                Ok(bytes) => {
                    tally.bytes += bytes.len() as u64;
                    self.out.push(&self.socket, to, bytes.freeze(), tally);
                }
                Err(_) => tally.send_errors += 1,
            },
            _ => tally.send_errors += 1,
        }
    }

    /// Sends what the peer connection queued (and plain RTP written), batched by the outbox.
    /// Once connected, the socket is connected to the gateway's address first.
    fn flush(&mut self, tally: &mut Tally) {
        if let Transport::Lean(lean) = &mut self.transport {
            let to = lean.remote();
            if self.phase == Phase::Connected && !self.out.connect_tried() {
                self.out.connect(&self.socket, to);
            }
            for datagram in lean.take_transmits() {
                tally.bytes += datagram.len() as u64;
                self.out.push(&self.socket, to, datagram, tally);
            }
        }
        if let Transport::Webrtc(peer) = &mut self.transport {
            while let Some(out) = peer.poll_write() {
                if out.transport.transport_protocol != TransportProtocol::UDP {
                    continue;
                }
                tally.bytes += out.message.len() as u64;
                let to = out.transport.peer_addr;
                if self.phase == Phase::Connected && !self.out.connect_tried() {
                    self.out.connect(&self.socket, to);
                }
                self.out.push(&self.socket, to, out.message.freeze(), tally);
            }
        }
        self.out.flush(&self.socket, tally);
    }

    /// Ends the publisher politely (DTLS close_notify) or, with `vanish`, silently.
    pub(crate) fn close(mut self, vanish: bool, tally: &mut Tally) {
        if vanish {
            return;
        }
        match &mut self.transport {
            Transport::Webrtc(peer) => {
                let _ = peer.close();
            }
            Transport::Lean(lean) => lean.close(Instant::now()),
            Transport::Plain => {}
        }
        self.flush(tally);
    }
}

fn advance(s: &mut Stream, now: Instant) {
    s.next_due += s.interval;
    if now.duration_since(s.next_due) > MAX_LAG && s.next_due < now {
        s.next_due = now + s.interval;
    }
}
