//! The record model: one [`TraceRecord`] per span of an agent session.
//!
//! The field names and their JSON encoding are normative (docs/FORMAT.md §2).
//! Struct fields are declared in the order RFC 8785 sorts their names, so that
//! the serializers in [`crate::canonical`] emit canonical JSON directly.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::digest::Digest;

/// The version of the record format written by this crate.
pub const FORMAT_VERSION: u32 = 1;

/// The session of the `gap` records a writer makes when it had to drop
/// records; `verify` reports each one ([`crate::verify::Problem::RecordsDropped`]).
pub const GAP_SESSION: &str = "sealtrail.gaps";

/// The attribute of a `gap` record that holds how many records were dropped.
pub const GAP_DROPPED: &str = "audit.dropped";

/// What a record describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A call to a language model: prompt, response, model, token usage.
    LlmCall,
    /// A tool invocation: tool name, arguments, result.
    ToolCall,
    /// A policy or guardrail evaluation and its verdict.
    PolicyCheck,
    /// An agent step, plan or workflow invocation.
    Agent,
    /// A human intervention: approval, rejection, edit, takeover.
    Human,
    /// Access to a data source (records read or written).
    DataAccess,
    /// Any other span inside an audited session.
    Span,
    /// A statement by the writer that records were dropped (see DESIGN.md invariant 2).
    Gap,
}

impl Kind {
    /// The name used in the archive (`llm_call`, …).
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::LlmCall => "llm_call",
            Kind::ToolCall => "tool_call",
            Kind::PolicyCheck => "policy_check",
            Kind::Agent => "agent",
            Kind::Human => "human",
            Kind::DataAccess => "data_access",
            Kind::Span => "span",
            Kind::Gap => "gap",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed attribute value. Encoded as a one-member object naming its type,
/// e.g. `{"int":"42"}`, so that integers, floats, strings and bytes never
/// become ambiguous (docs/FORMAT.md §2.3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    /// A homogeneous or heterogeneous list.
    Array(Vec<Value>),
    /// A boolean.
    Bool(bool),
    /// Raw bytes, encoded as standard base64 with padding.
    Bytes(#[serde(with = "base64_bytes")] Vec<u8>),
    /// A 64-bit float; non-finite values are encoded as the strings `NaN`, `Infinity`, `-Infinity`.
    Float(#[serde(with = "float")] f64),
    /// A 64-bit signed integer, encoded as a decimal string (JSON numbers lose precision above 2^53).
    Int(#[serde(with = "i64_string")] i64),
    /// A nested map.
    Map(Attributes),
    /// A UTF-8 string.
    Str(String),
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

/// A map of attribute names to typed values.
///
/// Serialized with its keys in RFC 8785 order (UTF-16 code units), whatever
/// characters they contain.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attributes(pub BTreeMap<String, Value>);

impl Attributes {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets `key` to `value`, replacing any earlier value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        self.0.insert(key.into(), value.into());
    }
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Entries in key order (UTF-8 byte order).
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.0.iter()
    }
}

impl<K: Into<String>, V: Into<Value>> FromIterator<(K, V)> for Attributes {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Attributes(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// UTF-8 byte order equals UTF-16 code unit order unless a key holds a
/// character in U+E000..=U+FFFF (lead byte 0xEE or 0xEF) and another an
/// astral one (lead byte 0xF0..): only then must we re-sort.
pub(crate) fn needs_utf16_sort<'a>(keys: impl Iterator<Item = &'a String>) -> bool {
    keys.into_iter().any(|k| k.bytes().any(|b| b >= 0xEE))
}

impl Serialize for Attributes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        if needs_utf16_sort(self.0.keys()) {
            let mut entries: Vec<_> = self.0.iter().collect();
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            for (k, v) in entries {
                map.serialize_entry(k, v)?;
            }
        } else {
            for (k, v) in &self.0 {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Attributes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of attribute names to typed values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Attributes, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = m.next_entry::<String, Value>()? {
                    if out.contains_key(&k) {
                        return Err(de::Error::custom(format_args!("duplicate attribute {k:?}")));
                    }
                    out.insert(k, v);
                }
                Ok(Attributes(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// An event inside a span (a log line, a message, an exception).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// The event's fields.
    pub attributes: Attributes,
    /// Its name.
    pub name: String,
    /// When it happened, unix nanoseconds.
    #[serde(with = "u64_string")]
    pub time_ns: u64,
}

/// Outcome of a span.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusCode {
    /// Not set by the instrumentation.
    #[default]
    Unset,
    /// Completed successfully.
    Ok,
    /// Failed.
    Error,
}

/// Status of a span: a code and, for errors, a message.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    /// The code.
    pub code: StatusCode,
    /// A description, usually of the error.
    pub message: Option<String>,
}

/// One archived trace record. `seq` and `prev` are assigned by the chain
/// ([`crate::chain::Chain::append`]); whatever they held before is replaced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceRecord {
    /// The span's attributes, typed.
    pub attributes: Attributes,
    /// End time, unix nanoseconds.
    #[serde(with = "u64_string")]
    pub end_ns: u64,
    /// Events recorded inside the span, in order.
    pub events: Vec<Event>,
    /// What the record describes.
    pub kind: Kind,
    /// The span name.
    pub name: String,
    /// Parent span id (16 hex digits), if any.
    pub parent_span_id: Option<String>,
    /// Hash of the previous record of this session (or the session's genesis value).
    pub prev: Digest,
    /// When sealtrail received the span, unix nanoseconds.
    #[serde(with = "u64_string")]
    pub received_ns: u64,
    /// Attributes of the emitting process (`service.name`, …).
    pub resource: Attributes,
    /// Position in the session's chain: 0, 1, 2, … without gaps.
    pub seq: u64,
    /// The agent session this record belongs to.
    pub session: String,
    /// Where the span came from: `tracing`, `otlp`, or `sealtrail` for records the writer makes itself.
    pub source: String,
    /// Span id (16 hex digits), if any.
    pub span_id: Option<String>,
    /// Start time, unix nanoseconds.
    #[serde(with = "u64_string")]
    pub start_ns: u64,
    /// Outcome.
    pub status: Status,
    /// Trace id (32 hex digits), if any.
    pub trace_id: Option<String>,
    /// Record format version ([`FORMAT_VERSION`]).
    pub v: u32,
}

impl TraceRecord {
    /// A record of `kind` named `name` in `session`, with everything else empty.
    pub fn new(session: impl Into<String>, kind: Kind, name: impl Into<String>) -> Self {
        TraceRecord {
            attributes: Attributes::new(),
            end_ns: 0,
            events: Vec::new(),
            kind,
            name: name.into(),
            parent_span_id: None,
            prev: Digest::default(),
            received_ns: 0,
            resource: Attributes::new(),
            seq: 0,
            session: session.into(),
            source: String::new(),
            span_id: None,
            start_ns: 0,
            status: Status::default(),
            trace_id: None,
            v: FORMAT_VERSION,
        }
    }
}

/// One line of a batch object: `{"hash":…,"record":…}` (docs/FORMAT.md §4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredRecord {
    /// `SHA-256(RECORD_TAG ‖ canonical bytes of record)`.
    pub hash: Digest,
    /// The record.
    pub record: TraceRecord,
}

pub(crate) mod u64_string {
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        parse_decimal(&s).ok_or_else(|| de::Error::custom("expected a decimal u64 string"))
    }

    pub(crate) fn parse_decimal(s: &str) -> Option<u64> {
        if s.is_empty()
            || (s.len() > 1 && s.starts_with('0'))
            || !s.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        s.parse().ok()
    }
}

mod i64_string {
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        let digits = s.strip_prefix('-').unwrap_or(&s);
        let canonical = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'))
            && s != "-0";
        match s.parse() {
            Ok(v) if canonical => Ok(v),
            _ => Err(de::Error::custom("expected a canonical decimal i64 string")),
        }
    }
}

mod float {
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v > 0.0 {
            s.serialize_str("Infinity")
        } else {
            s.serialize_str("-Infinity")
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr<'a> {
        Num(f64),
        Str(std::borrow::Cow<'a, str>),
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Num(v) => Ok(v),
            Repr::Str(s) => match &*s {
                "NaN" => Ok(f64::NAN),
                "Infinity" => Ok(f64::INFINITY),
                "-Infinity" => Ok(f64::NEG_INFINITY),
                _ => Err(de::Error::custom(
                    "expected a number, NaN, Infinity or -Infinity",
                )),
            },
        }
    }
}

mod base64_bytes {
    use base64::Engine as _;
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_encodings_are_typed() {
        let mut a = Attributes::new();
        a.insert("i", 42i64);
        a.insert("f", 1.5f64);
        a.insert("s", "x");
        a.insert("b", true);
        a.insert("n", f64::NAN);
        a.insert("y", Value::Bytes(vec![0, 255]));
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(
            json,
            r#"{"b":{"bool":true},"f":{"float":1.5},"i":{"int":"42"},"n":{"float":"NaN"},"s":{"str":"x"},"y":{"bytes":"AP8="}}"#
        );
        let back: Attributes = serde_json::from_str(&json).unwrap();
        assert_eq!(back.get("i"), Some(&Value::Int(42)));
        assert!(matches!(back.get("n"), Some(Value::Float(f)) if f.is_nan()));
    }

    #[test]
    fn non_canonical_integers_are_rejected() {
        for bad in [
            r#"{"int":"042"}"#,
            r#"{"int":"-0"}"#,
            r#"{"int":"+1"}"#,
            r#"{"int":""}"#,
        ] {
            assert!(serde_json::from_str::<Value>(bad).is_err(), "{bad}");
        }
        assert_eq!(
            serde_json::from_str::<Value>(r#"{"int":"-9223372036854775808"}"#).unwrap(),
            Value::Int(i64::MIN)
        );
    }

    #[test]
    fn duplicate_attribute_is_rejected() {
        let err = serde_json::from_str::<Attributes>(r#"{"a":{"bool":true},"a":{"bool":false}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("duplicate attribute"), "{err}");
    }

    #[test]
    fn keys_sort_by_utf16_code_units() {
        // U+FF61 sorts after U+1F600 in UTF-8 byte order is false; in UTF-16 the
        // astral character's high surrogate (0xD83D) comes first.
        let a: Attributes = [("\u{ff61}", 1i64), ("\u{1f600}", 2i64)]
            .into_iter()
            .collect();
        let json = serde_json::to_string(&a).unwrap();
        assert!(
            json.find('\u{1f600}').unwrap() < json.find('\u{ff61}').unwrap(),
            "{json}"
        );
    }
}
