//! An OTLP gRPC trace receiver that keeps every span it is sent, so tests can check what a
//! [`crate::Tracer`] (or a whole raftgate node) exported without a real collector.
//!
//! ```no_run
//! # async fn example() -> Result<(), raftgate_trace::receiver::ReceiverError> {
//! use std::time::Duration;
//! use raftgate_trace::receiver::Receiver;
//!
//! let (addr, receiver) = Receiver::start().await?;
//! // Point the tracer (or `raftgate --trace-endpoint`) at `http://{addr}`, send requests...
//! let spans = receiver.wait_for(2, Duration::from_secs(10)).await?;
//! assert!(spans.iter().any(|s| s.str_attribute("http.route") == Some("orders")));
//! # Ok(()) }
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
pub use opentelemetry_proto::tonic::trace::v1::Span as ProtoSpan;
pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use tokio::sync::Notify;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use tracing::warn;

/// Why the receiver could not start or did not get the spans awaited.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    /// No loopback port could be bound.
    #[error(
        "the OTLP receiver could not listen on 127.0.0.1: {0}; free a port or raise the file limit"
    )]
    Bind(#[from] std::io::Error),
    /// Fewer spans than awaited arrived in time.
    #[error(
        "{got} of the {wanted} spans awaited arrived in time; check that tracing is on, sampled and pointed at this receiver"
    )]
    Timeout {
        /// The number of spans awaited.
        wanted: usize,
        /// The number that arrived.
        got: usize,
    },
}

/// One span as the receiver got it, with its ids in the hex form `traceparent` uses.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// The `service.name` resource attribute of the exporting process.
    pub service_name: Option<String>,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// 16 lowercase hex digits; `None` for a root span.
    pub parent_span_id: Option<String>,
    /// The span as received, for what the other fields leave out.
    pub span: ProtoSpan,
}

impl ReceivedSpan {
    /// The span's name.
    pub fn name(&self) -> &str {
        &self.span.name
    }

    /// Server, client, internal...
    pub fn kind(&self) -> SpanKind {
        self.span.kind()
    }

    /// Whether the span's status is error.
    pub fn is_error(&self) -> bool {
        self.span
            .status
            .as_ref()
            .is_some_and(|status| status.code() == StatusCode::Error)
    }

    /// The value of attribute `key`, if it is a string.
    pub fn str_attribute(&self, key: &str) -> Option<&str> {
        match self.attribute(key)? {
            Value::StringValue(value) => Some(value),
            _ => None,
        }
    }

    /// The value of attribute `key`, if it is an integer.
    pub fn int_attribute(&self, key: &str) -> Option<i64> {
        match self.attribute(key)? {
            Value::IntValue(value) => Some(*value),
            _ => None,
        }
    }

    fn attribute(&self, key: &str) -> Option<&Value> {
        attribute(&self.span.attributes, key)
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the gRPC service and the test share.
#[derive(Default)]
struct Store {
    spans: Mutex<Vec<ReceivedSpan>>,
    arrived: Notify,
    /// Whether spans are kept (tests) or only counted (benchmarks, where millions arrive).
    keep: bool,
    counted: std::sync::atomic::AtomicU64,
}

impl Store {
    fn spans(&self) -> MutexGuard<'_, Vec<ReceivedSpan>> {
        // A panic elsewhere while holding the lock leaves whole spans behind: still usable.
        self.spans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The OTLP trace service, storing every span of every export.
struct Collector(Arc<Store>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let request = request.into_inner();
        if !self.0.keep {
            let n: usize = request
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum();
            self.0
                .counted
                .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            return Ok(Response::new(ExportTraceServiceResponse::default()));
        }
        let mut received = Vec::new();
        for resource_spans in request.resource_spans {
            let service_name =
                resource_spans.resource.as_ref().and_then(|resource| {
                    match attribute(&resource.attributes, "service.name")? {
                        Value::StringValue(name) => Some(name.clone()),
                        _ => None,
                    }
                });
            for span in resource_spans
                .scope_spans
                .into_iter()
                .flat_map(|scope| scope.spans)
            {
                received.push(ReceivedSpan {
                    service_name: service_name.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: (!span.parent_span_id.is_empty())
                        .then(|| hex(&span.parent_span_id)),
                    span,
                });
            }
        }
        self.0.spans().extend(received);
        self.0.arrived.notify_waiters();
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A running receiver on a loopback port; it stops when dropped.
pub struct Receiver {
    store: Arc<Store>,
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver on `127.0.0.1` with a free port, returning its address.
    pub async fn start() -> Result<(SocketAddr, Receiver), ReceiverError> {
        Receiver::start_on((Ipv4Addr::LOCALHOST, 0).into(), true).await
    }

    /// A receiver on `addr` that only counts what it is sent ([`Receiver::counted`]), for a
    /// benchmark's collector that must not grow with its load.
    pub async fn start_counting(addr: SocketAddr) -> Result<(SocketAddr, Receiver), ReceiverError> {
        Receiver::start_on(addr, false).await
    }

    /// Spans received by a counting receiver.
    pub fn counted(&self) -> u64 {
        self.store
            .counted
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn start_on(
        addr: SocketAddr,
        keep: bool,
    ) -> Result<(SocketAddr, Receiver), ReceiverError> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let store = Arc::new(Store {
            keep,
            ..Store::default()
        });
        let service = TraceServiceServer::new(Collector(store.clone()));
        let server = tokio::spawn(async move {
            let served = Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpIncoming::from(listener))
                .await;
            if let Err(error) = served {
                warn!(%error, "the OTLP test receiver stopped");
            }
        });
        Ok((
            addr,
            Receiver {
                store,
                addr,
                server,
            },
        ))
    }

    /// The URL to export to, e.g. `http://127.0.0.1:43817`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store.spans().clone()
    }

    /// Waits until at least `count` spans have arrived and returns them all, or fails after
    /// `timeout` saying how many came.
    pub async fn wait_for(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<ReceivedSpan>, ReceiverError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.store.arrived.notified();
            tokio::pin!(arrived);
            // Registered before the count is read, so an export in between is not missed.
            arrived.as_mut().enable();
            let spans = self.spans();
            if spans.len() >= count {
                return Ok(spans);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Err(ReceiverError::Timeout {
                    wanted: count,
                    got: self.store.spans().len(),
                });
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}
