//! Fuzz wrappers over the media internals: the real `mux`, `peer`, `restart`, `forward`,
//! `repair` and `red`, reached as a child of `media` (no widened visibility). Compiled with the
//! `_fuzz` feature (the fuzz crate enables it) and in unit tests, so a change to the code under
//! test that breaks a wrapper breaks `cargo test`, not only the fuzz run. Re-exported by
//! [`crate::fuzzing`].

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::rtcp::sender_report::SenderReport;
use rtc::shared::marshal::Unmarshal;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::registry::{Admitted, Caps, Registry};
use whipgate_media::codec::{MediaKind, OfferPlan, VideoCodec};

use super::{batch, forward, ice_auth, mux, peer, restart};
use crate::fuzzing::{FUZZ_PWD, FUZZ_UFRAG, ingest, plan_offer};
use whipgate_media::{keyframe, red, repair};

/// A runtime for the sockets the mux and the forwarder want (never driven: sends stay
/// would-block, which the code under test handles like a full socket buffer).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("fuzz runtime")
    })
}

fn udp_socket() -> tokio::net::UdpSocket {
    let _entered = runtime().enter();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("loopback UDP socket");
    socket.set_nonblocking(true).expect("non-blocking");
    tokio::net::UdpSocket::from_std(socket).expect("tokio UDP socket")
}

fn factory() -> &'static peer::PeerFactory {
    static FACTORY: OnceLock<peer::PeerFactory> = OnceLock::new();
    FACTORY.get_or_init(|| {
        let udp = SocketAddr::from(([127, 0, 0, 1], 8189));
        peer::PeerFactory::new(vec![udp], vec![udp]).expect("peer factory")
    })
}

/// The mux's routing of one UDP datagram from anyone (`UdpMux::dispatch`), then the same
/// bytes as the first frame of an ICE-TCP connection (`UdpMux::claim_tcp`). One session is
/// routed for [`FUZZ_UFRAG`] / [`FUZZ_PWD`]. Checks that an address is bound, and a TCP
/// connection claimed, only by a binding request whose MESSAGE-INTEGRITY verifies with that
/// password; that a datagram from an unbound address is never delivered unless it bound it;
/// and that dropping the route leaves nothing behind. Returns whether the datagram was routed.
pub fn stun_route(packet: &[u8]) -> bool {
    static MUX: OnceLock<mux::UdpMux<Uuid>> = OnceLock::new();
    let mux = MUX.get_or_init(|| mux::UdpMux::new(Arc::new(udp_socket()), factory().crypto()));
    let session = Uuid::from_u128(7);
    let route = mux.route(FUZZ_UFRAG.to_owned(), FUZZ_PWD, session, session);
    let from = SocketAddr::from(([127, 0, 0, 2], 40_000));
    let dispatched = mux.dispatch(packet, from, Instant::now());
    let routed = dispatched.is_ok();
    if let Ok(to) = dispatched {
        assert_eq!(to, session, "routed to the one session");
    }
    let bound = mux.session_of(from);
    let (writer, _frames) = mpsc::channel::<Bytes>(1);
    let claimed = mux
        .claim_tcp(packet, SocketAddr::from(([127, 0, 0, 3], 40_000)), writer)
        .is_ok();
    if routed || bound.is_some() || claimed {
        assert!(
            verifies(packet),
            "routed, bound or claimed without a valid integrity"
        );
        assert_eq!(bound, Some(session), "a routed check binds its address");
    }
    drop(route);
    assert_eq!(mux.routes(), 0, "a dropped route leaves nothing behind");
    routed
}

/// Whether `packet` is a binding request for [`FUZZ_UFRAG`] whose MESSAGE-INTEGRITY (and
/// FINGERPRINT) verify with [`FUZZ_PWD`].
fn verifies(packet: &[u8]) -> bool {
    let Ok(Some(mut request)) = ice_auth::parse(packet) else {
        return false;
    };
    let crypto = factory().crypto();
    request.ufrag == FUZZ_UFRAG
        && ice_auth::verify(&mut request, FUZZ_PWD.as_bytes(), crypto.crypto()).is_ok()
}

/// The offer planner, then (for an offer it accepts) the real negotiation: webrtc-rs parses
/// the offer and whipgate builds its answer.
pub fn answer_offer(data: &[u8]) -> Option<String> {
    let (offer, plan) = plan_offer(data)?;
    factory()
        .negotiate(offer, &plan, Instant::now())
        .ok()
        .map(|n| n.answer_sdp)
}

/// An ICE restart (trickle-ice-sdpfrag, RFC 8840) on a session negotiated from `offer`
/// (a valid offer; `None` if it is not): the fragment's credentials, then the restart itself.
pub fn ice_restart(offer: &str, fragment: &[u8]) -> Option<bool> {
    let fragment = std::str::from_utf8(fragment).ok()?;
    let _ = peer::ice_credentials(fragment);
    let plan = crate::edge::whip::plan_offer(offer, &ingest(0)).ok()?;
    let now = Instant::now();
    let mut negotiated = factory().negotiate(offer.to_owned(), &plan, now).ok()?;
    Some(restart::restart(&mut negotiated.peer, fragment, now).is_ok())
}

/// RTP and RTCP through a session's forwarder and the ingest's continuity state. `data` is a
/// sequence of records `op, len_hi, len_lo, bytes[len]`: op % 4: 0 an RTP packet forwarded,
/// 1 an RTP packet skipped (padding), 2 an RTCP compound packet whose Sender Reports are
/// forwarded, 3 a reconnect (a new forwarder, a new session, the same continuity); op & 4:
/// audio instead of video. Every RTP payload also goes through keyframe detection for each
/// video codec.
pub fn forward_rtp(data: &[u8]) {
    static SETUP: OnceLock<(forward::ForwardSockets, Arc<Metrics>, OfferPlan)> = OnceLock::new();
    let (sockets, metrics, plan) = SETUP.get_or_init(|| {
        let sockets = forward::ForwardSockets::new(udp_socket(), None);
        let metrics = Arc::new(Metrics::new(false).expect("metrics"));
        let offer = concat!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n",
            "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n",
            "a=rtpmap:96 H264/90000\r\n",
            "a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\n",
            "a=rtpmap:111 opus/48000/2\r\n",
        );
        let plan = crate::edge::whip::plan_offer(offer, &ingest(1)).expect("the fuzz offer plans");
        (sockets, metrics, plan)
    });
    let registry = Registry::new(Caps { max_publishers: 4 }, 16, Arc::clone(metrics));
    if registry.register(ingest(1), false).is_err() {
        return;
    }
    let Ok(Admitted::Session(mut admission, ())) = registry.admit("fuzz", None, |_| Ok(())) else {
        return;
    };
    let mut forwarder = forward::Forwarder::new(sockets.clone(), &admission, plan, metrics);
    let mut batch = batch::ForwardBatch::new(sockets.clone(), metrics);
    let now = Instant::now();
    let mut rest = data;
    while let [op, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        rest = next;
        let kind = if op & 4 == 0 {
            MediaKind::Video
        } else {
            MediaKind::Audio
        };
        match op % 4 {
            0 | 1 => {
                let Ok(mut packet) = rtc::rtp::Packet::unmarshal(&mut &bytes[..]) else {
                    continue;
                };
                for codec in [
                    VideoCodec::H264,
                    VideoCodec::Vp8,
                    VideoCodec::Vp9,
                    VideoCodec::Av1,
                    VideoCodec::H265,
                ] {
                    let _ = keyframe::starts_keyframe(codec, &packet.payload);
                }
                forwarder.count_received(kind, bytes.len());
                if op % 4 == 0 {
                    forwarder.forward(kind, &mut packet, &mut batch, now);
                    batch.flush();
                } else {
                    forwarder.skip(kind, &packet, now);
                }
            }
            2 => {
                let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut &bytes[..]) else {
                    continue;
                };
                // The session passes Sender Reports on (the rtcp tap drops the rest).
                let reports = packets
                    .iter()
                    .filter_map(|p| p.as_any().downcast_ref::<SenderReport>());
                for report in reports {
                    forwarder.forward_rtcp(kind, report);
                }
            }
            _ => {
                // The publisher reconnects: a new session on the same ingest continuity.
                admission.session_id = Uuid::new_v4();
                forwarder = forward::Forwarder::new(sockets.clone(), &admission, plan, metrics);
            }
        }
    }
}

/// Loss repair and RED on hostile input: arrivals (kind, SSRC out of four, sequence number,
/// padding), clock steps and polls drive the repair log, whose holes stay bounded and whose
/// deadlines never lie in the past of a poll; the rest of the input is split as a RED payload,
/// whose blocks must lie inside it.
pub fn loss_repair(data: &[u8]) {
    let (ops, red_payload) = data.split_at(data.len() / 2);
    let mut repair = repair::Repair::default();
    let mut now = Instant::now();
    for op in ops.chunks_exact(4) {
        match op[0] % 4 {
            0 | 1 => {
                let kind = if op[0] & 0x10 == 0 {
                    MediaKind::Video
                } else {
                    MediaKind::Audio
                };
                let seq = u16::from_be_bytes([op[1], op[2]]);
                let arrival = repair.arrive(
                    kind,
                    u32::from(op[3] % 4),
                    seq,
                    op[0] & 0x20 != 0,
                    kind == MediaKind::Video,
                    now,
                );
                if arrival != repair::Arrival::Duplicate {
                    assert!(repair.has(u32::from(op[3] % 4), seq));
                }
            }
            2 => now += Duration::from_millis(u64::from(op[1])),
            _ => {
                let due = repair.poll(now);
                let open: usize = due.nacks.iter().map(|(_, seqs)| seqs.len()).sum();
                assert!(open <= 8 * 513, "{open} NACKs at once");
                if let Some(next) = repair.next_deadline() {
                    assert!(next >= now, "a deadline in the past after a poll");
                }
            }
        }
    }
    let payload = Bytes::copy_from_slice(red_payload);
    if let Some(split) = red::split(&payload) {
        let total: usize = split
            .redundant
            .iter()
            .map(|b| b.payload.len())
            .sum::<usize>()
            + split.primary.payload.len();
        assert!(total <= payload.len());
    }
}
