"""Streaming: ``open(mmap=False)`` reads on demand and agrees with the memory-mapped reader,
``tensors()`` yields one tensor at a time, and ``load_into`` decodes in place or materializes
a model built on the ``meta`` device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import legofmt


@pytest.fixture
def path(tmp_path):
    g = torch.Generator().manual_seed(0)
    state = {
        "conv.weight": torch.randn(16, 8, 3, 3, generator=g),
        "conv.bias": torch.randn(16, generator=g),
        "fc.weight": torch.randn(10, 144, generator=g).half(),
        "fc.bias": torch.zeros(10).bfloat16(),
        "steps": torch.tensor(7),
    }
    p = tmp_path / "m.lgn"
    legofmt.save(state, p, k=16, min_size=0)
    return p


@pytest.mark.parametrize("framework", ["pt", "np"])
def test_unmapped_reader_agrees_with_the_memory_map(path, framework):
    with legofmt.open(path, framework) as mapped, legofmt.open(path, framework, mmap=False) as unmapped:
        assert unmapped.keys() == mapped.keys()
        assert unmapped.info().tensors == mapped.info().tensors
        unmapped.verify()
        for (name, a), (name2, b) in zip(mapped.tensors(), unmapped.tensors()):
            assert name == name2
            if framework == "pt":
                assert a.dtype == b.dtype and torch.equal(a, b), name
            else:
                assert a.dtype == b.dtype and np.array_equal(a, b), name
            out = torch.zeros_like(b) if framework == "pt" else np.zeros_like(b)
            unmapped.decode_into(name, out)
            assert (torch.equal if framework == "pt" else np.array_equal)(out, a)
    with pytest.raises(legofmt.LgnError, match="closed"):
        unmapped.get_tensor("conv.weight")


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("framework", ["pt", "np"])
def test_get_rows_is_a_slice_of_the_whole_tensor(path, framework, mmap):
    """Row ranges, including ones that start and end inside a block row (2x2 blocks here),
    of clustered (F32 rank 4, F16) and raw tensors decode to exactly the rows of the whole."""
    with legofmt.open(path, framework=framework, mmap=mmap, verify_checksums=not mmap) as f:
        for name in ("conv.weight", "fc.weight", "conv.bias", "fc.bias"):
            whole = f.get_tensor(name)
            n = whole.shape[0]
            for start, stop in [(0, n), (1, 4), (3, 3), (n - 1, n), (5, n - 2)]:
                part = f.get_rows(name, start, stop)
                assert tuple(part.shape) == (stop - start, *whole.shape[1:])
                if framework == "np":
                    assert np.array_equal(part.view(np.uint8), whole[start:stop].view(np.uint8))
                else:
                    assert torch.equal(part, whole[start:stop])
        with pytest.raises(legofmt.InvalidArgumentError, match=r"rows 4:17 are outside tensor 'conv\.weight' of 16"):
            f.get_rows("conv.weight", 4, 17)
        with pytest.raises(legofmt.InvalidArgumentError, match="outside"):
            f.get_rows("conv.weight", 3, 2)
        with pytest.raises(legofmt.InvalidArgumentError, match="scalar"):
            f.get_rows("steps", 0, 1)
        with pytest.raises(legofmt.InvalidArgumentError, match="ints"):
            f.get_rows("conv.weight", 0, 2.0)


def test_unmapped_reader_checks_checksums(path, tmp_path):
    bad = tmp_path / "bad.lgn"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x10  # the last stored tensor
    bad.write_bytes(bytes(data))
    with legofmt.open(bad, mmap=False) as f:
        with pytest.raises(legofmt.ChecksumError):
            f.verify()
        with pytest.raises(legofmt.ChecksumError):
            for _ in f.tensors():
                pass
    with legofmt.open(bad, mmap=False, verify_checksums=False) as f:
        assert len(dict(f.tensors())) == 5


def test_tensors_yields_one_at_a_time(path):
    with legofmt.open(path) as f:
        it = f.tensors()
        name, t = next(it)
        assert name == "conv.weight" and t.shape == (16, 8, 3, 3)
        assert [n for n, _ in it] == f.keys()[1:]


def test_large_tensors_decode_exactly_into_fresh_memory(tmp_path):
    # 8 MiB outputs: large enough for the huge-page advice on the output buffer.
    rng = np.random.default_rng(0)
    codebook = rng.standard_normal((8, 4, 4)).astype(np.float32)
    idx = rng.integers(0, 8, size=(512, 256))
    w = codebook[idx].transpose(0, 2, 1, 3).reshape(2048, 1024)
    p = tmp_path / "big.lgn"
    legofmt.save({"w": w, "v": w[:, :1000].copy()}, p, k=8, block=(4, 4), stages=1, scale="none")
    for mmap in (True, False):
        with legofmt.open(p, mmap=mmap) as f:
            assert np.array_equal(f.get_tensor("w").numpy(), w)
            assert np.array_equal(f.get_tensor("v").numpy(), w[:, :1000])
    loaded = legofmt.load(p)
    assert np.array_equal(loaded["w"].numpy(), w)


class Tied(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(32, 16)
        self.proj = torch.nn.Linear(16, 32, bias=False)
        self.proj.weight = self.emb.weight
        self.norm = torch.nn.BatchNorm1d(16)


def test_load_into_materializes_a_meta_model(tmp_path):
    torch.manual_seed(0)
    model = Tied()
    p = tmp_path / "tied.lgn"
    legofmt.save(model, p, k=16, block=(2, 2))
    expected = legofmt.load(p)
    with torch.device("meta"):
        meta = Tied()
    meta.norm.weight.requires_grad_(False)
    res = legofmt.load_into(meta, p)
    assert res == ([], [])
    for name, t in meta.state_dict().items():
        assert t.device.type == "cpu" and torch.equal(t, expected[name]), name
    assert meta.proj.weight is meta.emb.weight
    assert isinstance(meta.emb.weight, torch.nn.Parameter) and meta.emb.weight.requires_grad
    assert not meta.norm.weight.requires_grad
    assert not isinstance(meta.norm.running_mean, torch.nn.Parameter)
    # The model's dtype wins, as with load_state_dict.
    with torch.device("meta"):
        half = Tied().to(torch.bfloat16)
    legofmt.load_into(half, p)
    assert half.emb.weight.dtype == torch.bfloat16
    assert torch.equal(half.emb.weight, expected["emb.weight"].bfloat16())


def test_load_into_decodes_in_place(path):
    class M(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(8, 16, 3)
            self.fc = torch.nn.Linear(144, 10).half()
            self.fc.bias = torch.nn.Parameter(torch.zeros(10, dtype=torch.bfloat16))
            self.register_buffer("steps", torch.tensor(0))

    m = M()
    ptrs = {k: v.data_ptr() for k, v in m.state_dict().items()}
    legofmt.load_into(m, path)
    assert {k: v.data_ptr() for k, v in m.state_dict().items()} == ptrs
    expected = legofmt.load(path)
    for k, v in m.state_dict().items():
        assert torch.equal(v, expected[k]), k


def test_decode_bytes_and_rewrite_are_public(path, tmp_path):
    """What the CLI and bias correction need from a reader, as public methods: a tensor's
    decoded bytes, and a copy of the file with some stored tensors replaced."""
    with legofmt.open(path, "np") as f:
        for name in f.keys():
            raw = f.decode_bytes(name)
            arr = f.get_tensor(name)
            assert raw.dtype == np.uint8 and raw.tobytes() == arr.tobytes()
        new_bias = np.arange(16, dtype=np.float32)
        size = f.rewrite(tmp_path / "r.lgn", {"conv.bias": new_bias.view(np.uint8)}, {"note": "x"})
    assert size == (tmp_path / "r.lgn").stat().st_size
    with legofmt.open(tmp_path / "r.lgn", "np") as g:
        g.verify()
        assert np.array_equal(g.get_tensor("conv.bias"), new_bias)
        assert g.metadata()["note"] == "x"
        with legofmt.open(path, "np") as f:
            assert np.array_equal(g.get_tensor("conv.weight"), f.get_tensor("conv.weight"))
