//! Reading a record as verify does (docs/FORMAT.md §7): the record must be
//! one JSON text (RFC 8259: white space allowed, strings, escapes and
//! numbers checked), an object, and of its top-level members only `prev`,
//! `seq`, `session` and `v` are read, by name (a name written with escapes
//! counts as what it spells). Nothing else is built: strings are skipped
//! eight bytes at a time, and nested values are checked without recursion,
//! so that a deep or malformed record yields an error, never a panic.
//!
//! Every record is walked, also one whose bytes hash to the sealed value:
//! a member named `prev` inside a nested object must never be taken for the
//! record's own, whoever wrote the record.

use std::borrow::Cow;

use crate::digest::Digest;

/// What verify reads of a record. A field is `None` when it cannot be read
/// (the record is then not placed in any chain); `problems` says what is
/// wrong (each one a `record_malformed` reason), empty for a good record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RecordRead<'a> {
    pub(crate) prev: Option<Digest>,
    pub(crate) seq: Option<u64>,
    pub(crate) session: Option<Cow<'a, str>>,
    pub(crate) problems: Vec<String>,
}

type R<T> = Result<T, String>;

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> R<u8> {
        self.b
            .get(self.i)
            .copied()
            .ok_or_else(|| "the record ends early".to_owned())
    }

    fn ws(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8) -> R<()> {
        if self.peek()? != c {
            return Err(format!("expected {:?} at byte {}", c as char, self.i));
        }
        self.i += 1;
        Ok(())
    }

    /// A string at the cursor (its opening quote): checks its escapes and
    /// that it holds no control character; returns its raw contents.
    fn string(&mut self) -> R<&'a [u8]> {
        self.expect(b'"')?;
        let start = self.i;
        loop {
            let k = special(self.b, self.i).ok_or("a string does not end")?;
            match self.b[k] {
                b'"' => {
                    self.i = k + 1;
                    return Ok(&self.b[start..k]);
                }
                b'\\' => {
                    // A string with escapes (text that quotes JSON has one
                    // every few bytes): 64 bytes at a time where it can.
                    if let Some(end) = blocks::string_end(self.b, k, &mut self.i) {
                        self.i = end;
                        return Ok(&self.b[start..end - 1]);
                    }
                    if self.i > k {
                        continue;
                    }
                    self.i = k + match self.b.get(k + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => 2,
                        Some(b'u') if is_hex4(self.b.get(k + 2..k + 6)) => 6,
                        _ => return Err(format!("a bad escape at byte {k}")),
                    };
                }
                _ => return Err(format!("a control character in a string at byte {k}")),
            }
        }
    }

    /// A number at the cursor, as RFC 8259 writes one.
    fn number(&mut self) -> R<()> {
        let start = self.i;
        let digits = |c: &mut Self| {
            let from = c.i;
            while c.b.get(c.i).is_some_and(u8::is_ascii_digit) {
                c.i += 1;
            }
            c.i > from
        };
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        let bad = || format!("no JSON value at byte {start}");
        match self.b.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(bad()),
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if !digits(self) {
                return Err(bad());
            }
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !digits(self) {
                return Err(bad());
            }
        }
        Ok(())
    }

    /// A member name and its colon, in a nested object.
    fn name(&mut self) -> R<()> {
        self.ws();
        if self.peek()? != b'"' {
            return Err(format!("a member name expected at byte {}", self.i));
        }
        self.string()?;
        self.ws();
        self.expect(b':')
    }

    /// One JSON value at the cursor, checked; nested values without recursion.
    fn value(&mut self) -> R<()> {
        // One bit per open container: 1 for an object, 0 for an array.
        let mut open = Stack::default();
        loop {
            self.ws();
            match self.peek()? {
                c @ (b'{' | b'[') => {
                    self.i += 1;
                    self.ws();
                    let close = if c == b'{' { b'}' } else { b']' };
                    if self.peek()? == close {
                        self.i += 1;
                    } else {
                        open.push(c == b'{');
                        if c == b'{' {
                            self.name()?;
                        }
                        continue;
                    }
                }
                b'"' => {
                    self.string()?;
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                _ => self.number()?,
            }
            // A value ended: close containers, or go on to the next element.
            loop {
                let Some(object) = open.top() else {
                    return Ok(());
                };
                self.ws();
                match self.peek()? {
                    b',' => {
                        self.i += 1;
                        if object {
                            self.name()?;
                        }
                        break;
                    }
                    c if c == if object { b'}' } else { b']' } => {
                        self.i += 1;
                        open.pop();
                    }
                    c => return Err(format!("unexpected {:?} at byte {}", c as char, self.i)),
                }
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> R<()> {
        if self.b.get(self.i..self.i + word.len()) != Some(word) {
            return Err(format!("no JSON value at byte {}", self.i));
        }
        self.i += word.len();
        Ok(())
    }
}

/// Open containers, innermost last: a bit per level, on the heap past 64.
#[derive(Default)]
struct Stack {
    bits: u64,
    depth: usize,
    deeper: Vec<bool>,
}

impl Stack {
    fn push(&mut self, object: bool) {
        if self.depth >= 64 {
            self.deeper.push(object);
        } else {
            self.bits = self.bits & !(1 << self.depth) | u64::from(object) << self.depth;
        }
        self.depth += 1;
    }

    fn top(&self) -> Option<bool> {
        let d = self.depth.checked_sub(1)?;
        Some(if d >= 64 {
            self.deeper.last().copied().unwrap_or_default()
        } else {
            self.bits >> d & 1 == 1
        })
    }

    fn pop(&mut self) {
        if self.depth > 64 {
            self.deeper.pop();
        }
        self.depth = self.depth.saturating_sub(1);
    }
}

/// The index of the first byte at or after `from` that is a quote, a
/// backslash or below 0x20 (eight bytes at a time: most strings of a record
/// are short, where a call to `memchr` costs more than the scan).
#[inline]
fn special(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    // Sixteen bytes at a time where there are (most names and short values
    // end within the first sixteen), then eight.
    #[cfg(target_arch = "x86_64")]
    while let Some(w) = b.get(i..i + 16) {
        let m = blocks::special16(w);
        if m != 0 {
            return Some(i + m.trailing_zeros() as usize);
        }
        i += 16;
    }
    while let Some(w) = b.get(i..i + 8) {
        let m = crate::canonical::escape_mask(u64::from_le_bytes(w.try_into().unwrap_or_default()));
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b.get(i..)?
        .iter()
        .position(|c| matches!(c, 0x00..=0x1f | b'"' | b'\\'))
        .map(|k| i + k)
}

fn is_hex4(h: Option<&[u8]>) -> bool {
    h.is_some_and(|h| h.len() == 4 && h.iter().all(u8::is_ascii_hexdigit))
}

/// Strings scanned 64 bytes at a time (SSE2, which every x86-64 has): the
/// quotes, backslashes and control characters of a block as bit masks, and
/// which bytes the backslashes escape, as simdjson works it out.
mod blocks {
    /// Where the string that holds an escape at `k` ends (the index after
    /// its closing quote), if every escape up to there is good and no
    /// control character comes first. `None` leaves the rest to the
    /// byte-wise scan, from `*resume` (`k`, or a block boundary past it
    /// where no escape is open): at the last bytes of the record, or at
    /// anything to report.
    #[cfg(target_arch = "x86_64")]
    pub(super) fn string_end(b: &[u8], k: usize, resume: &mut usize) -> Option<usize> {
        let mut i = k;
        let mut carry = 0u64;
        *resume = k;
        while let Some(block) = b.get(i..i + 64) {
            let (quote, backslash, control) = masks(block);
            let escaped = escaped(backslash, &mut carry);
            let ends = quote & !escaped;
            let before = if ends == 0 {
                u64::MAX
            } else {
                (1u64 << ends.trailing_zeros()) - 1
            };
            if control & before != 0 {
                return None;
            }
            // Escaped bytes other than a quote or a backslash: each checked.
            let mut other = escaped & before & !(quote | backslash);
            while other != 0 {
                let at = i + other.trailing_zeros() as usize;
                match b[at] {
                    b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    b'u' if super::is_hex4(b.get(at + 1..at + 5)) => {}
                    _ => return None,
                }
                other &= other - 1;
            }
            if ends != 0 {
                return Some(i + ends.trailing_zeros() as usize + 1);
            }
            i += 64;
            if carry == 0 {
                *resume = i;
            }
        }
        None
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) fn string_end(_: &[u8], k: usize, resume: &mut usize) -> Option<usize> {
        *resume = k;
        None
    }

    /// The quotes, backslashes and bytes below 0x20 among the first 16
    /// bytes of `w`, as a bit mask (bit n: byte n).
    #[cfg(target_arch = "x86_64")]
    #[inline]
    pub(super) fn special16(w: &[u8]) -> u32 {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8,
            _mm_or_si128, _mm_set1_epi8,
        };
        assert!(w.len() >= 16);
        // SAFETY: SSE2 is part of the x86-64 baseline; the load reads bytes
        // 0..16 of `w` (asserted above), unaligned.
        unsafe {
            let v = _mm_loadu_si128(w.as_ptr().cast::<__m128i>());
            let low = _mm_set1_epi8(0x1f);
            let hits = _mm_or_si128(
                _mm_or_si128(
                    _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8)),
                    _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8)),
                ),
                _mm_cmpeq_epi8(_mm_max_epu8(v, low), low),
            );
            _mm_movemask_epi8(hits) as u32
        }
    }

    /// Bit masks of the quotes, backslashes and bytes below 0x20 of a
    /// 64-byte block (bit n: byte n).
    #[cfg(target_arch = "x86_64")]
    fn masks(block: &[u8]) -> (u64, u64, u64) {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8,
            _mm_set1_epi8,
        };
        assert!(block.len() >= 64);
        let (mut q, mut s, mut c) = (0u64, 0u64, 0u64);
        // SAFETY: SSE2 is part of the x86-64 baseline, so these intrinsics
        // are available; each load reads bytes n*16..n*16+16, within
        // `block` (asserted above), unaligned.
        unsafe {
            let (quote, backslash, low) = (
                _mm_set1_epi8(b'"' as i8),
                _mm_set1_epi8(b'\\' as i8),
                _mm_set1_epi8(0x1f),
            );
            for n in 0..4 {
                let v = _mm_loadu_si128(block.as_ptr().add(n * 16).cast::<__m128i>());
                let shift = n * 16;
                q |= u64::from(_mm_movemask_epi8(_mm_cmpeq_epi8(v, quote)) as u16) << shift;
                s |= u64::from(_mm_movemask_epi8(_mm_cmpeq_epi8(v, backslash)) as u16) << shift;
                c |= u64::from(_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_max_epu8(v, low), low)) as u16)
                    << shift;
            }
        }
        (q, s, c)
    }

    /// The bytes of a block that a backslash escapes, given its backslashes
    /// and whether the block before ended in an open escape (`carry`, which
    /// is updated): in a run of backslashes every other one escapes the
    /// next byte. (simdjson's branch-free form.)
    pub(super) fn escaped(backslash: u64, carry: &mut u64) -> u64 {
        const ODD: u64 = 0xAAAA_AAAA_AAAA_AAAA;
        let open = *carry;
        if backslash == 0 {
            *carry = 0;
            return open;
        }
        let potential = backslash & !open;
        let code = ((potential << 1) | ODD).wrapping_sub(potential) ^ ODD;
        let escaped = code ^ (backslash | open);
        *carry = (code & backslash) >> 63;
        escaped
    }
}

/// Reads a record's `prev`, `seq`, `session` and `v` (FORMAT.md §7).
pub(crate) fn read_record(record: &[u8]) -> RecordRead<'_> {
    let none = |reason: String| RecordRead {
        prev: None,
        seq: None,
        session: None,
        problems: vec![reason],
    };
    let [prev, seq, session, v] = match members(record, ["prev", "seq", "session", "v"]) {
        Ok(m) => m,
        Err(reason) => return none(reason),
    };
    let mut problems = Vec::new();
    // In the order of FORMAT.md §7 (and of the independent verifier).
    let prev = one("prev", &prev, &mut problems).and_then(|p| {
        let d = p
            .strip_prefix(b"\"")
            .and_then(|p| p.strip_suffix(b"\""))
            .filter(|h| h.len() == 64)
            .and_then(Digest::from_hex);
        if d.is_none() {
            problems.push("prev is not 64 lowercase hex digits".into());
        }
        d
    });
    let seq = one("seq", &seq, &mut problems).and_then(|v| {
        let ok = !v.is_empty() && v.iter().all(u8::is_ascii_digit) && (v == b"0" || v[0] != b'0');
        let n = std::str::from_utf8(v)
            .ok()
            .filter(|_| ok)
            .and_then(|s| s.parse::<u64>().ok());
        if n.is_none() {
            problems.push("seq is not an unsigned integer written as digits".into());
        }
        n
    });
    let session = one("session", &session, &mut problems).and_then(|raw| {
        let s = string_value(raw);
        if s.is_none() {
            problems.push("session is not a string".into());
        }
        s
    });
    let v = one("v", &v, &mut problems);
    if let Some(v) = v.filter(|v| *v != b"1") {
        let shown = String::from_utf8_lossy(&v[..v.len().min(40)]);
        problems.push(format!(
            "format version {shown}{}: this verifier reads version {}",
            if v.len() > 40 { "…" } else { "" },
            crate::record::FORMAT_VERSION
        ));
    }
    RecordRead {
        prev,
        seq,
        session,
        problems,
    }
}

/// The one value found for member `name`; `None` (and a problem) when it
/// is missing or repeated.
pub(crate) fn one<'a>(
    name: &str,
    found: &Found<'a>,
    problems: &mut Vec<String>,
) -> Option<&'a [u8]> {
    match found.count {
        1 => return found.first,
        0 => problems.push(format!("{name} is missing")),
        _ => problems.push(format!("{name} is repeated")),
    }
    None
}

/// A top-level member looked for: its first raw value, and how many times
/// the name occurs.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Found<'a> {
    pub(crate) first: Option<&'a [u8]>,
    pub(crate) count: usize,
}

impl<'a> Found<'a> {
    /// The value, if the name occurs exactly once.
    pub(crate) fn once(self) -> Option<&'a [u8]> {
        self.first.filter(|_| self.count == 1)
    }
}

/// The text of a JSON string token (quotes included), `None` if it is not
/// one or not UTF-8 text (a lone surrogate escape included).
pub(crate) fn string_value(raw: &[u8]) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if inner.contains(&b'\\') {
        serde_json::from_slice::<String>(raw).ok().map(Cow::Owned)
    } else {
        std::str::from_utf8(inner).ok().map(Cow::Borrowed)
    }
}

/// Walks the record, one JSON object, finding its top-level members named
/// `names` (in that order).
pub(crate) fn members<'a, const N: usize>(record: &'a [u8], names: [&str; N]) -> R<[Found<'a>; N]> {
    members_counted(record, names).map(|(m, _)| m)
}

/// [`members`], and how many members the object has in all.
pub(crate) fn members_counted<'a, const N: usize>(
    record: &'a [u8],
    names: [&str; N],
) -> R<([Found<'a>; N], usize)> {
    let mut c = Cursor { b: record, i: 0 };
    let mut m = [Found::default(); N];
    let mut total = 0;
    c.ws();
    if c.peek()? != b'{' {
        return Err("the record is not a JSON object".into());
    }
    c.i += 1;
    c.ws();
    if c.peek()? == b'}' {
        c.i += 1;
    } else {
        loop {
            c.ws();
            if c.peek()? != b'"' {
                return Err(format!("a member name expected at byte {}", c.i));
            }
            let at = c.i;
            let raw = c.string()?;
            let name_end = c.i;
            c.ws();
            c.expect(b':')?;
            c.ws();
            let start = c.i;
            c.value()?;
            let value = &record[start..c.i];
            let name: Cow<'_, [u8]> = if raw.contains(&b'\\') {
                match serde_json::from_slice::<String>(&record[at..name_end]) {
                    Ok(s) => Cow::Owned(s.into_bytes()),
                    // A lone surrogate: no name verify reads.
                    Err(_) => Cow::Borrowed(&b""[..]),
                }
            } else {
                Cow::Borrowed(raw)
            };
            total += 1;
            if let Some(k) = names.iter().position(|n| n.as_bytes() == name.as_ref()) {
                m[k].first.get_or_insert(value);
                m[k].count += 1;
            }
            c.ws();
            match c.peek()? {
                b',' => c.i += 1,
                b'}' => {
                    c.i += 1;
                    break;
                }
                other => return Err(format!("unexpected {:?} at byte {}", other as char, c.i)),
            }
        }
    }
    c.ws();
    if c.i != record.len() {
        return Err(format!("bytes after the record object at byte {}", c.i));
    }
    Ok((m, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Kind, TraceRecord, Value};

    fn placed(r: &RecordRead<'_>) -> Option<(Digest, u64, String)> {
        Some((r.prev?, r.seq?, r.session.as_deref()?.to_owned()))
    }

    #[test]
    fn reads_the_fields_of_a_real_record() {
        let mut r = TraceRecord::new("sess \"quoted\" \\ é", Kind::ToolCall, "t");
        r.seq = 12345;
        r.prev = Digest::sha256(b"p");
        r.attributes.insert(
            "nested",
            Value::Array(vec![Value::from("}]\"{["), Value::Int(-3)]),
        );
        r.attributes
            .insert("prev", "an attribute named prev is not the field");
        r.resource.insert("seq", Value::Int(99));
        r.attributes.insert("x", ",\"prev\":\"0000\u{1}");
        let bytes = crate::canonical::to_vec(&r).unwrap();
        let f = read_record(&bytes);
        assert_eq!(f.problems, Vec::<String>::new());
        assert_eq!(
            placed(&f),
            Some((r.prev, 12345, "sess \"quoted\" \\ é".to_owned()))
        );
    }

    /// Only the record's own members count: not one inside a nested object,
    /// whatever the record's bytes hash to.
    #[test]
    fn members_of_nested_objects_are_not_the_records() {
        let g = "1".repeat(64);
        let rec = format!(
            r#"{{"a":{{"b":0,"prev":"{g}","received_ns":"0","seq":0,"session":"A","source":"x"}},"prev":"{}","seq":0,"session":"B","v":1}}"#,
            "0".repeat(64)
        );
        let f = read_record(rec.as_bytes());
        assert_eq!(placed(&f), Some((Digest::default(), 0, "B".to_owned())));
        // And without members of its own, the record is not placed.
        let rec = format!(r#"{{"a":{{"prev":"{g}","seq":0,"session":"A"}},"v":1}}"#);
        let f = read_record(rec.as_bytes());
        assert_eq!(placed(&f), None);
        assert_eq!(
            f.problems,
            ["prev is missing", "seq is missing", "session is missing"]
        );
    }

    #[test]
    fn json_as_rfc_8259_writes_it_is_read_and_nothing_else() {
        let z = "0".repeat(64);
        // White space, escaped names, an escaped session.
        let rec = format!(
            " {{ \"pr\\u0065v\" : \"{z}\" ,\n\"seq\":3,\t\"session\":\"a\\u0041\",\"v\":1,\"x\":[1.5e-3,-0,true,null,{{}},[]]}} "
        );
        let f = read_record(rec.as_bytes());
        assert_eq!(f.problems, Vec::<String>::new());
        assert_eq!(placed(&f), Some((Digest::default(), 3, "aA".to_owned())));
        for (bad, why) in [
            (r#""x":tru"#, "no JSON value"),
            (r#""x":01"#, "unexpected"),
            (r#""x":1."#, "no JSON value"),
            (r#""x":"\q""#, "bad escape"),
            ("\"x\":\"\u{1}\"", "control character"),
            (r#""x":[1,]"#, "no JSON value"),
            (r#""x":{"a"}"#, "expected ':'"),
            (r#""x":{1:2}"#, "member name expected"),
            (r#""x":[}"#, "no JSON value"),
        ] {
            let rec = format!(r#"{{"prev":"{z}","seq":0,"session":"s","v":1,{bad}}}"#);
            let f = read_record(rec.as_bytes());
            assert_eq!(placed(&f), None, "{bad}");
            assert!(f.problems[0].contains(why), "{bad}: {:?}", f.problems);
        }
        // Repeated or wrong members, v included.
        let rec = format!(r#"{{"prev":"{z}","seq":1,"seq":2,"session":"s","v":1,"v":1}}"#);
        assert_eq!(
            read_record(rec.as_bytes()).problems,
            ["seq is repeated", "v is repeated"]
        );
        let rec = format!(r#"{{"prev":"{z}","seq":1,"session":"s","v":1.0}}"#);
        let f = read_record(rec.as_bytes());
        assert_eq!(
            f.problems,
            ["format version 1.0: this verifier reads version 1"]
        );
        assert!(placed(&f).is_some(), "a wrong v is placed");
        let rec = format!(r#"{{"prev":"{z}","seq":1,"session":"\ud800"}}"#);
        assert_eq!(
            read_record(rec.as_bytes()).problems,
            ["session is not a string", "v is missing"]
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let good = crate::canonical::to_vec(&TraceRecord::new("s", Kind::Span, "n")).unwrap();
        assert!(read_record(&good).problems.is_empty());
        for cut in 0..good.len() {
            assert!(placed(&read_record(&good[..cut])).is_none(), "cut {cut}");
        }
        for bad in [
            &b"{}"[..],
            b"{\"seq\":01,\"prev\":\"x\",\"session\":\"s\"}",
            b"{\"seq\":-1}",
            b"{\"session\":\"\\",
            b"[",
            b"{\"a\":[[[[",
            b"{\"a\":\"\\\"}",
        ] {
            assert!(
                placed(&read_record(bad)).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // Deep nesting is walked without recursion.
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(read_record(deep.as_bytes()).problems[0], "prev is missing");
    }

    /// The string scan, 64 bytes at a time where it can, ends every string
    /// where the byte-wise reference does, and fails where it fails.
    #[test]
    fn the_block_scan_agrees_with_the_bytewise_one() {
        fn reference(b: &[u8]) -> Option<usize> {
            let mut i = 1;
            loop {
                match *b.get(i)? {
                    b'"' => return Some(i + 1),
                    b'\\' => match *b.get(i + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                        b'u' if is_hex4(b.get(i + 2..i + 6)) => i += 6,
                        _ => return None,
                    },
                    0x00..=0x1f => return None,
                    _ => i += 1,
                }
            }
        }
        let alphabet = b"\"\\\\\\\\aaaaaaaaaaaaaaaaaaaaaaaaanu0F/\x01\x7f\xc3\xa9";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..200_000 {
            let len = (next() % 300) as usize;
            let mut b = vec![b'"'];
            for _ in 0..len {
                b.push(alphabet[(next() % alphabet.len() as u64) as usize]);
            }
            let mut c = Cursor { b: &b, i: 0 };
            let got = c.string().ok().map(|_| c.i);
            assert_eq!(got, reference(&b), "{:?}", String::from_utf8_lossy(&b));
        }
        // Runs of backslashes across block boundaries.
        for run in 0..140 {
            for pad in 0..70 {
                let mut b = vec![b'"'];
                b.extend(std::iter::repeat_n(b'a', pad));
                b.extend(std::iter::repeat_n(b'\\', run));
                b.extend_from_slice(b"\"tail\"");
                b.extend(std::iter::repeat_n(b'z', 80));
                let mut c = Cursor { b: &b, i: 0 };
                let got = c.string().ok().map(|_| c.i);
                assert_eq!(got, reference(&b), "pad {pad} run {run}");
            }
        }
    }

    #[test]
    fn special_finds_the_first_quote_backslash_or_control() {
        for len in 0..70 {
            for at in 0..len {
                for c in [b'"', b'\\', 0x00, 0x1f] {
                    for fill in [b'a', 0x20, 0x7f, 0x80, 0xff] {
                        let mut b = vec![fill; len];
                        b[at] = c;
                        for from in [0, at / 2, at] {
                            assert_eq!(special(&b, from), Some(at), "{len} {at} {fill}");
                        }
                        assert_eq!(special(&b, at + 1), None);
                    }
                }
            }
            assert_eq!(special(&vec![0x7f; len], 0), None);
        }
    }
}
