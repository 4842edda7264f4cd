#!/usr/bin/env python3
"""Read one tensor from a psyne shared-memory segment (layout version 2).

Written from docs/layout.md alone. Standard library only; if numpy is
importable, the tensor is also built as a numpy array (read_tensor()).

  read_segment.py NAME OFFSET:GENERATION:LEN [--max-values N]
  read_segment.py NAME --list

Prints one JSON object on stdout. Any validation failure: a message on
stderr and exit status 2. The reader maps the segment read-only and takes no
reference: it checks the slot's state word (generation, holders) before and
after copying the header and payload.
"""
import argparse
import json
import math
import mmap
import os
import re
import struct
import sys

try:
    import numpy as np
except ImportError:  # numpy is optional
    np = None

MAGIC = b"PSYNESHM"
SLAB_MAGIC = 0x31424C53  # b"SLB1"
VERSION, HEADER_SIZE, PAGE, MAX_AREAS, MAX_CLASSES = 2, 512, 4096, 13, 16
NIL, MAX_SLOT_SIZE = 0xFFFFFFFF, 2**32 - 4096
F32_MAX = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]
HEADER = struct.Struct("<8sIIQQQQIIIIII24x")  # 96 bytes, then 13 area entries
AREA = struct.Struct("<IIQQ8x")  # 32 bytes
SLAB_META = struct.Struct("<IIIIQQ96x")  # 128 bytes
CLASS = struct.Struct("<QIIQQQ24xQQ48x")  # 128 bytes: descriptor + hot line (cursor, failures)
SLOT = struct.Struct("<QII")  # slot header atomics: state, owner_pid, reserved
WRITER = 1 << 31  # holders bit: the slot is still being written (the low bits name the writer)
TENSOR = struct.Struct("<QBBBxIQ8QQQfi")  # 112 bytes at slot header offset 16
# code: (name, struct char, values per element) for the plain dtypes
PLAIN = {0: ("raw", "B", 1), 1: ("f32", "f", 1), 2: ("f64", "d", 1), 3: ("f16", "e", 1),
         4: ("bf16", "H", 1), 5: ("i8", "b", 1), 6: ("u8", "B", 1), 7: ("i16", "h", 1),
         8: ("i32", "i", 1), 9: ("i64", "q", 1), 10: ("u32", "I", 1), 11: ("bool", "B", 1),
         12: ("c32", "f", 2), 13: ("c64", "d", 2)}
QUANT = {32: "qint8", 33: "q8block", 34: "q4block"}
NUMPY_DTYPES = {"raw": "uint8", "f16": "float16", "bf16": "float32", "u8": "uint8", "bool": "bool",
                "c32": "complex64", "c64": "complex128", "f32": "float32", "f64": "float64",
                "i8": "int8", "i16": "int16", "i32": "int32", "i64": "int64", "u32": "uint32"}
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}\Z")


class Invalid(Exception):
    """A segment, handle or tensor that fails validation (exit status 2)."""


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


_CRC_TABLE = []
for _c in range(256):
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1  # reflected Castagnoli polynomial
    _CRC_TABLE.append(_c)
assert crc32c(b"123456789") == 0xE3069283


def pad4(x):
    return (x + 3) // 4 * 4


def to_f32(xs):
    """Round doubles to f32 (saturating at +-f32::MAX), as psyne's f32 math does."""
    xs = [min(F32_MAX, max(-F32_MAX, x)) for x in xs]
    return list(struct.unpack("<%df" % len(xs), struct.pack("<%df" % len(xs), *xs)))


class Segment:
    """An opened, validated segment: header, areas and slab classes."""

    def __init__(self, name):
        if not NAME_RE.match(name):
            raise Invalid(f"invalid segment name {name!r}")
        self.name, path = name, f"/dev/shm/psyne.{name}"
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise Invalid(f"segment {name!r} does not exist ({path})") from None
        except PermissionError:
            raise Invalid(f"permission denied opening segment {name!r}") from None
        try:
            self.size = size = os.fstat(fd).st_size
            if size == 0:
                raise Invalid(f"segment {name!r} is not initialised yet (size 0)")
            self.m = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        self._header()
        self._slab()

    def _bad(self, why):
        return Invalid(f"segment {self.name!r} has an impossible layout: {why}")

    def _header(self):
        m, name, size = self.m, self.name, self.size
        magic = m[0:8]  # read first: the creator stores it last
        if not any(magic):
            raise Invalid(f"segment {name!r} is not initialised yet (magic is zero)")
        if magic != MAGIC:
            raise Invalid(f"segment {name!r} is not a psyne segment (magic {magic!r})")
        if size < HEADER_SIZE:
            raise Invalid(f"segment {name!r} is truncated: {size} bytes, expected >= 512")
        raw = bytes(m[0:HEADER_SIZE])
        (_, version, header_size, total, doff, dsize, self.created_ns, self.creator_pid,
         self.creator_uid, self.mode, area_count, _flags, checksum) = HEADER.unpack_from(raw)
        if version != VERSION:
            raise Invalid(f"segment {name!r} has layout version {version}, this reader reads {VERSION}")
        crc = crc32c(raw[:68] + b"\0\0\0\0" + raw[72:])
        if crc != checksum:
            raise Invalid(f"segment {name!r}: header checksum {checksum:#010x}, the bytes give {crc:#010x}")
        bad = self._bad
        if header_size != HEADER_SIZE:
            raise bad(f"header size {header_size}")
        if size < total:
            raise Invalid(f"segment {name!r} is truncated: {size} bytes, expected {total}")
        if size > total:
            raise bad(f"the object has {size} bytes, the header says {total}")
        if doff % PAGE or doff < HEADER_SIZE or doff > total or doff + dsize != total:
            raise bad(f"data region [{doff}, +{dsize}) in a {total}-byte segment")
        if not 1 <= area_count <= MAX_AREAS:
            raise bad(f"{area_count} areas")
        areas, spans = [], []
        for i in range(area_count):
            kind, flags, off, asize = AREA.unpack_from(raw, 96 + 32 * i)
            lo, hi, align = (doff, total, PAGE) if flags & 1 else (HEADER_SIZE, doff, 128)
            if kind == 0 or off < lo or off + asize > hi or off % align:
                raise bad(f"area {i} (kind {kind}) at [{off}, +{asize}) is outside its region or misaligned")
            areas.append({"kind": kind, "flags": flags, "offset": off, "size": asize})
            spans.append((off, off + asize))
        spans.sort()
        if any(a[1] > b[0] for a, b in zip(spans, spans[1:])):
            raise bad("two areas overlap")
        for kind in (1, 2):
            if sum(a["kind"] == kind for a in areas) != 1:
                raise bad(f"there must be exactly one area of kind {kind}")
        self.meta_area = next(a for a in areas if a["kind"] == 1)
        if next(a for a in areas if a["kind"] == 2)["offset"] != doff:
            raise bad("the slab data area must start the data region")
        self.version, self.total, self.data_offset, self.data_size, self.areas = \
            version, total, doff, dsize, areas

    def _slab(self):
        m, name = self.m, self.name
        base, alen = self.meta_area["offset"], self.meta_area["size"]
        bad, corrupt = self._bad, lambda why: Invalid(f"segment {name!r} has a corrupt slab header: {why}")
        if alen < 128:
            raise bad(f"slab area of {alen} bytes")
        meta = bytes(m[base:base + 128])
        magic, n, shs, config_crc, sdata, sctl = SLAB_META.unpack(meta)
        if magic != SLAB_MAGIC:
            raise corrupt(f"slab magic is {magic:#010x}")
        if not 1 <= n <= MAX_CLASSES:
            raise corrupt(f"{n} size classes")
        if 128 + 128 * n > alen:
            raise bad("class table runs past the slab area")
        recs = [bytes(m[base + 128 * (i + 1):base + 128 * (i + 2)]) for i in range(n)]
        crc = crc32c(meta[:12] + b"\0\0\0\0" + meta[16:] + b"".join(r[:64] for r in recs))
        if crc != config_crc:
            raise corrupt(f"class table checksum {config_crc:#010x}, the bytes give {crc:#010x}")
        if shs != 128:
            raise bad(f"slot header size {shs}")
        if sctl > alen or sdata > self.data_size:
            raise bad("slab sizes exceed their areas")
        self.classes, prev_data, prev_hdr = [], 0, 128 + 128 * n
        for i, r in enumerate(recs):
            ssize, count, salign, cdoff, hoff, foff, cursor, failures = CLASS.unpack(r)
            align = PAGE if ssize >= PAGE else 256
            if ssize == 0 or ssize > MAX_SLOT_SIZE or ssize % align:
                raise bad(f"size class {i}: slot size {ssize}")
            if count == 0 or count >= NIL:
                raise bad(f"size class {i}: slot count {count}")
            if salign != align or cdoff % align:
                raise bad(f"size class {i}: data offset {cdoff} not aligned to {align}")
            if cdoff < prev_data or cdoff + ssize * count > sdata:
                raise bad(f"size class {i}: slots overlap or leave the data area")
            if hoff < prev_hdr or hoff + 128 * count > sctl:
                raise bad(f"size class {i}: slot headers overlap or leave the slab area")
            prev_data, prev_hdr = cdoff + ssize * count, hoff + 128 * count
            self.classes.append({"class": i, "slot_size": ssize, "slot_count": count,
                                 "slot_align": salign, "data_offset": cdoff, "headers_offset": hoff,
                                 "free_bitmap_offset": foff, "failures": failures})
        prev_bits = prev_hdr  # free bitmaps follow every class's slot headers
        for c in self.classes:
            foff, words = c["free_bitmap_offset"], (c["slot_count"] + 63) // 64
            if foff < prev_bits or foff % 8 or foff + 8 * words > sctl:
                raise bad(f"size class {c['class']}: free bitmap overlaps or leaves the slab area")
            prev_bits = foff + 8 * words

    def slot_state(self, c, k):
        """(file offset of slot k's header, generation, holders)."""
        at = self.meta_area["offset"] + c["headers_offset"] + 128 * k
        state = SLOT.unpack(self.m[at:at + 16])[0]
        return at, state >> 32, state & 0xFFFFFFFF

    def listing(self):
        for c in self.classes:
            c["used"] = sum(self.slot_state(c, k)[2] != 0 for k in range(c["slot_count"]))
        return {"segment": self.name, "version": self.version, "total_size": self.total,
                "data_offset": self.data_offset, "data_size": self.data_size,
                "created_unix_ns": self.created_ns, "creator_pid": self.creator_pid,
                "creator_uid": self.creator_uid, "mode": oct(self.mode), "areas": self.areas,
                "classes": self.classes}

    def read(self, handle, max_values=None):
        """Resolve `handle` (offset, generation, len) and decode its tensor."""
        off, gen, hlen = handle
        cands = [c for c in self.classes if c["data_offset"] <= off]
        if not cands:
            raise Invalid(f"invalid handle: offset {off} precedes every slot")
        c = cands[-1]
        rel = off - c["data_offset"]
        if rel % c["slot_size"] or rel // c["slot_size"] >= c["slot_count"]:
            raise Invalid(f"invalid handle: offset {off} is not the start of a slot")
        if hlen > c["slot_size"]:
            raise Invalid(f"invalid handle: length {hlen} exceeds the slot size {c['slot_size']}")
        k = rel // c["slot_size"]
        at, sgen, holders = self.slot_state(c, k)
        if sgen != gen or holders == 0:
            raise Invalid(f"stale handle: it names generation {gen}, the slot is at "
                          f"generation {sgen}" + ("" if holders else " and free"))
        if holders & WRITER:
            raise Invalid(f"invalid handle: slot {off}:{gen} is still being written (not published)")
        th = TENSOR.unpack(self.m[at + 16:at + 128])
        nbytes, code, qmode, _flags, tag = th[:5]
        rank, dims, seq, _ts, qscale, qparam = th[5], th[6:14], th[14], th[15], th[16], th[17]
        if nbytes != hlen:
            raise Invalid(f"invalid handle: length {hlen}, the slot holds {nbytes} bytes")
        if code not in PLAIN and code not in QUANT:
            raise Invalid(f"unknown dtype code {code}")
        if rank > 8:
            raise Invalid(f"tensor rank {rank} exceeds 8")
        n = math.prod(dims[:rank])
        if any(dims[rank:]) or n * 16 >= 2**64:
            raise Invalid(f"tensor shape {list(dims)} is invalid")
        if nbytes > c["slot_size"]:
            raise Invalid(f"tensor header claims {nbytes} bytes in a {c['slot_size']}-byte slot")
        if qmode > 2:
            raise Invalid(f"unknown quantization mode {qmode}")
        start = self.data_offset + off
        payload = bytes(self.m[start:start + nbytes])
        _, sgen, holders = self.slot_state(c, k)
        if holders == 0 or sgen != gen:  # freed (and maybe reused) meanwhile
            raise Invalid("stale handle: the slot was freed while it was being read")
        shape, limit = list(dims[:rank]), n if max_values is None else min(n, max_values)
        if code in PLAIN:
            values = decode_plain(code, payload, n, limit)
        else:
            values = decode_quant(code, qmode, qscale, qparam, shape, payload, n, limit)
        name = PLAIN[code][0] if code in PLAIN else QUANT[code]
        return {"dtype": name, "shape": shape, "type_tag": tag, "seq": seq,
                "nbytes": nbytes, "values": values}


def decode_plain(code, payload, n, limit):
    name, ch, per = PLAIN[code]
    size = struct.calcsize("<" + ch) * per
    if len(payload) != n * size:
        raise Invalid(f"length mismatch: the shape needs {n * size} bytes, the slot has {len(payload)}")
    vals = struct.unpack_from("<%d%s" % (limit * per, ch), payload)
    if name == "bf16":
        vals = struct.unpack("<%df" % limit, struct.pack("<%dI" % limit, *(v << 16 for v in vals)))
    elif name == "bool":
        vals = [int(v != 0) for v in vals]
    if per == 2:
        return [[vals[2 * i], vals[2 * i + 1]] for i in range(limit)]
    return list(vals)


def check_affine(scale, zp, where):
    if not (math.isfinite(scale) and scale > 0):
        raise Invalid(f"invalid quantization parameters: {where}scale {scale} is not finite and positive")
    if not -128 <= zp <= 127:
        raise Invalid(f"invalid quantization parameters: {where}zero point {zp} is outside [-128, 127]")


def decode_quant(code, qmode, qscale, qparam, shape, payload, n, limit):
    def need(want):
        if len(payload) != want:
            raise Invalid(f"length mismatch: the encoding needs {want} bytes, the slot has {len(payload)}")

    if code == 32:  # QInt8: x = (q - zero_point) * scale
        if qmode == 1:
            check_affine(qscale, qparam, "")
            need(n)
            q = struct.unpack_from("<%db" % limit, payload)
            return to_f32([(v - qparam) * qscale for v in q])
        if qmode == 2:
            axis = qparam & 0xFFFFFFFF
            if axis >= len(shape):
                raise Invalid(f"invalid quantization parameters: axis {axis} for rank {len(shape)}")
            chans, inner = shape[axis], math.prod(shape[axis + 1:])
            need(pad4(n) + 8 * chans)
            scales = struct.unpack_from("<%df" % chans, payload, pad4(n))
            zps = struct.unpack_from("<%di" % chans, payload, pad4(n) + 4 * chans)
            for ch in range(chans):
                check_affine(scales[ch], zps[ch], f"channel {ch}: ")
            q = struct.unpack_from("<%db" % limit, payload)
            return to_f32([(v - zps[i // inner % chans]) * scales[i // inner % chans]
                           for i, v in enumerate(q)])
        raise Invalid(f"invalid quantization parameters: qint8 with quantization mode {qmode}")
    if qmode != 0:  # the block kinds carry no header parameters
        raise Invalid(f"invalid quantization parameters: {QUANT[code]} with quantization mode {qmode}")
    blocks, block_bytes = (n + 31) // 32, 32 if code == 33 else 16
    vat = pad4(2 * blocks)
    need(vat + block_bytes * blocks)
    d = struct.unpack_from("<%de" % blocks, payload)
    for b, s in enumerate(d):
        if not math.isfinite(s):
            raise Invalid(f"invalid quantization parameters: block {b} has a non-finite scale")
    if code == 33:  # Q8Block: i8 q at vat + 32*b + j (= vat + i), x = q * d
        q = struct.unpack_from("<%db" % limit, payload, vat)
        return to_f32([v * d[i // 32] for i, v in enumerate(q)])
    # Q4Block: nibble u of byte vat + 16*b + j//2 (low for even j), x = (u - 8) * d
    return to_f32([(((payload[vat + 16 * (i // 32) + i % 32 // 2] >> (4 * (i % 2))) & 0xF) - 8)
                   * d[i // 32] for i in range(limit)])


def read_tensor(name, handle_text, max_values=None):
    """Returns (result dict, numpy array or None)."""
    mt = re.fullmatch(r"\s*([0-9]+):([0-9]+):([0-9]+)\s*", handle_text)
    if not mt:
        raise Invalid(f"invalid handle {handle_text!r}: expected offset:generation:len")
    h = tuple(int(x) for x in mt.groups())
    if h[0] >= 2**64 or h[1] >= 2**32 or h[2] >= 2**32:
        raise Invalid(f"invalid handle {handle_text!r}: a field is out of range")
    res = Segment(name).read(h, max_values)
    arr = None
    if np is not None and max_values is None:
        dt = NUMPY_DTYPES.get(res["dtype"], "float32")  # quantized kinds: float32
        v = [complex(*p) for p in res["values"]] if res["dtype"] in ("c32", "c64") else res["values"]
        arr = np.array(v, dtype=dt).reshape(res["shape"])
    return res, arr


def main(argv=None):
    ap = argparse.ArgumentParser(description="Read a tensor from a psyne segment (docs/layout.md).")
    ap.add_argument("name", help="segment name (the object is /dev/shm/psyne.NAME)")
    ap.add_argument("handle", nargs="?", help="handle as offset:generation:len")
    ap.add_argument("--list", action="store_true", help="print the header and slab classes")
    ap.add_argument("--max-values", type=int, metavar="N", help="print at most N values")
    a = ap.parse_args(argv)
    if a.max_values is not None and a.max_values < 0:
        ap.error("--max-values must be >= 0")
    try:
        if a.list:
            out = Segment(a.name).listing()
        elif a.handle is None:
            ap.error("a handle is needed (or --list)")
        else:
            out = read_tensor(a.name, a.handle, a.max_values)[0]
    except Invalid as e:
        print(f"read_segment: {e}", file=sys.stderr)
        return 2
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
