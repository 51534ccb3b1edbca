//! Request parsing with errors that name the field at fault, shared by all handlers.

use axum::body::Bytes;
use axum::extract::Query;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

use crate::{ApiError, MAX_BODY};

/// `?consistent=true` asks for a linearizable read.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    #[serde(default)]
    pub consistent: bool,
}

/// Parses the read query, turning axum's plain-text rejection into a JSON error.
pub fn read_query(q: Result<Query<ReadQuery>, QueryRejection>) -> Result<ReadQuery, ApiError> {
    q.map(|Query(q)| q).map_err(|e| ApiError::BadRequest {
        field: Some("consistent".into()),
        message: format!(
            "bad query string: {}; use ?consistent=true or false",
            e.body_text()
        ),
    })
}

/// The request body, or 413 beyond [`MAX_BODY`] (400 when it could not be read).
pub fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(MAX_BODY)
        } else {
            ApiError::BadRequest {
                field: None,
                message: format!("cannot read request body: {}", e.body_text()),
            }
        }
    })
}

/// Parses a JSON body into `T`; errors name the JSON path of the bad field.
pub fn json_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body_bytes(body)?;
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let parsed: T = serde_path_to_error::deserialize(Strict(&mut de)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        // serde reports unknown and missing fields at the enclosing object; name the field itself.
        let named = ["unknown field `", "missing field `"]
            .iter()
            .find_map(|p| message.strip_prefix(p))
            .and_then(|rest| rest.split('`').next());
        // serde_path_to_error writes "." for the root and "?" where it could not tell.
        let path = if path == "?" { ".".to_string() } else { path };
        let field = match (named, path.as_str()) {
            (Some(f), ".") => Some(f.to_string()),
            // An unknown field's path already ends with it; a missing one's stops at its parent.
            (Some(f), p) if p == f || p.ends_with(&format!(".{f}")) => Some(p.to_string()),
            (Some(f), p) => Some(format!("{p}.{f}")),
            (None, ".") => None,
            (None, p) => Some(p.to_string()),
        };
        ApiError::BadRequest {
            field,
            message: format!("invalid JSON body: {message}"),
        }
    })?;
    de.end().map_err(|e| ApiError::BadRequest {
        field: None,
        message: format!("invalid JSON body: {e}"),
    })?;
    Ok(parsed)
}

/// Longest version `If-Match` may carry, in digits (what fits a JSON Schema `int64`).
const MAX_VERSION_DIGITS: usize = 18;

/// A deserializer that reads every struct from a JSON object only. serde's derived structs also
/// take a JSON array of their fields in order (serde issue #1587): a form the OpenAPI document
/// does not state and no client means (`"ai_limits": [null, null]` was stored as defaults).
/// Wrapped around serde_json's deserializer, it asks for a map wherever a struct is expected,
/// at every depth, so such an array is refused with the usual 400 naming the field.
struct Strict<T>(T);

/// Forwards `deserialize_*` methods that take only a visitor, wrapping the visitor.
macro_rules! forward_deserialize {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            self.0.$method(Strict(visitor))
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Strict<D> {
    type Error = D::Error;

    forward_deserialize! {
        deserialize_any deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32
        deserialize_i64 deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32
        deserialize_u64 deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char
        deserialize_str deserialize_string deserialize_bytes deserialize_byte_buf
        deserialize_option deserialize_unit deserialize_seq deserialize_map
        deserialize_identifier deserialize_ignored_any
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_unit_struct(name, Strict(visitor))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_newtype_struct(name, Strict(visitor))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_tuple(len, Strict(visitor))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_tuple_struct(name, len, Strict(visitor))
    }

    /// The point of the wrapper: a struct is read as a map, never as a sequence.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_map(Strict(visitor))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_enum(name, variants, Strict(visitor))
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// Forwards `visit_*` methods of plain values.
macro_rules! forward_visit {
    ($($method:ident($ty:ty))*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.0.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Strict<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        self.0.expecting(f)
    }

    forward_visit! {
        visit_bool(bool) visit_i8(i8) visit_i16(i16) visit_i32(i32) visit_i64(i64)
        visit_i128(i128) visit_u8(u8) visit_u16(u16) visit_u32(u32) visit_u64(u64)
        visit_u128(u128) visit_f32(f32) visit_f64(f64) visit_char(char) visit_str(&str)
        visit_borrowed_str(&'de str) visit_string(String) visit_bytes(&[u8])
        visit_borrowed_bytes(&'de [u8]) visit_byte_buf(Vec<u8>)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.0.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.0.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.visit_some(Strict(d))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.visit_newtype_struct(Strict(d))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.0.visit_seq(Strict(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.visit_map(Strict(map))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.0.visit_enum(Strict(data))
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Strict<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(Strict(d))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Strict<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.0.next_element_seed(Strict(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Strict<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        self.0.next_key_seed(Strict(seed))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        self.0.next_value_seed(Strict(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for Strict<A> {
    type Error = A::Error;
    type Variant = Strict<A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), Self::Error> {
        let (value, variant) = self.0.variant_seed(Strict(seed))?;
        Ok((value, Strict(variant)))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Strict<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), Self::Error> {
        self.0.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        self.0.newtype_variant_seed(Strict(seed))
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.tuple_variant(len, Strict(visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.struct_variant(fields, Strict(visitor))
    }
}

/// Reads `If-Match: <version>`, bare or as an entity tag (`"42"`, `W/"42"`), exactly as the
/// OpenAPI document's pattern says (`openapi::IF_MATCH_PATTERN`); `None` when absent.
pub fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(|v| v.strip_prefix("W/").unwrap_or(v))
        .map(|v| {
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v)
        })
        .filter(|v| {
            (1..=MAX_VERSION_DIGITS).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit())
        })
        .and_then(|v| v.parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| ApiError::BadRequest {
            field: Some("If-Match".into()),
            message:
                "If-Match must be a resource version, e.g. If-Match: \"42\" (0: must not exist yet)"
                    .into(),
        })
}

/// Answer for paths that do not exist.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint; see /openapi.json".into())
}

/// Answer for methods a path does not support.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgate_model::ServiceSpec;

    fn field_of(body: &str) -> Option<String> {
        match json_body::<ServiceSpec>(Ok(Bytes::from(body.to_string()))) {
            Err(ApiError::BadRequest { field, .. }) => field,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            field_of(r#"{"targets":[],"colour":"red"}"#).as_deref(),
            Some("colour")
        );
        assert_eq!(
            field_of(r#"{"targets":[{"url":"http://a:1","weight":-1}]}"#).as_deref(),
            Some("targets[0].weight")
        );
        assert_eq!(
            field_of(r#"{"targets":[{"url":"http://a:1","wait":1}]}"#).as_deref(),
            Some("targets[0].wait")
        );
        assert_eq!(
            field_of(r#"{"targets":[{"weight":1}]}"#).as_deref(),
            Some("targets[0].url")
        );
        assert_eq!(field_of("{not json").as_deref(), None);
        // Structs are objects, never arrays of their fields, at any depth.
        assert_eq!(field_of("[]").as_deref(), None);
        assert_eq!(
            field_of(r#"{"targets":[["http://a:1",1]]}"#).as_deref(),
            Some("targets[0]")
        );
        assert_eq!(
            field_of(r#"{"timeouts":[1000,1000,0]}"#).as_deref(),
            Some("timeouts")
        );
        assert_eq!(field_of(r#"{"targets":[]} trailing"#).as_deref(), None);
    }
}
