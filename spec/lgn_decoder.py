"""The Python reference decoder of `.lgn`, written from `spec/lgn.md` alone.

It is the specification's executable companion: it uses only the standard library and numpy and
imports nothing from legofmt, so the tests check the library against the spec rather than against
itself. Every Python test that needs an independent decode and the vector generator
(`spec/vectors/generate.py`) use it; it also reads the plain safetensors `expected` files of the
vectors (a plain file is one of the inputs the spec defines). It favours following the spec's text
over speed and implements the sections it cites.

`LgnReader(data)` performs the open-time validation (sections 3, 4, 6, 12, 14 and the codebook
checks of section 10); `LgnReader.decode(name)` performs the decode-time checks (checksums of the
other stored tensors, index range, outlier order and range) and the reconstruction of section 9;
`LgnReader.decode_rows(name, start, stop)` decodes a range of view rows as section 9 allows, from
the block rows and the outliers involved. `decode(path)` does both for every tensor and returns
`{name: numpy array}` in the order the spec says readers list them; `read(path)` also returns the
dtypes and the user metadata. Versions 1.x and 2.x are read. Output arrays: F32 as float32, F16 as
float16, BF16 as uint16 bit patterns, raw tensors as the numpy dtype of their safetensors dtype
(raw BF16 also as uint16). numpy cannot hold a dimension of 2^63 or more, so a valid zero-element
tensor such as `[0, 2^63, 4]` (section 3, rule 2) raises numpy's ValueError when it is decoded.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ChecksumSpecError",
    "LgnReader",
    "SpecError",
    "StoredTensor",
    "VersionSpecError",
    "decode",
    "read",
]


class SpecError(ValueError):
    """Any invalid input (the spec's `FormatError`)."""


class ChecksumSpecError(SpecError):
    """A stored tensor's bytes do not match its CRC-32 (the spec's `ChecksumError`)."""


class VersionSpecError(SpecError):
    """`lgn.version` has a major other than 1 and 2 (the spec's `UnsupportedVersionError`)."""


# Section 3: dtype -> (element size, numpy dtype). BF16 has no numpy dtype: its bits are kept as uint16.
DTYPES: dict[str, tuple[int, str]] = {
    "BOOL": (1, "|b1"),
    "U8": (1, "|u1"),
    "I8": (1, "|i1"),
    "U16": (2, "<u2"),
    "I16": (2, "<i2"),
    "F16": (2, "<f2"),
    "BF16": (2, "<u2"),
    "U32": (4, "<u4"),
    "I32": (4, "<i4"),
    "F32": (4, "<f4"),
    "U64": (8, "<u8"),
    "I64": (8, "<i8"),
    "F64": (8, "<f8"),
}

MAX_HEADER = 104_857_600  # section 3 / 13
MAX_STORED = 10_000_000  # section 13
MAX_RANK = 32  # section 13
MAX_JSON_DEPTH = 127  # section 3: arrays and objects nested at most this deep
U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1
ENTRY_MEMBERS = ("dtype", "shape", "data_offsets")
CLUSTERED_DTYPES = ("F32", "F16", "BF16")
SUPPORTED_MAJORS = (1, 2)  # section 12
OUTLIERS_MAJOR = 2  # section 6: the first major with the `outliers` member; major 1 ignores it
VERSION_RE = re.compile(r"([0-9]+)\.([0-9]+)")


def _fail(msg: str, tensor: str | None = None, field: str | None = None, cls: type[SpecError] = SpecError) -> Any:
    """Raise `cls` with the message shape of section 14: invalid .lgn file (tensor `w`, field `f`): msg."""
    where = []
    if tensor is not None:
        where.append(f"tensor `{tensor}`")
    if field is not None:
        where.append(f"field `{field}`")
    prefix = f"invalid .lgn file ({', '.join(where)})" if where else "invalid .lgn file"
    raise cls(f"{prefix}: {msg}")


class _NegativeZero(int):
    """The JSON integer `-0`: equal to 0, but section 3 writes non-negative integers without a sign."""

    def __repr__(self) -> str:
        return "-0"


def _is_int(v: object) -> bool:
    """A JSON integer as section 3 allows it for the format's members (no fraction, no exponent, no `-0`)."""
    return isinstance(v, int) and not isinstance(v, (bool, _NegativeZero))


def _show(v: object) -> str:
    """A JSON value as it was written, for messages."""
    return "-0" if isinstance(v, _NegativeZero) else json.dumps(v)


def _product(dims: list[int] | tuple[int, ...]) -> int:
    p = 1
    for d in dims:
        p *= d
    return p


def _byte_size_overflows(elem_size: int, shape: list[int] | tuple[int, ...]) -> bool:
    """Section 3, rule 2: element size x d0 x d1 x ..., multiplied left to right, every partial product
    within 64 bits. A later zero dimension does not undo an earlier overflow (`[2^63, 4, 0]` is invalid)."""
    acc = elem_size
    for d in shape:
        acc *= d
        if acc > U64_MAX:
            return True
    return False


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _pairs_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_int(text: str) -> int:
    return _NegativeZero(0) if text == "-0" else int(text)


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def _nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in a JSON text (the outermost counts 1); strings skipped."""
    b = np.frombuffer(_JSON_STRING.sub("", text).encode("utf-8", "surrogatepass"), dtype=np.uint8)
    step = np.isin(b, (0x5B, 0x7B)).astype(np.int64) - np.isin(b, (0x5D, 0x7D)).astype(np.int64)
    return int(np.cumsum(step).max(initial=0))


def _check_scalar_values(obj: Any) -> None:
    """Reject strings that are not Unicode scalar sequences (lone surrogates from \\uD800 escapes)."""
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, str):
            o.encode("utf-8")
        elif isinstance(o, dict):
            for k, v in o.items():
                k.encode("utf-8")
                stack.append(v)
        elif isinstance(o, list):
            stack.extend(o)


def _parse_json(text: str, what: str, field: str) -> Any:
    """Section 3's JSON: no duplicate keys, no NaN/Infinity, no lone surrogates, nesting at most 127 deep.

    Integers keep their type (a number with a fraction or an exponent is a float, so never an integer
    member) and `-0` is marked, so the members' checks reject both."""
    depth = _nesting_depth(text)
    if depth > MAX_JSON_DEPTH:
        return _fail(f"{what} nests arrays and objects {depth} deep (the limit is {MAX_JSON_DEPTH})", field=field)
    try:
        value = json.loads(
            text, object_pairs_hook=_pairs_no_duplicates, parse_constant=_reject_constant, parse_int=_parse_int
        )
        _check_scalar_values(value)
    except _DuplicateKey as e:
        return _fail(f"{what} has a duplicate key `{e.key}`", field=field)
    except UnicodeEncodeError:
        return _fail(f"{what} holds a string with a lone surrogate (not valid Unicode)", field=field)
    except RecursionError:
        return _fail(f"{what} is nested too deeply to be parsed as JSON", field=field)
    except ValueError as e:
        return _fail(f"{what} is not JSON: {e}", field=field)
    return value


@dataclass(frozen=True)
class StoredTensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return DTYPES[self.dtype][0] * _product(self.shape)


def _parse_entry(name: str, entry: Any, data_len: int) -> StoredTensor:
    """Section 3, rules 2-4 for one header entry."""
    if not isinstance(entry, dict):
        return _fail("header entry is not a JSON object", name, "header")
    for member in ENTRY_MEMBERS:
        if member not in entry:
            _fail(f"header entry has no `{member}` member", name, "header")
    extra = sorted(set(entry) - set(ENTRY_MEMBERS))
    if extra:
        _fail(f"header entry has extra member(s) {extra}: only dtype, shape, data_offsets are allowed", name, "header")
    dtype = entry["dtype"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        _fail(f"unknown dtype {json.dumps(dtype)}", name, "dtype")
    shape = entry["shape"]
    if not isinstance(shape, list):
        _fail("shape is not a JSON array", name, "header")
    for d in shape:
        if not _is_int(d):
            _fail(f"shape dimension {_show(d)} is not an integer (no fraction, exponent or sign)", name, "header")
        if d < 0:
            _fail(f"shape dimension {d} is negative", name, "header")
        if d > U64_MAX:
            _fail(f"shape dimension {d} does not fit in u64", name, "header")
    if len(shape) > MAX_RANK:
        _fail(f"shape has rank {len(shape)}, over the limit of {MAX_RANK}", name, "shape")
    if _byte_size_overflows(DTYPES[dtype][0], shape):
        _fail(f"byte size of {dtype} {shape} overflows 64 bits", name, "shape")
    nbytes = DTYPES[dtype][0] * _product(shape)
    offsets = entry["data_offsets"]
    if not isinstance(offsets, list) or len(offsets) != 2:
        _fail("data_offsets is not an array of two integers", name, "data_offsets")
    for o in offsets:
        if not _is_int(o) or o < 0 or o > U64_MAX:
            _fail(f"data_offsets value {_show(o)} is not an integer in 0..2^64-1", name, "data_offsets")
    begin, end = offsets
    if end < begin:
        _fail(f"data_offsets [{begin}, {end}]: end is before begin", name, "data_offsets")
    if end > data_len:
        _fail(f"data_offsets [{begin}, {end}] run past the data section ({data_len} bytes)", name, "data_offsets")
    if end - begin != nbytes:
        _fail(
            f"data_offsets [{begin}, {end}] hold {end - begin} bytes but {dtype} {shape} needs {nbytes}",
            name,
            "data_offsets",
        )
    return StoredTensor(name, dtype, tuple(shape), begin, end)


def _parse_envelope(buf: bytes) -> tuple[dict[str, str] | None, dict[str, StoredTensor], int]:
    """Sections 2 and 3. Returns (__metadata__ or None, stored tensors by name, data section start)."""
    size = len(buf)
    if size < 8:
        _fail(f"file too short: {size} bytes, the header length alone takes 8", field="header length")
    n = int.from_bytes(buf[:8], "little")
    if n > MAX_HEADER:
        _fail(f"header length {n} exceeds the limit of {MAX_HEADER} bytes", field="header length")
    if 8 + n > size:
        _fail(f"header length {n} runs past the end of the file ({size} bytes)", field="header length")
    raw = buf[8 : 8 + n]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return _fail(f"header is not valid UTF-8: {e}", field="header")
    if not text.startswith("{"):
        _fail("header does not begin with `{`", field="header")
    header = _parse_json(text, "header", "header")
    assert isinstance(header, dict)  # one JSON value that begins with `{` is an object
    data_len = size - 8 - n
    metadata: dict[str, str] | None = None
    stored: dict[str, StoredTensor] = {}
    for key, value in header.items():
        if key == "__metadata__":
            if not isinstance(value, dict):
                _fail("`__metadata__` is not a JSON object", field="header")
            for mk, mv in value.items():
                if not isinstance(mv, str):
                    _fail(f"`__metadata__` value of `{mk}` is not a string", field="header")
            metadata = value
            continue
        stored[key] = _parse_entry(key, value, data_len)
    if len(stored) > MAX_STORED:
        _fail(f"{len(stored)} stored tensors exceed the limit of {MAX_STORED}", field="header")
    # The ranges, sorted by (begin, end), tile [0, D) exactly.
    pos = 0
    for t in sorted(stored.values(), key=lambda t: (t.begin, t.end)):
        if t.begin > pos:
            _fail(f"hole: bytes [{pos}, {t.begin}) of the data section belong to no tensor", t.name, "data_offsets")
        if t.begin < pos:
            _fail(
                f"data_offsets [{t.begin}, {t.end}] overlaps the previous tensor (ends at {pos})",
                t.name,
                "data_offsets",
            )
        pos = t.end
    if pos != data_len:
        _fail(f"{data_len - pos} trailing bytes after the last tensor", field="data_offsets")
    return metadata, stored, 8 + n


def _ceil_log2(k: int) -> int:
    return (k - 1).bit_length()


@dataclass
class _Codebook:
    tensor: str
    k: int
    bits: int
    bh: int
    bw: int
    values: np.ndarray | None = None  # float32 [k, bh, bw], set once read and checked


@dataclass
class _Stage:
    codebook: int
    indices: str


@dataclass
class _Tensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    encoding: str
    stages: list[_Stage]
    scale_mode: str | None
    scale_tensor: str | None
    index: int
    outlier_indices: str | None = None  # version 2.0: stored U32 [n] flat positions
    outlier_values: str | None = None  # version 2.0: stored F32 [n] values


class LgnReader:
    """Open-time validation of an `.lgn` (or plain safetensors) file held in memory."""

    def __init__(self, buf: bytes, verify_checksums: bool = True) -> None:
        self.buf = bytes(buf)
        self.verify_checksums = verify_checksums
        metadata, self.stored, self.data_start = _parse_envelope(self.buf)
        md = metadata or {}
        # Section 4: user metadata is every key not beginning with `lgn.`.
        self.metadata = {k: v for k, v in md.items() if not k.startswith("lgn.")}
        self.codebooks: list[_Codebook] = []
        self.crc32: dict[str, int] = {}
        has_version, has_manifest = "lgn.version" in md, "lgn.manifest" in md
        if not has_version and not has_manifest:
            # A plain safetensors file: every stored tensor is raw, in increasing byte order of names.
            self.version: tuple[int, int] | None = None
            names = sorted(self.stored, key=lambda s: s.encode("utf-8"))
            self.tensors = [
                _Tensor(s, self.stored[s].dtype, self.stored[s].shape, "raw", [], None, None, i)
                for i, s in enumerate(names)
            ]
            return
        if not has_version:
            _fail("`lgn.manifest` is present but `lgn.version` is missing", field="lgn.version")
        if not has_manifest:
            _fail("`lgn.version` is present but `lgn.manifest` is missing", field="lgn.manifest")
        self.version = self._parse_version(md["lgn.version"])
        manifest = _parse_json(md["lgn.manifest"], "lgn.manifest", "lgn.manifest")
        self._parse_manifest(manifest)

    # -- section 12 ---------------------------------------------------------------------------------
    @staticmethod
    def _parse_version(text: str) -> tuple[int, int]:
        m = VERSION_RE.fullmatch(text)
        if m is None:
            return _fail(f"lgn.version {json.dumps(text)} is not MAJOR.MINOR", field="lgn.version")
        major, minor = int(m.group(1)), int(m.group(2))
        if major > U32_MAX or minor > U32_MAX:
            _fail(f"lgn.version {json.dumps(text)}: a number is not below 2^32", field="lgn.version")
        if major not in SUPPORTED_MAJORS:
            _fail(
                f"unsupported lgn.version {text} (this reader implements major versions 1 and 2)",
                field="lgn.version",
                cls=VersionSpecError,
            )
        return major, minor

    # -- section 6 ----------------------------------------------------------------------------------
    def _parse_manifest(self, man: Any) -> None:
        F = "lgn.manifest"
        if not isinstance(man, dict):
            _fail("the manifest is not a JSON object", field=F)
        for member, typ, tname in (("codebooks", list, "array"), ("tensors", list, "array"), ("crc32", dict, "object")):
            if member not in man:
                _fail(f"the manifest has no `{member}` member", field=f"{F}.{member}")
            if not isinstance(man[member], typ):
                _fail(f"`{member}` is not a JSON {tname}", field=f"{F}.{member}")
        for key, crc in man["crc32"].items():
            if not _is_int(crc) or not 0 <= crc <= U32_MAX:
                _fail(f"crc32 of `{key}` is {_show(crc)}, not a u32", field=f"{F}.crc32")
        self.crc32 = dict(man["crc32"])

        used: dict[str, str] = {}  # stored name -> what references it

        def reference(name: str, what: str, tensor: str | None, field: str) -> StoredTensor:
            if name not in self.stored:
                _fail(f"{what} names the stored tensor `{name}`, which does not exist", tensor, field)
            if name in used:
                _fail(f"stored tensor `{name}` is referenced twice ({used[name]} and {what})", tensor, field)
            used[name] = what
            return self.stored[name]

        def member(obj: dict[str, Any], key: str, kind: str, tensor: str | None, field: str) -> Any:
            if key not in obj:
                _fail(f"missing member `{key}`", tensor, field)
            v = obj[key]
            ok = {
                "str": isinstance(v, str),
                "int": _is_int(v),
                "list": isinstance(v, list),
                "dict": isinstance(v, dict),
            }[kind]
            if not ok:
                _fail(f"`{key}` has the wrong JSON type ({_show(v)})", tensor, field)
            return v

        # Codebooks.
        for ci, cb in enumerate(man["codebooks"]):
            path = f"{F}.codebooks[{ci}]"
            if not isinstance(cb, dict):
                _fail("codebook is not a JSON object", field=path)
            tname = member(cb, "tensor", "str", None, f"{path}.tensor")
            k = member(cb, "k", "int", tname, f"{path}.k")
            bits = member(cb, "bits", "int", tname, f"{path}.bits")
            block = member(cb, "block", "list", tname, f"{path}.block")
            if not 2 <= k <= 65536:
                _fail(f"codebook k={k} is outside 2..65536", tname, f"{path}.k")
            if bits != _ceil_log2(k):
                _fail(f"codebook bits={bits} but k={k} needs {_ceil_log2(k)}", tname, f"{path}.bits")
            if len(block) != 2 or not all(_is_int(s) and 1 <= s <= 8 for s in block):
                _fail(f"codebook block {json.dumps(block)} is not [bh, bw] with sides 1..8", tname, f"{path}.block")
            bh, bw = block
            st = reference(tname, f"codebooks[{ci}].tensor", tname, f"{path}.tensor")
            want = [k, bh, bw]
            if st.dtype != "F32" or list(st.shape) != want:
                _fail(
                    f"codebook must be stored as F32 {want}, found {st.dtype} {list(st.shape)}", tname, f"{path}.tensor"
                )
            self.codebooks.append(_Codebook(tname, k, bits, bh, bw))

        # Tensors.
        self.tensors = []
        names: set[str] = set()
        for ti, t in enumerate(man["tensors"]):
            path = f"{F}.tensors[{ti}]"
            if not isinstance(t, dict):
                _fail("tensor entry is not a JSON object", field=path)
            name = member(t, "name", "str", None, f"{path}.name")
            if name in names:
                _fail(f"duplicate original tensor name `{name}`", name, f"{path}.name")
            names.add(name)
            dtype = member(t, "dtype", "str", name, f"{path}.dtype")
            if dtype not in DTYPES:
                _fail(f"unknown dtype {json.dumps(dtype)}", name, f"{path}.dtype")
            shape = member(t, "shape", "list", name, f"{path}.shape")
            for d in shape:
                if not _is_int(d) or not 0 <= d <= U64_MAX:
                    _fail(f"shape dimension {_show(d)} is not an integer in 0..2^64-1", name, f"{path}.shape")
            if len(shape) > MAX_RANK:
                _fail(f"shape has rank {len(shape)}, over the limit of {MAX_RANK}", name, f"{path}.shape")
            if _byte_size_overflows(DTYPES[dtype][0], shape):
                _fail(f"byte size of {dtype} {shape} overflows 64 bits", name, f"{path}.shape")
            encoding = member(t, "encoding", "str", name, f"{path}.encoding")
            shape_t = tuple(shape)
            if encoding == "raw":
                st = reference(name, f"raw tensor `{name}`", name, f"{path}.name")
                if st.dtype != dtype or st.shape != shape_t:
                    _fail(
                        f"raw tensor is {dtype} shape {shape} in the manifest but stored as {st.dtype} shape "
                        f"{list(st.shape)}",
                        name,
                        f"{path}.shape",
                    )
                self.tensors.append(_Tensor(name, dtype, shape_t, "raw", [], None, None, ti))
            elif encoding == "clustered":
                self.tensors.append(self._parse_clustered(t, name, dtype, shape_t, ti, path, reference, member))
            else:
                _fail(f"unknown encoding {json.dumps(encoding)}", name, f"{path}.encoding")

        # Cross-references (section 6).
        for s in self.stored:
            if s not in used:
                _fail(f"stored tensor `{s}` is not referenced by the manifest", s, F)
        for s in self.stored:
            if s not in self.crc32:
                _fail(f"stored tensor `{s}` has no crc32 entry", s, f"{F}.crc32")
        for s in self.crc32:
            if s not in self.stored:
                _fail(f"crc32 entry `{s}` names no stored tensor", s, f"{F}.crc32")

        # Codebooks are read and checked at open (sections 6, 10 and 14).
        for cb in self.codebooks:
            raw = self._bytes(cb.tensor)
            self._check_crc(cb.tensor, raw)
            values = np.frombuffer(raw, dtype="<f4").reshape(cb.k, cb.bh, cb.bw)
            if not np.isfinite(values).all():
                _fail("codebook holds a value that is not finite (NaN or infinity)", cb.tensor, "codewords")
            cb.values = values

    def _parse_clustered(
        self,
        t: dict[str, Any],
        name: str,
        dtype: str,
        shape: tuple[int, ...],
        ti: int,
        path: str,
        reference: Any,
        member: Any,
    ) -> _Tensor:
        if dtype not in CLUSTERED_DTYPES:
            _fail(f"a clustered tensor must be F32, F16 or BF16, not {dtype}", name, f"{path}.dtype")
        if len(shape) < 2:
            _fail(
                f"a clustered tensor needs rank >= 2; shape {list(shape)} has rank {len(shape)}", name, f"{path}.shape"
            )
        stages = member(t, "stages", "list", name, f"{path}.stages")
        if not 1 <= len(stages) <= 16:
            _fail(f"{len(stages)} stages: a clustered tensor has 1 to 16 stages", name, f"{path}.stages")
        rows, cols = shape[0], _product(shape[1:])
        out: list[_Stage] = []
        block = None
        for si, stage in enumerate(stages):
            spath = f"{path}.stages[{si}]"
            if not isinstance(stage, dict):
                _fail("stage is not a JSON object", name, spath)
            cbi = member(stage, "codebook", "int", name, f"{spath}.codebook")
            idx_name = member(stage, "indices", "str", name, f"{spath}.indices")
            if not 0 <= cbi < len(self.codebooks):
                _fail(f"stage names codebook {cbi}, but there are {len(self.codebooks)}", name, f"{spath}.codebook")
            cb = self.codebooks[cbi]
            if block is None:
                block = (cb.bh, cb.bw)
            elif block != (cb.bh, cb.bw):
                _fail(
                    f"stages use codebooks of different block shapes {list(block)} and {[cb.bh, cb.bw]}",
                    name,
                    f"{spath}.codebook",
                )
            n_blocks = -(-rows // cb.bh) * -(-cols // cb.bw)
            p = -(-(n_blocks * cb.bits) // 8)
            st = reference(idx_name, f"{spath}.indices", name, f"{spath}.indices")
            if st.dtype != "U8" or len(st.shape) != 1:
                _fail(
                    f"index tensor `{idx_name}` must be U8 of rank 1, found {st.dtype} {list(st.shape)}",
                    name,
                    f"{spath}.indices",
                )
            if not p <= st.shape[0] <= p + 7:
                _fail(
                    f"index tensor `{idx_name}` holds {st.shape[0]} bytes; {n_blocks} blocks of {cb.bits} bits need "
                    f"{p} to {p + 7}",
                    name,
                    f"{spath}.indices",
                )
            out.append(_Stage(cbi, idx_name))
        mode = scale_name = None
        if "scale" in t:
            scale = t["scale"]
            spath = f"{path}.scale"
            if not isinstance(scale, dict):
                _fail(f"scale is not a JSON object ({json.dumps(scale)})", name, spath)
            mode = member(scale, "mode", "str", name, f"{spath}.mode")
            scale_name = member(scale, "tensor", "str", name, f"{spath}.tensor")
            if mode == "none":
                _fail("scale mode 'none' is not valid: an unscaled tensor has no scale member", name, f"{spath}.mode")
            if mode not in ("row", "tensor"):
                _fail(f"unknown scale mode {json.dumps(mode)}", name, f"{spath}.mode")
            st = reference(scale_name, f"{spath}.tensor", name, f"{spath}.tensor")
            if st.dtype not in ("F16", "F32"):
                _fail(f"scale tensor `{scale_name}` must be F16 or F32, found {st.dtype}", name, f"{spath}.tensor")
            want = [rows] if mode == "row" else [1]
            if list(st.shape) != want:
                _fail(
                    f"scale tensor `{scale_name}` must have shape {want} (mode {mode}), found {list(st.shape)}",
                    name,
                    f"{spath}.tensor",
                )
        oi_name = ov_name = None
        # Sections 6 and 12: `outliers` exists from major 2 on; in a major-1 file it is an unknown member, ignored.
        if "outliers" in t and self.version is not None and self.version[0] >= OUTLIERS_MAJOR:
            outliers = t["outliers"]
            opath = f"{path}.outliers"
            if not isinstance(outliers, dict):
                _fail(f"outliers is not a JSON object ({json.dumps(outliers)})", name, opath)
            oi_name = member(outliers, "indices", "str", name, f"{opath}.indices")
            ov_name = member(outliers, "values", "str", name, f"{opath}.values")
            si = reference(oi_name, f"{opath}.indices", name, f"{opath}.indices")
            sv = reference(ov_name, f"{opath}.values", name, f"{opath}.values")
            if si.dtype != "U32" or len(si.shape) != 1:
                _fail(
                    f"outlier index tensor `{oi_name}` must be U32 of rank 1, found {si.dtype} {list(si.shape)}",
                    name,
                    f"{opath}.indices",
                )
            if sv.dtype != "F32" or len(sv.shape) != 1:
                _fail(
                    f"outlier value tensor `{ov_name}` must be F32 of rank 1, found {sv.dtype} {list(sv.shape)}",
                    name,
                    f"{opath}.values",
                )
            n = si.shape[0]
            if sv.shape[0] != n:
                _fail(
                    f"outlier value tensor `{ov_name}` holds {sv.shape[0]} values for {n} indices: the lengths differ",
                    name,
                    f"{opath}.values",
                )
            if n > _product(shape):
                _fail(f"{n} outliers for a tensor of {_product(shape)} elements", name, f"{opath}.indices")
        return _Tensor(name, dtype, shape, "clustered", out, mode, scale_name, ti, oi_name, ov_name)

    # -- sections 7-10: decoding --------------------------------------------------------------------
    def _bytes(self, stored_name: str) -> bytes:
        st = self.stored[stored_name]
        return self.buf[self.data_start + st.begin : self.data_start + st.end]

    def _check_crc(self, stored_name: str, raw: bytes) -> None:
        if not self.verify_checksums or self.version is None:
            return
        want = self.crc32[stored_name]
        got = zlib.crc32(raw) & 0xFFFFFFFF
        if got != want:
            _fail(
                f"CRC-32 mismatch of stored tensor `{stored_name}`: manifest says {want}, bytes give {got}",
                stored_name,
                "crc32",
                cls=ChecksumSpecError,
            )

    def names(self) -> list[str]:
        return [t.name for t in self.tensors]

    def decode(self, name: str) -> np.ndarray:
        t = next((x for x in self.tensors if x.name == name), None)
        if t is None:
            raise KeyError(name)
        if t.encoding == "raw":
            raw = self._bytes(t.name)
            self._check_crc(t.name, raw)
            return _raw_array(raw, t.dtype, t.shape)
        return self._decode_clustered(t)

    def decode_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """View rows `start .. stop - 1` of a clustered tensor, as a `[stop - start, cols]` array (section 9)."""
        t = next((x for x in self.tensors if x.name == name), None)
        if t is None:
            raise KeyError(name)
        if t.encoding != "clustered":
            raise ValueError(f"`{name}` is not a clustered tensor")
        if not 0 <= start <= stop <= t.shape[0]:
            raise ValueError(f"rows {start}..{stop} are not within 0..{t.shape[0]}")
        return self._decode_rows(t, start, stop)

    def _decode_clustered(self, t: _Tensor) -> np.ndarray:
        return self._decode_rows(t, 0, t.shape[0]).reshape(t.shape)

    def _outliers(self, t: _Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Section 9, "Outliers": the checked positions (int64) and values (float32) of a tensor's outliers."""
        assert t.outlier_indices is not None and t.outlier_values is not None
        raw_pos = self._bytes(t.outlier_indices)
        self._check_crc(t.outlier_indices, raw_pos)
        raw_val = self._bytes(t.outlier_values)
        self._check_crc(t.outlier_values, raw_val)
        pos = np.frombuffer(raw_pos, dtype="<u4").astype(np.int64)
        numel = _product(t.shape)
        # Bulk data, checked when decoding (section 6): strictly increasing, each < product(shape).
        bad = np.nonzero((pos >= numel) | np.concatenate([[False], pos[1:] <= pos[:-1]]))[0]
        if bad.size:
            m = int(bad[0])
            p = int(pos[m])
            if p >= numel:
                msg = f"outlier {m}: position {p} is out of range for a tensor of {numel} elements"
            else:
                msg = f"outlier {m}: position {p} follows {int(pos[m - 1])}: positions must be strictly increasing"
            _fail(msg, t.name, "outliers.indices")
        return pos, np.frombuffer(raw_val, dtype="<f4")

    def _decode_rows(self, t: _Tensor, start: int, stop: int) -> np.ndarray:
        rows, cols = t.shape[0], _product(t.shape[1:])
        # Checksums of every stored tensor whose bytes this tensor uses, before using them.
        stage_bytes = []
        for st in t.stages:
            raw = self._bytes(st.indices)
            self._check_crc(st.indices, raw)
            stage_bytes.append(raw)
        scales = None
        if t.scale_tensor is not None:
            raw = self._bytes(t.scale_tensor)
            self._check_crc(t.scale_tensor, raw)
            sdt = "<f2" if self.stored[t.scale_tensor].dtype == "F16" else "<f4"
            scales = np.frombuffer(raw, dtype=sdt).astype(np.float32)  # F16 -> F32 is exact
        outliers = self._outliers(t) if t.outlier_indices is not None else None
        cb0 = self.codebooks[t.stages[0].codebook]
        bh, bw = cb0.bh, cb0.bw
        gr, gc = -(-rows // bh), -(-cols // bw)
        n_blocks = gr * gc
        out_np = DTYPES[t.dtype][1]
        if n_blocks == 0 or start == stop:
            return np.zeros((stop - start, cols), dtype=out_np)
        # Section 9: only the block rows br0 .. br1 - 1 that hold view rows start .. stop - 1 are used.
        br0, br1 = start // bh, -(-stop // bh)
        acc = None
        with np.errstate(all="ignore"):
            for si, (st, raw) in enumerate(zip(t.stages, stage_bytes)):
                cb = self.codebooks[st.codebook]
                idx = unpack_indices(raw, n_blocks, cb.bits)[br0 * gc : br1 * gc]
                bad = np.nonzero(idx >= cb.k)[0]
                if bad.size:
                    blk = br0 * gc + int(bad[0])
                    _fail(
                        f"index {int(idx[bad[0]])} of block {blk} is out of range: codebook `{cb.tensor}` has k={cb.k}",
                        t.name,
                        f"stages[{si}].indices",
                    )
                assert cb.values is not None
                nbr = br1 - br0
                v = cb.values[idx].reshape(nbr, gc, bh, bw).transpose(0, 2, 1, 3).reshape(nbr * bh, gc * bw)
                v = v[start - br0 * bh : stop - br0 * bh, :cols]
                acc = v.copy() if acc is None else (acc + v).astype(np.float32)
            assert acc is not None
            if scales is not None:
                if t.scale_mode == "row":
                    acc = (acc * scales[start:stop, None]).astype(np.float32)
                else:
                    acc = (acc * scales[0]).astype(np.float32)
        if outliers is not None:
            # View rows start .. stop - 1 hold flat positions start*cols .. stop*cols - 1; the positions are sorted.
            pos, values = outliers
            lo, hi = np.searchsorted(pos, [start * cols, stop * cols], side="left")
            flat = acc.reshape(-1)
            flat[pos[lo:hi] - start * cols] = values[lo:hi]
        if t.dtype == "F32":
            y = acc.astype("<f4")
        elif t.dtype == "F16":
            y = f32_to_f16_bits(acc).view("<f2")
        else:
            y = f32_to_bf16_bits(acc)
        return y

    def decode_all(self) -> dict[str, np.ndarray]:
        return {t.name: self.decode(t.name) for t in self.tensors}


def unpack_indices(raw: bytes, n: int, b: int) -> np.ndarray:
    """Section 7: `n` indices of `b` bits from a little-endian bit stream (bit j = bit j%8 of byte j//8)."""
    if n == 0:
        return np.zeros(0, dtype=np.uint32)
    p = -(-(n * b) // 8)
    bits = np.unpackbits(np.frombuffer(raw[:p], dtype=np.uint8), bitorder="little")[: n * b]
    weights = np.left_shift(np.uint32(1), np.arange(b, dtype=np.uint32))
    return (bits.reshape(n, b).astype(np.uint32) * weights).sum(axis=1, dtype=np.uint32)


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """binary32 -> bfloat16 (upper 16 bits), round to nearest, ties to even; NaN stays a (quiet) NaN."""
    u = np.ascontiguousarray(x, dtype="<f4").view("<u4").astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    return np.where(nan, ((u >> 16) | 0x40).astype(np.uint16), rounded).astype("<u2")


def f32_to_f16_bits(x: np.ndarray) -> np.ndarray:
    """binary32 -> binary16 bits, IEEE-754 round to nearest, ties to even (overflow -> inf, subnormals)."""
    u = np.ascontiguousarray(x, dtype="<f4").view("<u4").astype(np.int64)
    sign = (u >> 16) & 0x8000
    a = u & 0x7FFFFFFF
    # Normal binary16 results (|x| >= 2^-14): rebias the exponent, round the 13 dropped mantissa bits.
    normal = (a - (112 << 23) + 0xFFF + ((a >> 13) & 1)) >> 13
    # Subnormal results (|x| < 2^-14): value in units of 2^-24 is m * 2^(e-126), rounded to nearest even.
    e = a >> 23
    m = (a & 0x7FFFFF) | 0x800000
    shift = np.clip(126 - e, 1, 62)
    q = m >> shift
    rem = m & ((np.int64(1) << shift) - 1)
    half = np.int64(1) << (shift - 1)
    sub = q + ((rem > half) | ((rem == half) & ((q & 1) == 1))).astype(np.int64)
    sub = np.where(a < 0x33000001, 0, sub)  # |x| <= 2^-25 rounds to zero (2^-25 is a tie with even 0)
    h = np.where(a >= 0x38800000, normal, sub)
    h = np.where(a >= 0x477FF000, 0x7C00, h)  # >= 65520 rounds to infinity
    h = np.where(a > 0x7F800000, 0x7E00 | ((a >> 13) & 0x3FF), h)  # NaN stays a quiet NaN
    return (sign | h).astype("<u2")


def _raw_array(raw: bytes, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if math.prod(shape) == 0:
        return np.zeros(shape, dtype=DTYPES[dtype][1])
    return np.frombuffer(raw, dtype=DTYPES[dtype][1]).reshape(shape)


@dataclass
class Decoded:
    tensors: dict[str, np.ndarray]
    dtypes: dict[str, str]
    metadata: dict[str, str]


def read(source: str | Path | bytes) -> Decoded:
    """Open, validate and decode every tensor; also return the dtype names and the user metadata."""
    buf = source if isinstance(source, bytes) else Path(source).read_bytes()
    r = LgnReader(buf)
    tensors = r.decode_all()
    return Decoded(tensors, {t.name: t.dtype for t in r.tensors}, dict(r.metadata))


def decode(source: str | Path | bytes) -> dict[str, np.ndarray]:
    """Decode every original tensor of an `.lgn` or plain safetensors file: name -> numpy array."""
    return read(source).tensors
