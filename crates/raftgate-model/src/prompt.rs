//! Prompt APIs (`/ai/prompts/{name}`): a chat prompt template published as a REST endpoint
//! on the proxy port ("prompt encapsulation").
//!
//! A prompt API holds message templates with `{{variable}}` placeholders, the model alias to
//! call, fixed sampling parameters and the path it is served at. A client `POST`s a JSON object
//! of variables to the path; the gateway substitutes them (plain text substitution: nothing in a
//! value is interpreted, so a value holding `{{x}}` stays as written) and calls the model as
//! `/v1/chat/completions` would. The template syntax and its parser live here so that a
//! template is checked when it is written, not when it is first called.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::validate::ValidationError;

/// A prompt template served as an API. Every field is always encoded (the binary codec is not
/// self-describing).
///
/// On the proxy port, `POST {path}` with a JSON object of variables (strings, numbers or
/// booleans; arrays and objects are inserted as compact JSON) and a consumer key
/// (`Authorization: Bearer <key>`) answers `{"text": "<the model's answer>"}`, or with
/// `response_format: json` the JSON value the model answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptSpec {
    /// Where the API is served on the proxy port, e.g. `/apis/sentiment` (exact match, `POST`
    /// only; `/v1/...` belongs to the unified API). It takes precedence over routes.
    pub path: String,
    /// The model alias called (an `/ai/models/{alias}`); the caller's consumer must be allowed
    /// to use it.
    pub model: String,
    /// The conversation sent, oldest first; the last message must be the user's.
    pub messages: Vec<PromptMessage>,
    /// The variables the templates use, by name. When empty, the placeholders found in the
    /// templates are the variables (all required); when given, every placeholder must be
    /// declared here and every declared variable used.
    #[serde(default)]
    pub variables: BTreeMap<String, PromptVariable>,
    /// Sampling parameters sent with every call.
    #[serde(default)]
    pub parameters: PromptParameters,
    /// What the API answers: the model's text, or the JSON it was asked to produce.
    #[serde(default)]
    pub response_format: PromptFormat,
    /// The owning team (see [`crate::access`]); filled in with the caller's team for a team
    /// token, absent for objects of the whole cluster.
    #[serde(default)]
    pub team: Option<String>,
}

/// One message template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptMessage {
    /// Who speaks.
    pub role: PromptRole,
    /// The text, with `{{variable}}` placeholders (spaces inside the braces allowed).
    pub content: String,
}

/// The author of a template message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PromptRole {
    /// Instructions.
    System,
    /// The user's turn.
    User,
    /// A model turn, for few-shot examples.
    Assistant,
}

/// A declared variable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptVariable {
    /// What to send, for the API's users.
    #[serde(default)]
    pub description: String,
    /// Used when the request leaves the variable out; without one the variable is required.
    #[serde(default)]
    pub default: Option<String>,
}

/// Sampling parameters of a prompt API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptParameters {
    /// Sampling temperature, 0 to 2.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus sampling, above 0 and at most 1.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Output token limit.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Up to four sequences that end the answer.
    #[serde(default)]
    pub stop: Vec<String>,
}

/// What a prompt API answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PromptFormat {
    /// `{"text": "<answer>"}`.
    #[default]
    Text,
    /// The model is asked for a JSON object (`response_format: json_object`) and the API
    /// answers the JSON it produced (a code fence around it is removed); an answer that is not
    /// JSON is a 502.
    Json,
}

/// A piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Literal text.
    Text(String),
    /// A placeholder, by variable name.
    Var(String),
}

/// A message template split into literal text and placeholders, parsed once when the
/// configuration is loaded so that rendering is a concatenation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// Whether `name` is a variable name: a letter or `_`, then letters, digits or `_`.
pub fn is_variable_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Template {
    /// Parses `text`; every `{{` must open a placeholder `{{name}}`. The error says what is
    /// wrong, for the field holding the template.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or_else(|| {
                "has a {{ without its closing }}; placeholders are written {{name}}".to_string()
            })?;
            let name = after[..close].trim();
            if !is_variable_name(name) {
                return Err(format!(
                    "has the placeholder {{{{{}}}}}, but a variable name is a letter or _ followed by letters, digits or _",
                    &after[..close]
                ));
            }
            parts.push(Part::Var(name.to_string()));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// The parts, in order.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// The names of the variables used, each once.
    pub fn variables(&self) -> BTreeSet<&str> {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Var(name) => Some(name.as_str()),
                Part::Text(_) => None,
            })
            .collect()
    }

    /// The text with each placeholder replaced by `value(name)` as is (values are never parsed
    /// as templates); a variable without a value renders empty.
    pub fn render<'a>(&self, value: impl Fn(&str) -> Option<&'a str>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var(name) => out.push_str(value(name).unwrap_or_default()),
            }
        }
        out
    }
}

fn err(field: impl Into<String>, message: impl Into<String>) -> ValidationError {
    ValidationError {
        field: field.into(),
        message: message.into(),
    }
}

/// Longest accepted path.
const MAX_PATH_LEN: usize = 256;
/// Most template messages.
const MAX_MESSAGES: usize = 64;

/// Checks the published path: absolute, plain segments, not the unified API's `/v1`.
fn path(path: &str) -> Result<(), ValidationError> {
    let bad = |message: &str| Err(err("path", message));
    if !path.starts_with('/') || path.len() < 2 || path.len() > MAX_PATH_LEN {
        return bad(
            "must start with / and name a path of 2 to 256 characters, e.g. /apis/sentiment",
        );
    }
    if !path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~'))
    {
        return bad("may contain only letters, digits, / - _ . ~ (no query string)");
    }
    if path[1..]
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return bad("must not have empty, . or .. segments, nor end with /");
    }
    if path == "/v1" || path.starts_with("/v1/") {
        return bad("/v1/... belongs to the AI gateway's unified API; choose another path");
    }
    Ok(())
}

/// Which of `route`'s paths claims the prompt API path `path` for `POST`, if any: one that
/// names it exactly (`/shop` or `=/shop`, a trailing `/` ignored) or a regex that matches it,
/// on a route that takes `POST`. A prefix above the path (`/shop` for `/shop/assistant`, the
/// catch-all `/`) does not: the prompt API is the more specific match there, as a route with
/// the exact path would be. The state machine refuses a prompt API or a route that would
/// take a path the other claims, so that neither silently shadows the other.
pub fn route_claim(route: &crate::RouteSpec, path: &str) -> Option<usize> {
    if !route.methods.is_empty() && !route.methods.iter().any(|m| m == "POST") {
        return None;
    }
    route.paths.iter().position(|p| {
        if let Some(re) = p.strip_prefix('~') {
            regex::Regex::new(re).is_ok_and(|re| re.is_match(path))
        } else {
            let named = p.strip_prefix('=').unwrap_or(p);
            named.len() > 1 && named.trim_end_matches('/') == path
        }
    })
}

/// See [`PromptSpec`]: the path, the model name, the templates against the declared
/// variables, and the parameters' ranges. Whether the model exists is checked by the admin
/// API, and whether the path is free (of other prompt APIs and routes, see [`route_claim`]) by
/// the state machine.
pub fn validate(spec: &PromptSpec) -> Result<(), ValidationError> {
    path(&spec.path)?;
    crate::validate::name("model", &spec.model)?;
    crate::validate::team("team", spec.team.as_deref())?;
    if spec.messages.is_empty() || spec.messages.len() > MAX_MESSAGES {
        return Err(err(
            "messages",
            format!("must list 1 to {MAX_MESSAGES} message templates"),
        ));
    }
    if spec.messages.last().map(|m| m.role) != Some(PromptRole::User) {
        return Err(err(
            "messages",
            "the last message must be the user's: it is what the model answers",
        ));
    }
    for name in spec.variables.keys() {
        if !is_variable_name(name) {
            return Err(err(
                format!("variables.{name}"),
                "a variable name is a letter or _ followed by letters, digits or _",
            ));
        }
    }
    let mut used = BTreeSet::new();
    for (i, m) in spec.messages.iter().enumerate() {
        let field = format!("messages[{i}].content");
        if m.content.trim().is_empty() {
            return Err(err(field, "must not be empty"));
        }
        let template = Template::parse(&m.content).map_err(|e| err(&field, e))?;
        for name in template.variables() {
            if !spec.variables.is_empty() && !spec.variables.contains_key(name) {
                let declared: Vec<&str> = spec.variables.keys().map(String::as_str).collect();
                return Err(err(
                    field,
                    format!(
                        "uses {{{{{name}}}}}, which is not a declared variable ({}); declare it or fix the name",
                        declared.join(", ")
                    ),
                ));
            }
            used.insert(name.to_string());
        }
    }
    if let Some(unused) = spec.variables.keys().find(|v| !used.contains(*v)) {
        return Err(err(
            format!("variables.{unused}"),
            "is not used by any message template; use it as {{name}} or remove it",
        ));
    }
    let p = &spec.parameters;
    if p.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
        return Err(err("parameters.temperature", "must be from 0 to 2"));
    }
    if p.top_p.is_some_and(|t| !(t > 0.0 && t <= 1.0)) {
        return Err(err("parameters.top_p", "must be above 0 and at most 1"));
    }
    if p.max_tokens == Some(0) {
        return Err(err("parameters.max_tokens", "must be at least 1"));
    }
    if p.stop.len() > 4 || p.stop.iter().any(String::is_empty) {
        return Err(err(
            "parameters.stop",
            "must list at most 4 non-empty sequences",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(content: &str, variables: &[&str]) -> PromptSpec {
        PromptSpec {
            path: "/apis/sentiment".into(),
            model: "gpt".into(),
            messages: vec![
                PromptMessage {
                    role: PromptRole::System,
                    content: "You rate sentiment.".into(),
                },
                PromptMessage {
                    role: PromptRole::User,
                    content: content.into(),
                },
            ],
            variables: variables
                .iter()
                .map(|v| (v.to_string(), PromptVariable::default()))
                .collect(),
            parameters: PromptParameters::default(),
            response_format: PromptFormat::Text,
            team: None,
        }
    }

    #[test]
    fn templates_parse_and_render_by_plain_substitution() {
        let t = Template::parse("Rate {{ text }} in {{lang}}; again: {{text}}.").unwrap();
        assert_eq!(
            t.variables().into_iter().collect::<Vec<_>>(),
            ["lang", "text"]
        );
        let rendered = t.render(|name| match name {
            "text" => Some("{{lang}} $(rm -rf /) {{"),
            "lang" => Some("French"),
            _ => None,
        });
        // A value is inserted as written: its braces are not placeholders.
        assert_eq!(
            rendered,
            "Rate {{lang}} $(rm -rf /) {{ in French; again: {{lang}} $(rm -rf /) {{."
        );
        assert_eq!(Template::parse("no placeholders").unwrap().parts().len(), 1);
        assert_eq!(Template::parse("").unwrap().parts(), []);
        assert!(
            Template::parse("open {{ text")
                .unwrap_err()
                .contains("closing")
        );
        assert!(Template::parse("{{two words}}").is_err());
        assert!(Template::parse("{{1st}}").is_err());
        assert!(Template::parse("{{}}").is_err());
        // A single brace is text.
        assert_eq!(
            Template::parse("{\"a\": {x}}").unwrap().parts(),
            [Part::Text("{\"a\": {x}}".into())]
        );
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(validate(&spec("Rate {{text}}", &[])), Ok(()));
        assert_eq!(validate(&spec("Rate {{text}}", &["text"])), Ok(()));
        let e = validate(&spec("Rate {{txt}}", &["text"])).unwrap_err();
        assert_eq!(e.field, "messages[1].content");
        assert!(
            e.message.contains("{{txt}}") && e.message.contains("text"),
            "{e}"
        );
        let e = validate(&spec("Rate {{text}}", &["text", "lang"])).unwrap_err();
        assert_eq!(e.field, "variables.lang");
        let e = validate(&spec("Rate {{text", &[])).unwrap_err();
        assert_eq!(e.field, "messages[1].content");

        for (bad, why) in [
            ("apis/x", "relative"),
            ("/", "root"),
            ("/v1/chat/completions", "unified API"),
            ("/v1", "unified API"),
            ("/apis//x", "empty segment"),
            ("/apis/x/", "trailing slash"),
            ("/apis/../admin", "dot segment"),
            ("/apis/x?y=1", "query"),
        ] {
            let mut s = spec("Rate {{text}}", &[]);
            s.path = bad.into();
            assert_eq!(validate(&s).unwrap_err().field, "path", "{why}: {bad}");
        }
        let mut s = spec("Rate {{text}}", &[]);
        s.path = "/v1beta/x".into();
        assert!(validate(&s).is_ok(), "only /v1 itself is reserved");

        let mut s = spec("Rate {{text}}", &[]);
        s.messages.reverse();
        assert_eq!(validate(&s).unwrap_err().field, "messages");
        let mut s = spec("Rate {{text}}", &[]);
        s.parameters.temperature = Some(3.0);
        assert_eq!(validate(&s).unwrap_err().field, "parameters.temperature");
        let mut s = spec("Rate {{text}}", &[]);
        s.model = "bad/alias".into();
        assert_eq!(validate(&s).unwrap_err().field, "model");
    }
}
