#!/usr/bin/env python3
"""An independent verifier of sealtrail archives, written from docs/FORMAT.md.

It shares no code with the Rust implementation: if both accept the same
archives and reject the same tampering, the format document is sufficient.
It implements every check of FORMAT.md §7 that applies to an archive in a
directory (the S3 checks on object versions do not apply there).

Usage:
  verify.py ARCHIVE_DIR PUBLIC_KEY_PEM [OPTIONS]
      Prints one JSON object {"records": n, "sessions": n, "batches": n,
      "findings": [{"problem": name, ...where...}]} and exits 0 when intact,
      1 otherwise.
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
MAX_SEQ = 2**53 - 1           # §2.1
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
        # JCS numbers are IEEE doubles; integers up to 2^53 are exact.
        return str(v) if -2**53 <= v <= 2**53 else es_number(float(v))
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
# Value shapes (§2, §5)

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX64B = re.compile(rb"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")
_TIME = re.compile(r"0|[1-9][0-9]*")
_WRITER = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
_SEAL_KEY = re.compile(r"v1/writers/([^/]+)/seals/([0-9]{20})\.json")


def need(cond, why):
    if not cond:
        raise Malformed(why)


def is_uint(v, top=MAX_SEQ):
    return type(v) is int and 0 <= v <= top


def is_hex64(v):
    return type(v) is str and _HEX64.fullmatch(v) is not None


def time_value(v, what):
    need(type(v) is str and _TIME.fullmatch(v) is not None, "%s is not a time (§2.2)" % what)
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
    """A seal object as §5 describes it. Returns (seal, body, seal_hash)."""
    seal = parse_json(data)
    exact_members(seal, {"body", "hash", "signature"}, set(), "the seal")
    need(type(seal["hash"]) is str, "hash is not a string")
    need(type(seal["signature"]) is str and _HEX128.fullmatch(seal["signature"]) is not None,
         "signature is not 128 lowercase hex digits")
    body = seal["body"]
    exact_members(body, {"batch", "batch_no", "closed", "created_ns", "format", "heartbeat_ns", "key_id",
                         "prev_seal", "sessions", "writer"}, {"prev_seal_version"}, "the seal body")
    need(type(body["format"]) is int and body["format"] == 1, "format is not 1")
    b = body["batch"]
    if b is not None:
        exact_members(b, {"key", "len", "merkle_root", "records", "sha256"}, {"version_id"}, "batch")
        need(type(b["key"]) is str, "batch.key is not a string")
        need(is_uint(b["len"]), "batch.len is not a length")
        need(is_uint(b["records"]), "batch.records is not a count")
        need(is_hex64(b["merkle_root"]), "batch.merkle_root is not 64 lowercase hex digits")
        need(is_hex64(b["sha256"]), "batch.sha256 is not 64 lowercase hex digits")
        need(type(b.get("version_id", "")) is str, "batch.version_id is not a string")
    need(is_uint(body["batch_no"]), "batch_no is not a batch number")
    need(type(body["closed"]) is bool, "closed is not a boolean")
    time_value(body["created_ns"], "created_ns")
    time_value(body["heartbeat_ns"], "heartbeat_ns")
    need(type(body["key_id"]) is str, "key_id is not a string")
    need(is_hex64(body["prev_seal"]), "prev_seal is not 64 lowercase hex digits")
    if "prev_seal_version" in body:
        need(type(body["prev_seal_version"]) is str, "prev_seal_version is not a string")
        need(body["batch_no"] != 0, "prev_seal_version on batch 0")
    need(type(body["writer"]) is str, "writer is not a string")
    need(type(body["sessions"]) is list, "sessions is not an array")
    for e in body["sessions"]:
        exact_members(e, {"count", "first_seq", "head", "id", "last_seq"}, set(), "a session summary")
        need(is_uint(e["count"]), "a session count is not a count")
        need(is_uint(e["first_seq"]) and is_uint(e["last_seq"]), "a session's first_seq/last_seq is not a seq")
        need(is_hex64(e["head"]), "a session head is not 64 lowercase hex digits")
        need(type(e["id"]) is str, "a session id is not a string")
    return seal, body, H(TAG["seal"], jcs(body))


def read_record(rb):
    """The members §7 needs of a record's canonical bytes.

    Returns (obj, session, seq, prev, problems): session, seq and prev are
    None when unreadable; problems lists what makes the record malformed."""
    obj = parse_json(rb)
    need(type(obj) is dict, "the record is not an object")
    problems = []
    session = obj.get("session")
    if type(session) is not str:
        problems.append("session is not a string")
        session = None
    else:
        try:
            n = len(session.encode("utf-8"))
        except UnicodeEncodeError:
            n = -1
        if not 1 <= n <= 1024:
            problems.append("session is not 1 to 1024 bytes of UTF-8")
            session = None
    seq = obj.get("seq")
    if not is_uint(seq):
        problems.append("seq is not an integer from 0 to 2^53-1")
        seq = None
    prev = obj.get("prev")
    if not is_hex64(prev):
        problems.append("prev is not 64 lowercase hex digits")
        prev = None
    if "v" not in obj:
        problems.append("v is missing")
    elif not (type(obj["v"]) is int and obj["v"] == 1):
        problems.append("v is not 1")
    return obj, session, seq, prev, problems


def gap_report(obj):
    """What a `sealtrail.gaps` record says (§2.1), as far as it is readable."""
    out = {}
    try:
        attrs = obj.get("attributes")
        for name, field in (("audit.dropped", "count"), ("audit.dropped_total", "dropped_total")):
            tv = attrs.get(name) if type(attrs) is dict else None
            if type(tv) is dict and type(tv.get("int")) is str and re.fullmatch(r"0|-?[1-9][0-9]{0,18}", tv["int"]):
                out[field] = int(tv["int"])
        for m in ("start_ns", "end_ns"):
            try:
                out[m] = time_value(obj.get(m), m)
            except Malformed:
                pass
    except Exception:
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


def signature_ok(pub, sig, seal_hash):
    if int.from_bytes(sig[32:], "little") >= _L or small_order(sig[:32]):
        return False
    try:
        pub.verify(sig, TAG["signature"] + seal_hash)
        return True
    except InvalidSignature:
        return False


class UsageError(Exception):
    pass


def load_trusted(path):
    """Trusted keys by key id (§5.2), from one or more PEM blocks."""
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
        if small_order(raw):
            raise UsageError("%s: a small-order Ed25519 key cannot be trusted" % path)
        keys[H(TAG["key-id"], raw)[:8].hex()] = pub
    return keys


# --------------------------------------------------------------------------
# Objects of a directory archive

class TooLarge(Exception):
    def __init__(self, size):
        Exception.__init__(self, "larger than the size limit")
        self.size = size


def list_objects(root):
    """Every file under root, by key ("/"-separated path relative to root)."""
    files = {}

    def ignore(_err):
        pass
    for d, _, names in os.walk(root, onerror=ignore):
        for n in names:
            p = os.path.join(d, n)
            files[os.path.relpath(p, root).replace(os.sep, "/")] = p
    return files


def read_object(path, limit):
    """The object's bytes, never more than limit + 1 of them; raises TooLarge beyond limit."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise OSError("not a regular file")
    if st.st_size > limit:
        raise TooLarge(st.st_size)
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(len(data))
    return data


def decode_frame(data, limit):
    """(content, trailing bytes) of one zstd frame; raises Malformed when it is not one complete frame."""
    need(data[:4] == ZSTD_MAGIC, "not a zstd frame")
    try:
        size = zstandard.get_frame_parameters(data).content_size
    except zstandard.ZstdError as e:
        raise Malformed("bad zstd frame header: %s" % e)
    need(size in (zstandard.CONTENTSIZE_UNKNOWN,) or size <= limit, "declared content larger than the size limit")
    dobj = zstandard.ZstdDecompressor().decompressobj()
    out, pos, chunk = bytearray(), 0, 1024  # small input steps bound each step's output
    mv = memoryview(data)
    try:
        while pos < len(data) and not dobj.eof:
            out += dobj.decompress(mv[pos:pos + chunk])
            pos += chunk
            need(len(out) <= limit, "content larger than the size limit")
    except zstandard.ZstdError as e:
        raise Malformed("zstd: %s" % e)
    need(dobj.eof, "incomplete zstd frame")
    return out, bytes(dobj.unused_data) + bytes(mv[pos:])


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


class Archive:
    def __init__(self, root, trusted, as_of, grace, limit):
        self.root, self.trusted, self.as_of, self.grace, self.limit = root, trusted, as_of, grace, limit
        self.findings = []
        self.records = 0
        self.batches = 0
        self.chains = set()          # (writer, session) with at least one readable record
        self.sessions_seen = set()   # session ids with at least one readable record
        self.covered = set()

    def found(self, problem, **at):
        f = {"problem": problem}
        f.update((k, v) for k, v in at.items() if v is not None)
        self.findings.append(f)

    def run(self):
        try:
            self.files = list_objects(self.root)
        except Exception as e:
            self.files = {}
            self.found("no_seals", detail="cannot list the archive: %s" % short(e))
            return
        writers = {}
        for k in self.files:
            m = _SEAL_KEY.fullmatch(k)
            if m and _WRITER.fullmatch(m.group(1)):
                writers.setdefault(m.group(1), []).append((int(m.group(2)), k))
                self.covered.add(k)
        if not writers:
            self.found("no_seals")
        for w in sorted(writers):
            try:
                self.writer(w, sorted(writers[w]))
            except Exception as e:  # a bug here must not hide the rest of the archive
                self.found("verifier_error", writer=w, detail=short(repr(e)))
        for k in sorted(self.files):
            if k not in self.covered:
                self.found("uncovered_object", key=k)

    # -- seals, per writer, in batch number order
    def writer(self, w, seals):
        self.chain = {}   # session -> (next seq, head): the writer's chains so far
        self.owner = {}   # stored record hash -> session, to tell record_out_of_session
        expected, prev, newest = 0, None, None
        for no, key in seals:
            self.batches += 1
            if no != expected:
                self.found("missing_seals", writer=w, first=expected, last=no - 1)
            expected = no + 1
            try:
                s = self.seal(w, no, key, prev if prev is not None and prev.no == no - 1 else None)
            except Exception as e:
                self.found("seal_unreadable", writer=w, batch_no=no, key=key, detail=short(repr(e)))
                s = None
            prev = s
            if s is None:
                continue
            newest = s
            if s.body["batch"] is not None:
                try:
                    self.batch(w, s)
                except Exception as e:
                    self.found("batch_undecodable", writer=w, batch_no=no, key=s.body["batch"]["key"],
                               detail=short(repr(e)))
        if newest is not None and not newest.closed and self.as_of - newest.created > newest.heartbeat + self.grace:
            self.found("writer_silent", writer=w, batch_no=newest.no, key=newest.key,
                       created_ns=newest.created, as_of_ns=self.as_of)

    def seal(self, w, no, key, prev):
        at = dict(writer=w, batch_no=no, key=key)
        try:
            data = read_object(self.files[key], self.limit)
        except TooLarge as e:
            self.found("seal_unreadable", detail="%d bytes, larger than the size limit" % e.size, **at)
            return None
        except OSError as e:
            self.found("seal_unreadable", detail=short(e), **at)
            return None
        try:
            seal, body, h = parse_seal(data)
        except Malformed as e:
            self.found("seal_unreadable", detail=short(e), **at)
            return None
        # FORMAT.md §5: a seal object is exactly its JCS bytes, nothing else.
        try:
            canonical = jcs(seal) == data
        except Exception:
            canonical = False
        if not canonical:
            self.found("seal_unreadable", detail="not the canonical (JCS) bytes of its content", **at)
            return None
        b = body["batch"]
        wrong = []
        if body["writer"] != w:
            wrong.append("writer %s" % json.dumps(body["writer"])[:80])
        if body["batch_no"] != no:
            wrong.append("batch_no %d" % body["batch_no"])
        if b is not None:
            want = "v1/writers/%s/batches/%020d-%s.jsonl.zst" % (w, no, b["sha256"][:16])
            if b["key"] != want:
                wrong.append("batch.key %s instead of %s" % (json.dumps(b["key"])[:200], want))
        if wrong:
            self.found("seal_misplaced", detail="; ".join(wrong), **at)
        if seal["hash"] != h.hex():
            self.found("seal_hash_mismatch", expected=short(seal["hash"], 80), found=h.hex(), **at)
        pub = self.trusted.get(body["key_id"])
        if pub is None:
            self.found("unknown_signing_key", key_id=short(body["key_id"], 80), **at)
        elif not signature_ok(pub, bytes.fromhex(seal["signature"]), h):
            self.found("bad_signature", **at)
        want_prev = seal_genesis(w) if no == 0 else (prev.hash if prev is not None else None)
        if want_prev is not None and body["prev_seal"] != want_prev.hex():
            self.found("seal_link_broken", expected=want_prev.hex(), found=body["prev_seal"], **at)
        s = Seal(no, key, body, h)
        if prev is not None:
            if s.created < prev.created:
                self.found("seal_time_regressed", created_ns=s.created, previous_ns=prev.created, **at)
            if not prev.closed and s.created - prev.created > prev.heartbeat + self.grace:
                self.found("heartbeat_gap", created_ns=s.created, previous_ns=prev.created,
                           heartbeat_ns=prev.heartbeat, **at)
        if b is None:
            for e in body["sessions"]:  # a seal without records summarises no session
                self.found("session_not_in_batch", session=e["id"], **at)
        return s

    # -- batches, for each seal with a batch
    def stand_in(self, w, s, at):
        """The signed session summaries of a seal stand in for its unreadable batch."""
        for e in s.body["sessions"]:
            sid = e["id"]
            st = self.chain.get(sid)
            want = st[0] if st is not None else 0
            if e["first_seq"] != want:
                self.found("seq_discontinuity", session=sid, seq=e["first_seq"], expected=want, found=e["first_seq"],
                           detail="from the seal's session summary", **at)
            head = bytes.fromhex(e["head"])
            self.chain[sid] = (e["last_seq"] + 1, head)
            self.owner.setdefault(head, sid)

    def batch(self, w, s):
        b = s.body["batch"]
        key = b["key"]
        at = dict(writer=w, batch_no=s.no, key=key)
        self.covered.add(key)
        path = self.files.get(key)
        if path is None:
            self.found("batch_missing", **at)
            self.stand_in(w, s, at)
            return
        try:
            data = read_object(path, self.limit)
        except TooLarge as e:
            if e.size != b["len"]:
                self.found("batch_length_mismatch", expected=b["len"], found=e.size, **at)
            self.found("batch_undecodable", detail="%d bytes, larger than the size limit" % e.size, **at)
            self.stand_in(w, s, at)
            return
        except OSError as e:
            self.found("batch_undecodable", detail=short(e), **at)
            self.stand_in(w, s, at)
            return
        if len(data) != b["len"]:
            self.found("batch_length_mismatch", expected=b["len"], found=len(data), **at)
        digest = hashlib.sha256(data).hexdigest()
        if digest != b["sha256"]:
            self.found("batch_digest_mismatch", expected=b["sha256"], found=digest, **at)
        try:
            content, trailing = decode_frame(data, self.limit)
        except (Malformed, MemoryError) as e:
            self.found("batch_undecodable", detail=short(e), **at)
            self.stand_in(w, s, at)
            return
        del data
        if trailing:
            self.found("batch_trailing_data", found=len(trailing), **at)
        self.lines = 0
        self.leaves = []
        self.summary = {}
        pos = 0
        view = memoryview(content)  # lines as views: no copy of the content
        while pos < len(content):
            nl = content.find(b"\n", pos)
            end = len(content) if nl < 0 else nl
            off = pos
            pos = end + 1
            self.lines += 1
            try:
                self.line(w, view[off:end], nl >= 0, off, at)
            except Exception as e:
                self.found("line_malformed", offset=off, detail=short(repr(e)), **at)
        if self.lines != b["records"]:
            self.found("record_count_mismatch", expected=b["records"], found=self.lines, **at)
        root = merkle(self.leaves).hex() if self.leaves else None
        if root != b["merkle_root"]:
            self.found("merkle_root_mismatch", expected=b["merkle_root"], found=root, **at)
        self.compare_sessions(s.body["sessions"], at)

    def line(self, w, line, has_lf, off, at):
        if not (len(line) >= 86 and line[:9] == LINE_PREFIX and _HEX64B.fullmatch(line, 9, 73)
                and line[73:84] == LINE_INFIX and line[-1] == 0x7D):
            self.found("line_malformed", offset=off,
                       detail="not the §4 shape" + ("" if has_lf else ", no line feed"), **at)
            return
        if not has_lf:
            self.found("line_malformed", offset=off, detail="no line feed at the end", **at)
        stored = bytes.fromhex(bytes(line[9:73]).decode("ascii"))
        self.leaves.append(stored)
        self.records += 1
        rb = line[84:-1]
        actual = H(TAG["record"], rb)
        try:
            obj, session, seq, prev, problems = read_record(rb)
        except Malformed as e:
            obj, session, seq, prev, problems = None, None, None, None, [str(e)]
        if actual != stored:
            self.found("record_hash_mismatch", session=session, seq=seq, offset=off,
                       expected=stored.hex(), found=actual.hex(), **at)
        if problems:
            self.found("record_malformed", session=session, seq=seq, offset=off, detail=short("; ".join(problems)),
                       **at)
        where = dict(session=session, seq=seq, offset=off, **at)
        if session == GAPS:  # the writer's signed statement that it dropped records
            self.found("records_dropped", **gap_report(obj), **where)
        if session is None or seq is None or prev is None:
            return
        self.chains.add((w, session))
        self.sessions_seen.add(session)
        prev_b = bytes.fromhex(prev)
        other = self.owner.get(prev_b)
        other = other if other is not None and other != session else None
        st = self.chain.get(session)
        if st is None:  # the session's first record from this writer
            if seq != 0:
                self.found("seq_discontinuity", expected=0, found=seq, **where)
                if other is not None:
                    self.found("record_out_of_session", found=prev, other_session=other, **where)
            elif prev_b != session_genesis(w, session):
                if other is not None:
                    self.found("record_out_of_session", found=prev, other_session=other, **where)
                else:
                    self.found("genesis_mismatch", expected=session_genesis(w, session).hex(), found=prev, **where)
        else:
            nxt, head = st
            if seq != nxt:
                self.found("seq_discontinuity", expected=nxt, found=seq, **where)
            if prev_b != head:
                if other is not None:
                    self.found("record_out_of_session", found=prev, other_session=other, **where)
                else:
                    self.found("chain_link_broken", expected=head.hex(), found=prev, **where)
        # The chain goes on from the stored hash, so one break is reported once.
        self.chain[session] = (seq + 1, stored)
        self.owner.setdefault(stored, session)
        e = self.summary.get(session)
        if e is None:
            self.summary[session] = {"count": 1, "first_seq": seq, "last_seq": seq, "head": stored.hex()}
        else:
            e["count"] += 1
            e["last_seq"] = seq
            e["head"] = stored.hex()

    def compare_sessions(self, sealed, at):
        ids = [e["id"] for e in sealed]
        if any(not a < b for a, b in zip(ids, ids[1:])):
            self.found("session_summary_mismatch", detail="the seal's sessions are not sorted by id, or repeat one",
                       **at)
        for e in sealed:
            got = self.summary.get(e["id"])
            if got is None:
                self.found("session_not_in_batch", session=e["id"], **at)
                continue
            want = {k: e[k] for k in ("count", "first_seq", "last_seq", "head")}
            if want != got:
                self.found("session_summary_mismatch", session=e["id"], expected=want, found=got, **at)
        sealed_ids = set(ids)
        for sid in self.summary:
            if sid not in sealed_ids:
                self.found("session_not_in_seal", session=sid, **at)

    def result(self, only_session=None):
        findings = self.findings
        if only_session is not None:
            findings = [f for f in findings if f.get("session", only_session) in (only_session, GAPS)]
            if only_session not in self.sessions_seen:
                findings.append({"problem": "session_not_found", "session": only_session})
        return {"records": self.records, "sessions": len(self.chains), "batches": self.batches,
                "findings": [clean(f) for f in findings]}


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
        a.found("verifier_error", detail=short(repr(e)))
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
