"""A minimal, independent .lgn decoder in plain Python + NumPy, written from spec/lgn.md.

It imports nothing from legofmt, so the tests can check the library against the spec rather
than against itself. It favours clarity over speed and validates only what it needs.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from typing import Any

import numpy as np

DTYPES = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # bit pattern; converted explicitly
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "F32": np.dtype("<f4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F64": np.dtype("<f8"),
}


def bf16_to_f32(bits: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Round to nearest even (inputs are finite)."""
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def unpack(packed: bytes, bits: int, n: int) -> np.ndarray[Any, Any]:
    """Indices from the little-endian bit stream (index i at stream bits i*bits..)."""
    stream = np.unpackbits(np.frombuffer(packed, np.uint8), bitorder="little")[: n * bits]
    weights = (1 << np.arange(bits, dtype=np.int64)).astype(np.int64)
    return stream.reshape(n, bits).astype(np.int64) @ weights


def read(path_or_bytes: str | bytes) -> tuple[dict[str, np.ndarray[Any, Any]], dict[str, str]]:
    """Decodes every original tensor. Returns (tensors, user metadata). BF16 tensors come back
    as their uint16 bit patterns."""
    if isinstance(path_or_bytes, bytes):
        buf = path_or_bytes
    else:
        with open(path_or_bytes, "rb") as f:
            buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8 : 8 + n])
    data = buf[8 + n :]
    meta = header.pop("__metadata__", {})

    def stored(name: str) -> tuple[str, list[int], bytes]:
        e = header[name]
        b, end = e["data_offsets"]
        return e["dtype"], e["shape"], data[b:end]

    if "lgn.version" not in meta:
        return {k: np.frombuffer(stored(k)[2], DTYPES[stored(k)[0]]).reshape(stored(k)[1]) for k in header}, meta

    major = int(meta["lgn.version"].split(".")[0])
    assert major in (1, 2), f"unsupported major version {major}"
    manifest = json.loads(meta["lgn.manifest"])
    for name, crc in manifest["crc32"].items():
        assert zlib.crc32(stored(name)[2]) == crc, f"checksum mismatch in {name}"
    codebooks = []
    for cb in manifest["codebooks"]:
        dtype, shape, raw = stored(cb["tensor"])
        assert dtype == "F32" and shape == [cb["k"], *cb["block"]]
        assert cb["bits"] == max(1, math.ceil(math.log2(cb["k"])))
        codebooks.append((cb, np.frombuffer(raw, "<f4").reshape(cb["k"], -1)))

    out: dict[str, np.ndarray[Any, Any]] = {}
    for t in manifest["tensors"]:
        name, shape = t["name"], t["shape"]
        if t["encoding"] == "raw":
            dtype, sshape, raw = stored(name)
            out[name] = np.frombuffer(raw, DTYPES[dtype]).reshape(sshape).copy()
            continue
        rows, cols = shape[0], math.prod(shape[1:])
        bh, bw = codebooks[t["stages"][0]["codebook"]][0]["block"]
        gr, gc = -(-rows // bh), -(-cols // bw)
        acc = None
        for st in t["stages"]:
            cb, values = codebooks[st["codebook"]]
            idx = unpack(stored(st["indices"])[2], cb["bits"], gr * gc)
            assert idx.size == 0 or idx.max() < cb["k"], "index out of range"
            # blocks (gr, gc, bh, bw) -> padded matrix (gr*bh, gc*bw) -> crop
            blocks = values[idx].reshape(gr, gc, bh, bw)
            m = blocks.transpose(0, 2, 1, 3).reshape(gr * bh, gc * bw)[:rows, :cols]
            acc = m.copy() if acc is None else (acc + m).astype(np.float32)
        assert acc is not None
        if "scale" in t:
            sdtype, _, sraw = stored(t["scale"]["tensor"])
            s = np.frombuffer(sraw, DTYPES[sdtype]).astype(np.float32)
            acc = (acc * (s.reshape(-1, 1) if t["scale"]["mode"] == "row" else s[0])).astype(np.float32)
        if major >= 2 and "outliers" in t:  # version 2.0; a major-1 reader ignores the member
            idtype, ishape, iraw = stored(t["outliers"]["indices"])
            vdtype, vshape, vraw = stored(t["outliers"]["values"])
            assert idtype == "U32" and vdtype == "F32" and len(ishape) == 1 and vshape == ishape
            pos = np.frombuffer(iraw, "<u4").astype(np.int64)
            assert np.all(np.diff(pos) > 0) and (pos.size == 0 or pos[-1] < rows * cols), "bad outlier indices"
            acc = acc.reshape(-1).copy()  # the flat position of view element (r, c) is r * cols + c
            acc[pos] = np.frombuffer(vraw, "<f4")
        if t["dtype"] == "F32":
            out[name] = acc.astype(np.float32).reshape(shape)
        elif t["dtype"] == "F16":
            with np.errstate(over="ignore"):  # values beyond the F16 range round to infinity
                out[name] = acc.astype(np.float16).reshape(shape)
        else:
            out[name] = f32_to_bf16(acc).reshape(shape)
    user = {k: v for k, v in meta.items() if not k.startswith("lgn.")}
    return out, user
