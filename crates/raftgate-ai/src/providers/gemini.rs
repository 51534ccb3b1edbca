//! Google Gemini (`models/{model}:generateContent`, `:streamGenerateContent?alt=sse`,
//! `:batchEmbedContents`; key in `x-goog-api-key`).
//!
//! What is translated: messages become `contents` of `parts` with roles `user`/`model`; system
//! messages become `systemInstruction`; tools become `functionDeclarations` (with the JSON-schema
//! keywords Gemini's OpenAPI subset rejects removed); calls are `functionCall` parts (Gemini
//! gives them no ids, so the gateway makes them, and finds a result's function name again from
//! the call id in the history); results are `functionResponse` parts whose `response` must be an
//! object; `response_format` maps to `responseMimeType`/`responseSchema`; limits and stops to
//! `generationConfig`; `usageMetadata` to usage (thinking tokens count as output). A stream is a
//! sequence of whole `GenerateContentResponse`s with no end marker other than a `finishReason`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{Endpoint, Provider, Step, StreamTranslator, UpstreamRequest, error_text};
use crate::error::{ApiError, parse_json};
use crate::openai::{
    self, AssistantMessage, ChatChunk, ChatRequest, ChatResponse, Choice, Content, ContentPart,
    Delta, EmbeddingsRequest, EmbeddingsResponse, Extra, FinishReason, ImageSource, Role,
    StreamMeta, ToolCall, ToolCallDelta, ToolMode, Usage,
};
use crate::sse::SseEvent;

/// The Gemini kind.
pub struct Gemini;

const NAME: &str = "gemini";

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateRequest {
    contents: Vec<GContent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<GContent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Vec<GTool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<Value>,
    generation_config: GenerationConfig,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct GContent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inline_data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file_data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    function_call: Option<FunctionCallPart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    function_response: Option<Value>,
    /// A thought summary, not part of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thought: Option<bool>,
    /// Opaque reasoning state thinking models attach to calls and require back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thought_signature: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FunctionCallPart {
    name: String,
    #[serde(default)]
    args: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct GTool {
    function_declarations: Vec<Value>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidate_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_schema: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateResponse {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    response_id: Option<String>,
    #[serde(default)]
    prompt_feedback: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<GContent>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    index: Option<u32>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
}

impl UsageMetadata {
    fn usage(&self) -> Usage {
        Usage::new(
            self.prompt_token_count,
            self.candidates_token_count + self.thoughts_token_count,
        )
    }
}

/// JSON-schema keywords outside the OpenAPI subset Gemini accepts in `parameters` and
/// `responseSchema`; sending them is a 400.
const UNSUPPORTED_SCHEMA_KEYS: [&str; 4] = ["$schema", "additionalProperties", "$id", "strict"];

fn gemini_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !UNSUPPORTED_SCHEMA_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), gemini_schema(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(gemini_schema).collect()),
        other => other.clone(),
    }
}

fn parts_of(content: Option<&Content>) -> Vec<Part> {
    let text_part = |t: &str| Part {
        text: Some(t.to_string()),
        ..Part::default()
    };
    match content {
        None => Vec::new(),
        Some(Content::Text(t)) if t.is_empty() => Vec::new(),
        Some(Content::Text(t)) => vec![text_part(t)],
        Some(Content::Parts(parts)) => parts
            .iter()
            .map(|p| match p {
                ContentPart::Text { text } => text_part(text),
                ContentPart::ImageUrl { image_url } => match image_url.source() {
                    ImageSource::Base64 { media_type, data } => Part {
                        inline_data: Some(json!({"mimeType": media_type, "data": data})),
                        ..Part::default()
                    },
                    ImageSource::Url(url) => Part {
                        file_data: Some(json!({"mimeType": mime_of(url), "fileUri": url})),
                        ..Part::default()
                    },
                },
            })
            .collect(),
    }
}

/// The image type of a URL by its extension (Gemini's `fileData` requires one).
fn mime_of(url: &str) -> &'static str {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    if path.ends_with(".png") {
        "image/png"
    } else if path.ends_with(".webp") {
        "image/webp"
    } else if path.ends_with(".gif") {
        "image/gif"
    } else {
        "image/jpeg"
    }
}

fn to_generate_request(req: &ChatRequest) -> Result<GenerateRequest, ApiError> {
    let mut system = Vec::new();
    let mut contents: Vec<GContent> = Vec::new();
    for (i, msg) in req.messages.iter().enumerate() {
        let (role, parts) = match msg.role {
            Role::System | Role::Developer => {
                system.extend(parts_of(msg.content.as_ref()));
                continue;
            }
            Role::User => ("user", parts_of(msg.content.as_ref())),
            Role::Assistant => {
                let mut parts = parts_of(msg.content.as_ref());
                for (j, call) in msg.tool_calls.iter().flatten().enumerate() {
                    let args =
                        super::anthropic::arguments_json(&call.function.arguments).ok_or_else(|| {
                            ApiError::invalid_request(
                                format!("messages[{i}].tool_calls[{j}].function.arguments is not a JSON object"),
                                Some("messages"),
                            )
                        })?;
                    parts.push(Part {
                        function_call: Some(FunctionCallPart {
                            name: call.function.name.clone(),
                            args,
                            id: None,
                        }),
                        thought_signature: call
                            .id
                            .split_once(SIGNATURE_MARK)
                            .map(|(_, sig)| sig.to_string()),
                        ..Part::default()
                    });
                }
                ("model", parts)
            }
            Role::Tool => {
                let name = tool_name(req, msg.tool_call_id.as_deref()).ok_or_else(|| {
                    ApiError::invalid_request(
                        format!(
                            "messages[{i}] answers a tool call that no earlier assistant message made; Gemini needs the function's name"
                        ),
                        Some("messages"),
                    )
                })?;
                let text = msg.text_content();
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(obj)) => Value::Object(obj),
                    Ok(other) => json!({ "result": other }),
                    Err(_) => json!({ "result": text }),
                };
                let part = Part {
                    function_response: Some(json!({"name": name, "response": response})),
                    ..Part::default()
                };
                ("user", vec![part])
            }
        };
        match contents.last_mut() {
            Some(last) if last.role.as_deref() == Some(role) => last.parts.extend(parts),
            _ => contents.push(GContent {
                role: Some(role.into()),
                parts,
            }),
        }
    }
    if contents.is_empty() {
        return Err(ApiError::invalid_request(
            "messages must hold at least one user message",
            Some("messages"),
        ));
    }
    let json_format = req.response_format.as_ref().filter(|f| f.is_json());
    let tools = req.tools.as_ref().map(|tools| {
        vec![GTool {
            function_declarations: tools
                .iter()
                .map(|t| {
                    let mut decl = Map::new();
                    decl.insert("name".into(), t.function.name.clone().into());
                    if let Some(d) = &t.function.description {
                        decl.insert("description".into(), d.clone().into());
                    }
                    if let Some(p) = &t.function.parameters {
                        decl.insert("parameters".into(), gemini_schema(p));
                    }
                    Value::Object(decl)
                })
                .collect(),
        }]
    });
    let tool_config = req.tool_choice.as_ref().map(|c| {
        let config = match c.resolve() {
            ToolMode::None => json!({"mode": "NONE"}),
            ToolMode::Auto => json!({"mode": "AUTO"}),
            ToolMode::Required => json!({"mode": "ANY"}),
            ToolMode::Named(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
        };
        json!({ "functionCallingConfig": config })
    });
    if req.is_stream() && req.n.is_some_and(|n| n > 1) {
        return Err(ApiError::unsupported(NAME, "n > 1 when streaming"));
    }
    Ok(GenerateRequest {
        contents,
        system_instruction: (!system.is_empty()).then_some(GContent {
            role: None,
            parts: system,
        }),
        tools,
        tool_config,
        generation_config: GenerationConfig {
            temperature: req.temperature,
            top_p: req.top_p,
            max_output_tokens: req.output_limit(),
            stop_sequences: req.stop_sequences(),
            candidate_count: req.n,
            response_mime_type: json_format.map(|_| "application/json"),
            response_schema: json_format.and_then(|f| f.schema()).map(gemini_schema),
        },
    })
}

/// The function name of the call `id`, from the assistant messages of the history.
fn tool_name<'a>(req: &'a ChatRequest, id: Option<&str>) -> Option<&'a str> {
    let id = id?;
    req.messages
        .iter()
        .filter_map(|m| m.tool_calls.as_ref())
        .flatten()
        .find(|c| c.id == id)
        .map(|c| c.function.name.as_str())
}

fn finish_reason(reason: &str, called_tools: bool) -> FinishReason {
    match reason {
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        _ if called_tools => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

/// Separates a made-up call id from the call's thought signature. Gemini's thinking models
/// reject a history whose function calls lost their `thoughtSignature`, and OpenAI clients keep
/// nothing but the call id, so the signature travels inside it.
const SIGNATURE_MARK: &str = "~sig~";

/// The id clients see for a call: Gemini's id or a fresh one, plus the signature if any.
fn call_id(id: Option<String>, signature: Option<String>) -> String {
    let id = id.unwrap_or_else(|| format!("call_{:024x}", rand::random::<u128>() >> 32));
    match signature {
        Some(sig) => format!("{id}{SIGNATURE_MARK}{sig}"),
        None => id,
    }
}

fn answer_parts(content: Option<GContent>) -> impl Iterator<Item = Part> {
    content
        .into_iter()
        .flat_map(|c| c.parts)
        .filter(|p| p.thought != Some(true))
}

impl Provider for Gemini {
    fn name(&self) -> &'static str {
        NAME
    }

    fn chat_request(&self, ep: &Endpoint, req: &ChatRequest) -> Result<UpstreamRequest, ApiError> {
        let body = to_generate_request(req)?;
        let path = if req.is_stream() {
            format!("v1beta/models/{}:streamGenerateContent?alt=sse", ep.model)
        } else {
            format!("v1beta/models/{}:generateContent", ep.model)
        };
        UpstreamRequest::json(ep.url(&path), &body)?.credential("x-goog-api-key", ep.api_key)
    }

    fn chat_response(&self, body: &[u8]) -> Result<ChatResponse, ApiError> {
        let resp: GenerateResponse = parse_json(NAME, body)?;
        if resp.candidates.is_empty() {
            let reason = resp
                .prompt_feedback
                .as_ref()
                .and_then(|f| f.get("blockReason"))
                .map(Value::to_string)
                .unwrap_or_else(|| "no reason given".into());
            return Err(ApiError::invalid_request(
                format!(
                    "the gemini provider returned no answer: the prompt was blocked ({reason})"
                ),
                Some("messages"),
            ));
        }
        let choices = resp
            .candidates
            .into_iter()
            .enumerate()
            .map(|(i, cand)| {
                let mut text = String::new();
                let mut calls = Vec::new();
                for part in answer_parts(cand.content) {
                    if let Some(t) = part.text {
                        text.push_str(&t);
                    }
                    if let Some(call) = part.function_call {
                        let id = call_id(call.id, part.thought_signature);
                        calls.push(ToolCall::function(id, call.name, call.args.to_string()));
                    }
                }
                let finish = cand
                    .finish_reason
                    .as_deref()
                    .map(|r| finish_reason(r, !calls.is_empty()));
                Choice {
                    index: cand.index.unwrap_or(i as u32),
                    message: AssistantMessage {
                        role: Role::Assistant,
                        content: (!text.is_empty() || calls.is_empty()).then_some(text),
                        tool_calls: (!calls.is_empty()).then_some(calls),
                        extra: Extra::new(),
                    },
                    finish_reason: finish,
                    extra: Extra::new(),
                }
            })
            .collect();
        Ok(ChatResponse {
            id: resp.response_id.unwrap_or_else(openai::completion_id),
            object: "chat.completion".into(),
            created: openai::now_unix(),
            model: resp.model_version.unwrap_or_default(),
            choices,
            usage: resp.usage_metadata.map(|u| u.usage()),
            extra: Extra::new(),
        })
    }

    fn stream_translator(&self) -> Box<dyn StreamTranslator> {
        Box::new(GeminiStream::default())
    }

    fn embeddings_request(
        &self,
        ep: &Endpoint,
        req: &EmbeddingsRequest,
    ) -> Result<UpstreamRequest, ApiError> {
        let texts = super::embedding_texts(NAME, req)?;
        let model = format!("models/{}", ep.model);
        let requests: Vec<Value> = texts
            .iter()
            .map(|t| {
                let mut r = json!({"model": model, "content": {"parts": [{"text": t}]}});
                if let Some(d) = req.dimensions {
                    r["outputDimensionality"] = d.into();
                }
                r
            })
            .collect();
        let url = ep.url(&format!("v1beta/models/{}:batchEmbedContents", ep.model));
        UpstreamRequest::json(url, &json!({ "requests": requests }))?
            .credential("x-goog-api-key", ep.api_key)
    }

    fn embeddings_response(
        &self,
        body: &[u8],
        model: &str,
    ) -> Result<EmbeddingsResponse, ApiError> {
        #[derive(Deserialize)]
        struct Batch {
            #[serde(default)]
            embeddings: Vec<Values>,
        }
        #[derive(Deserialize)]
        struct Values {
            values: Value,
        }
        let batch: Batch = parse_json(NAME, body)?;
        Ok(EmbeddingsResponse::from_vectors(
            model,
            batch.embeddings.into_iter().map(|e| e.values),
            None,
        ))
    }
}

#[derive(Default)]
struct GeminiStream {
    meta: Option<StreamMeta>,
    next_tool: u32,
    usage: Option<Usage>,
    finished: bool,
}

impl StreamTranslator for GeminiStream {
    fn event(&mut self, event: &SseEvent, out: &mut Vec<ChatChunk>) -> Result<Step, ApiError> {
        let value: Value = parse_json(NAME, event.data.as_bytes())?;
        if value.get("error").is_some() {
            return Err(ApiError::bad_upstream(format!(
                "the gemini provider failed in mid-stream: {}",
                error_text(event.data.as_bytes())
            )));
        }
        let resp: GenerateResponse = serde_json::from_value(value).map_err(|e| {
            ApiError::bad_upstream(format!(
                "the gemini provider sent a stream event the gateway cannot read ({e})"
            ))
        })?;
        let meta = self.meta.get_or_insert_with(|| {
            let meta = StreamMeta {
                id: resp
                    .response_id
                    .clone()
                    .unwrap_or_else(openai::completion_id),
                created: openai::now_unix(),
                model: resp.model_version.clone().unwrap_or_default(),
            };
            out.push(ChatChunk::delta(&meta, Delta::start(), None));
            meta
        });
        if let Some(u) = resp.usage_metadata {
            self.usage = Some(u.usage());
        }
        for cand in resp.candidates {
            for part in answer_parts(cand.content) {
                if let Some(text) = part.text.filter(|t| !t.is_empty()) {
                    out.push(ChatChunk::delta(meta, Delta::text(text), None));
                }
                if let Some(call) = part.function_call {
                    let delta = ToolCallDelta::start(
                        self.next_tool,
                        call_id(call.id, part.thought_signature),
                        call.name,
                        call.args.to_string(),
                    );
                    self.next_tool += 1;
                    out.push(ChatChunk::delta(meta, Delta::tool_call(delta), None));
                }
            }
            if let Some(reason) = cand.finish_reason {
                self.finished = true;
                let finish = finish_reason(&reason, self.next_tool > 0);
                out.push(ChatChunk::delta(meta, Delta::default(), Some(finish)));
            }
        }
        Ok(Step::More)
    }

    fn finish(&mut self, out: &mut Vec<ChatChunk>) -> Result<(), ApiError> {
        if !self.finished {
            return Err(ApiError::bad_upstream(
                "the gemini provider closed the stream before a finishReason",
            ));
        }
        if let (Some(meta), Some(usage)) = (&self.meta, self.usage) {
            out.push(ChatChunk::usage(meta, usage));
        }
        Ok(())
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep() -> Endpoint<'static> {
        Endpoint {
            base_url: "https://generativelanguage.googleapis.com",
            api_key: Some("gkey"),
            model: "gemini-2.5-flash",
            api_version: None,
        }
    }

    fn body_of(req: Value) -> (UpstreamRequest, Value) {
        let req: ChatRequest = serde_json::from_value(req).unwrap();
        let up = Gemini.chat_request(&ep(), &req).unwrap();
        let body = serde_json::from_slice(&up.body).unwrap();
        (up, body)
    }

    #[test]
    fn request_maps_roles_system_tools_results_and_config() {
        let (up, body) = body_of(json!({
            "model": "g", "stream": true,
            "messages": [
                {"role": "system", "content": "Answer in French."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}
                ]},
                {"role": "assistant", "tool_calls": [{"id": "call_a", "type": "function",
                  "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_a", "content": "sunny"}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "parameters": {"type": "object", "additionalProperties": false,
                               "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "w",
                "schema": {"type": "object", "$schema": "x", "properties": {"t": {"type": "number"}}}}},
            "temperature": 0.2, "top_p": 0.9, "max_tokens": 64, "stop": ["END"]
        }));
        assert_eq!(
            up.url,
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert_eq!(up.headers["x-goog-api-key"], "gkey");
        assert_eq!(
            body["systemInstruction"],
            json!({"parts": [{"text": "Answer in French."}]})
        );
        assert_eq!(body["contents"][0]["role"], "user");
        assert_eq!(
            body["contents"][0]["parts"][1],
            json!({"inlineData": {"mimeType": "image/png", "data": "iVBOR"}})
        );
        assert_eq!(
            body["contents"][1],
            json!({"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]})
        );
        assert_eq!(
            body["contents"][2]["parts"][0],
            json!({"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}})
        );
        let decl = &body["tools"][0]["functionDeclarations"][0];
        assert!(decl["parameters"].get("additionalProperties").is_none());
        assert_eq!(decl["parameters"]["required"], json!(["city"]));
        assert_eq!(
            body["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})
        );
        let config = &body["generationConfig"];
        assert_eq!(config["maxOutputTokens"], 64);
        assert_eq!(config["stopSequences"], json!(["END"]));
        assert_eq!(config["topP"], 0.9);
        assert_eq!(config["responseMimeType"], "application/json");
        assert!(config["responseSchema"].get("$schema").is_none());
    }

    #[test]
    fn result_for_an_unknown_call_is_400() {
        let req: ChatRequest = serde_json::from_value(json!({"model": "g", "messages": [
            {"role": "user", "content": "x"},
            {"role": "tool", "tool_call_id": "nope", "content": "1"}]}))
        .unwrap();
        let err = Gemini.chat_request(&ep(), &req).unwrap_err();
        assert_eq!(err.status.as_u16(), 400);
    }

    #[test]
    fn response_with_text_call_and_usage() {
        let body = json!({
            "candidates": [{"content": {"role": "model", "parts": [
                {"text": "thinking...", "thought": true},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
            ]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 3, "totalTokenCount": 18},
            "modelVersion": "gemini-2.5-flash", "responseId": "r1"
        });
        let resp = Gemini.chat_response(body.to_string().as_bytes()).unwrap();
        assert_eq!(resp.id, "r1");
        let choice = &resp.choices[0];
        assert_eq!(choice.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(choice.message.content, None);
        let call = &choice.message.tool_calls.as_ref().unwrap()[0];
        assert_eq!(call.function.name, "get_weather");
        assert!(call.id.starts_with("call_"));
        assert_eq!(resp.usage, Some(Usage::new(10, 8)));
    }

    #[test]
    fn thought_signatures_travel_in_the_call_id_and_come_back() {
        let body = json!({"candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "c2ln+/="}]},
            "finishReason": "STOP"}]});
        let resp = Gemini.chat_response(body.to_string().as_bytes()).unwrap();
        let call = resp.choices[0].message.tool_calls.as_ref().unwrap()[0].clone();
        assert!(call.id.ends_with("~sig~c2ln+/="), "{}", call.id);
        let (_, sent) = body_of(json!({"model": "g", "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call.id, "content": "{\"ok\": true}"}]}));
        assert_eq!(
            sent["contents"][1]["parts"][0]["thoughtSignature"],
            "c2ln+/="
        );
        assert_eq!(
            sent["contents"][2]["parts"][0]["functionResponse"]["response"],
            json!({"ok": true})
        );
    }

    #[test]
    fn blocked_prompt_is_an_error() {
        let body = json!({"promptFeedback": {"blockReason": "SAFETY"}});
        let err = Gemini
            .chat_response(body.to_string().as_bytes())
            .unwrap_err();
        assert!(err.detail.message.contains("SAFETY"));
    }

    #[test]
    fn stream_chunks_and_final_usage() {
        let mut t = Gemini.stream_translator();
        let mut out = Vec::new();
        for data in [
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Bon"}]}}], "usageMetadata": {"promptTokenCount": 4}, "modelVersion": "gemini-2.5-flash", "responseId": "r2"}),
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "jour"}]}, "finishReason": "MAX_TOKENS"}], "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2, "totalTokenCount": 6}, "modelVersion": "gemini-2.5-flash", "responseId": "r2"}),
        ] {
            let ev = SseEvent {
                event: None,
                data: data.to_string(),
            };
            assert_eq!(t.event(&ev, &mut out).unwrap(), Step::More);
        }
        t.finish(&mut out).unwrap();
        assert_eq!(out[0].choices[0].delta.role, Some(Role::Assistant));
        assert_eq!(out[1].choices[0].delta.content.as_deref(), Some("Bon"));
        assert_eq!(out[2].choices[0].delta.content.as_deref(), Some("jour"));
        assert_eq!(out[3].choices[0].finish_reason, Some(FinishReason::Length));
        assert_eq!(out[4].usage, Some(Usage::new(4, 2)));
        assert!(out.iter().all(|c| c.id == "r2"));
    }

    #[test]
    fn stream_without_finish_reason_is_truncated() {
        let mut t = Gemini.stream_translator();
        let ev = SseEvent {
            event: None,
            data: json!({"candidates": [{"content": {"parts": [{"text": "a"}]}}]}).to_string(),
        };
        t.event(&ev, &mut Vec::new()).unwrap();
        assert!(t.finish(&mut Vec::new()).is_err());
    }

    #[test]
    fn embeddings_batch_round_trip() {
        let req: EmbeddingsRequest =
            serde_json::from_value(json!({"model": "e", "input": ["a", "b"], "dimensions": 8}))
                .unwrap();
        let up = Gemini.embeddings_request(&ep(), &req).unwrap();
        assert!(
            up.url
                .ends_with("/v1beta/models/gemini-2.5-flash:batchEmbedContents")
        );
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(body["requests"][1]["content"]["parts"][0]["text"], "b");
        assert_eq!(body["requests"][0]["outputDimensionality"], 8);
        let resp = Gemini
            .embeddings_response(
                json!({"embeddings": [{"values": [0.1]}, {"values": [0.2]}]})
                    .to_string()
                    .as_bytes(),
                "e",
            )
            .unwrap();
        assert_eq!(resp.data[1].index, 1);
        assert_eq!(resp.data[1].embedding, json!([0.2]));
    }
}
