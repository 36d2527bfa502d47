//! Fault injection for tests, switched by files in a directory given with the hidden
//! `--faults-dir` flag (off when unset). Faults are first-class so the integration harness can
//! isolate a leader from its followers or drop a produce answer without touching the network.

use std::path::PathBuf;

/// Stops this node, as leader, from sending data to its followers.
pub const BLOCK_REPLICATION: &str = "block-replication";
/// Drops the answer of the next successful produce (the batch is written; the client sees a
/// retriable timeout and retries). One-shot: the file is removed when it fires.
pub const DROP_PRODUCE_RESPONSE: &str = "drop-produce-response";

/// The fault switches of one node.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    dir: Option<PathBuf>,
}

impl Faults {
    /// Faults read from `dir` (none when `None`).
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    /// Whether the fault is switched on.
    pub fn active(&self, name: &str) -> bool {
        self.dir.as_ref().is_some_and(|d| d.join(name).exists())
    }

    /// Whether a one-shot fault is on; consumes it.
    pub fn take(&self, name: &str) -> bool {
        self.dir
            .as_ref()
            .is_some_and(|d| std::fs::remove_file(d.join(name)).is_ok())
    }
}
