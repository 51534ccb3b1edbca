//! The one error type of the benchmark tool; every message says what to check or do next.

use std::io;

/// Why a benchmark step failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The TCP connection could not be opened.
    #[error("cannot connect to {addr}: {source}; is the node running and listening there?")]
    Connect {
        /// `host:port` that refused.
        addr: String,
        /// The socket error.
        source: io::Error,
    },
    /// The HTTP/1 exchange broke (connection reset, malformed answer).
    #[error(
        "HTTP exchange with {addr} failed: {source}; the node may have crashed or closed the connection"
    )]
    Http {
        /// `host:port` of the peer.
        addr: String,
        /// hyper's error.
        source: hyper::Error,
    },
    /// A request could not be built (an endpoint or path that is not a valid URI part).
    #[error(
        "cannot build a request for {addr}: {source}; check the --endpoints values (host:port)"
    )]
    Request {
        /// `host:port` of the peer.
        addr: String,
        /// The builder's error.
        source: hyper::http::Error,
    },
    /// No complete answer within the per-request timeout.
    #[error("{addr} did not answer within {ms} ms")]
    Timeout {
        /// `host:port` of the peer.
        addr: String,
        /// The timeout that expired.
        ms: u64,
    },
    /// The server answered with a non-success status.
    #[error("{addr} answered {status}: {body}")]
    Status {
        /// `host:port` of the peer.
        addr: String,
        /// The HTTP status.
        status: u16,
        /// The start of the body, for diagnosis.
        body: String,
    },
    /// The answer parsed but did not have the expected shape.
    #[error("unexpected answer from {addr}: {reason}; is --system right for this endpoint?")]
    BadAnswer {
        /// `host:port` of the peer.
        addr: String,
        /// What was missing or wrong.
        reason: String,
    },
    /// No endpoint named a leader that is among the endpoints.
    #[error("no leader found among {endpoints}: {detail}; wait until the cluster has elected one")]
    NoLeader {
        /// The endpoints that were asked.
        endpoints: String,
        /// What each endpoint answered.
        detail: String,
    },
    /// Sending SIGKILL to the leader failed.
    #[error("could not SIGKILL pid {pid}: {detail}; check --pids matches --endpoints")]
    Kill {
        /// The process id.
        pid: u32,
        /// What `kill` reported.
        detail: String,
    },
    /// The surviving members never accepted a write.
    #[error(
        "no write succeeded within {secs} s after killing the leader; look at the survivors' logs"
    )]
    NoRecovery {
        /// How long the tool waited.
        secs: u64,
    },
    /// The load tool failed or printed no summary.
    #[error(
        "load run failed: {detail}; check that the URL answers 200 (curl it with the same Host)"
    )]
    Load {
        /// The tool's exit status and output.
        detail: String,
    },
    /// The admin API refused or failed a setup write.
    #[error("{0}; check that the raftgate node runs and its admin API answers")]
    Admin(String),
    /// Command-line values that do not fit together.
    #[error("invalid arguments: {0}")]
    Args(String),
    /// A local operation failed: reading a results file or /proc, binding a port, starting the
    /// runtime.
    #[error("cannot {what}: {source}")]
    Io {
        /// What was being done, e.g. "read results.jsonl".
        what: String,
        /// The I/O error.
        source: io::Error,
    },
    /// A results line that is not a record this tool wrote.
    #[error(
        "{path}:{line}: not a benchmark record ({source}); pass only files written by raftgate-bench"
    )]
    Record {
        /// The results file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// The JSON error.
        source: serde_json::Error,
    },
}
