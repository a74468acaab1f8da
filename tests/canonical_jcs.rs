//! The canonical encoder is byte-identical to the reference RFC 8785
//! implementation (`serde_jcs`) on random records.

use proptest::prelude::*;
use sealtrail::record::StoredRecord;
use sealtrail::{
    canonical, Attributes, Digest, Event, Kind, Status, StatusCode, TraceRecord, Value,
};

/// Strings mixing ASCII, controls, BMP characters on both sides of the
/// surrogate range and astral characters (where UTF-8 and UTF-16 orders differ).
fn text() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        4 => proptest::char::range('a', 'z'),
        1 => proptest::char::range('\u{0}', '\u{1f}'),
        1 => Just('"'),
        1 => Just('\\'),
        1 => proptest::char::range('\u{80}', '\u{7ff}'),
        1 => proptest::char::range('\u{e000}', '\u{ffff}'),
        1 => proptest::char::range('\u{10000}', '\u{10ffff}'),
        1 => any::<char>(),
    ];
    // Up to 40 characters: several 8-byte words, escapes anywhere in them.
    proptest::collection::vec(ch, 0..40).prop_map(|v| v.into_iter().collect())
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO,
        Just(1e21),
        Just(1e-7),
        Just(-0.0),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        (-1e6..1e6f64),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        text().prop_map(Value::Str),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        float().prop_map(Value::Float),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::Bytes),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| Value::Map(Attributes(m))),
        ]
    })
}

fn attributes() -> impl Strategy<Value = Attributes> {
    proptest::collection::btree_map(text(), value(), 0..6).prop_map(Attributes)
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::LlmCall),
        Just(Kind::ToolCall),
        Just(Kind::PolicyCheck),
        Just(Kind::Agent),
        Just(Kind::Human),
        Just(Kind::DataAccess),
        Just(Kind::Span),
        Just(Kind::Gap),
    ]
}

prop_compose! {
    fn record()(
        attributes in attributes(),
        resource in attributes(),
        events in proptest::collection::vec((attributes(), text(), any::<u64>()), 0..3),
        kind in kind(),
        name in text(),
        session in text(),
        seq in 0u64..(1 << 53),
        times in (any::<u64>(), any::<u64>(), any::<u64>()),
        ids in (proptest::option::of(text()), proptest::option::of(text()), proptest::option::of(text())),
        prev in any::<[u8; 32]>(),
        status in (prop_oneof![Just(StatusCode::Unset), Just(StatusCode::Ok), Just(StatusCode::Error)], proptest::option::of(text())),
        source in text(),
    ) -> TraceRecord {
        let mut r = TraceRecord::new(session, kind, name);
        r.attributes = attributes;
        r.resource = resource;
        r.events = events.into_iter().map(|(attributes, name, time_ns)| Event { attributes, name, time_ns }).collect();
        r.seq = seq;
        (r.start_ns, r.end_ns, r.received_ns) = times;
        (r.trace_id, r.span_id, r.parent_span_id) = ids;
        r.prev = Digest(prev);
        r.status = Status { code: status.0, message: status.1 };
        r.source = source;
        r
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn canonical_bytes_equal_serde_jcs(r in record()) {
        let ours = canonical::to_vec(&r).unwrap();
        let reference = serde_jcs::to_vec(&r).unwrap();
        // The fast path the chain uses writes the same bytes.
        let mut fast = Vec::new();
        canonical::write_record(&r, &mut fast).unwrap();
        prop_assert_eq!(&fast, &ours);
        prop_assert_eq!(String::from_utf8(ours.clone()).unwrap(), String::from_utf8(reference).unwrap());
        // And it parses back to the same record (floats compared by bits, NaN included).
        let back: TraceRecord = serde_json::from_slice(&ours).unwrap();
        prop_assert_eq!(canonical::to_vec(&back).unwrap(), ours);
    }

    #[test]
    fn batch_line_envelope_is_canonical(r in record()) {
        let mut line = Vec::new();
        let hash = sealtrail::chain::encode_line(&r, &mut line).unwrap();
        line.pop();
        let env = StoredRecord { hash, record: r };
        prop_assert_eq!(serde_jcs::to_vec(&env).unwrap(), line);
    }
}
