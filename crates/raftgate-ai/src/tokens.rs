//! An approximate token counter for when a provider reports no usage (an OpenAI-compatible
//! server that ignores `include_usage`, a stream cut short, embeddings from Gemini).
//!
//! Real tokenizers differ per model and are megabytes of tables; budgets and cost only need a
//! fair estimate, so this counts about four characters a token (OpenAI's rule of thumb for
//! English), words as at least one token each, plus OpenAI's documented per-message overhead.
//! Usage counted this way is marked as estimated in the usage record.

use crate::openai::ChatRequest;

/// Tokens in a piece of text, approximately.
pub fn count_text(text: &str) -> u64 {
    let chars = text.chars().count() as u64;
    let words = text.split_whitespace().count() as u64;
    chars.div_ceil(4).max(words)
}

/// Tokens of a whole chat request: its messages' text, tool names and arguments, tool
/// definitions, plus 3 tokens a message and 3 to prime the reply.
pub fn count_request(req: &ChatRequest) -> u64 {
    let messages: u64 = req
        .messages
        .iter()
        .map(|m| {
            let calls: u64 = m
                .tool_calls
                .iter()
                .flatten()
                .map(|c| count_text(&c.function.name) + count_text(&c.function.arguments))
                .sum();
            3 + count_text(&m.text_content()) + calls
        })
        .sum();
    let tools: u64 = req
        .tools
        .iter()
        .flatten()
        .map(|t| serde_json::to_string(&t.function).map_or(0, |s| count_text(&s)))
        .sum();
    messages + tools + 3
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::{Message, Role};

    #[test]
    fn text_counts_are_in_the_right_range() {
        assert_eq!(count_text(""), 0);
        assert_eq!(count_text("hi"), 1);
        // 44 characters, 9 words: about 11 tokens (cl100k says 10).
        assert_eq!(
            count_text("The quick brown fox jumps over the lazy dog."),
            11
        );
        // Short words count at least one token each.
        assert_eq!(count_text("a b c d e f g h"), 8);
    }

    #[test]
    fn request_adds_message_overhead() {
        let req = ChatRequest {
            model: "m".into(),
            messages: vec![
                Message::text(Role::System, "be brief"),
                Message::text(Role::User, "hello there"),
            ],
            ..ChatRequest::default()
        };
        assert_eq!(count_request(&req), 3 + 2 + 3 + 3 + 3);
    }
}
