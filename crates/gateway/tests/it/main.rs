#![allow(unreachable_pub)]
// Release builds of the cluster tests nest deep async layouts (cluster_control::three_nodes).
#![recursion_limit = "256"]
//! One integration binary: the whole gateway in-process, real WebRTC publishers, real gRPC,
//! real HTTP, real UDP sinks.

mod cluster_control;
mod cluster_events;
mod cluster_failover;
mod cluster_gateway;
mod cluster_redis;
mod cluster_trust;
mod cluster_views;
mod config_cli;
mod consumer_sdp;
mod control;
mod ctl;
mod drain;
mod edge_http;
mod events_sse;
mod facts;
mod grafana;
mod hardening;
mod harness;
mod limits;
mod load_paths;
mod load_smoke;
mod publisher;
mod read_api;
mod redis_harness;
mod restart;
mod simulcast;
mod spoof;
mod tls;
mod tls_binary;
mod tls_pki;
mod tokens;
mod whip;
mod workers;
