//! whipgate-media: the parts of the media path that are pure computation on packets and time,
//! with no sockets, no tokio and no registry. The gateway's media driver (`crates/gateway`,
//! `media/`) feeds them bytes and `Instant`s and applies what they return; every module here
//! is tested on simulated time or plain bytes.
//!
//! | module | owns |
//! |---|---|
//! | [`codec`] | the codec table, what an offer negotiated ([`codec::OfferPlan`]), the consumer SDP |
//! | [`h264`] | the H.264 RTP payload format walked once (single NAL, STAP-A, FU-A) |
//! | [`keyframe`] | keyframe detection for every video codec |
//! | [`facts`] | stream facts read from forwarded RTP (resolution, frame rate, keyframe interval, B-frames) |
//! | [`continuity`] | one SSRC and sequence/timestamp space per output stream across publishers |
//! | [`repair`] | loss repair: holes, NACK timing, give-up, duplicates |
//! | [`red`] | RED (RFC 2198) split into its blocks |
//!
//! Still in the gateway crate, to move here next: the session core (`media/session.rs` and its
//! `impl` blocks), negotiation, simulcast, Sender Reports and ICE authentication.

pub mod codec;
pub mod continuity;
pub mod facts;
pub mod h264;
pub mod keyframe;
pub mod red;
pub mod repair;
