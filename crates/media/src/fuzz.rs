//! Fuzz entry points over the media core's internals: the media port's routing (STUN
//! authentication), the offer planner, the real negotiation, ICE restart, the forwarder with the
//! ingest's continuity, loss repair and RED.
//! Compiled with the `_fuzz` feature (the gateway's `_fuzz` feature enables it; the fuzz crate
//! reaches these through `whipgate::fuzzing`) and in unit tests, so a change that breaks a
//! wrapper breaks `cargo test`, not only the fuzz run. Each takes attacker-shaped bytes and must
//! never panic.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::crypto::RTCCrypto;
use rtc::rtcp::sender_report::SenderReport;
use rtc::shared::marshal::{Marshal, Unmarshal};
use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{BINDING_REQUEST, Message, Setter};
use rtc::stun::textattrs::TextAttribute;
use uuid::Uuid;

use crate::codec::{AudioCodec, MediaKind, OfferPlan, VideoCodec};
use crate::continuity::Continuity;
use crate::ice_auth;
use crate::offer::{self, Accepted};
use crate::peer::{self, PeerFactory};
use crate::route::Router;
use crate::session::forward::{Forwarder, Targets};
use crate::session::restart;
use crate::{keyframe, red, repair};

/// A binding request as a publisher sends it, optionally without integrity or fingerprint.
pub fn binding_request(
    username: &str,
    pwd: Option<&str>,
    fingerprint: bool,
    crypto: &dyn RTCCrypto,
) -> Vec<u8> {
    let mut m = Message::new();
    let mut setters: Vec<Box<dyn Setter + '_>> = vec![
        Box::new(BINDING_REQUEST),
        Box::new(TextAttribute::new(ATTR_USERNAME, username.to_owned())),
    ];
    if let Some(pwd) = pwd {
        setters.push(Box::new(
            MessageIntegrity::new_short_term_integrity_with_provider(pwd.to_owned(), crypto),
        ));
    }
    if fingerprint {
        setters.push(Box::new(FINGERPRINT));
    }
    m.build(&setters).expect("a binding request");
    m.raw.clone()
}

/// The video codecs an ingest accepts, as `selector` picks them (never none; bit 5 reverses
/// the order of preference).
pub fn video_codecs(selector: u8) -> Vec<VideoCodec> {
    let all = [
        VideoCodec::H264,
        VideoCodec::Vp8,
        VideoCodec::Vp9,
        VideoCodec::Av1,
        VideoCodec::H265,
    ];
    let mut codecs: Vec<VideoCodec> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| selector & (1 << i) != 0)
        .map(|(_, c)| *c)
        .collect();
    if codecs.is_empty() {
        codecs = all.to_vec();
    }
    if selector & 0x20 != 0 {
        codecs.reverse();
    }
    codecs
}

fn plan(offer: &str, selector: u8) -> Option<OfferPlan> {
    let video = video_codecs(selector);
    let accepted = Accepted {
        video: &video,
        audio: &[AudioCodec::Opus],
    };
    offer::plan(offer, accepted).ok()
}

/// The SDP offer planner on `data`: its first byte picks the accepted codecs
/// ([`video_codecs`]), the rest is the offer (not UTF-8: refused like the HTTP edge refuses it).
pub fn plan_offer(data: &[u8]) -> Option<(String, OfferPlan)> {
    let (&selector, offer) = data.split_first()?;
    let offer = std::str::from_utf8(offer).ok()?;
    let plan = plan(offer, selector)?;
    Some((offer.to_owned(), plan))
}

fn factory() -> &'static PeerFactory {
    static FACTORY: OnceLock<PeerFactory> = OnceLock::new();
    FACTORY.get_or_init(|| {
        let udp = SocketAddr::from(([127, 0, 0, 1], 8189));
        PeerFactory::new(vec![udp], vec![udp]).expect("peer factory")
    })
}

/// The ufrag the STUN and ICE-restart targets route (seeds carry it in USERNAME).
pub const FUZZ_UFRAG: &str = "fuzzufrag";
/// The ICE password that goes with [`FUZZ_UFRAG`] (seeds' MESSAGE-INTEGRITY uses it).
pub const FUZZ_PWD: &str = "fuzzpasswordfuzzpassword";

/// The routing of one UDP datagram from anyone (`Router::dispatch`), then the same bytes as the
/// first frame of an ICE-TCP connection (`Router::claim_tcp`). One session is routed for
/// [`FUZZ_UFRAG`] / [`FUZZ_PWD`]. Checks that an address is bound, and a TCP connection
/// claimed, only by a binding request whose MESSAGE-INTEGRITY verifies with that password; that
/// a datagram from an unbound address is never delivered unless it bound it; and that dropping
/// the route leaves nothing behind. Returns whether the datagram was routed.
pub fn stun_route(packet: &[u8]) -> bool {
    static ROUTER: OnceLock<Router<Uuid, u32>> = OnceLock::new();
    let router = ROUTER.get_or_init(|| Router::new(factory().crypto()));
    let session = Uuid::from_u128(7);
    let route = router.route(FUZZ_UFRAG.to_owned(), FUZZ_PWD, session, session);
    let from = SocketAddr::from(([127, 0, 0, 2], 40_000));
    let dispatched = router.dispatch(packet, from, Instant::now());
    let routed = dispatched.is_ok();
    if let Ok(to) = dispatched {
        assert_eq!(to, session, "routed to the one session");
    }
    let bound = router.session_of(from);
    let claimed = router
        .claim_tcp(packet, SocketAddr::from(([127, 0, 0, 3], 40_000)), 1)
        .is_ok();
    if routed || bound.is_some() || claimed {
        assert!(
            verifies(packet),
            "routed, bound or claimed without a valid integrity"
        );
        assert_eq!(bound, Some(session), "a routed check binds its address");
    }
    drop(route);
    assert_eq!(router.routes(), 0, "a dropped route leaves nothing behind");
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
    let plan = plan(offer, 0)?;
    let now = Instant::now();
    let mut negotiated = factory().negotiate(offer.to_owned(), &plan, now).ok()?;
    Some(restart::restart(&mut negotiated.peer, fragment, now).is_ok())
}

/// RTP and RTCP through a session's forwarder and the ingest's continuity state. `data` is a
/// sequence of records `op, len_hi, len_lo, bytes[len]`: op % 4: 0 an RTP packet forwarded
/// (and marshalled as the driver would), 1 an RTP packet skipped (padding), 2 an RTCP compound
/// packet whose Sender Reports are forwarded, 3 a reconnect (a new forwarder, a new session,
/// the same continuity); op & 4: audio instead of video. Every RTP payload also goes through
/// keyframe detection for each video codec.
pub fn forward_rtp(data: &[u8]) {
    static PLAN: OnceLock<OfferPlan> = OnceLock::new();
    let plan = PLAN.get_or_init(|| {
        let offer = concat!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n",
            "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n",
            "a=rtpmap:96 H264/90000\r\n",
            "a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\n",
            "a=rtpmap:111 opus/48000/2\r\n",
        );
        plan(offer, 1).expect("the fuzz offer plans")
    });
    let targets = Targets {
        video: Some(SocketAddr::from(([127, 0, 0, 1], 9))),
        audio: Some(SocketAddr::from(([127, 0, 0, 1], 11))),
    };
    let continuity = Arc::new(Mutex::new(Continuity::default()));
    let mut forwarder = Forwarder::new(Uuid::new_v4(), targets, Arc::clone(&continuity), plan);
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
                if op % 4 == 0 {
                    if forwarder.map(kind, &mut packet, now).is_some() {
                        let _ = packet.marshal();
                    }
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
                    if let Some((_, mapped)) = forwarder.map_report(kind, report) {
                        let _ = mapped.marshal();
                    }
                }
            }
            _ => {
                // The publisher reconnects: a new session on the same ingest continuity.
                forwarder = Forwarder::new(Uuid::new_v4(), targets, Arc::clone(&continuity), plan);
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
