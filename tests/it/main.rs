#![allow(unreachable_pub)]
//! One integration binary: the whole gateway in-process, real WebRTC publishers, real gRPC,
//! real HTTP, real UDP sinks.

mod config_cli;
mod control;
mod drain;
mod edge_http;
mod hardening;
mod harness;
mod load_smoke;
mod publisher;
mod restart;
mod simulcast;
mod spoof;
mod whip;
