//! OTLP/JSON requests, decoded as the protobuf JSON mapping and the OTLP
//! specification ask a receiver to: trace and span ids as hex (any case);
//! field names in lowerCamelCase or as in the .proto; 64-bit integers as
//! numbers or strings, and 32-bit ones too; doubles as numbers or as the
//! strings `"NaN"`, `"Infinity"`, `"-Infinity"` or a decimal; enums as
//! integers; `bytesValue` in standard or URL-safe base64, padded or not;
//! `null` and an omitted field alike as the field's default; unknown fields
//! ignored; enums as integers or as their names. The generated serde code of
//! `opentelemetry-proto` refuses several of these (a `"NaN"` double, an
//! `arrayValue` without `values`), and a refusal is an HTTP 400 the client
//! does not retry: its whole batch lost. So here a span or log record that
//! cannot be read (an id that is not hex, a value of the wrong type) is
//! rejected alone, named in the partial-success answer; only a request
//! whose structure is not OTLP is refused whole.

use base64::Engine as _;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use serde_json::{Map, Value as J};

type Obj = Map<String, J>;

/// Why a request is not OTLP/JSON: the path to the value, and what is wrong.
pub(crate) type Error = String;

/// The request, and the spans rejected alone (with why).
pub(crate) fn traces(body: &[u8]) -> Result<(ExportTraceServiceRequest, Vec<Error>), Error> {
    let root = parse(body)?;
    let mut req = ExportTraceServiceRequest::default();
    let mut rejected = Vec::new();
    for (i, rs) in list(&root, "resourceSpans", "resource_spans", "")? {
        let at = format!("resourceSpans[{i}]");
        let rs = object(rs, &at)?;
        let mut out = ResourceSpans {
            resource: resource(rs, &at)?,
            schema_url: string(rs, "schemaUrl", "schema_url", &at)?,
            ..Default::default()
        };
        for (j, ss) in list(rs, "scopeSpans", "scope_spans", &at)? {
            let at = format!("{at}.scopeSpans[{j}]");
            let ss = object(ss, &at)?;
            let mut scope_spans = ScopeSpans {
                scope: scope(ss, &at)?,
                schema_url: string(ss, "schemaUrl", "schema_url", &at)?,
                ..Default::default()
            };
            for (k, s) in list(ss, "spans", "spans", &at)? {
                let at = format!("{at}.spans[{k}]");
                match object(s, &at).and_then(|s| span(s, &at)) {
                    Ok(s) => scope_spans.spans.push(s),
                    Err(e) => rejected.push(e),
                }
            }
            out.scope_spans.push(scope_spans);
        }
        req.resource_spans.push(out);
    }
    Ok((req, rejected))
}

/// The request, and the log records rejected alone (with why).
pub(crate) fn logs(body: &[u8]) -> Result<(ExportLogsServiceRequest, Vec<Error>), Error> {
    let root = parse(body)?;
    let mut req = ExportLogsServiceRequest::default();
    let mut rejected = Vec::new();
    for (i, rl) in list(&root, "resourceLogs", "resource_logs", "")? {
        let at = format!("resourceLogs[{i}]");
        let rl = object(rl, &at)?;
        let mut out = ResourceLogs {
            resource: resource(rl, &at)?,
            schema_url: string(rl, "schemaUrl", "schema_url", &at)?,
            ..Default::default()
        };
        for (j, sl) in list(rl, "scopeLogs", "scope_logs", &at)? {
            let at = format!("{at}.scopeLogs[{j}]");
            let sl = object(sl, &at)?;
            let mut scope_logs = ScopeLogs {
                scope: scope(sl, &at)?,
                schema_url: string(sl, "schemaUrl", "schema_url", &at)?,
                ..Default::default()
            };
            for (k, l) in list(sl, "logRecords", "log_records", &at)? {
                let at = format!("{at}.logRecords[{k}]");
                match object(l, &at).and_then(|l| log_record(l, &at)) {
                    Ok(l) => scope_logs.log_records.push(l),
                    Err(e) => rejected.push(e),
                }
            }
            out.scope_logs.push(scope_logs);
        }
        req.resource_logs.push(out);
    }
    Ok((req, rejected))
}

fn parse(body: &[u8]) -> Result<Obj, Error> {
    // An empty body is an empty request, as it is in protobuf.
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Obj::new());
    }
    match serde_json::from_slice(body).map_err(|e| e.to_string())? {
        J::Object(o) => Ok(o),
        J::Null => Ok(Obj::new()),
        _ => Err("the request is not a JSON object".into()),
    }
}

fn span(s: &Obj, at: &str) -> Result<Span, Error> {
    let mut out = Span {
        trace_id: id(s, "traceId", "trace_id", at)?,
        span_id: id(s, "spanId", "span_id", at)?,
        trace_state: string(s, "traceState", "trace_state", at)?,
        parent_span_id: id(s, "parentSpanId", "parent_span_id", at)?,
        flags: uint32(s, "flags", "flags", at)?,
        name: string(s, "name", "name", at)?,
        kind: enumeration(s, "kind", "kind", at, |n| {
            span::SpanKind::from_str_name(n).map(|k| k as i32)
        })?,
        start_time_unix_nano: uint64(s, "startTimeUnixNano", "start_time_unix_nano", at)?,
        end_time_unix_nano: uint64(s, "endTimeUnixNano", "end_time_unix_nano", at)?,
        attributes: attributes(s, at)?,
        dropped_attributes_count: dropped(s, at)?,
        dropped_events_count: uint32(s, "droppedEventsCount", "dropped_events_count", at)?,
        dropped_links_count: uint32(s, "droppedLinksCount", "dropped_links_count", at)?,
        ..Default::default()
    };
    for (i, e) in list(s, "events", "events", at)? {
        let at = format!("{at}.events[{i}]");
        let e = object(e, &at)?;
        out.events.push(span::Event {
            time_unix_nano: uint64(e, "timeUnixNano", "time_unix_nano", &at)?,
            name: string(e, "name", "name", &at)?,
            attributes: attributes(e, &at)?,
            dropped_attributes_count: dropped(e, &at)?,
        });
    }
    for (i, l) in list(s, "links", "links", at)? {
        let at = format!("{at}.links[{i}]");
        let l = object(l, &at)?;
        out.links.push(span::Link {
            trace_id: id(l, "traceId", "trace_id", &at)?,
            span_id: id(l, "spanId", "span_id", &at)?,
            trace_state: string(l, "traceState", "trace_state", &at)?,
            attributes: attributes(l, &at)?,
            dropped_attributes_count: dropped(l, &at)?,
            flags: uint32(l, "flags", "flags", &at)?,
        });
    }
    if let Some(st) = field(s, "status", "status") {
        let at = format!("{at}.status");
        let st = object(st, &at)?;
        out.status = Some(Status {
            message: string(st, "message", "message", &at)?,
            code: enumeration(st, "code", "code", &at, |n| {
                status::StatusCode::from_str_name(n).map(|c| c as i32)
            })?,
        });
    }
    Ok(out)
}

fn log_record(l: &Obj, at: &str) -> Result<LogRecord, Error> {
    Ok(LogRecord {
        time_unix_nano: uint64(l, "timeUnixNano", "time_unix_nano", at)?,
        observed_time_unix_nano: uint64(l, "observedTimeUnixNano", "observed_time_unix_nano", at)?,
        severity_number: enumeration(l, "severityNumber", "severity_number", at, |n| {
            SeverityNumber::from_str_name(n).map(|c| c as i32)
        })?,
        severity_text: string(l, "severityText", "severity_text", at)?,
        body: match field(l, "body", "body") {
            Some(v) => Some(any_value(v, &format!("{at}.body"))?),
            None => None,
        },
        attributes: attributes(l, at)?,
        dropped_attributes_count: dropped(l, at)?,
        flags: uint32(l, "flags", "flags", at)?,
        // A log record's ids are checked leniently by the conversion (an
        // invalid one leaves the record unlinked), so here only their hex.
        trace_id: id(l, "traceId", "trace_id", at)?,
        span_id: id(l, "spanId", "span_id", at)?,
        event_name: string(l, "eventName", "event_name", at)?,
    })
}

fn resource(o: &Obj, at: &str) -> Result<Option<Resource>, Error> {
    let Some(r) = field(o, "resource", "resource") else {
        return Ok(None);
    };
    let at = format!("{at}.resource");
    let r = object(r, &at)?;
    Ok(Some(Resource {
        attributes: attributes(r, &at)?,
        dropped_attributes_count: dropped(r, &at)?,
        ..Default::default()
    }))
}

fn scope(o: &Obj, at: &str) -> Result<Option<InstrumentationScope>, Error> {
    let Some(s) = field(o, "scope", "scope") else {
        return Ok(None);
    };
    let at = format!("{at}.scope");
    let s = object(s, &at)?;
    Ok(Some(InstrumentationScope {
        name: string(s, "name", "name", &at)?,
        version: string(s, "version", "version", &at)?,
        attributes: attributes(s, &at)?,
        dropped_attributes_count: dropped(s, &at)?,
    }))
}

fn attributes(o: &Obj, at: &str) -> Result<Vec<KeyValue>, Error> {
    key_values(
        list(o, "attributes", "attributes", at)?,
        &format!("{at}.attributes"),
    )
}

fn key_values<'a>(
    items: impl Iterator<Item = (usize, &'a J)>,
    at: &str,
) -> Result<Vec<KeyValue>, Error> {
    items
        .map(|(i, kv)| {
            let at = format!("{at}[{i}]");
            let kv = object(kv, &at)?;
            Ok(KeyValue {
                key: string(kv, "key", "key", &at)?,
                value: match field(kv, "value", "value") {
                    Some(v) => Some(any_value(v, &format!("{at}.value"))?),
                    None => None,
                },
                key_strindex: field(kv, "keyStrindex", "key_strindex")
                    .map_or(Ok(0), |v| as_int(v, &format!("{at}.keyStrindex")))?,
            })
        })
        .collect()
}

fn dropped(o: &Obj, at: &str) -> Result<u32, Error> {
    uint32(o, "droppedAttributesCount", "dropped_attributes_count", at)
}

/// An AnyValue: an object with one of the value members (none: an empty value).
fn any_value(v: &J, at: &str) -> Result<AnyValue, Error> {
    let o = object(v, at)?;
    let set = VALUE_MEMBERS
        .iter()
        .filter(|(camel, snake)| field(o, camel, snake).is_some())
        .count();
    if set > 1 {
        return Err(format!("{at}: more than one value member (a oneof)"));
    }
    let one = |camel: &str, snake: &str| field(o, camel, snake);
    let value = if let Some(v) = one("stringValue", "string_value") {
        Some(any_value::Value::StringValue(as_string(v, at)?))
    } else if let Some(v) = one("boolValue", "bool_value") {
        Some(any_value::Value::BoolValue(v.as_bool().ok_or_else(
            || format!("{at}: boolValue is not a boolean"),
        )?))
    } else if let Some(v) = one("intValue", "int_value") {
        Some(any_value::Value::IntValue(as_int::<i64>(v, at)?))
    } else if let Some(v) = one("doubleValue", "double_value") {
        Some(any_value::Value::DoubleValue(as_double(v, at)?))
    } else if let Some(v) = one("arrayValue", "array_value") {
        let at = format!("{at}.arrayValue");
        let a = object(v, &at)?;
        let values = list(a, "values", "values", &at)?
            .map(|(i, v)| any_value(v, &format!("{at}.values[{i}]")))
            .collect::<Result<_, _>>()?;
        Some(any_value::Value::ArrayValue(ArrayValue { values }))
    } else if let Some(v) = one("kvlistValue", "kvlist_value") {
        let at = format!("{at}.kvlistValue");
        let kv = object(v, &at)?;
        let values = key_values(list(kv, "values", "values", &at)?, &format!("{at}.values"))?;
        Some(any_value::Value::KvlistValue(KeyValueList { values }))
    } else if let Some(v) = one("bytesValue", "bytes_value") {
        Some(any_value::Value::BytesValue(as_bytes(v, at)?))
    } else if let Some(v) = one("stringValueStrindex", "string_value_strindex") {
        Some(any_value::Value::StringValueStrindex(as_int::<i32>(v, at)?))
    } else {
        None
    };
    Ok(AnyValue { value })
}

/// The members of an AnyValue's `value` oneof.
const VALUE_MEMBERS: [(&str, &str); 8] = [
    ("stringValue", "string_value"),
    ("boolValue", "bool_value"),
    ("intValue", "int_value"),
    ("doubleValue", "double_value"),
    ("arrayValue", "array_value"),
    ("kvlistValue", "kvlist_value"),
    ("bytesValue", "bytes_value"),
    ("stringValueStrindex", "string_value_strindex"),
];

/// Member `camel` (or its .proto name `snake`); `null` is absent.
fn field<'a>(o: &'a Obj, camel: &str, snake: &str) -> Option<&'a J> {
    o.get(camel)
        .or_else(|| o.get(snake))
        .filter(|v| !v.is_null())
}

fn object<'a>(v: &'a J, at: &str) -> Result<&'a Obj, Error> {
    static EMPTY: std::sync::OnceLock<Obj> = std::sync::OnceLock::new();
    match v {
        J::Object(o) => Ok(o),
        J::Null => Ok(EMPTY.get_or_init(Obj::new)),
        _ => Err(format!("{at}: not an object")),
    }
}

fn list<'a>(
    o: &'a Obj,
    camel: &str,
    snake: &str,
    at: &str,
) -> Result<impl Iterator<Item = (usize, &'a J)>, Error> {
    match field(o, camel, snake) {
        None => Ok([].iter().enumerate()),
        Some(J::Array(a)) => Ok(a.iter().enumerate()),
        Some(_) => Err(format!("{}{camel}: not an array", prefix(at))),
    }
}

fn prefix(at: &str) -> String {
    if at.is_empty() {
        String::new()
    } else {
        format!("{at}.")
    }
}

fn string(o: &Obj, camel: &str, snake: &str, at: &str) -> Result<String, Error> {
    match field(o, camel, snake) {
        None => Ok(String::new()),
        Some(v) => as_string(v, &format!("{}{camel}", prefix(at))),
    }
}

fn as_string(v: &J, at: &str) -> Result<String, Error> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{at}: not a string"))
}

/// An id: hex, any case; empty when absent.
fn id(o: &Obj, camel: &str, snake: &str, at: &str) -> Result<Vec<u8>, Error> {
    let s = string(o, camel, snake, at)?;
    hex::decode(&s).map_err(|_| format!("{}{camel}: {s:?} is not hex", prefix(at)))
}

fn uint64(o: &Obj, camel: &str, snake: &str, at: &str) -> Result<u64, Error> {
    field(o, camel, snake).map_or(Ok(0), |v| as_int(v, &format!("{}{camel}", prefix(at))))
}

fn uint32(o: &Obj, camel: &str, snake: &str, at: &str) -> Result<u32, Error> {
    field(o, camel, snake).map_or(Ok(0), |v| as_int(v, &format!("{}{camel}", prefix(at))))
}

/// An enum: its number, or its name (an unknown name is 0, as an unknown
/// number would be read as unspecified).
fn enumeration(
    o: &Obj,
    camel: &str,
    snake: &str,
    at: &str,
    by_name: impl Fn(&str) -> Option<i32>,
) -> Result<i32, Error> {
    match field(o, camel, snake) {
        None => Ok(0),
        Some(J::String(name)) if name.trim().parse::<i64>().is_err() => {
            Ok(by_name(name).unwrap_or(0))
        }
        Some(v) => as_int(v, &format!("{}{camel}", prefix(at))),
    }
}

/// An integer as a JSON number (an integral float too, as `1e3`) or a
/// decimal string, within `T`'s range.
fn as_int<T: TryFrom<i128>>(v: &J, at: &str) -> Result<T, Error> {
    let wide: Option<i128> = match v {
        J::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 2f64.powi(64))
                    .map(|f| f as i128)
            }),
        J::String(s) => s.trim().parse::<i128>().ok(),
        _ => None,
    };
    let wide = wide.ok_or_else(|| format!("{at}: not an integer"))?;
    T::try_from(wide).map_err(|_| format!("{at}: {wide} is out of range"))
}

fn as_double(v: &J, at: &str) -> Result<f64, Error> {
    match v {
        J::Number(n) => n.as_f64().ok_or_else(|| format!("{at}: not a number")),
        J::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => other
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .ok_or_else(|| format!("{at}: {other:?} is not a number")),
        },
        _ => Err(format!("{at}: not a number")),
    }
}

/// Base64, standard or URL-safe, padded or not.
fn as_bytes(v: &J, at: &str) -> Result<Vec<u8>, Error> {
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    use base64::engine::DecodePaddingMode;
    const ANY: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, ANY);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, ANY);
    let s = v
        .as_str()
        .ok_or_else(|| format!("{at}: bytesValue is not a string"))?;
    let engine = if s.contains(['-', '_']) {
        &URL_SAFE
    } else {
        &STANDARD
    };
    engine
        .decode(s)
        .map_err(|e| format!("{at}: bytesValue is not base64: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(json: &str) -> Option<any_value::Value> {
        let body = format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"0102030405060708090A0B0C0D0E0F10",
            "spanId":"0102030405060708","attributes":[{{"key":"k","value":{json}}}]}}]}}]}}]}}"#
        );
        let (req, rejected) = traces(body.as_bytes()).unwrap();
        assert!(rejected.is_empty(), "{rejected:?}");
        let s = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(s.trace_id, (1..=16).collect::<Vec<u8>>());
        s.attributes[0].value.as_ref().and_then(|v| v.value.clone())
    }

    #[test]
    fn values_in_every_form_the_mapping_allows() {
        use any_value::Value as V;
        let f = |json: &str| match value(json) {
            Some(V::DoubleValue(d)) => d,
            other => panic!("{json}: {other:?}"),
        };
        assert!(f(r#"{"doubleValue":"NaN"}"#).is_nan());
        assert_eq!(f(r#"{"doubleValue":"Infinity"}"#), f64::INFINITY);
        assert_eq!(f(r#"{"doubleValue":"-Infinity"}"#), f64::NEG_INFINITY);
        assert_eq!(f(r#"{"doubleValue":"2.5"}"#), 2.5);
        assert_eq!(f(r#"{"double_value":0.5}"#), 0.5);
        assert_eq!(value(r#"{"intValue":"-7"}"#), Some(V::IntValue(-7)));
        assert_eq!(value(r#"{"intValue":7}"#), Some(V::IntValue(7)));
        assert_eq!(value(r#"{"boolValue":true}"#), Some(V::BoolValue(true)));
        assert_eq!(
            value(r#"{"arrayValue":{}}"#),
            Some(V::ArrayValue(ArrayValue { values: vec![] }))
        );
        assert_eq!(
            value(r#"{"kvlistValue":{}}"#),
            Some(V::KvlistValue(KeyValueList { values: vec![] }))
        );
        for b64 in [r#""AAE=""#, r#""AAE""#] {
            assert_eq!(
                value(&format!(r#"{{"bytesValue":{b64}}}"#)),
                Some(V::BytesValue(vec![0, 1]))
            );
        }
        assert_eq!(
            value(r#"{"bytesValue":"-_8="}"#),
            Some(V::BytesValue(vec![0xfb, 0xff]))
        );
        for empty in ["{}", "null", r#"{"doubleValue":null}"#] {
            assert_eq!(value(empty), None, "{empty}");
        }
        assert_eq!(
            value(r#"{"stringValueStrindex":3}"#),
            Some(V::StringValueStrindex(3))
        );
    }

    #[test]
    fn defaults_strings_for_numbers_and_nulls() {
        let body = br#"{"resourceSpans":[{"resource":{"attributes":null,"entityRefs":[{"type":"service"}]},
            "scopeSpans":[{"scope":{"name":"s"},"spans":[{"traceId":"01010101010101010101010101010101",
            "spanId":"0101010101010101","kind":null,"droppedEventsCount":"4","startTimeUnixNano":"12",
            "endTimeUnixNano":13,"links":[{"traceId":"","spanId":"","flags":"1"}],
            "status":{"code":2}}]}]}]}"#;
        let (req, _) = traces(body).unwrap();
        let s = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(
            (
                s.kind,
                s.dropped_events_count,
                s.start_time_unix_nano,
                s.end_time_unix_nano
            ),
            (0, 4, 12, 13)
        );
        assert_eq!(s.links[0].flags, 1);
        assert_eq!(s.status.as_ref().unwrap().code, 2);
        assert_eq!(traces(b"").unwrap().0, ExportTraceServiceRequest::default());
        assert_eq!(
            logs(b" {} ").unwrap().0,
            ExportLogsServiceRequest::default()
        );
    }

    #[test]
    fn a_span_that_cannot_be_read_is_rejected_alone_and_named() {
        let one = |span: &str| {
            let body = format!(
                r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"name":"good"}},{span}]}}]}}]}}"#
            );
            let (req, rejected) = traces(body.as_bytes()).unwrap();
            assert_eq!(req.resource_spans[0].scope_spans[0].spans.len(), 1);
            assert_eq!(rejected.len(), 1, "{rejected:?}");
            rejected[0].clone()
        };
        assert_eq!(
            one(r#"{"spanId":"xyz"}"#),
            "resourceSpans[0].scopeSpans[0].spans[1].spanId: \"xyz\" is not hex"
        );
        let e = one(r#"{"startTimeUnixNano":"-1"}"#);
        assert!(
            e.ends_with("spans[1].startTimeUnixNano: -1 is out of range"),
            "{e}"
        );
        let e = one(
            r#"{"attributes":[{"key":"k","value":{"arrayValue":{"values":[{"intValue":"x"}]}}}]}"#,
        );
        assert!(
            e.ends_with("attributes[0].value.arrayValue.values[0]: not an integer"),
            "{e}"
        );
        let e = one(r#"{"attributes":[{"key":"k","value":{"stringValue":"a","intValue":1}}]}"#);
        assert!(e.ends_with("more than one value member (a oneof)"), "{e}");
        assert!(one("7").ends_with("spans[1]: not an object"));
        // A request whose structure is not OTLP is refused whole.
        let e = traces(br#"{"resourceSpans":{}}"#).unwrap_err();
        assert_eq!(e, "resourceSpans: not an array");
        assert!(traces(b"[1]").is_err());
        assert!(traces(b"{").is_err());
        // Log records alike.
        let (req, rejected) =
            logs(br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"zz"},{}]}]}]}"#)
                .unwrap();
        assert_eq!(req.resource_logs[0].scope_logs[0].log_records.len(), 1);
        assert!(rejected[0].ends_with("logRecords[0].traceId: \"zz\" is not hex"));
    }

    #[test]
    fn enums_as_numbers_or_names() {
        let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[
            {"kind":"SPAN_KIND_SERVER","status":{"code":"STATUS_CODE_ERROR"}},
            {"kind":3,"status":{"code":"1"}},
            {"kind":"SPAN_KIND_FROM_THE_FUTURE"}]}]}]}"#;
        let (req, rejected) = traces(body).unwrap();
        assert!(rejected.is_empty());
        let spans = &req.resource_spans[0].scope_spans[0].spans;
        let got: Vec<(i32, i32)> = spans
            .iter()
            .map(|s| (s.kind, s.status.as_ref().map_or(0, |st| st.code)))
            .collect();
        assert_eq!(got, [(2, 2), (3, 1), (0, 0)]);
        let (req, _) = logs(br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"severityNumber":"SEVERITY_NUMBER_WARN"}]}]}]}"#).unwrap();
        assert_eq!(
            req.resource_logs[0].scope_logs[0].log_records[0].severity_number,
            13
        );
    }
}
