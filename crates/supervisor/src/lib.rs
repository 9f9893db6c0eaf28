//! Daemon supervision.
