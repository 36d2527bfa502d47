//! Fault injection for tests, switched by files in a directory given with the hidden
//! `--faults-dir` flag (off when unset). Faults are first-class so the test harnesses (the
//! multi-process `TestCluster` and the in-process sandbox) can isolate a leader from its
//! followers, refuse, delay or hold produce requests, or drop a produce answer, without touching
//! the network.

use std::path::PathBuf;

/// Stops this node, as leader, from sending data to its followers.
pub const BLOCK_REPLICATION: &str = "block-replication";
/// Drops the answer of the next successful produce (the batch is written; the client sees a
/// retriable timeout and retries). One-shot: the file is removed when it fires.
pub const DROP_PRODUCE_RESPONSE: &str = "drop-produce-response";

/// Refuses the next produce requests before the append: the file holds the error code's name
/// (e.g. `NOT_ENOUGH_REPLICAS`) and, after a space, how many requests to refuse (default 1).
pub const REFUSE_PRODUCE: &str = "refuse-produce";
/// Delays every produce request by the milliseconds the file holds.
pub const DELAY_PRODUCE: &str = "delay-produce";
/// Holds every produce request before the append while the file exists, as a stopped process
/// would.
pub const HOLD_PRODUCE: &str = "hold-produce";

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

    /// The text of a fault's file, when it is switched on.
    pub fn read(&self, name: &str) -> Option<String> {
        let dir = self.dir.as_ref()?;
        std::fs::read_to_string(dir.join(name)).ok()
    }

    /// Applies the produce faults before an append: waits while held, sleeps when delayed, and
    /// returns the error of a refusal (counting it down).
    pub async fn before_produce(&self) -> Option<sluice_proto::error::ApiError> {
        self.dir.as_ref()?;
        while self.active(HOLD_PRODUCE) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if let Some(ms) = self.read(DELAY_PRODUCE).and_then(|t| t.trim().parse().ok()) {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        let text = self.read(REFUSE_PRODUCE)?;
        let mut words = text.split_whitespace();
        let code = sluice_proto::pb::ErrorCode::from_str_name(words.next()?)?;
        let left: u32 = words.next().and_then(|n| n.parse().ok()).unwrap_or(1);
        let path = self.dir.as_ref()?.join(REFUSE_PRODUCE);
        if left <= 1 {
            let _ = std::fs::remove_file(path);
        } else {
            let _ = std::fs::write(path, format!("{} {}", code.as_str_name(), left - 1));
        }
        Some(sluice_proto::error::ApiError::new(
            code,
            "fault injection: produce refused before the append",
        ))
    }
}
