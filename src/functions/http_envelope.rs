//! The HTTP path's reading of a payload-mode envelope: `Data.<binding>` straight from the body
//! in one serde pass, without a `serde_json::Value` tree of the whole envelope.
//!
//! Every HTTP invocation pays for this, and most of an envelope is what the HTTP path never
//! reads: `Metadata` (the query and headers again, double-encoded route values, `sys`) and
//! `Data.req.Identities`. Those are walked but not kept; the six members of `Data.req` that
//! [`HttpRequestData`] holds are deserialised into small lenient types and checked afterwards
//! with the same rules, in the same order, as [`Envelope::parse`] followed by
//! [`HttpRequestData::from_envelope`], so both give the same value or the same error
//! (`tests::the_one_pass_reader_agrees_with_the_tree_reader` holds them to it).
//!
//! Lenient means: every shape of JSON is accepted while reading, and a wrong type becomes a
//! marker that the checks turn into the [`EnvelopeError`] the tree reader would give. The only
//! errors during the pass are syntax errors, which are the same as the tree reader's because
//! both go through `deserialize_any` on the same input. Where the tree reader would see one
//! member of several that differ only in case (a `BTreeMap`: an exact name first, else the
//! smallest matching key; the last duplicate of a key wins), [`Pick`] keeps the same one.
//!
//! [`Envelope::parse`]: super::envelope::Envelope::parse

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::envelope::{EnvelopeError, HttpRequestData, request_body};

/// The `visit_*` methods for the JSON values a lenient type reads as "something else": the
/// value is consumed and `$other` returned.
macro_rules! other_scalars {
    ($other:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($other)
        }
    };
}

/// Reads the HTTP trigger binding `name` from a payload-mode request body: what
/// `Envelope::parse(body)` then `HttpRequestData::from_envelope(&env, name)` give, in one pass.
pub fn parse_http_request(
    body: &[u8],
    name: &'static str,
) -> Result<HttpRequestData, EnvelopeError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let top = TopSeed { name }
        .deserialize(&mut de)
        .and_then(|top| de.end().map(|()| top))
        .map_err(|e| EnvelopeError::NotAnEnvelope(format!("invalid JSON ({e})")))?;
    let not_object = || EnvelopeError::NotAnEnvelope("expected a JSON object".into());
    let Top::Members(mut members) = top else {
        return Err(not_object());
    };
    if members.is_empty() {
        return Err(EnvelopeError::NotAnEnvelope(
            "expected the members `Data` and `Metadata`".into(),
        ));
    }
    // In key order, as the tree reader walks its map: every member must be well formed, and the
    // last `Data` in that order is the one read.
    members.sort_by(|a, b| a.0.cmp(&b.0));
    let mut binding = None;
    for (_, member) in members {
        match member {
            Member::Data(data) => {
                binding = match data {
                    DataValue::Object(b) => b,
                    DataValue::Null => None,
                    DataValue::Text(s) => match decode_str(DataSeed { name }, &s) {
                        Some(DataValue::Object(b)) => b,
                        _ => return Err(not_object()),
                    },
                    DataValue::Other => return Err(not_object()),
                };
            }
            Member::Metadata(MetaValue::Ok) => {}
            Member::Metadata(MetaValue::Text(s)) => {
                if !matches!(serde_json::from_str::<IsObject>(&s), Ok(IsObject(true))) {
                    return Err(not_object());
                }
            }
            Member::Metadata(MetaValue::Other) => return Err(not_object()),
        }
    }
    binding
        .ok_or(EnvelopeError::MissingBinding(name))?
        .into_request(name)
}

/// A member serialised into a JSON string, read with `seed`; `None` when the string is not
/// one JSON document.
fn decode_str<'a, T: DeserializeSeed<'a>>(seed: T, s: &'a str) -> Option<T::Value> {
    let mut de = serde_json::Deserializer::from_str(s);
    let value = seed.deserialize(&mut de).ok()?;
    de.end().ok().map(|()| value)
}

impl HttpRequestData {
    /// Reads the HTTP trigger binding `name` straight from a request body ([`parse_http_request`]):
    /// the HTTP routes use this instead of building the whole envelope's `Value` tree.
    pub fn parse_envelope(body: &[u8], name: &'static str) -> Result<Self, EnvelopeError> {
        parse_http_request(body, name)
    }
}

/// The binding's value as it came: an object (read), a string (an object serialised into a
/// string, decoded later), or anything else (malformed).
#[derive(Debug)]
pub(super) enum ReqValue {
    Fields(Box<ReqFields>),
    Text(String),
    Other,
}

impl ReqValue {
    /// The request, or the error the tree reader gives for this binding.
    pub(super) fn into_request(self, name: &'static str) -> Result<HttpRequestData, EnvelopeError> {
        let fields = match self {
            ReqValue::Fields(f) => f,
            ReqValue::Text(s) => match serde_json::from_str::<ReqValue>(&s) {
                Ok(ReqValue::Fields(f)) => f,
                _ => return Err(malformed(name, "expected an object")),
            },
            ReqValue::Other => return Err(malformed(name, "expected an object")),
        };
        fields.finish(name)
    }
}

fn malformed(binding: &'static str, reason: &str) -> EnvelopeError {
    EnvelopeError::MalformedBinding {
        binding,
        reason: reason.to_string(),
    }
}

impl<'de> Deserialize<'de> for ReqValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ReqValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ReqValue, A::Error> {
                ReqFields::from_map(map).map(|f| ReqValue::Fields(Box::new(f)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ReqValue, E> {
                Ok(ReqValue::Text(s.to_owned()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<ReqValue, E> {
                Ok(ReqValue::Text(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<ReqValue, A::Error> {
                skip_seq(seq).map(|()| ReqValue::Other)
            }
            other_scalars!(ReqValue::Other);
        }
        d.deserialize_any(V)
    }
}

/// The members of `Data.req` that [`HttpRequestData`] holds, each as it came.
#[derive(Debug, Default)]
pub(super) struct ReqFields {
    url: Option<Scalar>,
    method: Option<Scalar>,
    query: Option<QueryValue>,
    headers: Option<HeadersValue>,
    params: Option<ParamsValue>,
    body: Option<Value>,
}

const URL: usize = 0;
const METHOD: usize = 1;
const QUERY: usize = 2;
const HEADERS: usize = 3;
const PARAMS: usize = 4;
const BODY: usize = 5;
const FIELDS: [&str; 6] = ["Url", "Method", "Query", "Headers", "Params", "Body"];

impl ReqFields {
    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut url = Pick::default();
        let mut method = Pick::default();
        let mut query = Pick::default();
        let mut headers = Pick::default();
        let mut params = Pick::default();
        let mut body = Pick::default();
        while let Some(Key(key)) = map.next_key::<Key>()? {
            let Some(field) = FIELDS.iter().position(|f| key.eq_ignore_ascii_case(f)) else {
                map.next_value::<Skip>()?;
                continue;
            };
            let exact = key == FIELDS[field];
            match field {
                URL => url.offer(key, exact, map.next_value()?),
                METHOD => method.offer(key, exact, map.next_value()?),
                QUERY => query.offer(key, exact, map.next_value()?),
                HEADERS => headers.offer(key, exact, map.next_value()?),
                PARAMS => params.offer(key, exact, map.next_value()?),
                BODY => body.offer(key, exact, map.next_value()?),
                _ => unreachable!("FIELDS has six names"),
            }
        }
        Ok(Self {
            url: url.into_value(),
            method: method.into_value(),
            query: query.into_value(),
            headers: headers.into_value(),
            params: params.into_value(),
            body: body.into_value(),
        })
    }

    /// The request, checked in the tree reader's order: `Url`, `Method`, `Query`, `Headers`,
    /// `Params`, `Body`.
    fn finish(self, name: &'static str) -> Result<HttpRequestData, EnvelopeError> {
        let bad = |reason: &str| malformed(name, reason);
        let url = match self.url {
            Some(Scalar::Str(s)) => s,
            None | Some(Scalar::Null) => String::new(),
            _ => return Err(bad("`Url` must be a string")),
        };
        let method = match self.method {
            Some(Scalar::Str(s)) if !s.is_empty() => {
                let mut s = s;
                s.make_ascii_uppercase();
                s
            }
            None | Some(Scalar::Null) => "GET".to_string(),
            _ => return Err(bad("`Method` must be a string")),
        };
        let query_map = match self.query {
            None | Some(QueryValue::Null) => None,
            Some(QueryValue::Object(q)) => Some(q),
            // An object serialised into a string is read as the object; a string that is not
            // JSON stays a string (not an object).
            Some(QueryValue::Text(s)) => match serde_json::from_str::<QueryValue>(&s) {
                Ok(QueryValue::Object(q)) => Some(q),
                Ok(QueryValue::Null) => None,
                _ => return Err(bad("`Query` must be an object")),
            },
            Some(QueryValue::Other) => return Err(bad("`Query` must be an object")),
        };
        let mut query = BTreeMap::new();
        for (k, v) in query_map.unwrap_or_default() {
            let v = v
                .into_string()
                .ok_or_else(|| bad("`Query` values must be strings"))?;
            query.insert(k, v);
        }
        let mut headers = Vec::new();
        match self.headers {
            None | Some(HeadersValue::Null) => {}
            Some(HeadersValue::Object(h)) => {
                for (mut k, v) in h {
                    let values = match v {
                        HeaderValue::Many(items) => items,
                        HeaderValue::One(item) => vec![item],
                    };
                    let n = values.len();
                    for (i, item) in values.into_iter().enumerate() {
                        let item = item
                            .into_string()
                            .ok_or_else(|| bad("`Headers` values must be strings"))?;
                        // The name once per value, moved on the last one.
                        let key = if i + 1 == n {
                            std::mem::take(&mut k)
                        } else {
                            k.clone()
                        };
                        headers.push((key, item));
                    }
                }
            }
            Some(HeadersValue::Other) => return Err(bad("`Headers` must be an object")),
        }
        let mut params = BTreeMap::new();
        match self.params {
            None | Some(ParamsValue::Null) => {}
            Some(ParamsValue::Object(p)) => {
                for (k, v) in p {
                    if matches!(v, Scalar::Null) {
                        continue;
                    }
                    let v = v
                        .into_string()
                        .ok_or_else(|| bad("`Params` values must be strings"))?;
                    params.insert(k, v);
                }
            }
            Some(ParamsValue::Other) => return Err(bad("`Params` must be an object")),
        }
        let body = request_body(self.body, &headers).map_err(bad)?;
        Ok(HttpRequestData {
            url,
            method,
            query,
            headers,
            params,
            body,
        })
    }
}

/// Of several members whose names differ only in case, the one a `BTreeMap` lookup finds:
/// the exact name if present, else the smallest key; a repeated key keeps its last value.
struct Pick<'de, T> {
    exact: Option<T>,
    folded: Option<(Cow<'de, str>, T)>,
}

impl<T> Default for Pick<'_, T> {
    fn default() -> Self {
        Self {
            exact: None,
            folded: None,
        }
    }
}

impl<'de, T> Pick<'de, T> {
    fn offer(&mut self, key: Cow<'de, str>, exact: bool, value: T) {
        if exact {
            self.exact = Some(value);
            return;
        }
        match &self.folded {
            Some((k, _)) if key > *k => {}
            _ => self.folded = Some((key, value)),
        }
    }

    fn into_value(self) -> Option<T> {
        self.exact.or(self.folded.map(|(_, v)| v))
    }
}

/// A map key, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A value consumed without keeping it. Unlike `IgnoredAny` it goes through `deserialize_any`,
/// so strings are checked (UTF-8, escapes) exactly as the tree reader checks them.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Skip;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Skip, A::Error> {
                skip_map(map).map(|()| Skip)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Skip, A::Error> {
                skip_seq(seq).map(|()| Skip)
            }
            other_scalars!(Skip);
        }
        d.deserialize_any(V)
    }
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<Skip, Skip>()?.is_some() {}
    Ok(())
}

fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<Skip>()?.is_some() {}
    Ok(())
}

/// Whether a JSON document is an object (a string-encoded `Metadata` must be one).
struct IsObject(bool);

impl<'de> Deserialize<'de> for IsObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IsObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<IsObject, A::Error> {
                skip_map(map).map(|()| IsObject(true))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<IsObject, E> {
                Ok(IsObject(false))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<IsObject, A::Error> {
                skip_seq(seq).map(|()| IsObject(false))
            }
            other_scalars!(IsObject(false));
        }
        d.deserialize_any(V)
    }
}

/// A value where a string is expected: strings, numbers and booleans have a text form (as
/// the tree reader's `scalar_to_string` gives it), null is empty, arrays and objects have none.
#[derive(Debug)]
enum Scalar {
    Str(String),
    /// A number or boolean, as text.
    Text(String),
    Null,
    Compound,
}

impl Scalar {
    fn into_string(self) -> Option<String> {
        match self {
            Scalar::Str(s) | Scalar::Text(s) => Some(s),
            Scalar::Null => Some(String::new()),
            Scalar::Compound => None,
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(s.to_owned()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Scalar, E> {
                Ok(Scalar::Str(s))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Scalar, E> {
                Ok(Scalar::Text(b.to_string()))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Scalar, E> {
                Ok(Scalar::Text(serde_json::Number::from(n).to_string()))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Scalar, E> {
                Ok(Scalar::Text(serde_json::Number::from(n).to_string()))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Scalar, E> {
                // A `Value` holds a non-finite float as null.
                Ok(serde_json::Number::from_f64(n)
                    .map_or(Scalar::Null, |n| Scalar::Text(n.to_string())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar::Null)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Scalar, A::Error> {
                skip_map(map).map(|()| Scalar::Compound)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Scalar, A::Error> {
                skip_seq(seq).map(|()| Scalar::Compound)
            }
        }
        d.deserialize_any(V)
    }
}

/// An object of scalars by name; a repeated name keeps its last value, as in a `Value` map.
fn scalar_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<BTreeMap<String, Scalar>, A::Error> {
    let mut out = BTreeMap::new();
    while let Some(Key(k)) = map.next_key::<Key>()? {
        out.insert(k.into_owned(), map.next_value()?);
    }
    Ok(out)
}

/// `Query`: an object, possibly serialised into a string.
#[derive(Debug)]
enum QueryValue {
    Object(BTreeMap<String, Scalar>),
    Text(String),
    Null,
    Other,
}

impl<'de> Deserialize<'de> for QueryValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = QueryValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<QueryValue, A::Error> {
                scalar_map(map).map(QueryValue::Object)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<QueryValue, E> {
                Ok(QueryValue::Text(s.to_owned()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<QueryValue, E> {
                Ok(QueryValue::Text(s))
            }
            fn visit_unit<E: de::Error>(self) -> Result<QueryValue, E> {
                Ok(QueryValue::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<QueryValue, A::Error> {
                skip_seq(seq).map(|()| QueryValue::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<QueryValue, E> {
                Ok(QueryValue::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<QueryValue, E> {
                Ok(QueryValue::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<QueryValue, E> {
                Ok(QueryValue::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<QueryValue, E> {
                Ok(QueryValue::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// `Params`: an object (not decoded from a string).
#[derive(Debug)]
enum ParamsValue {
    Object(BTreeMap<String, Scalar>),
    Null,
    Other,
}

impl<'de> Deserialize<'de> for ParamsValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ParamsValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ParamsValue, A::Error> {
                scalar_map(map).map(ParamsValue::Object)
            }
            fn visit_unit<E: de::Error>(self) -> Result<ParamsValue, E> {
                Ok(ParamsValue::Null)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<ParamsValue, E> {
                Ok(ParamsValue::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<ParamsValue, A::Error> {
                skip_seq(seq).map(|()| ParamsValue::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<ParamsValue, E> {
                Ok(ParamsValue::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<ParamsValue, E> {
                Ok(ParamsValue::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<ParamsValue, E> {
                Ok(ParamsValue::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<ParamsValue, E> {
                Ok(ParamsValue::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// One header's value: the host sends an array of strings; a lone scalar is accepted too.
#[derive(Debug)]
enum HeaderValue {
    Many(Vec<Scalar>),
    One(Scalar),
}

impl<'de> Deserialize<'de> for HeaderValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HeaderValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<HeaderValue, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(1));
                while let Some(item) = seq.next_element::<Scalar>()? {
                    items.push(item);
                }
                Ok(HeaderValue::Many(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<HeaderValue, A::Error> {
                skip_map(map).map(|()| HeaderValue::One(Scalar::Compound))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<HeaderValue, E> {
                Ok(HeaderValue::One(Scalar::Str(s.to_owned())))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<HeaderValue, E> {
                Ok(HeaderValue::One(Scalar::Text(b.to_string())))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<HeaderValue, E> {
                Ok(HeaderValue::One(Scalar::Text(
                    serde_json::Number::from(n).to_string(),
                )))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<HeaderValue, E> {
                Ok(HeaderValue::One(Scalar::Text(
                    serde_json::Number::from(n).to_string(),
                )))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<HeaderValue, E> {
                Ok(HeaderValue::One(
                    serde_json::Number::from_f64(n)
                        .map_or(Scalar::Null, |n| Scalar::Text(n.to_string())),
                ))
            }
            fn visit_unit<E: de::Error>(self) -> Result<HeaderValue, E> {
                Ok(HeaderValue::One(Scalar::Null))
            }
        }
        d.deserialize_any(V)
    }
}

/// `Headers`: an object of header values (not decoded from a string).
#[derive(Debug)]
enum HeadersValue {
    Object(BTreeMap<String, HeaderValue>),
    Null,
    Other,
}

impl<'de> Deserialize<'de> for HeadersValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HeadersValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HeadersValue, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(Key(k)) = map.next_key::<Key>()? {
                    out.insert(k.into_owned(), map.next_value()?);
                }
                Ok(HeadersValue::Object(out))
            }
            fn visit_unit<E: de::Error>(self) -> Result<HeadersValue, E> {
                Ok(HeadersValue::Null)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<HeadersValue, E> {
                Ok(HeadersValue::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<HeadersValue, A::Error> {
                skip_seq(seq).map(|()| HeadersValue::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<HeadersValue, E> {
                Ok(HeadersValue::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<HeadersValue, E> {
                Ok(HeadersValue::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<HeadersValue, E> {
                Ok(HeadersValue::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<HeadersValue, E> {
                Ok(HeadersValue::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// The envelope's top level: its `Data`/`Metadata` members (any case) by key, or "not an
/// object".
enum Top<'de> {
    Members(Vec<(Cow<'de, str>, Member)>),
    NotObject,
}

enum Member {
    Data(DataValue),
    Metadata(MetaValue),
}

struct TopSeed {
    name: &'static str,
}

impl<'de> DeserializeSeed<'de> for TopSeed {
    type Value = Top<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Top<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopSeed {
    type Value = Top<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top<'de>, A::Error> {
        let mut members: Vec<(Cow<'de, str>, Member)> = Vec::with_capacity(2);
        while let Some(Key(key)) = map.next_key::<Key>()? {
            let member = if key.eq_ignore_ascii_case("data") {
                Member::Data(map.next_value_seed(DataSeed { name: self.name })?)
            } else if key.eq_ignore_ascii_case("metadata") {
                Member::Metadata(map.next_value()?)
            } else {
                map.next_value::<Skip>()?;
                continue;
            };
            // A repeated key keeps its last value, as in a `Value` map.
            match members.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = member,
                None => members.push((key, member)),
            }
        }
        Ok(Top::Members(members))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Top<'de>, E> {
        Ok(Top::NotObject)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Top<'de>, A::Error> {
        skip_seq(seq).map(|()| Top::NotObject)
    }
    other_scalars!(Top::NotObject);
}

/// `Data`: an object (its binding kept), an object serialised into a string, or null.
enum DataValue {
    Object(Option<ReqValue>),
    Text(String),
    Null,
    Other,
}

#[derive(Clone, Copy)]
struct DataSeed {
    name: &'static str,
}

impl<'de> DeserializeSeed<'de> for DataSeed {
    type Value = DataValue;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<DataValue, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DataSeed {
    type Value = DataValue;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DataValue, A::Error> {
        let mut binding = Pick::default();
        while let Some(Key(key)) = map.next_key::<Key>()? {
            if key.eq_ignore_ascii_case(self.name) {
                let exact = key == self.name;
                binding.offer(key, exact, map.next_value::<ReqValue>()?);
            } else {
                map.next_value::<Skip>()?;
            }
        }
        Ok(DataValue::Object(binding.into_value()))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<DataValue, E> {
        Ok(DataValue::Text(s.to_owned()))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<DataValue, E> {
        Ok(DataValue::Text(s))
    }
    fn visit_unit<E: de::Error>(self) -> Result<DataValue, E> {
        Ok(DataValue::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<DataValue, A::Error> {
        skip_seq(seq).map(|()| DataValue::Other)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<DataValue, E> {
        Ok(DataValue::Other)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<DataValue, E> {
        Ok(DataValue::Other)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<DataValue, E> {
        Ok(DataValue::Other)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<DataValue, E> {
        Ok(DataValue::Other)
    }
}

/// `Metadata`, which the HTTP path does not read: only checked to be an object, an object
/// serialised into a string, or null, as the tree reader requires.
enum MetaValue {
    Ok,
    Text(String),
    Other,
}

impl<'de> Deserialize<'de> for MetaValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MetaValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MetaValue, A::Error> {
                skip_map(map).map(|()| MetaValue::Ok)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<MetaValue, E> {
                Ok(MetaValue::Text(s.to_owned()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<MetaValue, E> {
                Ok(MetaValue::Ok)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<MetaValue, A::Error> {
                skip_seq(seq).map(|()| MetaValue::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<MetaValue, E> {
                Ok(MetaValue::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<MetaValue, E> {
                Ok(MetaValue::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<MetaValue, E> {
                Ok(MetaValue::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<MetaValue, E> {
                Ok(MetaValue::Other)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::functions::envelope::Envelope;
    use crate::functions::envelope::tests::reference_from_envelope;
    use serde_json::json;

    fn shown(r: &Result<HttpRequestData, EnvelopeError>) -> String {
        match r {
            Ok(d) => format!("{d:?}"),
            Err(e) => format!("error: {e}"),
        }
    }

    /// The one-pass reader, the tree reader of today and the tree reader as it was give the
    /// same request or the same error message.
    fn agree(body: &[u8]) {
        let reference = Envelope::parse(body).and_then(|env| reference_from_envelope(&env, "req"));
        let tree =
            Envelope::parse(body).and_then(|env| HttpRequestData::from_envelope(&env, "req"));
        let one_pass = parse_http_request(body, "req");
        let body = String::from_utf8_lossy(body);
        assert_eq!(shown(&one_pass), shown(&reference), "{body}");
        assert_eq!(shown(&tree), shown(&reference), "{body}");
    }

    fn host_envelope() -> Value {
        json!({"Data": {"req": {
            "Url": "http://localhost:7071/api/reports/daily?date=2024-01-02&tag=a&tag=b",
            "Method": "get",
            "Query": {"date": "2024-01-02", "tag": "a,b"},
            "Headers": {"Accept": ["*/*"], "X-API-Key": ["k"], "Host": ["localhost:7071"]},
            "Params": {"name": "daily", "x": null},
            "Identities": [{"AuthenticationType": null, "IsAuthenticated": false, "Claims": []}]}},
            "Metadata": {"name": "\"daily\"", "date": "\"2024-01-02\"",
            "Query": {"date": "2024-01-02"}, "Headers": {"Accept": "*/*"},
            "sys": {"MethodName": "HttpTrigger", "UtcNow": "2024-10-24T21:35:00.0153341Z", "RandGuid": "g"}}})
    }

    #[test]
    fn reads_the_host_envelope() {
        let body = host_envelope().to_string();
        let req = HttpRequestData::parse_envelope(body.as_bytes(), "req").unwrap();
        assert_eq!(req.method, "GET");
        assert_eq!(req.path(), "/api/reports/daily");
        assert_eq!(req.query["tag"], "a,b");
        assert_eq!(req.header("x-api-key"), Some("k"));
        assert_eq!(req.params.get("name").map(String::as_str), Some("daily"));
        assert!(!req.params.contains_key("x"));
        assert_eq!(req.body, None);
        agree(body.as_bytes());
    }

    #[test]
    fn member_names_in_any_case_and_string_encoded_members() {
        let req = host_envelope()["Data"]["req"].clone();
        let lower = json!({"data": {"REQ": {"url": "http://h/api/x", "METHOD": "post", "query": {"a": 1},
            "headers": {"content-type": "text/plain"}, "params": {}, "body": "hi"}}, "metadata": null});
        let parsed = parse_http_request(lower.to_string().as_bytes(), "req").unwrap();
        assert_eq!(parsed.method, "POST");
        assert_eq!(parsed.query["a"], "1");
        assert_eq!(parsed.body.as_deref(), Some(&b"hi"[..]));
        agree(lower.to_string().as_bytes());
        // Data, Metadata and the binding itself as JSON strings.
        let encoded = json!({"Data": json!({"req": req.to_string()}).to_string(),
            "Metadata": json!({"sys": {}}).to_string()});
        let parsed = parse_http_request(encoded.to_string().as_bytes(), "req").unwrap();
        assert_eq!(parsed.path(), "/api/reports/daily");
        agree(encoded.to_string().as_bytes());
    }

    #[test]
    fn missing_binding_and_wrong_types_are_errors() {
        for (body, want) in [
            (json!({"Data": {}, "Metadata": {}}), "no `Data.req`"),
            (json!({"Data": null, "Metadata": {}}), "no `Data.req`"),
            (json!({"Metadata": {}}), "no `Data.req`"),
            (json!({"Data": 3, "Metadata": {}}), "expected a JSON object"),
            (
                json!({"Data": "[1]", "Metadata": {}}),
                "expected a JSON object",
            ),
            (
                json!({"Data": {}, "Metadata": "nope"}),
                "expected a JSON object",
            ),
            (json!({"Other": 1}), "expected the members"),
            (json!({"Data": {"req": 3}}), "expected an object"),
            (
                json!({"Data": {"req": {"Url": 3}}}),
                "`Url` must be a string",
            ),
            (
                json!({"Data": {"req": {"Method": ""}}}),
                "`Method` must be a string",
            ),
            (
                json!({"Data": {"req": {"Query": [1]}}}),
                "`Query` must be an object",
            ),
            (
                json!({"Data": {"req": {"Query": {"a": [1]}}}}),
                "`Query` values must be strings",
            ),
            (
                json!({"Data": {"req": {"Headers": "x"}}}),
                "`Headers` must be an object",
            ),
            (
                json!({"Data": {"req": {"Headers": {"a": [[1]]}}}}),
                "`Headers` values must be strings",
            ),
            (
                json!({"Data": {"req": {"Params": {"a": {}}}}}),
                "`Params` values must be strings",
            ),
            (
                json!({"Data": {"req": {"Headers": {"Content-Type": ["application/octet-stream"]},
                "Body": "%%"}}}),
                "must be base64",
            ),
        ] {
            let text = body.to_string();
            let err = parse_http_request(text.as_bytes(), "req").unwrap_err();
            assert!(err.to_string().contains(want), "{text}: {err}");
            agree(text.as_bytes());
        }
        for text in [
            "",
            "not json",
            "[]",
            "[1,2",
            "\"x\"",
            "3",
            "null",
            "{} x",
            "{\"Data\":{}",
        ] {
            assert!(
                parse_http_request(text.as_bytes(), "req").is_err(),
                "{text}"
            );
            agree(text.as_bytes());
        }
    }

    #[test]
    fn every_prefix_of_an_envelope_gives_the_same_error() {
        let body = host_envelope().to_string();
        for end in 0..body.len() {
            agree(&body.as_bytes()[..end]);
        }
        agree(b"{\"Data\": {\"req\": {\"Url\": \"\\ud800\"}}, \"Metadata\": {}}");
        agree(b"{\"Data\": {}, \"Metadata\": {\"x\": \"\\ud800\"}}");
        agree(b"{\"Data\": {}, \"Metadata\": {\"x\": \"\xff\"}}");
        agree(b"{\"Data\": {}, \"Metadata\": {\"x\": 1e999}}");
        agree(&[b'['; 200]);
    }

    /// Each member of `Data.req`, and `Data`/`Metadata` themselves, in several cases and with
    /// every kind of value, alone and repeated: the readers agree on all of them.
    #[test]
    fn the_one_pass_reader_agrees_with_the_tree_reader() {
        let values = [
            "null",
            "3",
            "-2",
            "1.5",
            "true",
            "\"\"",
            "\"x\"",
            "\"GET\"",
            "\"{}\"",
            "\"null\"",
            "\"[1]\"",
            "\"{\\\"a\\\":\\\"b\\\",\\\"n\\\":2}\"",
            "[]",
            "[\"a\",\"b\"]",
            "[1,null]",
            "[[1]]",
            "{}",
            "{\"a\":\"b\"}",
            "{\"a\":null,\"b\":2,\"c\":false}",
            "{\"a\":[\"x\",3]}",
            "{\"a\":{}}",
            "{\"Content-Type\":[\"application/octet-stream\"]}",
            "{\"content-type\":\"multipart/form-data\",\"Content-Type\":\"text/plain\"}",
            "\"AAECA/8=\"",
            "{\"name\":\"n\",\"name\":\"m\"}",
        ];
        let fields = [
            "Url",
            "Method",
            "Query",
            "Headers",
            "Params",
            "Body",
            "Identities",
        ];
        for field in fields {
            for name in [
                field.to_string(),
                field.to_ascii_lowercase(),
                field.to_ascii_uppercase(),
            ] {
                for v in values {
                    agree(
                        format!("{{\"Data\":{{\"req\":{{\"{name}\":{v}}}}},\"Metadata\":{{}}}}")
                            .as_bytes(),
                    );
                    // With a binary content type, so a string body is base64.
                    agree(format!("{{\"Data\":{{\"req\":{{\"Headers\":{{\"Content-Type\":[\"application/octet-stream\"]}},\"{name}\":{v}}}}}}}").as_bytes());
                    // Two spellings of the member: which one counts.
                    for w in ["\"z\"", "{\"q\":\"r\"}", "null"] {
                        agree(
                            format!("{{\"Data\":{{\"req\":{{\"{name}\":{v},\"{field}\":{w}}}}}}}")
                                .as_bytes(),
                        );
                        agree(
                            format!("{{\"Data\":{{\"req\":{{\"{field}\":{w},\"{name}\":{v}}}}}}}")
                                .as_bytes(),
                        );
                        agree(
                            format!("{{\"Data\":{{\"req\":{{\"{name}\":{w},\"{name}\":{v}}}}}}}")
                                .as_bytes(),
                        );
                        agree(
                            format!(
                                "{{\"Data\":{{\"req\":{{\"{}\":{w},\"{name}\":{v}}}}}}}",
                                field.to_ascii_lowercase()
                            )
                            .as_bytes(),
                        );
                    }
                }
            }
        }
        let req = "{\"Url\":\"http://h/a\",\"Method\":\"PUT\"}";
        let req_str = serde_json::to_string(req).unwrap();
        for top in ["Data", "data", "DATA", "Metadata", "metadata", "Other"] {
            for v in values.iter().copied().chain([req, req_str.as_str()]) {
                let wrapped = format!("{{\"req\":{v}}}");
                let wrapped_str = serde_json::to_string(&wrapped).unwrap();
                for member in [v, wrapped.as_str(), wrapped_str.as_str()] {
                    agree(format!("{{\"{top}\":{member}}}").as_bytes());
                    agree(format!("{{\"{top}\":{member},\"Metadata\":{{}}}}").as_bytes());
                    agree(format!("{{\"Data\":{{\"req\":{req}}},\"{top}\":{member}}}").as_bytes());
                    agree(format!("{{\"{top}\":{member},\"Data\":{{\"REQ\":{req}}}}}").as_bytes());
                    agree(
                        format!("{{\"Data\":{{\"Req\":{member},\"req\":{v},\"rEQ\":{req}}}}}")
                            .as_bytes(),
                    );
                }
            }
        }
    }

    #[test]
    fn the_fuzz_corpus_reads_the_same() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/envelope");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let bytes = std::fs::read(entry.path()).unwrap();
            agree(&bytes);
        }
    }
}
