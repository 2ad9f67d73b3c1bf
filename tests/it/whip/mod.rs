//! WHIP edge: publishing, forwarding, every status code, cleanup; tests by topic.

mod forward;
mod session;
mod status;
