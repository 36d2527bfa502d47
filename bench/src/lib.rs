//! Benchmark workloads for Sluice and its peers.
//!
//! The three workloads of `BENCHMARKS.md` — W1 produce as fast as acknowledgements allow, W2 read
//! it all back, W3 send at a fixed rate while a consumer tails and measure send→receive latency —
//! share their payloads, latency histograms and report format here, so `sluice bench` and
//! `sluice-peer-bench` (NATS JetStream, Redis Streams) measure the same thing the same way.

pub mod allocator;
pub mod latency;
pub mod payload;
pub mod progress;
pub mod report;
pub mod runtime;
pub mod sluice;
pub mod workload;

pub use latency::{LatencyRecorder, LatencySummary};
pub use payload::Payloads;
pub use progress::Progress;
pub use report::Report;
pub use workload::Workload;
