//! Prompt APIs: prompt templates (`/ai/prompts/{name}`, see [`raftgate_model::prompt`])
//! served on the proxy port at their own paths.
//!
//! `POST {path}` with a JSON object of variables renders the templates (plain substitution),
//! calls the model through [`Gateway::chat`] exactly as `/v1/chat/completions` does (so
//! fallbacks, the response cache and usage accounting apply), and answers
//! `{"text": "<answer>"}`, or the JSON value the model produced when the API's
//! `response_format` is `json`. Errors are OpenAI-style bodies like the unified API's, with
//! `param` naming the variable at fault; complete answers carry `X-Cache` like chat
//! completions.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{Response, StatusCode};
use raftgate_model::prompt::{PromptFormat, PromptRole, PromptSpec, Template};
use serde_json::{Map, Value, json};

use crate::api::{Access, AiBody, Denied, cached_json};
use crate::engine::{ChatOutcome, Gateway};
use crate::error::ApiError;
use crate::openai::{ChatRequest, Message, ResponseFormat, Role, Stop};

/// A variable of a compiled prompt API.
#[derive(Debug)]
struct Variable {
    name: String,
    default: Option<String>,
}

/// A prompt API ready to serve: its templates parsed once.
#[derive(Debug)]
pub struct PromptApi {
    name: String,
    spec: PromptSpec,
    messages: Vec<(Role, Template)>,
    variables: Vec<Variable>,
}

impl PromptApi {
    /// Compiles the prompt `name`; the error says which template is broken (specs are checked
    /// when written, so this only fails for data written by a build with other rules).
    fn compile(name: &str, spec: &PromptSpec) -> Result<PromptApi, String> {
        let mut messages = Vec::with_capacity(spec.messages.len());
        for (i, m) in spec.messages.iter().enumerate() {
            let template =
                Template::parse(&m.content).map_err(|e| format!("messages[{i}].content {e}"))?;
            let role = match m.role {
                PromptRole::System => Role::System,
                PromptRole::User => Role::User,
                PromptRole::Assistant => Role::Assistant,
            };
            messages.push((role, template));
        }
        let variables = if spec.variables.is_empty() {
            let mut names: Vec<&str> = messages.iter().flat_map(|(_, t)| t.variables()).collect();
            names.sort_unstable();
            names.dedup();
            names
                .into_iter()
                .map(|name| Variable {
                    name: name.to_string(),
                    default: None,
                })
                .collect()
        } else {
            spec.variables
                .iter()
                .map(|(name, v)| Variable {
                    name: name.clone(),
                    default: v.default.clone(),
                })
                .collect()
        };
        Ok(PromptApi {
            name: name.to_string(),
            spec: spec.clone(),
            messages,
            variables,
        })
    }

    /// The prompt's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The model alias it calls, for access checks.
    pub fn model(&self) -> &str {
        &self.spec.model
    }

    /// The chat request for a body of variables, or a 400 naming what is wrong.
    pub fn request(&self, body: &[u8]) -> Result<ChatRequest, ApiError> {
        let names = || {
            self.variables
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let values: Map<String, Value> = if body.iter().all(u8::is_ascii_whitespace) {
            Map::new()
        } else {
            match serde_json::from_slice(body) {
                Ok(Value::Object(map)) => map,
                _ => {
                    return Err(ApiError::invalid_request(
                        format!(
                            "the body must be a JSON object of this API's variables ({}), e.g. {{\"name\": \"value\"}}",
                            names()
                        ),
                        None,
                    ));
                }
            }
        };
        if let Some(unknown) = values
            .keys()
            .find(|k| !self.variables.iter().any(|v| v.name == **k))
        {
            return Err(ApiError::invalid_request(
                format!(
                    "this API has no variable {unknown}; its variables are: {}",
                    names()
                ),
                Some(unknown),
            ));
        }
        let mut text = HashMap::with_capacity(self.variables.len());
        for v in &self.variables {
            let value = match values.get(&v.name) {
                None | Some(Value::Null) => match &v.default {
                    Some(default) => default.clone(),
                    None => {
                        let mut e = ApiError::invalid_request(
                            format!(
                                "the variable {} is missing; send it in the JSON body (this API's variables: {})",
                                v.name,
                                names()
                            ),
                            Some(&v.name),
                        );
                        e.detail.code = Some("missing_variable".into());
                        return Err(e);
                    }
                },
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            text.insert(v.name.as_str(), value);
        }
        let messages = self
            .messages
            .iter()
            .map(|(role, template)| {
                Message::text(
                    *role,
                    template.render(|name| text.get(name).map(String::as_str)),
                )
            })
            .collect();
        let p = &self.spec.parameters;
        Ok(ChatRequest {
            model: self.spec.model.clone(),
            messages,
            temperature: p.temperature,
            top_p: p.top_p,
            max_tokens: p.max_tokens,
            stop: (!p.stop.is_empty()).then(|| Stop::Many(p.stop.clone())),
            response_format: (self.spec.response_format == PromptFormat::Json).then(|| {
                ResponseFormat {
                    kind: "json_object".into(),
                    json_schema: None,
                }
            }),
            ..ChatRequest::default()
        })
    }

    /// Serves one call: renders, checks that the caller may use the model, calls it and
    /// shapes the answer.
    pub async fn serve(&self, gw: &Gateway, access: &Access<'_>, body: &[u8]) -> Response<AiBody> {
        self.call(gw, access, body)
            .await
            .unwrap_or_else(|e| crate::api::error(crate::api::Route::ChatCompletions, &e))
    }

    async fn call(
        &self,
        gw: &Gateway,
        access: &Access<'_>,
        body: &[u8],
    ) -> Result<Response<AiBody>, ApiError> {
        match (access.allowed)(self.model()) {
            Ok(()) => {}
            Err(Denied::Refused(e)) => return Err(e),
            Err(Denied::Unknown) => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "permission_error",
                    format!(
                        "this API calls the model {}, which your consumer may not use; an administrator can add it to the consumer's ai_models",
                        self.model()
                    ),
                ));
            }
        }
        let req = self.request(body)?;
        // Budgets and token limits apply as to the unified API.
        let budget = access.admit(gw.reservation(&req))?;
        let (resp, hit) = match gw.chat(&access.caller, req, budget).await {
            Ok(ChatOutcome::Complete(resp)) => (resp, false),
            Ok(ChatOutcome::Cached(resp)) => (resp, true),
            Ok(ChatOutcome::Stream(_)) => {
                return Err(ApiError::bad_upstream(
                    "the gateway answered a prompt API with a stream; this is a bug, please report it",
                ));
            }
            Err(e) if e.detail.code.as_deref() == Some("model_not_found") => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "api_error",
                    format!(
                        "the model {} that this API calls is not configured; an administrator must add it or fix the prompt {}",
                        self.model(),
                        self.name
                    ),
                ));
            }
            Err(e) => return Err(e),
        };
        let text = resp
            .choices
            .first()
            .and_then(|c| c.message.content.clone())
            .unwrap_or_default();
        let answer = match self.spec.response_format {
            PromptFormat::Text => json!({ "text": text }),
            PromptFormat::Json => crate::openai::json_in(&text).map_err(|e| {
                ApiError::bad_upstream(format!(
                    "the model's answer is not JSON ({e}); retry, or use a model that supports JSON output"
                ))
            })?,
        };
        Ok(cached_json(&answer, hit))
    }
}

/// The prompt APIs by path, swapped as a whole on configuration changes.
#[derive(Default)]
pub struct PromptApis {
    served: ArcSwap<Served>,
}

/// One configuration's prompt APIs, by path (their own entrance) and by name (for the AI API
/// versions that offer them).
#[derive(Default)]
struct Served {
    by_path: HashMap<String, Arc<PromptApi>>,
    by_name: HashMap<String, Arc<PromptApi>>,
}

impl std::fmt::Debug for PromptApis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptApis")
            .field("paths", &self.served.load().by_path.len())
            .finish()
    }
}

impl PromptApis {
    /// Serves `prompts` (by name). When two claim one path (the admin API refuses that, but two
    /// concurrent writes can both pass), the first by name serves it, with a warning.
    pub fn update(&self, prompts: &BTreeMap<String, PromptSpec>) {
        let mut served = Served::default();
        for (name, spec) in prompts {
            if let Some(other) = served.by_path.get(&spec.path) {
                tracing::warn!(prompt = %name, path = %spec.path, served_by = %other.name,
                    "AI prompt left out: another prompt serves its path; change one of the paths");
                continue;
            }
            match PromptApi::compile(name, spec) {
                Ok(api) => {
                    let api = Arc::new(api);
                    served.by_path.insert(spec.path.clone(), api.clone());
                    served.by_name.insert(name.clone(), api);
                }
                Err(e) => {
                    tracing::warn!(prompt = %name, "AI prompt left out: {e}; write it again")
                }
            }
        }
        self.served.store(Arc::new(served));
    }

    /// The prompt API served at `path` (a trailing `/` ignored).
    pub fn get(&self, path: &str) -> Option<Arc<PromptApi>> {
        let served = self.served.load();
        if served.by_path.is_empty() {
            return None;
        }
        served.by_path.get(path.trim_end_matches('/')).cloned()
    }

    /// The prompt API `name`.
    pub fn named(&self, name: &str) -> Option<Arc<PromptApi>> {
        self.served.load().by_name.get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgate_model::prompt::{PromptMessage, PromptParameters, PromptVariable};

    fn api(variables: &[(&str, Option<&str>)], format: PromptFormat) -> PromptApi {
        let spec = PromptSpec {
            path: "/apis/sentiment".into(),
            model: "gpt".into(),
            messages: vec![
                PromptMessage {
                    role: PromptRole::System,
                    content: "Answer in {{lang}}.".into(),
                },
                PromptMessage {
                    role: PromptRole::User,
                    content: "Rate: {{ text }}".into(),
                },
            ],
            variables: variables
                .iter()
                .map(|(n, d)| {
                    (
                        n.to_string(),
                        PromptVariable {
                            description: String::new(),
                            default: d.map(str::to_string),
                        },
                    )
                })
                .collect(),
            parameters: PromptParameters {
                temperature: Some(0.1),
                stop: vec!["END".into()],
                ..PromptParameters::default()
            },
            response_format: format,
            team: None,
        };
        PromptApi::compile("sentiment", &spec).unwrap()
    }

    #[test]
    fn renders_a_chat_request_from_the_variables() {
        let api = api(&[], PromptFormat::Json);
        let req = api
            .request(br#"{"text": "{{lang}} is great", "lang": 5}"#)
            .unwrap();
        assert_eq!(req.model, "gpt");
        assert_eq!(req.messages[0].text_content(), "Answer in 5.");
        assert_eq!(req.messages[1].role, Role::User);
        assert_eq!(req.messages[1].text_content(), "Rate: {{lang}} is great");
        assert_eq!(req.temperature, Some(0.1));
        assert_eq!(req.stop_sequences(), ["END"]);
        assert!(req.response_format.as_ref().is_some_and(|f| f.is_json()));
        assert!(!req.is_stream());
    }

    #[test]
    fn bad_bodies_are_400s_naming_the_variable() {
        let api = api(
            &[("text", None), ("lang", Some("English"))],
            PromptFormat::Text,
        );
        let req = api.request(br#"{"text": "ok"}"#).unwrap();
        assert_eq!(req.messages[0].text_content(), "Answer in English.");
        assert!(req.response_format.is_none());

        let e = api.request(br#"{"lang": "French"}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.detail.param.as_deref(), Some("text"));
        assert_eq!(e.detail.code.as_deref(), Some("missing_variable"));
        assert!(e.detail.message.contains("text"), "{e}");
        let e = api.request(br#"{"text": null}"#).unwrap_err();
        assert_eq!(e.detail.param.as_deref(), Some("text"));
        let e = api.request(b"").unwrap_err();
        assert_eq!(e.detail.param.as_deref(), Some("text"));
        let e = api.request(br#"{"text": "a", "tone": "b"}"#).unwrap_err();
        assert_eq!(e.detail.param.as_deref(), Some("tone"));
        for body in [&b"not json"[..], b"[1, 2]", b"\"text\""] {
            let e = api.request(body).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.detail.message.contains("JSON object"), "{e}");
        }
    }

    #[test]
    fn code_fences_around_json_are_removed() {
        use crate::openai::json_in;
        assert_eq!(
            json_in("```json\n{\"a\": 1}\n```").unwrap(),
            json!({"a": 1})
        );
        assert_eq!(json_in(" ```\n[1]\n``` ").unwrap(), json!([1]));
        assert_eq!(json_in("{\"a\": 1}").unwrap(), json!({"a": 1}));
        assert!(json_in("The city is Paris.").is_err());
    }

    #[test]
    fn paths_map_to_prompts_first_name_wins() {
        let apis = PromptApis::default();
        assert!(apis.get("/apis/sentiment").is_none());
        let spec = api(&[], PromptFormat::Text).spec;
        apis.update(&BTreeMap::from([
            ("b".to_string(), spec.clone()),
            ("a".to_string(), spec),
        ]));
        assert_eq!(apis.get("/apis/sentiment").unwrap().name(), "a");
        assert_eq!(apis.get("/apis/sentiment/").unwrap().name(), "a");
        assert!(apis.get("/apis").is_none());
        // By name, only the one that serves.
        assert_eq!(apis.named("a").unwrap().name(), "a");
        assert!(apis.named("b").is_none());
    }
}
