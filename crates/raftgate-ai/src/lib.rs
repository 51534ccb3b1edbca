//! raftgate's AI gateway: one OpenAI-compatible API in front of many LLM providers.
//!
//! Everything that knows a provider's API lives in this crate:
//! - [`api`]: the unified HTTP API (`/v1/chat/completions`, `/v1/embeddings`, `/v1/models`,
//!   `/v1/messages`) the data plane hands authenticated requests to;
//! - [`openai`]: the canonical types (OpenAI's chat completions, chunks, embeddings, models,
//!   errors) that every provider is translated to and from;
//! - [`providers`]: one file per provider kind (OpenAI and compatibles, Azure, Anthropic,
//!   Gemini, Cohere) behind the [`providers::Provider`] trait;
//! - [`messages`]: the inbound Anthropic-style `/v1/messages` API, served by any provider;
//! - [`sse`]: the incremental server-sent-events parser and writer streams go through;
//! - [`pricing`] and [`tokens`]: cost from a price table, and token estimates when a provider
//!   reports no usage;
//! - [`estimate`]: the most a request may consume (images, `n`, embeddings included), which
//!   budgets reserve before the call;
//! - [`memory`]: the node-wide budget on the bytes AI answers hold while they are read;
//! - [`config`] and [`engine`]: model aliases over provider deployments, and the engine that
//!   routes, retries, falls back, cools failing deployments down, streams and reports usage;
//! - [`cache`]: the opt-in exact-match cache of complete chat answers, per model alias;
//! - [`prompt`]: prompt templates served as REST APIs at their own paths;
//! - [`error`]: the one error type and its OpenAI-style body;
//! - `mock` (feature `mock`): loopback servers speaking the providers' wire formats, for tests
//!   and benchmarks.

pub mod api;
pub mod cache;
pub mod config;
pub mod engine;
pub mod error;
pub mod estimate;
pub mod memory;
pub mod messages;
#[cfg(feature = "mock")]
pub mod mock;
pub mod openai;
pub mod pricing;
pub mod prompt;
pub mod providers;
pub mod sse;
pub mod tokens;

pub use config::GatewayConfig;
pub use engine::{
    CallTrace, Caller, ChatOutcome, ChatStream, Gateway, Operation, Reservation, Settle,
    StreamItem, UsageRecord, UsageSink,
};
pub use error::ApiError;
