//! Who writes a group: the queue of log changes and the single "writer role" over it.
//!
//! Every change is queued here, in submission order, and only the holder of the role takes
//! changes off the queue and writes them, so groups are written one at a time and in order, as
//! group commit needs. Two kinds of holder take turns:
//! - an **async task**, when nobody holds the role and the change is small: the submitter
//!   spawns a task on its own runtime that writes the group (a few tens of microseconds into
//!   the page cache), which saves the two thread hops of handing the change over and being
//!   woken with the result; on a busy three-node cluster (W3 RF 3) those hops would be most of
//!   the context switches. The task runs after the tasks already woken, so the changes they
//!   submit meanwhile (the other batches of a `ProduceMany`, the chunks of other partitions
//!   that came in the same replication message) join its group instead of each being a write
//!   of its own;
//! - the **writer thread**, for everything else: large batches, truncations and deletions, any
//!   change when appends fsync (milliseconds a group), and whatever queues up while a group is
//!   written, so that under load the thread drains many changes into one write.
//!
//! An async task writes one group at most: when more changes queued meanwhile it hands the role
//! to the thread instead of writing on, so an async worker is never held for long.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::Semaphore;

use super::{Job, MAX_GROUP_BYTES, QUEUE_DEPTH, job_bytes};
use crate::log::LogStore;

/// Largest group a submitting task writes itself; larger changes go to the writer thread.
pub(super) const INLINE_MAX_BYTES: usize = 256 << 10;

/// The queue and who holds the role.
#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Somebody (a task or the thread) holds the writer role.
    busy: bool,
    /// The role is the thread's: it takes the queue until the queue is empty.
    thread_turn: bool,
    /// Every `Writer` handle is gone: the thread drains what is left and stops.
    closed: bool,
}

/// What the writer handles and the writer thread share.
pub(super) struct Queue {
    state: Mutex<State>,
    /// Wakes the thread when the role becomes its own, or at close.
    thread_wake: Condvar,
    /// One permit per queued append, replication or truncation: submitters wait (backpressure)
    /// while [`QUEUE_DEPTH`] of them are queued.
    permits: Semaphore,
    log: Arc<dyn LogStore>,
    /// Submitting tasks may write small groups themselves (off when appends fsync).
    inline: bool,
}

/// The role, held by a spawned task that has not run yet: if the runtime drops the task
/// instead (it is shutting down), the role goes to the thread, so nothing queued is stranded.
struct InlineTurn(Option<Arc<Queue>>);

impl Drop for InlineTurn {
    fn drop(&mut self) {
        if let Some(queue) = self.0.take() {
            queue.lock().thread_turn = true;
            queue.thread_wake.notify_one();
        }
    }
}

/// A group taken off the queue, or one change that is written alone.
enum Turn {
    Group(Vec<Job>),
    Alone(Job),
}

impl Queue {
    pub(super) fn new(log: Arc<dyn LogStore>, inline: bool) -> Self {
        Self {
            state: Mutex::new(State::default()),
            thread_wake: Condvar::new(),
            permits: Semaphore::new(QUEUE_DEPTH),
            log,
            inline,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("writer queue poisoned")
    }

    /// Waits for room in the queue; the permit is given back when the change is taken off it.
    pub(super) async fn reserve(&self) {
        // The semaphore is never closed, so acquiring fails never.
        if let Ok(p) = self.permits.acquire().await {
            p.forget();
        }
    }

    /// Queues `job` (room reserved with [`Queue::reserve`] unless it is a deletion) and, when
    /// nobody writes, either spawns a task that writes it (with whatever joins it meanwhile) or
    /// hands the role to the thread.
    pub(super) fn push(self: &Arc<Self>, job: Job) {
        let small = matches!(job, Job::Append { .. } | Job::Replicate { .. })
            && job_bytes(&job) <= INLINE_MAX_BYTES;
        let mut s = self.lock();
        s.jobs.push_back(job);
        if s.busy {
            // The holder takes it with its next group.
            return;
        }
        s.busy = true;
        let runtime = tokio::runtime::Handle::try_current();
        match runtime {
            Ok(runtime) if self.inline && small => {
                drop(s);
                let turn = InlineTurn(Some(self.clone()));
                runtime.spawn(async move {
                    let mut turn = turn;
                    if let Some(queue) = turn.0.take() {
                        queue.write_inline();
                    }
                });
            }
            _ => {
                s.thread_turn = true;
                drop(s);
                self.thread_wake.notify_one();
            }
        }
    }

    /// Writes one group as the holder of the role, then releases it, or hands it to the
    /// thread when more queued meanwhile.
    fn write_inline(&self) {
        let turn = self.take(&mut self.lock(), INLINE_MAX_BYTES);
        if let Some(turn) = turn {
            self.write(turn);
        }
        let mut s = self.lock();
        if s.jobs.is_empty() {
            s.busy = false;
        } else {
            s.thread_turn = true;
            drop(s);
            self.thread_wake.notify_one();
        }
    }

    /// Marks the queue closed (the last handle is gone) and wakes the thread to drain it.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.thread_wake.notify_one();
    }

    /// The writer thread: takes the role whenever it is handed over, writes until the queue is
    /// empty, and stops once closed and drained.
    pub(super) fn run_thread(&self) {
        loop {
            {
                let mut s = self.lock();
                loop {
                    if s.thread_turn {
                        break;
                    }
                    if s.closed && !s.busy {
                        if s.jobs.is_empty() {
                            return;
                        }
                        s.busy = true;
                        s.thread_turn = true;
                        break;
                    }
                    s = self.thread_wake.wait(s).expect("writer queue poisoned");
                }
            }
            loop {
                let mut s = self.lock();
                let Some(turn) = self.take(&mut s, MAX_GROUP_BYTES) else {
                    // Released under the same lock that saw the queue empty.
                    s.busy = false;
                    s.thread_turn = false;
                    break;
                };
                drop(s);
                self.write(turn);
            }
        }
    }

    /// Takes the next turn off the queue (the holder of the role only, under the lock): the
    /// appends and replications at its front up to `max_bytes` (at least one), or one other
    /// change; `None` when the queue is empty. Their room in the queue is given back.
    fn take(&self, s: &mut State, max_bytes: usize) -> Option<Turn> {
        let front = s.jobs.front()?;
        if !matches!(front, Job::Append { .. } | Job::Replicate { .. }) {
            let job = s.jobs.pop_front()?;
            if !matches!(job, Job::Delete(_)) {
                self.permits.add_permits(1);
            }
            return Some(Turn::Alone(job));
        }
        let mut group = Vec::new();
        let mut bytes = 0;
        while let Some(front) = s.jobs.front() {
            let size = job_bytes(front);
            let data = matches!(front, Job::Append { .. } | Job::Replicate { .. });
            if !data || (!group.is_empty() && bytes + size > max_bytes) {
                break;
            }
            bytes += size;
            group.extend(s.jobs.pop_front());
        }
        self.permits.add_permits(group.len());
        Some(Turn::Group(group))
    }

    fn write(&self, turn: Turn) {
        match turn {
            Turn::Group(mut group) => super::write_group(self.log.as_ref(), &mut group),
            Turn::Alone(job) => super::run_alone(self.log.as_ref(), job),
        }
    }
}
