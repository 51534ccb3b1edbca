//! The history: every client operation as an `invoke` followed by exactly one completion (`ok`,
//! `fail` or `info`), and every nemesis action, with timestamps, written as JSON lines while the
//! test runs so that even a killed run leaves its history behind.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Which kind of record this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    /// The client is about to send the operation.
    Invoke,
    /// The operation took effect.
    Ok,
    /// The operation certainly did not take effect.
    Fail,
    /// The outcome is unknown: it may or may not have taken effect.
    Info,
}

/// Who performed the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Process {
    /// A client worker; it takes a new number after an `info`, since it can no longer know
    /// whether its previous operation is still in flight.
    Client(u64),
    /// The fault injector.
    Nemesis(NemesisTag),
}

/// The literal `"nemesis"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NemesisTag {
    /// The only value.
    Nemesis,
}

/// One record of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Performer.
    pub process: Process,
    /// invoke/ok/fail/info.
    #[serde(rename = "type")]
    pub kind: OpType,
    /// Operation name: `read`, `write`, `cas`, `add`, `read-all`, `proxy`, or a nemesis action.
    pub f: String,
    /// Register or set key, when the operation has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Operation value: the value written, read, `[expected, new]` for a CAS, the element added.
    #[serde(default)]
    pub value: serde_json::Value,
    /// Nanoseconds since the test started.
    pub time: u64,
    /// Node (1-based slot) the client talked to, or the nemesis acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<usize>,
    /// Why it failed, or what an `info` means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Shared recorder; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Mutex<Inner>>,
    start: Instant,
}

struct Inner {
    ops: Vec<Op>,
    file: BufWriter<File>,
}

impl Recorder {
    /// Creates `path` and starts the clock.
    pub fn create(path: &Path) -> std::io::Result<Recorder> {
        Ok(Recorder {
            inner: Arc::new(Mutex::new(Inner {
                ops: Vec::new(),
                file: BufWriter::new(File::create(path)?),
            })),
            start: Instant::now(),
        })
    }

    /// Nanoseconds since the start.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Stamps and records `op` (its `time` is overwritten with the current time).
    pub fn record(&self, mut op: Op) -> Op {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        op.time = self.now();
        if let Ok(line) = serde_json::to_string(&op) {
            let _ = writeln!(inner.file, "{line}");
        }
        inner.ops.push(op.clone());
        op
    }

    /// Flushes the file and returns everything recorded so far.
    pub fn snapshot(&self) -> Vec<Op> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let _ = inner.file.flush();
        inner.ops.clone()
    }
}

/// Reads a JSON-lines history back (for `raftgate-jepsen check`).
pub fn load(path: &Path) -> Result<Vec<Op>, crate::error::Error> {
    let text = std::fs::read_to_string(path).map_err(|e| crate::error::Error::Io {
        what: format!("reading {}", path.display()),
        source: e,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| crate::error::Error::History {
                line: i + 1,
                reason: e.to_string(),
            })
        })
        .collect()
}

/// An invocation paired with its completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// The invoke record.
    pub invoke: Op,
    /// The completion, `None` when the run ended first (treated as `info`).
    pub complete: Option<Op>,
}

impl Pair {
    /// The completion type (`info` when none was recorded).
    pub fn outcome(&self) -> OpType {
        self.complete.as_ref().map_or(OpType::Info, |c| c.kind)
    }

    /// When the operation completed; `None` for an open operation.
    pub fn end(&self) -> Option<u64> {
        self.complete.as_ref().map(|c| c.time)
    }
}

/// Pairs client invocations with their completions (same process, in order).
pub fn pairs(ops: &[Op]) -> Vec<Pair> {
    let mut open: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    let mut out: Vec<Pair> = Vec::new();
    for op in ops {
        let Process::Client(p) = op.process else {
            continue;
        };
        if op.kind == OpType::Invoke {
            open.insert(p, out.len());
            out.push(Pair {
                invoke: op.clone(),
                complete: None,
            });
        } else if let Some(i) = open.remove(&p) {
            out[i].complete = Some(op.clone());
        }
    }
    out
}
