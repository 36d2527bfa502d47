//! Threads that flush a group's segment files at once. A group commit with `--fsync` touches a
//! file per partition; their `fdatasync`s run concurrently so they share the file system's
//! journal commits and the device's queue, where one after another would each wait for the
//! disk. The threads live as long as the log (spawning them for every group would cost a thread
//! start per file, a hundred times a second under load), and start on first use, so a log that
//! never syncs several files has none.

use std::fs::File;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};

use super::LogError;

/// Files flushed concurrently besides the one the caller flushes itself.
const THREADS: usize = 7;

/// One file to flush, and where its result goes.
struct Job {
    file: Arc<File>,
    done: Sender<Result<(), LogError>>,
}

/// A pool of flushing threads, started on first use.
#[derive(Default)]
pub struct Syncer {
    jobs: OnceLock<Mutex<Sender<Job>>>,
}

fn sync(file: &File) -> Result<(), LogError> {
    file.sync_data()
        .map_err(|e| LogError(format!("syncing a segment: {e}")))
}

impl Syncer {
    fn jobs(&self) -> &Mutex<Sender<Job>> {
        self.jobs.get_or_init(|| {
            let (tx, rx) = channel::<Job>();
            let rx = Arc::new(Mutex::new(rx));
            for i in 0..THREADS {
                let rx = rx.clone();
                // A thread that fails to start leaves fewer workers; `sync_files` still works
                // while at least one runs, and falls back to the caller's thread when none does.
                let _ = std::thread::Builder::new()
                    .name(format!("sluice-sync-{i}"))
                    .spawn(move || work(&rx));
            }
            Mutex::new(tx)
        })
    }

    /// Flushes `files` (each once, however often listed) to disk: the first on the caller's
    /// thread, the others on the pool's, all at the same time. Returns the first error.
    pub fn sync_files(&self, files: &[Arc<File>]) -> Result<(), LogError> {
        let mut unique: Vec<&Arc<File>> = Vec::with_capacity(files.len());
        for f in files {
            if !unique.iter().any(|u| Arc::ptr_eq(u, f)) {
                unique.push(f);
            }
        }
        let Some((first, rest)) = unique.split_first() else {
            return Ok(());
        };
        let (done, results) = channel();
        let mut queued = 0;
        {
            let jobs = self.jobs().lock().expect("poisoned");
            for f in rest {
                let job = Job {
                    file: Arc::clone(f),
                    done: done.clone(),
                };
                match jobs.send(job) {
                    Ok(()) => queued += 1,
                    // No worker is left: flush it here.
                    Err(e) => sync(&e.0.file)?,
                }
            }
        }
        drop(done);
        let mut result = sync(first);
        for _ in 0..queued {
            let r = results
                .recv()
                .unwrap_or_else(|_| Err(LogError("a sync thread stopped".into())));
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

/// A pool thread: flushes files until the log (and with it the sender) is gone.
fn work(jobs: &Mutex<Receiver<Job>>) {
    loop {
        let job = match jobs.lock().expect("poisoned").recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        let _ = job.done.send(sync(&job.file));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn flushes_every_file_once_and_reports_success() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<Arc<File>> = (0..12)
            .map(|i| {
                let mut f = File::create(dir.path().join(format!("{i}.seg"))).unwrap();
                f.write_all(b"batch").unwrap();
                Arc::new(f)
            })
            .collect();
        let syncer = Syncer::default();
        let mut listed = files.clone();
        listed.extend(files.iter().take(3).cloned());
        syncer.sync_files(&listed).unwrap();
        // The pool is reused by later groups.
        syncer.sync_files(&files[..2]).unwrap();
        syncer.sync_files(&[]).unwrap();
    }

    #[test]
    fn an_unsyncable_file_fails_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let good = Arc::new(File::create(dir.path().join("a.seg")).unwrap());
        // fdatasync on a directory opened read-only is refused on some file systems and
        // accepted on others; a pipe is refused everywhere (EINVAL).
        let (reader, _writer) = std::io::pipe().unwrap();
        let bad = Arc::new(File::from(std::os::fd::OwnedFd::from(reader)));
        let syncer = Syncer::default();
        assert!(syncer.sync_files(&[good.clone(), bad.clone()]).is_err());
        assert!(syncer.sync_files(&[bad, good]).is_err());
    }
}
