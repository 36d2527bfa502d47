//! The embedded backend: a [`MetaStore`] kept in process, optionally persisted to one file.
//!
//! It is meant for `sluice dev` and fast unit tests and is **single-process only**: nothing stops
//! two processes from opening the same file, and if they do each silently overwrites the other.
//! Anything with more than one process uses etcd.
//!
//! Semantics follow etcd so that code tested against it behaves the same on etcd: one global
//! revision bumped once per transaction that changed something, create/mod revisions, 0 meaning
//! "absent" in compares, leases whose keys vanish `ttl` after the last keep-alive, and a
//! transaction may not put the same key twice nor delete a key it puts (etcd rejects both).
//!
//! Durability: every change of revision rewrites the whole snapshot (temp file, fsync, rename)
//! *before* it becomes visible, so nothing a reader or watcher saw is lost by a crash. Keys owned
//! by a lease are never written: leases do not survive a restart, as an etcd lease would lapse
//! while its owner is down. Writes run on tokio's blocking pool; a read that meets a write in
//! progress waits for its fsync, which is fine for the small, low-churn data this store holds.
//!
//! Lease expiry is enforced by a background task ticking every [`REAP_INTERVAL`] (so keys vanish
//! at most that late) and by every write. A store created outside a tokio runtime has no such
//! task and only expires leases on writes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use sluice_proto::pb::{EmbeddedEntry, EmbeddedSnapshot};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::store::{
    Compare, LeaseId, MetaStore, Op, PrefixWatch, StoreError, Txn, TxnOutcome, Versioned,
    WatchEvent,
};

/// How often the background task looks for expired leases.
pub const REAP_INTERVAL: Duration = Duration::from_millis(50);

/// Revision batches a watcher may have unread before it is dropped (its stream then ends with
/// an error and the caller re-watches). Writers never wait for watchers.
pub const WATCH_BUFFER: usize = 1024;

/// An in-process [`MetaStore`]; see the module documentation for its guarantees.
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// The snapshot file, or `None` for an in-memory store.
    file: Option<PathBuf>,
}

#[derive(Clone)]
struct Entry {
    value: Bytes,
    create_revision: i64,
    mod_revision: i64,
    lease: LeaseId,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: HashSet<String>,
}

struct Watcher {
    prefix: String,
    tx: mpsc::Sender<Vec<WatchEvent>>,
    lagged: Arc<AtomicBool>,
}

struct State {
    revision: i64,
    kvs: BTreeMap<String, Entry>,
    leases: HashMap<LeaseId, Lease>,
    next_lease: LeaseId,
    watchers: Vec<Watcher>,
}

/// The effect of a transaction's ops, computed before anything is applied.
#[derive(Default)]
struct Staged {
    /// Net new state of every touched key (`None`: deleted).
    overlay: BTreeMap<String, Option<Entry>>,
    /// Changes in op order, as watchers will see them.
    changes: Vec<(String, Option<Entry>)>,
}

impl EmbeddedStore {
    /// Opens (or creates) a store persisted to `path`. Keys that were owned by leases are gone,
    /// and the revision moves past the one on file since that is a change watchers did not see.
    pub fn open(path: impl AsRef<Path>) -> Result<Arc<Self>, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| io_error("creating", parent, &e))?;
        }
        let mut state = State::new();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let snapshot = EmbeddedSnapshot::decode(bytes.as_slice()).map_err(|e| {
                    StoreError::Other(format!("corrupt snapshot {}: {e}", path.display()))
                })?;
                state.revision = snapshot.revision + 1;
                for e in snapshot.entries {
                    let entry = Entry {
                        value: e.value,
                        create_revision: e.create_revision,
                        mod_revision: e.mod_revision,
                        lease: 0,
                    };
                    state.kvs.insert(e.key, entry);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("reading", &path, &e)),
        }
        // Writing at once fails start-up, not the first write, when the path is not writable.
        write_snapshot(&path, &state.encode(state.revision, &BTreeMap::new()))?;
        tracing::debug!(path = %path.display(), revision = state.revision, "opened embedded metadata store");
        Ok(Self::with_state(state, Some(path)))
    }

    /// A store that lives only in memory, for tests.
    pub fn in_memory() -> Arc<Self> {
        Self::with_state(State::new(), None)
    }

    fn with_state(state: State, file: Option<PathBuf>) -> Arc<Self> {
        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            file,
        });
        spawn_reaper(Arc::downgrade(&inner));
        Arc::new(Self { inner })
    }

    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        run_write(&self.inner, f).await
    }
}

/// Runs a write on the blocking pool when it does file I/O, inline otherwise. The blocking task
/// runs to completion even if the caller is cancelled, so memory and file never diverge.
async fn run_write<T, F>(inner: &Arc<Inner>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
{
    if inner.file.is_none() {
        return f(inner);
    }
    let inner = Arc::clone(inner);
    tokio::task::spawn_blocking(move || f(&inner))
        .await
        .map_err(|e| StoreError::Other(format!("embedded store write task failed: {e}")))?
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-applied (changes are staged
        // first, then applied without fallible steps), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(
        &self,
        state: &State,
        revision: i64,
        overlay: &BTreeMap<String, Option<Entry>>,
    ) -> Result<(), StoreError> {
        match &self.file {
            Some(path) => write_snapshot(path, &state.encode(revision, overlay)),
            None => Ok(()),
        }
    }

    /// Deletes the keys of every lease past its deadline, one revision per lease as etcd does.
    fn expire_leases(&self, state: &mut State, now: Instant) {
        let expired: Vec<LeaseId> = state
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            tracing::debug!(lease = id, "lease expired");
            self.drop_lease(state, id);
        }
    }

    /// Removes a lease and deletes its keys at a new revision.
    fn drop_lease(&self, state: &mut State, id: LeaseId) {
        let Some(lease) = state.leases.remove(&id) else {
            return;
        };
        if lease.keys.is_empty() {
            return;
        }
        let revision = state.revision + 1;
        let mut keys: Vec<String> = lease.keys.into_iter().collect();
        keys.sort();
        let changes = keys.into_iter().map(|k| (k, None)).collect();
        // Leased keys are not on file, so only the revision changes there; a failure is logged
        // and repaired by the next successful write, which rewrites the whole snapshot.
        if let Err(error) = self.persist(state, revision, &BTreeMap::new()) {
            tracing::error!(%error, lease = id, "failed to persist lease expiry");
        }
        state.apply(changes, revision);
    }

    fn txn(&self, txn: &Txn) -> Result<TxnOutcome, StoreError> {
        check_intervals(&txn.ops)?;
        let mut state = self.lock();
        self.expire_leases(&mut state, Instant::now());
        if !txn.compares.iter().all(|c| state.holds(c)) {
            return Ok(TxnOutcome {
                succeeded: false,
                revision: state.revision,
            });
        }
        let revision = state.revision + 1;
        let staged = state.stage(&txn.ops, revision)?;
        if staged.changes.is_empty() {
            return Ok(TxnOutcome {
                succeeded: true,
                revision: state.revision,
            });
        }
        self.persist(&state, revision, &staged.overlay)?;
        state.apply(staged.changes, revision);
        Ok(TxnOutcome {
            succeeded: true,
            revision,
        })
    }

    fn keep_alive(&self, id: LeaseId) -> Result<(), StoreError> {
        let mut state = self.lock();
        let now = Instant::now();
        self.expire_leases(&mut state, now);
        let lease = state
            .leases
            .get_mut(&id)
            .ok_or(StoreError::LeaseExpired(id))?;
        lease.deadline = now + lease.ttl;
        Ok(())
    }

    fn revoke(&self, id: LeaseId) -> Result<(), StoreError> {
        let mut state = self.lock();
        self.expire_leases(&mut state, Instant::now());
        if !state.leases.contains_key(&id) {
            return Err(StoreError::LeaseExpired(id));
        }
        self.drop_lease(&mut state, id);
        Ok(())
    }
}

impl State {
    fn new() -> Self {
        Self {
            revision: 1,
            kvs: BTreeMap::new(),
            leases: HashMap::new(),
            // Random start so ids from a previous store in the same process are not reused.
            next_lease: i64::from(rand::random::<u32>()) + 1,
            watchers: Vec::new(),
        }
    }

    fn holds(&self, compare: &Compare) -> bool {
        match compare {
            Compare::ModRevision(key, rev) => {
                self.kvs.get(key).map_or(0, |e| e.mod_revision) == *rev
            }
            Compare::CreateRevision(key, rev) => {
                self.kvs.get(key).map_or(0, |e| e.create_revision) == *rev
            }
        }
    }

    fn range<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a String, &'a Entry)> + 'a {
        self.kvs
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    /// Computes what `ops` would change at `revision` without changing anything.
    fn stage(&self, ops: &[Op], revision: i64) -> Result<Staged, StoreError> {
        let mut staged = Staged::default();
        let current = |staged: &Staged, key: &str| -> Option<Entry> {
            match staged.overlay.get(key) {
                Some(e) => e.clone(),
                None => self.kvs.get(key).cloned(),
            }
        };
        for op in ops {
            match op {
                Op::Put { key, value, lease } => {
                    if *lease != 0 && !self.leases.contains_key(lease) {
                        return Err(StoreError::LeaseExpired(*lease));
                    }
                    let create_revision =
                        current(&staged, key).map_or(revision, |e| e.create_revision);
                    let entry = Entry {
                        value: value.clone(),
                        create_revision,
                        mod_revision: revision,
                        lease: *lease,
                    };
                    staged.overlay.insert(key.clone(), Some(entry.clone()));
                    staged.changes.push((key.clone(), Some(entry)));
                }
                Op::Delete(key) => {
                    if current(&staged, key).is_some() {
                        staged.overlay.insert(key.clone(), None);
                        staged.changes.push((key.clone(), None));
                    }
                }
                Op::DeletePrefix(prefix) => {
                    let mut keys: Vec<String> =
                        self.range(prefix).map(|(k, _)| k.clone()).collect();
                    keys.extend(
                        staged
                            .overlay
                            .keys()
                            .filter(|k| k.starts_with(prefix.as_str()))
                            .cloned(),
                    );
                    keys.sort();
                    keys.dedup();
                    for key in keys {
                        if current(&staged, &key).is_some() {
                            staged.overlay.insert(key.clone(), None);
                            staged.changes.push((key, None));
                        }
                    }
                }
            }
        }
        Ok(staged)
    }

    /// Applies staged changes at `revision` and tells the watchers. Infallible by design.
    fn apply(&mut self, changes: Vec<(String, Option<Entry>)>, revision: i64) {
        self.revision = revision;
        let mut events = Vec::with_capacity(changes.len());
        for (key, new) in changes {
            let old_lease = self.kvs.get(&key).map_or(0, |e| e.lease);
            if old_lease != 0
                && let Some(lease) = self.leases.get_mut(&old_lease)
            {
                lease.keys.remove(&key);
            }
            match new {
                Some(entry) => {
                    if let Some(lease) = self.leases.get_mut(&entry.lease) {
                        lease.keys.insert(key.clone());
                    }
                    events.push(WatchEvent::Put(versioned(&key, &entry)));
                    self.kvs.insert(key, entry);
                }
                None => {
                    self.kvs.remove(&key);
                    events.push(WatchEvent::Delete {
                        key,
                        mod_revision: revision,
                    });
                }
            }
        }
        self.notify(&events);
    }

    /// Sends each watcher its share of one revision's events; drops watchers that are gone or
    /// too far behind (never waits).
    fn notify(&mut self, events: &[WatchEvent]) {
        self.watchers.retain(|w| {
            let batch: Vec<WatchEvent> = events
                .iter()
                .filter(|e| event_key(e).starts_with(w.prefix.as_str()))
                .cloned()
                .collect();
            if batch.is_empty() {
                return !w.tx.is_closed();
            }
            match w.tx.try_send(batch) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(prefix = %w.prefix, buffer = WATCH_BUFFER, "dropping lagging metadata watcher");
                    w.lagged.store(true, Ordering::Release);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    /// The snapshot file's bytes: unleased keys with `overlay` applied, at `revision`.
    fn encode(&self, revision: i64, overlay: &BTreeMap<String, Option<Entry>>) -> Vec<u8> {
        let base = self.kvs.iter().filter(|(k, _)| !overlay.contains_key(*k));
        let staged = overlay
            .iter()
            .filter_map(|(k, e)| e.as_ref().map(|e| (k, e)));
        let mut entries: Vec<EmbeddedEntry> = base
            .chain(staged)
            .filter(|(_, e)| e.lease == 0)
            .map(|(k, e)| EmbeddedEntry {
                key: k.clone(),
                value: e.value.clone(),
                create_revision: e.create_revision,
                mod_revision: e.mod_revision,
            })
            .collect();
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        EmbeddedSnapshot { revision, entries }.encode_to_vec()
    }
}

#[async_trait::async_trait]
impl MetaStore for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(self.inner.lock().kvs.get(key).map(|e| versioned(key, e)))
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<Versioned>, i64), StoreError> {
        let state = self.inner.lock();
        let items = state.range(prefix).map(|(k, e)| versioned(k, e)).collect();
        Ok((items, state.revision))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        self.write(move |inner| inner.txn(&txn)).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        if ttl.is_zero() {
            return Err(StoreError::Other("lease ttl must be positive".into()));
        }
        let mut state = self.inner.lock();
        let id = state.next_lease;
        state.next_lease += 1;
        let lease = Lease {
            ttl,
            deadline: Instant::now() + ttl,
            keys: HashSet::new(),
        };
        state.leases.insert(id, lease);
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.write(move |inner| inner.keep_alive(lease)).await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.write(move |inner| inner.revoke(lease)).await
    }

    async fn watch_prefix(&self, prefix: &str) -> Result<PrefixWatch, StoreError> {
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let lagged = Arc::new(AtomicBool::new(false));
        // Snapshot and subscription under one lock: no change can fall between them.
        let mut state = self.inner.lock();
        let snapshot = state.range(prefix).map(|(k, e)| versioned(k, e)).collect();
        let revision = state.revision;
        state.watchers.push(Watcher {
            prefix: prefix.to_owned(),
            tx,
            lagged: Arc::clone(&lagged),
        });
        drop(state);
        let events = futures::stream::unfold(Some((rx, lagged)), |st| async move {
            let (mut rx, lagged) = st?;
            match rx.recv().await {
                Some(batch) => Some((Ok(batch), Some((rx, lagged)))),
                None if lagged.load(Ordering::Acquire) => Some((
                    Err(StoreError::Unavailable(
                        "metadata watcher fell behind and was dropped".into(),
                    )),
                    None,
                )),
                None => None,
            }
        })
        .boxed();
        Ok(PrefixWatch {
            snapshot,
            revision,
            events,
        })
    }
}

fn spawn_reaper(inner: Weak<Inner>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(REAP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let now = Instant::now();
            if !inner.lock().leases.values().any(|l| l.deadline <= now) {
                continue;
            }
            let expired = run_write(&inner, move |inner| {
                inner.expire_leases(&mut inner.lock(), now);
                Ok(())
            })
            .await;
            if let Err(error) = expired {
                tracing::error!(%error, "embedded store lease expiry failed");
            }
        }
    });
}

/// Rejects what etcd rejects: two puts of one key, or a delete covering a put, in one txn.
fn check_intervals(ops: &[Op]) -> Result<(), StoreError> {
    let mut puts = HashSet::new();
    for op in ops {
        if let Op::Put { key, .. } = op
            && !puts.insert(key.as_str())
        {
            return Err(StoreError::Other(format!(
                "duplicate key {key:?} given in txn request"
            )));
        }
    }
    let overlaps = ops.iter().any(|op| match op {
        Op::Delete(key) => puts.contains(key.as_str()),
        Op::DeletePrefix(prefix) => puts.iter().any(|k| k.starts_with(prefix.as_str())),
        Op::Put { .. } => false,
    });
    if overlaps {
        return Err(StoreError::Other(
            "a txn may not delete a key it puts".into(),
        ));
    }
    Ok(())
}

fn versioned(key: &str, e: &Entry) -> Versioned {
    Versioned {
        key: key.to_owned(),
        value: e.value.clone(),
        create_revision: e.create_revision,
        mod_revision: e.mod_revision,
        lease: e.lease,
    }
}

fn event_key(e: &WatchEvent) -> &str {
    match e {
        WatchEvent::Put(v) => &v.key,
        WatchEvent::Delete { key, .. } => key,
    }
}

/// Replaces `path` atomically: temp file, fsync, rename, fsync of the directory.
fn write_snapshot(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    use std::io::Write as _;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp).map_err(|e| io_error("creating", &tmp, &e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error("writing", &tmp, &e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_error("renaming onto", path, &e))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("syncing", dir, &e))
}

fn io_error(what: &str, path: &Path, e: &std::io::Error) -> StoreError {
    StoreError::Other(format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &'static str) -> Op {
        Op::Put {
            key: key.into(),
            value: Bytes::from_static(value.as_bytes()),
            lease: 0,
        }
    }

    #[tokio::test]
    async fn lagging_watcher_is_dropped_without_blocking_writers() {
        let store = EmbeddedStore::in_memory();
        let mut watch = store.watch_prefix("k/").await.unwrap();
        for i in 0..WATCH_BUFFER + 10 {
            store
                .txn(Txn::new().then(put(&format!("k/{i}"), "v")))
                .await
                .unwrap();
        }
        let mut batches = 0;
        let last = loop {
            match watch.events.next().await {
                Some(Ok(_)) => batches += 1,
                other => break other,
            }
        };
        assert_eq!(batches, WATCH_BUFFER);
        assert!(
            matches!(last, Some(Err(StoreError::Unavailable(_)))),
            "{last:?}"
        );
        assert!(watch.events.next().await.is_none());
    }

    #[tokio::test]
    async fn dropped_watchers_are_forgotten() {
        let store = EmbeddedStore::in_memory();
        drop(store.watch_prefix("k/").await.unwrap());
        store.txn(Txn::new().then(put("other", "v"))).await.unwrap();
        assert!(store.inner.lock().watchers.is_empty());
    }

    #[tokio::test]
    async fn sub_second_leases_expire_on_time() {
        let store = EmbeddedStore::in_memory();
        let lease = store.grant_lease(Duration::from_millis(200)).await.unwrap();
        let op = Op::Put {
            key: "n/1".into(),
            value: Bytes::from_static(b"x"),
            lease,
        };
        store.txn(Txn::new().then(op)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(store.get("n/1").await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(100) + 3 * REAP_INTERVAL).await;
        assert!(store.get("n/1").await.unwrap().is_none());
    }

    #[test]
    fn txn_may_not_touch_a_key_twice() {
        assert!(check_intervals(&[put("a", "1"), put("a", "2")]).is_err());
        assert!(check_intervals(&[put("a/b", "1"), Op::DeletePrefix("a/".into())]).is_err());
        assert!(check_intervals(&[Op::Delete("a".into()), Op::DeletePrefix("a".into())]).is_ok());
    }
}
