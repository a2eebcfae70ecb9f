"""Decode and load throughput: prints two tables.

    python benches/decode.py [--blocks 1600000] [--k 256] [--repeat 7] [--small 1000]

**One large tensor.** ``--blocks`` 4x4 blocks (1.6M blocks = 25.6M weights, ResNet-50's size)
with a k=256 codebook and one stage, no scales, written once; then, in the same run:

- ``memcpy``: copying the decoded tensor's bytes into an existing array (numpy ``copyto``);
- ``numpy gather``: ``codebook[idx]`` plus untiling with numpy (indices already unpacked);
- ``legofmt decode_into``: unpack + gather + untile straight into an existing tensor;
- ``new memory``: ``torch.empty`` (advised for huge pages, as legofmt does) + ``fill_``: the
  page faults and zero-filling of fresh memory plus one write, what any loader that returns
  new private memory pays at least;
- ``legofmt.load``: the whole file into new torch tensors (mmap, and ``open(mmap=False)``);
- ``safetensors load_file``: tensors that *are* a copy-on-write memory map of the fp32 file
  (no allocation, no copy), alone, with every page touched (``sum()``), and with ``clone()``
  (private memory, as ``torch.load`` or any decoder must give).

**Many small tensors** (``--small``, half 64x64 clustered, half 64-element raw): per-tensor
overhead of ``legofmt.load`` against ``safetensors load_file``.

The best of ``--repeat`` runs is reported (files in the page cache).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import legofmt

HUGE = 2 << 20


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def thp_empty(shape: tuple[int, ...]) -> torch.Tensor:
    """``torch.empty`` whose 2 MiB-aligned interior is advised for transparent huge pages
    (what legofmt's decode does to its output; numpy does it for every large array)."""
    t = torch.empty(shape)
    if sys.platform == "linux":
        p, n = t.data_ptr(), t.nbytes
        b, e = -(-p // HUGE) * HUGE, (p + n) // HUGE * HUGE
        if e > b:
            libc = ctypes.CDLL(None)
            libc.madvise(ctypes.c_void_p(b), ctypes.c_size_t(e - b), 14)  # MADV_HUGEPAGE
    return t


def blocks_tensor(rng: np.random.Generator, codebook: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """A (rows, cols) matrix made of the codebook's 4x4 blocks: compression takes the exact
    path (fast) and the decode work is the same as for a k-means codebook."""
    idx = rng.integers(0, len(codebook), size=(rows // 4, cols // 4))
    return codebook[idx].transpose(0, 2, 1, 3).reshape(rows, cols)


def large(a: argparse.Namespace, d: str) -> None:
    rows = 2048
    cols = a.blocks * 16 // rows
    rng = np.random.default_rng(0)
    codebook = rng.standard_normal((a.k, 4, 4)).astype(np.float32)
    w = blocks_tensor(rng, codebook, rows, cols)
    nbytes = w.nbytes
    lgn = os.path.join(d, "w.lgn")
    st = os.path.join(d, "w.safetensors")
    legofmt.save({"w": w}, lgn, k=a.k, block=(4, 4), stages=1, scale="none", min_size=0)
    save_file({"w": torch.from_numpy(w)}, st)

    out = np.empty_like(w)
    src = w.copy()
    t_memcpy = best(lambda: np.copyto(out, src), a.repeat)
    gr, gc = rows // 4, cols // 4
    flat_idx = rng.integers(0, a.k, size=gr * gc)

    def numpy_gather() -> None:
        blocks = codebook[flat_idx].reshape(gr, gc, 4, 4)
        np.copyto(out, blocks.transpose(0, 2, 1, 3).reshape(rows, cols))

    t_numpy = best(numpy_gather, a.repeat)
    with legofmt.open(lgn, framework="np") as f:
        t_decode = best(lambda: f.decode_into("w", out), a.repeat)
    assert np.array_equal(out, w)
    t_new = best(lambda: thp_empty((rows, cols)).fill_(1.0), a.repeat)
    t_new_4k = best(lambda: torch.empty((rows, cols)).fill_(1.0), a.repeat)
    t_load = best(lambda: legofmt.load(lgn), a.repeat)

    def unmapped() -> None:
        with legofmt.open(lgn, mmap=False) as f:
            f.get_tensor("w")

    t_unmapped = best(unmapped, a.repeat)
    t_st = best(lambda: load_file(st), a.repeat)
    t_st_touch = best(lambda: float(load_file(st)["w"].sum()), a.repeat)
    t_st_clone = best(lambda: load_file(st)["w"].clone(), a.repeat)
    sizes = (os.path.getsize(lgn), os.path.getsize(st))

    gbs = lambda t: nbytes / t / 1e9  # noqa: E731
    print(
        f"One tensor: {a.blocks:,} 4x4 blocks ({rows}x{cols} fp32, {nbytes / 1e6:.0f} MB), k={a.k}, "
        f"threads={torch.get_num_threads()}, .lgn {sizes[0] / 1e6:.1f} MB vs fp32 {sizes[1] / 1e6:.1f} MB"
    )
    print()
    print(f"| {'method':<46} | {'time (ms)':>9} | {'GB/s out':>8} | {'vs memcpy':>9} |")
    print(f"|{'-' * 48}|{'-' * 11}|{'-' * 10}|{'-' * 11}|")
    for name, t in [
        ("memcpy into existing memory (numpy copyto)", t_memcpy),
        ("numpy codebook[idx] + untile", t_numpy),
        ("legofmt decode_into (existing tensor)", t_decode),
        ("new memory: torch.empty + fill_, 4 KiB pages", t_new_4k),
        ("new memory: torch.empty + fill_, huge pages", t_new),
        ("legofmt.load (new tensors)", t_load),
        ("legofmt.open(mmap=False).get_tensor", t_unmapped),
        ("safetensors load_file (mmap, untouched)", t_st),
        ("safetensors load_file + touch (sum)", t_st_touch),
        ("safetensors load_file + clone (private copy)", t_st_clone),
    ]:
        print(f"| {name:<46} | {1000 * t:9.1f} | {gbs(t):8.2f} | {100 * t_memcpy / t:8.0f}% |")


def small(a: argparse.Namespace, d: str) -> None:
    rng = np.random.default_rng(1)
    codebook = rng.standard_normal((16, 4, 4)).astype(np.float32)
    n = a.small // 2
    sd = {f"layer{i}.weight": blocks_tensor(rng, codebook, 64, 64) for i in range(n)}
    sd.update({f"layer{i}.bias": rng.standard_normal(64).astype(np.float32) for i in range(n)})
    lgn = os.path.join(d, "small.lgn")
    st = os.path.join(d, "small.safetensors")
    legofmt.save(sd, lgn, k=16, block=(4, 4), stages=1, scale="none", min_size=0)
    save_file({k: torch.from_numpy(v) for k, v in sd.items()}, st)
    rows = [
        ("legofmt.load", best(lambda: legofmt.load(lgn), a.repeat)),
        ("legofmt.load(framework='np')", best(lambda: legofmt.load(lgn, framework="np"), a.repeat)),
        ("safetensors load_file", best(lambda: load_file(st), a.repeat)),
        (
            "safetensors load_file + touch (sum)",
            best(lambda: [float(v.sum()) for v in load_file(st).values()], a.repeat),
        ),
    ]
    print()
    print(f"Many small tensors: {len(sd)} tensors ({n} clustered 64x64, {n} raw [64]), fp32")
    print()
    print(f"| {'method':<46} | {'time (ms)':>9} | {'us/tensor':>9} |")
    print(f"|{'-' * 48}|{'-' * 11}|{'-' * 11}|")
    for name, t in rows:
        print(f"| {name:<46} | {1000 * t:9.1f} | {1e6 * t / len(sd):9.1f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--blocks", type=int, default=1_600_000)
    p.add_argument("--k", type=int, default=256)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--small", type=int, default=1000, help="tensors in the second table (0: skip it)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        large(a, d)
        if a.small:
            small(a, d)


if __name__ == "__main__":
    main()
