//! Field capture: `tracing` values into typed attributes.

use std::fmt;

use tracing::field::{Field, Visit};

use crate::record::{Attributes, StatusCode, Value};

/// `otel.name`: replaces the span name (as in tracing-opentelemetry).
pub const OTEL_NAME: &str = "otel.name";
/// `otel.status_code`: `OK` or `ERROR`.
pub const OTEL_STATUS_CODE: &str = "otel.status_code";
/// `otel.status_message`: the status message.
pub const OTEL_STATUS_MESSAGE: &str = "otel.status_message";
/// `otel.kind`: the OpenTelemetry span kind (kept as an attribute).
pub const OTEL_KIND: &str = "otel.kind";
/// The field `tracing` uses for an event's message.
pub(crate) const MESSAGE: &str = "message";

/// Where captured fields go: a span's list (names are `&'static`, so the hot
/// path copies only values), or an event's attribute map.
pub(crate) trait Sink {
    fn put(&mut self, name: &'static str, value: Value);
}

/// A span's fields, in the order first recorded; a later value replaces an earlier one.
pub(crate) type Fields = Vec<(&'static str, Value)>;

impl Sink for Fields {
    fn put(&mut self, name: &'static str, value: Value) {
        match self.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.push((name, value)),
        }
    }
}

impl Sink for Attributes {
    fn put(&mut self, name: &'static str, value: Value) {
        self.0.insert(name.to_owned(), value);
    }
}

/// Collects fields; `otel.*` control fields go to their own slots.
pub(crate) struct Capture<'a, T: Sink> {
    pub(crate) attributes: &'a mut T,
    pub(crate) name: &'a mut Option<String>,
    pub(crate) status: &'a mut (StatusCode, Option<String>),
    /// For events: the `message` field.
    pub(crate) message: Option<&'a mut Option<String>>,
}

impl<T: Sink> Capture<'_, T> {
    fn put(&mut self, field: &Field, value: Value) {
        match field.name() {
            OTEL_NAME => {
                if let Value::Str(s) = value {
                    *self.name = Some(s);
                }
            }
            OTEL_STATUS_CODE => {
                if let Value::Str(s) = &value {
                    if s.eq_ignore_ascii_case("error") {
                        self.status.0 = StatusCode::Error;
                    } else if s.eq_ignore_ascii_case("ok") {
                        self.status.0 = StatusCode::Ok;
                    }
                }
            }
            OTEL_STATUS_MESSAGE => {
                if let Value::Str(s) = value {
                    self.status.1 = Some(s);
                }
            }
            MESSAGE if self.message.is_some() => {
                if let (Some(m), Value::Str(s)) = (self.message.as_deref_mut(), value) {
                    *m = Some(s);
                }
            }
            name => self.attributes.put(name, value),
        }
    }
}

impl<T: Sink> Visit for Capture<'_, T> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::Float(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::Int(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        let v = i64::try_from(value).map_or_else(|_| Value::Str(value.to_string()), Value::Int);
        self.put(field, v);
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        let v = i64::try_from(value).map_or_else(|_| Value::Str(value.to_string()), Value::Int);
        self.put(field, v);
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        let v = i64::try_from(value).map_or_else(|_| Value::Str(value.to_string()), Value::Int);
        self.put(field, v);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::Str(value.to_owned()));
    }
    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.put(field, Value::Bytes(value.to_vec()));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut msg = value.to_string();
        let mut source = value.source();
        while let Some(s) = source {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            source = s.source();
        }
        self.put(field, Value::Str(msg));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::Str(format!("{value:?}")));
    }
}
