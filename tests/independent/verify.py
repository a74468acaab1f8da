#!/usr/bin/env python3
"""An independent verifier of sealtrail archives, written from docs/FORMAT.md.

It shares no code with the Rust implementation: if both accept the same
archives and reject the same tampering, the format document is sufficient.
Usage: verify.py ARCHIVE_DIR PUBLIC_KEY_PEM [--as-of-ns N]
Prints one JSON object {"records": n, "sessions": n, "batches": n, "findings": [...]}
and exits 0 when intact, 1 otherwise. Needs: cryptography, zstandard.
"""
import hashlib
import json
import os
import sys

import zstandard
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

TAG = {k: ("sealtrail/v1/%s\0" % k).encode() for k in
       ["record", "genesis", "seal", "seal-genesis", "leaf", "node", "signature", "key-id"]}


def H(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()


def lp(s):
    b = s.encode()
    return len(b).to_bytes(4, "big") + b


def jcs(v):
    # Enough of RFC 8785 for seal bodies: ASCII member names, integers, strings.
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def merkle(ds):
    if len(ds) == 1:
        return H(TAG["leaf"], ds[0])
    k = 1
    while k * 2 < len(ds):
        k *= 2
    return H(TAG["node"], merkle(ds[:k]), merkle(ds[k:]))


def main():
    root, pem = sys.argv[1], sys.argv[2]
    as_of = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[3] == "--as-of-ns" else None
    pub = load_pem_public_key(open(pem, "rb").read())
    raw = pub.public_bytes(Encoding.Raw, PublicFormat.Raw)
    key_id = H(TAG["key-id"], raw)[:8].hex()
    findings = []
    found = lambda problem, **at: findings.append(dict(problem=problem, **at))
    files = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            files[os.path.relpath(p, root).replace(os.sep, "/")] = p
    covered = set()
    records = batches = 0
    heads = {}
    for w in sorted({k.split("/")[2] for k in files if k.startswith("v1/writers/")}):
        seal_keys = sorted(k for k in files if k.startswith("v1/writers/%s/seals/" % w))
        expected_no, prev_hash, prev_body = 0, None, None
        for sk in seal_keys:
            covered.add(sk)
            batches += 1
            no = int(sk.rsplit("/", 1)[1].split(".")[0])
            if no != expected_no:
                found("missing_seals", writer=w, first=expected_no, last=no - 1)
                prev_hash = prev_body = None
            expected_no = no + 1
            try:
                seal = json.loads(open(files[sk], "rb").read())
                body = seal["body"]
            except Exception:
                found("seal_unreadable", key=sk)
                prev_hash = prev_body = None
                continue
            h = H(TAG["seal"], jcs(body))
            if h.hex() != seal["hash"]:
                found("seal_hash_mismatch", key=sk)
            if body["key_id"] != key_id:
                found("unknown_signing_key", key=sk)
            else:
                try:
                    pub.verify(bytes.fromhex(seal["signature"]), TAG["signature"] + bytes.fromhex(seal["hash"]))
                except (InvalidSignature, ValueError):
                    found("bad_signature", key=sk)
            want_prev = H(TAG["seal-genesis"], lp(w)) if no == 0 else prev_hash
            if want_prev is not None and body["prev_seal"] != want_prev.hex():
                found("seal_link_broken", key=sk)
            if prev_body is not None and not prev_body["closed"]:
                if int(body["created_ns"]) - int(prev_body["created_ns"]) > int(prev_body["heartbeat_ns"]) + 5 * 10**9:
                    found("heartbeat_gap", key=sk)
            prev_hash, prev_body = h, body
            b = body["batch"]
            if b is None:
                continue
            covered.add(b["key"])
            if b["key"] not in files:
                found("batch_missing", key=b["key"])
                continue
            data = open(files[b["key"]], "rb").read()
            if len(data) != b["len"]:
                found("batch_length_mismatch", key=b["key"])
            if hashlib.sha256(data).hexdigest() != b["sha256"]:
                found("batch_digest_mismatch", key=b["key"])
            try:
                dobj = zstandard.ZstdDecompressor().decompressobj()
                content = dobj.decompress(data)
                if dobj.unused_data:
                    found("batch_trailing_data", key=b["key"])
            except zstandard.ZstdError:
                found("batch_undecodable", key=b["key"])
                continue
            hashes, in_batch = [], {}
            for line in content.split(b"\n")[:-1]:
                if not (line.startswith(b'{"hash":"') and line[73:84] == b'","record":' and line.endswith(b"}")):
                    found("line_malformed", key=b["key"])
                    continue
                stored = bytes.fromhex(line[9:73].decode())
                rec_bytes = line[84:-1]
                rec = json.loads(rec_bytes)
                records += 1
                hashes.append(stored)
                if H(TAG["record"], rec_bytes) != stored:
                    found("record_hash_mismatch", key=b["key"], session=rec["session"], seq=rec["seq"])
                s = rec["session"]
                nxt, head = heads.get((w, s), (0, H(TAG["genesis"], lp(w), lp(s))))
                if rec["seq"] != nxt:
                    found("seq_discontinuity", key=b["key"], session=s, seq=rec["seq"])
                elif rec["prev"] != head.hex():
                    found("chain_link_broken", key=b["key"], session=s, seq=rec["seq"])
                if rec["seq"] >= nxt:
                    heads[(w, s)] = (rec["seq"] + 1, stored)
                st = in_batch.setdefault(s, dict(count=0, first_seq=rec["seq"], id=s))
                st["count"] += 1
                st["last_seq"] = heads[(w, s)][0] - 1
                st["head"] = heads[(w, s)][1].hex()
            if len(hashes) != b["records"]:
                found("record_count_mismatch", key=b["key"])
            if not hashes or merkle(hashes).hex() != b["merkle_root"]:
                found("merkle_root_mismatch", key=b["key"])
            if sorted(in_batch.values(), key=lambda x: x["id"]) != sorted(body["sessions"], key=lambda x: x["id"]):
                found("session_summary_mismatch", key=b["key"])
        if prev_body is not None and not prev_body["closed"] and as_of is not None:
            if as_of - int(prev_body["created_ns"]) > int(prev_body["heartbeat_ns"]) + 5 * 10**9:
                found("writer_silent", writer=w)
    for k in sorted(files):
        if k not in covered:
            found("uncovered_object", key=k)
    print(json.dumps(dict(batches=batches, records=records, sessions=len(heads), findings=findings)))
    sys.exit(1 if findings else 0)


if __name__ == "__main__":
    main()
