//! What calls cost: a shipped table of list prices in USD per million tokens, overridable per
//! model, and the cost of one call's usage.
//!
//! The table holds the providers' published list prices for common models at the time of
//! writing; prices change, so every model alias may carry its own price, which wins. Dated
//! model versions (`claude-3-5-haiku-20241022`, `gpt-4o-2024-08-06`) find their family by the
//! longest matching prefix.

use crate::openai::Usage;

pub use raftgate_model::ai::Price;

/// The cost of `usage` in USD at `price`.
pub fn cost(price: &Price, usage: &Usage) -> f64 {
    (usage.prompt_tokens as f64 * price.input_per_million
        + usage.completion_tokens as f64 * price.output_per_million)
        / 1_000_000.0
}

/// (model name or prefix, input, output) in USD per million tokens.
const TABLE: &[(&str, f64, f64)] = &[
    ("gpt-4o-mini", 0.15, 0.60),
    ("gpt-4o", 2.50, 10.00),
    ("gpt-4.1-nano", 0.10, 0.40),
    ("gpt-4.1-mini", 0.40, 1.60),
    ("gpt-4.1", 2.00, 8.00),
    ("gpt-4-turbo", 10.00, 30.00),
    ("gpt-3.5-turbo", 0.50, 1.50),
    ("o4-mini", 1.10, 4.40),
    ("o3-mini", 1.10, 4.40),
    ("o3", 2.00, 8.00),
    ("o1", 15.00, 60.00),
    ("text-embedding-3-small", 0.02, 0.0),
    ("text-embedding-3-large", 0.13, 0.0),
    ("text-embedding-ada-002", 0.10, 0.0),
    ("claude-opus-4", 15.00, 75.00),
    ("claude-sonnet-4", 3.00, 15.00),
    ("claude-3-7-sonnet", 3.00, 15.00),
    ("claude-3-5-sonnet", 3.00, 15.00),
    ("claude-3-5-haiku", 0.80, 4.00),
    ("claude-3-haiku", 0.25, 1.25),
    ("claude-3-opus", 15.00, 75.00),
    ("gemini-2.5-pro", 1.25, 10.00),
    ("gemini-2.5-flash-lite", 0.10, 0.40),
    ("gemini-2.5-flash", 0.30, 2.50),
    ("gemini-2.0-flash-lite", 0.075, 0.30),
    ("gemini-2.0-flash", 0.10, 0.40),
    ("gemini-1.5-pro", 1.25, 5.00),
    ("gemini-1.5-flash", 0.075, 0.30),
    ("text-embedding-004", 0.0, 0.0),
    ("mistral-large", 2.00, 6.00),
    ("mistral-small", 0.10, 0.30),
    ("deepseek-chat", 0.27, 1.10),
    ("command-a", 2.50, 10.00),
    ("command-r-plus", 2.50, 10.00),
    ("command-r7b", 0.0375, 0.15),
    ("command-r", 0.15, 0.60),
    ("deepseek-reasoner", 0.55, 2.19),
];

/// The shipped list price of a provider model: the longest table entry it starts with.
pub fn list_price(model: &str) -> Option<Price> {
    TABLE
        .iter()
        .filter(|(name, _, _)| model.starts_with(name))
        .max_by_key(|(name, _, _)| name.len())
        .map(|&(_, input, output)| Price {
            input_per_million: input,
            output_per_million: output,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_for_dated_versions() {
        assert_eq!(
            list_price("gpt-4o-mini-2024-07-18")
                .unwrap()
                .input_per_million,
            0.15
        );
        assert_eq!(
            list_price("gpt-4o-2024-08-06").unwrap().input_per_million,
            2.50
        );
        assert_eq!(
            list_price("claude-3-5-haiku-20241022")
                .unwrap()
                .output_per_million,
            4.00
        );
        assert_eq!(
            list_price("gemini-2.5-flash-lite")
                .unwrap()
                .input_per_million,
            0.10
        );
        assert!(list_price("my-local-llama").is_none());
    }

    #[test]
    fn cost_is_per_million() {
        let price = Price {
            input_per_million: 3.0,
            output_per_million: 15.0,
        };
        let cost = cost(&price, &Usage::new(1_000, 2_000));
        assert!((cost - 0.033).abs() < 1e-12, "{cost}");
    }
}
