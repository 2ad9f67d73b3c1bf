//! whipgate: a WHIP (RFC 9725) ingest gateway. Publishers push WebRTC over WHIP; whipgate
//! forwards the received RTP as plain RTP over UDP to the targets an orchestrator registered
//! over gRPC.
//!
//! The gateway crate of the workspace (`crates/gateway`); the control-plane contract is
//! `whipgate-proto`, `whipgate ctl` is `whipgate-ctl`, the load generator `whipgate-load`.
//!
//! Where things live:
//!
//! | module | owns |
//! |---|---|
//! | [`app`] | the configuration ([`app::config`]: flags, environment, file; each component's settings converted from it once), binding listeners, wiring, running, drain and shutdown |
//! | [`net`] | the bounded accept loop, HTTPS and gRPC TLS (rustls: PEM loading, the certificate swapped on reload, per-connection handshakes), per-client connection slots, outside strings bounded and escaped for logs and events |
//! | [`edge`] | the HTTP-facing edges: [`edge::whip`] (routes, handlers, SDP offer checks, CORS, the publish page), [`edge::events`] (`/events`, SSE, and its hub), [`edge::dashboard`] (the dashboard and `/api/ingests`) |
//! | [`control`] | the tonic `IngestControl` service and proto conversions (the wire types and their JSON form are `whipgate_proto`) |
//! | [`registry`] | the shared state: ingests, admission, live sessions, caps, the event log; restored from and written to the store |
//! | [`store`] | what outlives the process, behind one trait: the embedded redb store (default) or memory |
//! | [`media`] | the only webrtc-rs importer: the one UDP port and ICE-TCP port (mux), per-core media workers driving the sessions, simulcast, ICE restart, RTP -> UDP |
//! | [`topology`] | the one seam to cluster mode: what the edges ask about other gateways, answered alone or from Redis ([`topology::cluster`]: the Redis topology's internals: node records, publisher leases, shared state, one event stream, routed control calls) |
//! | [`error`] | the one error type and its HTTP / gRPC status mapping |
//! | [`secret`], [`metrics`] | constant-time checks of the API key and bearer tokens, Prometheus metrics |
//! | `whipgate_media` (crate) | codecs and consumer SDP, keyframes, stream facts, output stream continuity, loss repair, RED: pure, no I/O |
//! | `fuzzing` (hidden) | entry points for the cargo-fuzz targets in `fuzz/`; not an API |

pub mod app;
pub mod control;
pub mod edge;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod media;
pub mod metrics;
pub mod net;
pub mod registry;
pub mod secret;
pub mod store;
pub mod topology;

pub use app::config::Config;
pub use app::{Bound, Gateway};
pub use error::Error;

//
// A publish, end to end: `edge::whip::publish` checks the request and the offer (`edge::whip::offer`),
// `registry::Registry::admit` decides atomically, `media::Media::publish` negotiates with
// webrtc-rs and spawns `media::session`, whose task feeds the peer connection from
// `media::mux` and forwards RTP through `media::forward`; every change shows up as an event
// (`registry::events`) that `control` streams to watchers.
