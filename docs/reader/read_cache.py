#!/usr/bin/env python3
"""Read one value out of a cachet cache directory, written from docs/FORMAT.md alone.

This is the proof that the format document is complete: a reader in another language that
applies every check the spec lists and returns exactly the bytes cachet stored. The Rust test
`crates/cachet-storage/tests/python_reader.rs` writes caches with cachet and checks that this
script reads them back byte for byte, and that it refuses damaged or forged entries.

Usage:
    read_cache.py CACHE_DIR NAMESPACE ID [--signing-key-hex HEX] > value.bin

Exit codes: 0 value written to stdout, 1 not found, 2 corrupt, 3 tampered.
Requires: xxhash, lz4, zstandard (pip install xxhash lz4 zstandard).
"""

import hashlib
import hmac
import json
import sqlite3
import struct
import sys
from pathlib import Path

import lz4.block
import xxhash
import zstandard

MAX_FRAME_LEN = 64 << 20  # FORMAT.md §3.4, check 3


class Corrupt(Exception):
    pass


class Tampered(Exception):
    pass


def field(b: bytes) -> bytes:
    return struct.pack("<Q", len(b)) + b


def signed_message(row: dict) -> bytes:
    """FORMAT.md §5.1."""
    msg = field(b"cachet.entry.v1")
    msg += field(row["namespace"].encode())
    msg += field(row["id"].encode())
    msg += field(row["digest"].encode())
    msg += field(struct.pack("<Q", row["raw_size"]))
    msg += field(struct.pack("<Q", row["stored_size"]))
    msg += field(row["data_type"].encode())
    msg += field((row["type_name"] or "").encode())
    msg += field(row["compression"].encode())
    msg += field((row["blob_id"] or "inline").encode())
    msg += field(struct.pack("<q", row["created_at"]))
    msg += field(struct.pack("<q", row["updated_at"]))
    expires = row["expires_at"]
    msg += field(b"" if expires is None else struct.pack("<q", expires))
    msg += field((row["params"] or "").encode())
    tags = json.loads(row["tags"])
    msg += struct.pack("<Q", len(tags))
    for tag in tags:
        msg += field(tag.encode())
    msg += field((row["user_metadata"] or "").encode())
    return msg


def unshuffle(data: bytes, elem: int) -> bytes:
    """FORMAT.md §3.2, filter 1: raw[i*e + b] = shuffled[b*n + i], tail unchanged."""
    n = len(data) // elem
    out = bytearray(len(data))
    for b in range(elem):
        out[b : n * elem : elem] = data[b * n : (b + 1) * n]
    out[n * elem :] = data[n * elem :]
    return bytes(out)


def decode_container(data: bytes) -> tuple[bytes, int, int]:
    """FORMAT.md §3.4 checks 1-7; returns (raw content, raw_size, content xxh3-128)."""
    if len(data) < 8 or data[:6] != b"CACHET":
        raise Corrupt("bad magic")
    if data[6] != 1:
        raise Corrupt(f"container version {data[6]} (written by a newer cachet)")
    if data[7] != 0:
        raise Corrupt("unknown flags")
    pos, frames, out = 8, 0, []
    content = xxhash.xxh3_128()
    while True:
        if pos >= len(data):
            raise Corrupt("truncated: no trailer")
        tag = data[pos]
        if tag == 0xFE:
            break
        if tag != 0x01:
            raise Corrupt(f"unknown record tag {tag:#x}")
        if pos + 20 > len(data):
            raise Corrupt("truncated frame header")
        codec, filt, elem = data[pos + 1], data[pos + 2], data[pos + 3]
        raw_len, stored_len, checksum = struct.unpack_from("<IIQ", data, pos + 4)
        if raw_len > MAX_FRAME_LEN or stored_len > MAX_FRAME_LEN + MAX_FRAME_LEN // 8:
            raise Corrupt("impossible frame length")
        if not ((filt == 0 and elem == 0) or (filt == 1 and codec in (1, 2) and 2 <= elem <= 16)):
            raise Corrupt("invalid filter")
        payload = data[pos + 20 : pos + 20 + stored_len]
        if len(payload) != stored_len:
            raise Corrupt("truncated frame payload")
        if xxhash.xxh3_64_intdigest(data[pos : pos + 12] + payload) != checksum:
            raise Corrupt(f"frame {frames} checksum mismatch")
        if codec == 0:
            if stored_len != raw_len:
                raise Corrupt("length mismatch")
            raw = payload
        elif codec == 1:
            raw = lz4.block.decompress(payload, uncompressed_size=raw_len)
        elif codec == 2:
            raw = zstandard.ZstdDecompressor().decompress(payload, max_output_size=raw_len)
        else:
            raise Corrupt(f"unknown codec {codec}")
        if len(raw) != raw_len:
            raise Corrupt("frame decompressed to the wrong length")
        if filt == 1:
            raw = unshuffle(raw, elem)
        content.update(raw)
        out.append(raw)
        frames += 1
        pos += 20 + stored_len
    trailer = data[pos : pos + 40]
    if len(trailer) != 40:
        raise Corrupt("truncated trailer")
    if xxhash.xxh3_64_intdigest(trailer[:32]) != struct.unpack_from("<Q", trailer, 32)[0]:
        raise Corrupt("trailer checksum mismatch")
    frame_count, raw_size = struct.unpack_from("<IQ", trailer, 4)
    content_xxh3 = int.from_bytes(trailer[16:32], "big")
    raw = b"".join(out)
    if frame_count != frames or raw_size != len(raw):
        raise Corrupt("trailer does not match the frames")
    if content_xxh3 != content.intdigest():
        raise Corrupt("content hash mismatch")
    if pos + 40 != len(data):
        raise Corrupt("bytes after the trailer")
    return raw, raw_size, content_xxh3


def read_value(cache_dir: Path, namespace: str, key_id: str, signing_key: bytes | None) -> bytes | None:
    db = sqlite3.connect(cache_dir / "index.sqlite")
    db.row_factory = sqlite3.Row
    row = db.execute("SELECT * FROM entries WHERE namespace = ? AND id = ?", (namespace, key_id)).fetchone()
    if row is None:
        return None
    row = dict(row)
    if signing_key is not None:  # FORMAT.md §5
        if row["signature"] is None:
            raise Tampered("unsigned entry")
        expected = hmac.new(signing_key, signed_message(row), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, row["signature"]):
            raise Tampered("signature mismatch")
    if row["blob_id"] is None:
        stored = row["inline_data"]
    else:  # FORMAT.md §2.3
        algo, _, hexpart = row["blob_id"].rpartition("-")
        path = cache_dir / "blobs" / algo / hexpart[:2] / hexpart
        try:
            stored = path.read_bytes()
        except FileNotFoundError:
            raise Corrupt(f"blob {row['blob_id']} is missing")
    raw, raw_size, content_xxh3 = decode_container(stored)
    # FORMAT.md §3.4 checks 8-9, against the index row.
    if raw_size != row["raw_size"]:
        raise Corrupt("size differs from the index")
    algo, _, digest_hex = row["digest"].partition(":")
    if algo == "xxh3-128":
        if int(digest_hex, 16) != content_xxh3:
            raise Corrupt("content differs from the index digest")
    elif algo == "sha256":
        if hashlib.sha256(raw).hexdigest() != digest_hex:
            raise Tampered("content differs from its signed digest")
    else:
        raise Corrupt(f"unknown digest {algo}")
    return raw


def main() -> int:
    args = sys.argv[1:]
    key = None
    if "--signing-key-hex" in args:
        i = args.index("--signing-key-hex")
        key = bytes.fromhex(args[i + 1])
        del args[i : i + 2]
    cache_dir, namespace, key_id = Path(args[0]), args[1], args[2]
    try:
        value = read_value(cache_dir, namespace, key_id, key)
    except Corrupt as e:
        print(f"corrupt: {e}", file=sys.stderr)
        return 2
    except Tampered as e:
        print(f"tampered: {e}", file=sys.stderr)
        return 3
    if value is None:
        print("not found", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(value)
    return 0


if __name__ == "__main__":
    sys.exit(main())
