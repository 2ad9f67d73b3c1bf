//! The HTTP-facing edges: WHIP itself ([`whip`]: publish, trickle, stop, the publish page,
//! who may read), the event stream and its hub ([`events`]: `/events`, SSE), and the
//! dashboard ([`dashboard`]: the page and its `/api/ingests` snapshot). The pages they serve
//! are in `static/`.

pub mod dashboard;
pub mod events;
pub mod tokens;
pub mod whip;
