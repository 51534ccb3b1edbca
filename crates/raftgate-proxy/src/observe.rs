//! The access log line and the trace spans of one request: its one home on the request path.
//!
//! [`Observability::start`] returns `None` when the node neither logs nor traces the request
//! (the default: access log off, no OTLP endpoint), so a request then pays one branch and
//! nothing else. Otherwise an [`Observed`] travels with the request: the proxy tells it the
//! route, the upstream call and a refusal as they happen, and [`Observed::finish`] ends the
//! span and queues the log line once the answer's head is ready.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, Request};
use raftgate_accesslog::{AccessLog, Entry};
use raftgate_trace::{RequestSpan, Tracer, UpstreamSpan};

use crate::forward::Peer;
use crate::router::Route;

/// The node's access log and tracer, either of which may be off.
#[derive(Debug, Clone, Default)]
pub struct Observability {
    /// The node's id, in every log line and request span.
    pub node: u64,
    /// Where access log lines go; `None`: no access log.
    pub access_log: Option<Arc<AccessLog>>,
    /// Where spans go; `None`: no tracing (a client's `traceparent` is still forwarded as
    /// sent).
    pub tracer: Option<Arc<Tracer>>,
}

impl std::fmt::Debug for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed")
            .field("logged", &self.entry.is_some())
            .field("traced", &self.span.is_some())
            .finish()
    }
}

/// One request's log line being filled and its span.
pub(crate) struct Observed {
    span: Option<RequestSpan>,
    entry: Option<Box<Entry>>,
}

/// How a request ended, for [`Observed::finish`].
pub(crate) struct Outcome<'a> {
    pub(crate) status: u16,
    pub(crate) consumer: Option<&'a Arc<str>>,
    pub(crate) total: Duration,
    pub(crate) upstream: Option<Duration>,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) target: Option<&'a Arc<str>>,
    pub(crate) retries: u32,
    pub(crate) error: Option<&'static str>,
}

impl Observability {
    /// Starts observing a request, or `None` when it is neither logged nor traced.
    pub(crate) fn start<B>(
        &self,
        peer: &Peer,
        request: &Request<B>,
        request_id: &HeaderValue,
    ) -> Option<Observed> {
        let logged = self.access_log.as_ref().is_some_and(|log| log.sampled());
        if !logged && self.tracer.is_none() {
            return None;
        }
        let path = request.uri().path();
        let span = self
            .tracer
            .as_ref()
            .map(|t| t.request(request.headers(), request.method(), path));
        let entry = logged.then(|| {
            Entry::new(
                SystemTime::now(),
                self.node,
                peer.addr,
                [
                    request_id.to_str().unwrap_or_default(),
                    request.method().as_str(),
                    host(request.uri(), request.headers()),
                    path,
                ],
            )
        });
        Some(Observed { span, entry })
    }

    /// Queues `observed`'s line, if it is logged.
    fn log(&self, entry: Box<Entry>) {
        if let Some(log) = &self.access_log {
            log.log(entry);
        }
    }
}

/// The host the client asked for: the URI's authority (HTTP/2, absolute form) or `Host`.
fn host<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> &'a str {
    uri.authority()
        .map(|a| a.host())
        .or_else(|| {
            headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or_default()
}

impl Observed {
    /// The request matched `route`.
    pub(crate) fn routed(&mut self, route: &Route) {
        if let Some(span) = &mut self.span {
            span.set_route(&route.name, route.target_label());
        }
        if let Some(entry) = &mut self.entry {
            entry.route = route.name.clone();
            entry.service = route.target_label().clone();
            if let Some(owner) = route.api_version() {
                entry.api = Arc::from(owner.api.as_str());
                entry.version = Arc::from(owner.version.as_str());
            }
            entry.rate_limit = route
                .policies
                .as_ref()
                .is_some_and(|p| p.has_limits())
                .then_some("passed");
        }
    }

    /// The span of the upstream call to `service`, whose `traceparent` goes into `headers`.
    pub(crate) fn upstream(&self, service: &str, headers: &mut HeaderMap) -> Option<UpstreamSpan> {
        let span = self.span.as_ref()?.upstream(service);
        span.inject(headers);
        Some(span)
    }

    /// The route's policies refused the request with `code`.
    pub(crate) fn refused(&mut self, code: &'static str, status: u16) {
        if let Some(span) = &self.span {
            span.refused(code, status);
        }
        if let Some(entry) = &mut self.entry
            && status == 429
        {
            entry.rate_limit = Some("refused");
        }
    }

    /// The trace id, for the AI gateway's spans and the log.
    pub(crate) fn span(&self) -> Option<&RequestSpan> {
        self.span.as_ref()
    }

    /// Ends the span and queues the line.
    pub(crate) fn finish(self, observability: &Observability, outcome: Outcome<'_>) {
        let trace_id = self.span.as_ref().and_then(RequestSpan::trace_id);
        if let Some(span) = self.span {
            span.finish(outcome.status);
        }
        let Some(mut entry) = self.entry else {
            return;
        };
        entry.trace_id = trace_id;
        entry.status = outcome.status;
        entry.consumer = outcome.consumer.cloned();
        entry.latency = outcome.total;
        entry.upstream_latency = outcome.upstream;
        entry.bytes_in = outcome.bytes_in;
        entry.bytes_out = outcome.bytes_out;
        entry.upstream = outcome.target.cloned();
        entry.retries = outcome.retries;
        entry.error = outcome.error;
        observability.log(entry);
    }
}
