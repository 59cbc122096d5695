//! The latency harness.
