//! A fast reader of the three chain fields of a record (`prev`, `seq`,
//! `session`) that skips every other member without building it.
//!
//! `verify` does not need the rest of a record: its integrity is the record
//! hash over the exact bytes. Skipping strings with `memchr` instead of
//! parsing them is what keeps verification close to the speed of hashing.
//! Malformed input yields an error, never a panic.
//!
//! Two readers: [`chain_fields`] first tries a direct search for the
//! members, which is sound for records of the sealtrail schema — an
//! unescaped `"` always delimits a string, so `,"prev":"` can only be the
//! start of a member `prev` with a string value, and in the schema only the
//! record itself has one (attribute values are objects, and event and status
//! members have other names). If the search does not find exactly the
//! expected shape, the structural reader walks the top-level object.

use std::borrow::Cow;

use crate::digest::Digest;

/// The fields that place a record in its chain.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ChainFields<'a> {
    pub(crate) prev: Digest,
    pub(crate) seq: u64,
    pub(crate) session: Cow<'a, str>,
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

type R<T> = Result<T, String>;

impl<'a> Cursor<'a> {
    fn peek(&self) -> R<u8> {
        self.b
            .get(self.i)
            .copied()
            .ok_or_else(|| "unexpected end of record".to_owned())
    }

    fn expect(&mut self, c: u8) -> R<()> {
        if self.peek()? != c {
            return Err(format!("expected {:?} at byte {}", c as char, self.i));
        }
        self.i += 1;
        Ok(())
    }

    /// Skips a string starting at its opening quote; returns its raw contents.
    fn string(&mut self) -> R<&'a [u8]> {
        self.expect(b'"')?;
        let start = self.i;
        loop {
            match memchr::memchr2(b'"', b'\\', &self.b[self.i..]) {
                Some(k) if self.b[self.i + k] == b'"' => {
                    let s = &self.b[start..self.i + k];
                    self.i += k + 1;
                    return Ok(s);
                }
                Some(k) => self.i += k + 2,
                None => return Err("unterminated string".into()),
            }
            if self.i > self.b.len() {
                return Err("unterminated string".into());
            }
        }
    }

    /// Skips one value of any type.
    fn skip_value(&mut self) -> R<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Ok(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                while !matches!(self.peek()?, b',' | b'}' | b']') {
                    self.i += 1;
                }
                Ok(())
            }
        }
    }
}

/// Reads `prev`, `seq` and `session` from a record's canonical JSON object.
/// The direct search does not look at the rest of the record: for a record
/// whose bytes may have been altered, use [`chain_fields_walked`].
pub(crate) fn chain_fields(record: &[u8]) -> R<ChainFields<'_>> {
    match search(record) {
        Some(f) => Ok(f),
        None => walk(record),
    }
}

/// [`chain_fields`] by the structural reader alone, which also requires the
/// whole record to be one JSON object (FORMAT.md §7: its members readable).
pub(crate) fn chain_fields_walked(record: &[u8]) -> R<ChainFields<'_>> {
    walk(record)
}

/// The direct search: `,"prev":"<64 hex>","received_ns":"` … `,"seq":<digits>,"session":"<s>","source":"`.
fn search(record: &[u8]) -> Option<ChainFields<'_>> {
    use memchr::memmem::Finder;
    use std::sync::LazyLock;
    static PREV_FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(PREV));
    static SEQ_FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(SEQ));
    const PREV: &[u8] = b",\"prev\":\"";
    const AFTER_PREV: &[u8] = b"\",\"received_ns\":\"";
    const SEQ: &[u8] = b",\"seq\":";
    const SESSION: &[u8] = b",\"session\":\"";
    const SOURCE: &[u8] = b",\"source\":\"";
    // The record must end with its last member, `,"v":<digits>}`.
    let body = record.strip_prefix(b"{")?.strip_suffix(b"}")?;
    let v_digits = body.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    if v_digits == 0 || !body[..body.len() - v_digits].ends_with(b",\"v\":") {
        return None;
    }
    let p = PREV_FINDER.find(record)? + PREV.len();
    let prev = Digest::from_hex(record.get(p..p + 64)?)?;
    let rest = record.get(p + 64..)?.strip_prefix(AFTER_PREV)?;
    let base = record.len() - rest.len();
    // `resource` (between prev and seq) may hold an attribute named "seq",
    // whose value is an object: take the first `,"seq":` followed by a digit.
    let mut from = base;
    let (seq, after_seq) = loop {
        let at = from + SEQ_FINDER.find(&record[from..])? + SEQ.len();
        let digits = record[at..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits > 0 {
            let v = &record[at..at + digits];
            if digits > 1 && v[0] == b'0' {
                return None;
            }
            break (
                std::str::from_utf8(v).ok()?.parse::<u64>().ok()?,
                at + digits,
            );
        }
        from = at;
    };
    let s = after_seq + SESSION.len();
    if record.get(after_seq..s)? != SESSION {
        return None;
    }
    let end = s + memchr::memchr(b'"', &record[s..])?;
    let raw = &record[s..end];
    if raw.contains(&b'\\') || record.get(end + 1..end + 1 + SOURCE.len())? != SOURCE {
        // Escapes (or a quote inside the session id): let the structural reader decide.
        return None;
    }
    let session = Cow::Borrowed(std::str::from_utf8(raw).ok()?);
    Some(ChainFields { prev, seq, session })
}

/// The structural reader: walks the top-level object, skipping other members.
fn walk(record: &[u8]) -> R<ChainFields<'_>> {
    let mut c = Cursor { b: record, i: 0 };
    let (mut prev, mut seq, mut session) = (None, None, None);
    c.expect(b'{')?;
    if c.peek()? == b'}' {
        return Err("empty record".into());
    }
    loop {
        let key = c.string()?;
        c.expect(b':')?;
        let start = c.i;
        let dup = |name: &str| format!("duplicate member {name:?}");
        match key {
            b"prev" => {
                let v = c.string()?;
                let d = Digest::from_hex(v).ok_or("prev is not 64 lowercase hex digits")?;
                if prev.replace(d).is_some() {
                    return Err(dup("prev"));
                }
            }
            b"seq" => {
                c.skip_value()?;
                let v = &record[start..c.i];
                let ok = !v.is_empty()
                    && v.iter().all(u8::is_ascii_digit)
                    && (v == b"0" || v[0] != b'0');
                let n: u64 = std::str::from_utf8(v)
                    .ok()
                    .filter(|_| ok)
                    .and_then(|s| s.parse().ok())
                    .ok_or("seq is not a non-negative integer")?;
                if seq.replace(n).is_some() {
                    return Err(dup("seq"));
                }
            }
            b"session" => {
                let raw = c.string()?;
                let s = if raw.contains(&b'\\') {
                    Cow::Owned(
                        serde_json::from_slice::<String>(&record[start..c.i])
                            .map_err(|e| format!("session: {e}"))?,
                    )
                } else {
                    Cow::Borrowed(std::str::from_utf8(raw).map_err(|_| "session is not UTF-8")?)
                };
                if session.replace(s).is_some() {
                    return Err(dup("session"));
                }
            }
            _ => c.skip_value()?,
        }
        match c.peek()? {
            b',' => c.i += 1,
            b'}' => {
                c.i += 1;
                break;
            }
            other => return Err(format!("unexpected {:?} at byte {}", other as char, c.i)),
        }
    }
    if c.i != record.len() {
        return Err(format!("trailing bytes after the record at byte {}", c.i));
    }
    Ok(ChainFields {
        prev: prev.ok_or("no prev")?,
        seq: seq.ok_or("no seq")?,
        session: session.ok_or("no session")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Kind, TraceRecord, Value};

    #[test]
    fn reads_the_chain_fields_of_a_real_record() {
        let mut r = TraceRecord::new("sess \"quoted\" \\ é", Kind::ToolCall, "t");
        r.seq = 12345;
        r.prev = Digest::sha256(b"p");
        r.attributes.insert(
            "nested",
            Value::Array(vec![Value::from("}]\"{["), Value::Int(-3)]),
        );
        r.attributes
            .insert("prev", "an attribute named prev is not the field");
        let bytes = crate::canonical::to_vec(&r).unwrap();
        let f = chain_fields(&bytes).unwrap();
        assert_eq!(
            f,
            ChainFields {
                prev: r.prev,
                seq: 12345,
                session: Cow::Borrowed("sess \"quoted\" \\ é")
            }
        );
    }

    #[test]
    fn search_and_walk_agree() {
        let mut r = TraceRecord::new("plain-session", Kind::ToolCall, "t");
        r.seq = 7;
        r.prev = Digest::sha256(b"q");
        r.resource.insert("seq", Value::Int(99));
        r.resource.insert("session", "not this one");
        r.attributes.insert("x", ",\"prev\":\"0000");
        let bytes = crate::canonical::to_vec(&r).unwrap();
        let fast = search(&bytes).expect("the search handles plain records");
        assert_eq!(fast, walk(&bytes).unwrap());
        assert_eq!(
            (fast.seq, fast.session.as_ref(), fast.prev),
            (7, "plain-session", r.prev)
        );
        // A session with escapes goes to the structural reader.
        r.session = "a\"b".into();
        let bytes = crate::canonical::to_vec(&r).unwrap();
        assert!(search(&bytes).is_none());
        assert_eq!(chain_fields(&bytes).unwrap().session, "a\"b");
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let good = crate::canonical::to_vec(&TraceRecord::new("s", Kind::Span, "n")).unwrap();
        for cut in 0..good.len() {
            assert!(chain_fields(&good[..cut]).is_err(), "cut {cut}");
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
                chain_fields(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let dup = br#"{"prev":"0000000000000000000000000000000000000000000000000000000000000000","seq":1,"seq":2,"session":"s"}"#;
        assert!(chain_fields(dup).unwrap_err().contains("duplicate"));
    }
}
