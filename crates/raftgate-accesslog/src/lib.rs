//! The access log: one JSON line per proxied request (and per AI call), as Kong's file-log and
//! nginx's `access_log` give, for log shippers and for answering "what happened to request X".
//!
//! The proxy must never wait for the log, so [`AccessLog::log`] only hands the [`Entry`] to a
//! bounded queue (`try_send`: no lock held while writing, no I/O, no JSON on the request path)
//! and a dedicated writer thread drains the queue every few milliseconds, serializing and
//! writing each batch with one `write`. When the queue is full the line is dropped and counted in
//! `raftgate_access_log_dropped_total`: a disk that stalls costs log lines, not requests.
//!
//! Output goes to a file or to stdout. A file is reopened (by path) after [`AccessLog::reopen`]
//! — the node calls it on `SIGHUP` — so logrotate can move it away and signal. With a sampling
//! ratio below 1, [`AccessLog::sampled`] picks which requests are logged.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use raftgate_metrics::Drops;
use raftgate_model::policy::civil_from_days;

/// Lines the queue holds before it drops: about a second of a busy node's traffic.
pub const DEFAULT_QUEUE: usize = 65_536;

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The process's standard output.
    Stdout,
    /// A file, appended to, reopened on [`AccessLog::reopen`].
    File(PathBuf),
}

impl Output {
    /// `stdout` or a path, as the `--access-log` flag takes it.
    pub fn parse(value: &str) -> Output {
        match value {
            "stdout" | "-" => Output::Stdout,
            path => Output::File(PathBuf::from(path)),
        }
    }
}

/// The access log could not start.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    /// The file could not be opened for appending.
    #[error(
        "cannot open the access log {path} for appending: {source}; check the directory exists and is writable, or use --access-log stdout"
    )]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The sampling ratio is not in 0..=1.
    #[error("--access-log-sample {0} must be between 0 and 1 (1 logs every request)")]
    Sample(f64),
    /// The writer thread could not start.
    #[error("cannot start the access log writer thread: {0}")]
    Thread(std::io::Error),
}

/// One proxied request, as logged. Names are empty when they do not apply (a request that
/// matched no route has no route; an unauthenticated one no consumer).
///
/// The request's own strings (id, method, host, path) are copied into one allocation by
/// [`Entry::new`]: the request moves on before the line is written, and one copy costs the
/// proxy less than four.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    /// When the request was received.
    pub time: Option<SystemTime>,
    /// Request id, method, host and path, one after another; `ends` says where each stops.
    head: String,
    ends: [usize; 3],
    /// The trace id, when the request is traced.
    pub trace_id: Option<String>,
    /// The node that served it.
    pub node: u64,
    /// The client's address.
    pub client: Option<std::net::SocketAddr>,
    /// The route matched.
    pub route: Arc<str>,
    /// The route's service.
    pub service: Arc<str>,
    /// The route's API.
    pub api: Arc<str>,
    /// The API version.
    pub version: Arc<str>,
    /// The authenticated consumer (application).
    pub consumer: Option<Arc<str>>,
    /// Status sent to the client.
    pub status: u16,
    /// Request body bytes, as declared.
    pub bytes_in: u64,
    /// Response body bytes, as declared.
    pub bytes_out: u64,
    /// From receiving the request to having the response head.
    pub latency: Duration,
    /// What the upstream took, retries included.
    pub upstream_latency: Option<Duration>,
    /// The upstream target that answered (or failed).
    pub upstream: Option<Arc<str>>,
    /// Attempts beyond the first.
    pub retries: u32,
    /// Cache outcome (`hit`, `miss`), when a cache was asked.
    pub cache: Option<&'static str>,
    /// `refused` when a rate limit or quota refused the request, `passed` when the route has
    /// limits and they let it through.
    pub rate_limit: Option<&'static str>,
    /// The proxy's own error code, when it answered itself (`no_route`, `upstream_timeout`…).
    pub error: Option<&'static str>,
}

impl Entry {
    /// A line for the request received at `time`; the path is without its query string, which
    /// may hold secrets.
    pub fn new(
        time: SystemTime,
        node: u64,
        client: std::net::SocketAddr,
        request: [&str; 4],
    ) -> Box<Entry> {
        let [request_id, method, host, path] = request;
        let mut head = String::with_capacity(request.iter().map(|s| s.len()).sum());
        let mut ends = [0; 3];
        for (end, part) in ends.iter_mut().zip([request_id, method, host]) {
            head.push_str(part);
            *end = head.len();
        }
        head.push_str(path);
        Box::new(Entry {
            time: Some(time),
            head,
            ends,
            node,
            client: Some(client),
            ..Entry::default()
        })
    }

    /// `X-Request-Id`, as sent upstream and to the client.
    pub fn request_id(&self) -> &str {
        self.head.get(..self.ends[0]).unwrap_or_default()
    }

    fn part(&self, i: usize) -> &str {
        self.head
            .get(self.ends[i - 1]..self.ends[i])
            .unwrap_or_default()
    }

    /// The JSON line, without its newline, appended to `out`.
    fn write(&self, out: &mut Vec<u8>, clock: &mut Clock) {
        let mut n = itoa::Buffer::new();
        out.extend_from_slice(b"{\"time\":\"");
        clock.write(self.time, out);
        out.extend_from_slice(b"\",\"request_id\":");
        string(out, self.request_id());
        if let Some(trace_id) = &self.trace_id {
            out.extend_from_slice(b",\"trace_id\":");
            string(out, trace_id);
        }
        out.extend_from_slice(b",\"node\":");
        out.extend_from_slice(n.format(self.node).as_bytes());
        out.extend_from_slice(b",\"client\":");
        match self.client {
            Some(std::net::SocketAddr::V4(addr)) => {
                out.push(b'"');
                for (i, octet) in addr.ip().octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push(b'.');
                    }
                    out.extend_from_slice(n.format(octet).as_bytes());
                }
                out.push(b':');
                out.extend_from_slice(n.format(addr.port()).as_bytes());
                out.push(b'"');
            }
            Some(addr) => {
                let _ = write!(out, "\"{addr}\"");
            }
            None => out.extend_from_slice(b"null"),
        }
        for (key, value) in [
            (&b",\"method\":"[..], self.part(1)),
            (b",\"host\":", self.part(2)),
            (
                b",\"path\":",
                self.head.get(self.ends[2]..).unwrap_or_default(),
            ),
            (b",\"route\":", &self.route),
            (b",\"service\":", &self.service),
            (b",\"api\":", &self.api),
            (b",\"version\":", &self.version),
        ] {
            out.extend_from_slice(key);
            string(out, value);
        }
        out.extend_from_slice(b",\"consumer\":");
        match &self.consumer {
            Some(consumer) => string(out, consumer),
            None => out.extend_from_slice(b"null"),
        }
        for (key, value) in [
            (&b",\"status\":"[..], u64::from(self.status)),
            (b",\"bytes_in\":", self.bytes_in),
            (b",\"bytes_out\":", self.bytes_out),
        ] {
            out.extend_from_slice(key);
            out.extend_from_slice(n.format(value).as_bytes());
        }
        out.extend_from_slice(b",\"latency_ms\":");
        millis(out, self.latency);
        if let Some(upstream_latency) = self.upstream_latency {
            out.extend_from_slice(b",\"upstream_latency_ms\":");
            millis(out, upstream_latency);
        }
        if let Some(upstream) = &self.upstream {
            out.extend_from_slice(b",\"upstream\":");
            string(out, upstream);
        }
        out.extend_from_slice(b",\"retries\":");
        out.extend_from_slice(n.format(self.retries).as_bytes());
        for (key, value) in [
            (&b",\"cache\":"[..], self.cache),
            (b",\"rate_limit\":", self.rate_limit),
            (b",\"error\":", self.error),
        ] {
            if let Some(value) = value {
                out.extend_from_slice(key);
                string(out, value);
            }
        }
        out.push(b'}');
    }
}

/// `value` as a JSON string (quoted and escaped). Names, paths and ids rarely hold anything
/// to escape, so they are checked first and copied whole; serde_json's byte-by-byte escaping
/// cost 1,100 instructions per line, a quarter of the log's cost (callgrind).
fn string(out: &mut Vec<u8>, value: &str) {
    // A fold without an early exit, so the compiler checks many bytes per instruction.
    let clean = !value.bytes().fold(false, |dirty, b| {
        dirty | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if clean {
        out.reserve(value.len() + 2);
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else {
        // Writing a `str` into a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut *out, value);
    }
}

/// A duration in milliseconds with microsecond precision (`12.345`), without going through
/// floating point.
fn millis(out: &mut Vec<u8>, duration: Duration) {
    let us = duration.as_micros();
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(n.format(us / 1000).as_bytes());
    let frac = (us % 1000) as u16;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// Formats line times: the date and time down to the second are formatted once per second
/// (`2026-12-07T23:59:01.`), a line adds its milliseconds.
#[derive(Debug, Default)]
struct Clock {
    second: Option<u64>,
    prefix: String,
}

impl Clock {
    /// `time` as `2026-12-07T23:59:01.123Z` (the Unix epoch when unknown).
    fn write(&mut self, time: Option<SystemTime>, out: &mut Vec<u8>) {
        let ms = time
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        let (secs, ms) = (ms / 1000, ms % 1000);
        if self.second != Some(secs) {
            let (days, rest) = (secs / 86_400, secs % 86_400);
            let (year, month, day) = civil_from_days(days);
            self.prefix = format!(
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.",
                rest / 3600,
                rest % 3600 / 60,
                rest % 60
            );
            self.second = Some(secs);
        }
        out.extend_from_slice(self.prefix.as_bytes());
        out.extend_from_slice(&[
            b'0' + (ms / 100) as u8,
            b'0' + (ms / 10 % 10) as u8,
            b'0' + (ms % 10) as u8,
            b'Z',
        ]);
    }
}

/// The node's access log; cheap to share (`Arc`).
#[derive(Debug)]
pub struct AccessLog {
    /// Boxed entries: the queue's slots are allocated up front, a pointer each.
    queue: SyncSender<Box<Entry>>,
    /// Requests are logged when a uniform draw falls below this (`u64::MAX` logs all).
    threshold: u64,
    reopen: Arc<AtomicBool>,
    drops: Drops,
}

impl AccessLog {
    /// Opens `output` and starts the writer thread; `sample` (0..=1) is the share of requests
    /// logged, `queue` the lines held before dropping, `drops` where drops are counted.
    pub fn start(
        output: Output,
        sample: f64,
        queue: usize,
        drops: Drops,
    ) -> Result<AccessLog, AccessLogError> {
        if !(0.0..=1.0).contains(&sample) {
            return Err(AccessLogError::Sample(sample));
        }
        let sink = Sink::open(output)?;
        let (tx, rx) = sync_channel(queue.max(1));
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = reopen.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(rx, sink, &flag))
            .map_err(AccessLogError::Thread)?;
        Ok(AccessLog {
            queue: tx,
            threshold: if sample >= 1.0 {
                u64::MAX
            } else {
                (sample * u64::MAX as f64) as u64
            },
            reopen,
            drops,
        })
    }

    /// Whether this request is one to log (always, unless sampling).
    pub fn sampled(&self) -> bool {
        self.threshold == u64::MAX || rand::random::<u64>() < self.threshold
    }

    /// Queues `entry` for the writer, or drops it (counted) when the queue is full. Never
    /// blocks.
    pub fn log(&self, entry: Box<Entry>) {
        match self.queue.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.drops.dropped(),
            // The writer is gone (it failed to write); what it said is in the node's log.
            Err(TrySendError::Disconnected(_)) => self.drops.dropped(),
        }
    }

    /// Reopens the file by its path before the next line (after logrotate moved it).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }
}

/// Where the writer writes: unbuffered, as the writer hands it whole batches.
enum Sink {
    Stdout(std::io::Stdout),
    File(PathBuf, File),
}

fn open_file(path: &Path) -> Result<File, AccessLogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| AccessLogError::Open {
            path: path.to_path_buf(),
            source,
        })
}

impl Sink {
    fn open(output: Output) -> Result<Sink, AccessLogError> {
        Ok(match output {
            Output::Stdout => Sink::Stdout(std::io::stdout()),
            Output::File(path) => {
                let file = open_file(&path)?;
                Sink::File(path, file)
            }
        })
    }

    fn write_all(&mut self, batch: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout(w) => w.lock().write_all(batch).and_then(|()| w.flush()),
            Sink::File(_, w) => w.write_all(batch),
        }
    }

    /// Reopens a file by its path; stdout stays.
    fn reopen(&mut self) {
        if let Sink::File(path, file) = self {
            match open_file(path) {
                Ok(reopened) => {
                    *file = reopened;
                    tracing::info!(path = %path.display(), "access log reopened");
                }
                Err(error) => {
                    tracing::error!(%error, "access log not reopened; still writing the old file")
                }
            }
        }
    }
}

/// Lines are written in batches of about this many bytes (and at the end of every drain).
const BATCH_BYTES: usize = 64 * 1024;

/// How long the writer sleeps between two drains of the queue. Waking it per line would cost
/// every request a futex wake-up and the writer a `write` per line; draining on a timer makes
/// both one per batch. Lines reach the file at most this late.
const DRAIN_EVERY: Duration = Duration::from_millis(20);

/// Puts the calling thread (the writer) in `SCHED_BATCH`, so that waking up never preempts a
/// proxy worker: it waits for the worker's time slice to end or for an idle core. Woken every
/// 20 ms with normal priority, the writer took the core from a busy worker for its whole
/// drain, and every connection waited: under `wrk -c64` the cores sat idle 5% of the time
/// instead of 3%, and the node served 14% fewer requests. Its share of the CPU is unchanged.
fn never_preempt() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` outlives the call, and pid 0 is the calling thread.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
        if rc != 0 {
            let error = std::io::Error::last_os_error();
            tracing::warn!(%error, "access log writer keeps the default scheduling policy");
        }
    }
}

/// Writes every entry as a JSON line, one `write` per batch, until the log is dropped.
fn write_loop(queue: Receiver<Box<Entry>>, mut sink: Sink, reopen: &AtomicBool) {
    never_preempt();
    let mut batch = Vec::with_capacity(2 * BATCH_BYTES);
    let mut clock = Clock::default();
    let mut failures = 0u64;
    let mut flush = |sink: &mut Sink, batch: &mut Vec<u8>| {
        if let Err(error) = sink.write_all(batch) {
            failures += 1;
            if failures % 1000 == 1 {
                tracing::error!(%error, "access log write failed; lines are lost until it works again");
            }
        }
        batch.clear();
    };
    loop {
        if reopen.swap(false, Ordering::AcqRel) {
            sink.reopen();
        }
        let open = loop {
            match queue.try_recv() {
                Ok(entry) => {
                    entry.write(&mut batch, &mut clock);
                    batch.push(b'\n');
                    if batch.len() >= BATCH_BYTES {
                        flush(&mut sink, &mut batch);
                    }
                }
                Err(TryRecvError::Empty) => break true,
                Err(TryRecvError::Disconnected) => break false,
            }
        };
        if !batch.is_empty() {
            flush(&mut sink, &mut batch);
        }
        if !open {
            return;
        }
        std::thread::sleep(DRAIN_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(ms: u64, clock: &mut Clock) -> String {
        let mut out = Vec::new();
        clock.write(Some(UNIX_EPOCH + Duration::from_millis(ms)), &mut out);
        String::from_utf8(out).expect("ASCII")
    }

    #[test]
    fn times_are_rfc3339_utc() {
        let mut clock = Clock::default();
        assert_eq!(time(0, &mut clock), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            time(1_796_687_941_123, &mut clock),
            "2026-12-07T23:59:01.123Z"
        );
        assert_eq!(
            time(1_796_687_941_999, &mut clock),
            "2026-12-07T23:59:01.999Z",
            "the same second, from the cached prefix"
        );
        assert_eq!(
            time(1_796_687_942_005, &mut clock),
            "2026-12-07T23:59:02.005Z",
            "the next second"
        );
        assert_eq!(
            time(951_825_600_000, &mut clock),
            "2000-02-29T12:00:00.000Z",
            "a leap day"
        );
    }

    #[test]
    fn lines_are_json_with_every_field_escaped() {
        let mut entry = Entry::new(
            UNIX_EPOCH + Duration::from_millis(1_500),
            3,
            "10.0.0.7:4242".parse().expect("address"),
            ["id-1", "GET", "a\"b.test", "/p/\u{1}ü"],
        );
        entry.route = "r".into();
        entry.consumer = Some("alice".into());
        entry.status = 503;
        entry.latency = Duration::from_micros(12_345);
        entry.upstream_latency = Some(Duration::from_micros(7));
        entry.error = Some("upstream_timeout");
        let mut out = Vec::new();
        entry.write(&mut out, &mut Clock::default());
        let line: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(
            line,
            serde_json::json!({
                "time": "1970-01-01T00:00:01.500Z",
                "request_id": "id-1",
                "node": 3,
                "client": "10.0.0.7:4242",
                "method": "GET",
                "host": "a\"b.test",
                "path": "/p/\u{1}ü",
                "route": "r",
                "service": "",
                "api": "",
                "version": "",
                "consumer": "alice",
                "status": 503,
                "bytes_in": 0,
                "bytes_out": 0,
                "latency_ms": 12.345,
                "upstream_latency_ms": 0.007,
                "retries": 0,
                "error": "upstream_timeout",
            })
        );
        let mut out = Vec::new();
        let v6 = Entry::new(UNIX_EPOCH, 1, "[::1]:80".parse().expect("address"), [""; 4]);
        v6.write(&mut out, &mut Clock::default());
        let line: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(line["client"], "[::1]:80");
        assert!(line.get("trace_id").is_none() && line.get("upstream").is_none());
    }

    fn read_lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect()
    }

    fn wait_for(path: &Path, n: usize) -> Vec<serde_json::Value> {
        for _ in 0..200 {
            let lines = read_lines(path);
            if lines.len() >= n {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        read_lines(path)
    }

    #[test]
    fn lines_are_written_and_the_file_reopened_after_a_move() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("access.log");
        let metrics = raftgate_metrics::Metrics::new();
        let log = AccessLog::start(
            Output::File(path.clone()),
            1.0,
            16,
            metrics.access_log_drops(),
        )
        .expect("start");
        let mut entry = Entry::new(
            UNIX_EPOCH,
            1,
            "127.0.0.1:1".parse().expect("address"),
            ["a", "GET", "h", "/"],
        );
        entry.route = "r".into();
        log.log(entry);
        let lines = wait_for(&path, 1);
        assert_eq!(lines[0]["request_id"], "a");
        assert_eq!(lines[0]["route"], "r");
        assert_eq!(lines[0]["time"], "1970-01-01T00:00:00.000Z");
        assert!(lines[0].get("trace_id").is_none());

        // logrotate: move the file, then signal.
        let rotated = dir.path().join("access.log.1");
        std::fs::rename(&path, &rotated).expect("rotate");
        log.reopen();
        std::thread::sleep(Duration::from_millis(600));
        log.log(Entry::new(
            UNIX_EPOCH,
            1,
            "127.0.0.1:1".parse().expect("address"),
            ["b", "GET", "h", "/"],
        ));
        assert_eq!(wait_for(&path, 1)[0]["request_id"], "b");
        assert_eq!(read_lines(&rotated).len(), 1, "the old file keeps its line");
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let metrics = raftgate_metrics::Metrics::new();
        // A writer that cannot keep up: a FIFO nobody reads would block it; a queue of one
        // and a burst far larger than it does the same job portably.
        let dir = tempfile::tempdir().expect("temp dir");
        let log = AccessLog::start(
            Output::File(dir.path().join("a.log")),
            1.0,
            1,
            metrics.access_log_drops(),
        )
        .expect("start");
        let started = std::time::Instant::now();
        for _ in 0..100_000 {
            log.log(Box::default());
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never waits");
        let text = metrics.encode().expect("encode");
        let dropped: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("raftgate_access_log_dropped_total "))
            .and_then(|v| v.parse().ok())
            .expect("the drop counter");
        assert!(dropped > 0.0, "{text}");
    }

    #[test]
    fn sampling_logs_about_the_share_asked() {
        let metrics = raftgate_metrics::Metrics::new();
        let log =
            AccessLog::start(Output::Stdout, 0.25, 1, metrics.access_log_drops()).expect("start");
        let n = (0..100_000).filter(|_| log.sampled()).count();
        assert!((20_000..30_000).contains(&n), "{n}");
        assert!(AccessLog::start(Output::Stdout, 1.5, 1, metrics.access_log_drops()).is_err());
    }
}
