//! Adapters between `http::HeaderMap` and the OpenTelemetry propagator, which parses and
//! writes the W3C trace-context headers itself.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector};

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// Reads a client request's trace-context headers for the propagator.
pub(crate) struct HeaderExtractor<'a> {
    headers: &'a HeaderMap,
    /// Several `tracestate` lines, joined with commas as W3C trace context allows; `None`
    /// when there is at most one, which is then read in place.
    tracestate: Option<String>,
}

impl<'a> HeaderExtractor<'a> {
    pub(crate) fn new(headers: &'a HeaderMap) -> HeaderExtractor<'a> {
        let tracestate = headers.get_all(TRACESTATE).iter().nth(1).map(|_| {
            let lines: Vec<&str> = headers
                .get_all(TRACESTATE)
                .iter()
                .filter_map(|line| line.to_str().ok())
                .collect();
            lines.join(",")
        });
        HeaderExtractor {
            headers,
            tracestate,
        }
    }
}

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if key == TRACESTATE
            && let Some(joined) = &self.tracestate
        {
            return Some(joined);
        }
        let mut values = self.headers.get_all(key).iter();
        let value = values.next()?;
        // Two `traceparent` lines are ambiguous: the request then starts a new trace.
        if key == TRACEPARENT && values.next().is_some() {
            return None;
        }
        value.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.headers.keys().map(HeaderName::as_str).collect()
    }
}

/// Writes the trace-context headers of an upstream request, replacing any the client sent.
pub(crate) struct HeaderInjector<'a>(pub(crate) &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let name = match key {
            TRACEPARENT => HeaderName::from_static(TRACEPARENT),
            TRACESTATE => HeaderName::from_static(TRACESTATE),
            _ => match HeaderName::from_bytes(key.as_bytes()) {
                Ok(name) => name,
                Err(_) => return,
            },
        };
        // An empty `tracestate` is not sent at all; nor is a client's stale one.
        match HeaderValue::try_from(value) {
            Ok(value) if !value.is_empty() => {
                self.0.insert(name, value);
            }
            _ => {
                self.0.remove(name);
            }
        }
    }
}
