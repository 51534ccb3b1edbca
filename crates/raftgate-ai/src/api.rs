//! The unified API over HTTP: `POST /v1/chat/completions`, `POST /v1/embeddings`,
//! `GET /v1/models` and the Anthropic-style `POST /v1/messages`.
//!
//! The data plane authenticates the caller (a consumer key sent as `Authorization: Bearer`, so
//! stock OpenAI clients work) and hands the request here with the caller and the models it may
//! use; everything after that — parsing with errors that name the bad field, answering in the
//! dialect the client spoke, streaming chunk by chunk with `[DONE]` or Anthropic's events — is
//! this module's. Bodies stream straight from the provider's connection: nothing is buffered,
//! and a client that goes away drops the provider's connection and records the partial usage.

use std::collections::VecDeque;
use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde::Serialize;

use crate::engine::{Caller, ChatOutcome, ChatStream, Gateway, Reservation, Settle, StreamItem};
use crate::error::ApiError;
use crate::messages::{self, EventWriter};
use crate::openai::{ChatRequest, ChatResponse, EmbeddingsRequest};
use crate::providers::anthropic::MessagesRequest;

/// The body of every answer: complete JSON or an event stream.
pub type AiBody = UnsyncBoxBody<Bytes, Infallible>;

/// The endpoints of the unified API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/chat/completions`.
    ChatCompletions,
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `GET /v1/models`.
    Models,
    /// `POST /v1/messages` (Anthropic style).
    Messages,
}

impl Route {
    /// The endpoint a request is for, if it is one of the unified API's.
    pub fn of(method: &Method, path: &str) -> Option<Route> {
        Route::at(method, path.strip_prefix("/v1")?)
    }

    /// The endpoint of a request for `path` under the API's base (`/chat/completions` under
    /// `/v1`, or under an AI API version's base path), with the method it takes.
    pub fn at(method: &Method, path: &str) -> Option<Route> {
        Route::named(path).filter(|route| *method == route.method())
    }

    /// The method the endpoint takes.
    pub fn method(self) -> Method {
        match self {
            Route::Models => Method::GET,
            Route::ChatCompletions | Route::Embeddings | Route::Messages => Method::POST,
        }
    }

    /// The endpoint at `path` under the API's base, whatever the method; for the dialect of
    /// errors answered before the request is served.
    pub fn named(path: &str) -> Option<Route> {
        match path.trim_end_matches('/') {
            "/chat/completions" => Some(Route::ChatCompletions),
            "/embeddings" => Some(Route::Embeddings),
            "/models" => Some(Route::Models),
            "/messages" => Some(Route::Messages),
            _ => None,
        }
    }
}

/// Budgets and token limits, checked before each call by the caller of [`handle`] (the data
/// plane, with its cluster-wide counters).
pub trait Admission: Sync {
    /// Reserves what a call may consume at most: the handle the engine settles once the call is
    /// over (`None` when nothing limits the caller), or the refusal to answer (a 429).
    fn admit(&self, reservation: &Reservation) -> Result<Option<Box<dyn Settle>>, ApiError>;
}

/// Why a caller may not use a model alias.
#[derive(Debug)]
pub enum Denied {
    /// Answered as an unknown alias is, so that aliases do not leak.
    Unknown,
    /// Answered with this error: the caller may know of the alias, but must call it another
    /// way (e.g. through the API that offers it).
    Refused(ApiError),
}

impl Denied {
    /// `Ok` when `allowed`, else [`Denied::Unknown`].
    pub fn unless(allowed: bool) -> Result<(), Denied> {
        if allowed {
            Ok(())
        } else {
            Err(Denied::Unknown)
        }
    }
}

/// Who calls, which model aliases they may use, and what limits their calls.
pub struct Access<'a> {
    /// The authenticated caller, for usage records.
    pub caller: Caller,
    /// Whether the caller may use a model alias, and how a refusal is answered.
    pub allowed: &'a (dyn Fn(&str) -> Result<(), Denied> + Sync),
    /// The caller's budgets and token limits; `None` when there are none.
    pub admission: Option<&'a dyn Admission>,
}

impl Access<'_> {
    /// Reserves `reservation` (`None`: an unknown alias, which the engine answers with a 404).
    pub(crate) fn admit(
        &self,
        reservation: Option<Reservation>,
    ) -> Result<Option<Box<dyn Settle>>, ApiError> {
        match (self.admission, reservation) {
            (Some(admission), Some(r)) => admission.admit(&r),
            _ => Ok(None),
        }
    }
}

/// Answers one request of the unified API.
pub async fn handle(
    gw: &Gateway,
    route: Route,
    access: &Access<'_>,
    body: Bytes,
) -> Response<AiBody> {
    let answer = match route {
        Route::Models => {
            let models = gw.models(|m| (access.allowed)(m).is_ok());
            return json(StatusCode::OK, &models);
        }
        Route::ChatCompletions => chat(gw, access, &body).await,
        Route::Embeddings => embeddings(gw, access, &body).await,
        Route::Messages => anthropic_messages(gw, access, &body).await,
    };
    answer.unwrap_or_else(|e| error(route, &e))
}

/// An error answer in the dialect of `route`'s clients (Anthropic's for `/v1/messages`,
/// OpenAI's otherwise), for refusals decided before [`handle`] (authentication, body size).
pub fn error(route: Route, e: &ApiError) -> Response<AiBody> {
    let mut resp = match route {
        Route::Messages => json(e.status, &messages::error_body(e)),
        _ => json(e.status, &e.body()),
    };
    if let Some(s) = e.retry_after_s {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    resp
}

/// Parses a JSON body, naming the field at fault.
fn parse<'a, T: serde::Deserialize<'a>>(body: &'a [u8], what: &str) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        ApiError::invalid_request(
            format!(
                "the body is not a valid {what} request: {} (at {path})",
                e.inner()
            ),
            (path != ".").then_some(path.as_str()),
        )
    })
}

/// Refuses a model the caller may not use exactly as an unknown one, so aliases do not leak
/// (unless the refusal is one the caller should read).
fn check_model(access: &Access<'_>, model: &str) -> Result<(), ApiError> {
    match (access.allowed)(model) {
        Ok(()) => return Ok(()),
        Err(Denied::Refused(e)) => return Err(e),
        Err(Denied::Unknown) => {}
    }
    let mut err = ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!(
            "the model {model} does not exist or you have no access to it; GET /v1/models lists the models you may use"
        ),
    );
    err.detail.param = Some("model".into());
    err.detail.code = Some("model_not_found".into());
    Err(err)
}

async fn chat(
    gw: &Gateway,
    access: &Access<'_>,
    body: &[u8],
) -> Result<Response<AiBody>, ApiError> {
    let req: ChatRequest = parse(body, "chat completion")?;
    check_model(access, &req.model)?;
    let budget = access.admit(gw.reservation(&req))?;
    Ok(match gw.chat(&access.caller, req, budget).await? {
        ChatOutcome::Complete(resp) => {
            let size = text_bytes(&resp);
            answer(resp, size, false).await
        }
        ChatOutcome::Cached(resp) => {
            let size = text_bytes(&resp);
            answer(resp, size, true).await
        }
        ChatOutcome::Stream(stream) => event_stream(openai_events(*stream)),
    })
}

async fn embeddings(
    gw: &Gateway,
    access: &Access<'_>,
    body: &[u8],
) -> Result<Response<AiBody>, ApiError> {
    let req: EmbeddingsRequest = parse(body, "embeddings")?;
    check_model(access, &req.model)?;
    let budget = access.admit(gw.embeddings_reservation(&req))?;
    Ok(json(
        StatusCode::OK,
        &gw.embeddings(&access.caller, req, budget).await?,
    ))
}

async fn anthropic_messages(
    gw: &Gateway,
    access: &Access<'_>,
    body: &[u8],
) -> Result<Response<AiBody>, ApiError> {
    let req: MessagesRequest = parse(body, "messages")?;
    check_model(access, &req.model)?;
    let req = messages::to_chat_request(req);
    let budget = access.admit(gw.reservation(&req))?;
    Ok(match gw.chat(&access.caller, req, budget).await? {
        ChatOutcome::Complete(resp) => {
            let size = text_bytes(&resp);
            answer(messages::to_messages_response(resp), size, false).await
        }
        ChatOutcome::Cached(resp) => {
            let size = text_bytes(&resp);
            answer(messages::to_messages_response(resp), size, true).await
        }
        ChatOutcome::Stream(stream) => event_stream(anthropic_events(*stream)),
    })
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<AiBody> {
    json_sized(status, value, 0)
}

/// [`json`] for a value of about `size` bytes of JSON, written into a buffer of that size so
/// that a large answer is not copied (and held twice) as the buffer grows.
fn json_sized(status: StatusCode, value: &impl Serialize, size: usize) -> Response<AiBody> {
    let mut bytes = Vec::with_capacity(size.saturating_add(1024));
    if serde_json::to_writer(&mut bytes, value).is_err() {
        bytes.clear();
    }
    let mut resp = Response::new(Full::new(Bytes::from(bytes)).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The `X-Cache` header of complete chat answers: `HIT` when the answer came from the model
/// alias's response cache, `MISS` when a provider gave it. Streams have none (they bypass the
/// cache).
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// Answers with more text than this are encoded on a blocking thread.
const BLOCKING_ENCODE: usize = 1024 * 1024;

/// The bytes of text in an answer's choices (contents and tool call arguments), which its
/// JSON is about as large as.
fn text_bytes(resp: &ChatResponse) -> usize {
    resp.choices
        .iter()
        .map(|c| {
            let calls: usize = c
                .message
                .tool_calls
                .iter()
                .flatten()
                .map(|t| t.function.arguments.len())
                .sum();
            c.message.content.as_ref().map_or(0, String::len) + calls
        })
        .sum()
}

/// A complete chat answer of about `size` bytes, as [`cached_json`]; a large one is encoded on
/// a blocking thread, so that encoding it does not hold up the async workers (and with them
/// the node's Raft traffic).
async fn answer<T: Serialize + Send + 'static>(
    value: T,
    size: usize,
    hit: bool,
) -> Response<AiBody> {
    if size <= BLOCKING_ENCODE {
        return cached_json(&value, hit);
    }
    let encode = move || with_x_cache(json_sized(StatusCode::OK, &value, size), hit);
    match tokio::task::spawn_blocking(encode).await {
        Ok(resp) => resp,
        Err(e) => error(
            Route::ChatCompletions,
            &ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                format!(
                    "the answer could not be encoded ({e}); retry, and report it if it persists"
                ),
            ),
        ),
    }
}

/// A complete chat answer (200) with its `X-Cache` header.
pub(crate) fn cached_json(value: &impl Serialize, hit: bool) -> Response<AiBody> {
    with_x_cache(json(StatusCode::OK, value), hit)
}

/// `resp` with the `X-Cache` header of a complete chat answer.
fn with_x_cache(mut resp: Response<AiBody>, hit: bool) -> Response<AiBody> {
    resp.headers_mut().insert(
        X_CACHE,
        HeaderValue::from_static(if hit { "HIT" } else { "MISS" }),
    );
    resp
}

type Events = std::pin::Pin<Box<dyn futures_util::Stream<Item = Bytes> + Send>>;

fn event_stream(events: Events) -> Response<AiBody> {
    use futures_util::StreamExt;
    let body = StreamBody::new(events.map(|b| Ok::<_, Infallible>(Frame::data(b))));
    let mut resp = Response::new(body.boxed_unsync());
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// OpenAI's SSE: one `data:` per chunk, an error event on failure, `[DONE]` last.
fn openai_events(stream: ChatStream) -> Events {
    Box::pin(futures_util::stream::unfold(stream, |mut s| async move {
        s.next_sse().await.map(|b| (b, s))
    }))
}

/// Anthropic's named events, written from the chunks as they come.
fn anthropic_events(stream: ChatStream) -> Events {
    struct State {
        stream: ChatStream,
        writer: EventWriter,
        queue: VecDeque<Bytes>,
        out: Vec<Bytes>,
        done: bool,
    }
    let state = State {
        stream,
        writer: EventWriter::new(),
        queue: VecDeque::new(),
        out: Vec::new(),
        done: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(bytes) = st.queue.pop_front() {
                return Some((bytes, st));
            }
            if st.done {
                return None;
            }
            match st.stream.next().await {
                Some(StreamItem::Chunk(chunk)) => st.writer.chunk(&chunk, &mut st.out),
                Some(StreamItem::Error(error)) => {
                    st.writer.error(&error, &mut st.out);
                    st.done = true;
                }
                None => {
                    st.writer.finish(None, &mut st.out);
                    st.done = true;
                }
            }
            st.queue.extend(st.out.drain(..));
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            Route::of(&Method::POST, "/v1/chat/completions"),
            Some(Route::ChatCompletions)
        );
        assert_eq!(Route::of(&Method::GET, "/v1/models/"), Some(Route::Models));
        assert_eq!(Route::of(&Method::GET, "/v1/chat/completions"), None);
        assert_eq!(
            Route::of(&Method::POST, "/v1/messages"),
            Some(Route::Messages)
        );
        assert_eq!(Route::of(&Method::POST, "/v1x/messages"), None);
        // Under an AI API version's base path, the same endpoints.
        assert_eq!(
            Route::at(&Method::POST, "/embeddings"),
            Some(Route::Embeddings)
        );
        assert_eq!(Route::at(&Method::POST, "/models"), None);
        assert_eq!(Route::at(&Method::POST, ""), None);
        assert_eq!(Route::named("/messages/"), Some(Route::Messages));
    }

    #[test]
    fn parse_errors_name_the_field() {
        let err = parse::<ChatRequest>(
            br#"{"model": "m", "messages": [{"role": "robot"}]}"#,
            "chat completion",
        )
        .unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.detail.param.as_deref(), Some("messages[0].role"));
        let err = parse::<ChatRequest>(b"not json", "chat completion").unwrap_err();
        assert!(
            err.detail
                .message
                .contains("not a valid chat completion request")
        );
    }
}
