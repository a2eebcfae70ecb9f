#!/usr/bin/env python3
"""Generates the .lgn conformance vectors of spec/vectors/ (see spec/lgn.md and README.md here).

    python spec/vectors/generate.py            # rewrites spec/vectors/{valid,invalid}/, manifest.json, README.md
    python spec/vectors/generate.py --out DIR  # writes the same files under DIR

Deterministic: fixed seeds, no timestamps; two runs write byte-identical files.

Valid vectors come from two writers:

* ``save_*``: ``legofmt.save`` (the real writer, so the vectors pin its layout). Most use the
  writer's exact path (no more distinct blocks than k), some its k-means path (fixed seed; the
  clustering is deterministic for a seed, whatever the thread count or instruction set).
* ``hand_*`` and ``plain_*``: the small independent writer below, for what ``legofmt.save``
  never writes (every index width 1..16, k = 65536, rounding ties, special scales, padding
  bytes, a newer minor version, a non-canonical layout, plain safetensors files).

For each valid vector, the decoded tensors are computed by the reference decoder
(``spec/lgn_decoder.py``, written from the spec alone), checked bit for bit against ``legofmt.load``, and written as
the plain safetensors file ``NAME.expected.safetensors`` (every tensor in its original dtype).
Generation aborts if the two decoders disagree; a valid vector legofmt rejects outright is
printed as a deviation (a reader bug, or a reader older than the vector's version).

Invalid vectors are byte-level edits of a small valid file, each with the error class a
conforming reader must raise and words its message must contain. Generation checks them against
legofmt and prints (but does not abort on) any deviation: a deviation is a reader bug.

The vectors of ``clarified_valid_vectors`` and ``clarified_invalid_vectors`` come last, so that
adding them left every earlier file byte-identical: they pin the rules spec/lgn.md settled where a
second implementer had to guess (JSON rules, left-to-right byte sizes, null members, NaN bits...).
Where a result is a NaN whose bits the spec leaves unspecified, the cross-check lets a NaN match
any NaN in the tensors the vector lists under ``nan_bits_unspecified``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("RAYON_NUM_THREADS", "2")  # results do not depend on it; keeps the machine usable

import legofmt  # noqa: E402
import lgn_decoder  # noqa: E402

# ---------------------------------------------------------------------------------------------
# A minimal safetensors / .lgn writer (independent of legofmt)
# ---------------------------------------------------------------------------------------------

DTYPE_SIZE = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "U16": 2,
    "I16": 2,
    "F16": 2,
    "BF16": 2,
    "U32": 4,
    "I32": 4,
    "F32": 4,
    "U64": 8,
    "I64": 8,
    "F64": 8,
}
NP_OF = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "F32": np.dtype("<f4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F64": np.dtype("<f8"),
}


def dumps(obj: Any) -> str:
    """Compact JSON as legofmt writes it (UTF-8, no spaces)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


@dataclass
class Piece:
    """One stored (safetensors) tensor."""

    name: str
    dtype: str
    shape: list[int]
    data: bytes
    pad_to_8: bool = False  # U8 only: append zero bytes so the next piece starts at a multiple of 8


def header_bytes(header: dict[str, Any] | str, align: int = 8) -> bytes:
    """8-byte length prefix + JSON header padded with spaces to a multiple of ``align``."""
    text = (header if isinstance(header, str) else dumps(header)).encode()
    text += b" " * ((-len(text)) % align)
    return struct.pack("<Q", len(text)) + text


def st_file(
    pieces: list[Piece], metadata: dict[str, str] | None = None, *, sort_keys: bool = True, align: int = 8
) -> bytes:
    """A safetensors file holding ``pieces`` in the given data order."""
    entries: dict[str, Any] = {}
    at = 0
    for p in pieces:
        if p.pad_to_8 and (at + len(p.data)) % 8:
            assert p.dtype == "U8"
            p.data += b"\0" * (-(at + len(p.data)) % 8)
            p.shape = [len(p.data)]
        n = DTYPE_SIZE[p.dtype] * math.prod(p.shape)  # exact: shapes of invalid vectors may overflow 64 bits
        assert n == len(p.data), (p.name, n, len(p.data))
        entries[p.name] = {"dtype": p.dtype, "shape": p.shape, "data_offsets": [at, at + n]}
        at += n
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = metadata
    header.update(entries)
    if sort_keys:
        header = dict(sorted(header.items()))
        header = {k: dict(sorted(v.items())) if k != "__metadata__" else v for k, v in header.items()}
    return header_bytes(header, align) + b"".join(p.data for p in pieces)


def lgn_file(
    pieces: list[Piece],
    manifest: dict[str, Any],
    *,
    version: str = "1.0",
    extra_metadata: dict[str, str] | None = None,
    sort_keys: bool = True,
    align: int = 8,
) -> bytes:
    """An .lgn file: ``manifest["crc32"]`` is filled in from the pieces' final bytes."""
    st_file(pieces)  # applies the index padding so the checksums cover the final bytes
    manifest = dict(manifest)
    manifest["crc32"] = {p.name: zlib.crc32(p.data) for p in sorted(pieces, key=lambda p: p.name)}
    md = {"lgn.version": version, "lgn.manifest": dumps(manifest)}
    md.update(extra_metadata or {})
    return st_file(pieces, dict(sorted(md.items())), sort_keys=sort_keys, align=align)


def pack(indices: Any, bits: int) -> bytes:
    """Little-endian bit stream: index i occupies bits i*bits .. i*bits+bits-1, LSB first."""
    idx = np.asarray(indices, dtype=np.uint64)
    assert idx.size == 0 or int(idx.max()) < (1 << bits)
    stream = ((idx[:, None] >> np.arange(bits, dtype=np.uint64)) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(stream, bitorder="little").tobytes()


def bits_for_k(k: int) -> int:
    return max(1, (k - 1).bit_length())


def f32(a: Any) -> np.ndarray[Any, Any]:
    return np.asarray(a, dtype=np.float32)


class Builder:
    """Builds an .lgn file from codebooks and clustered/raw tensors, laid out as legofmt's writer
    lays them out (codebooks, then per clustered tensor its outlier indices and values, its scale
    and its index tensors, the last index tensor padded to 8 bytes, then raw tensors by decreasing
    element size). Like a writer, it writes version "2.0" when a tensor has outliers, else "1.0"."""

    def __init__(self) -> None:
        self.codebooks: list[tuple[dict[str, Any], Piece]] = []
        self.entries: list[dict[str, Any]] = []
        self.clustered: list[Piece] = []
        self.raw: list[Piece] = []

    def codebook(self, values: Any, block: tuple[int, int]) -> int:
        v = f32(values).reshape(-1, block[0], block[1])
        i = len(self.codebooks)
        name = f"lgn.codebook.{i}"
        k = v.shape[0]
        entry = {"tensor": name, "k": k, "bits": bits_for_k(k), "block": list(block)}
        self.codebooks.append((entry, Piece(name, "F32", list(v.shape), v.astype("<f4").tobytes())))
        return i

    def n_blocks(self, shape: list[int], cb: int) -> int:
        bh, bw = self.codebooks[cb][0]["block"]
        rows, cols = shape[0], int(np.prod(shape[1:], dtype=np.int64))
        return -(-rows // bh) * -(-cols // bw)

    def clustered_tensor(
        self,
        name: str,
        dtype: str,
        shape: list[int],
        stages: list[tuple[int, Any]],
        scale: tuple[str, str, Any] | None = None,
        index_extra: bytes = b"",
        outliers: tuple[Any, Any] | None = None,
    ) -> None:
        """``outliers``: (flat positions, values), stored as U32 and F32 (version 2.0)."""
        entry: dict[str, Any] = {"name": name, "dtype": dtype, "shape": shape, "encoding": "clustered"}
        if outliers is not None:
            pos = np.asarray(outliers[0], dtype="<u4").reshape(-1)
            val = np.asarray(outliers[1], dtype="<f4").reshape(-1)
            assert pos.size == val.size
            self.clustered.append(Piece(f"{name}.lgn.outlier_index", "U32", [pos.size], pos.tobytes()))
            self.clustered.append(Piece(f"{name}.lgn.outlier_value", "F32", [val.size], val.tobytes()))
        if scale is not None:
            _, sdtype, values = scale
            sv = np.asarray(values, dtype=NP_OF[sdtype]).reshape(-1)
            self.clustered.append(Piece(f"{name}.lgn.scale", sdtype, [sv.size], sv.tobytes()))
        st = []
        for s, (cb, idx) in enumerate(stages):
            cbe = self.codebooks[cb][0]
            idx = np.asarray(idx).reshape(-1)
            assert idx.size == self.n_blocks(shape, cb), (name, idx.size, self.n_blocks(shape, cb))
            data = pack(idx, cbe["bits"]) + (index_extra if s + 1 == len(stages) else b"")
            pname = f"{name}.lgn.idx{s}"
            self.clustered.append(Piece(pname, "U8", [len(data)], data, pad_to_8=s + 1 == len(stages)))
            st.append({"codebook": cb, "indices": pname})
        entry["stages"] = st
        if scale is not None:
            entry["scale"] = {"mode": scale[0], "tensor": f"{name}.lgn.scale"}
        if outliers is not None:
            entry["outliers"] = {"indices": f"{name}.lgn.outlier_index", "values": f"{name}.lgn.outlier_value"}
        self.entries.append(entry)

    def raw_tensor(self, name: str, dtype: str, array: Any) -> None:
        a = np.asarray(array)
        self.entries.append({"name": name, "dtype": dtype, "shape": list(a.shape), "encoding": "raw"})
        self.raw.append(Piece(name, dtype, list(a.shape), a.astype(NP_OF[dtype]).tobytes()))

    def pieces(self) -> list[Piece]:
        raw = sorted(self.raw, key=lambda p: -DTYPE_SIZE[p.dtype])
        return [copy.copy(p) for _, p in self.codebooks] + [copy.copy(p) for p in self.clustered + raw]

    def manifest(self) -> dict[str, Any]:
        return {"codebooks": [e for e, _ in self.codebooks], "tensors": self.entries}

    def version(self) -> str:
        return "2.0" if any("outliers" in e for e in self.entries) else "1.0"

    def build(self, **kw: Any) -> bytes:
        return lgn_file(self.pieces(), self.manifest(), **{"version": self.version(), **kw})


def random_indices(rng: np.random.Generator, n: int, k: int) -> np.ndarray[Any, Any]:
    """n indices in 0..k, containing 0 and k-1 whenever n >= 2 (so the top bit is exercised)."""
    idx = rng.integers(0, k, size=n)
    if n >= 2:
        idx[0], idx[-1] = k - 1, 0
        idx[n // 2] = k - 1
    return idx


# ---------------------------------------------------------------------------------------------
# Reading back: the reference decoder, legofmt, and the expected files
# ---------------------------------------------------------------------------------------------


def split(buf: bytes) -> tuple[dict[str, Any], bytes]:
    (n,) = struct.unpack("<Q", buf[:8])
    return json.loads(buf[8 : 8 + n]), buf[8 + n :]


def logical_dtypes(buf: bytes) -> dict[str, str]:
    """Original dtype of each tensor, from the manifest (or the header of a plain file)."""
    header, _ = split(buf)
    meta = header.pop("__metadata__", {})
    if "lgn.manifest" in meta:
        return {t["name"]: t["dtype"] for t in json.loads(meta["lgn.manifest"])["tensors"]}
    return {k: v["dtype"] for k, v in header.items()}


def legofmt_decode(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    out = legofmt.load(path, framework="np")
    with legofmt.open(path, "np") as f:
        f.verify()
    return out


def nan_mask(a: np.ndarray[Any, Any], dtype: str) -> np.ndarray[Any, Any]:
    """Where a decoded float tensor holds a NaN (BF16 arrays hold bit patterns)."""
    if dtype == "BF16":
        return (a.view("<u2") & 0x7FFF) > 0x7F80  # type: ignore[no-any-return]
    return np.isnan(a)  # type: ignore[no-any-return]


def same_bits(x: np.ndarray[Any, Any], y: np.ndarray[Any, Any], dtype: str, nan_any: bool) -> bool:
    """Bit for bit; with ``nan_any`` (spec/lgn.md section 9: NaN bits unspecified) a NaN matches any NaN."""
    x, y = np.ascontiguousarray(x), np.ascontiguousarray(y)
    if x.shape != y.shape or x.dtype != y.dtype:
        return False
    if not nan_any:
        return x.tobytes() == y.tobytes()
    nx, ny = nan_mask(x, dtype), nan_mask(y, dtype)
    bits = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[x.dtype.itemsize]
    return bool(np.array_equal(nx, ny) and np.array_equal(x.view(bits)[~nx], y.view(bits)[~ny]))


def check_same(
    a: dict[str, np.ndarray[Any, Any]],
    b: dict[str, np.ndarray[Any, Any]],
    what: str,
    dtypes: dict[str, str],
    nan_any: frozenset[str] = frozenset(),
) -> None:
    if list(a) != list(b) and sorted(a) != sorted(b):
        raise SystemExit(f"{what}: tensor names differ: {sorted(a)} vs {sorted(b)}")
    for k in a:
        if not same_bits(a[k], b[k], dtypes[k], k in nan_any):
            raise SystemExit(f"{what}: tensor {k!r} differs between the reference decoder and legofmt.load")


def expected_file(decoded: dict[str, np.ndarray[Any, Any]], dtypes: dict[str, str]) -> bytes:
    """The decoded tensors as a plain safetensors file (largest elements first: all aligned)."""
    names = sorted(decoded, key=lambda n: (-DTYPE_SIZE[dtypes[n]], n))
    pieces = [
        Piece(n, dtypes[n], list(decoded[n].shape), np.ascontiguousarray(decoded[n]).astype(NP_OF[dtypes[n]]).tobytes())
        for n in names
    ]
    return st_file(pieces)


# ---------------------------------------------------------------------------------------------
# The vectors
# ---------------------------------------------------------------------------------------------


@dataclass
class Vectors:
    out: Path
    entries: list[dict[str, Any]] = field(default_factory=list)
    deviations: list[str] = field(default_factory=list)

    def valid(
        self,
        name: str,
        data: bytes | None,
        description: str,
        *,
        ext: str = ".lgn",
        nan_bits_unspecified: list[str] | None = None,
    ) -> None:
        """Records a valid vector; ``data`` None means the file was already written (by save).

        ``nan_bits_unspecified``: tensors holding NaN whose bits section 9 leaves unspecified (NaN
        from arithmetic or converted to F16/BF16); there a reader's NaN matches any NaN."""
        rel = f"valid/{name}{ext}"
        path = self.out / rel
        if data is not None:
            path.write_bytes(data)
        buf = path.read_bytes()
        ref = lgn_decoder.decode(path)
        try:
            got = legofmt_decode(path)
        except legofmt.LgnError as e:  # a reader that rejects a valid file: reported, like invalid-vector deviations
            self.deviations.append(f"{path.name}: legofmt rejects this valid vector: {type(e).__name__}: {e}")
        else:
            check_same(ref, got, rel, logical_dtypes(buf), frozenset(nan_bits_unspecified or ()))
        exp_rel = f"valid/{name}.expected.safetensors"
        (self.out / exp_rel).write_bytes(expected_file(ref, logical_dtypes(buf)))
        entry: dict[str, Any] = {"file": rel, "valid": True, "expected": exp_rel, "description": description}
        if nan_bits_unspecified:
            entry["nan_bits_unspecified"] = sorted(nan_bits_unspecified)
        self.entries.append(entry)

    def invalid(
        self,
        name: str,
        data: bytes,
        error: str,
        description: str,
        message: list[str],
        detected_at: str = "open",
    ) -> None:
        rel = f"invalid/{name}.lgn"
        path = self.out / rel
        path.write_bytes(data)
        self.entries.append(
            {
                "file": rel,
                "valid": False,
                "error": error,
                "message_contains": message,
                "detected_at": detected_at,
                "description": description,
            }
        )
        self.check_invalid(path, error, message, detected_at)

    def check_invalid(self, path: Path, error: str, message: list[str], detected_at: str) -> None:
        cls = getattr(legofmt, error)

        def attempt(fn: Callable[[], Any]) -> BaseException | None:
            try:
                fn()
            except BaseException as e:  # a panic (pyo3 PanicException) must be reported, not propagated
                return e
            return None

        problems = []
        opened = attempt(lambda: legofmt.open(path, "np").close())
        if detected_at == "open":
            errs = {"open": opened, "load": attempt(lambda: legofmt.load(path, framework="np"))}
        else:
            if opened is not None:
                problems.append(f"open raised {type(opened).__name__}: {opened}")
            errs = {
                "load": attempt(lambda: legofmt.load(path, framework="np")),
                "verify": attempt(lambda: verify(path)),
            }
        for what, e in errs.items():
            if e is None:
                problems.append(f"{what} raised nothing")
            elif type(e) is not cls:
                problems.append(f"{what} raised {type(e).__name__} instead of {error}: {e}")
            elif not all(m in str(e) for m in message):
                problems.append(f"{what}: message {str(e)!r} lacks one of {message}")
        for p in problems:
            self.deviations.append(f"{path.name}: {p}")


def verify(path: Path) -> None:
    with legofmt.open(path, "np") as f:
        f.verify()


def exact_tensor(
    rng: np.random.Generator, k: int, block: tuple[int, int], grid: tuple[int, int]
) -> np.ndarray[Any, Any]:
    """A matrix tiled exactly by ``grid`` blocks drawn from ``k`` distinct codewords (each used)."""
    bh, bw = block
    d = bh * bw
    while True:
        hi = 16 if k <= 16 else 4000
        words = rng.integers(-hi, hi + 1, size=(k, d)) / 4.0
        if len({w.tobytes() for w in words}) == k:
            break
    n = grid[0] * grid[1]
    assert n >= k
    idx = np.concatenate([np.arange(k), rng.integers(0, k, size=n - k)])
    rng.shuffle(idx)
    blocks = words[idx].reshape(grid[0], grid[1], bh, bw)
    return blocks.transpose(0, 2, 1, 3).reshape(grid[0] * bh, grid[1] * bw)


def save(v: Vectors, name: str, tensors: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """legofmt.save into valid/NAME.lgn; returns the manifest written."""
    path = v.out / "valid" / f"{name}.lgn"
    # Options the vectors rely on are pinned here, so that changing the library's defaults
    # never changes a vector.
    pinned = {
        "k": 256,
        "block": (4, 4),
        "stages": 1,
        "scale": "row",
        "min_size": 0,
        "cluster_depthwise": True,
        "outliers": 0.0,
    }
    legofmt.save(tensors, path, progress=False, **{**pinned, **kw})
    header, _ = split(path.read_bytes())
    return json.loads(header["__metadata__"]["lgn.manifest"])  # type: ignore[no-any-return]


def codebook_ks(manifest: dict[str, Any]) -> list[int]:
    return [c["k"] for c in manifest["codebooks"]]


def writer_vectors(v: Vectors) -> None:
    import torch

    dtypes = {0: "F32", 1: "F16", 2: "BF16"}
    blocks = [(1, 1), (2, 3), (1, 4), (3, 2), (2, 2)]
    for k in [*range(2, 17), 256, 300]:
        rng = np.random.default_rng(1000 + k)
        block = (1, 1) if k >= 256 else blocks[k % len(blocks)]
        grid = (20, 30) if k == 300 else (16, 32) if k == 256 else (3, 7) if k <= 16 else (4, 4)
        x = exact_tensor(rng, k, block, grid)
        dt = "F32" if k >= 256 else dtypes[k % 3]
        value: Any = torch.from_numpy(x.astype(np.float32)).to(torch.bfloat16) if dt == "BF16" else x.astype(NP_OF[dt])
        m = save(
            v,
            f"save_k{k}",
            {"w": value, "bias": np.arange(x.shape[0], dtype=np.float32)},
            k=k,
            block=block,
            scale="none",
        )
        assert codebook_ks(m) == [k], (k, codebook_ks(m))
        v.valid(
            f"save_k{k}",
            None,
            f"legofmt.save, exact path: {dt} {list(x.shape)} in {block[0]}x{block[1]} blocks with exactly {k} distinct "
            f"blocks -> k={k}, {bits_for_k(k)}-bit indices, no scale; a raw F32 bias",
        )

    rng = np.random.default_rng(1)
    conv = rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    m = save(v, "save_conv_rank4_odd", {"conv.weight": conv}, k=8, block=(4, 4), scale="row", seed=7)
    v.valid(
        "save_conv_rank4_odd",
        None,
        "legofmt.save, k-means: rank-4 F32 [6,3,3,3] (2-D view 6x27) in 4x4 blocks: padding on the last block row "
        f"and column; k={codebook_ks(m)[0]}, row scales",
    )

    x3 = (rng.standard_normal((5, 4, 9)) * 0.1).astype(np.float16)
    m = save(v, "save_rank3_f16", {"attn.w": x3}, k=8, block=(2, 3), scale="tensor", seed=3)
    v.valid(
        "save_rank3_f16",
        None,
        f"legofmt.save, k-means: rank-3 F16 [5,4,9] (view 5x36) in 2x3 blocks, k={codebook_ks(m)[0]}, tensor scale",
    )

    xb = torch.from_numpy(rng.standard_normal((9, 13)).astype(np.float32)).to(torch.bfloat16)
    m = save(v, "save_bf16", {"fc.weight": xb, "fc.bias": torch.arange(9, dtype=torch.bfloat16)}, k=16, block=(2, 2))
    v.valid(
        "save_bf16",
        None,
        f"legofmt.save, k-means: BF16 [9,13] in 2x2 blocks (odd both ways), k={codebook_ks(m)[0]}, row scales; "
        "raw BF16 bias",
    )

    x8 = rng.standard_normal((17, 20)).astype(np.float32)
    save(v, "save_block8x8", {"w": x8}, k=4, block=(8, 8), seed=5)
    v.valid(
        "save_block8x8", None, "legofmt.save, k-means: F32 [17,20] in 8x8 blocks (grid 3x3, padded), k=4, row scales"
    )

    x1 = rng.standard_normal((7, 9)).astype(np.float32)
    save(v, "save_block1x1", {"w": x1}, k=8, block=(1, 1), scale="none", seed=11)
    v.valid(
        "save_block1x1", None, "legofmt.save, k-means: F32 [7,9] in 1x1 blocks (scalar quantization), k=8, no scale"
    )

    x2 = rng.standard_normal((12, 18)).astype(np.float32)
    m = save(v, "save_stages2", {"w": x2}, k=8, block=(2, 2), stages=2, seed=2)
    v.valid(
        "save_stages2",
        None,
        f"legofmt.save, k-means: 2 residual stages (k={codebook_ks(m)}), F32 [12,18] 2x2 blocks, row scales",
    )

    x33 = (rng.standard_normal((10, 12)) * 3).astype(np.float16)
    m = save(v, "save_stages3", {"w": x33}, k=4, block=(2, 3), stages=3, scale="tensor", seed=4)
    v.valid(
        "save_stages3",
        None,
        f"legofmt.save, k-means: 3 residual stages (k={codebook_ks(m)}), F16 [10,12] 2x3 blocks, tensor scale",
    )

    xs = (rng.standard_normal((8, 12)) * np.array([[0.01], [1], [10], [0.5], [2], [0.1], [4], [100]])).astype(
        np.float32
    )
    for mode in ("none", "tensor", "row"):
        save(v, f"save_scale_{mode}", {"w": xs}, k=8, block=(2, 4), scale=mode, seed=9)
        v.valid(
            f"save_scale_{mode}",
            None,
            f"legofmt.save, k-means: F32 [8,12] 2x4 blocks, k=8, scale={mode!r}"
            + ("" if mode == "none" else " (stored as F16 scales)"),
        )

    xf = (rng.standard_normal((4, 8)) * np.array([[1e-6], [1.0], [1e6], [3.0]])).astype(np.float32)
    m = save(v, "save_scale_f32", {"w": xf}, k=4, block=(2, 2), scale="row", seed=1)
    v.valid(
        "save_scale_f32",
        None,
        "legofmt.save: row scales outside the F16 normal range (1e-6 .. 1e6) are stored as an F32 scale tensor",
    )

    raw: dict[str, Any] = {
        "bool": np.array([[True, False, True]]),
        "u8": np.arange(7, dtype=np.uint8),
        "i8": np.array([-128, -1, 0, 127], dtype=np.int8),
        "u16": np.array([0, 65535, 258], dtype=np.uint16),
        "i16": np.array([[-32768, 1], [2, 32767]], dtype=np.int16),
        "u32": np.array([4294967295, 1], dtype=np.uint32),
        "i32": np.arange(-3, 3, dtype=np.int32).reshape(2, 3),
        "u64": np.array([2**64 - 1], dtype=np.uint64),
        "i64.scalar": np.array(-5, dtype=np.int64),
        "f16": np.array([1.5, -0.0, 65504], dtype=np.float16),
        "f32.empty": np.zeros((0, 3), dtype=np.float32),
        "f32.w": rng.standard_normal((4, 4)).astype(np.float32),
        "f64": np.array([np.pi, -1e300], dtype=np.float64),
        "bf16": torch.tensor([1.0, -2.5, 3e38], dtype=torch.bfloat16),
    }
    save(v, "save_raw_only", raw, raw=["*"], metadata={"note": "all raw", "ünïcode": "✓"})
    v.valid(
        "save_raw_only",
        None,
        "legofmt.save with raw=['*']: an .lgn file with no codebooks; every dtype, a rank-0 scalar, an empty "
        "tensor, a rank-4 matrix kept raw; user metadata with non-ASCII text",
    )

    model = {
        "features.0.weight": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
        "features.0.bias": rng.standard_normal(8).astype(np.float32),
        "bn.running_mean": rng.standard_normal(8).astype(np.float32),
        "bn.num_batches_tracked": np.array(12, dtype=np.int64),
        "classifier.weight": rng.standard_normal((10, 24)).astype(np.float32),
        "classifier.bias": rng.standard_normal(10).astype(np.float32),
        "tiny.weight": rng.standard_normal((2, 3)).astype(np.float32),
    }
    save(v, "save_mixed_model", model, k=32, block=(4, 4), seed=1, metadata={"framework": "pt", "arch": "toy"})
    v.valid(
        "save_mixed_model",
        None,
        "legofmt.save of a small model: a conv and a linear weight clustered into one shared codebook (k=32, 4x4, "
        "row scales), biases, a rank-0 I64 buffer and a weight smaller than one block kept raw; user metadata",
    )


def writer_outlier_vectors(v: Vectors) -> None:
    """legofmt.save(..., outliers=0.01): format 2.0 as legofmt writes it."""
    rng = np.random.default_rng(2000)
    tensors = {
        "a.weight": rng.standard_t(3, size=(32, 48)).astype(np.float32),  # heavy tails: some elements stand out
        "a.bias": rng.standard_normal(32).astype(np.float32),
        "h.weight": (rng.standard_t(3, size=(24, 40)) * 0.05).astype(np.float16),
    }
    for name, stages in (("save_outliers", 1), ("save_outliers_stages2", 2)):
        m = save(v, name, tensors, k=16, block=(2, 2), stages=stages, scale="row", seed=6, outliers=0.01)
        header, _ = split((v.out / "valid" / f"{name}.lgn").read_bytes())
        version = header["__metadata__"]["lgn.version"]
        counts = {}
        for t in m["tensors"]:
            if t["encoding"] == "clustered":
                counts[t["name"]] = header[t["outliers"]["indices"]]["shape"][0] if "outliers" in t else 0
        if version != "2.0" or not all(counts.values()):
            v.deviations.append(f"{name}.lgn: legofmt.save(outliers=0.01) wrote version {version}, outliers {counts}")
        v.valid(
            name,
            None,
            f"legofmt.save(outliers=0.01), k-means: F32 [32,48] and F16 [24,40] (heavy-tailed) in one shared "
            f"codebook per stage (k={codebook_ks(m)}), 2x2 blocks, {stages} stage{'s' if stages > 1 else ''}, "
            "row scales; "
            f"outliers kept exactly ({', '.join(f'{n}: {c}' for n, c in counts.items())}); a raw F32 bias; "
            f"version {version}",
        )


def spec_example(v: Vectors) -> None:
    """The worked example of spec/lgn.md ("Worked example: decoding one tensor"), byte for byte."""
    b = Builder()
    cb = b.codebook([[[1, 2], [3, 4]], [[5, 6], [7, 8]], [[9, 10], [11, 12]]], (2, 2))
    b.clustered_tensor("example", "F32", [3, 1, 5], [(cb, [0, 1, 2, 2, 1, 0])], scale=("row", "F16", [1, 0.5, 2]))
    pieces = b.pieces()
    assert pieces[2].name == "example.lgn.idx0" and pieces[2].data == bytes([0xA4, 0x01])
    data = b.build()
    v.valid("spec_worked_example", data, "the worked example of spec/lgn.md: F32 [3,1,5], 2x2 blocks, k=3, row scales")
    want = np.array([[[1, 2, 5, 6, 9]], [[1.5, 2, 3.5, 4, 5.5]], [[18, 20, 10, 12, 2]]], dtype=np.float32)
    got = lgn_decoder.decode(data)
    assert np.array_equal(got["example"], want), got["example"]


def hand_vectors(v: Vectors) -> None:
    spec_example(v)
    rng = np.random.default_rng(20240611)

    # Every index width 1..16, with the smallest k that needs it (k=2 for 1 bit).
    b = Builder()
    shapes = {1: [5, 7], 2: [4, 9], 3: [3, 10], 4: [7, 7], 5: [2, 11], 6: [6, 5], 7: [5, 5], 8: [3, 3]}
    block_of = {1: (2, 3), 2: (3, 2), 3: (1, 4), 4: (2, 2), 5: (1, 3), 6: (3, 3), 7: (1, 1), 8: (8, 8)}
    for bits in range(1, 17):
        k = 2 if bits == 1 else (1 << (bits - 1)) + 1
        block = block_of.get(bits, (1, 1))
        shape = shapes.get(bits, [3, 11])
        if bits == 8:
            shape = [17, 18]
        cb = b.codebook(rng.standard_normal(k * block[0] * block[1]), block)
        dt = ("F32", "F16", "BF16")[bits % 3]
        b.clustered_tensor(f"t{bits}bit", dt, shape, [(cb, random_indices(rng, b.n_blocks(shape, cb), k))])
    v.valid(
        "hand_bits_1_to_16",
        b.build(),
        "every index width 1..16 bits (k = 2, 3, 5, 9, 17, ..., 32769: the smallest k of each width), the top "
        "index k-1 used; block shapes from 1x1 to 8x8, odd shapes (edge padding), F32/F16/BF16 outputs, no scales",
    )

    # k = 65536: 16-bit indices, one codebook shared by two tensors.
    b = Builder()
    cb = b.codebook(rng.standard_normal(65536), (1, 1))
    special = np.array([0, 65535, 255, 256, 32767, 32768, 1, 65534])
    i1 = np.concatenate([special, rng.integers(0, 65536, size=63 - special.size)])
    b.clustered_tensor("a", "F32", [7, 9], [(cb, i1)])
    b.clustered_tensor("b", "F16", [3, 5], [(cb, random_indices(rng, 15, 65536))], scale=("tensor", "F16", [0.5]))
    v.valid(
        "hand_k65536",
        b.build(),
        "k=65536 (16-bit indices, 0 and 65535 used), 1x1 blocks, one codebook shared by two tensors",
    )

    # Residual stages with different k per stage, values that round.
    b = Builder()
    cbs = [b.codebook(rng.standard_normal(k * 6), (2, 3)) for k in (5, 2, 17)]
    for name, dt, shape in (("r.f32", "F32", [5, 7]), ("r.f16", "F16", [4, 6]), ("r.bf16", "BF16", [3, 8])):
        stages = [(c, random_indices(rng, b.n_blocks(shape, c), b.codebooks[c][0]["k"])) for c in cbs]
        b.clustered_tensor(name, dt, shape, stages, scale=("row", "F32", rng.uniform(0.1, 3, shape[0])))
    two = [(c, random_indices(rng, b.n_blocks([6, 6], c), b.codebooks[c][0]["k"])) for c in cbs[:2]]
    b.clustered_tensor("r2", "F32", [6, 6], two, scale=("tensor", "F16", [1.25]))
    v.valid(
        "hand_residual_stages",
        b.build(),
        "residual stages: 3 stages with codebooks of k=5, 2, 17 (2x3 blocks) and 2 stages; random codewords so "
        "the order (c1 + c2) + c3, then * scale, in F32 matters; F32 row scales and an F16 tensor scale",
    )

    # Rounding to F16/BF16: exact ties (round half to even), F16 subnormals, signed zeros.
    ties = [
        1 + 2**-8,  # BF16 tie -> 1.0
        1 + 3 * 2**-8,  # BF16 tie -> 1 + 2^-6
        -(1 + 2**-8),
        1 + 2**-11,  # F16 tie -> 1.0
        1 + 3 * 2**-11,  # F16 tie -> 1 + 2^-9
        2**-25,  # F16 subnormal tie -> 0
        3 * 2**-25,  # F16 subnormal tie -> 2^-23
        2**-24 * 1.25,
        -0.0,
        0.0,
        65504.0,
        6.0e-5,
        1 + 2**-8 + 2**-20,  # just above a BF16 tie -> up
        1 + 2**-11 - 2**-20,  # just below an F16 tie -> down
        0.1,
        -3.3,
    ]
    b = Builder()
    cb = b.codebook(ties, (1, 1))
    idx = np.arange(16)
    for dt in ("F16", "BF16", "F32"):
        b.clustered_tensor(f"ties.{dt.lower()}", dt, [4, 4], [(cb, idx)])
    b.clustered_tensor(
        "ties.scaled.bf16", "BF16", [4, 4], [(cb, idx[::-1])], scale=("row", "F16", [1.0, -1.0, 0.5, 2.0])
    )
    v.valid(
        "hand_rounding",
        b.build(),
        "conversion to the output dtype rounds to nearest, ties to even: exact F16 and BF16 ties, F16 subnormals "
        "and subnormal ties, -0.0, 65504; also through a row scale",
    )

    # Special scales: zero, negative, F16 subnormal, F16 max; -0.0 products.
    b = Builder()
    cb = b.codebook([[0.5, -0.0, 1.0, -2.0], [0.25, 0.0, -1.5, 3.0]], (2, 2))
    idx = random_indices(rng, b.n_blocks([6, 5], cb), 2)
    scales = np.array([0.0, -1.0, 2**-20, 65504.0, -0.0, 0.333], dtype=np.float16)
    b.clustered_tensor("s.row", "F32", [6, 5], [(cb, idx)], scale=("row", "F16", scales))
    b.clustered_tensor("s.tensor.neg", "F16", [6, 5], [(cb, idx[::-1])], scale=("tensor", "F32", [-0.75]))
    b.clustered_tensor("s.tensor.zero", "BF16", [6, 5], [(cb, idx)], scale=("tensor", "F32", [0.0]))
    v.valid(
        "hand_scale_special",
        b.build(),
        "scale values a reader must apply as they are: 0, -1, an F16 subnormal, 65504, -0.0 (row, F16) and "
        "negative or zero tensor scales (F32); signed zeros in codewords",
    )

    # Shared codebooks, stages naming codebooks out of order, one tensor with no scale.
    b = Builder()
    c0 = b.codebook(rng.standard_normal(4 * 4), (2, 2))
    c1 = b.codebook(rng.standard_normal(3 * 4), (2, 2))
    b.clustered_tensor("x", "F32", [4, 6], [(c1, random_indices(rng, 6, 3)), (c0, random_indices(rng, 6, 4))])
    b.clustered_tensor("y", "F32", [3, 3], [(c0, random_indices(rng, 4, 4))])
    b.clustered_tensor("z", "F16", [5, 2], [(c0, random_indices(rng, 3, 4)), (c1, random_indices(rng, 3, 3))])
    b.raw_tensor("bias", "F32", rng.standard_normal(4).astype(np.float32))
    v.valid(
        "hand_shared_codebooks",
        b.build(),
        "two codebooks shared by three tensors; a tensor whose stage 0 uses codebook 1 and stage 1 codebook 0",
    )

    # Index tensors with extra bytes (up to 7) and set bits past the last index: ignored.
    b = Builder()
    cb = b.codebook(rng.standard_normal(5 * 3), (1, 3))
    b.clustered_tensor("p", "F32", [3, 7], [(cb, random_indices(rng, 9, 5))], index_extra=b"\xff" * 4)
    pieces = b.pieces()
    for p in pieces:
        if p.name == "p.lgn.idx0":
            data = bytearray(p.data)
            data[3] |= 0xF8  # 9 indices x 3 bits = 27 bits: bits 27..31 of the stream are unused
            p.data = bytes(data) + b"\xaa\xbb\xcc"  # 4 + 3 = 7 extra bytes in all
            p.shape = [len(p.data)]
            p.pad_to_8 = False
    v.valid(
        "hand_index_padding",
        lgn_file(pieces, b.manifest()),
        "an index tensor with 7 extra bytes (non-zero) after the packed indices and non-zero unused bits at the end "
        "of the bit stream: readers must ignore both",
    )

    # A newer minor version with fields this reader does not know: accepted, unknown fields ignored.
    b = Builder()
    cb = b.codebook(rng.standard_normal(4 * 2), (1, 2))
    b.clustered_tensor("m", "F32", [2, 4], [(cb, random_indices(rng, 4, 4))], scale=("row", "F16", [1.0, 2.0]))
    b.raw_tensor("n", "I32", np.array([1, 2, 3], dtype=np.int32))
    man = b.manifest()
    man["future_top_level"] = {"anything": [1, 2]}
    man["codebooks"][0]["future_codebook_field"] = "x"
    man["tensors"][0]["future_tensor_field"] = 1
    man["tensors"][0]["stages"][0]["future_stage_field"] = None
    man["tensors"][0]["scale"]["future_scale_field"] = True
    v.valid(
        "hand_minor_version",
        lgn_file(b.pieces(), man, version="1.9", extra_metadata={"lgn.future": "ignored", "user": "kept"}),
        "lgn.version '1.9' (a newer minor) with unknown manifest fields at every level and an unknown lgn.* "
        "metadata key: a 1.x reader must accept it and ignore what it does not know",
    )

    # Zero-size clustered tensors (no blocks): valid, decode to empty tensors.
    b = Builder()
    cb = b.codebook(rng.standard_normal(3 * 4), (2, 2))
    b.clustered_tensor("empty.rows", "F32", [0, 6], [(cb, [])])
    b.clustered_tensor("empty.cols", "F16", [4, 0, 3], [(cb, [])], scale=("row", "F16", [1, 2, 3, 4]))
    b.clustered_tensor("nonempty", "F32", [2, 2], [(cb, [2])])
    v.valid(
        "hand_empty_clustered",
        b.build(),
        "clustered tensors with zero elements ([0,6] and [4,0,3]: no blocks, empty index tensors) and a 1-block one",
    )

    # A non-canonical but valid layout: unsorted header keys, raw tensor first, codebook last,
    # header not padded to 8 bytes.
    b = Builder()
    cb = b.codebook(rng.standard_normal(2 * 4), (4, 1))
    b.clustered_tensor("q", "BF16", [9, 2], [(cb, random_indices(rng, 6, 2))])
    b.raw_tensor("r", "U8", np.arange(5, dtype=np.uint8))
    ps = b.pieces()
    ps = [ps[2], ps[1], ps[0]]  # r, q.lgn.idx0, lgn.codebook.0
    for p in ps:
        p.pad_to_8 = False
    v.valid(
        "hand_noncanonical_layout",
        lgn_file(ps, b.manifest(), sort_keys=False, align=1),
        "valid but not as legofmt writes it: header keys unsorted, data order raw / indices / codebook, header "
        "length not a multiple of 8 (so tensors are unaligned)",
    )

    # Plain safetensors files: every tensor is read as a raw tensor.
    ps = [
        Piece("weight", "F32", [3, 4], rng.standard_normal((3, 4)).astype("<f4").tobytes()),
        Piece("half", "F16", [2, 2], np.array([1, 2, 3, 4], dtype="<f2").tobytes()),
        Piece("brain", "BF16", [3], np.array([0x3F80, 0xC020, 0x7F7F], dtype="<u2").tobytes()),
        Piece("count", "I32", [], np.array(7, dtype="<i4").tobytes()),
        Piece("nothing", "U8", [0], b""),
    ]
    v.valid(
        "plain_safetensors",
        st_file(ps),
        "a plain safetensors file (no __metadata__): every tensor is raw",
        ext=".safetensors",
    )
    ps = [Piece("w", "F64", [2], np.array([1.0, -2.0], dtype="<f8").tobytes())]
    v.valid(
        "plain_with_metadata",
        st_file(ps, {"format": "pt", "lgnish": "not an lgn key"}),
        "a safetensors file with user __metadata__ but no lgn.* keys: a plain file, every tensor raw",
        ext=".safetensors",
    )


def spec_example_outliers(v: Vectors) -> None:
    """The second part of the worked example of spec/lgn.md: the same tensor with two outliers."""
    b = Builder()
    cb = b.codebook([[[1, 2], [3, 4]], [[5, 6], [7, 8]], [[9, 10], [11, 12]]], (2, 2))
    b.clustered_tensor(
        "example",
        "F32",
        [3, 1, 5],
        [(cb, [0, 1, 2, 2, 1, 0])],
        scale=("row", "F16", [1, 0.5, 2]),
        outliers=([3, 11], [-7.5, 100.0]),
    )
    pieces = b.pieces()
    assert [p.name for p in pieces[1:3]] == ["example.lgn.outlier_index", "example.lgn.outlier_value"]
    assert pieces[1].data == bytes.fromhex("03000000 0B000000")
    assert pieces[2].data == bytes.fromhex("0000F0C0 0000C842")
    data = b.build()
    assert b.version() == "2.0"
    v.valid(
        "spec_worked_example_outliers",
        data,
        "the worked example of spec/lgn.md with two outliers (flat positions 3 and 11, values -7.5 and 100.0; "
        "version 2.0): an outlier replaces the scaled value",
    )
    want = np.array([[[1, 2, 5, -7.5, 9]], [[1.5, 2, 3.5, 4, 5.5]], [[18, 100, 10, 12, 2]]], dtype=np.float32)
    got = lgn_decoder.decode(data)
    assert np.array_equal(got["example"], want), got["example"]


def hand_outlier_vectors(v: Vectors) -> None:
    """Version 2.0: outliers (spec/lgn.md sections 6 and 9), written by the independent Builder."""
    spec_example_outliers(v)
    rng = np.random.default_rng(20250101)

    # F32: any binary32 value is kept as it is; first and last element, both in edge-padded blocks.
    b = Builder()
    cb = b.codebook(rng.standard_normal(5 * 6), (2, 3))
    b.clustered_tensor(
        "o.f32",
        "F32",
        [5, 7],
        [(cb, random_indices(rng, b.n_blocks([5, 7], cb), 5))],
        scale=("row", "F16", [1, 0.5, 2, -1, 0.25]),
        outliers=([0, 6, 13, 20, 33, 34], [1e30, -0.0, 2**-149, -3.25, -np.inf, 123456.789]),
    )
    b.clustered_tensor(
        "o.rank3",
        "F32",
        [3, 2, 5],
        [(cb, random_indices(rng, b.n_blocks([3, 2, 5], cb), 5))],
        scale=("tensor", "F32", [0.5]),
        outliers=([0, 9, 10, 29], [3.0e38, -1.0, 2.0, 0.125]),
    )
    v.valid(
        "hand_outliers_f32",
        b.build(),
        "outliers in F32 tensors: [5,7] in 2x3 blocks (the last block row and column padded) with outliers at "
        "position 0, the end of rows 0 and 1, and the last two elements (in the padded corner block); values kept "
        "as stored (1e30, -0.0, the smallest subnormal, -infinity), not scaled; a rank-3 [3,2,5] tensor (view "
        "3x10) with outliers at flat positions 0, 9, 10, 29",
    )

    # F16 and BF16: the F32 outlier value is rounded to nearest even, like every decoded value.
    f16_values = [
        1.5,  # exact
        0.1,  # rounds
        1 + 2**-11,  # tie -> 1.0
        1 + 3 * 2**-11,  # tie -> 1 + 2^-9
        -2.0,  # exact
        3 * 2**-25,  # subnormal tie -> 2^-23
        2**-24,  # exact, the smallest subnormal
        1e-8,  # -> 0
        65504.0,  # exact, the largest
        65519.0,  # -> 65504
        70000.0,  # overflow -> infinity
        -65520.0,  # tie at the overflow threshold -> -infinity
        -0.0,  # exact
        0.333,  # rounds
    ]
    f16_pos = [0, 1, 3, 7, 8, 13, 14, 15, 20, 21, 27, 28, 33, 34]
    bf16_values = [
        3.0,  # exact
        1 + 2**-8,  # tie -> 1.0
        1 + 3 * 2**-8,  # tie -> 1 + 2^-6
        0.1,  # rounds
        -0.5,  # exact
        2**-133,  # exact, the smallest bfloat16 subnormal
        -1e-40,  # binary32 subnormal, rounds
        3.4e38,  # above the largest bfloat16 midpoint -> infinity
        -65536.0,  # exact
    ]
    bf16_pos = [0, 2, 4, 5, 6, 9, 10, 13, 14]
    b = Builder()
    cb = b.codebook(rng.standard_normal(3 * 4), (2, 2))
    b.clustered_tensor("o.f16", "F16", [5, 7], [(cb, random_indices(rng, 12, 3))], outliers=(f16_pos, f16_values))
    b.clustered_tensor(
        "o.bf16",
        "BF16",
        [3, 5],
        [(cb, random_indices(rng, 6, 3))],
        scale=("row", "F16", [2.0, -1.0, 0.5]),
        outliers=(bf16_pos, bf16_values),
    )
    v.valid(
        "hand_outliers_f16_bf16",
        b.build(),
        "outliers in F16 [5,7] and BF16 [3,5] tensors (2x2 blocks, padded), first and last element included: "
        "values exactly representable in the output dtype decode to themselves; the others round to nearest, "
        "ties to even (F16 and BF16 ties, F16 subnormals, overflow to infinity)",
    )

    # Several residual stages, row scales (two of them 0) and outliers; a zero tensor scale; a tensor without.
    b = Builder()
    cbs = [b.codebook(rng.standard_normal(k * 4), (2, 2)) for k in (3, 2, 5)]
    stages = [(c, random_indices(rng, b.n_blocks([6, 7], c), b.codebooks[c][0]["k"])) for c in cbs]
    b.clustered_tensor(
        "st.scaled",
        "F32",
        [6, 7],
        stages,
        scale=("row", "F32", [1.5, 0.0, -2.0, 0.0, 0.75, 3.0]),
        outliers=([0, 8, 13, 21, 40, 41], [-1.0, 5.5, -0.25, 42.0, 0.0, 7.0]),
    )
    two = [(c, random_indices(rng, b.n_blocks([4, 4], c), b.codebooks[c][0]["k"])) for c in cbs[:2]]
    b.clustered_tensor("st.zero", "F16", [4, 4], two, scale=("tensor", "F16", [0.0]), outliers=([5, 10], [1.25, -3.0]))
    two = [(c, random_indices(rng, b.n_blocks([3, 4], c), b.codebooks[c][0]["k"])) for c in cbs[1:]]
    b.clustered_tensor("st.none", "BF16", [3, 4], two)
    v.valid(
        "hand_outliers_stages_scales",
        b.build(),
        "outliers with 3 residual stages (k=3, 2, 5) and F32 row scales: outliers in rows whose scale is 0 keep "
        "their value while the rest of the row decodes to zero; an F16 tensor with tensor scale 0 and 2 stages "
        "(all zero but its outliers); a BF16 tensor without outliers in the same 2.0 file",
    )

    # n = 0 (empty U32 and F32 tensors), a zero-element tensor, and n = product(shape) (every element).
    b = Builder()
    cb = b.codebook(rng.standard_normal(4 * 2), (1, 2))
    b.clustered_tensor("n.none", "F32", [3, 4], [(cb, random_indices(rng, 6, 4))], outliers=([], []))
    b.clustered_tensor("n.empty", "F32", [0, 6], [(cb, [])], outliers=([], []))
    b.clustered_tensor(
        "n.all",
        "F16",
        [2, 3],
        [(cb, random_indices(rng, 4, 4))],
        scale=("row", "F16", [3.0, -2.0]),
        outliers=(range(6), [0.5, -1.5, 2.0, 1024.0, -0.0, 6.0e-5]),
    )
    v.valid(
        "hand_outliers_counts",
        b.build(),
        "outlier counts at the limits: n = 0 (empty U32 [0] and F32 [0] stored tensors), n = 0 on a tensor with no "
        "elements ([0,6]), and n = product(shape) (every element of an F16 [2,3] tensor is an outlier)",
    )

    # Many outliers spread over many rows (row-range decoders find them by binary search).
    b = Builder()
    cb = b.codebook(rng.standard_normal(16 * 8), (2, 4))
    shape = [130, 70]
    n = shape[0] * shape[1]
    pos = set(rng.choice(n, size=91, replace=False).tolist())
    pos |= {68, 69, 70, 71}  # a run across the end of row 0 and the start of row 1
    pos |= set(range(64 * 70, 65 * 70))  # the whole of row 64
    pos |= {n - 1}
    pos_arr = np.array(sorted(pos))
    b.clustered_tensor(
        "many",
        "F16",
        shape,
        [(cb, random_indices(rng, b.n_blocks(shape, cb), 16))],
        scale=("row", "F16", rng.uniform(0.5, 2.0, shape[0])),
        outliers=(pos_arr, rng.standard_normal(pos_arr.size) * 8),
    )
    v.valid(
        "hand_outliers_many",
        b.build(),
        f"{pos_arr.size} outliers in an F16 [130,70] tensor (2x4 blocks, 4-bit indices, row scales): random "
        "positions, a run across a row boundary, a whole row, the last element",
    )

    # Version 2.0 without outliers, and a newer minor 2.7 with unknown members (also in the outliers object).
    b = Builder()
    cb = b.codebook(rng.standard_normal(3 * 4), (2, 2))
    b.clustered_tensor("w", "F32", [4, 5], [(cb, random_indices(rng, 6, 3))], scale=("row", "F16", [1, 2, 3, 4]))
    b.raw_tensor("b", "F32", rng.standard_normal(4).astype(np.float32))
    v.valid(
        "hand_version_2_no_outliers",
        b.build(version="2.0"),
        "lgn.version '2.0' although no tensor has outliers (writers write 1.0 then, readers accept both)",
    )
    b = Builder()
    cb = b.codebook(rng.standard_normal(4 * 2), (1, 2))
    b.clustered_tensor(
        "m",
        "F32",
        [2, 4],
        [(cb, random_indices(rng, 4, 4))],
        scale=("row", "F16", [1.0, 2.0]),
        outliers=([1, 6], [9.0, -9.0]),
    )
    b.raw_tensor("n", "I32", np.array([1, 2, 3], dtype=np.int32))
    man = b.manifest()
    man["future_top_level"] = {"anything": [1, 2]}
    man["codebooks"][0]["future_codebook_field"] = "x"
    man["tensors"][0]["future_tensor_field"] = 1
    man["tensors"][0]["stages"][0]["future_stage_field"] = None
    man["tensors"][0]["scale"]["future_scale_field"] = True
    man["tensors"][0]["outliers"]["future_outliers_field"] = [0]
    v.valid(
        "hand_minor_version_2",
        lgn_file(b.pieces(), man, version="2.7", extra_metadata={"lgn.future": "ignored", "user": "kept"}),
        "lgn.version '2.7' (a newer minor of major 2) with outliers, unknown manifest fields at every level "
        "(the outliers object included) and an unknown lgn.* metadata key: accepted, the unknowns ignored",
    )

    # Major 1: `outliers` is an unknown member there, ignored whatever it holds.
    b = Builder()
    cb = b.codebook(rng.standard_normal(3 * 4), (2, 2))
    b.clustered_tensor("w", "F32", [3, 4], [(cb, random_indices(rng, 4, 3))])
    man = b.manifest()
    man["tensors"][0]["outliers"] = {"indices": "no.such.tensor", "values": 7}
    v.valid(
        "hand_version_1_outliers_ignored",
        lgn_file(b.pieces(), man, version="1.0"),
        "lgn.version '1.0' with a malformed `outliers` member naming no stored tensor: in a major-1 file it is an "
        "unknown member, ignored; the tensor decodes without outliers",
    )


# ---------------------------------------------------------------------------------------------
# Invalid vectors
# ---------------------------------------------------------------------------------------------


#: The outliers of ``w`` in the version 2.0 base file (``w`` has 35 elements).
BASE_OUTLIERS = ([0, 9, 20, 34], [-4.0, 0.5, 1000.0, 7.25])


def base_builder(outliers: bool = False) -> Builder:
    """The small valid file every invalid vector edits: two codebooks, one clustered tensor with
    two stages and row scales, two raw tensors. With ``outliers``, the tensor also has the
    outliers ``BASE_OUTLIERS`` (a version 2.0 file)."""
    rng = np.random.default_rng(7)
    b = Builder()
    c0 = b.codebook(rng.standard_normal(5 * 6), (2, 3))
    c1 = b.codebook(rng.standard_normal(2 * 6), (2, 3))
    b.clustered_tensor(
        "w",
        "F32",
        [5, 7],
        [(c0, random_indices(rng, 9, 5)), (c1, random_indices(rng, 9, 2))],
        scale=("row", "F16", [1, 0.5, 2, 0.25, 1.5]),
        outliers=BASE_OUTLIERS if outliers else None,
    )
    b.raw_tensor("b", "F32", rng.standard_normal(5).astype(np.float32))
    b.raw_tensor("n", "I64", np.array([1, -1], dtype=np.int64))
    return b


class Edit:
    """A base file taken apart (header JSON, manifest, stored tensor bytes) for editing."""

    def __init__(self, outliers: bool = False) -> None:
        b = base_builder(outliers)
        self.pieces = {p.name: p for p in b.pieces()}
        st_file(list(self.pieces.values()))  # apply the index padding once, then keep it
        for p in self.pieces.values():
            p.pad_to_8 = False
        self.order = list(self.pieces)
        self.manifest = b.manifest()
        self.version = b.version()
        self.metadata: dict[str, str] = {}

    def piece(self, name: str) -> Piece:
        return self.pieces[name]

    def set_data(self, name: str, data: bytes) -> None:
        self.pieces[name].data = data
        self.pieces[name].shape = [len(data) // DTYPE_SIZE[self.pieces[name].dtype]]

    def bytes(self, *, crc_overrides: dict[str, int] | None = None) -> bytes:
        pieces = [copy.copy(self.pieces[n]) for n in self.order]
        out = lgn_file(pieces, self.manifest, version=self.version, extra_metadata=self.metadata)
        if crc_overrides:
            header, data = split(out)
            man = json.loads(header["__metadata__"]["lgn.manifest"])
            man["crc32"].update(crc_overrides)
            header["__metadata__"]["lgn.manifest"] = dumps(man)
            out = header_bytes(header) + data
        return out


def reheader(buf: bytes, fn: Callable[[dict[str, Any]], Any]) -> bytes:
    """Applies ``fn`` to the parsed header (in place) and re-serialises it."""
    header, data = split(buf)
    fn(header)
    return header_bytes(header) + data


def with_manifest(buf: bytes, fn: Callable[[dict[str, Any]], Any]) -> bytes:
    def edit(h: dict[str, Any]) -> None:
        m = json.loads(h["__metadata__"]["lgn.manifest"])
        fn(m)
        h["__metadata__"]["lgn.manifest"] = dumps(m)

    return reheader(buf, edit)


def invalid_vectors(v: Vectors) -> None:
    base = Edit().bytes()
    (v.out / "invalid" / "_base.lgn").write_bytes(base)
    header, data = split(base)
    hdr_text = base[8 : 8 + struct.unpack("<Q", base[:8])[0]].decode()
    f = "FormatError"

    def inv(name: str, buf: bytes, desc: str, msg: list[str], error: str = f, at: str = "open") -> None:
        v.invalid(name, buf, error, desc, msg, at)

    # --- the envelope --------------------------------------------------------------------------
    inv("truncated_prefix", base[:5], "5-byte file: too short for the 8-byte header length", ["too short"])
    inv(
        "truncated_data",
        base[:-3],
        "the last 3 bytes cut off: a tensor's data_offsets run past the data section",
        ["`b`", "data_offsets"],
    )
    inv(
        "header_len_past_eof",
        struct.pack("<Q", len(base)) + base[8:],
        "the header length is larger than the file",
        ["header length", "past the end"],
    )
    inv(
        "header_len_over_limit",
        struct.pack("<Q", 100 * 1024 * 1024 + 1) + base[8:],
        "the header length exceeds the 100 MiB limit (checked before the file size)",
        ["header length", "limit"],
    )
    inv(
        "header_not_json",
        header_bytes('{"b": {"dtype": ') + data,
        "the header starts with '{' but is not JSON",
        ["header", "JSON"],
    )
    inv("header_not_utf8", struct.pack("<Q", 8) + b"{\xff\xfe}    " + data, "the header is not UTF-8", ["UTF-8"])
    inv("header_not_object", header_bytes("[1,2,3]") + data, "the header is a JSON array, not an object", ["header"])
    inv(
        "header_leading_space",
        header_bytes(" " + hdr_text.rstrip()) + data,
        "the header does not start with '{'",
        ["header"],
    )

    dup_entry = '"b":' + dumps(header["b"])
    inv(
        "duplicate_tensor_names",
        header_bytes(hdr_text.rstrip()[:-1] + "," + dup_entry + "}") + data,
        "the header names the stored tensor 'b' twice",
        ["duplicate", "`b`"],
    )

    def offsets(name: str, b_: int, e_: int) -> Callable[[dict[str, Any]], None]:
        def fn(h: dict[str, Any]) -> None:
            h[name]["data_offsets"] = [b_, e_]

        return fn

    sb, se = header["w.lgn.scale"]["data_offsets"]
    inv(
        "overlapping_offsets",
        reheader(base, offsets("w.lgn.scale", sb - 2, se - 2)),
        "the scale tensor's range starts 2 bytes inside the previous tensor",
        ["`w.lgn.scale`", "overlaps"],
    )
    bb, be = header["b"]["data_offsets"]
    inv(
        "hole_in_data",
        reheader(base + b"\0" * 4, offsets("b", bb + 4, be + 4)),
        "4 unused bytes between the last two tensors (the data section still ends with the last tensor)",
        ["`b`", "hole"],
    )
    inv("trailing_bytes", base + b"\0" * 8, "8 bytes after the last tensor that no tensor covers", ["trailing"])
    inv(
        "offset_out_of_range",
        reheader(base, offsets("b", header["b"]["data_offsets"][0], len(data) + 4)),
        "a tensor's end offset lies past the end of the data section",
        ["`b`", "data_offsets"],
    )
    inv(
        "offsets_reversed",
        reheader(base, offsets("b", header["b"]["data_offsets"][1], header["b"]["data_offsets"][0])),
        "a tensor's end offset is before its begin offset",
        ["`b`", "data_offsets"],
    )

    def entry(name: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
        def fn(h: dict[str, Any]) -> None:
            h[name][key] = value

        return fn

    inv(
        "shape_product_mismatch",
        reheader(base, entry("b", "shape", [6])),
        "F32 [6] needs 24 bytes but the range holds 20",
        ["`b`", "data_offsets", "needs 24"],
    )
    inv(
        "unknown_dtype",
        reheader(base, entry("b", "dtype", "Q7")),
        "a stored tensor of dtype 'Q7'",
        ["`b`", "dtype", "Q7"],
    )
    inv("negative_dim", reheader(base, entry("b", "shape", [-5])), "a negative dimension", ["`b`", "-5"])
    inv(
        "huge_dims_overflow",
        reheader(base, entry("b", "shape", [2**62, 2**62])),
        "dimensions whose product overflows 64 bits",
        ["`b`", "shape", "overflows"],
    )
    inv(
        "dim_not_u64",
        header_bytes(hdr_text.replace('"shape":[5]', '"shape":[18446744073709551621]')) + data,
        "a dimension larger than 2^64-1",
        ["`b`", "u64"],
    )
    inv(
        "rank_over_limit",
        reheader(base, entry("b", "shape", [1] * 32 + [5])),
        "rank 33 (the limit is 32)",
        ["`b`", "shape", "rank"],
    )
    inv(
        "unknown_entry_field",
        reheader(base, entry("b", "extra", 1)),
        "a header entry with a field besides dtype, shape and data_offsets",
        ["`b`", "extra"],
    )
    inv(
        "metadata_not_strings",
        reheader(base, lambda h: h["__metadata__"].update({"user": 1})),
        "a __metadata__ value that is not a string",
        ["header", "string"],
    )

    # --- versions ------------------------------------------------------------------------------
    e = Edit()
    e.version = "3.0"
    inv(
        "version_major_3",
        e.bytes(),
        "lgn.version '3.0': a newer major version",
        ["3.0"],
        error="UnsupportedVersionError",
    )
    e.version = "0.9"
    inv(
        "version_major_0",
        e.bytes(),
        "lgn.version '0.9': an unknown older major version",
        ["0.9"],
        error="UnsupportedVersionError",
    )
    e.version = "1"
    inv("version_malformed", e.bytes(), "lgn.version '1' is not MAJOR.MINOR", ["lgn.version"])
    inv(
        "manifest_without_version",
        reheader(base, lambda h: h["__metadata__"].pop("lgn.version")),
        "lgn.manifest present, lgn.version missing",
        ["lgn.version"],
    )
    inv(
        "version_without_manifest",
        reheader(base, lambda h: h["__metadata__"].pop("lgn.manifest")),
        "lgn.version present, lgn.manifest missing",
        ["lgn.manifest"],
    )

    # --- the manifest --------------------------------------------------------------------------
    inv(
        "manifest_not_json",
        reheader(base, lambda h: h["__metadata__"].update({"lgn.manifest": "{codebooks: []"})),
        "lgn.manifest is not JSON",
        ["lgn.manifest"],
    )
    inv(
        "manifest_missing_crc32",
        with_manifest(base, lambda m: m.pop("crc32")),
        "the manifest has no crc32 field",
        ["lgn.manifest", "crc32"],
    )
    # JSON arrays where the spec has objects (serde's derived parsing would take them).
    inv(
        "codebook_not_object",
        with_manifest(base, lambda m: m["codebooks"].__setitem__(1, ["lgn.codebook.1", 2, 1, [2, 3]])),
        "a codebook written as a JSON array of its values instead of an object",
        ["codebooks[1]", "object"],
    )
    inv(
        "stage_not_object",
        with_manifest(base, lambda m: m["tensors"][0]["stages"].__setitem__(1, [1, "w.lgn.idx1"])),
        "a stage written as a JSON array instead of an object",
        ["tensors[0].stages[1]", "object"],
    )
    inv(
        "scale_not_object",
        with_manifest(base, lambda m: m["tensors"][0].update({"scale": ["row", "w.lgn.scale"]})),
        "scales written as a JSON array instead of an object",
        ["tensors[0].scale", "object"],
    )
    inv(
        "manifest_unknown_encoding",
        with_manifest(base, lambda m: m["tensors"][1].update({"encoding": "lzma"})),
        "a tensor with encoding 'lzma'",
        ["lgn.manifest", "lzma"],
    )

    def mtensor(i: int, **kv: Any) -> Callable[[dict[str, Any]], None]:
        return lambda m: m["tensors"][i].update(kv)

    def stage(i: int, s: int, **kv: Any) -> Callable[[dict[str, Any]], None]:
        return lambda m: m["tensors"][i]["stages"][s].update(kv)

    def mcodebook(i: int, **kv: Any) -> Callable[[dict[str, Any]], None]:
        return lambda m: m["codebooks"][i].update(kv)

    inv(
        "manifest_missing_tensor",
        with_manifest(base, stage(0, 1, indices="w.lgn.idx7")),
        "a stage names the stored tensor 'w.lgn.idx7', which does not exist",
        ["`w`", "`w.lgn.idx7`", "does not exist"],
    )
    e = Edit()
    e.pieces["extra"] = Piece("extra", "U8", [3], b"abc")
    e.order.append("extra")
    inv(
        "stored_tensor_unreferenced",
        e.bytes(),
        "a stored tensor the manifest does not reference",
        ["`extra`", "not referenced"],
    )
    inv(
        "stored_tensor_used_twice",
        with_manifest(base, stage(0, 1, indices="w.lgn.idx0")),
        "two stages use the same stored index tensor",
        ["`w`", "`w.lgn.idx0`", "twice"],
    )
    inv(
        "duplicate_manifest_tensor",
        with_manifest(base, lambda m: m["tensors"].append(dict(m["tensors"][1]))),
        "the manifest lists the original tensor 'b' twice",
        ["`b`"],
    )
    inv(
        "manifest_unknown_dtype",
        with_manifest(base, mtensor(0, dtype="F8")),
        "an original tensor of dtype 'F8'",
        ["`w`", "dtype", "F8"],
    )
    inv(
        "raw_entry_mismatch",
        with_manifest(base, mtensor(1, shape=[1, 5])),
        "a raw tensor whose manifest shape differs from the stored tensor's",
        ["`b`", "shape"],
    )
    inv(
        "clustered_int_dtype",
        with_manifest(base, mtensor(0, dtype="I32")),
        "a clustered tensor of dtype I32 (only F32, F16 and BF16 can be clustered)",
        ["`w`", "I32"],
    )
    inv(
        "clustered_rank1",
        with_manifest(base, mtensor(0, shape=[35])),
        "a clustered tensor of rank 1 (a block grid needs rank >= 2)",
        ["`w`", "shape", "rank"],
    )
    inv(
        "manifest_shape_overflow",
        with_manifest(base, mtensor(0, shape=[2**40, 2**40])),
        "a clustered tensor whose shape overflows",
        ["`w`", "shape", "overflows"],
    )

    # Codebooks.
    inv(
        "bits_inconsistent_with_k",
        with_manifest(base, mcodebook(0, bits=4)),
        "codebook 0 has k=5 but bits=4 (must be ceil(log2 k) = 3)",
        ["`lgn.codebook.0`", "bits=4", "needs 3"],
    )
    inv(
        "k_too_small",
        with_manifest(base, mcodebook(1, k=1, bits=1)),
        "a codebook with k=1",
        ["`lgn.codebook.1`", "k=1"],
    )
    inv(
        "k_too_large",
        with_manifest(base, mcodebook(1, k=65537, bits=17)),
        "a codebook with k=65537",
        ["`lgn.codebook.1`", "k=65537"],
    )
    inv(
        "block_too_large",
        with_manifest(base, mcodebook(0, block=[9, 1])),
        "block side 9 (sides are 1..8)",
        ["`lgn.codebook.0`", "block"],
    )
    inv("block_zero", with_manifest(base, mcodebook(0, block=[0, 3])), "block side 0", ["`lgn.codebook.0`", "block"])
    inv(
        "codebook_wrong_shape",
        with_manifest(base, mcodebook(0, block=[3, 2])),
        "codebook 0 is stored as F32 [5, 2, 3] but the manifest says block [3, 2]",
        ["`lgn.codebook.0`", "[5, 3, 2]"],
    )
    e = Edit()
    e.pieces["lgn.codebook.1"].dtype = "F16"
    e.set_data("lgn.codebook.1", np.zeros(12, dtype="<f2").tobytes())
    e.pieces["lgn.codebook.1"].shape = [2, 2, 3]
    inv("codebook_wrong_dtype", e.bytes(), "a codebook stored as F16 (codebooks are F32)", ["`lgn.codebook.1`", "F32"])
    e = Edit()
    cbv = np.frombuffer(e.piece("lgn.codebook.0").data, "<f4").copy()
    cbv[7] = np.nan
    e.pieces["lgn.codebook.0"].data = cbv.tobytes()
    inv("codebook_not_finite", e.bytes(), "a NaN codeword value (checksum updated)", ["`lgn.codebook.0`", "finite"])
    inv(
        "stage_codebook_out_of_range",
        with_manifest(base, stage(0, 1, codebook=2)),
        "a stage names codebook 2 of 2",
        ["`w`", "codebook 2"],
    )
    e = Edit()
    e.manifest["codebooks"][1]["block"] = [3, 2]
    e.pieces["lgn.codebook.1"].shape = [2, 3, 2]
    inv(
        "stages_block_mismatch",
        e.bytes(),
        "the two stages of a tensor use codebooks of different block shapes (2x3 and 3x2)",
        ["`w`", "block"],
    )
    inv(
        "zero_stages",
        with_manifest(base, mtensor(0, stages=[])),
        "a clustered tensor with no stages",
        ["`w`", "stages"],
    )
    e = Edit()
    stages = []
    for s in range(17):
        name = f"w.lgn.idx{s}"
        if name not in e.pieces:
            e.pieces[name] = Piece(name, "U8", [8], b"\0" * 8)
            e.order.insert(e.order.index("b"), name)
        stages.append({"codebook": 1, "indices": name})
    e.manifest["tensors"][0]["stages"] = stages
    inv("too_many_stages", e.bytes(), "17 residual stages (the limit is 16)", ["`w`", "stages", "16"])

    # Index tensors.
    e = Edit()
    e.set_data("w.lgn.idx0", e.piece("w.lgn.idx0").data[:3])
    e.pieces["w.lgn.idx0"].shape = [3]
    inv(
        "indices_too_short",
        e.bytes(),
        "9 blocks of 3 bits need 4 bytes of indices; 3 are stored",
        ["`w`", "stages[0]", "indices"],
    )
    e = Edit()
    e.set_data("w.lgn.idx1", e.piece("w.lgn.idx1").data + b"\0" * 16)
    inv(
        "indices_too_long",
        e.bytes(),
        "an index tensor 8 or more bytes longer than the packed indices need",
        ["`w`", "stages[1]", "indices"],
    )
    e = Edit()
    e.pieces["w.lgn.idx0"].dtype = "I8"
    inv("indices_not_u8", e.bytes(), "an index tensor of dtype I8 (must be U8)", ["`w`", "stages[0]", "U8"])
    e = Edit()
    p = e.pieces["w.lgn.idx0"]
    p.shape = [2, len(p.data) // 2]
    inv("indices_rank2", e.bytes(), "an index tensor of rank 2 (must be 1-D)", ["`w`", "stages[0]", "U8"])
    e = Edit()
    idx = np.zeros(9, dtype=np.int64)
    idx[4] = 7  # k = 5
    e.set_data("w.lgn.idx0", pack(idx, 3) + e.piece("w.lgn.idx0").data[4:])
    inv(
        "index_out_of_range",
        e.bytes(),
        "block 4 of stage 0 holds index 7 but codebook 0 has k=5 (checksum updated): found when decoding or verifying",
        ["`w`", "index 7", "block 4", "k=5"],
        at="decode",
    )

    # Scales.
    e = Edit()
    e.set_data("w.lgn.scale", np.ones(4, dtype="<f2").tobytes())
    inv("scale_wrong_length", e.bytes(), "4 row scales for a tensor of 5 rows", ["`w`", "scale", "[5]"])
    inv(
        "scale_tensor_mode_length",
        with_manifest(base, lambda m: m["tensors"][0]["scale"].update({"mode": "tensor"})),
        "mode 'tensor' needs one scale; 5 are stored",
        ["`w`", "scale", "[1]"],
    )
    e = Edit()
    e.pieces["w.lgn.scale"].dtype = "BF16"
    inv("scale_wrong_dtype", e.bytes(), "scales stored as BF16 (must be F16 or F32)", ["`w`", "scale", "F16 or F32"])
    inv(
        "scale_mode_unknown",
        with_manifest(base, lambda m: m["tensors"][0]["scale"].update({"mode": "column"})),
        "scale mode 'column'",
        ["`w`", "scale", "column"],
    )
    inv(
        "scale_mode_none",
        with_manifest(base, lambda m: m["tensors"][0]["scale"].update({"mode": "none"})),
        "scale mode 'none' (no scaling is written as no scale entry)",
        ["`w`", "scale", "none"],
    )

    # Checksums.
    e = Edit()
    d = bytearray(e.piece("w.lgn.idx1").data)
    d[0] ^= 0x01
    good = zlib.crc32(e.piece("w.lgn.idx1").data)
    e.pieces["w.lgn.idx1"].data = bytes(d)
    inv(
        "crc_mismatch_indices",
        e.bytes(crc_overrides={"w.lgn.idx1": good}),
        "one bit of an index tensor flipped after the checksum was computed",
        ["`w.lgn.idx1`"],
        error="ChecksumError",
        at="decode",
    )
    e = Edit()
    good = zlib.crc32(e.piece("n").data)
    e.pieces["n"].data = e.piece("n").data[:-1] + b"\x7f"
    inv(
        "crc_mismatch_raw",
        e.bytes(crc_overrides={"n": good}),
        "a byte of a raw tensor changed after the checksum was computed",
        ["`n`"],
        error="ChecksumError",
        at="decode",
    )
    e = Edit()
    good = zlib.crc32(e.piece("w.lgn.scale").data)
    e.pieces["w.lgn.scale"].data = b"\x00\x40" + e.piece("w.lgn.scale").data[2:]
    inv(
        "crc_mismatch_scale",
        e.bytes(crc_overrides={"w.lgn.scale": good}),
        "a scale changed after the checksum was computed",
        ["`w.lgn.scale`"],
        error="ChecksumError",
        at="decode",
    )
    e = Edit()
    good = zlib.crc32(e.piece("lgn.codebook.1").data)
    cbv = np.frombuffer(e.piece("lgn.codebook.1").data, "<f4").copy()
    cbv[0] += 1
    e.pieces["lgn.codebook.1"].data = cbv.tobytes()
    inv(
        "crc_mismatch_codebook",
        e.bytes(crc_overrides={"lgn.codebook.1": good}),
        "a codeword changed after the checksum was computed: codebooks are checked when the file is opened",
        ["`lgn.codebook.1`"],
        error="ChecksumError",
        at="open",
    )
    inv(
        "crc_missing",
        with_manifest(base, lambda m: m["crc32"].pop("b")),
        "no checksum for the stored tensor 'b'",
        ["`b`", "crc32"],
    )
    inv(
        "crc_unknown_tensor",
        with_manifest(base, lambda m: m["crc32"].update({"ghost": 0})),
        "a checksum for a stored tensor that does not exist",
        ["`ghost`", "crc32"],
    )
    inv(
        "crc_not_u32",
        with_manifest(base, lambda m: m["crc32"].update({"b": 2**32})),
        "a checksum that does not fit in 32 bits",
        ["lgn.manifest", "u32"],
    )

    # --- outliers (version 2.0) ----------------------------------------------------------------
    base2 = Edit(outliers=True).bytes()
    (v.out / "invalid" / "_base_outliers.lgn").write_bytes(base2)

    def outlier_positions(positions: list[int], values: list[float] | None = None) -> Edit:
        e = Edit(outliers=True)
        e.set_data("w.lgn.outlier_index", np.array(positions, dtype="<u4").tobytes())
        vals = values if values is not None else [float(i) for i in range(len(positions))]
        e.set_data("w.lgn.outlier_value", np.array(vals, dtype="<f4").tobytes())
        return e

    inv(
        "outliers_not_increasing",
        outlier_positions([0, 20, 9, 34]).bytes(),
        "outlier positions [0, 20, 9, 34]: not increasing (found when decoding or verifying)",
        ["`w`", "outliers.indices", "increasing"],
        at="decode",
    )
    inv(
        "outliers_duplicate_index",
        outlier_positions([0, 9, 9, 34]).bytes(),
        "outlier positions [0, 9, 9, 34]: a position repeated (they must be strictly increasing)",
        ["`w`", "outliers.indices", "increasing"],
        at="decode",
    )
    inv(
        "outliers_index_out_of_range",
        outlier_positions([0, 9, 20, 35]).bytes(),
        "outlier position 35 in a tensor of 35 elements (positions are < product(shape))",
        ["`w`", "outliers.indices", "out of range"],
        at="decode",
    )
    for dt, np_dt in (("I32", "<i4"), ("U64", "<u8")):
        e = Edit(outliers=True)
        e.pieces["w.lgn.outlier_index"].dtype = dt
        e.set_data("w.lgn.outlier_index", np.array(BASE_OUTLIERS[0], dtype=np_dt).tobytes())
        inv(
            f"outliers_indices_{dt.lower()}",
            e.bytes(),
            f"outlier positions stored as {dt} (they must be U32)",
            ["`w`", "outliers.indices", "U32"],
        )
    e = Edit(outliers=True)
    e.pieces["w.lgn.outlier_value"].dtype = "F16"
    e.set_data("w.lgn.outlier_value", np.array(BASE_OUTLIERS[1], dtype="<f2").tobytes())
    inv(
        "outliers_values_f16",
        e.bytes(),
        "outlier values stored as F16 (they must be F32)",
        ["`w`", "outliers.values", "F32"],
    )
    inv(
        "outliers_length_mismatch",
        outlier_positions([0, 9, 20, 34], [1.0, 2.0, 3.0]).bytes(),
        "4 outlier positions but 3 outlier values",
        ["`w`", "outliers.values"],
    )
    e = Edit(outliers=True)
    e.pieces["w.lgn.outlier_index"].shape = [2, 2]
    inv(
        "outliers_indices_rank2",
        e.bytes(),
        "outlier positions stored as U32 [2, 2] (they must be rank 1)",
        ["`w`", "outliers.indices", "U32"],
    )
    inv(
        "outliers_more_than_elements",
        outlier_positions(list(range(36))).bytes(),
        "36 outliers in a tensor of 35 elements (n must not exceed product(shape)): found at open, from the shape",
        ["`w`", "outliers", "36"],
    )

    def moutliers(value: Any) -> Callable[[dict[str, Any]], None]:
        return lambda m: m["tensors"][0].update({"outliers": value})

    inv(
        "outliers_missing_values",
        with_manifest(base2, moutliers({"indices": "w.lgn.outlier_index"})),
        "an outliers object without `values`",
        ["`w`", "outliers"],
    )
    inv(
        "outliers_not_object",
        with_manifest(base2, moutliers(["w.lgn.outlier_index", "w.lgn.outlier_value"])),
        "an outliers member that is an array, not an object",
        ["`w`", "outliers"],
    )
    inv(
        "outliers_values_not_string",
        with_manifest(base2, moutliers({"indices": "w.lgn.outlier_index", "values": 3})),
        "an outliers object whose `values` is a number, not a stored tensor name",
        ["`w`", "outliers"],
    )
    e = Edit(outliers=True)
    del e.pieces["w.lgn.outlier_value"]
    e.order.remove("w.lgn.outlier_value")
    inv(
        "outliers_missing_stored_tensor",
        e.bytes(),
        "the outliers name the stored tensor 'w.lgn.outlier_value', which does not exist",
        ["`w`", "`w.lgn.outlier_value`", "does not exist"],
    )
    # A second clustered tensor `w2` (a copy of `w`) whose outliers use `w`'s stored positions.
    e = Edit(outliers=True)
    w2 = json.loads(json.dumps(e.manifest["tensors"][0]).replace('"w.lgn.', '"w2.lgn.'))
    w2["name"] = "w2"
    w2["outliers"]["indices"] = "w.lgn.outlier_index"
    e.manifest["tensors"].insert(1, w2)
    for name in ("w.lgn.outlier_value", "w.lgn.scale", "w.lgn.idx0", "w.lgn.idx1"):
        copied = copy.copy(e.pieces[name])
        copied.name = name.replace("w.lgn.", "w2.lgn.")
        e.pieces[copied.name] = copied
        e.order.insert(e.order.index("b"), copied.name)
    inv(
        "outliers_indices_shared",
        e.bytes(),
        "two clustered tensors whose outliers use the same stored tensor of positions",
        ["`w2`", "`w.lgn.outlier_index`", "twice"],
    )
    e = Edit(outliers=True)
    e.version = "1.0"
    inv(
        "outliers_in_version_1",
        e.bytes(),
        "an outliers member in a '1.0' file: unknown in major 1 and ignored, so its stored tensors are unreferenced",
        ["w.lgn.outlier_", "not referenced"],
    )
    e = Edit(outliers=True)
    good = zlib.crc32(e.piece("w.lgn.outlier_value").data)
    vals = np.frombuffer(e.piece("w.lgn.outlier_value").data, "<f4").copy()
    vals[2] = -vals[2]
    e.pieces["w.lgn.outlier_value"].data = vals.tobytes()
    inv(
        "crc_mismatch_outlier_values",
        e.bytes(crc_overrides={"w.lgn.outlier_value": good}),
        "an outlier value changed after the checksum was computed",
        ["`w.lgn.outlier_value`"],
        error="ChecksumError",
        at="decode",
    )
    e = Edit(outliers=True)
    good = zlib.crc32(e.piece("w.lgn.outlier_index").data)
    e.set_data("w.lgn.outlier_index", np.array([0, 9, 20, 2**31 + 34], dtype="<u4").tobytes())
    inv(
        "crc_mismatch_outlier_indices",
        e.bytes(crc_overrides={"w.lgn.outlier_index": good}),
        "bit 31 of an outlier position flipped after the checksum was computed (now out of range): the checksum "
        "is checked before the positions are interpreted",
        ["`w.lgn.outlier_index`"],
        error="ChecksumError",
        at="decode",
    )


def clarified_valid_vectors(v: Vectors) -> None:
    """Valid files for the rules spec/lgn.md settles where a second implementer had to guess (issue 17)."""
    rng = np.random.default_rng(20261208)

    # Raw bytes are not interpreted: BOOL bytes other than 0 and 1 come back unchanged.
    b = Builder()
    cb = b.codebook(rng.standard_normal(2 * 2), (1, 2))
    b.clustered_tensor("w", "F32", [2, 4], [(cb, random_indices(rng, 4, 2))])
    b.entries.append({"name": "flags", "dtype": "BOOL", "shape": [2, 3], "encoding": "raw"})
    b.raw.append(Piece("flags", "BOOL", [2, 3], bytes([0, 1, 2, 0x7F, 0x80, 0xFF])))
    v.valid(
        "hand_bool_bytes",
        b.build(),
        "a raw BOOL tensor holding the bytes 00 01 02 7F 80 FF: raw tensors are not interpreted, so a reader "
        "returns those bytes unchanged (writers write only 0 and 1)",
    )

    # Readers infer nothing from stored names: a stored tensor may carry a clustered tensor's own name.
    b = Builder()
    cb = b.codebook(rng.standard_normal(3 * 4), (2, 2))
    b.clustered_tensor("w", "F32", [4, 4], [(cb, random_indices(rng, 4, 3))], scale=("row", "F16", [1, 2, 3, 4]))
    pieces = b.pieces()
    for piece in pieces:
        if piece.name == "w.lgn.idx0":
            piece.name = "w"
    man = b.manifest()
    man["tensors"][0]["stages"][0]["indices"] = "w"
    v.valid(
        "hand_stored_name_of_clustered",
        lgn_file(pieces, man),
        "the index tensor of the clustered tensor `w` is stored under the name `w` (legofmt would write "
        "`w.lgn.idx0`): the manifest's references decide, names mean nothing to a reader",
    )

    # Members that exist only for clustered tensors are not members of a raw tensor: ignored, whatever they hold.
    b = Builder()
    cb = b.codebook(rng.standard_normal(2 * 2), (2, 1))
    b.clustered_tensor(
        "w", "F32", [3, 2], [(cb, random_indices(rng, 4, 2))], outliers=([1], [-2.0])
    )  # version 2.0, so `outliers` is a member of clustered tensors
    b.raw_tensor("r", "F32", rng.standard_normal(3).astype(np.float32))
    man = b.manifest()
    man["tensors"][1].update(
        {"stages": [{"codebook": 7, "indices": "no.such.tensor"}], "scale": "row", "outliers": None}
    )
    v.valid(
        "hand_raw_with_clustered_members",
        lgn_file(b.pieces(), man, version="2.0"),
        "a raw tensor carrying `stages` (naming a missing codebook and stored tensor), `scale` (a string) and "
        "`outliers` (null): members of clustered tensors only, so on a raw tensor they are unknown members, "
        "ignored whatever they hold",
    )

    # JSON nesting: 127 levels are allowed (here in an unknown member of a newer minor version).
    b = Builder()
    cb = b.codebook(rng.standard_normal(2 * 2), (1, 2))
    b.clustered_tensor("w", "F32", [2, 4], [(cb, random_indices(rng, 4, 2))])
    man = b.manifest()
    deep: Any = []
    for _ in range(126 - 1):
        deep = [deep]
    man["future"] = deep  # the manifest object and 126 arrays: 127 levels
    v.valid(
        "hand_json_depth_127",
        lgn_file(b.pieces(), man, version="1.1"),
        "a manifest nested 127 levels deep (an unknown member holding 126 nested arrays): the deepest nesting "
        "a reader must accept",
    )

    # NaN results: their bits are unspecified (compare as 'some NaN'); F32 outliers keep their exact bits.
    b = Builder()
    big = b.codebook([3.0e38, 1.0, -3.0e38, 0.0], (1, 1))
    also_big = b.codebook([3.0e38, 2.0], (1, 1))
    b.clustered_tensor(
        "nan.sum",
        "F32",
        [3, 2],
        [(big, [0, 0, 0, 1, 2, 2]), (also_big, [0, 1, 0, 1, 0, 0])],
        scale=("row", "F32", [0.0, 1.0, -1.0]),
    )  # row 0: inf * 0 = NaN, 3e38 * 0 = 0; row 1: inf, 3; row 2: -0 (-3e38 + 3e38) * -1 = -0, -inf * -1 = inf
    b.clustered_tensor(
        "nan.scales.f16",
        "F16",
        [4, 2],
        [(big, [1, 3, 1, 3, 1, 3, 1, 1])],
        scale=("row", "F16", [np.nan, np.inf, -np.inf, 0.5]),
    )  # row 0: NaN; row 1: inf, inf * 0 = NaN; row 2: -inf, NaN; row 3: 0.5, 0.5
    b.clustered_tensor(
        "nan.scales.bf16",
        "BF16",
        [2, 2],
        [(big, [1, 3, 0, 1])],
        scale=("tensor", "F32", [np.inf]),
    )  # inf, NaN, inf, inf
    nan_bits = np.array([0x7FC0BEEF, 0xFFC00001, 0x7F800000, 0xFF800000], dtype="<u4").view("<f4")
    b.clustered_tensor(
        "nan.outliers.f32", "F32", [2, 3], [(big, [1, 3, 1, 3, 1, 3])], outliers=([0, 2, 4, 5], nan_bits)
    )
    b.clustered_tensor("nan.outliers.f16", "F16", [2, 3], [(big, [1, 3, 1, 3, 1, 3])], outliers=([1, 3], nan_bits[:2]))
    v.valid(
        "hand_nan_results",
        b.build(),
        "results that are NaN (version 2.0): stage sums overflowing to infinity times a zero scale, F16 scales "
        "NaN, +inf and -inf (non-finite scales are applied as stored), an F32 tensor scale of +inf, outliers "
        "holding NaN with payloads; NaN from arithmetic and NaN converted to F16 have unspecified bits (any NaN "
        "matches), an F32 outlier keeps its exact bits (0x7FC0BEEF, 0xFFC00001)",
        nan_bits_unspecified=["nan.outliers.f16", "nan.scales.bf16", "nan.scales.f16", "nan.sum"],
    )


def clarified_invalid_vectors(v: Vectors) -> None:
    """Invalid files for the rules spec/lgn.md settles where a second implementer had to guess (issue 17)."""
    base = (v.out / "invalid" / "_base.lgn").read_bytes()
    base2 = (v.out / "invalid" / "_base_outliers.lgn").read_bytes()
    data = split(base)[1]
    hdr_text = base[8 : 8 + struct.unpack("<Q", base[:8])[0]].decode().rstrip()
    f = "FormatError"

    def inv(name: str, buf: bytes, desc: str, msg: list[str], error: str = f, at: str = "open") -> None:
        v.invalid(name, buf, error, desc, msg, at)

    def manifest_text(buf: bytes, fn: Callable[[str], str]) -> bytes:
        """Edits the manifest as text (for what json.dumps cannot write: duplicate keys, NaN, -0)."""

        def edit(h: dict[str, Any]) -> None:
            h["__metadata__"]["lgn.manifest"] = fn(h["__metadata__"]["lgn.manifest"])

        return reheader(buf, edit)

    def with_zero_size(shape: list[int]) -> Edit:
        """The base file plus a raw zero-size U8 tensor `z` of ``shape``, stored last."""
        e = Edit()
        e.pieces["z"] = Piece("z", "U8", shape, b"")
        e.order.append("z")
        e.manifest["tensors"].append({"name": "z", "dtype": "U8", "shape": shape, "encoding": "raw"})
        return e

    # --- the envelope --------------------------------------------------------------------------
    inv(
        "dim_fractional",
        header_bytes(hdr_text.replace('"shape":[5]', '"shape":[2.5]')) + data,
        "a header dimension written 2.5",
        ["`b`", "header", "2.5"],
    )
    inv(
        "dim_integral_float",
        header_bytes(hdr_text.replace('"shape":[5]', '"shape":[5.0]')) + data,
        "a header dimension written 5.0: integers are written without fraction or exponent, even when the value "
        "is whole",
        ["`b`", "header", "5.0"],
    )
    inv(
        "entry_missing_member",
        reheader(base, lambda h: h["b"].pop("data_offsets")),
        "a header entry without `data_offsets`",
        ["`b`", "data_offsets"],
    )
    e = with_zero_size([0])
    e.pieces["z"].dtype = "F32"
    e.pieces["z"].shape = e.manifest["tensors"][-1]["shape"] = [2**63, 4, 0]
    e.manifest["tensors"][-1]["dtype"] = "F32"
    inv(
        "shape_overflow_before_zero_dim",
        e.bytes(),
        "F32 [2^63, 4, 0]: 0 elements, but the byte size multiplied left to right (4 x 2^63 ...) overflows 64 bits "
        "before the zero dimension is reached",
        ["`z`", "shape", "overflows"],
    )

    def zero_inside(h: dict[str, Any]) -> None:
        begin = h["b"]["data_offsets"][0]
        h["z"]["data_offsets"] = [begin + 4, begin + 4]

    inv(
        "zero_size_inside_range",
        reheader(with_zero_size([0]).bytes(), zero_inside),
        "a zero-size tensor whose offsets [begin + 4, begin + 4] fall inside the range of the raw tensor 'b'",
        ["`z`", "data_offsets", "overlaps"],
    )
    zbuf = with_zero_size([0]).bytes()
    ztext = zbuf[8 : 8 + struct.unpack("<Q", zbuf[:8])[0]].decode().rstrip()
    assert ztext.count('"shape":[0]') == 1
    inv(
        "dim_negative_zero",
        header_bytes(ztext.replace('"shape":[0]', '"shape":[-0]')) + split(zbuf)[1],
        "a header dimension written -0 (a non-negative integer is written without a sign)",
        ["`z`", "header", "-0"],
    )
    inv(
        "metadata_duplicate_key",
        header_bytes(hdr_text.replace('"lgn.manifest":', '"user":"a","user":"b","lgn.manifest":', 1)) + data,
        "__metadata__ with the user key 'user' twice (no duplicate member names at any level of the header)",
        ["header", "duplicate"],
    )
    inv(
        "header_lone_surrogate",
        header_bytes(hdr_text.replace('"lgn.manifest":', '"user":"\\ud800","lgn.manifest":', 1)) + data,
        "a user metadata value holding the escape \\ud800, a lone surrogate (JSON strings are Unicode scalar values)",
        ["header"],
    )

    # --- the manifest obeys the same JSON rules --------------------------------------------------
    inv(
        "manifest_duplicate_crc32_key",
        manifest_text(base, lambda t: t.replace('"crc32":{', '"crc32":{"b":0,', 1)),
        "the manifest's crc32 object has the key 'b' twice (the second with the right value)",
        ["lgn.manifest", "duplicate"],
    )
    inv(
        "manifest_duplicate_member",
        manifest_text(base, lambda t: t.replace('"name":"b"', '"name":"b","name":"b"', 1)),
        "a manifest tensor object with the member `name` twice",
        ["lgn.manifest", "duplicate"],
    )
    inv(
        "manifest_duplicate_unknown_member",
        manifest_text(base, lambda t: t[:-1] + ',"future":1,"future":2}'),
        "the manifest object with an unknown member twice (unknown members are ignored, duplicates are not)",
        ["lgn.manifest", "duplicate"],
    )
    inv(
        "manifest_integral_float",
        manifest_text(base, lambda t: t.replace('"k":5', '"k":5.0', 1)),
        "a codebook's k written 5.0 (a JSON Schema validator accepts it as an integer; the spec does not)",
        ["lgn.manifest", "5.0"],
    )
    inv(
        "manifest_integer_exponent",
        manifest_text(base, lambda t: t.replace('"k":5', '"k":5e0', 1)),
        "a codebook's k written 5e0",
        ["lgn.manifest"],
    )
    inv(
        "manifest_negative_zero",
        manifest_text(base, lambda t: t.replace('"codebook":0', '"codebook":-0', 1)),
        "a stage's codebook written -0",
        ["lgn.manifest", "-0"],
    )
    inv(
        "manifest_nan_literal",
        manifest_text(base, lambda t: t[:-1] + ',"future":NaN}'),
        "an unknown manifest member holding NaN, which is not JSON",
        ["lgn.manifest"],
    )
    inv(
        "manifest_lone_surrogate",
        manifest_text(base, lambda t: t[:-1] + ',"future":"\\udc00"}'),
        "an unknown manifest member holding the escape \\udc00, a lone surrogate",
        ["lgn.manifest"],
    )
    deep = "[" * 127 + "]" * 127
    inv(
        "manifest_nested_too_deep",
        manifest_text(base, lambda t: t[:-1] + ',"future":' + deep + "}"),
        "a manifest nested 128 levels deep (an unknown member holding 127 nested arrays; the limit is 127)",
        ["lgn.manifest"],
    )
    inv(
        "manifest_dim_over_u64",
        manifest_text(base, lambda t: t.replace('"shape":[5]', '"shape":[18446744073709551616]', 1)),
        "a manifest dimension of 2^64 (dimensions are integers in 0 ..= 2^64-1, as in the header)",
        ["lgn.manifest"],
    )
    inv(
        "manifest_rank_over_limit",
        with_manifest(base, lambda m: m["tensors"][0].update({"shape": [5, 7] + [1] * 31})),
        "a clustered tensor of rank 33 in the manifest (the limit is 32)",
        ["`w`", "shape", "rank"],
    )

    # --- optional members: present means present ------------------------------------------------
    inv(
        "scale_null",
        with_manifest(base, lambda m: m["tensors"][0].update({"scale": None})),
        'a clustered tensor with "scale": null (null is not absence: an unscaled tensor has no scale member)',
        ["tensors[0].scale", "object"],
    )
    e = Edit()
    e.version = "2.0"
    e.manifest["tensors"][0]["outliers"] = None
    inv(
        "outliers_null",
        e.bytes(),
        'a clustered tensor with "outliers": null in a 2.0 file (null is not absence)',
        ["`w`", "outliers"],
    )
    inv(
        "outliers_missing_indices",
        with_manifest(base2, lambda m: m["tensors"][0].update({"outliers": {"values": "w.lgn.outlier_value"}})),
        "an outliers object without `indices`",
        ["`w`", "outliers"],
    )


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------

README_HEAD = """# .lgn conformance vectors

Generated by `generate.py` (deterministic; do not edit by hand: edit the script and run
`python spec/vectors/generate.py`). The format is specified in [`../lgn.md`](../lgn.md).

* `valid/NAME.lgn` (or `.safetensors`): a valid file. `valid/NAME.expected.safetensors` holds
  every tensor a reader must return, decoded, in its original dtype, shape and name (a plain
  safetensors file). A conforming reader decodes each tensor **bit for bit** equal to it, with
  the one exception of `../lgn.md` section 9: in the tensors a vector lists under
  `nan_bits_unspecified` (NaN from arithmetic, or converted to F16/BF16), a NaN matches any NaN.
* `invalid/NAME.lgn`: an invalid file. A conforming reader must reject it with the error class
  listed (Python: `legofmt.<class>`, a subclass of `legofmt.LgnError`; Rust: the
  `LgnError` variant of the same name without `Error`) and a message containing every listed
  word. *At* says when legofmt's lazy reader finds the problem: `open` (opening validates the
  envelope, the manifest and the codebooks) or `decode` (opening succeeds; decoding the tensor
  that uses the bad bytes, and `verify`, must fail). Readers that validate eagerly may report
  `decode` errors at open.
* `invalid/_base.lgn` is the valid file the invalid vectors are edited from, and
  `invalid/_base_outliers.lgn` (version 2.0: the same file with outliers) the one the
  `outliers_*` vectors are edited from (neither is a vector).
* `manifest.json` lists every vector for the test suites: `file`, `valid`, then `expected`, or
  `error`, `message_contains` and `detected_at`, and `description`; a valid vector may add
  `nan_bits_unspecified` (the tensors where any NaN matches).

The test suites run every vector: `tests/test_vectors.py` (legofmt, the reference decoder
`../lgn_decoder.py` and `safetensors.safe_open`), `tests/test_spec_decoder.py` (the reference
decoder alone, message words and the open/decode split included) and
`rust/legofmt/tests/vectors.rs` (`LgnFile`).
"""


def write_readme(v: Vectors) -> None:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = [README_HEAD, "## Valid vectors\n", "| file | covers | expected |", "|---|---|---|"]
    for e in v.entries:
        if e["valid"]:
            lines.append(f"| `{e['file']}` | {esc(e['description'])} | `{e['expected']}` |")
    lines += ["", "## Invalid vectors\n", "| file | covers | error | message names | at |", "|---|---|---|---|---|"]
    for e in v.entries:
        if not e["valid"]:
            words = ", ".join(f"`` {esc(m)} ``" if "`" in m else f"`{esc(m)}`" for m in e["message_contains"])
            lines.append(f"| `{e['file']}` | {esc(e['description'])} | `{e['error']}` | {words} | {e['detected_at']} |")
    n_valid = sum(e["valid"] for e in v.entries)
    lines += ["", f"{n_valid} valid and {len(v.entries) - n_valid} invalid vectors.", ""]
    (v.out / "README.md").write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE, help="output folder (default: this folder)")
    args = ap.parse_args(argv)
    out: Path = args.out
    for sub in ("valid", "invalid"):
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir(parents=True)
    v = Vectors(out)
    writer_vectors(v)
    writer_outlier_vectors(v)
    hand_vectors(v)
    hand_outlier_vectors(v)
    invalid_vectors(v)
    clarified_valid_vectors(v)
    clarified_invalid_vectors(v)
    (out / "manifest.json").write_text(json.dumps({"format_version": "2.0", "vectors": v.entries}, indent=1) + "\n")
    write_readme(v)
    n_valid = sum(e["valid"] for e in v.entries)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{n_valid} valid, {len(v.entries) - n_valid} invalid vectors; {total / 1024:.0f} KiB in {out}")
    for d in v.deviations:
        print(f"READER DEVIATION {d}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
