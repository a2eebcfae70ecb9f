"""The conformance vectors of spec/vectors/ (see spec/vectors/README.md), run against legofmt,
the reference decoder (spec/lgn_decoder.py) and a plain safetensors reader."""

from __future__ import annotations

import ast
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import legofmt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "spec"))
import lgn_decoder  # noqa: E402

VECTORS = ROOT / "spec" / "vectors"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text())
VALID = [e for e in MANIFEST["vectors"] if e["valid"]]
INVALID = [e for e in MANIFEST["vectors"] if not e["valid"]]


def ids(entries: list[dict[str, Any]]) -> list[str]:
    return [Path(e["file"]).name for e in entries]


def header(path: Path) -> dict[str, Any]:
    buf = path.read_bytes()
    (n,) = struct.unpack("<Q", buf[:8])
    return json.loads(buf[8 : 8 + n])  # type: ignore[no-any-return]


def manifest_of(path: Path) -> dict[str, Any] | None:
    meta = header(path).get("__metadata__", {})
    return json.loads(meta["lgn.manifest"]) if "lgn.manifest" in meta else None


def as_bytes(a: np.ndarray[Any, Any]) -> bytes:
    return np.ascontiguousarray(a).tobytes()


def expected_np(entry: dict[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    """The expected tensors as NumPy arrays (BF16 as uint16 bit patterns)."""
    return lgn_decoder.decode(VECTORS / entry["expected"])


def expected_dtypes(entry: dict[str, Any]) -> dict[str, str]:
    """The safetensors dtype name of every expected tensor."""
    return lgn_decoder.read(VECTORS / entry["expected"]).dtypes


# Per float dtype: element size, the mask of exponent and mantissa, and infinity's bits (a NaN is above it).
NAN_BITS = {"F32": (4, 0x7FFFFFFF, 0x7F800000), "F16": (2, 0x7FFF, 0x7C00), "BF16": (2, 0x7FFF, 0x7F80)}


def same_bits(got: bytes, want: bytes, dtype: str, nan_any: bool) -> bool:
    """Bit for bit. With ``nan_any`` (the vector lists the tensor under ``nan_bits_unspecified``: spec/lgn.md
    section 9 leaves those NaN bits unspecified) a NaN matches any NaN; every other element stays bit for bit."""
    if not nan_any or got == want:
        return got == want
    size, mask, inf = NAN_BITS[dtype]
    g, w = (np.frombuffer(b, {2: "<u2", 4: "<u4"}[size]) for b in (got, want))
    if g.shape != w.shape:
        return False
    g_nan, w_nan = (g & mask) > inf, (w & mask) > inf
    return bool(np.array_equal(g_nan, w_nan) and np.array_equal(g[~g_nan], w[~w_nan]))


def nan_any(entry: dict[str, Any]) -> set[str]:
    return set(entry.get("nan_bits_unspecified", []))


def assert_same_np(
    got: dict[str, np.ndarray[Any, Any]], want: dict[str, np.ndarray[Any, Any]], entry: dict[str, Any]
) -> None:
    assert sorted(got) == sorted(want)
    dtypes, loose = expected_dtypes(entry), nan_any(entry)
    for name, w in want.items():
        g = got[name]
        assert g.dtype == w.dtype, name
        assert g.shape == w.shape, name
        assert same_bits(as_bytes(g), as_bytes(w), dtypes[name], name in loose), f"{name}: decoded bytes differ"


def to_numpy_bits(t: Any) -> np.ndarray[Any, Any]:
    """A NumPy array, or a torch tensor's bytes as a uint8 array."""
    if isinstance(t, np.ndarray):
        return t
    import torch

    return t.reshape(-1).view(torch.uint8).numpy()  # type: ignore[no-any-return]


# --- valid vectors -------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", VALID, ids=ids(VALID))
def test_legofmt_load_numpy_is_bit_exact(entry: dict[str, Any]) -> None:
    got = legofmt.load(VECTORS / entry["file"], framework="np")
    assert_same_np(got, expected_np(entry), entry)


@pytest.mark.parametrize("entry", VALID, ids=ids(VALID))
def test_legofmt_load_torch_is_bit_exact(entry: dict[str, Any]) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    want = load_file(str(VECTORS / entry["expected"]))
    got = legofmt.load(VECTORS / entry["file"])
    assert sorted(got) == sorted(want)
    dtypes, loose = expected_dtypes(entry), nan_any(entry)
    for name, w in want.items():
        g = got[name]
        assert g.dtype == w.dtype, name
        assert g.shape == w.shape, name
        g_bytes, w_bytes = (as_bytes(t.reshape(-1).view(torch.uint8).numpy()) for t in (g, w))
        assert same_bits(g_bytes, w_bytes, dtypes[name], name in loose), name


@pytest.mark.parametrize("entry", VALID, ids=ids(VALID))
def test_reference_decoder_is_bit_exact(entry: dict[str, Any]) -> None:
    got = lgn_decoder.decode(VECTORS / entry["file"])
    assert_same_np(got, expected_np(entry), entry)


@pytest.mark.parametrize("entry", VALID, ids=ids(VALID))
def test_streaming_decode_verify_and_info(entry: dict[str, Any]) -> None:
    path = VECTORS / entry["file"]
    want = expected_np(entry)
    dtypes, loose = expected_dtypes(entry), nan_any(entry)
    with legofmt.open(path, "np") as f:
        f.verify()
        assert sorted(f.keys()) == sorted(want)
        for name in f.keys():
            dtype, shape = f.dtype_and_shape(name)
            assert shape == want[name].shape
            w_bytes = as_bytes(want[name])
            assert same_bits(as_bytes(f.get_tensor(name)), w_bytes, dtypes[name], name in loose), name
            if dtype != "BF16":  # NumPy has no bfloat16: get_tensor gives its bits as uint16
                out = np.empty(shape, dtype=want[name].dtype)
                f.decode_into(name, out)
                assert same_bits(as_bytes(out), w_bytes, dtypes[name], name in loose), name
    info = legofmt.info(path)
    assert sorted(t.name for t in info.tensors) == sorted(want)
    assert info.file_bytes == path.stat().st_size


@pytest.mark.parametrize("entry", VALID, ids=ids(VALID))
def test_plain_safetensors_reader_opens_it(entry: dict[str, Any]) -> None:
    """safetensors.safe_open lists every stored tensor, and raw tensors read as they were."""
    from safetensors import safe_open

    path = VECTORS / entry["file"]
    h = header(path)
    h.pop("__metadata__", None)
    framework = "pt" if any(v["dtype"] == "BF16" for v in h.values()) else "np"
    if framework == "pt":
        pytest.importorskip("torch")
    m = manifest_of(path)
    raw = {t["name"] for t in m["tensors"] if t["encoding"] == "raw"} if m is not None else set(h)
    want = expected_np(entry)
    with safe_open(str(path), framework=framework) as f:
        assert sorted(f.keys()) == sorted(h)
        for name in f.keys():
            t = f.get_tensor(name)
            assert list(t.shape) == h[name]["shape"]
            if name in raw:
                assert as_bytes(to_numpy_bits(t)) == as_bytes(want[name]), name


def test_every_file_is_listed() -> None:
    listed = {e["file"] for e in MANIFEST["vectors"]} | {e["expected"] for e in VALID}
    on_disk = {
        str(p.relative_to(VECTORS)) for sub in ("valid", "invalid") for p in (VECTORS / sub).iterdir() if p.is_file()
    }
    assert on_disk - {"invalid/_base.lgn", "invalid/_base_outliers.lgn"} == listed
    assert len(VALID) >= 30 and len(INVALID) >= 50


def test_manifests_match_the_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "spec" / "lgn-manifest.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    n = 0
    for e in VALID:
        path = VECTORS / e["file"]
        m = manifest_of(path)
        if m is not None:
            if header(path)["__metadata__"]["lgn.version"].startswith("1."):
                for t in m["tensors"]:
                    t.pop("outliers", None)  # major 1: an unknown member, ignored whatever it holds
            validator.validate(m)
            n += 1
    assert n > 20
    bad = {"codebooks": [], "tensors": [{"name": "w", "dtype": "F32", "shape": [2, 2], "encoding": "clustered"}]}
    assert not validator.is_valid(bad)
    stage = {"codebook": 0, "indices": "w.lgn.idx0"}
    w = {"name": "w", "dtype": "F32", "shape": [2, 2], "encoding": "clustered", "stages": [stage]}
    outliers = {"indices": "w.lgn.outlier_index", "values": "w.lgn.outlier_value"}
    assert validator.is_valid({"codebooks": [], "tensors": [{**w, "outliers": outliers}], "crc32": {}})
    for bad_outliers in ({"indices": "w.lgn.outlier_index"}, {**outliers, "values": 3}, [outliers["indices"]]):
        assert not validator.is_valid({"codebooks": [], "tensors": [{**w, "outliers": bad_outliers}], "crc32": {}})
    # Section 6 as settled: null is not absence; clustered-only members are unknown on a raw tensor;
    # dimensions fit in 64 bits.
    for member in ("scale", "outliers", "stages"):
        assert not validator.is_valid({"codebooks": [], "tensors": [{**w, member: None}], "crc32": {}}), member
    raw = {"name": "r", "dtype": "F32", "shape": [3], "encoding": "raw"}
    junk = {"stages": 5, "scale": "row", "outliers": None}
    assert validator.is_valid({"codebooks": [], "tensors": [{**raw, **junk}], "crc32": {}})
    for dim in (2**64 - 1, 2**64):
        m = {"codebooks": [], "tensors": [{**raw, "shape": [dim]}], "crc32": {}}
        assert validator.is_valid(m) == (dim < 2**64), dim


# --- invalid vectors -----------------------------------------------------------------------------


def error_class(entry: dict[str, Any]) -> type[BaseException]:
    cls = getattr(legofmt, entry["error"])
    assert issubclass(cls, legofmt.LgnError)
    return cls  # type: ignore[no-any-return]


def check_error(entry: dict[str, Any], fn: Any) -> None:
    cls = error_class(entry)
    with pytest.raises(legofmt.LgnError) as exc:
        fn()
    assert type(exc.value) is cls, f"raised {type(exc.value).__name__}, expected {cls.__name__}: {exc.value}"
    for word in entry["message_contains"]:
        assert word in str(exc.value), f"{word!r} not in {str(exc.value)!r}"


OPEN = [e for e in INVALID if e["detected_at"] == "open"]
DECODE = [e for e in INVALID if e["detected_at"] == "decode"]


@pytest.mark.parametrize("entry", OPEN, ids=ids(OPEN))
def test_invalid_file_is_rejected_at_open(entry: dict[str, Any]) -> None:
    path = VECTORS / entry["file"]
    check_error(entry, lambda: legofmt.open(path, "np"))
    check_error(entry, lambda: legofmt.load(path, framework="np"))
    check_error(entry, lambda: legofmt.info(path))


@pytest.mark.parametrize("entry", DECODE, ids=ids(DECODE))
def test_invalid_data_is_rejected_at_decode(entry: dict[str, Any]) -> None:
    path = VECTORS / entry["file"]
    with legofmt.open(path, "np") as f:  # the header and the manifest are fine
        assert f.keys()
    check_error(entry, lambda: legofmt.load(path, framework="np"))


@pytest.mark.parametrize("entry", DECODE, ids=ids(DECODE))
def test_invalid_data_is_rejected_by_verify(entry: dict[str, Any]) -> None:
    path = VECTORS / entry["file"]

    def verify() -> None:
        with legofmt.open(path, "np") as f:
            f.verify()

    check_error(entry, verify)


# --- the spec's worked examples, the reference decoder, and the generator ------------------------


def test_bit_order_worked_example() -> None:
    packed = bytes([0xCD, 0x05])
    assert lgn_decoder.unpack_indices(packed, 4, 3).tolist() == [5, 1, 7, 2]
    assert legofmt._legofmt.unpack_indices(np.frombuffer(packed, np.uint8), 3, 4).tolist() == [5, 1, 7, 2]
    assert legofmt._legofmt.pack_indices([5, 1, 7, 2], 3).tobytes() == packed


def test_spec_manifest_example_matches_the_worked_example_vector() -> None:
    text = (ROOT / "spec" / "lgn.md").read_text(encoding="utf-8")
    example = json.loads(text.split("```json\n", 1)[1].split("```", 1)[0])
    actual = manifest_of(VECTORS / "valid" / "spec_worked_example.lgn")
    assert actual is not None
    assert example["codebooks"] == actual["codebooks"]
    assert example["tensors"][0] == actual["tensors"][0]
    assert {k: v for k, v in example["crc32"].items() if k != "bias"} == actual["crc32"]
    bias = np.array([0.5, -1.0, 2.0], dtype="<f4").tobytes()
    assert example["crc32"]["bias"] == zlib.crc32(bias)


def test_reference_decoder_is_independent() -> None:
    tree = ast.parse((ROOT / "spec" / "lgn_decoder.py").read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            modules.add((node.module or "").split(".")[0])
    assert modules <= {
        "__future__",
        "json",
        "math",
        "re",
        "struct",
        "zlib",
        "dataclasses",
        "pathlib",
        "typing",
        "numpy",
    }, modules


def test_generator_is_deterministic(tmp_path: Path) -> None:
    """Re-running generate.py reproduces every committed file byte for byte."""
    subprocess.run(
        [sys.executable, str(VECTORS / "generate.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        env={**os.environ, "RAYON_NUM_THREADS": "1"},
    )
    made = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(
        str(p.relative_to(VECTORS))
        for p in VECTORS.rglob("*")
        if p.is_file() and p.name != "generate.py" and "__pycache__" not in p.parts
    )
    assert made == committed
    for rel in made:
        assert (tmp_path / rel).read_bytes() == (VECTORS / rel).read_bytes(), rel
