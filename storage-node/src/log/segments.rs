//! Segment files: the bytes of every replica's batches, appended once to
//! `<root>/<uid>/<first base offset, 20 digits>.seg` and read back with positioned reads. Where
//! each batch sits is kept by the caller (the RocksDB index), committed only after the bytes are
//! written, so an index entry never points at bytes that are not there.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::readbuf::ReadBuffers;
use super::syncer::Syncer;
use super::{LogError, SegmentPolicy, Uid};

/// By default a segment is closed and a new one started once it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 256 << 20;

/// Read handles kept open at most (cleared when exceeded).
const MAX_OPEN_READERS: usize = 1024;

/// Free read buffers kept for reuse at most: eight partitions' worth of 8 MiB fetches.
const KEPT_READ_BUFFER_BYTES: usize = 64 << 20;

/// The id of a segment whose first batch has base offset `base`, written by the cleaner's
/// `generation`-th rewrite (0: appended): ids order segments as their offsets do, and a
/// cleaned segment never takes the name of the file it replaces.
pub fn segment_id(base: u64, generation: u8) -> u64 {
    (base << 8) | u64::from(generation)
}

/// The generation part of a segment id.
pub fn generation(id: u64) -> u8 {
    (id & 0xff) as u8
}

/// The base offset a segment id was made from.
pub fn id_base(id: u64) -> u64 {
    id >> 8
}

/// Where one batch sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Segment id (see [`segment_id`]).
    pub segment: u64,
    /// Byte position in the segment.
    pub pos: u64,
    /// Length of the batch in bytes.
    pub len: u32,
}

/// The segment a replica appends to, and where its next batch goes.
struct Active {
    segment: u64,
    pos: u64,
    file: Arc<File>,
    /// When this node started (or, after a restart, first appended to) the segment.
    started: Instant,
}

/// The segment files of every replica on a node.
pub struct Segments {
    root: PathBuf,
    segment_bytes: u64,
    policies: Mutex<HashMap<Uid, SegmentPolicy>>,
    active: Mutex<HashMap<Uid, Active>>,
    /// Segments closed since the last [`Segments::sync_all`], whose data may not be on disk
    /// (by replica and segment id, so a removed one is let go at once: an open handle keeps an
    /// unlinked file's space).
    rolled: Mutex<Vec<(Uid, u64, Arc<File>)>>,
    readers: Mutex<HashMap<(Uid, u64), Arc<File>>>,
    read_buffers: Arc<ReadBuffers>,
    syncer: Syncer,
}

/// The id of a segment file named `<id, 20 digits>.seg`.
pub(super) fn file_segment_id(name: &std::ffi::OsStr) -> Option<u64> {
    name.to_str()?.strip_suffix(".seg")?.parse().ok()
}

fn err(what: &str, path: &Path, e: std::io::Error) -> LogError {
    LogError(format!("{what} {}: {e}", path.display()))
}

impl Segments {
    /// Segment files under `root` (created when missing), rolled at `segment_bytes`.
    pub fn open(root: PathBuf, segment_bytes: u64) -> Result<Self, LogError> {
        std::fs::create_dir_all(&root).map_err(|e| err("creating", &root, e))?;
        Ok(Self {
            root,
            segment_bytes,
            policies: Mutex::new(HashMap::new()),
            active: Mutex::new(HashMap::new()),
            rolled: Mutex::new(Vec::new()),
            readers: Mutex::new(HashMap::new()),
            read_buffers: ReadBuffers::new(KEPT_READ_BUFFER_BYTES),
            syncer: Syncer::default(),
        })
    }

    /// Sets when the replica's active segment rolls.
    pub fn set_policy(&self, uid: Uid, policy: SegmentPolicy) {
        self.policies.lock().expect("poisoned").insert(uid, policy);
    }

    pub(super) fn policy(&self, uid: Uid) -> SegmentPolicy {
        self.policies
            .lock()
            .expect("poisoned")
            .get(&uid)
            .copied()
            .unwrap_or(SegmentPolicy {
                bytes: self.segment_bytes,
                max_age: Duration::MAX,
            })
    }

    fn dir(&self, uid: Uid) -> PathBuf {
        self.root.join(uid.to_string())
    }

    pub(super) fn path(&self, uid: Uid, segment: u64) -> PathBuf {
        self.dir(uid).join(format!("{segment:020}.seg"))
    }

    fn open_file(&self, uid: Uid, segment: u64, create: bool) -> Result<Arc<File>, LogError> {
        let path = self.path(uid, segment);
        if create {
            std::fs::create_dir_all(self.dir(uid)).map_err(|e| err("creating", &path, e))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(&path)
            .map_err(|e| err("opening", &path, e))?;
        Ok(Arc::new(file))
    }

    /// Writes `batch`, the batch with base offset `base`, after the replica's last one. `end`
    /// gives where the last indexed batch ends when the replica's position is not cached (after
    /// an open, a truncation or a failed write); `None` for an empty log. Returns its location
    /// and the file written, for a later `sync`.
    pub fn append(
        &self,
        uid: Uid,
        base: u64,
        batch: &[u8],
        end: impl FnOnce() -> Result<Option<(u64, u64)>, LogError>,
    ) -> Result<(Location, Arc<File>), LogError> {
        let policy = self.policy(uid);
        let mut active = self.active.lock().expect("poisoned");
        if let std::collections::hash_map::Entry::Vacant(e) = active.entry(uid) {
            let (segment, pos) = end()?.unwrap_or((segment_id(base, 0), 0));
            let file = self.open_file(uid, segment, true)?;
            e.insert(Active {
                segment,
                pos,
                file,
                started: Instant::now(),
            });
        }
        let a = active.get_mut(&uid).expect("inserted above");
        // A segment never grows past its size limit unless one batch alone is larger.
        let full = a.pos + batch.len() as u64 > policy.bytes;
        if a.pos > 0 && (full || a.started.elapsed() >= policy.max_age) {
            let file = self.open_file(uid, segment_id(base, 0), true)?;
            let closed = (uid, a.segment, a.file.clone());
            self.rolled.lock().expect("poisoned").push(closed);
            *a = Active {
                segment: segment_id(base, 0),
                pos: 0,
                file,
                started: Instant::now(),
            };
        }
        let loc = Location {
            segment: a.segment,
            pos: a.pos,
            len: u32::try_from(batch.len()).map_err(|_| LogError("batch over 4 GiB".into()))?,
        };
        if let Err(e) = a.file.write_all_at(batch, a.pos) {
            let path = self.path(uid, a.segment);
            active.remove(&uid);
            return Err(err("writing", &path, e));
        }
        a.pos += batch.len() as u64;
        Ok((loc, a.file.clone()))
    }

    /// Forgets the replica's cached append position (after a truncation or a failed index
    /// write); the next append asks the index where the log ends.
    pub fn forget_position(&self, uid: Uid) {
        self.active.lock().expect("poisoned").remove(&uid);
    }

    /// Removes the replica's segments after `keep` (all of them when `None`): their batches
    /// were truncated away.
    pub fn remove_after(&self, uid: Uid, keep: Option<u64>) -> Result<(), LogError> {
        self.forget_position(uid);
        self.remove_where(uid, |id| keep.is_none_or(|k| id > k))
    }

    /// Removes the replica's segments before `keep` (all of them when `None`): retention or
    /// DeleteRecords moved the log start past their batches.
    pub fn remove_before(&self, uid: Uid, keep: Option<u64>) -> Result<(), LogError> {
        if keep.is_none() {
            self.forget_position(uid);
        }
        self.remove_where(uid, |id| keep.is_none_or(|k| id < k))
    }

    /// Removes the replica's segment files whose id `doomed` accepts.
    fn remove_where(&self, uid: Uid, doomed: impl Fn(u64) -> bool) -> Result<(), LogError> {
        let Ok(entries) = std::fs::read_dir(self.dir(uid)) else {
            return Ok(());
        };
        let ids: Vec<u64> = entries
            .flatten()
            .filter_map(|e| file_segment_id(&e.file_name()))
            .filter(|id| doomed(*id))
            .collect();
        self.remove_files(uid, &ids)
    }

    /// Removes every segment of a deleted replica.
    pub fn delete(&self, uid: Uid) -> Result<(), LogError> {
        self.forget_position(uid);
        self.policies.lock().expect("poisoned").remove(&uid);
        self.readers
            .lock()
            .expect("poisoned")
            .retain(|(u, _), _| *u != uid);
        self.forget_rolled(uid, |_| true);
        let dir = self.dir(uid);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(err("removing", &dir, e)),
            _ => Ok(()),
        }
    }

    fn reader(&self, uid: Uid, segment: u64) -> Result<Arc<File>, LogError> {
        let mut readers = self.readers.lock().expect("poisoned");
        if let Some(f) = readers.get(&(uid, segment)) {
            return Ok(f.clone());
        }
        if readers.len() >= MAX_OPEN_READERS {
            readers.clear();
        }
        let f = self.open_file(uid, segment, false)?;
        readers.insert((uid, segment), f.clone());
        Ok(f)
    }

    /// Reads the batches at `locs` (in log order), one positioned read per run of adjacent
    /// batches; each batch is a slice of that read's buffer.
    pub fn read(&self, uid: Uid, locs: &[Location]) -> Result<Vec<Bytes>, LogError> {
        let mut out = Vec::with_capacity(locs.len());
        let mut i = 0;
        while i < locs.len() {
            let first = locs[i];
            let mut j = i + 1;
            let mut size = u64::from(first.len);
            while j < locs.len()
                && locs[j].segment == first.segment
                && locs[j].pos == first.pos + size
            {
                size += u64::from(locs[j].len);
                j += 1;
            }
            let file = self.reader(uid, first.segment)?;
            let mut buf = (self.read_buffers)
                .read(size as usize, |b| file.read_exact_at(b, first.pos))
                .map_err(|e| err("reading", &self.path(uid, first.segment), e))?;
            for loc in &locs[i..j] {
                out.push(buf.split_to(loc.len as usize));
            }
            i = j;
        }
        Ok(out)
    }

    /// Starts writing a just-appended batch to disk without waiting, so the fsync that follows
    /// finds less left to write: the disk works while the rest of the group is placed. Linux's
    /// `POSIX_FADV_DONTNEED` starts writeback of the range's dirty pages (and drops only pages
    /// already clean, which these are not); PostgreSQL flushes data the same way where
    /// `sync_file_range` is missing. Advisory: an error only loses the head start.
    pub fn start_writeback(file: &File, loc: Location) {
        let _ = rustix::fs::fadvise(
            file,
            loc.pos,
            std::num::NonZeroU64::new(u64::from(loc.len)),
            rustix::fs::Advice::DontNeed,
        );
    }

    /// Flushes the given files' data to disk, all at once (see [`Syncer`]).
    pub fn sync_files(&self, files: &[Arc<File>]) -> Result<(), LogError> {
        self.syncer.sync_files(files)
    }

    /// Flushes every replica's active segment, and every segment closed since the last call,
    /// to disk.
    pub fn sync_all(&self) -> Result<(), LogError> {
        let rolled = std::mem::take(&mut *self.rolled.lock().expect("poisoned"));
        let mut files: Vec<Arc<File>> = rolled.into_iter().map(|(_, _, f)| f).collect();
        files.extend(
            self.active
                .lock()
                .expect("poisoned")
                .values()
                .map(|a| a.file.clone()),
        );
        self.sync_files(&files)
    }

    /// Removes the replica's segment files `ids` (replaced by cleaned ones, or left over).
    pub fn remove_files(&self, uid: Uid, ids: &[u64]) -> Result<(), LogError> {
        let mut readers = self.readers.lock().expect("poisoned");
        for id in ids {
            readers.remove(&(uid, *id));
            self.forget_rolled(uid, |s| s == *id);
            let path = self.path(uid, *id);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(err("removing", &path, e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Drops the unsynced handles of the replica's segments that `gone` names.
    fn forget_rolled(&self, uid: Uid, gone: impl Fn(u64) -> bool) {
        self.rolled
            .lock()
            .expect("poisoned")
            .retain(|(u, s, _)| *u != uid || !gone(*s));
    }

    /// The length of a segment file (0 when it is missing).
    pub fn file_len(&self, uid: Uid, segment: u64) -> u64 {
        std::fs::metadata(self.path(uid, segment)).map_or(0, |m| m.len())
    }
}
