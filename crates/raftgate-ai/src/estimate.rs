//! What a request may consume at most, estimated before the call so that budgets and token
//! limits can reserve it (see [`Gateway::reservation`](crate::Gateway::reservation)).
//!
//! A reservation that is smaller than what the provider then bills lets concurrent requests
//! overspend a budget by the difference, so every part of a request that is billed is
//! counted: the text (see [`crate::tokens`]), each image by its provider's documented rule,
//! every one of the `n` choices at the output limit, and embeddings by their real input. An
//! image's rule needs its size: a `data:` URL's header is read for it (PNG, JPEG, GIF, WebP;
//! only a bounded prefix of each image, and of all the images of a request together, is
//! decoded); an image of unknown size (a remote URL, an unreadable header) counts as the most
//! its provider can bill for one image.

use base64::Engine;

use crate::openai::{ChatRequest, Content, ContentPart, EmbeddingInput, EmbeddingsRequest};
use crate::providers::ProviderKind;
use crate::tokens;

/// Most bytes decoded to find one image's size (a JPEG's size follows its metadata segments).
const HEADER_BYTES: usize = 64 * 1024;
/// Most bytes decoded for the sizes of all the images of one request; later images count at
/// their bound, so a request of many crafted images cannot make the estimate expensive.
const REQUEST_HEADER_BYTES: usize = 1024 * 1024;

/// An image part: its size in pixels when known, and the detail asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Image {
    size: Option<(u64, u64)>,
    low_detail: bool,
}

/// The billed input of a chat request, read once and counted for each deployment's provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    text: u64,
    images: Vec<Image>,
}

impl Prompt {
    /// Reads `req`'s text estimate and its images' sizes.
    pub fn of(req: &ChatRequest) -> Prompt {
        let mut budget = REQUEST_HEADER_BYTES;
        let images = req
            .messages
            .iter()
            .filter_map(|m| match &m.content {
                Some(Content::Parts(parts)) => Some(parts),
                _ => None,
            })
            .flatten()
            .filter_map(|part| match part {
                ContentPart::ImageUrl { image_url } => Some(Image {
                    size: image_size(&image_url.url, &mut budget),
                    low_detail: image_url.detail.as_deref() == Some("low"),
                }),
                ContentPart::Text { .. } => None,
            })
            .collect();
        Prompt {
            text: tokens::count_request(req),
            images,
        }
    }

    /// The input tokens a deployment of `kind` serving `model` would bill.
    pub fn tokens(&self, kind: ProviderKind, model: &str) -> u64 {
        let images: u64 = self
            .images
            .iter()
            .map(|image| image_tokens(kind, model, *image))
            .sum();
        self.text + images
    }
}

/// The most output a chat request may produce: each of its `n` choices at the output limit
/// (Anthropic's default when the client set none).
pub fn output_tokens(req: &ChatRequest) -> u64 {
    let limit = req
        .output_limit()
        .unwrap_or(crate::providers::anthropic::DEFAULT_MAX_TOKENS);
    u64::from(req.n.unwrap_or(1).max(1)) * u64::from(limit)
}

/// The input tokens of an embeddings request: its texts' estimate, or one a token id.
pub fn embedding_tokens(req: &EmbeddingsRequest) -> u64 {
    match &req.input {
        EmbeddingInput::One(text) => tokens::count_text(text),
        EmbeddingInput::Many(texts) => texts.iter().map(|t| tokens::count_text(t)).sum(),
        EmbeddingInput::Tokens(ids) => ids.len() as u64,
        EmbeddingInput::TokenLists(lists) => lists.iter().map(|ids| ids.len() as u64).sum(),
    }
}

/// The size of a `data:` URL's image from its header, decoding at most `budget` bytes of it
/// (taken from the request's budget); `None` when unknown.
fn image_size(url: &str, budget: &mut usize) -> Option<(u64, u64)> {
    let data = url.strip_prefix("data:")?.split_once(";base64,")?.1;
    // Whole groups of four characters decode on their own.
    let wanted = HEADER_BYTES.min(*budget);
    let chars = (wanted.div_ceil(3) * 4).min(data.len() / 4 * 4);
    let head = base64::engine::general_purpose::STANDARD
        .decode(&data.as_bytes()[..chars])
        .ok()?;
    *budget = budget.saturating_sub(head.len());
    let size = imagesize::blob_size(&head).ok()?;
    Some((size.width as u64, size.height as u64))
}

/// OpenAI's tiles: a low-detail image costs `base`; in high detail (and `auto`) the image is
/// scaled into 2048 × 2048 px, then its short side down to 768 px, and each 512 px tile costs
/// `tile` more. That is at most 8 tiles.
fn openai_tiles(base: u64, tile: u64, image: Image) -> u64 {
    if image.low_detail {
        return base;
    }
    let tiles = match image.size {
        None => 8,
        Some((w, h)) => {
            let (mut w, mut h) = (w.max(1) as f64, h.max(1) as f64);
            let fit = (2048.0 / w.max(h)).min(1.0);
            (w, h) = (w * fit, h * fit);
            let short = (768.0 / w.min(h)).min(1.0);
            (w, h) = ((w * short).ceil(), (h * short).ceil());
            ((w / 512.0).ceil() * (h / 512.0).ceil()) as u64
        }
    };
    base + tile * tiles
}

/// OpenAI's patch models: one token a 32 px patch, at most 1,536 patches (the image is scaled
/// down to fit), times the model's multiplier.
fn openai_patches(multiplier: f64, image: Image) -> u64 {
    let patches = image
        .size
        .map_or(1536, |(w, h)| (w.div_ceil(32) * h.div_ceil(32)).min(1536));
    (patches as f64 * multiplier).ceil() as u64
}

/// How an OpenAI model counts an image, by its name's longest known prefix (dated versions
/// and Azure deployments named after the model find their family; others use the tiles of
/// GPT-4o).
fn openai_image(model: &str, image: Image) -> u64 {
    // gpt-4o-mini bills an image 33 times as many tokens, for the same price as gpt-4o.
    const RULES: &[(&str, Option<f64>)] = &[
        ("gpt-4o-mini", None),
        ("gpt-4.1-mini", Some(1.62)),
        ("gpt-4.1-nano", Some(2.46)),
        ("o4-mini", Some(1.72)),
    ];
    let rule = RULES
        .iter()
        .filter(|(name, _)| model.starts_with(name))
        .max_by_key(|(name, _)| name.len());
    match rule {
        Some((_, Some(multiplier))) => openai_patches(*multiplier, image),
        Some((_, None)) => openai_tiles(2833, 5667, image),
        None => openai_tiles(85, 170, image),
    }
}

/// Anthropic: about width × height / 750 tokens, for an image scaled into 1568 px and
/// 1.15 megapixels, which is at most about 1,600.
fn anthropic_image(image: Image) -> u64 {
    const MOST: u64 = 1600;
    image
        .size
        .map_or(MOST, |(w, h)| (w * h).div_ceil(750).min(MOST))
}

/// Gemini: 258 tokens for an image up to 384 px a side, else 258 for each 768 × 768 px tile;
/// an image of unknown size counts as 3072 × 3072 px (16 tiles).
fn gemini_image(image: Image) -> u64 {
    match image.size {
        Some((w, h)) if w <= 384 && h <= 384 => 258,
        Some((w, h)) => 258 * w.div_ceil(768) * h.div_ceil(768),
        None => 258 * 16,
    }
}

/// Cohere: about 1,610 tokens for each 512 × 512 px tile (Cohere documents a 512 × 512 image
/// at about 1,610 tokens), of the image scaled into 2048 px (at most 16 tiles).
fn cohere_image(image: Image) -> u64 {
    let tiles = image.size.map_or(16, |(w, h)| {
        let fit = (2048.0 / w.max(h).max(1) as f64).min(1.0);
        let tiles = |side: u64| ((side as f64 * fit) / 512.0).ceil().max(1.0) as u64;
        tiles(w) * tiles(h)
    });
    1610 * tiles
}

/// The input tokens of one image on a provider of `kind` serving `model`.
fn image_tokens(kind: ProviderKind, model: &str, image: Image) -> u64 {
    match kind {
        ProviderKind::Openai | ProviderKind::Azure => openai_image(model, image),
        ProviderKind::Anthropic => anthropic_image(image),
        ProviderKind::Gemini => gemini_image(image),
        ProviderKind::Cohere => cohere_image(image),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(w: u64, h: u64) -> Image {
        Image {
            size: Some((w, h)),
            low_detail: false,
        }
    }

    #[test]
    fn openai_examples_from_its_documentation() {
        assert_eq!(openai_image("gpt-4o", image(1024, 1024)), 765);
        assert_eq!(openai_image("gpt-4o-2024-08-06", image(2048, 4096)), 1105);
        let low = Image {
            low_detail: true,
            ..image(4096, 8192)
        };
        assert_eq!(openai_image("gpt-4o", low), 85);
        // The most an image can cost: 8 tiles.
        assert_eq!(openai_image("gpt-4o", image(2048, 768)), 85 + 8 * 170);
        assert_eq!(openai_image("gpt-4.1-mini", image(1024, 1024)), 1659);
        assert_eq!(openai_image("gpt-4.1-nano", image(10_000, 10_000)), 3779);
    }

    #[test]
    fn jpeg_sizes_are_read_past_their_metadata() {
        // SOI, an APP1 segment of 1,000 bytes, then SOF0 with 600 × 400.
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE1, 0x03, 0xE8];
        jpeg.extend(std::iter::repeat_n(0u8, 998));
        jpeg.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x11, 0x08, 0x01, 0x90, 0x02, 0x58]);
        jpeg.extend(std::iter::repeat_n(0u8, 20));
        let url = format!(
            "data:image/jpeg;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(&jpeg)
        );
        let mut budget = REQUEST_HEADER_BYTES;
        assert_eq!(image_size(&url, &mut budget), Some((600, 400)));
        assert!(budget < REQUEST_HEADER_BYTES);
        // Once the request's budget is spent, sizes are unknown.
        let mut spent = 0;
        assert_eq!(image_size(&url, &mut spent), None);
        assert_eq!(image_size("https://example.com/a.jpg", &mut budget), None);
    }
}
