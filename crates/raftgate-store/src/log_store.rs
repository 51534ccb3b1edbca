//! The Raft log and vote (openraft's `RaftLogStorage`).
//!
//! Entries live in memory for reads (the log is purged behind every snapshot, so it stays small)
//! and in the segment files of [`crate::wal`] for durability, written and `fdatasync`ed by a
//! writer thread so the async runtime never blocks on the disk. `append` returns only once its
//! entries are on disk: openraft 0.9 counts the leader's own copy towards the quorum as soon as
//! `append` returns, not when the flush callback fires. (Throughput comes from batching instead:
//! the cluster puts every write waiting for the leader into one log entry.) The vote and the
//! purge point live in a small file replaced atomically, durable before `save_vote` returns.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, OptionalSend, RaftLogReader, StorageIOError, Vote};
use raftgate_model::codec;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::StoreError;
use crate::durable::Durable;
use crate::types::{Entry, LogId, StorageError, TypeConfig};
use crate::wal::{Segments, write_atomically};

/// What must survive besides the entries.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Meta {
    vote: Option<Vote<u64>>,
    last_purged: Option<LogId>,
}

/// Work for the writer thread, done in order.
enum Job {
    Append {
        records: Vec<(u64, Vec<u8>)>,
        done: oneshot::Sender<io::Result<()>>,
    },
    Truncate {
        from: u64,
        done: oneshot::Sender<io::Result<()>>,
    },
    Purge {
        upto: u64,
        done: oneshot::Sender<io::Result<()>>,
    },
}

struct Shared {
    entries: RwLock<BTreeMap<u64, Entry>>,
    /// Holds the last committed log id, rewritten in place (see `save_committed`).
    committed: std::fs::File,
    meta: Mutex<Meta>,
    meta_path: PathBuf,
    jobs: mpsc::Sender<Job>,
    /// The state machine's database: synced before the log behind a snapshot is purged.
    state_db: Durable,
    /// Encoded bytes of the entries held (appended or recovered since the last purge).
    held_bytes: Arc<AtomicU64>,
}

/// The Raft log store of one node. Cheap to clone: clones share the log.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

fn io_err<E: std::error::Error + 'static>(
    make: fn(AnyError) -> StorageIOError<u64>,
    e: &E,
) -> StorageError {
    make(AnyError::new(e)).into()
}

fn write_err<E: std::error::Error + 'static>(e: &E) -> StorageError {
    io_err(StorageIOError::write_logs, e)
}

fn stopped() -> io::Error {
    io::Error::other("the Raft log writer thread has stopped")
}

/// Completes the appends written so far once one sync covers them all.
fn complete(
    segments: &mut Segments,
    waiting: &mut Vec<oneshot::Sender<io::Result<()>>>,
    failed: &mut Option<String>,
) {
    if waiting.is_empty() {
        return;
    }
    if failed.is_none()
        && let Err(e) = segments.sync()
    {
        *failed = Some(e.to_string());
    }
    for done in waiting.drain(..) {
        let _ = done.send(match failed {
            None => Ok(()),
            Some(msg) => Err(io::Error::other(msg.clone())),
        });
    }
}

/// The writer thread: owns the segment files; one sync covers every append queued meanwhile.
fn write_loop(mut segments: Segments, jobs: mpsc::Receiver<Job>) {
    // After a failed write nothing more is acknowledged: Raft stops on the error.
    let mut failed: Option<String> = None;
    let mut waiting = Vec::new();
    while let Ok(first) = jobs.recv() {
        for job in std::iter::once(first).chain(jobs.try_iter()) {
            match job {
                Job::Append { records, done } => {
                    if failed.is_none()
                        && let Err(e) = segments.append(&records)
                    {
                        failed = Some(e.to_string());
                    }
                    waiting.push(done);
                }
                Job::Truncate { from, done } => {
                    complete(&mut segments, &mut waiting, &mut failed);
                    let _ = done.send(segments.truncate(from));
                }
                Job::Purge { upto, done } => {
                    complete(&mut segments, &mut waiting, &mut failed);
                    let _ = done.send(segments.purge(upto));
                }
            }
        }
        complete(&mut segments, &mut waiting, &mut failed);
    }
}

fn index_of(payload: &[u8]) -> Option<u64> {
    codec::decode::<Entry>(payload).ok().map(|e| e.log_id.index)
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, recovering every entry that was acknowledged. Starts
    /// the writer thread.
    pub fn open(dir: &Path, state_db: Durable) -> Result<Self, StoreError> {
        let io = |source: io::Error| StoreError::Io {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let meta_path = dir.join("meta");
        let meta: Meta = match std::fs::read(&meta_path) {
            Ok(bytes) => codec::decode(&bytes).map_err(|source| StoreError::Codec {
                path: meta_path.display().to_string(),
                source,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Meta::default(),
            Err(e) => return Err(io(e)),
        };
        let (segments, recovered) = Segments::open(dir, &index_of).map_err(io)?;
        let purged = meta.last_purged.map(|l| l.index);
        let mut entries = BTreeMap::new();
        let mut held_bytes = 0;
        for record in recovered {
            if purged.is_some_and(|p| record.index <= p) {
                continue;
            }
            held_bytes += record.payload.len() as u64;
            let entry: Entry =
                codec::decode(&record.payload).map_err(|source| StoreError::Codec {
                    path: dir.display().to_string(),
                    source,
                })?;
            entries.insert(record.index, entry);
        }
        let committed = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("committed"))
            .map_err(io)?;
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || write_loop(segments, queue))
            .map_err(io)?;
        Ok(Self {
            shared: Arc::new(Shared {
                entries: RwLock::new(entries),
                committed,
                meta: Mutex::new(meta),
                meta_path,
                jobs,
                state_db,
                held_bytes: Arc::new(AtomicU64::new(held_bytes)),
            }),
        })
    }

    /// Encoded bytes of the entries the log holds since its last purge, shared: the node
    /// compacts when they outgrow the state ([`crate::LogGrowth`]).
    pub fn held_bytes(&self) -> Arc<AtomicU64> {
        self.shared.held_bytes.clone()
    }

    fn send(&self, job: Job) -> Result<(), StorageError> {
        self.shared
            .jobs
            .send(job)
            .map_err(|_| write_err(&stopped()))
    }

    fn meta(&self) -> Meta {
        self.shared
            .meta
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Persists `meta` atomically and makes it current.
    async fn save_meta(&self, meta: Meta) -> io::Result<()> {
        let bytes = codec::encode(&meta).map_err(io::Error::other)?;
        let path = self.shared.meta_path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(io::Error::other)??;
        *self.shared.meta.lock().unwrap_or_else(|p| p.into_inner()) = meta;
        Ok(())
    }

    /// Sends a job to the writer thread and waits for it to be done.
    async fn run(
        &self,
        job: impl FnOnce(oneshot::Sender<io::Result<()>>) -> Job,
    ) -> Result<(), StorageError> {
        let (done, wait) = oneshot::channel();
        self.send(job(done))?;
        wait.await
            .map_err(|_| write_err(&stopped()))?
            .map_err(|e| write_err(&e))
    }

    fn entries(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, Entry>> {
        self.shared
            .entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn entries_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u64, Entry>> {
        self.shared
            .entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self
            .entries()
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.meta().last_purged;
        let last_log_id = self
            .entries()
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        let meta = Meta {
            vote: Some(*vote),
            ..self.meta()
        };
        self.save_meta(meta)
            .await
            .map_err(|e| io_err(StorageIOError::write_vote, &e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        Ok(self.meta().vote)
    }

    /// Lets a restarted node apply what it knows to be committed at once, before any leader is
    /// elected, so an isolated node serves its latest configuration. Not synced on purpose: an
    /// older value after a power loss only means less is applied until the next commit.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let body = codec::encode(&committed).map_err(|e| write_err(&e))?;
        let mut record = Vec::with_capacity(8 + body.len());
        record.extend_from_slice(&(body.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        record.extend_from_slice(&body);
        std::os::unix::fs::FileExt::write_all_at(&self.shared.committed, &record, 0)
            .map_err(|e| write_err(&e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let file = &self.shared.committed;
        let len = file.metadata().map_err(|e| write_err(&e))?.len();
        let mut bytes = vec![0; usize::try_from(len).map_err(|e| write_err(&e))?];
        std::os::unix::fs::FileExt::read_exact_at(file, &mut bytes, 0)
            .map_err(|e| write_err(&e))?;
        let committed = (|| {
            let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
            let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
            let body = bytes.get(8..8 + len)?;
            (crc32fast::hash(body) == crc).then_some(())?;
            codec::decode::<Option<LogId>>(body).ok()?
        })();
        // Never beyond the log: a committed id the log does not hold is of no use.
        let last = self.entries().keys().next_back().copied();
        Ok(committed.filter(|c| last.is_some_and(|l| c.index <= l)))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let Some(first) = entries.first().map(|e| e.log_id.index) else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let next = match self.entries().keys().next_back() {
            Some(last) => Some(last + 1),
            None => self.meta().last_purged.map(|l| l.index + 1),
        };
        if let Some(next) = next {
            if first > next {
                let msg = format!(
                    "append would leave a hole in the log: expected index {next}, got {first}"
                );
                return Err(write_err(&io::Error::other(msg)));
            }
            if first < next {
                // Overwriting: whatever followed the rewritten index is no longer valid.
                self.entries_mut().split_off(&first);
                let (done, _ignored) = oneshot::channel();
                self.send(Job::Truncate { from: first, done })?;
            }
        }
        let mut records = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let index = entry.log_id.index;
            if index != first + i as u64 {
                let msg = format!("entries of one append are not consecutive at index {index}");
                return Err(write_err(&io::Error::other(msg)));
            }
            records.push((index, codec::encode(entry).map_err(|e| write_err(&e))?));
        }
        let bytes: usize = records.iter().map(|(_, r)| r.len()).sum();
        self.shared
            .held_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        // Readable now, and on disk when `run` returns.
        self.entries_mut()
            .extend(entries.into_iter().map(|e| (e.log_id.index, e)));
        let written = self.run(|done| Job::Append { records, done }).await;
        callback.log_io_completed(match &written {
            Ok(()) => Ok(()),
            Err(e) => Err(io::Error::other(e.to_string())),
        });
        written
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncating log from");
        self.entries_mut().split_off(&log_id.index);
        self.run(|done| Job::Truncate {
            from: log_id.index,
            done,
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purging log up to");
        // The snapshot and state machine that cover the purged entries must be on disk first.
        self.shared
            .state_db
            .sync()
            .await
            .map_err(|e| write_err(&e))?;
        let meta = Meta {
            last_purged: Some(log_id),
            ..self.meta()
        };
        self.save_meta(meta).await.map_err(|e| write_err(&e))?;
        {
            let mut entries = self.entries_mut();
            let kept = entries.split_off(&(log_id.index + 1));
            *entries = kept;
        }
        // What follows the purge point is at most a few entries appended meanwhile.
        self.shared.held_bytes.store(0, Ordering::Relaxed);
        self.run(|done| Job::Purge {
            upto: log_id.index,
            done,
        })
        .await
    }
}
