//! The async runtime a benchmark process runs on. W3 sends at a fixed rate that needs less than
//! a core, so by default it runs on one worker: with more, a record's send, acknowledgement and
//! receipt wake each other across threads, which on a machine the servers share costs this
//! process more CPU and raises the tail latency it measures.
//! W1 and W2 run as fast as they can and get a worker per core.

use std::io;

/// Workers for a workload: `requested` when given, else one for e2e and one per core otherwise.
pub fn worker_threads(requested: Option<usize>, e2e: bool) -> usize {
    match requested {
        Some(n) => n,
        None if e2e => 1,
        None => std::thread::available_parallelism().map_or(1, usize::from),
    }
}

/// A multi-threaded runtime with `workers` async workers (at least one), in a process whose
/// allocator keeps freed batch buffers (see [`crate::allocator`]).
pub fn build(workers: usize) -> io::Result<tokio::runtime::Runtime> {
    if !crate::allocator::keep_freed_buffers() {
        tracing::debug!("allocator settings not applied (not glibc)");
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e2e_defaults_to_one_worker_and_a_request_wins() {
        assert_eq!(worker_threads(None, true), 1);
        assert!(worker_threads(None, false) >= 1);
        assert_eq!(worker_threads(Some(3), true), 3);
        let rt = build(0).unwrap();
        assert_eq!(rt.block_on(async { 7 }), 7);
    }
}
