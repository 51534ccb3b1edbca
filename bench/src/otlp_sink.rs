//! `otlp-sink` mode: an OTLP trace collector on loopback that counts the spans it is sent and
//! drops them, so that `bench/proxy` measures raftgate with tracing at 100% exporting to a
//! real gRPC endpoint, as it would in production, without a collector that grows with the load.

use std::net::SocketAddr;

use raftgate_trace::receiver::Receiver;

use crate::error::BenchError;

/// Settings of the sink.
#[derive(Debug, Clone, clap::Args)]
pub struct OtlpSinkArgs {
    /// `host:port` to listen on.
    #[arg(long)]
    pub addr: SocketAddr,
    /// File the number of spans received is written to when the sink stops.
    #[arg(long)]
    pub count_file: std::path::PathBuf,
}

/// Serves until the process is stopped (SIGTERM or Ctrl-C); prints the spans received.
pub async fn run(args: OtlpSinkArgs) -> Result<String, BenchError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |source| BenchError::Io { what, source }
    };
    let (addr, sink) = Receiver::start_counting(args.addr)
        .await
        .map_err(|e| BenchError::Io {
            what: format!("start the OTLP sink on {}", args.addr),
            source: std::io::Error::other(e.to_string()),
        })?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(io("listen for SIGTERM"))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    let line = format!("{{\"otlp_sink\":\"{addr}\",\"spans\":{}}}", sink.counted());
    std::fs::write(&args.count_file, &line).map_err(io("write the span count"))?;
    Ok(line)
}
