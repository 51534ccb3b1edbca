//! `mock-llm` mode: a fast mock OpenAI provider on loopback (raftgate-ai's, which speaks
//! OpenAI's real wire format), the common upstream of the AI gateway benchmark: the benchmark
//! calls it directly, through LiteLLM's proxy and through raftgate, so the gateways are
//! compared on the same provider.

use std::path::PathBuf;

use raftgate_ai::mock::MockProvider;
use raftgate_ai::providers::ProviderKind;

use crate::error::BenchError;

/// Settings of the mock.
#[derive(Debug, Clone, clap::Args)]
pub struct MockLlmArgs {
    /// File the mock's base URL (`http://127.0.0.1:PORT/v1`) is written to once it listens.
    #[arg(long)]
    pub url_file: PathBuf,
}

/// Serves until the process is stopped (SIGTERM or Ctrl-C).
pub async fn run(args: MockLlmArgs) -> Result<String, BenchError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |source| BenchError::Io { what, source }
    };
    let mock = MockProvider::start(ProviderKind::Openai)
        .await
        .map_err(io("start the mock OpenAI provider"))?;
    let url = mock.base_url();
    std::fs::write(&args.url_file, &url).map_err(io("write the mock's URL file"))?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(io("listen for SIGTERM"))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    Ok(format!(
        "{{\"mock\":\"{url}\",\"requests\":{}}}",
        mock.hits()
    ))
}
