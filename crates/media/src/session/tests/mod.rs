//! Whole sessions on simulated time (`super::sim`): `core` (handshake, consent,
//! housekeeping), `core_feedback` (RTCP feedback), `early` (datagrams before the route),
//! `handshake` (DTLS), `pitfall` (what publishers get wrong), `repair` (loss repair with RTX
//! and RED), `negotiate_cost` (CPU per offer/answer).

mod core;
mod core_feedback;
mod early;
mod goodbye;
mod handshake;
mod negotiate_cost;
mod pitfall;
mod repair;
