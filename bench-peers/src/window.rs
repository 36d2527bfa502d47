//! The bounded window of sends still waiting for their acknowledgement: a producer pushes one
//! future per send (one record for NATS, one pipeline for Redis) and only waits when the window
//! is full, so sends and acknowledgements overlap without an unbounded backlog.

use std::time::Instant;

use futures::FutureExt;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use sluice_bench::Progress;

/// What one acknowledged send settled: records stored and records refused.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Records the server acknowledged.
    pub ok: u64,
    /// Records the server refused or never answered for.
    pub failed: u64,
    /// Why records failed, when they did.
    pub error: Option<String>,
}

impl Outcome {
    /// `n` records acknowledged.
    pub fn acked(n: u64) -> Self {
        Self {
            ok: n,
            ..Self::default()
        }
    }

    /// `n` records lost for `why`.
    pub fn failed(n: u64, why: impl ToString) -> Self {
        Self {
            ok: 0,
            failed: n,
            error: Some(why.to_string()),
        }
    }
}

/// Everything a producer's window settled.
#[derive(Debug)]
pub struct Tally {
    /// Records acknowledged.
    pub ok: u64,
    /// Records that failed.
    pub failed: u64,
    /// When the last acknowledgement (or failure) arrived.
    pub last: Instant,
    /// The first failure's reason.
    pub first_error: Option<String>,
}

/// Up to `limit` unacknowledged sends.
pub struct AckWindow {
    pending: FuturesUnordered<BoxFuture<'static, Outcome>>,
    limit: usize,
    tally: Tally,
    progress: Option<Progress>,
}

impl AckWindow {
    /// An empty window of `limit` sends (at least 1) that counts into `progress`.
    pub fn new(limit: usize, progress: Option<Progress>) -> Self {
        Self {
            pending: FuturesUnordered::new(),
            limit: limit.max(1),
            tally: Tally {
                ok: 0,
                failed: 0,
                last: Instant::now(),
                first_error: None,
            },
            progress,
        }
    }

    /// Adds a send, first waiting for room. The send is polled at once, so a client that only
    /// writes its request when polled (redis-rs) sends it now rather than when the window fills.
    pub async fn push(&mut self, send: BoxFuture<'static, Outcome>) {
        while self.pending.len() >= self.limit {
            if let Some(o) = self.pending.next().await {
                self.settle(o);
            }
        }
        self.pending.push(send);
        self.poll_ready();
    }

    /// Settles acknowledgements while waiting for `until` (the next send of a fixed-rate run).
    pub async fn idle_until(&mut self, until: tokio::time::Instant) {
        // A send already due goes at once (a timer per send would cost the timer lock).
        while until <= tokio::time::Instant::now() {
            match self.pending.next().now_or_never() {
                Some(Some(o)) => self.settle(o),
                _ => return,
            }
        }
        loop {
            if self.pending.is_empty() {
                tokio::time::sleep_until(until).await;
                return;
            }
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(until) => return,
                Some(o) = self.pending.next() => self.settle(o),
            }
        }
    }

    /// Waits for every outstanding acknowledgement and returns the totals.
    pub async fn finish(mut self) -> Tally {
        while let Some(o) = self.pending.next().await {
            self.settle(o);
        }
        self.tally
    }

    /// Polls the pending sends once without waiting, settling those already answered.
    fn poll_ready(&mut self) {
        while let Some(Some(o)) = self.pending.next().now_or_never() {
            self.settle(o);
        }
    }

    fn settle(&mut self, o: Outcome) {
        self.tally.ok += o.ok;
        self.tally.failed += o.failed;
        self.tally.last = Instant::now();
        if self.tally.first_error.is_none() {
            self.tally.first_error = o.error;
        }
        if let Some(p) = &self.progress {
            p.inc(o.ok + o.failed);
        }
    }
}

/// Adds up the producers' tallies: (acknowledged, failed, time of the last answer, first error).
/// The last answer is `start` when nothing was answered.
pub async fn combine(
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
    start: Instant,
) -> anyhow::Result<(u64, u64, Instant, Option<String>)> {
    let (mut acked, mut failed, mut end, mut why) = (0, 0, start, None);
    for t in tasks {
        let tally = t.await?;
        acked += tally.ok;
        failed += tally.failed;
        end = end.max(tally.last);
        why = why.or(tally.first_error);
    }
    Ok((acked, failed, end, why))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn never_holds_more_than_the_limit() {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut w = AckWindow::new(3, None);
        for i in 0..20u64 {
            let (f, p) = (in_flight.clone(), peak.clone());
            let now = f.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            w.push(Box::pin(async move {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                f.fetch_sub(1, Ordering::SeqCst);
                if i % 5 == 0 {
                    Outcome::failed(1, "refused")
                } else {
                    Outcome::acked(1)
                }
            }))
            .await;
        }
        let t = w.finish().await;
        assert_eq!((t.ok, t.failed), (16, 4));
        assert_eq!(t.first_error.as_deref(), Some("refused"));
        assert!(peak.load(Ordering::SeqCst) <= 4);
    }
}
