//! OTLP trace messages into [`SpanData`], the input of the shared mapping
//! (`sealtrail::map`).
//!
//! What the sender sent is kept (except what docs/COLLECTOR.md lists as
//! not kept: trace state and flags, schema URLs, the scope's attributes, a
//! log record's flags and its observed time when it has a time): attributes, typed; events; status;
//! ids in hex; resource attributes; the instrumentation scope as
//! `otel.scope.name` / `otel.scope.version`; the span kind as `otel.kind`;
//! and any counts the SDK reports as dropped (`otel.dropped_attributes_count`,
//! `otel.dropped_events_count`, `otel.dropped_links_count`; an event's and
//! the resource's in their own attributes), so that the trail states its own
//! gaps; the keys of attributes sent without a value ([`EMPTY_ATTRIBUTES`]);
//! and links, as `otel.links`.
//!
//! Log records become items too (`otel.signal` = `log`), named by their
//! event name, with their body as `log.body` and the span they belong to as
//! their span id (docs/COLLECTOR.md).
//!
//! A span or log record that cannot be represented faithfully is rejected on
//! its own, with an error naming it; the others are kept (OTLP partial success).

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message;
use sha2::{Digest as _, Sha256};

use crate::pipeline::{span_bytes, Item, LOG_DIGEST, SIGNAL};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span, status, Span};
use sealtrail::map::SpanData;
use sealtrail::{Attributes, Event, Status, StatusCode, Value};

/// Why a request cannot be archived as sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ConvertError {
    #[error("span {span:?}: {field} must be {want} bytes, got {got}")]
    IdLength {
        span: String,
        field: &'static str,
        want: usize,
        got: usize,
    },
    #[error("{at}: attribute {key:?} appears twice")]
    DuplicateKey { at: String, key: String },
    #[error(
        "{at}: attribute {key:?} uses string_value_strindex, which is only valid for profiles"
    )]
    Strindex { at: String, key: String },
    #[error("{at}: an attribute has an empty key")]
    EmptyKey { at: String },
    #[error("OTLP/JSON {0}")]
    Json(String),
    #[error("span {span:?}: {field} is empty or all zeros (an invalid id in OTLP)")]
    MissingId { span: String, field: &'static str },
    #[error("{at}: link {index}: {field} must be {want} bytes, got {got}")]
    LinkId {
        at: String,
        index: usize,
        field: &'static str,
        want: usize,
        got: usize,
    },
}

/// The items of a request, and what was rejected.
#[derive(Debug, Default)]
pub(crate) struct Converted {
    pub(crate) items: Vec<Item>,
    pub(crate) errors: Vec<ConvertError>,
}

impl Converted {
    /// The first error's message, for the partial-success answer.
    pub(crate) fn message(&self) -> Option<String> {
        let first = self.errors.first()?;
        Some(match self.errors.len() {
            1 => first.to_string(),
            n => format!("{first} (and {} more)", n - 1),
        })
    }
}

/// Where an error is, computed only when there is one.
type At<'a> = &'a dyn Fn() -> String;

fn value(v: Option<AnyValue>, at: At<'_>, key: &str) -> Result<Option<Value>, ConvertError> {
    let Some(v) = v.and_then(|v| v.value) else {
        return Ok(None); // An empty AnyValue: the attribute has no value.
    };
    Ok(Some(match v {
        any_value::Value::StringValue(s) => Value::Str(s),
        any_value::Value::BoolValue(b) => Value::Bool(b),
        any_value::Value::IntValue(i) => Value::Int(i),
        any_value::Value::DoubleValue(d) => Value::Float(d),
        any_value::Value::BytesValue(b) => Value::Bytes(b),
        any_value::Value::ArrayValue(a) => Value::Array(
            a.values
                .into_iter()
                .map(|v| value(Some(v), at, key).map(|v| v.unwrap_or(Value::Str(String::new()))))
                .collect::<Result<_, _>>()?,
        ),
        any_value::Value::KvlistValue(kv) => Value::Map(attributes(kv.values, at)?),
        any_value::Value::StringValueStrindex(_) => {
            return Err(ConvertError::Strindex {
                at: at(),
                key: key.to_owned(),
            })
        }
    }))
}

/// The attribute listing the keys sent without a value (an archive value
/// has a type; an empty OTLP value has none), in the map that had them.
pub(crate) const EMPTY_ATTRIBUTES: &str = "otel.empty_attributes";

/// OTLP key-values as attributes; `at` names the place for errors. Keys sent
/// without a value are listed in [`EMPTY_ATTRIBUTES`] (unless the sender
/// uses that name itself).
pub(crate) fn attributes(kvs: Vec<KeyValue>, at: At<'_>) -> Result<Attributes, ConvertError> {
    let mut out = Attributes::new();
    let mut empty = Vec::new();
    for kv in kvs {
        if kv.key.is_empty() {
            return Err(ConvertError::EmptyKey { at: at() });
        }
        let v = value(kv.value, at, &kv.key)?;
        match out.0.entry(kv.key) {
            std::collections::btree_map::Entry::Occupied(e) => {
                return Err(ConvertError::DuplicateKey {
                    at: at(),
                    key: e.key().clone(),
                })
            }
            std::collections::btree_map::Entry::Vacant(e) => match v {
                Some(v) => {
                    e.insert(v);
                }
                None => empty.push(Value::Str(e.into_key())),
            },
        }
    }
    // The name is the collector's: a sender's attribute of that name is kept
    // as `client.<name>`.
    set_aside(&mut out, EMPTY_ATTRIBUTES);
    if !empty.is_empty() {
        out.insert(EMPTY_ATTRIBUTES, Value::Array(empty));
    }
    Ok(out)
}

/// Moves a sender's attribute `key` to `client.<key>` (`client.client.<key>`
/// if that is taken, …), for the collector to write its own `key`.
fn set_aside(attrs: &mut Attributes, key: &str) {
    if let Some(v) = attrs.0.remove(key) {
        let mut to = format!("client.{key}");
        while attrs.0.contains_key(&to) {
            to.insert_str(0, "client.");
        }
        attrs.0.insert(to, v);
    }
}

/// Attribute names the collector writes itself (a span's kind, links and
/// dropped counts; a log record's body, severity, signal and digest).
const RESERVED: &[&str] = &[
    "log.body",
    "log.severity_number",
    "log.severity_text",
    "otel.dropped_attributes_count",
    "otel.dropped_events_count",
    "otel.dropped_links_count",
    "otel.kind",
    LINKS,
    SIGNAL,
    LOG_DIGEST,
];

/// A sender's attribute under a name the collector writes itself is kept
/// as `client.<name>`: it neither overwrites nor is overwritten by what the
/// collector derives (and cannot make a span pass for a log record).
fn set_aside_reserved(attrs: &mut Attributes) {
    let mut found = Vec::new();
    // Each range: the names that start with the prefix ('/' follows '.').
    for (prefix, end) in [
        ("log.", "log/"),
        ("otel.", "otel/"),
        ("sealtrail.", "sealtrail/"),
    ] {
        found.extend(
            attrs
                .0
                .range::<str, _>((
                    std::ops::Bound::Included(prefix),
                    std::ops::Bound::Excluded(end),
                ))
                .filter(|(k, _)| RESERVED.contains(&k.as_str()))
                .map(|(k, _)| k.clone()),
        );
    }
    for k in found {
        set_aside(attrs, &k);
    }
}

/// Lowercase hex of an id (`hex::encode` goes through `char`s, several
/// times slower on the three ids of every span).
fn hex_id(bytes: &[u8]) -> String {
    let mut out = vec![0; bytes.len() * 2];
    hex::encode_to_slice(bytes, &mut out).expect("the buffer is twice as long");
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// An id as hex; `None` when it is absent: empty, or all zeros (OTLP's
/// invalid id, which SDKs send for "no parent" or "no span").
fn id(
    bytes: &[u8],
    span: &str,
    field: &'static str,
    want: usize,
) -> Result<Option<String>, ConvertError> {
    match bytes.len() {
        _ if bytes.iter().all(|&b| b == 0) => Ok(None),
        n if n == want => Ok(Some(hex_id(bytes))),
        got => Err(ConvertError::IdLength {
            span: span.to_owned(),
            field,
            want,
            got,
        }),
    }
}

fn kind_name(kind: i32) -> Option<&'static str> {
    match span::SpanKind::try_from(kind).ok()? {
        span::SpanKind::Unspecified => None,
        span::SpanKind::Internal => Some("internal"),
        span::SpanKind::Server => Some("server"),
        span::SpanKind::Client => Some("client"),
        span::SpanKind::Producer => Some("producer"),
        span::SpanKind::Consumer => Some("consumer"),
    }
}

fn convert_span(
    s: Span,
    resource: &Attributes,
    scope: &[(String, Value)],
) -> Result<SpanData, ConvertError> {
    let (name, span_id) = (&s.name, &s.span_id);
    let at = || format!("span {:?} ({})", name, hex::encode(span_id));
    let mut attrs = attributes(s.attributes, &at)?;
    set_aside_reserved(&mut attrs);
    for (k, v) in scope {
        if attrs.get(k).is_none() {
            attrs.insert(k.clone(), v.clone());
        }
    }
    if let Some(k) = kind_name(s.kind) {
        attrs.insert("otel.kind", k);
    }
    for (k, n) in [
        ("otel.dropped_attributes_count", s.dropped_attributes_count),
        ("otel.dropped_events_count", s.dropped_events_count),
        ("otel.dropped_links_count", s.dropped_links_count),
    ] {
        if n > 0 {
            attrs.insert(k, Value::Int(n.into()));
        }
    }
    if !s.links.is_empty() {
        attrs.insert(LINKS, links(s.links, &at)?);
    }
    let events = s
        .events
        .into_iter()
        .map(|e| {
            let ename = e.name;
            let mut attributes = attributes(e.attributes, &|| format!("{} event {ename:?}", at()))?;
            set_aside(&mut attributes, "otel.dropped_attributes_count");
            if e.dropped_attributes_count > 0 {
                attributes.insert(
                    "otel.dropped_attributes_count",
                    Value::Int(e.dropped_attributes_count.into()),
                );
            }
            Ok(Event {
                attributes,
                name: ename.clone(),
                time_ns: e.time_unix_nano,
            })
        })
        .collect::<Result<Vec<_>, ConvertError>>()?;
    let status = match s.status {
        Some(st) => Status {
            code: match status::StatusCode::try_from(st.code) {
                Ok(status::StatusCode::Ok) => StatusCode::Ok,
                Ok(status::StatusCode::Error) => StatusCode::Error,
                _ => StatusCode::Unset,
            },
            message: (!st.message.is_empty()).then_some(st.message),
        },
        None => Status::default(),
    };
    Ok(SpanData {
        trace_id: id(&s.trace_id, &s.name, "trace_id", 16)?,
        span_id: id(&s.span_id, &s.name, "span_id", 8)?,
        parent_span_id: id(&s.parent_span_id, &s.name, "parent_span_id", 8)?,
        name: s.name,
        start_ns: s.start_time_unix_nano,
        end_ns: s.end_time_unix_nano,
        status,
        attributes: attrs,
        events,
        resource: resource.clone(),
    })
}

use sealtrail::map::OTEL_LINKS as LINKS;

/// A span's links as an array of maps: `trace_id` and `span_id` (hex), and
/// `trace_state`, `attributes`, `flags` and `dropped_attributes_count` where
/// the sender set them.
fn links(links: Vec<span::Link>, at: At<'_>) -> Result<Value, ConvertError> {
    let mut out = Vec::with_capacity(links.len());
    for (index, l) in links.into_iter().enumerate() {
        let mut m = Attributes::new();
        for (field, bytes, want) in [("trace_id", &l.trace_id, 16), ("span_id", &l.span_id, 8)] {
            if bytes.len() != want {
                return Err(ConvertError::LinkId {
                    at: at(),
                    index,
                    field,
                    want,
                    got: bytes.len(),
                });
            }
            m.insert(field, hex_id(bytes));
        }
        if !l.trace_state.is_empty() {
            m.insert("trace_state", l.trace_state);
        }
        if !l.attributes.is_empty() {
            let here = || format!("{} link {index}", at());
            m.insert("attributes", Value::Map(attributes(l.attributes, &here)?));
        }
        if l.flags != 0 {
            m.insert("flags", Value::Int(l.flags.into()));
        }
        if l.dropped_attributes_count > 0 {
            m.insert(
                "dropped_attributes_count",
                Value::Int(l.dropped_attributes_count.into()),
            );
        }
        out.push(Value::Map(m));
    }
    Ok(Value::Array(out))
}

fn scope_attributes(
    scope: Option<opentelemetry_proto::tonic::common::v1::InstrumentationScope>,
) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    if let Some(sc) = scope {
        if !sc.name.is_empty() {
            out.push(("otel.scope.name".to_owned(), Value::Str(sc.name)));
        }
        if !sc.version.is_empty() {
            out.push(("otel.scope.version".to_owned(), Value::Str(sc.version)));
        }
    }
    out
}

fn resource_attributes(
    r: Option<opentelemetry_proto::tonic::resource::v1::Resource>,
) -> Result<Attributes, ConvertError> {
    match r {
        Some(r) => {
            let mut attrs = attributes(r.attributes, &|| "resource".to_owned())?;
            set_aside(&mut attrs, "otel.dropped_attributes_count");
            if r.dropped_attributes_count > 0 {
                attrs.insert(
                    "otel.dropped_attributes_count",
                    Value::Int(r.dropped_attributes_count.into()),
                );
            }
            Ok(attrs)
        }
        None => Ok(Attributes::new()),
    }
}

fn span_item(span: SpanData) -> Result<Item, ConvertError> {
    let field = match (&span.trace_id, &span.span_id) {
        (None, _) => "trace_id",
        (_, None) => "span_id",
        (Some(t), Some(id)) => {
            let t = u128::from_str_radix(t, 16).unwrap_or_default();
            let id = u64::from_str_radix(id, 16).unwrap_or_default();
            return Ok(Item {
                span,
                log: false,
                key: span_bytes((t, id)),
            });
        }
    };
    Err(ConvertError::MissingId {
        span: span.name,
        field,
    })
}

/// Every span of an export request, in the order sent.
pub(crate) fn spans(req: ExportTraceServiceRequest) -> Converted {
    let mut out = Converted::default();
    for rs in req.resource_spans {
        let resource = match resource_attributes(rs.resource) {
            Ok(r) => r,
            Err(e) => {
                // Every span under this resource is rejected with it.
                let n = rs
                    .scope_spans
                    .iter()
                    .map(|ss| ss.spans.len())
                    .sum::<usize>();
                out.errors.extend(std::iter::repeat_n(e, n));
                continue;
            }
        };
        for ss in rs.scope_spans {
            let scope = scope_attributes(ss.scope);
            for s in ss.spans {
                match convert_span(s, &resource, &scope).and_then(span_item) {
                    Ok(item) => out.items.push(item),
                    Err(e) => out.errors.push(e),
                }
            }
        }
    }
    out
}

fn convert_log(
    l: LogRecord,
    context: &Sha256,
    resource: &Attributes,
    scope: &[(String, Value)],
) -> Result<Item, ConvertError> {
    // A retried export sends the same bytes: the digest of the record (in
    // its resource and scope, see `logs`) identifies it.
    let digest = context.clone().chain_update(l.encode_to_vec()).finalize();
    let mut key = [0u8; 24];
    key.copy_from_slice(&digest[..24]);
    let mut attrs = attributes(l.attributes, &|| "log record".to_owned())?;
    set_aside_reserved(&mut attrs);
    let name = if !l.event_name.is_empty() {
        l.event_name
    } else if let Some(Value::Str(n)) = attrs.get("event.name") {
        n.clone()
    } else {
        "log".to_owned()
    };
    let at = || format!("log record {name:?}");
    if let Some(body) = value(l.body, &at, "body")? {
        attrs.insert("log.body", body);
    }
    if !l.severity_text.is_empty() {
        attrs.insert("log.severity_text", l.severity_text);
    }
    if l.severity_number != 0 {
        attrs.insert("log.severity_number", Value::Int(l.severity_number.into()));
    }
    if l.dropped_attributes_count > 0 {
        attrs.insert(
            "otel.dropped_attributes_count",
            Value::Int(l.dropped_attributes_count.into()),
        );
    }
    for (k, v) in scope {
        if attrs.get(k).is_none() {
            attrs.insert(k.clone(), v.clone());
        }
    }
    attrs.insert(SIGNAL, "log");
    attrs.insert(LOG_DIGEST, hex::encode(key));
    let time = if l.time_unix_nano != 0 {
        l.time_unix_nano
    } else {
        l.observed_time_unix_nano
    };
    // OTLP: a log record whose trace or span id is invalid is not
    // associated with a trace (or span); it is kept, and so is what was sent.
    let mut log_id = |bytes: &[u8], field: &'static str, want: usize| {
        id(bytes, &name, field, want).unwrap_or_else(|_| {
            attrs.insert(format!("log.invalid_{field}"), hex::encode(bytes));
            None
        })
    };
    let trace_id = log_id(&l.trace_id, "trace_id", 16);
    let span_id = log_id(&l.span_id, "span_id", 8);
    Ok(Item {
        span: SpanData {
            trace_id,
            span_id,
            parent_span_id: None,
            name,
            start_ns: time,
            end_ns: time,
            status: Status::default(),
            attributes: attrs,
            events: Vec::new(),
            resource: resource.clone(),
        },
        log: true,
        key,
    })
}

/// Every log record of an export request, in the order sent.
pub(crate) fn logs(req: ExportLogsServiceRequest) -> Converted {
    let mut out = Converted::default();
    for rl in req.resource_logs {
        // Two services may log the same record: the resource and the scope
        // are part of a log record's identity.
        let encoded = rl
            .resource
            .as_ref()
            .map(|r| r.encode_to_vec())
            .unwrap_or_default();
        let in_resource = Sha256::new()
            .chain_update(b"sealtrail.log\0")
            .chain_update((encoded.len() as u64).to_le_bytes())
            .chain_update(&encoded);
        let resource = match resource_attributes(rl.resource) {
            Ok(r) => r,
            Err(e) => {
                let n = rl
                    .scope_logs
                    .iter()
                    .map(|sl| sl.log_records.len())
                    .sum::<usize>();
                out.errors.extend(std::iter::repeat_n(e, n));
                continue;
            }
        };
        for sl in rl.scope_logs {
            let encoded = sl
                .scope
                .as_ref()
                .map(|s| s.encode_to_vec())
                .unwrap_or_default();
            let context = in_resource
                .clone()
                .chain_update((encoded.len() as u64).to_le_bytes())
                .chain_update(&encoded);
            let scope = scope_attributes(sl.scope);
            for l in sl.log_records {
                match convert_log(l, &context, &resource, &scope) {
                    Ok(item) => out.items.push(item),
                    Err(e) => out.errors.push(e),
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, InstrumentationScope, KeyValueList};
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

    fn kv(k: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv(
                        "service.name",
                        any_value::Value::StringValue("py-agent".into()),
                    )],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "opentelemetry.instrumentation.openai_v2".into(),
                        version: "2.1b0".into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn chat_span() -> Span {
        Span {
            trace_id: vec![0x4b; 16],
            span_id: vec![0x01; 8],
            parent_span_id: vec![0x02; 8],
            name: "chat gpt-4o".into(),
            kind: span::SpanKind::Client as i32,
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            attributes: vec![
                kv(
                    "gen_ai.operation.name",
                    any_value::Value::StringValue("chat".into()),
                ),
                kv("gen_ai.usage.input_tokens", any_value::Value::IntValue(12)),
                kv(
                    "gen_ai.request.temperature",
                    any_value::Value::DoubleValue(0.5),
                ),
                kv(
                    "gen_ai.response.finish_reasons",
                    any_value::Value::ArrayValue(ArrayValue {
                        values: vec![AnyValue {
                            value: Some(any_value::Value::StringValue("stop".into())),
                        }],
                    }),
                ),
                kv(
                    "nested",
                    any_value::Value::KvlistValue(KeyValueList {
                        values: vec![kv("raw", any_value::Value::BytesValue(vec![0, 255]))],
                    }),
                ),
            ],
            events: vec![span::Event {
                time_unix_nano: 3,
                name: "gen_ai.choice".into(),
                attributes: vec![kv("index", any_value::Value::IntValue(0))],
                ..Default::default()
            }],
            dropped_attributes_count: 2,
            links: vec![span::Link {
                trace_id: vec![0x7a; 16],
                span_id: vec![0x03; 8],
                trace_state: "vendor=1".into(),
                attributes: vec![kv("reason", any_value::Value::StringValue("retry".into()))],
                flags: 1,
                ..Default::default()
            }],
            status: Some(opentelemetry_proto::tonic::trace::v1::Status {
                message: "boom".into(),
                code: status::StatusCode::Error as i32,
            }),
            ..Default::default()
        }
    }

    fn one(req: &ExportTraceServiceRequest) -> Result<Vec<SpanData>, ConvertError> {
        let mut c = spans(req.clone());
        match c.errors.pop() {
            Some(e) => Err(e),
            None => Ok(c.items.into_iter().map(|i| i.span).collect()),
        }
    }

    #[test]
    fn a_genai_span_keeps_everything_typed() {
        let got = one(&request(vec![chat_span()])).unwrap();
        assert_eq!(got.len(), 1);
        let s = &got[0];
        assert_eq!(
            s.trace_id.as_deref(),
            Some("4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b")
        );
        assert_eq!(s.span_id.as_deref(), Some("0101010101010101"));
        assert_eq!(s.parent_span_id.as_deref(), Some("0202020202020202"));
        assert_eq!(
            s.attributes.get("gen_ai.usage.input_tokens"),
            Some(&Value::Int(12))
        );
        assert_eq!(
            s.attributes.get("gen_ai.request.temperature"),
            Some(&Value::Float(0.5))
        );
        assert_eq!(
            s.attributes.get("gen_ai.response.finish_reasons"),
            Some(&Value::Array(vec![Value::Str("stop".into())]))
        );
        match s.attributes.get("nested") {
            Some(Value::Map(m)) => assert_eq!(m.get("raw"), Some(&Value::Bytes(vec![0, 255]))),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            s.attributes.get("otel.kind"),
            Some(&Value::Str("client".into()))
        );
        assert_eq!(
            s.attributes.get("otel.scope.name"),
            Some(&Value::Str(
                "opentelemetry.instrumentation.openai_v2".into()
            ))
        );
        assert_eq!(
            s.attributes.get("otel.dropped_attributes_count"),
            Some(&Value::Int(2))
        );
        let link: Attributes = [
            ("trace_id", Value::from("7a".repeat(16))),
            ("span_id", Value::from("03".repeat(8))),
            ("trace_state", Value::from("vendor=1")),
            (
                "attributes",
                Value::Map([("reason", Value::from("retry"))].into_iter().collect()),
            ),
            ("flags", Value::Int(1)),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            s.attributes.get(LINKS),
            Some(&Value::Array(vec![Value::Map(link)]))
        );
        assert_eq!(
            s.resource.get("service.name"),
            Some(&Value::Str("py-agent".into()))
        );
        assert_eq!(
            (s.events[0].name.as_str(), s.events[0].time_ns),
            ("gen_ai.choice", 3)
        );
        assert_eq!(
            (s.status.code, s.status.message.as_deref()),
            (StatusCode::Error, Some("boom"))
        );
        assert_eq!(
            sealtrail::map::classify(&s.attributes),
            sealtrail::Kind::LlmCall
        );
    }

    #[test]
    fn bad_ids_duplicate_keys_and_strindex_are_errors() {
        let mut s = chat_span();
        s.trace_id = vec![1; 15];
        assert!(matches!(
            one(&request(vec![s])),
            Err(ConvertError::IdLength {
                field: "trace_id",
                got: 15,
                ..
            })
        ));

        let mut s = chat_span();
        s.attributes.push(kv(
            "gen_ai.usage.input_tokens",
            any_value::Value::IntValue(1),
        ));
        let err = one(&request(vec![s])).unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");

        let mut s = chat_span();
        s.attributes
            .push(kv("x", any_value::Value::StringValueStrindex(3)));
        assert!(matches!(
            one(&request(vec![s])),
            Err(ConvertError::Strindex { .. })
        ));

        let mut s = chat_span();
        s.attributes.push(kv("", any_value::Value::BoolValue(true)));
        assert!(matches!(
            one(&request(vec![s])),
            Err(ConvertError::EmptyKey { .. })
        ));

        let mut s = chat_span();
        s.links[0].span_id = vec![1; 4];
        let err = one(&request(vec![s])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "span \"chat gpt-4o\" (0101010101010101): link 0: span_id must be 8 bytes, got 4"
        );

        let mut s = chat_span();
        s.span_id.clear();
        assert!(matches!(
            one(&request(vec![s])),
            Err(ConvertError::MissingId {
                field: "span_id",
                ..
            })
        ));
    }

    #[test]
    fn all_zero_ids_are_invalid_and_a_zero_parent_is_no_parent() {
        // Two different spans with zero ids would share one identity: the
        // second would be taken for a retry of the first and not archived.
        for field in ["trace_id", "span_id"] {
            let mut s = chat_span();
            match field {
                "trace_id" => s.trace_id = vec![0; 16],
                _ => s.span_id = vec![0; 8],
            }
            let err = one(&request(vec![s])).unwrap_err();
            assert!(
                matches!(err, ConvertError::MissingId { field: f, .. } if f == field),
                "{err}"
            );
            assert!(err.to_string().contains("all zeros"), "{err}");
        }
        let mut s = chat_span();
        s.parent_span_id = vec![0; 8];
        assert_eq!(one(&request(vec![s])).unwrap()[0].parent_span_id, None);
    }

    #[test]
    fn a_log_record_with_an_invalid_id_is_kept_unlinked() {
        let record = |trace_id: Vec<u8>, span_id: Vec<u8>| LogRecord {
            time_unix_nano: 1,
            event_name: "gen_ai.choice".into(),
            trace_id,
            span_id,
            ..Default::default()
        };
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![
                        record(vec![1; 16], vec![0xab]),
                        record(vec![0; 16], vec![0; 8]),
                        record(vec![7; 3], vec![2; 8]),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let c = logs(req);
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        let ids: Vec<_> = c
            .items
            .iter()
            .map(|i| (i.span.trace_id.as_deref(), i.span.span_id.as_deref()))
            .collect();
        assert_eq!(
            ids,
            [
                (Some("01010101010101010101010101010101"), None),
                (None, None),
                (None, Some("0202020202020202")),
            ]
        );
        let invalid = |i: usize, k: &str| c.items[i].span.attributes.get(k).cloned();
        assert_eq!(invalid(0, "log.invalid_span_id"), Some("ab".into()));
        assert_eq!(invalid(1, "log.invalid_trace_id"), None);
        assert_eq!(invalid(2, "log.invalid_trace_id"), Some("070707".into()));
    }

    #[test]
    fn empty_values_and_every_dropped_count_are_stated() {
        let mut s = chat_span();
        s.attributes.push(KeyValue {
            key: "gen_ai.usage.cost".into(),
            value: None,
            ..Default::default()
        });
        s.attributes.push(KeyValue {
            key: "also.empty".into(),
            value: Some(AnyValue { value: None }),
            ..Default::default()
        });
        s.events = vec![span::Event {
            name: "e".into(),
            dropped_attributes_count: 3,
            ..Default::default()
        }];
        let mut req = request(vec![s]);
        req.resource_spans[0].resource = Some(Resource {
            dropped_attributes_count: 5,
            ..Default::default()
        });
        let got = one(&req).unwrap();
        assert_eq!(
            got[0].attributes.get(EMPTY_ATTRIBUTES),
            Some(&Value::Array(vec![
                "gen_ai.usage.cost".into(),
                "also.empty".into()
            ]))
        );
        assert_eq!(
            got[0].events[0]
                .attributes
                .get("otel.dropped_attributes_count"),
            Some(&Value::Int(3))
        );
        assert_eq!(
            got[0].resource.get("otel.dropped_attributes_count"),
            Some(&Value::Int(5))
        );
        // A sender's attribute under one of these names is kept aside.
        let mut s = chat_span();
        s.events = vec![span::Event {
            name: "e".into(),
            dropped_attributes_count: 3,
            attributes: vec![kv(
                "otel.dropped_attributes_count",
                any_value::Value::IntValue(0),
            )],
            ..Default::default()
        }];
        s.attributes.push(kv(
            "otel.empty_attributes",
            any_value::Value::BoolValue(true),
        ));
        let got = one(&request(vec![s])).unwrap();
        let ev = &got[0].events[0].attributes;
        assert_eq!(
            ev.get("otel.dropped_attributes_count"),
            Some(&Value::Int(3))
        );
        assert_eq!(
            ev.get("client.otel.dropped_attributes_count"),
            Some(&Value::Int(0))
        );
        assert_eq!(got[0].attributes.get("otel.empty_attributes"), None);
        assert_eq!(
            got[0].attributes.get("client.otel.empty_attributes"),
            Some(&Value::Bool(true))
        );
    }

    #[test]
    fn one_bad_span_is_rejected_alone() {
        let mut bad = chat_span();
        bad.trace_id = vec![1; 3];
        let mut good = chat_span();
        good.span_id = vec![9; 8];
        let c = spans(request(vec![bad, good]));
        assert_eq!((c.items.len(), c.errors.len()), (1, 1));
        assert_eq!(c.items[0].span.span_id.as_deref(), Some("0909090909090909"));
        assert!(c.message().unwrap().contains("trace_id must be 16 bytes"));
    }

    #[test]
    fn a_genai_log_event_names_its_span() {
        use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
        let log = LogRecord {
            time_unix_nano: 7,
            event_name: "gen_ai.client.inference.operation.details".into(),
            trace_id: vec![0x4b; 16],
            span_id: vec![0x01; 8],
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue("hello".into())),
            }),
            attributes: vec![kv(
                "gen_ai.operation.name",
                any_value::Value::StringValue("chat".into()),
            )],
            ..Default::default()
        };
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![log.clone(), log],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let req_again = req.clone();
        let c = logs(req);
        assert!(c.errors.is_empty());
        let i = &c.items[0];
        assert!(i.log);
        assert_eq!(i.span.name, "gen_ai.client.inference.operation.details");
        assert_eq!(i.span.span_id.as_deref(), Some("0101010101010101"));
        assert_eq!(
            i.span.attributes.get("log.body"),
            Some(&Value::Str("hello".into()))
        );
        assert_eq!(
            i.span.attributes.get(SIGNAL),
            Some(&Value::Str("log".into()))
        );
        // The same record sent twice has the same identity...
        assert_eq!(c.items[0].key, c.items[1].key);
        // ... but not the same record logged by another service.
        let mut other = req_again.clone();
        other.resource_logs[0].resource =
            Some(opentelemetry_proto::tonic::resource::v1::Resource {
                attributes: vec![kv(
                    "service.name",
                    any_value::Value::StringValue("b".into()),
                )],
                ..Default::default()
            });
        assert_eq!(logs(req_again).items[0].key, c.items[0].key);
        assert_ne!(logs(other).items[0].key, c.items[0].key);
    }

    #[test]
    fn a_senders_attributes_under_reserved_names_are_set_aside() {
        let s = |k: &str, v: &str| kv(k, any_value::Value::StringValue(v.into()));
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "chat".into(),
            kind: span::SpanKind::Client as i32,
            attributes: vec![
                s(SIGNAL, "log"),
                s("otel.kind", "bogus"),
                s(LOG_DIGEST, "00"),
                s("client.otel.kind", "taken"),
                s("otel.other", "kept"),
            ],
            ..Default::default()
        };
        let got = convert_span(span, &Attributes::new(), &[]).unwrap();
        let a = &got.attributes;
        let str_of = |k: &str| match a.get(k) {
            Some(Value::Str(v)) => Some(v.as_str()),
            _ => None,
        };
        assert_eq!(str_of(SIGNAL), None, "a span is not a log record");
        assert_eq!(str_of(LOG_DIGEST), None);
        assert_eq!(str_of("otel.kind"), Some("client"));
        assert_eq!(str_of("client.otel.signal"), Some("log"));
        assert_eq!(str_of("client.sealtrail.log_digest"), Some("00"));
        assert_eq!(str_of("client.otel.kind"), Some("taken"));
        assert_eq!(str_of("client.client.otel.kind"), Some("bogus"));
        assert_eq!(str_of("otel.other"), Some("kept"));
    }

    #[test]
    fn otlp_json_as_the_http_exporters_send_it() {
        // OTLP/JSON: hex ids, camelCase, 64-bit integers as strings.
        let json = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"py"}}]},
          "scopeSpans":[{"scope":{"name":"s"},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c",
          "spanId":"eee19b7ec3c1b174","name":"execute_tool lookup","kind":1,
          "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000",
          "attributes":[{"key":"gen_ai.operation.name","value":{"stringValue":"execute_tool"}},
                        {"key":"n","value":{"intValue":"42"}}],"status":{}}]}]}]}"#;
        let (req, _) = super::super::json::traces(json.as_bytes()).unwrap();
        let got = one(&req).unwrap();
        assert_eq!(
            got[0].trace_id.as_deref(),
            Some("5b8efff798038103d269b633813fc60c")
        );
        assert_eq!(got[0].start_ns, 1_544_712_660_000_000_000);
        assert_eq!(got[0].attributes.get("n"), Some(&Value::Int(42)));
        assert_eq!(
            sealtrail::map::classify(&got[0].attributes),
            sealtrail::Kind::ToolCall
        );
    }
}
