//! Field capture: `tracing` values into typed attributes.

use std::fmt;

use tracing::field::{Field, FieldSet, Visit};

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

/// Where captured fields go: a span's compact list of slots, or an event's
/// attribute map.
pub(crate) trait Sink {
    fn put(&mut self, field: &Field, value: Value);
}

/// One captured span field in 24 bytes: the field's index in its span's
/// field set (names are in the span's `&'static` metadata, so the hot path
/// copies only values) and its value. Strings are boxed exactly; the rare
/// values (bytes) are boxed whole.
#[derive(Debug)]
pub(crate) enum Slot {
    Str(u16, Box<str>),
    Int(u16, i64),
    Float(u16, f64),
    Bool(u16, bool),
    Other(u16, Box<Value>),
}

impl Slot {
    fn new(index: u16, v: Value) -> Slot {
        match v {
            Value::Str(s) => Slot::Str(index, s.into_boxed_str()),
            Value::Int(i) => Slot::Int(index, i),
            Value::Float(f) => Slot::Float(index, f),
            Value::Bool(b) => Slot::Bool(index, b),
            other => Slot::Other(index, Box::new(other)),
        }
    }

    pub(crate) fn index(&self) -> usize {
        match self {
            Slot::Str(i, _)
            | Slot::Int(i, _)
            | Slot::Float(i, _)
            | Slot::Bool(i, _)
            | Slot::Other(i, _) => *i as usize,
        }
    }

    /// The value as a session id, as [`crate::map::session_from`] reads one.
    pub(crate) fn as_session(&self) -> Option<String> {
        match self {
            Slot::Str(_, s) if !s.is_empty() => Some(s.to_string()),
            Slot::Int(_, i) => Some(i.to_string()),
            _ => None,
        }
    }

    pub(crate) fn into_value(self) -> Value {
        match self {
            Slot::Str(_, s) => Value::Str(s.into_string()),
            Slot::Int(_, i) => Value::Int(i),
            Slot::Float(_, f) => Value::Float(f),
            Slot::Bool(_, b) => Value::Bool(b),
            Slot::Other(_, v) => *v,
        }
    }
}

/// A span's fields, in the order first recorded; a later value replaces an earlier one.
pub(crate) type Fields = Vec<Slot>;

impl Sink for Fields {
    fn put(&mut self, field: &Field, value: Value) {
        // tracing allows 32 fields per callsite; an index beyond u16 cannot occur.
        let Ok(index) = u16::try_from(field.index()) else {
            return;
        };
        let slot = Slot::new(index, value);
        // A span's fields arrive in field-set order: a new one is past the last.
        if self.last().is_none_or(|s| s.index() < field.index()) {
            self.push(slot);
            return;
        }
        match self.iter_mut().find(|s| s.index() == field.index()) {
            Some(old) => *old = slot,
            None => self.push(slot),
        }
    }
}

/// The value of the field named `name` among `fields`, as a session id.
pub(crate) fn session_field(fields: &Fields, set: &FieldSet, name: &str) -> Option<String> {
    let index = set.field(name)?.index();
    fields.iter().find(|s| s.index() == index)?.as_session()
}

/// The fields with their names, in the order first recorded.
pub(crate) fn named(fields: Fields, set: &FieldSet) -> impl Iterator<Item = (String, Value)> + '_ {
    let names: Vec<&'static str> = set.iter().map(|f| f.name()).collect();
    fields.into_iter().filter_map(move |s| {
        let name = names.get(s.index())?;
        Some(((*name).to_owned(), s.into_value()))
    })
}

impl Sink for Attributes {
    fn put(&mut self, field: &Field, value: Value) {
        self.0.insert(field.name().to_owned(), value);
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
            _ => self.attributes.put(field, value),
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
