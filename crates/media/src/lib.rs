//! whipgate-media: the media core, sans-IO. No sockets, no tokio, no registry, no clock: the
//! gateway's media driver (`crates/gateway`, `driver/`) feeds it datagrams and `Instant`s and
//! applies what it returns. Every module here is tested on simulated time or plain bytes.
//!
//! | module | owns |
//! |---|---|
//! | [`session`] | one publisher's session: `handle_input(now, Input)` / `poll_output() -> Output` |
//! | [`offer`] | the offer check and codec choice |
//! | [`peer`] | the ICE-lite, receive-only peer connection a publish negotiates |
//! | [`route`] | the media port's routing table: sessions by ufrag and by authenticated source address |
//! | [`ice_auth`] | authentication of ICE checks before they may route anything |
//! | [`codec`] | the codec table, what an offer negotiated ([`codec::OfferPlan`]), the consumer SDP |
//! | [`h264`] | the H.264 RTP payload format walked once (single NAL, STAP-A, FU-A) |
//! | [`keyframe`] | keyframe detection for every video codec |
//! | [`facts`] | stream facts read from forwarded RTP (resolution, frame rate, keyframe interval, B-frames) |
//! | [`continuity`] | one SSRC and sequence/timestamp space per output stream across publishers |
//! | [`repair`] | loss repair: holes, NACK timing, give-up, duplicates |
//! | [`red`] | RED (RFC 2198) split into its blocks |

pub mod codec;
pub mod continuity;
pub mod facts;
#[cfg(any(feature = "_fuzz", test))]
pub mod fuzz;
pub mod h264;
pub mod ice_auth;
pub mod keyframe;
pub mod offer;
pub mod peer;
pub mod red;
pub mod repair;
pub mod route;
pub mod session;
