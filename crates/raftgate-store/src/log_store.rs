//! The Raft log and vote, in two sled trees.
//!
//! Entries are keyed by their big-endian index so that sled's ordered iteration is log order.
//! `append` writes a batch, returns as soon as the entries are readable, and hands the
//! acknowledgement to a flusher task that acknowledges to Raft only after [`Durable::sync`]. The
//! flusher covers every append queued meanwhile with one sync (group commit), and openraft goes on
//! replicating while the leader's disk syncs. `save_vote` returns only once the vote is on disk. Appends that would leave a hole in the log are refused;
//! an append that rewrites an index drops the entries after it in the same atomic batch.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, OptionalSend, RaftLogReader, StorageIOError, Vote};
use raftgate_model::codec;

use crate::StoreError;
use crate::durable::Durable;
use crate::types::{Entry, LogId, StorageError, TypeConfig};

const VOTE: &[u8] = b"vote";
const LAST_PURGED: &[u8] = b"last_purged";
const COMMITTED: &[u8] = b"committed";

/// The Raft log store of one node. Cheap to clone: clones share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Durable,
    log: sled::Tree,
    meta: sled::Tree,
    flusher: tokio::sync::mpsc::UnboundedSender<LogFlushed<TypeConfig>>,
}

/// Acknowledges appends once a sync covers them, in order, one sync for all that are waiting.
async fn flush_appends(
    db: Durable,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<LogFlushed<TypeConfig>>,
) {
    let mut waiting = Vec::new();
    while queue.recv_many(&mut waiting, 1024).await > 0 {
        let result = db.sync().await;
        for callback in waiting.drain(..) {
            callback.log_io_completed(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            });
        }
    }
}

fn io<E: std::error::Error + 'static>(
    make: fn(AnyError) -> StorageIOError<u64>,
    e: &E,
) -> StorageError {
    make(AnyError::new(e)).into()
}

fn read_err<E: std::error::Error + 'static>(e: &E) -> StorageError {
    io(StorageIOError::read_logs, e)
}

fn write_err<E: std::error::Error + 'static>(e: &E) -> StorageError {
    io(StorageIOError::write_logs, e)
}

impl LogStore {
    /// Opens the log trees of `db`.
    /// Must be called inside a tokio runtime: it starts the flusher task.
    pub fn new(db: Durable) -> Result<Self, StoreError> {
        let (flusher, queue) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(flush_appends(db.clone(), queue));
        Ok(Self {
            log: db.tree("raft_log")?,
            meta: db.tree("raft_meta")?,
            db,
            flusher,
        })
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        match self.meta.get(key).map_err(|e| read_err(&e))? {
            None => Ok(None),
            Some(bytes) => codec::decode(&bytes).map(Some).map_err(|e| read_err(&e)),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageError> {
        let bytes = codec::encode(value).map_err(|e| write_err(&e))?;
        self.meta.insert(key, bytes).map_err(|e| write_err(&e))?;
        Ok(())
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        match self.log.last().map_err(|e| read_err(&e))? {
            None => Ok(None),
            Some((_, bytes)) => {
                let entry: Entry = codec::decode(&bytes).map_err(|e| read_err(&e))?;
                Ok(Some(entry.log_id))
            }
        }
    }

    /// Index of the last entry, read from its key without decoding it.
    fn last_index(&self) -> Result<Option<u64>, StorageError> {
        let last = self.log.last().map_err(|e| read_err(&e))?;
        Ok(last
            .and_then(|(k, _)| <[u8; 8]>::try_from(k.as_ref()).ok())
            .map(u64::from_be_bytes))
    }

    async fn sync(&self) -> Result<(), StorageError> {
        self.db.sync().await.map_err(|e| write_err(&e))
    }
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => Bound::Included(key(i)),
            Bound::Excluded(&i) => Bound::Excluded(key(i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => Bound::Included(key(i)),
            Bound::Excluded(&i) => Bound::Excluded(key(i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for item in self.log.range::<[u8; 8], _>((start, end)) {
            let (_, bytes) = item.map_err(|e| read_err(&e))?;
            out.push(codec::decode(&bytes).map_err(|e| read_err(&e))?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.get_meta(LAST_PURGED)?;
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        self.put_meta(VOTE, vote)?;
        self.db
            .sync()
            .await
            .map_err(|e| io(StorageIOError::write_vote, &e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        self.get_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced: losing it only means re-applying a little more log after a crash.
        self.put_meta(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(COMMITTED)?.flatten())
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
        let mut next = match self.last_index()? {
            Some(index) => Some(index + 1),
            None => self.get_meta::<LogId>(LAST_PURGED)?.map(|id| id.index + 1),
        };
        let mut batch = sled::Batch::default();
        for entry in entries {
            let index = entry.log_id.index;
            if let Some(expected) = next {
                if index > expected {
                    let msg = format!(
                        "append would leave a hole in the log: expected index {expected}, got {index}"
                    );
                    return Err(write_err(&std::io::Error::other(msg)));
                }
                if index < expected {
                    // Overwriting: whatever followed the rewritten index is no longer valid.
                    for item in self.log.range(key(index)..) {
                        let (k, _) = item.map_err(|e| read_err(&e))?;
                        batch.remove(k);
                    }
                }
            }
            next = Some(index + 1);
            let bytes = codec::encode(&entry).map_err(|e| write_err(&e))?;
            batch.insert(&key(index), bytes);
        }
        self.log.apply_batch(batch).map_err(|e| write_err(&e))?;
        // Entries are readable now; the flusher acknowledges them once they are on disk.
        self.flusher
            .send(callback)
            .map_err(|_| write_err(&std::io::Error::other("the log flusher has stopped")))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncating log from");
        let mut batch = sled::Batch::default();
        for item in self.log.range(key(log_id.index)..) {
            let (k, _) = item.map_err(|e| write_err(&e))?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(|e| write_err(&e))?;
        self.sync().await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purging log up to");
        // The snapshot and state machine that cover the purged entries must be on disk before
        // the entries go: they share this database, so one sync covers them.
        self.sync().await?;
        self.put_meta(LAST_PURGED, &log_id)?;
        let mut batch = sled::Batch::default();
        for item in self.log.range(..=key(log_id.index)) {
            let (k, _) = item.map_err(|e| write_err(&e))?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(|e| write_err(&e))?;
        Ok(())
    }
}
