//! whipgate: a WHIP (RFC 9725) ingest gateway. Publishers push WebRTC over WHIP; whipgate
//! forwards the received RTP as plain RTP over UDP to the targets an orchestrator registered
//! over gRPC.
//!
//! Where things live:
//!
//! | module | owns |
//! |---|---|
//! | [`whip`] | the HTTP edge: routes, handlers, SDP offer checks, CORS |
//! | [`registry`] | the shared state: ingests, sessions, caps, the event log |
//! | [`media`] | the only webrtc-rs importer: the one UDP socket, peers, RTP -> UDP |
//! | [`control`] | the tonic `IngestControl` service and proto conversions |
//! | [`gateway`] | binding listeners, wiring, graceful shutdown |
//! | [`error`] | the one error type and its HTTP / gRPC status mapping |
//! | [`config`], [`metrics`], [`codec`], [`continuity`] | configuration, Prometheus metrics, codecs and consumer SDP, output stream continuity across reconnects |

pub mod codec;
pub mod config;
pub mod continuity;
pub mod control;
pub mod error;
pub mod gateway;
pub mod media;
pub mod metrics;
pub mod registry;
pub mod whip;

pub use config::Config;
pub use error::Error;
pub use gateway::{Bound, Gateway};
