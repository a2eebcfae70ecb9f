"""Outliers (format 2.0): ``legofmt.save(..., outliers=f)`` stores the elements largest relative
to their row exactly, beside the clustered blocks, and every reader path applies them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open

import legofmt
from legofmt.errors import InvalidArgumentError

SPIKES = [(0, 0), (3, 17), (3, 18), (40, 5), (63, 47)]


def spiky(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 48, generator=g) * 0.05
    for i, (r, c) in enumerate(SPIKES):
        w[r, c] = (-1) ** i * (3.0 + i)
    return w.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_outliers_come_back_exactly(tmp_path, dtype):
    w = spiky(dtype)
    path = tmp_path / "o.lgn"
    report = legofmt.save({"w": w}, path, k=16, block=(2, 4), stages=1, min_size=0, outliers=0.01)
    t = report.tensors[0]
    assert t.clustered and t.outliers == int(0.01 * w.numel())
    got = legofmt.load(path)["w"]
    assert got.dtype == dtype
    for r, c in SPIKES:
        assert got[r, c].view(torch.int16 if dtype != torch.float32 else torch.int32) == w[r, c].view(
            torch.int16 if dtype != torch.float32 else torch.int32
        )
    info = legofmt.info(path)
    assert info.version == "2.0" and info.tensors[0].outliers == t.outliers
    rel = float(((got.double() - w.double()) ** 2).sum() / (w.double() ** 2).sum())
    assert rel == pytest.approx(t.rel_mse, rel=1e-6)
    # Without outliers the spikes squeeze their rows and the file is worse, and stays 1.0.
    plain = legofmt.save({"w": w}, tmp_path / "p.lgn", k=16, block=(2, 4), stages=1, min_size=0, outliers=0.0)
    assert plain.tensors[0].outliers == 0 and legofmt.info(tmp_path / "p.lgn").version == "1.0"
    assert t.rel_mse < 0.5 * plain.tensors[0].rel_mse


def test_row_ranges_and_plain_safetensors_view(tmp_path):
    w = spiky()
    path = tmp_path / "o.lgn"
    legofmt.save({"w": w}, path, k=16, block=(2, 2), stages=2, min_size=0, outliers=0.02)
    whole = legofmt.load(path)["w"]
    with legofmt.open(path) as f:
        for a, b in [(0, 1), (3, 4), (5, 41), (63, 64)]:
            assert torch.equal(f.get_rows("w", a, b), whole[a:b])
    with safe_open(path, framework="np") as f:
        keys = set(f.keys())
        assert {"w.lgn.outlier_index", "w.lgn.outlier_value"} <= keys
        pos = f.get_tensor("w.lgn.outlier_index")
        val = f.get_tensor("w.lgn.outlier_value")
    assert pos.dtype == np.uint32 and val.dtype == np.float32 and np.all(np.diff(pos.astype(np.int64)) > 0)
    flat = w.reshape(-1).numpy()
    assert np.array_equal(val, flat[pos])


def test_outliers_option_errors(tmp_path):
    w = {"w": spiky()}
    for bad in (-0.1, 0.7, True, "0.1"):
        with pytest.raises(InvalidArgumentError, match="outliers"):
            legofmt.save(w, tmp_path / "x.lgn", min_size=0, outliers=bad)
    with pytest.raises(InvalidArgumentError, match="sensitive: outliers"):
        legofmt.save(w, tmp_path / "x.lgn", sensitive={"outliers": 1.0})
    assert not (tmp_path / "x.lgn").exists()


def test_finetune_keeps_outliers(tmp_path):
    """The data-aware mode rebuilds weights with their outliers and copies them unchanged."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(48, 64), torch.nn.Tanh(), torch.nn.Linear(64, 8))
    with torch.no_grad():
        model[0].weight.copy_(spiky())
    path = tmp_path / "m.lgn"
    legofmt.save(model, path, k=8, block=(1, 4), stages=1, min_size=0, outliers=0.01)
    before = legofmt.load(path)["0.weight"]
    x = torch.randn(200, 48)
    r = legofmt.finetune(model, path, x, steps=30, batch_size=50, progress=False)
    assert r.written
    after = legofmt.load(path)["0.weight"]
    with safe_open(path, framework="np") as f:
        pos = f.get_tensor("0.weight.lgn.outlier_index").astype(np.int64)
    assert torch.equal(after.reshape(-1)[pos], model[0].weight.detach().reshape(-1)[pos])
    assert not torch.equal(after, before)  # the codebooks moved
