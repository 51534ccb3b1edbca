//! Exact-match response cache of complete chat answers, opt-in per model alias
//! ([`CacheConfig`]).
//!
//! Each cached alias has its own in-memory cache on each node (a `moka` cache, which enforces
//! the TTL and the size cap and evicts the least useful entries first). An entry is keyed by
//! the SHA-256 of the request in canonical form: the request as JSON with every object's keys
//! sorted, whatever order and spacing the client sent, without the fields that do not change
//! the answer (`stream`, `stream_options`, `user`). The alias is part of the request, the
//! caller's credentials are not: two consumers asking the same thing share the answer.
//! Streams bypass the cache. A configuration change of an alias's cache, of its deployments or
//! of a provider they use (its URL, credential, kind, ...) starts the alias's cache afresh, so
//! no answer outlives the credentials or the endpoint it was fetched with; other changes keep
//! it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use moka::sync::Cache;
use raftgate_model::ai::{CacheConfig, Deployment, ProviderConfig};
use serde_json::Value;

use crate::config::GatewayConfig;
use crate::openai::{ChatRequest, ChatResponse};

/// Entries per node when the configuration gives no limit.
pub const DEFAULT_MAX_ENTRIES: u64 = 1000;

/// Top-level request fields that do not change the answer.
const IGNORED: [&str; 3] = ["stream", "stream_options", "user"];

/// SHA-256 of a canonical request.
pub type Key = [u8; 32];

/// A cached answer and its weight in bytes (0 when the cache counts entries).
struct Entry {
    response: ChatResponse,
    bytes: u32,
}

/// What an alias's cached answers were fetched with: its deployments and their providers (the
/// configuration of each, in the deployments' order; `None` for one that is missing).
#[derive(PartialEq)]
struct Source {
    deployments: Vec<Deployment>,
    providers: Vec<Option<ProviderConfig>>,
}

/// The cache of one alias, with what it was built from.
struct AliasCache {
    config: CacheConfig,
    source: Source,
    entries: Cache<Key, Arc<Entry>>,
}

impl AliasCache {
    fn new(config: CacheConfig, source: Source) -> AliasCache {
        let builder = Cache::builder().time_to_live(Duration::from_secs(config.ttl_s));
        let entries = match config.max_bytes {
            Some(bytes) => builder
                .max_capacity(bytes)
                .weigher(|_: &Key, e: &Arc<Entry>| e.bytes.max(1))
                .build(),
            None => builder
                .max_capacity(config.max_entries.unwrap_or(DEFAULT_MAX_ENTRIES))
                .build(),
        };
        AliasCache {
            config,
            source,
            entries,
        }
    }
}

/// The response caches of every cached alias, swapped as a whole on configuration changes.
#[derive(Default)]
pub struct ResponseCache {
    aliases: ArcSwap<HashMap<String, Arc<AliasCache>>>,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("aliases", &self.aliases.load().len())
            .finish()
    }
}

impl ResponseCache {
    /// Caches for the aliases of `config` that have a cache; an alias whose cache settings,
    /// deployments and their providers did not change keeps its entries.
    pub fn update(&self, config: &GatewayConfig) {
        let previous = self.aliases.load();
        let mut aliases = HashMap::new();
        for (alias, model) in &config.models {
            let Some(settings) = model.cache else {
                continue;
            };
            let source = Source {
                deployments: model.deployments.clone(),
                providers: model
                    .deployments
                    .iter()
                    .map(|d| config.providers.get(&d.provider).cloned())
                    .collect(),
            };
            let kept = previous
                .get(alias)
                .filter(|c| c.config == settings && c.source == source);
            let cache = match kept {
                Some(cache) => Arc::clone(cache),
                None => Arc::new(AliasCache::new(settings, source)),
            };
            aliases.insert(alias.clone(), cache);
        }
        self.aliases.store(Arc::new(aliases));
    }

    /// Where `req`'s answer is cached, if its alias has a cache and `req` is not a stream.
    pub fn lookup(&self, req: &ChatRequest) -> Option<Lookup> {
        if req.is_stream() {
            return None;
        }
        let cache = self.aliases.load().get(&req.model).cloned()?;
        Some(Lookup {
            cache,
            key: key(req)?,
        })
    }
}

/// One request's place in its alias's cache.
pub struct Lookup {
    cache: Arc<AliasCache>,
    key: Key,
}

impl Lookup {
    /// The cached answer, if there is one that has not expired.
    pub fn get(&self) -> Option<ChatResponse> {
        self.cache
            .entries
            .get(&self.key)
            .map(|e| e.response.clone())
    }

    /// Keeps `response` as the answer to this request.
    pub fn store(self, response: &ChatResponse) {
        let bytes = match self.cache.config.max_bytes {
            Some(_) => serde_json::to_vec(response)
                .map_or(u32::MAX, |b| u32::try_from(b.len()).unwrap_or(u32::MAX)),
            None => 0,
        };
        let entry = Entry {
            response: response.clone(),
            bytes,
        };
        self.cache.entries.insert(self.key, Arc::new(entry));
    }
}

/// The cache key of a request: SHA-256 of its canonical JSON (see the module documentation).
/// `None` for a request that cannot be written as JSON.
pub fn key(req: &ChatRequest) -> Option<Key> {
    let mut value = serde_json::to_value(req).ok()?;
    if let Value::Object(map) = &mut value {
        for field in IGNORED {
            map.remove(field);
        }
    }
    let mut canonical = Vec::with_capacity(256);
    write_canonical(&value, &mut canonical);
    let digest = ring::digest::digest(&ring::digest::SHA256, &canonical);
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    Some(key)
}

/// Writes `value` as compact JSON with every object's keys in sorted order, so that equal
/// values give equal bytes whatever the JSON map's own ordering.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut fields: Vec<(&String, &Value)> = map.iter().collect();
            fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (name, field)) in fields.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(name.clone()), out);
                out.push(b':');
                write_canonical(field, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Writing a JSON scalar into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgate_model::ai::ModelConfig;
    use std::collections::BTreeMap;

    fn request(json: &str) -> ChatRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn key_ignores_order_spacing_and_transport_fields() {
        let a = request(
            r#"{"model":"m","temperature":0.2,"messages":[{"role":"user","content":"hi"}],
                "response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"b":1,"a":2}}}}"#,
        );
        let b = request(
            r#"{ "messages" : [ { "content" : "hi", "role" : "user" } ], "user": "alice",
                 "response_format": {"json_schema": {"schema": {"a": 2, "b": 1}, "name": "x"}, "type": "json_schema"},
                 "stream": false, "temperature": 0.20, "model": "m" }"#,
        );
        assert_eq!(key(&a), key(&b));
        assert!(key(&a).is_some());
        let hotter = request(
            r#"{"model":"m","temperature":0.3,"messages":[{"role":"user","content":"hi"}],
                "response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"b":1,"a":2}}}}"#,
        );
        assert_ne!(key(&a), key(&hotter), "temperature changes the answer");
        let other_model = ChatRequest {
            model: "n".into(),
            ..a.clone()
        };
        assert_ne!(key(&a), key(&other_model), "the alias is part of the key");
        let seeded = request(
            r#"{"model":"m","temperature":0.2,"seed":7,"messages":[{"role":"user","content":"hi"}],
                "response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"b":1,"a":2}}}}"#,
        );
        assert_ne!(key(&a), key(&seeded), "fields passed on to providers count");
    }

    fn response(text: &str) -> ChatResponse {
        serde_json::from_value(serde_json::json!({
            "id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}]
        }))
        .unwrap()
    }

    fn models(cache: Option<CacheConfig>) -> GatewayConfig {
        let model: ModelConfig = serde_json::from_value(serde_json::json!({
            "deployments": [{"provider": "p", "model": "x"}]
        }))
        .unwrap();
        GatewayConfig {
            models: BTreeMap::from([("m".to_string(), ModelConfig { cache, ..model })]),
            ..GatewayConfig::default()
        }
    }

    #[test]
    fn only_cached_aliases_and_complete_requests_are_looked_up() {
        let cache = ResponseCache::default();
        let req = request(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        cache.update(&models(None));
        assert!(cache.lookup(&req).is_none(), "no cache configured");
        let config = CacheConfig {
            ttl_s: 60,
            max_entries: Some(10),
            max_bytes: None,
        };
        cache.update(&models(Some(config)));
        let lookup = cache.lookup(&req).unwrap();
        assert!(lookup.get().is_none());
        lookup.store(&response("hello"));
        let hit = cache.lookup(&req).unwrap().get().unwrap();
        assert_eq!(hit.choices[0].message.content.as_deref(), Some("hello"));
        let stream = ChatRequest {
            stream: Some(true),
            ..req.clone()
        };
        assert!(cache.lookup(&stream).is_none(), "streams bypass");

        // The same settings keep the entries; other settings start afresh.
        cache.update(&models(Some(config)));
        assert!(cache.lookup(&req).unwrap().get().is_some());
        cache.update(&models(Some(CacheConfig {
            ttl_s: 30,
            ..config
        })));
        assert!(cache.lookup(&req).unwrap().get().is_none());
    }

    #[test]
    fn a_byte_cap_evicts() {
        let cache = ResponseCache::default();
        cache.update(&models(Some(CacheConfig {
            ttl_s: 60,
            max_entries: None,
            max_bytes: Some(1_000),
        })));
        for i in 0..50 {
            let req = request(&format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"q{i}"}}]}}"#
            ));
            cache
                .lookup(&req)
                .unwrap()
                .store(&response(&"x".repeat(100)));
        }
        let aliases = cache.aliases.load();
        let entries = &aliases["m"].entries;
        entries.run_pending_tasks();
        assert!(
            entries.weighted_size() <= 1_000 && entries.entry_count() < 50,
            "{} bytes in {} entries",
            entries.weighted_size(),
            entries.entry_count()
        );
    }
}
