//! Control plane: RPCs, events, caps, auth, health, metrics.
