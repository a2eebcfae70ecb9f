"""The data-aware mode, ``legofmt.finetune``: codebooks and scales move, nothing else does.

Synthetic MLPs keep these tests fast; tests/test_models.py checks the mode on the real MNIST
CNN with held-out digits.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import torch
from safetensors import safe_open

import legofmt


def mlp(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 128), torch.nn.GELU(), torch.nn.Linear(128, 10)
    ).eval()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b) ** 2).mean() / (b**2).mean())


def stored(path: os.PathLike[str] | str) -> tuple[dict[str, bytes], dict[str, str]]:
    with safe_open(os.fspath(path), framework="np") as f:
        return {n: f.get_tensor(n).tobytes() for n in f.keys()}, f.metadata()


def data_section(path) -> int:
    """Bytes after the safetensors header."""
    raw = path.read_bytes()
    return len(raw) - 8 - int.from_bytes(raw[:8], "little")


@pytest.fixture
def saved(tmp_path):
    model = mlp(0)
    path = tmp_path / "m.lgn"
    # Coarse on purpose (4x4 blocks, k=16, one stage): there is much to recover.
    legofmt.save(model, path, k=16, block=(4, 4), stages=1, min_size=0)
    return model, path


def outputs(model: torch.nn.Module, path, x: torch.Tensor) -> torch.Tensor:
    m = mlp(1)
    legofmt.load_into(m, path)
    with torch.no_grad():
        return m(x)


def test_finetune_lowers_held_out_error_and_touches_only_codebooks_and_scales(saved):
    model, path = saved
    torch.manual_seed(5)
    calib, held_out = torch.randn(512, 64), torch.randn(512, 64)
    with torch.no_grad():
        want = model(held_out)
    before_err = rel_err(outputs(model, path, held_out), want)
    before_bytes, before_md = stored(path)
    data_bytes = data_section(path)

    report = legofmt.finetune(model, path, calib, steps=150, batch_size=64, progress=False)

    assert report.written and report.loss_after < 0.7 * report.loss_before, report
    after_err = rel_err(outputs(model, path, held_out), want)
    assert after_err < 0.7 * before_err, (before_err, after_err)
    assert data_section(path) == data_bytes  # only the header grows (the metadata note)
    legofmt.open(path).verify()
    after_bytes, after_md = stored(path)
    manifest = json.loads(after_md["lgn.manifest"])
    tunable = {c["tensor"] for c in manifest["codebooks"]}
    tunable |= {t["scale"]["tensor"] for t in manifest["tensors"] if t.get("scale")}
    assert report.tuned_tensors == len(tunable)
    assert after_bytes.keys() == before_bytes.keys()
    for name in before_bytes:
        if name in tunable:
            assert after_bytes[name] != before_bytes[name], name
        else:  # indices and raw tensors are copied byte for byte
            assert after_bytes[name] == before_bytes[name], name
    # The manifest is the same but for the checksums of the tuned tensors.
    old = json.loads(before_md["lgn.manifest"])
    assert {k: v for k, v in manifest.items() if k != "crc32"} == {k: v for k, v in old.items() if k != "crc32"}
    note = json.loads(after_md["legofmt.finetune"])
    assert note["steps"] == 150 and note["loss_after"] == pytest.approx(report.loss_after)
    assert 0 < report.best_step <= 150 and note["best_step"] == report.best_step


def test_teacher_is_not_modified_and_out_leaves_the_source(saved, tmp_path):
    model, path = saved
    weights = {n: t.clone() for n, t in model.state_dict().items()}
    original = path.read_bytes()
    out = tmp_path / "tuned.lgn"
    model.train()
    report = legofmt.finetune(model, path, torch.randn(128, 64), steps=20, out=out, loss="kl", progress=False)
    assert model.training  # the mode is restored
    assert all(torch.equal(weights[n], t) for n, t in model.state_dict().items())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert path.read_bytes() == original
    assert report.path == os.fspath(out) and out.exists() == report.written
    if report.written:
        legofmt.open(out).verify()


def test_batches_forward_and_numpy_inputs(saved):
    model, path = saved
    x = np.random.default_rng(0).standard_normal((96, 64)).astype(np.float32)
    batches = [{"x": torch.from_numpy(x[i : i + 32])} for i in range(0, 96, 32)]
    r1 = legofmt.finetune(model, path, batches, steps=5, forward=lambda m, b: m(b["x"]), scales=False, progress=False)
    assert r1.steps == 5
    r2 = legofmt.finetune(model, path, x, steps=5, batch_size=32, progress=False)
    # The same batches as arrays: the loss starts where the first call left the file.
    assert r2.loss_before == pytest.approx(r1.loss_after if r1.written else r1.loss_before, rel=1e-5)


def test_zero_steps_leaves_the_file_unchanged(saved):
    model, path = saved
    original = path.read_bytes()
    r = legofmt.finetune(model, path, torch.randn(16, 64), steps=0, progress=False)
    assert not r.written and r.best_step == 0 and r.loss_after == r.loss_before
    assert path.read_bytes() == original


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"steps": -1}, "steps"),
        ({"lr": 0.0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"loss": "hinge"}, "loss"),
    ],
)
def test_bad_arguments(saved, kwargs, words):
    model, path = saved
    with pytest.raises(legofmt.InvalidArgumentError, match=words):
        legofmt.finetune(model, path, torch.randn(8, 64), **kwargs)


def test_wrong_model_or_file(saved, tmp_path):
    model, path = saved
    other = torch.nn.Sequential(torch.nn.Linear(64, 64))
    with pytest.raises(legofmt.InvalidArgumentError, match="not tensors of the model"):
        legofmt.finetune(other, path, torch.randn(8, 64))
    plain = tmp_path / "plain.safetensors"
    legofmt._legofmt.write_safetensors(plain, [("w", "F32", [2], np.zeros(8, np.uint8))])
    with pytest.raises(legofmt.InvalidArgumentError, match=r"not an \.lgn file"):
        legofmt.finetune(model, plain, torch.randn(8, 64))
    with pytest.raises(legofmt.InvalidArgumentError, match="empty"):
        legofmt.finetune(model, path, torch.randn(0, 64))


def test_early_stopping_never_keeps_a_worse_state(saved):
    """A step size far too large makes training diverge: the held-out loss picks the best
    state seen, which is never worse than the file as it was."""
    model, path = saved
    original = path.read_bytes()
    r = legofmt.finetune(model, path, torch.randn(256, 64), steps=30, lr=50.0, batch_size=32, progress=False)
    assert r.loss_after <= r.loss_before
    if not r.written:
        assert path.read_bytes() == original
    else:
        assert 0 < r.best_step <= 30


def test_rebuild_reads_the_format_version(saved, tmp_path):
    """The torch rebuild reads ``lgn.version`` and refuses a major it does not know, with a
    typed error naming the file and the version."""
    from legofmt._finetune import _manifest

    assert _manifest("m.lgn", {"lgn.version": "1.0", "lgn.manifest": '{"tensors": []}'}) == {"tensors": []}
    assert _manifest("m.lgn", {"lgn.version": "2.0", "lgn.manifest": "{}"}) == {}
    for version in ("3.0", "", "x.y"):
        with pytest.raises(legofmt.UnsupportedVersionError, match=re.escape(f"m.lgn: lgn.version '{version}'")):
            _manifest("m.lgn", {"lgn.version": version, "lgn.manifest": "{}"})
    # A file of a newer major is refused before anything is read from it.
    model, path = saved
    with safe_open(path, framework="pt") as f:
        md = dict(f.metadata())
        tensors = {n: f.get_tensor(n) for n in f.keys()}
    md["lgn.version"] = "3.0"
    from safetensors.torch import save_file

    save_file(tensors, tmp_path / "v3.lgn", metadata=md)
    with pytest.raises(legofmt.UnsupportedVersionError, match=r"3\.0"):
        legofmt.finetune(model, tmp_path / "v3.lgn", torch.randn(8, 64), steps=1, progress=False)
