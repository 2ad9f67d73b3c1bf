//! WHIP edge: publishing, forwarding, every status code, cleanup; tests by topic.

mod forward;
mod pitfalls;
mod session;
mod status;
