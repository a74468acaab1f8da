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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Attributes, Value};

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
