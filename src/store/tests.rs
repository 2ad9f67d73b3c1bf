//! Store round trips on the embedded implementation (in memory and on disk).
