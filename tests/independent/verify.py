#!/usr/bin/env python3
"""An independent verifier of sealtrail archives, written from docs/FORMAT.md.

It shares no code with the Rust implementation: if both accept the same
archives and reject the same tampering, the format document is sufficient.
It implements every check of FORMAT.md §7 that applies to an archive in a
directory (the S3 checks on object versions do not apply there).

Usage:
  verify.py ARCHIVE_DIR PUBLIC_KEY_PEM [OPTIONS]
      Prints one JSON object shaped as `sealtrail verify --json` (FORMAT.md
      §7): {"writers", "batches", "sessions", "records", "bytes",
      "writer_states", ["session",] "findings"}, and exits 0 when there is no
      finding, 1 otherwise.
  verify.py --each PARENT_DIR PUBLIC_KEY_PEM [OPTIONS]
      Verifies every immediate subdirectory of PARENT_DIR as an archive of its
      own, in sorted name order, and prints one JSON line per archive:
      {"archive": name, ...the object above...}; exits 0 when all are intact,
      1 otherwise.

Options:
  --as-of-ns N            verification time (ns since the epoch) for
                          `writer_silent`; the current time by default
  --heartbeat-grace-ns N  grace on heartbeats, 5 s by default
  --size-limit N          largest object and decompressed batch content read,
                          in bytes, 1 GiB by default
  --session ID            report only the findings of session ID, of the
                          session `sealtrail.gaps` and those tied to no session

PUBLIC_KEY_PEM holds one or more SubjectPublicKeyInfo PEM blocks of trusted
Ed25519 keys. A usage error (bad arguments, unreadable key file) exits 2.
Needs: cryptography, zstandard.
"""
import hashlib
import json
import os
import re
import stat
import sys
import time

import zstandard
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

# --------------------------------------------------------------------------
# §3.1 domain tags and the hash helpers

TAG = {k: ("sealtrail/v1/%s\0" % k).encode() for k in
       ["record", "genesis", "seal", "seal-genesis", "leaf", "node", "signature", "key-id"]}

GRACE_NS = 5 * 10**9          # §7: 5 s by default
SIZE_LIMIT = 1 << 30          # §7: 1 GiB by default
MAX_U64 = 2**64 - 1           # §5: seal numbers; §7: record seq
MAX_TIME = 2**64 - 1          # §2.2: 64-bit values
GAPS = "sealtrail.gaps"       # §2.1 reserved session
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
LINE_PREFIX = b'{"hash":"'    # §4, 9 bytes
LINE_INFIX = b'","record":'   # §4, 11 bytes


def H(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()


def lp(s):
    """u32be(len(s)) ‖ s, s as UTF-8 (§3.2)."""
    b = s.encode("utf-8")
    return len(b).to_bytes(4, "big") + b


def session_genesis(writer, session):
    return H(TAG["genesis"], lp(writer), lp(session))


def seal_genesis(writer):
    return H(TAG["seal-genesis"], lp(writer))


def merkle(ds, lo=0, hi=None):
    """RFC 6962 §2.1 Merkle Tree Hash of ds[lo:hi] with sealtrail's tags (§3.3)."""
    if hi is None:
        hi = len(ds)
    n = hi - lo
    if n == 1:
        return H(TAG["leaf"], ds[lo])
    k = 1
    while k * 2 < n:
        k *= 2
    return H(TAG["node"], merkle(ds, lo, lo + k), merkle(ds, lo + k, hi))


# --------------------------------------------------------------------------
# Strict JSON input and RFC 8785 (JCS) output

class Malformed(Exception):
    pass


def _object(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise Malformed("duplicate member %s" % json.dumps(k)[:80])
        d[k] = v
    return d


def _constant(name):
    raise Malformed("%s is not JSON" % name)


_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_constant)


def parse_json(b):
    """Parses UTF-8 JSON text: no duplicate member names, no NaN/Infinity."""
    try:
        text = bytes(b).decode("utf-8")
    except UnicodeDecodeError as e:
        raise Malformed("not UTF-8 (byte %d)" % e.start)
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as e:
        raise Malformed("not JSON: %s" % e.msg + " at %d" % e.pos)
    except (ValueError, RecursionError) as e:  # e.g. an integer with too many digits
        raise Malformed("not JSON: %s" % str(e)[:120])


_ESCAPES = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r", 0x22: '\\"', 0x5C: "\\\\"}


def jcs_string(s):
    """RFC 8785 §3.2.2.2."""
    out = ['"']
    for ch in s:
        c = ord(ch)
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif c < 0x20:
            out.append("\\u%04x" % c)
        elif 0xD800 <= c <= 0xDFFF:
            raise Malformed("a lone surrogate cannot be encoded in UTF-8")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def es_number(x):
    """ECMAScript Number.prototype.toString of the double x (RFC 8785 §3.2.2.3)."""
    if x != x or x in (float("inf"), float("-inf")):
        raise Malformed("NaN and infinities have no JSON form")
    if x == 0:
        return "0"
    if x < 0:
        return "-" + es_number(-x)
    r = repr(x)  # shortest round-trip digits, the same digits ECMAScript picks
    mant, _, exp = r.partition("e")
    e = int(exp) if exp else 0
    ip, _, fp = mant.partition(".")
    # value = int(ip + fp) × 10^(e − len(fp)) = 0.digits × 10^n
    digits = (ip + fp).lstrip("0")
    n = len(digits) + e - len(fp)
    digits = digits.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * (-n) + digits
    t = n - 1
    sign = "+" if t >= 0 else "-"
    return (digits[0] + ("." + digits[1:] if k > 1 else "")) + "e" + sign + str(abs(t))


def jcs(v):
    """The RFC 8785 canonical bytes of a parsed JSON value."""
    return _jcs(v).encode("utf-8")


def _jcs(v):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if type(v) is int:
        # §5: a seal number above 2^53 is canonical only as ECMAScript writes
        # the double nearest to it (its value is the integer those digits spell).
        if -2**53 <= v <= 2**53:
            return str(v)
        try:
            return es_number(float(v))
        except OverflowError:
            raise Malformed("%d is beyond any double" % v)
    if type(v) is float:
        return es_number(v)
    if type(v) is str:
        return jcs_string(v)
    if type(v) is list:
        return "[" + ",".join(_jcs(x) for x in v) + "]"
    if type(v) is dict:
        for k in v:
            jcs_string(k)  # rejects lone surrogates before they reach the sort key
        keys = sorted(v, key=lambda k: k.encode("utf-16-be"))  # UTF-16 code units
        return "{" + ",".join(jcs_string(k) + ":" + _jcs(v[k]) for k in keys) + "}"
    raise Malformed("not a JSON value")


# --------------------------------------------------------------------------
# Value shapes (§5)

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX64B = re.compile(rb"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")
_TIME = re.compile(r"0|[1-9][0-9]*")
_WRITER = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
_SEAL_KEY = re.compile(r"v1/writers/([^/]+)/seals/([0-9]{20})\.json")


def need(cond, why):
    if not cond:
        raise Malformed(why)


def is_u64(v):
    return type(v) is int and 0 <= v <= MAX_U64


def is_hex64(v):
    return type(v) is str and _HEX64.fullmatch(v) is not None


def time_value(v, what):
    need(type(v) is str and len(v) <= 20 and _TIME.fullmatch(v) is not None, "%s is not a time (§2.2)" % what)
    t = int(v)
    need(t <= MAX_TIME, "%s does not fit in 64 bits" % what)
    return t


def exact_members(obj, required, optional, what):
    need(type(obj) is dict, "%s is not an object" % what)
    keys = set(obj)
    missing = sorted(required - keys)
    unknown = sorted(keys - required - optional)
    need(not missing, "%s lacks %s" % (what, ", ".join(missing)))
    need(not unknown, "%s has unknown member %s" % (what, ", ".join(json.dumps(k) for k in unknown)[:120]))


def parse_seal(data):
    """A seal object as §5 describes it: exactly the JCS encoding of an object
    of the §5 shape. Returns (seal, body, seal_hash); raises Malformed."""
    seal = parse_json(data)
    exact_members(seal, {"body", "hash", "signature"}, set(), "the seal")
    need(is_hex64(seal["hash"]), "hash is not 64 lowercase hex digits")
    # a `signature` string of the wrong form is bad_signature (§7), not unreadable
    need(type(seal["signature"]) is str, "signature is not a string")
    body = seal["body"]
    exact_members(body, {"batch", "batch_no", "closed", "created_ns", "format", "heartbeat_ns", "key_id",
                         "prev_seal", "sessions", "writer"}, {"prev_seal_version"}, "the seal body")
    need(type(body["format"]) is int and body["format"] == 1, "format is not 1")
    b = body["batch"]
    if b is not None:
        exact_members(b, {"key", "len", "merkle_root", "records", "sha256"}, {"version_id"}, "batch")
        need(type(b["key"]) is str, "batch.key is not a string")
        need(is_u64(b["len"]), "batch.len is not an unsigned integer")
        need(is_u64(b["records"]), "batch.records is not an unsigned integer")
        need(is_hex64(b["merkle_root"]), "batch.merkle_root is not 64 lowercase hex digits")
        need(is_hex64(b["sha256"]), "batch.sha256 is not 64 lowercase hex digits")
        need(type(b.get("version_id", "")) is str, "batch.version_id is not a string")
    need(is_u64(body["batch_no"]), "batch_no is not an unsigned integer")
    need(type(body["closed"]) is bool, "closed is not a boolean")
    time_value(body["created_ns"], "created_ns")
    time_value(body["heartbeat_ns"], "heartbeat_ns")
    need(type(body["key_id"]) is str, "key_id is not a string")
    need(is_hex64(body["prev_seal"]), "prev_seal is not 64 lowercase hex digits")
    need(type(body.get("prev_seal_version", "")) is str, "prev_seal_version is not a string")
    need(type(body["writer"]) is str, "writer is not a string")
    need(type(body["sessions"]) is list, "sessions is not an array")
    for e in body["sessions"]:
        exact_members(e, {"count", "first_seq", "head", "id", "last_seq"}, set(), "a session summary")
        need(is_u64(e["count"]), "a session count is not an unsigned integer")
        need(is_u64(e["first_seq"]) and is_u64(e["last_seq"]), "a session's first_seq/last_seq is not an unsigned integer")
        need(is_hex64(e["head"]), "a session head is not 64 lowercase hex digits")
        need(type(e["id"]) is str, "a session id is not a string")
    # §5: the seal object is exactly its JCS encoding (numbers above 2^53 included)
    try:
        canonical = jcs(seal) == bytes(data)
    except Malformed:
        canonical = False
    need(canonical, "not exactly the JCS encoding of its content")
    return seal, body, H(TAG["seal"], jcs(body))


# --------------------------------------------------------------------------
# Records (§7): only `prev`, `seq`, `session` and `v` are read

_WS = b" \t\n\r"
_STRING = re.compile(rb'"(?:[^"\\\x00-\x1f]++|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*+"')
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*+)(?:\.[0-9]++)?+(?:[eE][+-]?[0-9]++)?+")
_DIGITS = re.compile(rb"0|[1-9][0-9]*")
_PREV = re.compile(rb'"[0-9a-f]{64}"')


def _ws(b, i):
    n = len(b)
    while i < n and b[i] in _WS:
        i += 1
    return i


def _string_end(b, i):
    m = _STRING.match(b, i)
    need(m is not None, "bad JSON string at %d" % i)
    return m.end()


def _value_end(b, i):
    """End of the JSON value starting at i (syntax only, iteratively)."""
    n = len(b)
    stack = []
    while True:
        i = _ws(b, i)
        need(i < n, "JSON text ends early")
        c = b[i]
        if c == 0x7B or c == 0x5B:  # { [
            j = _ws(b, i + 1)
            close = 0x7D if c == 0x7B else 0x5D
            if j < n and b[j] == close:
                i = j + 1
            else:
                stack.append(close)
                if c == 0x7B:
                    need(j < n and b[j] == 0x22, "member name expected at %d" % j)
                    j = _ws(b, _string_end(b, j))
                    need(j < n and b[j] == 0x3A, "':' expected at %d" % j)
                    j += 1
                i = j
                continue
        elif c == 0x22:
            i = _string_end(b, i)
        elif b.startswith(b"true", i):
            i += 4
        elif b.startswith(b"false", i):
            i += 5
        elif b.startswith(b"null", i):
            i += 4
        else:
            m = _NUMBER.match(b, i)
            need(m is not None, "no JSON value at %d" % i)
            i = m.end()
        # a value ended: close containers or go on to the next element
        while True:
            if not stack:
                return i
            i = _ws(b, i)
            need(i < n, "JSON text ends early")
            c = b[i]
            if c == 0x2C:
                i = _ws(b, i + 1)
                if stack[-1] == 0x7D:
                    need(i < n and b[i] == 0x22, "member name expected at %d" % i)
                    i = _ws(b, _string_end(b, i))
                    need(i < n and b[i] == 0x3A, "':' expected at %d" % i)
                    i += 1
                break
            need(c == stack[-1], "unexpected byte at %d" % i)
            stack.pop()
            i += 1


def _json_string(raw):
    """The text of a JSON string token; raises Malformed if it is not valid UTF-8 text."""
    try:
        s = json.loads(bytes(raw).decode("utf-8"))
        s.encode("utf-8")  # no lone surrogate
    except (UnicodeError, ValueError) as e:
        raise Malformed("not a UTF-8 string: %s" % short(e, 80))
    return s


def record_members(rb):
    """The top-level members of a record, by name: a list of raw value spans each.

    Raises Malformed when the bytes are not one JSON object."""
    b = bytes(rb)
    n = len(b)
    i = _ws(b, 0)
    need(i < n and b[i] == 0x7B, "the record is not a JSON object")
    members = {}
    i = _ws(b, i + 1)
    if i < n and b[i] == 0x7D:
        i += 1
    else:
        while True:
            need(i < n and b[i] == 0x22, "member name expected at %d" % i)
            j = _string_end(b, i)
            try:
                name = json.loads(b[i:j].decode("utf-8", "surrogateescape"))
            except ValueError:
                name = None
            i = _ws(b, j)
            need(i < n and b[i] == 0x3A, "':' expected at %d" % i)
            vs = _ws(b, i + 1)
            ve = _value_end(b, vs)
            members.setdefault(name, []).append(b[vs:ve])
            i = _ws(b, ve)
            need(i < n, "JSON text ends early")
            if b[i] == 0x2C:
                i = _ws(b, i + 1)
                continue
            need(b[i] == 0x7D, "unexpected byte at %d" % i)
            i += 1
            break
    need(_ws(b, i) == n, "bytes after the record object")
    return members


def read_record(rb):
    """(members, session, seq, prev, problems) per §7: session, seq and prev are
    None when they cannot be read; problems lists what is malformed."""
    try:
        m = record_members(rb)
    except Malformed as e:
        return None, None, None, None, [str(e)]
    problems = []

    def one(name):
        vals = m.get(name)
        if not vals:
            problems.append("%s is missing" % name)
            return None
        if len(vals) > 1:
            problems.append("%s is repeated" % name)
            return None
        return vals[0]

    prev = one("prev")
    if prev is not None:
        if _PREV.fullmatch(prev):
            prev = bytes.fromhex(prev[1:-1].decode("ascii"))
        else:
            problems.append("prev is not 64 lowercase hex digits")
            prev = None
    seq = one("seq")
    if seq is not None:
        if len(seq) <= 20 and _DIGITS.fullmatch(seq) and int(seq) <= MAX_U64:
            seq = int(seq)
        else:
            problems.append("seq is not an unsigned integer written as digits")
            seq = None
    session = one("session")
    if session is not None:
        try:
            need(session[:1] == b'"', "not a string")
            session = _json_string(session)
        except Malformed:
            problems.append("session is not a string")
            session = None
    v = one("v")
    if v is not None and v != b"1":
        problems.append("v is not 1")
    return m, session, seq, prev, problems


def gap_report(m):
    """What a `sealtrail.gaps` record says (§2.1, §7 records_dropped)."""
    out = {"count": 0, "from_ns": 0, "until_ns": 0}  # 0 where a value cannot be read

    def value(name):
        vals = (m or {}).get(name)
        if not vals or len(vals) != 1:
            return None
        try:
            return parse_json(vals[0])
        except Malformed:
            return None
    def single(members, name):
        vals = (members or {}).get(name)
        return vals[0] if vals and len(vals) == 1 else None

    # attributes -> audit.dropped (each once, by name) -> an object whose only
    # member is `int`, a string of digits; nothing else of the attributes is read.
    try:
        attrs = single(m, "attributes")
        dropped = single(record_members(attrs), "audit.dropped") if attrs is not None else None
        inner = record_members(dropped) if dropped is not None else {}
        raw = single(inner, "int") if sum(len(v) for v in inner.values()) == 1 else None
        text = _json_string(raw) if raw is not None and raw[:1] == b'"' else None
        if text is not None and re.fullmatch(r"0|[1-9][0-9]{0,18}", text) and int(text) < 2**63:
            out["count"] = int(text)
    except Malformed:
        pass
    for member, field in (("start_ns", "from_ns"), ("end_ns", "until_ns")):
        try:
            out[field] = time_value(value(member), member)
        except Malformed:
            pass
    return out


# --------------------------------------------------------------------------
# Ed25519 strictness (§5.1: reject non-canonical S and small-order points)

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _decode_point(b):
    y = int.from_bytes(b, "little")
    sign = y >> 255
    y = (y & ((1 << 255) - 1)) % _P
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P:
        return None
    if x & 1 != sign:
        x = (_P - x) % _P
    return x, y


def _add(p, q):
    (x1, y1), (x2, y2) = p, q
    t = _D * x1 * x2 * y1 * y2 % _P
    x3 = (x1 * y2 + x2 * y1) * pow(1 + t, _P - 2, _P) % _P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, _P - 2, _P) % _P
    return x3, y3


def small_order(b):
    p = _decode_point(b)
    if p is None:
        return False
    for _ in range(3):
        p = _add(p, p)
    return p == (0, 1)


def signature_ok(pub, raw_pub, sig_hex, seal_hash):
    """§5.1 strict verification; a `signature` that is not 128 lowercase hex digits does not verify."""
    if _HEX128.fullmatch(sig_hex) is None:
        return False
    sig = bytes.fromhex(sig_hex)
    if int.from_bytes(sig[32:], "little") >= _L or small_order(sig[:32]) or small_order(raw_pub):
        return False
    try:
        pub.verify(sig, TAG["signature"] + seal_hash)
        return True
    except InvalidSignature:
        return False


class UsageError(Exception):
    pass


def load_trusted(path):
    """Trusted keys by key id (§5.2), from one or more PEM blocks: {key id: (key, raw bytes)}.

    A key of small order is accepted; it verifies no signature (§5.1)."""
    try:
        data = open(path, "rb").read()
    except OSError as e:
        raise UsageError("cannot read %s: %s" % (path, e))
    blocks = re.findall(rb"-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----", data, re.S)
    if not blocks:
        raise UsageError("%s holds no PUBLIC KEY PEM block" % path)
    keys = {}
    for blk in blocks:
        try:
            pub = load_pem_public_key(blk)
        except Exception as e:
            raise UsageError("%s: %s" % (path, e))
        if not isinstance(pub, Ed25519PublicKey):
            raise UsageError("%s: not an Ed25519 public key" % path)
        raw = pub.public_bytes(Encoding.Raw, PublicFormat.Raw)
        keys[H(TAG["key-id"], raw)[:8].hex()] = (pub, raw)
    return keys


# --------------------------------------------------------------------------
# Objects of a directory archive (§6)

class TooLarge(Exception):
    def __init__(self, size):
        Exception.__init__(self, "larger than the size limit")
        self.size = size


def list_objects(root):
    """Every object under root, by key: regular files, symbolic links followed."""
    files = {}
    seen = set()

    def walk(d, prefix):
        try:
            st = os.stat(d)
            if (st.st_dev, st.st_ino) in seen:
                return
            seen.add((st.st_dev, st.st_ino))
            names = sorted(os.listdir(d))
        except OSError:
            return
        for n in names:
            p = os.path.join(d, n)
            try:
                st = os.stat(p)  # follows symbolic links
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                files[prefix + n] = p
            elif stat.S_ISDIR(st.st_mode):
                walk(p, prefix + n + "/")
    st = os.stat(root)  # an archive that cannot be listed: raises
    if not stat.S_ISDIR(st.st_mode):
        raise OSError("not a directory")
    walk(root, "")
    return files


def read_object(path, limit):
    """The object's bytes, never more than limit + 1 of them; raises TooLarge beyond limit."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if st.st_size > limit:
            raise TooLarge(st.st_size)
        data = f.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(len(data))
    return data


WINDOW_DEFAULT = 1 << 27   # §4: zstd's default window limit for frames without a content size
WINDOW_MAX = 1 << 31       # the largest window zstd decodes


def decode_frame(data, limit):
    """(content, frame length) of the zstd frame the object begins with (§4);
    raises Malformed when it does not begin with one complete frame."""
    need(len(data) >= 4, "not a zstd frame")
    magic = int.from_bytes(data[:4], "little")
    if magic & 0xFFFFFFF0 == 0x184D2A50:  # a skippable frame: its content is empty
        need(len(data) >= 8, "incomplete skippable frame")
        end = 8 + int.from_bytes(data[4:8], "little")
        need(end <= len(data), "incomplete skippable frame")
        return bytearray(), end
    need(data[:4] == ZSTD_MAGIC, "not a zstd frame")
    try:
        size = zstandard.get_frame_parameters(data).content_size
    except zstandard.ZstdError as e:
        raise Malformed("bad zstd frame header: %s" % e)
    known = size != zstandard.CONTENTSIZE_UNKNOWN
    need(not known or size <= limit, "declared content larger than the size limit")
    dobj = zstandard.ZstdDecompressor(max_window_size=WINDOW_MAX if known else WINDOW_DEFAULT).decompressobj()
    out, pos, chunk = bytearray(), 0, 1024  # small input steps bound each step's output
    mv = memoryview(data)
    try:
        while pos < len(data) and not dobj.eof:
            out += dobj.decompress(mv[pos:pos + chunk])
            pos = min(pos + chunk, len(data))
            need(len(out) <= limit, "content larger than the size limit")
    except zstandard.ZstdError as e:
        raise Malformed("zstd: %s" % e)
    need(dobj.eof, "incomplete zstd frame")
    return out, pos - len(dobj.unused_data)


# --------------------------------------------------------------------------
# Verification (§7)

def short(s, n=200):
    s = str(s)
    return s if len(s) <= n else s[:n] + "…"


class Seal:
    def __init__(self, no, key, body, seal_hash):
        self.no, self.key, self.body, self.hash = no, key, body, seal_hash
        self.created = int(body["created_ns"])
        self.heartbeat = int(body["heartbeat_ns"])
        self.closed = body["closed"]


LOCATION = ("writer", "batch_no", "key", "session", "seq", "offset")
SORT_ORDER = ("writer", "batch_no", "session", "seq", "offset", "key")


def sort_key(f):
    return tuple((0,) if m not in f else (1, f[m]) for m in SORT_ORDER)


class Archive:
    def __init__(self, root, trusted, as_of, grace, limit):
        self.root, self.trusted, self.as_of, self.grace, self.limit = root, trusted, as_of, grace, limit
        self.findings = []
        self.writers = 0
        self.batches = 0
        self.records = 0
        self.session_records = {}  # session -> records placed in its chains
        self.bytes = 0
        self.chains = set()          # (writer, session) found in decoded batches or stand-in summaries
        self.writer_states = []
        self.covered = set()
        self._genesis = {}

    def found(self, problem, at, **details):
        """A finding: first where it is (members of `at` that apply), then problem and details."""
        f = {m: at[m] for m in LOCATION if at.get(m) is not None}
        f["problem"] = problem
        f.update(details)
        self.findings.append(f)

    def genesis(self, w, s):
        g = self._genesis.get((w, s))
        if g is None:
            g = self._genesis[(w, s)] = session_genesis(w, s)
        return g

    def run(self):
        try:
            self.files = list_objects(self.root)
        except OSError:
            self.files = {}
        writers = {}
        for k in self.files:
            m = _SEAL_KEY.fullmatch(k)
            if m and _WRITER.fullmatch(m.group(1)) and int(m.group(2)) <= MAX_U64:
                writers.setdefault(m.group(1), []).append((int(m.group(2)), k))
                self.covered.add(k)
        self.writers = len(writers)
        if not writers:
            self.found("no_seals", {})
        for w in sorted(writers):
            try:
                self.writer(w, sorted(writers[w]))
            except Exception as e:  # a bug here must not hide the rest of the archive
                self.found("verifier_error", {"writer": w}, reason=short(repr(e)))
        for k in sorted(self.files):
            if k not in self.covered:
                self.found("uncovered_object", {"key": k})

    # -- seals, per writer, in batch number order
    def writer(self, w, seals):
        self.heads = {}   # session -> (next seq, head) at the end of the batches before
        expected, prev, s = 0, None, None
        for no, key in seals:
            self.batches += 1
            if no != expected:
                self.found("missing_seals", {"writer": w, "batch_no": expected}, first=expected, last=no - 1)
            expected = no + 1
            s = self.seal(w, no, key, prev if prev is not None and prev.no == no - 1 else None)
            prev = s
            if s is not None and s.body["batch"] is not None:
                self.batch(w, s)
            elif s is not None:
                # A seal without a batch lists no session: each one listed is
                # not in its (empty) batch; the summaries still advance the chains.
                for e in s.body["sessions"]:
                    self.found("session_not_in_batch", {"writer": w, "batch_no": s.no, "session": e["id"]})
                self.stand_in(w, s)
        last_no, last_key = seals[-1]
        newest = s  # the seal with the highest number, if readable
        state = {"writer": w, "seals": len(seals), "last_batch_no": last_no,
                 # §7: 0 and false when the newest seal is unreadable
                 "last_seal_ns": newest.created if newest is not None else 0,
                 "closed": newest.closed if newest is not None else False}
        if newest is not None and not newest.closed:
            allowed = newest.heartbeat + self.grace
            state["silent_after_ns"] = newest.created + allowed
            if self.as_of - newest.created > allowed:
                self.found("writer_silent", {"writer": w, "batch_no": last_no, "key": last_key},
                           last_seal_ns=newest.created, as_of_ns=self.as_of, allowed_ns=allowed)
        self.writer_states.append(state)

    def seal(self, w, no, key, prev):
        at = {"writer": w, "batch_no": no, "key": key}
        try:
            data = read_object(self.files[key], self.limit)
        except TooLarge as e:
            self.found("seal_unreadable", at, reason="%d bytes, larger than the size limit" % e.size)
            return None
        except OSError as e:
            self.found("seal_unreadable", at, reason=short(e))
            return None
        try:
            seal, body, h = parse_seal(data)
        except Malformed as e:
            self.found("seal_unreadable", at, reason=short(e))
            return None
        b = body["batch"]
        if body["writer"] != w:
            self.found("seal_misplaced", at, field="writer", expected=w, found=body["writer"])
        if body["batch_no"] != no:
            self.found("seal_misplaced", at, field="batch_no", expected=no, found=body["batch_no"])
        if b is not None:
            want = "v1/writers/%s/batches/%020d-%s.jsonl.zst" % (w, no, b["sha256"][:16])
            if b["key"] != want:
                self.found("seal_misplaced", at, field="batch.key", expected=want, found=b["key"])
        # hash, key, signature: in this order, stopping at the first that fails
        trusted = self.trusted.get(body["key_id"])
        if seal["hash"] != h.hex():
            self.found("seal_hash_mismatch", at, expected=h.hex(), found=seal["hash"])
        elif trusted is None:
            self.found("unknown_signing_key", at, found=body["key_id"], trusted=sorted(self.trusted))
        elif not signature_ok(trusted[0], trusted[1], seal["signature"], h):
            self.found("bad_signature", at, key_id=body["key_id"])
        s = Seal(no, key, body, h)
        want_prev = seal_genesis(w) if no == 0 else (prev.hash if prev is not None else None)
        if want_prev is not None and body["prev_seal"] != want_prev.hex():
            self.found("seal_link_broken", at, expected=want_prev.hex(), found=body["prev_seal"])
        if prev is not None:
            if s.created < prev.created:
                self.found("seal_time_regressed", at, previous_ns=prev.created, found_ns=s.created)
            allowed = prev.heartbeat + self.grace
            if not prev.closed and s.created - prev.created > allowed:
                self.found("heartbeat_gap", at, gap_ns=s.created - prev.created, allowed_ns=allowed)
        return s

    # -- batches, for each readable seal with a batch
    def stand_in(self, w, s):
        """The signed session summaries of a seal stand in for its batch (first_seq not checked)."""
        for e in s.body["sessions"]:
            self.heads[e["id"]] = (e["last_seq"] + 1, bytes.fromhex(e["head"]))
            self.chains.add((w, e["id"]))

    def batch(self, w, s):
        b = s.body["batch"]
        key = b["key"]
        at = {"writer": w, "batch_no": s.no, "key": key}
        self.covered.add(key)
        path = self.files.get(key)
        if path is None:
            self.found("batch_missing", at)
            self.stand_in(w, s)
            return
        try:
            data = read_object(path, self.limit)
        except TooLarge as e:
            if e.size != b["len"]:
                self.found("batch_length_mismatch", at, expected=b["len"], found=e.size)
            self.found("batch_undecodable", at, reason="%d bytes, larger than the size limit" % e.size)
            self.stand_in(w, s)
            return
        except OSError as e:
            self.found("batch_undecodable", at, reason=short(e))
            self.stand_in(w, s)
            return
        if len(data) != b["len"]:
            self.found("batch_length_mismatch", at, expected=b["len"], found=len(data))
        digest = hashlib.sha256(data).hexdigest()
        if digest != b["sha256"]:
            self.found("batch_digest_mismatch", at, expected=b["sha256"], found=digest)
        try:
            content, frame_len = decode_frame(data, self.limit)
        except (Malformed, MemoryError) as e:
            self.found("batch_undecodable", at, reason=short(e))
            self.stand_in(w, s)
            return
        if frame_len < len(data):
            self.found("batch_trailing_data", at, frame_len=frame_len, found_len=len(data))
        del data
        self.bytes += len(content)
        self.b_lines = 0
        self.b_leaves = []
        self.b_chain = {}     # session -> [next seq, head] within this batch
        self.b_owner = {}     # stored hash -> session, of the records placed so far in this batch
        self.b_gen = {}       # genesis -> session, of the sessions seen so far in this batch
        self.b_summary = {}   # session -> what the batch holds of it
        self.b_head_owner = None
        pos = 0
        view = memoryview(content)  # lines as views: no copy of the content
        while pos < len(content):
            nl = content.find(b"\n", pos)
            end = len(content) if nl < 0 else nl
            off = pos
            pos = end + 1
            self.line(w, view[off:end], nl >= 0, dict(at, offset=off))
        self.records += self.b_lines
        for sid, e in self.b_summary.items():
            self.session_records[sid] = self.session_records.get(sid, 0) + e["count"]
        self.heads.update((sid, tuple(st)) for sid, st in self.b_chain.items())
        if self.b_lines != b["records"]:
            self.found("record_count_mismatch", at, expected=b["records"], found=self.b_lines)
        root = merkle(self.b_leaves).hex() if self.b_leaves else "0" * 64
        if root != b["merkle_root"]:
            self.found("merkle_root_mismatch", at, expected=b["merkle_root"], found=root)
        self.compare_sessions(s.body["sessions"], at)

    def head_owner(self, prev, session):
        """The session of this writer, other than `session`, whose chain ended at `prev` in the batches before."""
        if self.b_head_owner is None:
            self.b_head_owner = {}
            for sid in sorted(self.heads):
                self.b_head_owner.setdefault(self.heads[sid][1], []).append(sid)
        for sid in self.b_head_owner.get(prev, ()):
            if sid != session:
                return sid
        return None

    def line(self, w, line, has_lf, at):
        if not has_lf:
            self.found("line_malformed", at, reason="the last line does not end with a line feed")
        if not (len(line) >= 87 and line[:9] == LINE_PREFIX and _HEX64B.fullmatch(line, 9, 73)
                and line[73:84] == LINE_INFIX and line[84] == 0x7B and line[-1] == 0x7D):
            self.found("line_malformed", at, reason="not the §4 shape")
            return
        self.b_lines += 1
        stored = bytes.fromhex(bytes(line[9:73]).decode("ascii"))
        self.b_leaves.append(stored)
        rb = line[84:-1]
        actual = H(TAG["record"], rb)
        m, session, seq, prev, problems = read_record(rb)
        at = dict(at, session=session, seq=seq)
        if actual != stored:
            self.found("record_hash_mismatch", at, expected=stored.hex(), found=actual.hex())
        if problems:
            self.found("record_malformed", at, reason=short("; ".join(problems)))
        if session == GAPS:  # the writer's signed statement that it dropped records
            self.found("records_dropped", at, **gap_report(m))
        if session is None or seq is None or prev is None:
            return  # not placed in any chain
        self.chains.add((w, session))
        st = self.b_chain.get(session)
        if st is None:  # the session's first record in this batch
            other = self.b_owner.get(prev)
            genesis = self.genesis(w, session)
            if other is not None and other != session:
                self.found("record_out_of_session", at, belongs_to=other)
            elif seq == 0 and prev != genesis:
                other = self.b_gen.get(prev)
                if other is not None and other != session:
                    self.found("record_out_of_session", at, belongs_to=other)
                else:
                    self.found("genesis_mismatch", at, expected=genesis.hex(), found=prev.hex())
            # across batches: no offset
            across = dict(at, offset=None)
            before = self.heads.get(session)
            other = self.head_owner(prev, session)
            if other is not None and (before is None or prev != before[1]):
                self.found("record_out_of_session", across, belongs_to=other)
            elif before is None:
                if seq != 0:
                    self.found("seq_discontinuity", across, expected=0, found=seq)
            elif seq != before[0]:
                self.found("seq_discontinuity", across, expected=before[0], found=seq)
            elif prev != before[1]:
                self.found("chain_link_broken", across, expected=before[1].hex(), found=prev.hex())
            self.b_chain[session] = [seq + 1, stored]
            self.b_gen.setdefault(genesis, session)
        else:
            nxt, head = st
            other = self.b_owner.get(prev)
            if other is not None and other != session and prev != head:
                self.found("record_out_of_session", at, belongs_to=other)
            elif seq != nxt:
                self.found("seq_discontinuity", at, expected=nxt, found=seq)
            elif prev != head:
                self.found("chain_link_broken", at, expected=head.hex(), found=prev.hex())
            if seq >= nxt:  # a record that goes backwards does not move the chain
                st[0], st[1] = seq + 1, stored
        self.b_owner.setdefault(stored, session)
        e = self.b_summary.get(session)
        if e is None:
            self.b_summary[session] = {"count": 1, "first_seq": seq, "last_seq": seq, "head": stored.hex()}
        else:
            e["count"] += 1
            e["last_seq"] = seq
            e["head"] = stored.hex()

    def compare_sessions(self, sealed, at):
        for e in sealed:  # matched by id; the order is not checked
            got = self.b_summary.get(e["id"])
            where = dict(at, session=e["id"])
            if got is None:
                self.found("session_not_in_batch", where)
                continue
            for field in ("count", "first_seq", "last_seq", "head"):
                if e[field] != got[field]:
                    self.found("session_summary_mismatch", where, field=field, expected=str(e[field]),
                               found=str(got[field]))
        sealed_ids = {e["id"] for e in sealed}
        for sid in self.b_summary:
            if sid not in sealed_ids:
                self.found("session_not_in_seal", dict(at, session=sid))

    def result(self, only_session=None):
        findings = self.findings
        chains = self.chains
        if only_session is not None:
            findings = [f for f in findings if f.get("session", only_session) in (only_session, GAPS)]
            chains = {c for c in chains if c[1] == only_session}
            if not chains:
                findings.append({"session": only_session, "problem": "session_not_found"})
        records = self.records if only_session is None else self.session_records.get(only_session, 0)
        out = {"writers": self.writers, "batches": self.batches, "sessions": len(chains),
               "records": records, "bytes": self.bytes, "writer_states": self.writer_states}
        if only_session is not None:
            out["session"] = only_session
        out["findings"] = [clean(f) for f in sorted(findings, key=sort_key)]
        return out


def clean(v):
    """Strings that JSON can carry (a file name or an escaped lone surrogate may not be Unicode)."""
    if type(v) is str:
        return v.encode("utf-8", "backslashreplace").decode("utf-8")
    if type(v) is dict:
        return {clean(k): clean(x) for k, x in v.items()}
    if type(v) is list:
        return [clean(x) for x in v]
    return v


def verify(root, trusted, as_of, grace=GRACE_NS, limit=SIZE_LIMIT, session=None):
    a = Archive(root, trusted, as_of, grace, limit)
    try:
        a.run()
    except Exception as e:  # never a traceback: the archive is reported as not verified
        a.found("verifier_error", {}, reason=short(repr(e)))
    return a.result(session)


def usage(msg):
    sys.stderr.write("verify.py: %s\n\n%s" % (msg, __doc__[__doc__.index("Usage:"):]))
    sys.exit(2)


def main(argv):
    opts = {"--as-of-ns": None, "--heartbeat-grace-ns": str(GRACE_NS), "--size-limit": str(SIZE_LIMIT),
            "--session": None}
    each = False
    pos = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--each":
            each = True
        elif a in opts:
            if i + 1 >= len(argv):
                usage("%s needs a value" % a)
            opts[a] = argv[i + 1]
            i += 1
        elif a.startswith("--"):
            usage("unknown option %s" % a)
        else:
            pos.append(a)
        i += 1
    if len(pos) != 2:
        usage("expected an archive directory and a public key file")
    try:
        as_of = time.time_ns() if opts["--as-of-ns"] is None else int(opts["--as-of-ns"])
        grace = int(opts["--heartbeat-grace-ns"])
        limit = int(opts["--size-limit"])
    except ValueError as e:
        usage(str(e))
    try:
        trusted = load_trusted(pos[1])
    except UsageError as e:
        usage(str(e))
    session = opts["--session"]
    if not each:
        out = verify(pos[0], trusted, as_of, grace, limit, session)
        print(json.dumps(out))
        return 1 if out["findings"] else 0
    try:
        names = sorted(n for n in os.listdir(pos[0]) if os.path.isdir(os.path.join(pos[0], n)))
    except OSError as e:
        usage("cannot list %s: %s" % (pos[0], e))
    status = 0
    for n in names:
        out = verify(os.path.join(pos[0], n), trusted, as_of, grace, limit, session)
        line = {"archive": clean(n)}
        line.update(out)
        print(json.dumps(line), flush=True)
        if out["findings"]:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
