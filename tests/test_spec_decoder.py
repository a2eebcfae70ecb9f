"""Runs every conformance vector through `spec/lgn_decoder.py`, the reference decoder written from spec/lgn.md alone."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "spec"))

import lgn_decoder as sd

VECTORS = Path(__file__).resolve().parent.parent / "spec" / "vectors"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text(encoding="utf-8"))
VALID = [v for v in MANIFEST["vectors"] if v["valid"]]
INVALID = [v for v in MANIFEST["vectors"] if not v["valid"]]
ERROR_CLASSES: dict[str, type[sd.SpecError]] = {
    "FormatError": sd.SpecError,
    "ChecksumError": sd.ChecksumSpecError,
    "UnsupportedVersionError": sd.VersionSpecError,
}


def _ids(vectors: list[dict[str, object]]) -> list[str]:
    return [str(v["file"]) for v in vectors]


def test_manifest_counts() -> None:
    assert MANIFEST["format_version"] == "2.0"
    assert len(VALID) == 59
    assert len(INVALID) == 110


@pytest.mark.parametrize("vector", VALID, ids=_ids(VALID))
def test_valid_vector_bit_exact(vector: dict[str, str]) -> None:
    got = sd.read(VECTORS / vector["file"])
    # The expected file is a plain safetensors file: the same decoder reads it through its plain-file path.
    want = sd.read(VECTORS / vector["expected"])
    assert want.metadata == {}
    assert sorted(got.tensors) == sorted(want.tensors)
    loose = set(vector.get("nan_bits_unspecified", []))
    for name, arr in got.tensors.items():
        exp = want.tensors[name]
        assert got.dtypes[name] == want.dtypes[name], name
        assert arr.shape == exp.shape, name
        assert arr.dtype == exp.dtype, name
        if name in loose:  # section 9: NaN from arithmetic, or converted to F16/BF16, is some NaN
            nan = _nan_mask(arr, got.dtypes[name])
            assert np.array_equal(nan, _nan_mask(exp, got.dtypes[name])), name
            assert arr[~nan].tobytes() == exp[~nan].tobytes(), name
        else:
            assert arr.tobytes() == exp.tobytes(), name


def _nan_mask(a: np.ndarray, dtype: str) -> np.ndarray:
    """Where a decoded float tensor is NaN (BF16 tensors are uint16 bit patterns)."""
    return (a & 0x7FFF) > 0x7F80 if dtype == "BF16" else np.isnan(a)


@pytest.mark.parametrize("vector", INVALID, ids=_ids(INVALID))
def test_invalid_vector_rejected(vector: dict[str, object]) -> None:
    cls = ERROR_CLASSES[str(vector["error"])]
    with pytest.raises(sd.SpecError) as info:
        sd.decode(VECTORS / str(vector["file"]))
    assert isinstance(info.value, cls), f"{type(info.value).__name__}: {info.value}"
    if cls is sd.SpecError:
        # A plain FormatError must not be reported as a checksum or version error.
        assert type(info.value) is sd.SpecError, f"{type(info.value).__name__}: {info.value}"


@pytest.mark.parametrize("vector", INVALID, ids=_ids(INVALID))
def test_invalid_vector_message(vector: dict[str, object]) -> None:
    with pytest.raises(sd.SpecError) as info:
        sd.decode(VECTORS / str(vector["file"]))
    message = str(info.value)
    missing = [w for w in vector["message_contains"] if w not in message]  # type: ignore[attr-defined]
    assert not missing, f"message {message!r} lacks {missing}"


@pytest.mark.parametrize("vector", INVALID, ids=_ids(INVALID))
def test_invalid_vector_detected_at(vector: dict[str, object]) -> None:
    """The open/decode split of section 14 ("Found at"), implemented lazily by `LgnReader`."""
    buf = (VECTORS / str(vector["file"])).read_bytes()
    if vector["detected_at"] == "open":
        with pytest.raises(sd.SpecError):
            sd.LgnReader(buf)
    else:
        reader = sd.LgnReader(buf)
        with pytest.raises(sd.SpecError):
            reader.decode_all()


def test_valid_vectors_open_without_checksums_too() -> None:
    for vector in VALID:
        reader = sd.LgnReader((VECTORS / vector["file"]).read_bytes(), verify_checksums=False)
        reader.decode_all()


def test_listing_order() -> None:
    # Section 6: manifest order; section 3: plain files in increasing byte order of the names.
    r = sd.LgnReader((VECTORS / "valid/save_mixed_model.lgn").read_bytes())
    assert r.names() == [
        "features.0.weight",
        "features.0.bias",
        "bn.running_mean",
        "bn.num_batches_tracked",
        "classifier.weight",
        "classifier.bias",
        "tiny.weight",
    ]
    r = sd.LgnReader((VECTORS / "valid/plain_safetensors.safetensors").read_bytes())
    assert r.names() == sorted(r.names(), key=lambda s: s.encode("utf-8"))


def test_user_metadata() -> None:
    # Section 4: lgn.* keys (known or not) are not user metadata; everything else is returned unchanged.
    assert sd.read(VECTORS / "valid/hand_minor_version.lgn").metadata == {"user": "kept"}
    assert sd.read(VECTORS / "valid/save_mixed_model.lgn").metadata == {"arch": "toy", "framework": "pt"}
    assert sd.read(VECTORS / "valid/save_raw_only.lgn").metadata == {"note": "all raw", "ünïcode": "✓"}
    assert sd.read(VECTORS / "valid/plain_with_metadata.safetensors").metadata == {
        "format": "pt",
        "lgnish": "not an lgn key",
    }


def _pack(indices: list[int], b: int) -> bytes:
    s = sum(v << (i * b) for i, v in enumerate(indices))
    return s.to_bytes(-(-(len(indices) * b) // 8), "little")


@pytest.mark.parametrize(
    ("indices", "bits", "packed"),
    [
        ([5, 1, 7, 2], 3, "CD 05"),
        ([1, 0, 1], 1, "05"),
        ([0, 1, 2, 2, 1, 0], 2, "A4 01"),
        ([300, 5], 9, "2C 0B 00"),
        ([0x1234, 0xBEEF], 16, "34 12 EF BE"),
    ],
)
def test_section7_examples(indices: list[int], bits: int, packed: str) -> None:
    raw = bytes.fromhex(packed)
    assert _pack(indices, bits) == raw
    assert sd.unpack_indices(raw, len(indices), bits).tolist() == indices
    assert sd.unpack_indices(raw + bytes(7), len(indices), bits).tolist() == indices


def test_section16_worked_example() -> None:
    out = sd.decode(VECTORS / "valid/spec_worked_example.lgn")
    want = [[[1.0, 2.0, 5.0, 6.0, 9.0]], [[1.5, 2.0, 3.5, 4.0, 5.5]], [[18.0, 20.0, 10.0, 12.0, 2.0]]]
    np.testing.assert_array_equal(out["example"], np.array(want, dtype=np.float32))


def test_section16_worked_example_with_outliers() -> None:
    path = VECTORS / "valid/spec_worked_example_outliers.lgn"
    out = sd.decode(path)
    want = [[[1.0, 2.0, 5.0, -7.5, 9.0]], [[1.5, 2.0, 3.5, 4.0, 5.5]], [[18.0, 100.0, 10.0, 12.0, 2.0]]]
    np.testing.assert_array_equal(out["example"], np.array(want, dtype=np.float32))
    # The numbers section 16 quotes for this file.
    buf = path.read_bytes()
    n = int.from_bytes(buf[:8], "little")
    text = (Path(__file__).resolve().parent.parent / "spec" / "lgn.md").read_text(encoding="utf-8")
    part = text.split("**With outliers (version 2.0).**", 1)[1].split("## 17.", 1)[0]
    assert f"({len(buf)} bytes)" in part
    assert f"`{buf[:8].hex(' ').upper()}` (`N = {n}`)" in part
    assert f"the last {len(buf) - 8 - n} bytes" in part
    r = sd.LgnReader(buf)
    for name, st in r.stored.items():
        assert f"| `{name}` | {st.dtype} `{list(st.shape)}` | `[{st.begin}, {st.end}]` |" in part, name
    raw = {name: r._bytes(name).hex().upper() for name in ("example.lgn.outlier_index", "example.lgn.outlier_value")}
    assert raw == {"example.lgn.outlier_index": "030000000B000000", "example.lgn.outlier_value": "0000F0C00000C842"}


@pytest.mark.parametrize("vector", VALID, ids=_ids(VALID))
def test_row_ranges_decode_like_the_whole_tensor(vector: dict[str, str]) -> None:
    """Section 9: any range of view rows decodes from its block rows and its outliers alone."""
    r = sd.LgnReader((VECTORS / vector["file"]).read_bytes())
    for t in r.tensors:
        if t.encoding != "clustered":
            continue
        rows, cols = t.shape[0], int(np.prod(t.shape[1:]))
        whole = r.decode(t.name).reshape(rows, cols)
        for step in (1, 2, 3, 5):
            parts = [r.decode_rows(t.name, a, min(a + step, rows)) for a in range(0, rows, step)]
            got = np.concatenate(parts) if parts else whole[:0]
            assert got.tobytes() == whole.tobytes(), (t.name, step)
        if rows > 2:
            assert r.decode_rows(t.name, 1, rows - 1).tobytes() == whole[1 : rows - 1].tobytes(), t.name


@pytest.mark.parametrize(
    ("dtype", "shape", "overflows"),
    [
        ("F32", [2**63, 4, 0], True),  # section 3, rule 2: 4 x 2^63 overflows before the 0 is reached
        ("F32", [0, 2**63, 4], False),  # every partial product is 0
        ("F32", [2**62, 2, 0], True),  # the element size comes first: 4 x 2^62 overflows
        ("U8", [2**62, 2, 0], False),
        ("U8", [2**64 - 1], False),
        ("I16", [2**63], True),
        ("F64", [], False),
    ],
)
def test_section3_byte_size_left_to_right(dtype: str, shape: list[int], overflows: bool) -> None:
    assert sd._byte_size_overflows(sd.DTYPES[dtype][0], shape) is overflows


def test_section3_json_rules() -> None:
    assert sd._nesting_depth('{"a": [[1], {"b": "[[[["}]}') == 3  # brackets inside strings do not count
    assert sd._nesting_depth('"[\\"]"') == 0
    ok = "[" * 126 + "]" * 126
    assert sd._parse_json('{"x": ' + ok + "}", "t", "f") == {"x": sd._parse_json(ok, "t", "f")}
    bad = [
        '{"x": ' + "[" * 127 + "]" * 127 + "}",  # 128 levels
        '{"a": 1, "a": 1}',
        '{"a": {"b": 1, "b": 2}}',
        '{"a": NaN}',
        '{"a": -Infinity}',
        '{"a": "\\ud800"}',
        '{"\\udc00": 1}',
    ]
    for text in bad:
        with pytest.raises(sd.SpecError):
            sd._parse_json(text, "t", "f")
    # Section 3, rule 4: a fraction, an exponent or -0 is not an integer, whatever its value.
    values = sd._parse_json('{"a": 5.0, "b": 5e0, "c": -0, "d": 0, "e": 5}', "t", "f")
    assert [sd._is_int(values[k]) for k in "abcde"] == [False, False, False, True, True]
    assert values["c"] == 0 and sd._show(values["c"]) == "-0"


def test_section10_crc_check_value() -> None:
    import zlib

    assert zlib.crc32(b"123456789") == 0xCBF43926
    assert zlib.crc32(b"") == 0


def _special_f32() -> np.ndarray:
    rng = np.random.default_rng(0)
    # Every binary32 exponent, mantissas near the binary16 / bfloat16 rounding points, and random bits.
    exps = np.arange(256, dtype=np.uint32) << 23
    mants = np.array([0, 1, 0xFFF, 0x1000, 0x1001, 0x2000, 0x3000, 0x7FFF, 0x8000, 0x8001, 0x18000, 0x7FFFFF])
    grid = (exps[:, None] | mants[None, :].astype(np.uint32)).ravel()
    rand = rng.integers(0, 2**32, size=200_000, dtype=np.uint64).astype(np.uint32)
    bits = np.concatenate([grid, grid | 0x80000000, rand])
    bits = bits[(bits & 0x7FFFFFFF) <= 0x7F800000]  # NaN payloads are unspecified
    return bits.view(np.float32)


def test_f16_conversion_matches_ieee() -> None:
    x = _special_f32()
    with np.errstate(over="ignore"):
        want = x.astype(np.float16).view(np.uint16)
    np.testing.assert_array_equal(sd.f32_to_f16_bits(x), want)


def test_bf16_conversion_is_nearest_even() -> None:
    x = _special_f32()
    got = sd.f32_to_bf16_bits(x)
    u = x.view(np.uint32).astype(np.uint64)
    lo_bits = u >> 16  # truncation (toward zero in magnitude)
    hi_bits = lo_bits + 1  # the next bfloat16 away from zero (0x7F80 + ... is infinity)
    with np.errstate(all="ignore"):
        xd = x.astype(np.float64)
        lo = (lo_bits << 16).astype(np.uint32).view(np.float32).astype(np.float64)
        hi = (hi_bits << 16).astype(np.uint32).view(np.float32).astype(np.float64)
        d_lo, d_hi = np.abs(lo - xd), np.abs(hi - xd)
    d_hi = np.where(np.isnan(d_hi), np.inf, d_hi)
    # Overflow: |x| at or above the midpoint between the largest bfloat16 and 2^128 rounds to infinity.
    d_hi = np.where((hi_bits & 0x7FFF) == 0x7F80, np.where(d_lo >= 2.0**127 * 2.0**-8, 0.0, np.inf), d_hi)
    want = np.where(d_lo < d_hi, lo_bits, np.where(d_hi < d_lo, hi_bits, np.where(lo_bits % 2 == 0, lo_bits, hi_bits)))
    exact = d_lo == 0
    want = np.where(exact, lo_bits, want).astype(np.uint16)
    np.testing.assert_array_equal(got, want)
