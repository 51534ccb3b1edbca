//! The node's tracer: the OTLP exporter, the batch span processor and the sampler.

use std::sync::Arc;

use http::{HeaderMap, Method};
use opentelemetry::InstrumentationScope;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use tracing::warn;

use crate::headers::HeaderExtractor;
use crate::spans::{self, RequestSpan};

/// How a node traces: where spans go and how many requests are traced.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceConfig {
    /// The OTLP gRPC endpoint spans are exported to, e.g. `http://127.0.0.1:4317`.
    pub endpoint: String,
    /// Share of the requests that start a trace which are traced, from 0.0 to 1.0. Requests
    /// that continue a client's trace follow the client's sampling decision.
    pub sampling_ratio: f64,
    /// `service.name` of the exported spans, which tracing backends group by.
    pub service_name: String,
    /// This node's id, recorded on every request span as `raftgate.node`.
    pub node: u64,
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The sampling ratio is not a number from 0.0 to 1.0.
    #[error(
        "the trace sampling ratio {0} is not between 0.0 and 1.0; give a share of requests to trace, e.g. 0.1"
    )]
    SamplingRatio(f64),
    /// The OTLP exporter could not be built, most likely because of the endpoint.
    #[error(
        "the OTLP trace exporter for endpoint {endpoint:?} could not be built: {source}; give the collector's gRPC URL, e.g. http://127.0.0.1:4317"
    )]
    Exporter {
        /// The endpoint as configured.
        endpoint: String,
        /// What the exporter reported.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// [`Tracer::start`] was called outside a tokio runtime, which the gRPC exporter needs.
    #[error("tracing must be started inside a tokio runtime; start it from the node's runtime")]
    NoRuntime,
}

/// A node's tracer: starts the spans of proxied requests and exports them in batches.
///
/// Call [`Tracer::shutdown`] before dropping it, so that the spans still queued are sent.
pub struct Tracer {
    inner: Arc<Inner>,
    provider: SdkTracerProvider,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

/// What every span of the node needs, shared with the spans in flight.
pub(crate) struct Inner {
    pub(crate) tracer: SdkTracer,
    pub(crate) propagator: TraceContextPropagator,
    pub(crate) node: i64,
}

impl Tracer {
    /// Starts exporting to `config.endpoint`. The connection is made lazily, so a collector
    /// that is down does not stop the node: its spans are dropped, with a logged error.
    /// Must be called inside a tokio runtime, which the gRPC channel runs on.
    pub fn start(config: &TraceConfig) -> Result<Tracer, TraceError> {
        if !(0.0..=1.0).contains(&config.sampling_ratio) {
            return Err(TraceError::SamplingRatio(config.sampling_ratio));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(TraceError::NoRuntime);
        }
        let exporter = SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.endpoint.clone())
            .build()
            .map_err(|source| TraceError::Exporter {
                endpoint: config.endpoint.clone(),
                source,
            })?;
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .with_attribute(KeyValue::new(
                "service.instance.id",
                config.node.to_string(),
            ))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sampling_ratio,
            ))))
            .with_resource(resource)
            .build();
        let scope = InstrumentationScope::builder(env!("CARGO_PKG_NAME"))
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let tracer = provider.tracer_with_scope(scope);
        Ok(Tracer {
            inner: Arc::new(Inner {
                tracer,
                propagator: TraceContextPropagator::new(),
                node: i64::try_from(config.node).unwrap_or(i64::MAX),
            }),
            provider,
        })
    }

    /// Starts the server span of one proxied request, continuing the client's trace when its
    /// headers carry one. `path` is the request's path without the query.
    pub fn request(&self, headers: &HeaderMap, method: &Method, path: &str) -> RequestSpan {
        // From an empty context rather than the thread's current one: no thread-local lookup.
        let parent = self
            .inner
            .propagator
            .extract_with_context(&Context::new(), &HeaderExtractor::new(headers));
        let span = spans::start(
            &self.inner,
            spans::method_name(method),
            SpanKind::Server,
            &parent,
        );
        RequestSpan::new(self.inner.clone(), span, headers, method, path)
    }

    /// Exports the spans still queued and stops the exporter; spans started afterwards are
    /// not recorded. Called at node shutdown.
    pub async fn shutdown(&self) {
        let provider = self.provider.clone();
        // The SDK's shutdown blocks until the export thread is done, and that export runs on
        // this runtime's gRPC channel: blocking here could starve it.
        let shut = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match shut {
            Ok(Ok(())) => {}
            Ok(Err(error)) => warn!(%error, "the trace exporter did not shut down cleanly"),
            Err(error) => warn!(%error, "the trace exporter's shutdown task failed"),
        }
    }
}
