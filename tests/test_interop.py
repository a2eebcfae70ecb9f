"""Interop with the reference safetensors reader (issue 3): every file legofmt.save writes is a
plain safetensors file; raw tensors read through safetensors are the originals, bit for bit."""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors import safe_open

import legofmt


@given(
    shapes=st.lists(st.lists(st.integers(1, 20), min_size=1, max_size=3), min_size=1, max_size=4),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
    k=st.integers(2, 300),
    stages=st.integers(1, 2),
    seed=st.integers(0, 1000),
)
def test_saved_files_open_with_safe_open(shapes, dtype, k, stages, seed):
    g = torch.Generator().manual_seed(seed)
    state = {f"layer{i}.weight": torch.randn(*s, generator=g).to(dtype) for i, s in enumerate(shapes)}
    state["counter"] = torch.arange(4, dtype=torch.int32)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.lgn")
        report = legofmt.save(state, path, k=k, stages=stages, min_size=0, metadata={"origin": "test"})
        with safe_open(path, framework="pt") as f:
            stored = set(f.keys())
            meta = f.metadata()
            raw = {n: f.get_tensor(n) for n in stored if n in state}
        with safe_open(path, framework="np") as f:
            # numpy has no bfloat16: list only (every other stored tensor reads as numpy)
            for n in f.keys():
                if n not in state or state[n].dtype != torch.bfloat16:
                    f.get_tensor(n)
    manifest = json.loads(meta["lgn.manifest"])
    # Format 2.0 exactly when some tensor has outliers (the default keeps 0.1% of each shared
    # tensor's elements: tensors under 1,000 elements have none).
    has_outliers = any(t.outliers for t in report.tensors)
    assert meta["origin"] == "test" and meta["lgn.version"] == ("2.0" if has_outliers else "1.0")
    # What a plain reader sees: the raw tensors under their names, plus the lgn.* pieces.
    for t in report.tensors:
        if t.clustered:
            assert t.name not in stored
            entry = next(e for e in manifest["tensors"] if e["name"] == t.name)
            assert all(s["indices"] in stored for s in entry["stages"])
            if t.outliers:
                assert {entry["outliers"]["indices"], entry["outliers"]["values"]} <= stored
        else:
            assert torch.equal(raw[t.name].view(torch.uint8), state[t.name].contiguous().view(torch.uint8))
    assert {c["tensor"] for c in manifest["codebooks"]} <= stored
    assert set(manifest["crc32"]) == stored


def test_decompressed_file_is_plain_and_equal(tmp_path):
    from safetensors.torch import load_file

    state = {"w": torch.randn(64, 64), "b": torch.randn(64).half()}
    legofmt.save(state, tmp_path / "m.lgn", k=16)
    with legofmt.open(tmp_path / "m.lgn", framework="np") as f:
        decoded = {n: f.get_tensor(n) for n in f.keys()}
    legofmt._legofmt.write_safetensors(
        str(tmp_path / "plain.safetensors"),
        [(n, legofmt._dtypes.np_name(a), list(a.shape), a.reshape(-1).view(np.uint8)) for n, a in decoded.items()],
        None,
    )
    plain = load_file(tmp_path / "plain.safetensors")
    for n, a in decoded.items():
        assert np.array_equal(plain[n].numpy(), a)
