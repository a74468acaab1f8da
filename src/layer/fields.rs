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

/// Where captured fields go: a span's packed [`Fields`], or an event's
/// attribute map. Values arrive borrowed, so a sink copies only what it keeps.
pub(crate) trait Sink {
    fn put_str(&mut self, field: &Field, value: &str);
    fn put_int(&mut self, field: &Field, value: i64);
    fn put_float(&mut self, field: &Field, value: f64);
    fn put_bool(&mut self, field: &Field, value: bool);
    fn put_bytes(&mut self, field: &Field, value: &[u8]);
    /// A `Debug` (or, through `%`, `Display`) value, as its string.
    fn put_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put_str(field, &format!("{value:?}"));
    }
}

const STR: u8 = 0;
const INT: u8 = 1;
const FLOAT: u8 = 2;
const BOOL: u8 = 3;
const BYTES: u8 = 4;

/// A span's captured fields, packed into one buffer that lives inside the
/// span's own state up to [`INLINE`] bytes (a span with eight short fields
/// needs about 90), and on the heap beyond: the instrumented thread allocates
/// nothing per field. Each entry is the field's index in its span's field set
/// (names are in the span's `&'static` metadata), a tag, and the value:
/// strings and bytes as a little-endian u32 length and the bytes, numbers as
/// 8 little-endian bytes, a bool as one byte. A field recorded again
/// (`Span::record`) is appended; the last entry for an index wins.
#[derive(Debug)]
pub(crate) struct Fields {
    /// Bytes used in `inline`, while nothing has spilled.
    len: usize,
    inline: [u8; INLINE],
    /// Every byte, once they no longer fit inline.
    spilled: Vec<u8>,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            len: 0,
            inline: [0; INLINE],
            spilled: Vec::new(),
        }
    }
}

/// Bytes of fields kept inline.
pub(crate) const INLINE: usize = 128;

/// A value read back from [`Fields`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum FieldValue<'a> {
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    Bytes(&'a [u8]),
}

impl FieldValue<'_> {
    /// The value as a session id, as [`crate::map::session_from`] reads one.
    pub(crate) fn as_session(self) -> Option<String> {
        match self {
            FieldValue::Str(s) if !s.is_empty() => Some(crate::map::storable_session(s.to_owned())),
            FieldValue::Int(i) => Some(i.to_string()),
            _ => None,
        }
    }

    pub(crate) fn to_value(self) -> Value {
        match self {
            FieldValue::Str(s) => Value::Str(s.to_owned()),
            FieldValue::Int(i) => Value::Int(i),
            FieldValue::Float(f) => Value::Float(f),
            FieldValue::Bool(b) => Value::Bool(b),
            FieldValue::Bytes(b) => Value::Bytes(b.to_vec()),
        }
    }
}

impl Fields {
    /// Bytes held on the heap (past the inline ones).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.spilled.capacity()
    }

    fn bytes(&self) -> &[u8] {
        if self.spilled.capacity() > 0 {
            &self.spilled
        } else {
            &self.inline[..self.len]
        }
    }

    /// Appends one entry: its header and value (given in two parts).
    fn push(&mut self, field: &Field, tag: u8, a: &[u8], b: &[u8]) {
        // tracing allows 32 fields per callsite: an index beyond u8 cannot occur.
        let Ok(index) = u8::try_from(field.index()) else {
            return;
        };
        let header = [index, tag];
        let n = 2 + a.len() + b.len();
        if self.spilled.capacity() == 0 {
            if self.len + n <= INLINE {
                let at = self.len;
                self.inline[at..at + 2].copy_from_slice(&header);
                self.inline[at + 2..at + 2 + a.len()].copy_from_slice(a);
                self.inline[at + 2 + a.len()..at + n].copy_from_slice(b);
                self.len += n;
                return;
            }
            let mut v = Vec::with_capacity((self.len + n) * 2);
            v.extend_from_slice(&self.inline[..self.len]);
            self.spilled = v;
        }
        self.spilled.extend_from_slice(&header);
        self.spilled.extend_from_slice(a);
        self.spilled.extend_from_slice(b);
    }

    /// Appends every entry of `other` (recorded later: they win).
    pub(crate) fn extend(&mut self, other: &Fields) {
        let add = other.bytes();
        if self.spilled.capacity() == 0 {
            if self.len + add.len() <= INLINE {
                self.inline[self.len..self.len + add.len()].copy_from_slice(add);
                self.len += add.len();
                return;
            }
            let mut v = Vec::with_capacity((self.len + add.len()) * 2);
            v.extend_from_slice(&self.inline[..self.len]);
            self.spilled = v;
        }
        self.spilled.extend_from_slice(add);
    }

    fn put_len_prefixed(&mut self, field: &Field, tag: u8, bytes: &[u8]) {
        // A value of 4 GiB or more is cut to fit the length prefix.
        let bytes = &bytes[..bytes.len().min(u32::MAX as usize)];
        self.push(field, tag, &(bytes.len() as u32).to_le_bytes(), bytes);
    }

    /// Every entry in the order recorded (later ones for the same index
    /// included): index, tag and the value's bytes, not yet decoded.
    fn entries(&self) -> Entries<'_> {
        Entries {
            buf: self.bytes(),
            at: 0,
        }
    }

    fn decode(tag: u8, bytes: &[u8]) -> Option<FieldValue<'_>> {
        let n = || bytes.try_into().ok();
        Some(match tag {
            // Written from a &str, cut (if at all) at a char boundary.
            STR => FieldValue::Str(std::str::from_utf8(bytes).ok()?),
            BYTES => FieldValue::Bytes(bytes),
            BOOL => FieldValue::Bool(bytes.first()? != &0),
            INT => FieldValue::Int(i64::from_le_bytes(n()?)),
            _ => FieldValue::Float(f64::from_le_bytes(n()?)),
        })
    }

    /// Every entry in the order recorded, later ones for the same index included.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, FieldValue<'_>)> + '_ {
        self.entries()
            .filter_map(|(i, tag, bytes)| Some((i, Self::decode(tag, bytes)?)))
    }

    /// The value last recorded for the field at `index`.
    pub(crate) fn get(&self, index: usize) -> Option<FieldValue<'_>> {
        // A plain loop: `filter().last()` kept its accumulator in
        // overlapping stack slots and stalled on every entry.
        let mut found: Option<(u8, &[u8])> = None;
        for (i, tag, bytes) in self.entries() {
            if i == index {
                found = Some((tag, bytes));
            }
        }
        let (tag, bytes) = found?;
        Self::decode(tag, bytes)
    }
}

struct Entries<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Entries<'a> {
    type Item = (usize, u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.buf;
        let mut at = self.at;
        let (index, tag) = (*b.get(at)?, *b.get(at + 1)?);
        at += 2;
        let len = match tag {
            STR | BYTES => {
                let len = b.get(at..at + 4)?;
                at += 4;
                u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize
            }
            BOOL => 1,
            _ => 8,
        };
        let value = b.get(at..at + len)?;
        self.at = at + len;
        Some((index as usize, tag, value))
    }
}

impl Sink for Fields {
    fn put_str(&mut self, field: &Field, value: &str) {
        let mut len = value.len().min(u32::MAX as usize);
        while !value.is_char_boundary(len) {
            len -= 1;
        }
        self.put_len_prefixed(field, STR, &value.as_bytes()[..len]);
    }
    fn put_int(&mut self, field: &Field, value: i64) {
        self.push(field, INT, &value.to_le_bytes(), &[]);
    }
    fn put_float(&mut self, field: &Field, value: f64) {
        self.push(field, FLOAT, &value.to_le_bytes(), &[]);
    }
    fn put_bool(&mut self, field: &Field, value: bool) {
        self.push(field, BOOL, &[value as u8], &[]);
    }
    fn put_bytes(&mut self, field: &Field, value: &[u8]) {
        self.put_len_prefixed(field, BYTES, value);
    }
}

/// The index of the first of the fields at `indexes` whose value is a
/// session id (as [`crate::map::session_from`] reads one).
pub(crate) fn session_index(fields: &Fields, indexes: &[u8]) -> Option<usize> {
    indexes
        .iter()
        .map(|&i| i as usize)
        .find(|&i| match fields.get(i) {
            Some(FieldValue::Str(s)) => !s.is_empty(),
            Some(FieldValue::Int(_)) => true,
            _ => false,
        })
}

/// The fields with their names; a field recorded twice has its last value.
pub(crate) fn named(fields: &Fields, set: &FieldSet) -> Attributes {
    let mut out = Attributes::new();
    for (index, v) in fields.iter() {
        if let Some(f) = set.iter().nth(index) {
            out.insert(f.name(), v.to_value());
        }
    }
    out
}

impl Sink for Attributes {
    fn put_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::Str(value.to_owned()));
    }
    fn put_int(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::Int(value));
    }
    fn put_float(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::Float(value));
    }
    fn put_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::Bool(value));
    }
    fn put_bytes(&mut self, field: &Field, value: &[u8]) {
        self.0
            .insert(field.name().to_owned(), Value::Bytes(value.to_vec()));
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
    /// Whether `field` is a control field, taken out of the attributes.
    fn is_control(&self, field: &Field) -> bool {
        matches!(
            field.name(),
            OTEL_NAME | OTEL_STATUS_CODE | OTEL_STATUS_MESSAGE
        ) || (field.name() == MESSAGE && self.message.is_some())
    }

    fn put_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            OTEL_NAME => *self.name = Some(value.to_owned()),
            OTEL_STATUS_CODE => {
                if value.eq_ignore_ascii_case("error") {
                    self.status.0 = StatusCode::Error;
                } else if value.eq_ignore_ascii_case("ok") {
                    self.status.0 = StatusCode::Ok;
                }
            }
            OTEL_STATUS_MESSAGE => self.status.1 = Some(value.to_owned()),
            MESSAGE if self.message.is_some() => {
                if let Some(m) = self.message.as_deref_mut() {
                    *m = Some(value.to_owned());
                }
            }
            _ => self.attributes.put_str(field, value),
        }
    }

    /// A control field with a value that is not a string is ignored.
    fn put_int(&mut self, field: &Field, value: i64) {
        if !self.is_control(field) {
            self.attributes.put_int(field, value);
        }
    }

    /// A number beyond i64 is kept exactly, as its decimal string.
    fn put_wide(&mut self, field: &Field, value: impl TryInto<i64> + ToString + Copy) {
        match value.try_into() {
            Ok(i) => self.put_int(field, i),
            Err(_) => self.put_str(field, &value.to_string()),
        }
    }
}

impl<T: Sink> Visit for Capture<'_, T> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if !self.is_control(field) {
            self.attributes.put_float(field, value);
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put_int(field, value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put_wide(field, value);
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.put_wide(field, value);
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.put_wide(field, value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        if !self.is_control(field) {
            self.attributes.put_bool(field, value);
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put_str(field, value);
    }
    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        if !self.is_control(field) {
            self.attributes.put_bytes(field, value);
        }
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut msg = value.to_string();
        let mut source = value.source();
        while let Some(s) = source {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            source = s.source();
        }
        self.put_str(field, &msg);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.is_control(field) {
            self.put_str(field, &format!("{value:?}"));
        } else {
            self.attributes.put_debug(field, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::field::{Empty, Value as _};

    struct Fixture;
    static FIXTURE: Fixture = Fixture;
    impl tracing::Callsite for Fixture {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            &META
        }
    }
    static META: tracing::Metadata<'static> = tracing::Metadata::new(
        "fixture",
        "sealtrail",
        tracing::Level::INFO,
        None,
        None,
        None,
        FieldSet::new(
            &[
                "s",
                "i",
                "f",
                "b",
                "bytes",
                "big",
                "dbg",
                "otel.name",
                "later",
            ],
            tracing::callsite::Identifier(&FIXTURE),
        ),
        tracing::metadata::Kind::SPAN,
    );

    fn capture(
        values: impl FnOnce(&mut Capture<'_, Fields>, &FieldSet),
    ) -> (Fields, Option<String>) {
        let mut fields = Fields::default();
        let mut name = None;
        let mut status = (StatusCode::Unset, None);
        values(
            &mut Capture {
                attributes: &mut fields,
                name: &mut name,
                status: &mut status,
                message: None,
            },
            META.fields(),
        );
        (fields, name)
    }

    #[test]
    fn packed_fields_round_trip_every_type_and_the_last_value_wins() {
        let (fields, name) = capture(|c, set| {
            let f = |n: &str| set.field(n).unwrap();
            "héllo 🦀".record(&f("s"), c);
            (-7i64).record(&f("i"), c);
            1.5f64.record(&f("f"), c);
            true.record(&f("b"), c);
            c.record_bytes(&f("bytes"), &[0, 255]);
            u64::MAX.record(&f("big"), c);
            tracing::field::debug(vec![1, 2]).record(&f("dbg"), c);
            tracing::field::display(3).record(&f("otel.name"), c);
            Empty.record(&f("later"), c);
            8i64.record(&f("i"), c);
            // Past the inline bytes: the buffer moves to the heap intact.
            "late ".repeat(40).as_str().record(&f("later"), c);
        });
        assert_eq!(name.as_deref(), Some("3"), "otel.name is a control field");
        let attrs = named(&fields, META.fields());
        let get = |k: &str| attrs.get(k).cloned();
        assert_eq!(get("s"), Some(Value::Str("héllo 🦀".into())));
        assert_eq!(
            get("i"),
            Some(Value::Int(8)),
            "a field recorded again keeps its last value"
        );
        assert_eq!(get("f"), Some(Value::Float(1.5)));
        assert_eq!(get("b"), Some(Value::Bool(true)));
        assert_eq!(get("bytes"), Some(Value::Bytes(vec![0, 255])));
        assert_eq!(get("big"), Some(Value::Str(u64::MAX.to_string())));
        assert_eq!(get("dbg"), Some(Value::Str("[1, 2]".into())));
        assert_eq!(get("later"), Some(Value::Str("late ".repeat(40))));
        assert_eq!(get("otel.name"), None);
        assert_eq!(attrs.len(), 8);
    }

    #[test]
    fn extending_appends_entries_that_win_inline_and_spilled() {
        let (mut a, _) = capture(|c, set| {
            "first".record(&set.field("s").unwrap(), c);
            1i64.record(&set.field("i").unwrap(), c);
        });
        let (b, _) = capture(|c, set| 2i64.record(&set.field("i").unwrap(), c));
        a.extend(&b);
        let attrs = named(&a, META.fields());
        assert_eq!(attrs.get("s"), Some(&Value::Str("first".into())));
        assert_eq!(attrs.get("i"), Some(&Value::Int(2)));
        // Past the inline bytes, from either side.
        let (long, _) = capture(|c, set| {
            "x".repeat(200)
                .as_str()
                .record(&set.field("later").unwrap(), c)
        });
        a.extend(&long);
        a.extend(&b);
        let attrs = named(&a, META.fields());
        assert_eq!(attrs.get("later"), Some(&Value::Str("x".repeat(200))));
        assert_eq!(attrs.get("s"), Some(&Value::Str("first".into())));
        let mut spilled = long;
        spilled.extend(&a);
        assert_eq!(
            named(&spilled, META.fields()).get("i"),
            Some(&Value::Int(2))
        );
    }

    #[test]
    fn session_index_takes_the_first_key_with_a_usable_value() {
        // The indexes of the fields "s" and "i", in that order of preference.
        let keys = [0, 1];
        let (empty, _) = capture(|c, set| "".record(&set.field("s").unwrap(), c));
        assert_eq!(session_index(&empty, &keys), None);
        let (both, _) = capture(|c, set| {
            "".record(&set.field("s").unwrap(), c);
            42i64.record(&set.field("i").unwrap(), c);
        });
        assert_eq!(session_index(&both, &keys), Some(1));
        assert_eq!(
            both.get(1).and_then(|v| v.as_session()).as_deref(),
            Some("42")
        );
    }
}
