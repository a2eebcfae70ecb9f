"""Save/load round trips over random shapes, dtypes, k, block shapes and options.

Invariants checked (issue 2):
- raw tensors come back bit for bit;
- clustered tensors equal the codebook reconstruction computed by the independent reference
  decoder (spec/lgn_decoder.py, written from the spec), bit for bit;
- with ``k >=`` the number of distinct blocks and no scaling, the tensor comes back exactly.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

import legofmt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "spec"))
import lgn_decoder

NP_OF = {"F32": np.float32, "F16": np.float16}


def _bits(a: np.ndarray) -> np.ndarray:
    """Bit patterns of an array, to compare floats exactly (NaN- and -0.0-safe)."""
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64, 1: np.uint8}[a.dtype.itemsize])


def _as_bits(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return _bits(t.numpy())


def _make(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> torch.Tensor:
    x = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
    return x.to({"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[dtype])


shapes = st.lists(st.integers(1, 23), min_size=1, max_size=4).map(tuple)
blocks = st.tuples(st.integers(1, 8), st.integers(1, 8))


@given(
    shapes=st.lists(shapes, min_size=1, max_size=4),
    dtype=st.sampled_from(["F32", "F16", "BF16"]),
    bits=st.integers(1, 16),
    block=blocks,
    stages=st.integers(1, 3),
    scale=st.sampled_from(["none", "tensor", "row"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_round_trip_matches_reference_decoder(shapes, dtype, bits, block, stages, scale, seed):
    rng = np.random.default_rng(seed)
    # k anywhere in the bit-width class: bits b holds k in (2^(b-1), 2^b].
    k = 2 if bits == 1 else int(rng.integers(2 ** (bits - 1) + 1, 2**bits + 1))
    state = {f"t{i}": _make(rng, s, dtype) for i, s in enumerate(shapes)}
    state["bias"] = _make(rng, (5,), dtype)
    state["steps"] = torch.arange(7, dtype=torch.int64)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.lgn")
        report = legofmt.save(state, path, k=k, block=block, stages=stages, scale=scale, seed=seed % 1000, min_size=0)
        assert report.file_bytes == os.path.getsize(path)
        loaded = legofmt.load(path)
        expected = lgn_decoder.decode(path)
        info = legofmt.info(path)
    assert list(loaded) == list(state)
    by_name = {t.name: t for t in report.tensors}
    for name, original in state.items():
        got = loaded[name]
        assert got.dtype == original.dtype and tuple(got.shape) == tuple(original.shape), name
        exp = expected[name]
        assert np.array_equal(_as_bits(got), exp.view(_as_bits(got).dtype)), name
        t = by_name[name]
        if not t.clustered:
            assert np.array_equal(_as_bits(got), _as_bits(original)), name
        elif "own codebook" in t.reason:  # a tensor smaller than one block: the sensitive group
            assert 1 <= t.index_bits <= 8, name
        else:
            # The exact path shrinks k to the number of distinct blocks, so widths can be smaller.
            assert stages <= t.index_bits <= stages * bits, name
    for t in info.tensors:
        assert t.encoding == ("clustered" if by_name[t.name].clustered else "raw")
        assert t.index_bits == by_name[t.name].index_bits


@given(
    rows=st.integers(1, 40),
    cols=st.integers(1, 40),
    block=blocks,
    distinct=st.integers(1, 12),
    dtype=st.sampled_from(["F32", "F16", "BF16"]),
    extra=st.integers(0, 20),
    seed=st.integers(0, 2**32 - 1),
)
def test_k_at_least_distinct_blocks_is_exact(rows, cols, block, distinct, dtype, extra, seed):
    """A tensor built from few distinct blocks comes back exactly when k covers them all."""
    bh, bw = block
    rng = np.random.default_rng(seed)
    gr, gc = -(-rows // bh), -(-cols // bw)
    palette = rng.standard_normal((distinct, bh, bw)).astype(np.float32)
    choice = rng.integers(0, distinct, size=(gr, gc))
    full = palette[choice].transpose(0, 2, 1, 3).reshape(gr * bh, gc * bw)[:rows, :cols]
    t = _make(rng, (rows, cols), dtype)
    t.copy_(torch.from_numpy(np.ascontiguousarray(full)))
    if rows < bh or cols < bw:
        return  # below one block: stored raw, covered by the raw round trip
    # Distinct blocks as stored: edge blocks are zero-padded (spec: block tiling).
    padded = np.zeros((gr * bh, gc * bw), np.float32)
    padded[:rows, :cols] = t.float().numpy()
    tiles = padded.reshape(gr, bh, gc, bw).transpose(0, 2, 1, 3).reshape(gr * gc, bh * bw)
    n_distinct = len(np.unique(tiles, axis=0))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.lgn")
        k = min(65536, max(2, n_distinct + extra))
        report = legofmt.save({"w": t}, path, k=k, block=block, scale="none", stages=1, min_size=0)
        got = legofmt.load(path)["w"]
    assert report.tensors[0].clustered
    assert np.array_equal(_as_bits(got), _as_bits(t))
    assert report.tensors[0].rel_mse == 0.0


def test_k_65536_and_bit_widths_1_to_16_exact_path():
    """Every index width 1..16 through the exact path: k = 2^b distinct 1x1 values."""
    for bits in range(1, 17):
        k = 2**bits
        n = k if k <= 4096 else 4096 + bits  # a few thousand distinct values is enough
        values = np.arange(n, dtype=np.float32).reshape(-1, 1) * 0.5 - 3.0
        x = np.repeat(values, 2, axis=1)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.lgn")
            report = legofmt.save({"w": x}, path, k=k, block=(1, 1), scale="none", stages=1, min_size=0)
            got = legofmt.load(path, framework="np")["w"]
            info = legofmt.info(path)
        assert np.array_equal(got, x), bits
        assert report.tensors[0].index_bits == max(1, math.ceil(math.log2(min(k, max(2, n))))) or bits >= 13
        assert info.tensors[0].encoding == "clustered"


def test_k_65536_with_kmeans():
    """k=65536 with more distinct blocks than k: a real 16-bit fit, decoded like the reference."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((700, 100)).astype(np.float32)  # 70,000 distinct 1x1 blocks
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.lgn")
        report = legofmt.save({"w": x}, path, k=65536, block=(1, 1), max_iter=0, stages=1, min_size=0)
        got = legofmt.load(path, framework="np")["w"]
        expected = lgn_decoder.decode(path)
    assert report.tensors[0].index_bits == 16
    assert np.array_equal(got, expected["w"])
    rel = float(((got - x) ** 2).sum() / (x**2).sum())
    assert abs(rel - report.tensors[0].rel_mse) <= 1e-4 * max(rel, 1e-6)
    assert rel < 1e-3  # 65536 scalar codewords for 70,000 values: a close fit


def test_numpy_round_trip_and_report_error_is_measured():
    """The report's per-tensor error is what the loaded tensor actually has."""
    rng = np.random.default_rng(0)
    state = {"a": rng.standard_normal((64, 96)).astype(np.float32), "b": rng.standard_normal((16, 3, 3, 3))}
    state["b"] = state["b"].astype(np.float16)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.lgn")
        report = legofmt.save(state, path, k=64, min_size=0)
        got = legofmt.load(path, framework="np")
    for t in report.tensors:
        x, y = state[t.name].astype(np.float64), got[t.name].astype(np.float64)
        rel = float(((x - y) ** 2).sum() / (x**2).sum())
        assert got[t.name].dtype == state[t.name].dtype
        assert abs(rel - t.rel_mse) <= 1e-3 * rel + 1e-7, t.name
        assert abs(float(np.abs(x - y).max()) - t.max_abs_err) <= 1e-3 * t.max_abs_err + 1e-6
    assert 0 < report.tensors[0].rel_mse < 1
