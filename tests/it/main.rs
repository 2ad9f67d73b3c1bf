#![allow(unreachable_pub)]
//! One integration binary: the whole gateway in-process, real WebRTC publishers, real gRPC,
//! real HTTP, real UDP sinks.

mod consumer_sdp;
mod control;
mod ctl;
mod events_sse;
mod facts;
mod grafana;
mod harness;
mod load_smoke;
mod publisher;
mod restart;
mod simulcast;
mod spoof;
mod whip;
