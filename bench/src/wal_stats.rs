//! `wal-stats` mode: how many Raft log records a node's log directory holds and their bytes,
//! read from its segment files (`seg-<first index>.log`: records `[len u32 LE][crc u32 LE]
//! [payload]`, ending at the first zero header). `bench/analytics` reads it before and after a
//! run to measure what the analytics add to the log, which `du` cannot show: segments are
//! preallocated.

use std::path::PathBuf;

use crate::error::BenchError;

/// Settings of a `wal-stats` run.
#[derive(Debug, Clone, clap::Args)]
pub struct WalStatsArgs {
    /// The node's Raft log directory (`<data dir>/log`).
    #[arg(long)]
    pub dir: PathBuf,
}

/// Records and payload bytes of every segment, as one JSON line.
pub fn run(args: &WalStatsArgs) -> Result<String, BenchError> {
    let io = |what: String| move |source| BenchError::Io { what, source };
    let mut records = 0u64;
    let mut bytes = 0u64;
    let entries =
        std::fs::read_dir(&args.dir).map_err(io(format!("list {}", args.dir.display())))?;
    for entry in entries {
        let path = entry
            .map_err(io(format!("list {}", args.dir.display())))?
            .path();
        let is_segment = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("seg-") && n.ends_with(".log"));
        if !is_segment {
            continue;
        }
        let data = std::fs::read(&path).map_err(io(format!("read {}", path.display())))?;
        let (n, b) = count(&data);
        records += n;
        bytes += b;
    }
    Ok(format!("{{\"records\":{records},\"bytes\":{bytes}}}"))
}

/// Records and payload bytes in one segment's contents.
fn count(data: &[u8]) -> (u64, u64) {
    let (mut records, mut bytes, mut at) = (0u64, 0u64, 0usize);
    while let Some(header) = data.get(at..at + 8) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len == 0 || at + 8 + len > data.len() {
            break;
        }
        records += 1;
        bytes += len as u64;
        at += 8 + len;
    }
    (records, bytes)
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn records_end_at_the_first_zero_header() {
        let mut seg = Vec::new();
        for payload in [&b"abc"[..], b"defgh"] {
            seg.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            seg.extend_from_slice(&[0; 4]);
            seg.extend_from_slice(payload);
        }
        seg.extend_from_slice(&[0; 64]);
        assert_eq!(count(&seg), (2, 8));
        assert_eq!(count(&[]), (0, 0));
    }
}
