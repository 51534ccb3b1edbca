//! OpenTelemetry traces for the raftgate proxy.
//!
//! A node that has tracing on holds one [`Tracer`] (the proxy keeps an
//! `Option<Arc<Tracer>>`: with `None` nothing of this crate runs, so tracing off costs nothing).
//! For each proxied request the proxy calls [`Tracer::request`], which continues the client's
//! trace when its W3C `traceparent`/`tracestate` headers carry one (a missing or malformed
//! `traceparent` starts a new trace), and gets a [`RequestSpan`], the request's server span.
//! From that span it starts children:
//!
//! - [`RequestSpan::upstream`]: the client span of the call to the upstream, whose
//!   [`UpstreamSpan::inject`] writes `traceparent` (and `tracestate`) into the upstream
//!   request, so the upstream continues the same trace;
//! - [`RequestSpan::refused`]: a `policy` span with error status when a policy refuses;
//! - [`RequestSpan::ai_call`]: an AI provider call with the OpenTelemetry GenAI
//!   semantic-convention attributes.
//!
//! ```no_run
//! # async fn example(headers: &http::HeaderMap, upstream_headers: &mut http::HeaderMap)
//! # -> Result<(), raftgate_trace::TraceError> {
//! use raftgate_trace::{TraceConfig, Tracer};
//!
//! let tracer = Tracer::start(&TraceConfig {
//!     endpoint: "http://127.0.0.1:4317".into(),
//!     sampling_ratio: 0.1,
//!     service_name: "raftgate".into(),
//!     node: 1,
//! })?;
//! let mut span = tracer.request(headers, &http::Method::GET, "/orders/7");
//! span.set_route("orders", "orders-service");
//! let upstream = span.upstream("10.0.0.5:8080");
//! upstream.inject(upstream_headers);
//! upstream.finish(Some(200), 0, None);
//! span.finish(200);
//! tracer.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Spans are sampled parent-based: a request whose client sent a sampled `traceparent` is
//! traced, one whose client sent an unsampled one is not, and a request that starts a trace
//! is traced with probability [`TraceConfig::sampling_ratio`]. An unsampled span builds no
//! attributes and exports nothing, but its trace context still goes upstream.
//!
//! Finished spans are exported over OTLP gRPC by the SDK's batch span processor, which runs
//! on a thread of its own; its queue size and delay follow the standard `OTEL_BSP_*`
//! environment variables, and `OTEL_RESOURCE_ATTRIBUTES` adds resource attributes.
//!
//! With the `receiver` feature, `receiver::Receiver` is an OTLP trace receiver that stores
//! the spans it is sent, for tests (this crate's and the workspace's end-to-end ones).

mod headers;
#[cfg(feature = "receiver")]
pub mod receiver;
mod spans;
mod tracer;

pub use spans::{AiParent, AiSpan, RequestSpan, UpstreamSpan};
pub use tracer::{TraceConfig, TraceError, Tracer};
