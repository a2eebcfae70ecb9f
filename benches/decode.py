"""Decode throughput on ResNet-50-shaped weights (issue 4): prints a table.

    python benches/decode.py [--blocks 1600000] [--k 256] [--repeat 5]

One tensor of ``--blocks`` 4x4 blocks (1.6M blocks = 25.6M weights, ResNet-50's size) with a
k=256 codebook and one stage, no scales, is written once; then, in the same run:

- ``memcpy``: copying the decoded tensor's bytes (numpy ``copyto``), the bandwidth bound;
- ``numpy gather``: ``codebook[idx]`` plus untiling with numpy (indices already unpacked);
- ``legofmt decode_into``: unpack + gather + untile straight into a preallocated tensor;
- ``legofmt.load``: the whole file into new torch tensors;
- ``safetensors load_file``: the fp32 file with every page touched (``sum()``).

Throughput is GB/s of decoded fp32 output; the best of ``--repeat`` runs is reported.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import legofmt


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--blocks", type=int, default=1_600_000)
    p.add_argument("--k", type=int, default=256)
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()

    rows = 2048
    cols = a.blocks * 16 // rows
    rng = np.random.default_rng(0)
    # A tensor made of exactly k distinct 4x4 blocks: compression takes the exact path (fast)
    # and the decode work is the same as for a k-means codebook.
    codebook = rng.standard_normal((a.k, 4, 4)).astype(np.float32)
    gr, gc = rows // 4, cols // 4
    idx = rng.integers(0, a.k, size=(gr, gc))
    w = codebook[idx].transpose(0, 2, 1, 3).reshape(rows, cols)
    nbytes = w.nbytes

    with tempfile.TemporaryDirectory() as d:
        lgn = os.path.join(d, "w.lgn")
        st = os.path.join(d, "w.safetensors")
        legofmt.save({"w": w}, lgn, k=a.k, block=(4, 4), stages=1, scale="none", min_size=0)
        save_file({"w": torch.from_numpy(w)}, st)

        out = np.empty_like(w)
        src = w.copy()
        t_memcpy = best(lambda: np.copyto(out, src), a.repeat)

        flat_idx = idx.reshape(-1)

        def numpy_gather() -> None:
            blocks = codebook[flat_idx].reshape(gr, gc, 4, 4)
            np.copyto(out, blocks.transpose(0, 2, 1, 3).reshape(rows, cols))

        t_numpy = best(numpy_gather, a.repeat)

        with legofmt.open(lgn, framework="np") as f:
            t_decode = best(lambda: f.decode_into("w", out), a.repeat)
        assert np.array_equal(out, w)

        t_load = best(lambda: legofmt.load(lgn), a.repeat)
        t_st = best(lambda: float(load_file(st)["w"].sum()), a.repeat)
        sizes = (os.path.getsize(lgn), os.path.getsize(st))

    gbs = lambda t: nbytes / t / 1e9  # noqa: E731
    print(
        f"decode benchmark: {a.blocks:,} 4x4 blocks ({rows}x{cols} fp32, {nbytes / 1e6:.0f} MB), k={a.k}, "
        f"threads={torch.get_num_threads()}, .lgn {sizes[0] / 1e6:.1f} MB vs fp32 {sizes[1] / 1e6:.1f} MB"
    )
    print()
    print(f"| {'method':<34} | {'time (ms)':>9} | {'GB/s out':>8} | {'vs memcpy':>9} |")
    print(f"|{'-' * 36}|{'-' * 11}|{'-' * 10}|{'-' * 11}|")
    for name, t in [
        ("memcpy (numpy copyto)", t_memcpy),
        ("numpy codebook[idx] + untile", t_numpy),
        ("legofmt decode_into", t_decode),
        ("legofmt.load (new tensors)", t_load),
        ("safetensors load_file + touch", t_st),
    ]:
        print(f"| {name:<34} | {1000 * t:9.1f} | {gbs(t):8.2f} | {100 * t_memcpy / t:8.0f}% |")


if __name__ == "__main__":
    main()
