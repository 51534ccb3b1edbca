//! The spans of one proxied request. Each method checks first whether its span is recording,
//! so that an unsampled request builds no attribute and allocates no name.

use std::sync::Arc;
use std::time::SystemTime;

use http::uri::Authority;
use http::{HeaderMap, Method, header};
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{Span as _, SpanBuilder, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::Span;

use crate::headers::HeaderInjector;
use crate::tracer::Inner;

/// Starts a span named `name` under `parent`.
pub(crate) fn start(inner: &Inner, name: &'static str, kind: SpanKind, parent: &Context) -> Span {
    inner
        .tracer
        .build_with_context(SpanBuilder::from_name(name).with_kind(kind), parent)
}

/// The span name of an HTTP request with `method`: the method, or `HTTP` for one outside the
/// standard set, as the HTTP semantic conventions say.
pub(crate) fn method_name(method: &Method) -> &'static str {
    standard_method(method).unwrap_or("HTTP")
}

/// `method` as a static string when it is one of the standard methods.
fn standard_method(method: &Method) -> Option<&'static str> {
    Some(match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "PATCH" => "PATCH",
        _ => return None,
    })
}

/// A context whose parent is `span`, for starting its children.
fn parent(span: &Span) -> Context {
    // Despite its name this keeps the span context as it is: local, not remote.
    Context::new().with_remote_span_context(span.span_context().clone())
}

/// `server.address` and `server.port` of `target`, an authority (`host:port`) or a URL.
fn server_attributes(target: &str, attributes: &mut Vec<KeyValue>) {
    let rest = target.split_once("://").map_or(target, |(_, rest)| rest);
    let rest = rest
        .split_once('/')
        .map_or(rest, |(authority, _)| authority);
    match Authority::try_from(rest) {
        Ok(authority) => {
            let host = authority.host();
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            attributes.push(KeyValue::new("server.address", host.to_owned()));
            if let Some(port) = authority.port_u16() {
                attributes.push(KeyValue::new("server.port", i64::from(port)));
            }
        }
        Err(_) => attributes.push(KeyValue::new("server.address", target.to_owned())),
    }
}

/// `http.request.method` (and `http.request.method_original` for a non-standard method).
fn method_attributes(method: &Method, attributes: &mut Vec<KeyValue>) {
    match standard_method(method) {
        Some(name) => attributes.push(KeyValue::new("http.request.method", name)),
        None => {
            attributes.push(KeyValue::new("http.request.method", "_OTHER"));
            attributes.push(KeyValue::new(
                "http.request.method_original",
                method.as_str().to_owned(),
            ));
        }
    }
}

/// Sets an error status with `error.type`, the low-cardinality class of the error.
fn set_error(span: &mut Span, error_type: String, description: String) {
    span.set_attribute(KeyValue::new("error.type", error_type));
    span.set_status(Status::error(description));
}

/// The server span of one proxied request, from [`crate::Tracer::request`]. Dropping it
/// without [`RequestSpan::finish`] ends it without a status code.
pub struct RequestSpan {
    inner: Arc<Inner>,
    span: Span,
    /// The span name's method part, kept for the name with the route.
    method: &'static str,
    /// The request's method, kept for the upstream span when recording.
    request_method: Option<Method>,
}

impl RequestSpan {
    pub(crate) fn new(
        inner: Arc<Inner>,
        mut span: Span,
        headers: &HeaderMap,
        method: &Method,
        path: &str,
    ) -> RequestSpan {
        let recording = span.is_recording();
        if recording {
            let mut attributes = Vec::with_capacity(6);
            method_attributes(method, &mut attributes);
            attributes.push(KeyValue::new("url.path", path.to_owned()));
            attributes.push(KeyValue::new("raftgate.node", inner.node));
            if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
                server_attributes(host, &mut attributes);
            }
            span.set_attributes(attributes);
        }
        RequestSpan {
            inner,
            span,
            method: method_name(method),
            request_method: recording.then(|| method.clone()),
        }
    }

    /// The trace's id as 32 lowercase hex digits, for the access log; `None` only once the
    /// tracer is shut down. Unsampled requests have one too: it is the one sent upstream.
    pub fn trace_id(&self) -> Option<String> {
        let context = self.span.span_context();
        context.is_valid().then(|| context.trace_id().to_string())
    }

    /// Names the route (`http.route`) and its service (`raftgate.service`) the request
    /// matched; the span is renamed `{method} {route}`.
    pub fn set_route(&mut self, route: &str, service: &str) {
        if !self.span.is_recording() {
            return;
        }
        self.span.update_name(format!("{} {route}", self.method));
        self.span.set_attributes([
            KeyValue::new("http.route", route.to_owned()),
            KeyValue::new("raftgate.service", service.to_owned()),
        ]);
    }

    /// Starts the client span of the call to the upstream at `target` (`host:port` or a
    /// URL), a child of this span.
    pub fn upstream(&self, target: &str) -> UpstreamSpan {
        let mut span = start(
            &self.inner,
            self.method,
            SpanKind::Client,
            &parent(&self.span),
        );
        if span.is_recording() {
            let mut attributes = Vec::with_capacity(4);
            if let Some(method) = &self.request_method {
                method_attributes(method, &mut attributes);
            }
            server_attributes(target, &mut attributes);
            span.set_attributes(attributes);
        }
        UpstreamSpan {
            inner: self.inner.clone(),
            span,
        }
    }

    /// Records that a policy refused the request with `code` (e.g. `rate_limited`) and HTTP
    /// `status`: a child span `policy` with error status, attributes `raftgate.refusal.code`,
    /// `error.type` and `http.response.status_code`, ended at once.
    pub fn refused(&self, code: &str, status: u16) {
        // Sampling is parent-based: the child of an unsampled span is never recorded.
        if !self.span.is_recording() {
            return;
        }
        let mut span = start(
            &self.inner,
            "policy",
            SpanKind::Internal,
            &parent(&self.span),
        );
        span.set_attributes([
            KeyValue::new("raftgate.refusal.code", code.to_owned()),
            KeyValue::new("http.response.status_code", i64::from(status)),
        ]);
        set_error(&mut span, code.to_owned(), code.to_owned());
        span.end();
    }

    /// Starts the span of a call to an AI provider, a child of this span named
    /// `{operation} {model}`, with the GenAI semantic-convention request attributes.
    /// `operation` is e.g. `chat` or `embeddings`, `provider` e.g. `openai`.
    pub fn ai_call(&self, operation: &str, model: &str, provider: &str) -> AiSpan {
        ai_span(
            &self.inner,
            &parent(&self.span),
            operation,
            model,
            provider,
            SystemTime::now(),
        )
    }

    /// A handle for spans of AI provider calls that may end after this span (a stream read
    /// by the client after the answer's head); `None` when this request is not recorded.
    pub fn ai_parent(&self) -> Option<AiParent> {
        self.span.is_recording().then(|| AiParent {
            inner: self.inner.clone(),
            parent: parent(&self.span),
        })
    }

    /// Ends the span with the status the client got; 5xx marks it as an error.
    pub fn finish(mut self, status: u16) {
        if self.span.is_recording() {
            self.span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if status >= 500 {
                set_error(&mut self.span, status.to_string(), String::new());
            }
        }
        self.span.end();
    }
}

/// The client span of the call to the upstream, from [`RequestSpan::upstream`]. Dropping it
/// without [`UpstreamSpan::finish`] ends it without a status code.
pub struct UpstreamSpan {
    inner: Arc<Inner>,
    span: Span,
}

impl UpstreamSpan {
    /// Writes `traceparent` (and `tracestate`) for this span into the upstream request's
    /// headers, replacing the client's, so the upstream continues the trace under this span.
    /// Done for unsampled requests too, with the sampled flag off.
    pub fn inject(&self, headers: &mut HeaderMap) {
        self.inner
            .propagator
            .inject_context(&parent(&self.span), &mut HeaderInjector(headers));
    }

    /// Ends the span with the upstream's status (`None` when it gave none), the number of
    /// retries to other endpoints (`raftgate.retries`) and the proxy's error code if the call
    /// failed (e.g. `upstream_timeout`). A failure or a 4xx/5xx marks it as an error.
    pub fn finish(mut self, status: Option<u16>, retries: u32, error: Option<&str>) {
        if self.span.is_recording() {
            self.span
                .set_attribute(KeyValue::new("raftgate.retries", i64::from(retries)));
            if let Some(status) = status {
                self.span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                ));
            }
            match (error, status) {
                (Some(error), _) => set_error(&mut self.span, error.to_owned(), error.to_owned()),
                (None, Some(status)) if status >= 400 => {
                    set_error(&mut self.span, status.to_string(), String::new());
                }
                _ => {}
            }
        }
        self.span.end();
    }
}

/// Starts the span of an AI provider call at `started`, a child of `parent`.
fn ai_span(
    inner: &Inner,
    parent: &Context,
    operation: &str,
    model: &str,
    provider: &str,
    started: SystemTime,
) -> AiSpan {
    let mut span = inner.tracer.build_with_context(
        SpanBuilder::from_name("gen_ai")
            .with_kind(SpanKind::Client)
            .with_start_time(started),
        parent,
    );
    if span.is_recording() {
        span.update_name(format!("{operation} {model}"));
        span.set_attributes([
            KeyValue::new("gen_ai.operation.name", operation.to_owned()),
            KeyValue::new("gen_ai.request.model", model.to_owned()),
            KeyValue::new("gen_ai.provider.name", provider.to_owned()),
            // The attribute's name before GenAI conventions 1.37, still read by backends.
            KeyValue::new("gen_ai.system", provider.to_owned()),
        ]);
    }
    AiSpan { span }
}

/// Where the spans of a request's AI provider calls hang: cheap to clone, and usable after the
/// request's own span ended.
#[derive(Clone)]
pub struct AiParent {
    inner: Arc<Inner>,
    parent: Context,
}

impl std::fmt::Debug for AiParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AiParent").finish_non_exhaustive()
    }
}

impl AiParent {
    /// Starts the span of a provider call that began at `started`.
    pub fn ai_call_at(
        &self,
        operation: &str,
        model: &str,
        provider: &str,
        started: SystemTime,
    ) -> AiSpan {
        ai_span(
            &self.inner,
            &self.parent,
            operation,
            model,
            provider,
            started,
        )
    }
}

/// The span of a call to an AI provider, from [`RequestSpan::ai_call`]. Dropping it without
/// [`AiSpan::finish`] ends it without usage.
pub struct AiSpan {
    span: Span,
}

impl AiSpan {
    /// Ends the span with the model that answered (`gen_ai.response.model`), the tokens used
    /// (`gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`) and the error code if the
    /// call failed, which marks it as an error.
    pub fn finish(
        self,
        response_model: Option<&str>,
        input_tokens: u64,
        output_tokens: u64,
        error: Option<&str>,
    ) {
        self.finish_at(
            response_model,
            input_tokens,
            output_tokens,
            error,
            SystemTime::now(),
        );
    }

    /// [`AiSpan::finish`] for a call that ended at `ended`.
    pub fn finish_at(
        mut self,
        response_model: Option<&str>,
        input_tokens: u64,
        output_tokens: u64,
        error: Option<&str>,
        ended: SystemTime,
    ) {
        if self.span.is_recording() {
            let tokens = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            self.span.set_attributes([
                KeyValue::new("gen_ai.usage.input_tokens", tokens(input_tokens)),
                KeyValue::new("gen_ai.usage.output_tokens", tokens(output_tokens)),
            ]);
            if let Some(model) = response_model {
                self.span
                    .set_attribute(KeyValue::new("gen_ai.response.model", model.to_owned()));
            }
            if let Some(error) = error {
                set_error(&mut self.span, error.to_owned(), error.to_owned());
            }
        }
        self.span.end_with_timestamp(ended);
    }
}
