//! RFC 8785 (JCS) canonical JSON for sealtrail's own types.
//!
//! RFC 8785 asks for three things beyond compact JSON: object members sorted
//! by the UTF-16 code units of their names, numbers in ECMAScript
//! `Number.prototype.toString` form, and a fixed string escaping. serde_json's
//! compact output already escapes exactly as RFC 8785 §3.2.2.2 does (`\b \t \n
//! \f \r \" \\`, other controls as lowercase `\u00xx`, everything else
//! verbatim), so the fast path here is serde_json with a formatter that prints
//! floats the ECMAScript way ([`ryu_js`]), fed by types whose `Serialize`
//! emits members already in canonical order ([`crate::record`] declares struct
//! fields sorted, and [`crate::record::Attributes`] sorts by UTF-16).
//!
//! The output is byte-identical to `serde_jcs` (a property test checks this on
//! random records) at about the cost of plain `serde_json` (see
//! `benches/canonical.rs`). It is *not* a general JCS encoder for arbitrary
//! `Serialize` types: a type whose members are not emitted in sorted order
//! would come out unsorted.

use std::io;

use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter};

/// A serde_json [`Formatter`] that writes numbers as RFC 8785 requires.
#[derive(Clone, Copy, Debug, Default)]
pub struct JcsFormatter;

/// Integers up to 2^53 in magnitude print the same as decimal integers and as
/// ECMAScript numbers; beyond that, JCS numbers are IEEE 754 doubles and round.
const EXACT: u64 = 1 << 53;

macro_rules! int_as_number {
    ($($name:ident: $t:ty),*) => {$(
        fn $name<W: ?Sized + io::Write>(&mut self, w: &mut W, v: $t) -> io::Result<()> {
            if v.unsigned_abs() as u128 <= EXACT as u128 {
                CompactFormatter.$name(w, v)
            } else {
                self.write_f64(w, v as f64)
            }
        }
    )*};
}

impl Formatter for JcsFormatter {
    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, v: f64) -> io::Result<()> {
        // serde_json itself writes a non-finite f64 as `null` before reaching
        // here; this guards the integer paths.
        if !v.is_finite() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "RFC 8785 cannot represent NaN or infinity as a number",
            ));
        }
        let mut buf = ryu_js::Buffer::new();
        w.write_all(buf.format_finite(v).as_bytes())
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, w: &mut W, v: f32) -> io::Result<()> {
        self.write_f64(w, f64::from(v))
    }

    int_as_number!(write_i64: i64, write_i128: i128);

    fn write_u64<W: ?Sized + io::Write>(&mut self, w: &mut W, v: u64) -> io::Result<()> {
        if v <= EXACT {
            CompactFormatter.write_u64(w, v)
        } else {
            self.write_f64(w, v as f64)
        }
    }

    fn write_u128<W: ?Sized + io::Write>(&mut self, w: &mut W, v: u128) -> io::Result<()> {
        if v <= EXACT as u128 {
            CompactFormatter.write_u128(w, v)
        } else {
            self.write_f64(w, v as f64)
        }
    }

    fn write_i8<W: ?Sized + io::Write>(&mut self, w: &mut W, v: i8) -> io::Result<()> {
        CompactFormatter.write_i8(w, v)
    }
    fn write_i16<W: ?Sized + io::Write>(&mut self, w: &mut W, v: i16) -> io::Result<()> {
        CompactFormatter.write_i16(w, v)
    }
    fn write_i32<W: ?Sized + io::Write>(&mut self, w: &mut W, v: i32) -> io::Result<()> {
        CompactFormatter.write_i32(w, v)
    }
    fn write_u8<W: ?Sized + io::Write>(&mut self, w: &mut W, v: u8) -> io::Result<()> {
        CompactFormatter.write_u8(w, v)
    }
    fn write_u16<W: ?Sized + io::Write>(&mut self, w: &mut W, v: u16) -> io::Result<()> {
        CompactFormatter.write_u16(w, v)
    }
    fn write_u32<W: ?Sized + io::Write>(&mut self, w: &mut W, v: u32) -> io::Result<()> {
        CompactFormatter.write_u32(w, v)
    }
}

/// Appends the canonical bytes of `value` to `out`.
pub fn write<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> serde_json::Result<()> {
    let mut ser = serde_json::Serializer::with_formatter(out, JcsFormatter);
    value.serialize(&mut ser)
}

/// The canonical bytes of `value`.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    write(value, &mut out)?;
    Ok(out)
}

// --- The fast path for records -------------------------------------------
//
// `write_record` writes exactly what `write(record)` writes (a property test
// checks both against serde_jcs), without serde's indirection, and scans
// strings for bytes to escape eight at a time. The chain uses it for every
// record it hashes.

use crate::record::{needs_utf16_sort, Attributes, Event, TraceRecord, Value};

/// A mask whose lowest set bit is the high bit of the first byte of `w`
/// (little-endian) that is below 0x20, a quote or a backslash; 0 when none is (SWAR,
/// 8 bytes at once). Bits above the lowest may be false positives (borrows
/// propagate upwards), so only the lowest is used.
#[inline]
pub(crate) fn escape_mask(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    below_space | has_zero(w ^ (ONES * b'"' as u64)) | has_zero(w ^ (ONES * b'\\' as u64))
}

/// Appends `s` as a JSON string, escaped as RFC 8785 (and serde_json) do.
fn write_str(s: &str, out: &mut Vec<u8>) {
    let b = s.as_bytes();
    out.reserve(b.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        // Find the next byte to escape: 8 bytes at a time, then one by one.
        if let Some(w) = b.get(i..i + 8) {
            let mask = escape_mask(u64::from_le_bytes(w.try_into().unwrap_or_default()));
            if mask == 0 {
                i += 8;
                continue;
            }
            i += (mask.trailing_zeros() / 8) as usize;
        } else if !matches!(b[i], 0x00..=0x1f | b'"' | b'\\') {
            i += 1;
            continue;
        }
        let c = b[i];
        out.extend_from_slice(&b[start..i]);
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x09 => out.extend_from_slice(b"\\t"),
            0x0a => out.extend_from_slice(b"\\n"),
            0x0c => out.extend_from_slice(b"\\f"),
            0x0d => out.extend_from_slice(b"\\r"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(c >> 4) as usize],
                    HEX[(c & 0xf) as usize],
                ]);
            }
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'"');
}

fn write_u64_decimal_str(v: u64, out: &mut Vec<u8>) {
    out.push(b'"');
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    out.push(b'"');
}

/// A number as [`JcsFormatter`] writes an f64.
fn write_f64(v: f64, out: &mut Vec<u8>) -> io::Result<()> {
    JcsFormatter.write_f64(out, v)
}

fn write_opt_str(v: &Option<String>, out: &mut Vec<u8>) {
    match v {
        Some(s) => write_str(s, out),
        None => out.extend_from_slice(b"null"),
    }
}

fn write_value(v: &Value, out: &mut Vec<u8>) -> io::Result<()> {
    match v {
        Value::Array(a) => {
            out.extend_from_slice(b"{\"array\":[");
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(x, out)?;
            }
            out.extend_from_slice(b"]}");
        }
        Value::Bool(b) => {
            out.extend_from_slice(if *b {
                b"{\"bool\":true}"
            } else {
                b"{\"bool\":false}"
            });
        }
        Value::Bytes(b) => {
            use base64::Engine as _;
            out.extend_from_slice(b"{\"bytes\":");
            write_str(&base64::engine::general_purpose::STANDARD.encode(b), out);
            out.push(b'}');
        }
        Value::Float(f) => {
            out.extend_from_slice(b"{\"float\":");
            if f.is_finite() {
                write_f64(*f, out)?;
            } else if f.is_nan() {
                out.extend_from_slice(b"\"NaN\"");
            } else if *f > 0.0 {
                out.extend_from_slice(b"\"Infinity\"");
            } else {
                out.extend_from_slice(b"\"-Infinity\"");
            }
            out.push(b'}');
        }
        Value::Int(i) => {
            out.extend_from_slice(b"{\"int\":\"");
            out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes());
            out.extend_from_slice(b"\"}");
        }
        Value::Map(m) => {
            out.extend_from_slice(b"{\"map\":");
            write_attributes(m, out)?;
            out.push(b'}');
        }
        Value::Str(s) => {
            out.extend_from_slice(b"{\"str\":");
            write_str(s, out);
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_attributes(a: &Attributes, out: &mut Vec<u8>) -> io::Result<()> {
    out.push(b'{');
    let entry = |i: usize, k: &String, v: &Value, out: &mut Vec<u8>| {
        if i > 0 {
            out.push(b',');
        }
        write_str(k, out);
        out.push(b':');
        write_value(v, out)
    };
    if needs_utf16_sort(a.0.keys()) {
        let mut entries: Vec<_> = a.0.iter().collect();
        entries.sort_by(|x, y| x.0.encode_utf16().cmp(y.0.encode_utf16()));
        for (i, (k, v)) in entries.into_iter().enumerate() {
            entry(i, k, v, out)?;
        }
    } else {
        for (i, (k, v)) in a.0.iter().enumerate() {
            entry(i, k, v, out)?;
        }
    }
    out.push(b'}');
    Ok(())
}

fn write_event(e: &Event, out: &mut Vec<u8>) -> io::Result<()> {
    out.extend_from_slice(b"{\"attributes\":");
    write_attributes(&e.attributes, out)?;
    out.extend_from_slice(b",\"name\":");
    write_str(&e.name, out);
    out.extend_from_slice(b",\"time_ns\":");
    write_u64_decimal_str(e.time_ns, out);
    out.push(b'}');
    Ok(())
}

/// Appends the canonical bytes of `r` to `out`: the same bytes as
/// [`write()`]`(r, out)`, faster. On error `out` may hold a partial record.
pub fn write_record(r: &TraceRecord, out: &mut Vec<u8>) -> io::Result<()> {
    out.extend_from_slice(b"{\"attributes\":");
    write_attributes(&r.attributes, out)?;
    out.extend_from_slice(b",\"end_ns\":");
    write_u64_decimal_str(r.end_ns, out);
    out.extend_from_slice(b",\"events\":[");
    for (i, e) in r.events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_event(e, out)?;
    }
    out.extend_from_slice(b"],\"kind\":");
    write_str(r.kind.as_str(), out);
    out.extend_from_slice(b",\"name\":");
    write_str(&r.name, out);
    out.extend_from_slice(b",\"parent_span_id\":");
    write_opt_str(&r.parent_span_id, out);
    out.extend_from_slice(b",\"prev\":\"");
    let mut hex = [0u8; 64];
    r.prev.write_hex(&mut hex);
    out.extend_from_slice(&hex);
    out.extend_from_slice(b"\",\"received_ns\":");
    write_u64_decimal_str(r.received_ns, out);
    out.extend_from_slice(b",\"resource\":");
    write_attributes(&r.resource, out)?;
    out.extend_from_slice(b",\"seq\":");
    JcsFormatter.write_u64(out, r.seq)?;
    out.extend_from_slice(b",\"session\":");
    write_str(&r.session, out);
    out.extend_from_slice(b",\"source\":");
    write_str(&r.source, out);
    out.extend_from_slice(b",\"span_id\":");
    write_opt_str(&r.span_id, out);
    out.extend_from_slice(b",\"start_ns\":");
    write_u64_decimal_str(r.start_ns, out);
    out.extend_from_slice(b",\"status\":{\"code\":");
    write_str(
        match r.status.code {
            crate::record::StatusCode::Unset => "unset",
            crate::record::StatusCode::Ok => "ok",
            crate::record::StatusCode::Error => "error",
        },
        out,
    );
    out.extend_from_slice(b",\"message\":");
    write_opt_str(&r.status.message, out);
    out.extend_from_slice(b"},\"trace_id\":");
    write_opt_str(&r.trace_id, out);
    out.extend_from_slice(b",\"v\":");
    JcsFormatter.write_u32(out, r.v)?;
    out.push(b'}');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Attributes, Value};

    #[test]
    fn the_record_fast_path_writes_what_serde_writes() {
        use crate::record::{Event, Kind, StatusCode, TraceRecord};
        let mut r = TraceRecord::new("s\u{1}\"\\", Kind::Gap, "n\u{7f}é\u{1f600}\t");
        r.seq = (1 << 53) + 3; // printed as a double, as JCS does
        r.attributes.insert("\u{ff61}", Value::Float(f64::NAN));
        r.attributes.insert("\u{1f600}", Value::Float(-0.0));
        r.attributes
            .insert("long", "abcdefghijklmnopqrstuvwxyz\"0123456789\n");
        r.attributes.insert("b", Value::Bytes(vec![0, 1, 255]));
        r.attributes.insert("i", Value::Int(i64::MIN));
        r.events.push(Event {
            attributes: Attributes::new(),
            name: "e".into(),
            time_ns: u64::MAX,
        });
        r.status.code = StatusCode::Error;
        r.status.message = Some("\u{0}".into());
        r.span_id = Some("00ff".into());
        let mut fast = Vec::new();
        write_record(&r, &mut fast).unwrap();
        assert_eq!(
            String::from_utf8(fast).unwrap(),
            String::from_utf8(to_vec(&r).unwrap()).unwrap()
        );
        // Every byte value in a string, at every offset against the 8-byte scan.
        for shift in 0..8 {
            let s: String = "x".repeat(shift) + &(0u8..128).map(char::from).collect::<String>();
            let mut fast = Vec::new();
            write_str(&s, &mut fast);
            assert_eq!(fast, to_vec(&s).unwrap(), "shift {shift}");
        }
    }

    #[test]
    fn numbers_follow_ecmascript() {
        let cases: [(f64, &str); 6] = [
            (1.0, "1"),
            (-0.0, "0"),
            (1e21, "1e+21"),
            (1e-7, "1e-7"),
            (0.1 + 0.2, "0.30000000000000004"),
            (123456789012345680000.0, "123456789012345680000"),
        ];
        for (v, want) in cases {
            assert_eq!(String::from_utf8(to_vec(&v).unwrap()).unwrap(), want);
        }
        // Non-finite floats never reach the formatter: `Value::Float` encodes them as strings.
        let v = to_vec(&Value::Float(f64::NEG_INFINITY)).unwrap();
        assert_eq!(v, br#"{"float":"-Infinity"}"#);
    }

    #[test]
    fn large_integers_round_like_doubles() {
        assert_eq!(to_vec(&(1u64 << 53)).unwrap(), b"9007199254740992");
        assert_eq!(to_vec(&((1u64 << 53) + 1)).unwrap(), b"9007199254740992");
        assert_eq!(to_vec(&u64::MAX).unwrap(), b"18446744073709552000");
        assert_eq!(to_vec(&i64::MIN).unwrap(), b"-9223372036854776000");
        assert_eq!(to_vec(&-5i64).unwrap(), b"-5");
        for v in [0u64, 7, 1 << 40, u64::MAX / 3] {
            assert_eq!(to_vec(&v).unwrap(), serde_jcs::to_vec(&v).unwrap());
        }
    }

    #[test]
    fn strings_escape_as_rfc8785() {
        let s = "\u{0}\u{8}\t\n\u{c}\r\u{1f}\"\\/\u{7f}\u{2028}é😀";
        let got = String::from_utf8(to_vec(s).unwrap()).unwrap();
        assert_eq!(
            got,
            "\"\\u0000\\b\\t\\n\\f\\r\\u001f\\\"\\\\/\u{7f}\u{2028}é😀\""
        );
    }

    #[test]
    fn rfc8785_sorting_example() {
        // RFC 8785 §3.2.3: sorting by UTF-16 code units.
        let a: Attributes = [
            ("\u{20ac}", Value::Bool(true)),
            ("\r", Value::Bool(true)),
            ("\u{fb33}", Value::Bool(true)),
            ("1", Value::Bool(true)),
            ("\u{1f600}", Value::Bool(true)),
            ("\u{80}", Value::Bool(true)),
            ("\u{f6}", Value::Bool(true)),
        ]
        .into_iter()
        .collect();
        let got = String::from_utf8(to_vec(&a).unwrap()).unwrap();
        let order: Vec<usize> = [
            "\\r",
            "1",
            "\u{80}",
            "\u{f6}",
            "\u{20ac}",
            "\u{1f600}",
            "\u{fb33}",
        ]
        .iter()
        .map(|k| got.find(&format!("\"{k}\"")).unwrap())
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{got}");
    }
}
