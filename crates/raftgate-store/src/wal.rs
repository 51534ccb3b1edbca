//! The on-disk Raft log: append-only segment files with one writer thread and group commit.
//!
//! Keeping the log out of sled takes sled's page cache, IO threads and `sync_file_range` off the
//! write path: an append is one `write` and one `fdatasync` shared by every append queued
//! meanwhile. Segments (`seg-<first index>.log`) are preallocated so that `fdatasync` flushes
//! data, not file-size metadata; they end at the first zeroed record header.
//!
//! A record is `[len: u32 LE][crc32: u32 LE][payload]`, the payload being a codec-encoded entry.
//! Recovery reads segments in order and stops at the first zero header, bad checksum or
//! non-consecutive index: nothing after it was ever acknowledged, since acknowledgement follows
//! the `fdatasync` of every byte before it. Truncation zeroes the rest of the segment before new
//! records are written, so a stale record can never reappear behind a shorter new one.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Size a segment is preallocated to; a segment is closed when the next record does not fit.
pub const SEGMENT_BYTES: u64 = 64 << 20;
const HEADER: usize = 8;

/// One record read back at recovery: its log index and encoded payload.
pub struct Recovered {
    /// Log index of the entry.
    pub index: u64,
    /// The encoded entry.
    pub payload: Vec<u8>,
}

struct Segment {
    first_index: u64,
    path: PathBuf,
    file: File,
    /// Where the next record goes; everything from here on is zero.
    end: u64,
    /// (index, offset) of every record, in order.
    offsets: Vec<(u64, u64)>,
}

/// The segment files of one log, owned by the writer thread.
pub struct Segments {
    dir: PathBuf,
    segments: Vec<Segment>,
}

fn segment_path(dir: &Path, first_index: u64) -> PathBuf {
    dir.join(format!("seg-{first_index:020}.log"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn preallocate(file: &File, bytes: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(bytes).map_err(io::Error::other)?;
    // SAFETY: the descriptor belongs to `file`, which outlives the call.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    match rc {
        0 => Ok(()),
        // Filesystems without fallocate: a sparse file still works, only fsyncs cost more.
        libc::EOPNOTSUPP | libc::EINVAL => file.set_len(bytes),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// What one segment file holds.
struct Parsed {
    records: Vec<Recovered>,
    offsets: Vec<(u64, u64)>,
    /// Offset after the last valid record.
    end: u64,
    /// Offset after the last non-zero byte: anything between `end` and here is a torn write.
    dirty_until: u64,
}

/// Decodes the records of one segment file; stops at the end marker or the first bad record.
fn read_records(
    file: &mut File,
    mut next_index: Option<u64>,
    index_of: &dyn Fn(&[u8]) -> Option<u64>,
) -> io::Result<Parsed> {
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut bytes)?;
    let mut records = Vec::new();
    let mut offsets = Vec::new();
    let mut at = 0usize;
    while at + HEADER <= bytes.len() {
        let len =
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        let crc = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
        let body = at + HEADER;
        if len == 0 || body + len > bytes.len() {
            break;
        }
        let payload = &bytes[body..body + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Some(index) = index_of(payload) else {
            break;
        };
        if next_index.is_some_and(|n| n != index) {
            break;
        }
        next_index = Some(index + 1);
        offsets.push((index, at as u64));
        records.push(Recovered {
            index,
            payload: payload.to_vec(),
        });
        at = body + len;
    }
    let dirty_until = bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |p| p + 1)
        .max(at);
    Ok(Parsed {
        records,
        offsets,
        end: at as u64,
        dirty_until: dirty_until as u64,
    })
}

impl Segments {
    /// Opens the log in `dir`, returning its valid records in order. `index_of` decodes a
    /// payload's log index (the codec lives with the caller).
    pub fn open(
        dir: &Path,
        index_of: &dyn Fn(&[u8]) -> Option<u64>,
    ) -> io::Result<(Segments, Vec<Recovered>)> {
        std::fs::create_dir_all(dir)?;
        let mut firsts: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("seg-")?
                    .strip_suffix(".log")?
                    .parse()
                    .ok()
            })
            .collect();
        firsts.sort_unstable();
        let mut segments = Vec::new();
        let mut all: Vec<Recovered> = Vec::new();
        // Set once a segment ends in a torn write: later segments were never acknowledged.
        let mut broken = false;
        for first in firsts {
            let path = segment_path(dir, first);
            if broken {
                std::fs::remove_file(&path)?;
                continue;
            }
            let mut file = OpenOptions::new().read(true).write(true).open(&path)?;
            let expected = all.last().map(|r| r.index + 1);
            let mut parsed = read_records(&mut file, expected, index_of)?;
            if parsed.records.first().is_some_and(|r| r.index != first) {
                // Not the segment its name says: unusable from its start.
                parsed = Parsed {
                    records: Vec::new(),
                    offsets: Vec::new(),
                    end: 0,
                    dirty_until: parsed.dirty_until,
                };
            }
            if parsed.dirty_until > parsed.end {
                // Zero the torn write so a later, shorter record is never followed by its remains.
                zero_from(&file, parsed.end, parsed.dirty_until)?;
                file.sync_data()?;
                broken = true;
            }
            all.extend(parsed.records);
            segments.push(Segment {
                first_index: first,
                path,
                file,
                end: parsed.end,
                offsets: parsed.offsets,
            });
        }
        if broken {
            sync_dir(dir)?;
        }
        Ok((
            Segments {
                dir: dir.to_path_buf(),
                segments,
            },
            all,
        ))
    }

    fn new_segment(&mut self, first_index: u64) -> io::Result<()> {
        let path = segment_path(&self.dir, first_index);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        preallocate(&file, SEGMENT_BYTES)?;
        file.sync_all()?;
        sync_dir(&self.dir)?;
        self.segments.push(Segment {
            first_index,
            path,
            file,
            end: 0,
            offsets: Vec::new(),
        });
        Ok(())
    }

    /// Writes records; they are durable after the next [`Self::sync`].
    pub fn append(&mut self, records: &[(u64, Vec<u8>)]) -> io::Result<()> {
        for (index, payload) in records {
            let need = (HEADER + payload.len()) as u64;
            let fits = self
                .segments
                .last()
                .is_some_and(|s| s.end + need <= SEGMENT_BYTES.max(need));
            if !fits {
                self.new_segment(*index)?;
            }
            let Some(seg) = self.segments.last_mut() else {
                return Err(io::Error::other("no segment to append to"));
            };
            let len = u32::try_from(payload.len()).map_err(io::Error::other)?;
            let mut record = Vec::with_capacity(HEADER + payload.len());
            record.extend_from_slice(&len.to_le_bytes());
            record.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            record.extend_from_slice(payload);
            seg.file.write_all_at(&record, seg.end)?;
            seg.offsets.push((*index, seg.end));
            seg.end += need;
            if seg.end > SEGMENT_BYTES {
                // Past the preallocated size: the file grew, so its metadata must be synced too.
                seg.file.sync_all()?;
            }
        }
        Ok(())
    }

    /// Makes every written record durable. Only the last segment can hold unsynced records: a
    /// segment is synced when it is closed (see [`Self::append`]).
    pub fn sync(&mut self) -> io::Result<()> {
        let n = self.segments.len();
        // A segment closed in this batch may still have unsynced records.
        for seg in self.segments.iter().skip(n.saturating_sub(2)) {
            seg.file.sync_data()?;
        }
        Ok(())
    }

    /// Removes every record with index ≥ `from`, durably.
    pub fn truncate(&mut self, from: u64) -> io::Result<()> {
        while self.segments.last().is_some_and(|s| s.first_index >= from) {
            if let Some(seg) = self.segments.pop() {
                std::fs::remove_file(&seg.path)?;
            }
        }
        sync_dir(&self.dir)?;
        if let Some(seg) = self.segments.last_mut() {
            let cut = seg.offsets.partition_point(|(i, _)| *i < from);
            if let Some(&(_, offset)) = seg.offsets.get(cut) {
                zero_from(&seg.file, offset, seg.end)?;
                seg.file.sync_data()?;
                seg.end = offset;
                seg.offsets.truncate(cut);
            }
        }
        Ok(())
    }

    /// Deletes the segments whose records are all ≤ `upto` (the caller has recorded the purge).
    pub fn purge(&mut self, upto: u64) -> io::Result<()> {
        let mut removed = false;
        while self.segments.len() > 1 && self.segments[1].first_index <= upto + 1 {
            let seg = self.segments.remove(0);
            std::fs::remove_file(&seg.path)?;
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

fn zero_from(file: &File, from: u64, to: u64) -> io::Result<()> {
    const CHUNK: usize = 64 << 10;
    let zeros = vec![0u8; CHUNK];
    let mut at = from;
    while at < to {
        let n = usize::try_from((to - at).min(CHUNK as u64)).map_err(io::Error::other)?;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Writes a small file atomically: temp file, fsync, rename, fsync of the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_of(p: &[u8]) -> Option<u64> {
        Some(u64::from_le_bytes(p.get(..8)?.try_into().ok()?))
    }

    fn rec(i: u64, extra: &[u8]) -> (u64, Vec<u8>) {
        let mut p = i.to_le_bytes().to_vec();
        p.extend_from_slice(extra);
        (i, p)
    }

    fn indexes(r: &[Recovered]) -> Vec<u64> {
        r.iter().map(|r| r.index).collect()
    }

    #[test]
    fn append_reopen_truncate_purge() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, recovered) = Segments::open(dir.path(), &index_of).unwrap();
        assert!(recovered.is_empty());
        log.append(&[rec(1, b"a"), rec(2, b"bb"), rec(3, b"ccc")])
            .unwrap();
        log.sync().unwrap();
        drop(log);
        let (mut log, recovered) = Segments::open(dir.path(), &index_of).unwrap();
        assert_eq!(indexes(&recovered), [1, 2, 3]);
        assert_eq!(recovered[2].payload[8..], *b"ccc");

        // Truncate at 2 and write a record of the same length as the old 2: old 3 must not
        // come back behind it.
        log.truncate(2).unwrap();
        log.append(&[rec(2, b"BB")]).unwrap();
        log.sync().unwrap();
        drop(log);
        let (mut log, recovered) = Segments::open(dir.path(), &index_of).unwrap();
        assert_eq!(indexes(&recovered), [1, 2]);
        assert_eq!(recovered[1].payload[8..], *b"BB");

        log.append(&[rec(3, b"c")]).unwrap();
        log.sync().unwrap();
        log.purge(3).unwrap(); // only one segment: kept, records ≤ 3 ignored by the caller
        drop(log);
        let (_, recovered) = Segments::open(dir.path(), &index_of).unwrap();
        assert_eq!(indexes(&recovered), [1, 2, 3]);
    }

    #[test]
    fn torn_tail_is_dropped_and_zeroed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Segments::open(dir.path(), &index_of).unwrap();
        log.append(&[rec(1, b"one"), rec(2, b"two")]).unwrap();
        log.sync().unwrap();
        let seg = segment_path(dir.path(), 1);
        let second = log.segments[0].offsets[1].1;
        drop(log);
        // Corrupt one byte of record 2's payload.
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(b"X", second + HEADER as u64 + 9).unwrap();
        let (mut log, recovered) = Segments::open(dir.path(), &index_of).unwrap();
        assert_eq!(indexes(&recovered), [1]);
        log.append(&[rec(2, b"new")]).unwrap();
        log.sync().unwrap();
        drop(log);
        let (_, recovered) = Segments::open(dir.path(), &index_of).unwrap();
        assert_eq!(indexes(&recovered), [1, 2]);
        assert_eq!(recovered[1].payload[8..], *b"new");
    }
}
