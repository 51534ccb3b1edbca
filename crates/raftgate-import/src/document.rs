//! Reading the uploaded document: JSON or YAML, told apart by the `Content-Type` or, failing
//! that, by its first character. The only place that knows YAML, so the YAML library can be
//! swapped here alone.

use serde_json::Value;

use crate::ImportError;

/// How a document is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json`.
    Json,
    /// `application/yaml` (also `application/x-yaml`, `text/yaml`).
    Yaml,
}

impl Format {
    /// The format named by `content_type`, or else guessed from `text`: a document whose
    /// first non-blank character is `{` is JSON, anything else YAML.
    pub fn of(content_type: Option<&str>, text: &str) -> Format {
        let media = content_type
            .and_then(|c| c.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase());
        match media.as_deref() {
            Some("application/json") => Format::Json,
            Some("application/yaml" | "application/x-yaml" | "text/yaml") => Format::Yaml,
            _ if text.trim_start().starts_with('{') => Format::Json,
            _ => Format::Yaml,
        }
    }

    /// The format of a stored document, for serving it back: JSON when it is a JSON object,
    /// YAML otherwise.
    pub fn of_stored(text: &str) -> Format {
        let json = Format::of(None, text) == Format::Json
            && serde_json::from_str::<serde_json::Map<String, Value>>(text).is_ok();
        if json { Format::Json } else { Format::Yaml }
    }

    /// The media type the document is served back with.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Yaml => "application/yaml",
        }
    }
}

/// The document in `text`, written in `format`, as a JSON value (YAML's mappings, sequences
/// and scalars map onto JSON's; a key that is a YAML number, such as a response code, becomes
/// a string).
pub fn parse(format: Format, text: &str) -> Result<Value, ImportError> {
    let syntax = |message: String| ImportError::Syntax {
        format: format.media_type(),
        message,
    };
    match format {
        Format::Json => serde_json::from_str(text).map_err(|e| syntax(e.to_string())),
        Format::Yaml => serde_norway::from_str(text).map_err(|e| syntax(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_content_type_then_by_sniffing() {
        let cases = [
            (Some("application/json"), "openapi: x", Format::Json),
            (Some("Application/JSON; charset=utf-8"), "", Format::Json),
            (Some("application/yaml"), "{}", Format::Yaml),
            (Some("application/x-yaml"), "{}", Format::Yaml),
            (Some("text/yaml"), "{}", Format::Yaml),
            (Some("text/plain"), "  \n{\"a\":1}", Format::Json),
            (None, "{}", Format::Json),
            (None, "openapi: 3.1.0", Format::Yaml),
            (Some("application/octet-stream"), "---\na: 1", Format::Yaml),
        ];
        for (content_type, text, format) in cases {
            assert_eq!(Format::of(content_type, text), format, "{content_type:?}");
        }
        assert_eq!(Format::of_stored("{\"openapi\": \"3.1.0\"}"), Format::Json);
        assert_eq!(Format::of_stored("{ not: json }"), Format::Yaml);
        assert_eq!(Format::of_stored("openapi: 3.1.0"), Format::Yaml);
    }

    #[test]
    fn yaml_maps_onto_json_values() {
        let doc = parse(
            Format::Yaml,
            "openapi: 3.0.3\npaths:\n  /a:\n    get:\n      responses:\n        200:\n          description: ok\n",
        )
        .unwrap();
        assert_eq!(doc["openapi"], "3.0.3");
        assert_eq!(
            doc["paths"]["/a"]["get"]["responses"]["200"]["description"],
            "ok"
        );
        let Err(ImportError::Syntax { format, .. }) = parse(Format::Yaml, "a: [1, 2") else {
            panic!("broken YAML parsed");
        };
        assert_eq!(format, "application/yaml");
        assert!(parse(Format::Json, "{\"a\": }").is_err());
    }

    #[test]
    fn yaml_alias_bombs_are_refused() {
        // "Billion laughs": each level doubles the size nine times over.
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let started = std::time::Instant::now();
        assert!(parse(Format::Yaml, &text).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
