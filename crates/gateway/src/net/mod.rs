//! The network plumbing under the edges: the bounded accept loop (`accept`), TLS
//! ([`tls`]), per-client connection slots ([`client`]) and bounding of outside strings
//! ([`untrusted`]).

pub(crate) mod accept;
pub mod client;
pub mod tls;
pub mod untrusted;
