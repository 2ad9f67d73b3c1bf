#![allow(unreachable_pub)]
//! One integration binary: the whole gateway in-process, real WebRTC publishers, real gRPC,
//! real HTTP, real UDP sinks.

mod control;
mod facts;
mod harness;
mod load_smoke;
mod publisher;
mod restart;
mod simulcast;
mod spoof;
mod whip;
