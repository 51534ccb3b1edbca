//! The sled database (where snapshots of the state machine are kept) and the one operation that
//! makes its writes durable.
//!
//! sled's `flush` writes its log with `sync_file_range`, which survives a process kill but not a
//! power loss (sled issue #1452). A snapshot must be on stable storage before the Raft log behind
//! it is purged, so [`Durable::sync`] follows the flush with an `fdatasync` of the database file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::StoreError;

/// sled's page cache size. sled holds only snapshots (the state itself is in memory), so a small
/// cache suffices; its default (1 GiB) would let the process grow far beyond what it needs.
const CACHE_BYTES: u64 = 8 << 20;

/// A sled database plus a handle on its data file for `fdatasync`.
#[derive(Clone)]
pub struct Durable {
    /// The database; trees are opened from it.
    pub db: sled::Db,
    file: Arc<File>,
    path: Arc<PathBuf>,
}

impl Durable {
    /// Opens or creates the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.to_path_buf();
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|source| StoreError::Sled {
                path: path.display().to_string(),
                source,
            })?;
        // sled keeps its log in the file `db` inside its directory.
        let file_path = dir.join("db");
        let file = File::open(&file_path).map_err(|source| StoreError::Io {
            path: file_path.display().to_string(),
            source,
        })?;
        Ok(Self {
            db,
            file: Arc::new(file),
            path: Arc::new(path),
        })
    }

    /// The database directory.
    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// Opens a tree of this database.
    pub fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        self.db.open_tree(name).map_err(|e| self.sled_err(e))
    }

    /// Wraps a sled error with the database path.
    pub fn sled_err(&self, source: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Flushes every tree and `fdatasync`s the database file; returns once the data is on disk.
    pub async fn sync(&self) -> std::io::Result<()> {
        let db = self.db.clone();
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || {
            db.flush().map_err(std::io::Error::other)?;
            file.sync_data()
        })
        .await
        .map_err(std::io::Error::other)?
    }
}
