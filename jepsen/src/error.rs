//! Why the harness itself could not do its job (as opposed to anomalies it found in raftgate,
//! which go to the report).

/// A harness failure; each message says what to check.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system command (ip, iptables) failed.
    #[error("`{command}` failed: {stderr}; are you root and are iproute2/iptables installed?")]
    Command {
        /// The command line.
        command: String,
        /// Its error output.
        stderr: String,
    },
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A node did not come up or the cluster did not form.
    #[error("cluster setup failed: {0}; see the node logs in the results folder")]
    Setup(String),
    /// Every network slot is in use.
    #[error(
        "no free network slot (10.213.X.0/24); run `jepsen/run --cleanup` to remove leftovers of killed runs"
    )]
    NoSlot,
    /// A history line could not be parsed.
    #[error("history line {line}: {reason}")]
    History {
        /// 1-based line number.
        line: usize,
        /// Parse error.
        reason: String,
    },
    /// The options make no sense.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}
