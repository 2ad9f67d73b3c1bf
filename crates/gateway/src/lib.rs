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
//! | [`driver`] | the only I/O around the media core (`whipgate_media`): the one UDP port and ICE-TCP port, per-core media workers and setup threads driving the sessions, negotiation threads, send batches, the session's events to the registry and its counters to Prometheus |
//! | [`topology`] | the one seam to cluster mode: what the edges ask about other gateways, answered alone or from Redis ([`topology::cluster`]: the Redis topology's internals: node records, publisher leases, shared state, one event stream, routed control calls) |
//! | [`error`] | the one error type and its HTTP / gRPC status mapping |
//! | [`secret`], [`metrics`] | constant-time checks of the API key and bearer tokens, Prometheus metrics |
//! | `whipgate_media` (crate) | the media core, sans-IO: the publisher session (`handle_input` / `poll_output`), the offer check, the peer connection, the routing table and ICE authentication, codecs and consumer SDP, keyframes, stream facts, continuity, loss repair, RED |
//! | `fuzzing` (hidden) | entry points for the cargo-fuzz targets in `fuzz/`; not an API |

pub mod app;
pub mod control;
pub mod driver;
pub mod edge;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod net;
pub mod registry;
pub mod secret;
pub mod store;
pub mod topology;

pub use app::config::Config;
pub use app::{Bound, Gateway, Reloader};
pub use error::Error;

//
// A publish, end to end: `edge::whip::publish` checks the request and the offer
// (`whipgate_media::offer`), `registry::Registry::admit` decides atomically,
// `driver::Media::publish` negotiates on a negotiation thread, builds a
// `whipgate_media::session::Session` and spawns its control task; the media workers feed it the
// datagrams the routing table sends its way and apply its output (`driver::cell`): forwarded
// RTP into send batches, events into the registry (`registry::events`), which `control`
// streams to watchers.
