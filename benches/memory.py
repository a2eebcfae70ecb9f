"""Peak memory of loading a ~400M-parameter fp32 model (1.6 GB): prints a table.

    python benches/memory.py [--layers 22] [--dir /tmp]

A synthetic model (an embedding of 32768x1024 and ``--layers`` blocks of four 1024x4096
linear weights with biases: 402M parameters for 22 layers) is written once as ``.lgn`` and as
fp32 safetensors. Its weights are made of 16 distinct 4x4 blocks, so ``legofmt.save`` takes the
exact path (no k-means) and the ``.lgn`` file is small; decoding does the same work as for any
file. Each method then runs in a fresh subprocess, which measures its own peak resident set
(``VmHWM`` of ``/proc/self/status``, reset with ``/proc/self/clear_refs`` just before the load
step, so imports and the model's construction are not counted):

- ``load_into, model in memory``: the model is allocated and written first (its 1.6 GB are
  resident before the load), then ``legofmt.load_into`` decodes into its parameters;
- ``load_into, meta model``: the model is built on the ``meta`` device (no memory) and
  ``load_into`` materializes it: the load step itself allocates the model;
- ``stream tensors()``: no model; ``legofmt.open(...).tensors()`` yields one tensor at a time,
  which is summed and dropped (mmap, and ``mmap=False``);
- ``legofmt.load``: the whole file into a new dict of tensors;
- ``safetensors``: ``model.load_state_dict(load_file(...))`` into the model in memory, and
  ``load_file`` with every tensor summed and dropped one by one;
- ``reference``: no file at all, ``numpy.ones`` for every tensor: the time a fresh process
  takes to get the model's size of new memory (first-touch page faults), for scale.

"Extra" is the peak during the load step minus what the loaded tensors must occupy: minus
nothing when the model was already resident, minus the model's size when the step creates the
model (meta model, ``legofmt.load``). The target for legofmt is
``extra <= compressed file + largest tensor + 100 MB``. Memory-mapped file pages that a method
touches count in the resident set (they are page cache: shared and reclaimable, but resident).
The files are deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

MB = 1e6
EMB = (32768, 1024)
WIDTH, HIDDEN = 1024, 4096


def build_model(layers: int) -> object:
    import torch

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q = torch.nn.Linear(WIDTH, HIDDEN, bias=False)
            self.k = torch.nn.Linear(HIDDEN, WIDTH, bias=False)
            self.up = torch.nn.Linear(WIDTH, HIDDEN)
            self.down = torch.nn.Linear(HIDDEN, WIDTH)

    class Synthetic(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(*EMB)
            self.blocks = torch.nn.ModuleList(Block() for _ in range(layers))

    with torch.device("meta"):
        return Synthetic()


def rss() -> tuple[int, int]:
    """(VmRSS, VmHWM) in bytes."""
    got = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                got[line[:5]] = int(line.split()[1]) * 1024
    return got["VmRSS"], got["VmHWM"]


def child(method: str, lgn: str, st: str, layers: int) -> None:
    import torch
    from safetensors.torch import load_file

    import legofmt

    model = build_model(layers)
    if method in ("load_into", "st_load_state_dict"):
        model = model.to_empty(device="cpu")  # type: ignore[attr-defined]
        with torch.no_grad():
            for p in model.parameters():  # type: ignore[attr-defined]
                p.zero_()  # resident before the load step
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before, _ = rss()
    t0 = time.perf_counter()
    if method in ("load_into", "load_into_meta"):
        legofmt.load_into(model, lgn)  # type: ignore[arg-type]
    elif method in ("stream", "stream_unmapped"):
        with legofmt.open(lgn, mmap=method == "stream") as r:
            for _, t in r.tensors():
                float(t.sum())
                del t
    elif method == "load":
        state = legofmt.load(lgn)
    elif method == "st_load_state_dict":
        model.load_state_dict(load_file(st))  # type: ignore[attr-defined]
    elif method == "st_stream":
        for t in load_file(st).values():
            float(t.sum())
    elif method == "fill":
        import numpy as np

        state = {k: np.ones(tuple(v.shape), np.float32) for k, v in model.state_dict().items()}  # type: ignore[attr-defined]
    else:
        raise SystemExit(f"unknown method {method}")
    seconds = time.perf_counter() - t0
    after, peak = rss()
    print(json.dumps({"before": before, "peak": peak, "after": after, "seconds": seconds}))
    if method in ("load", "fill"):
        del state


METHODS = [
    # (method, label, subtract the model's size from the peak)
    ("load_into", "legofmt load_into, model in memory", False),
    ("load_into_meta", "legofmt load_into, meta model", True),
    ("stream", "legofmt open().tensors(), no model", False),
    ("stream_unmapped", "legofmt open(mmap=False).tensors(), no model", False),
    ("load", "legofmt.load (new dict)", True),
    ("st_load_state_dict", "safetensors load_state_dict(load_file), model in memory", False),
    ("st_stream", "safetensors load_file + sum each, no model", False),
    ("fill", "reference: new memory of the model's size (numpy.ones)", True),
]


LEGOFMT = [(m, label) for m, label, _ in METHODS if not m.startswith(("st_", "fill"))]


def write_files(d: str, layers: int) -> tuple[str, str, int, int, int, float]:
    import numpy as np
    from safetensors.numpy import save_file

    import legofmt

    rng = np.random.default_rng(0)
    codebook = rng.standard_normal((16, 4, 4)).astype(np.float32)
    state = {}
    for name, t in build_model(layers).state_dict().items():  # type: ignore[attr-defined]
        shape = tuple(t.shape)
        if len(shape) == 2:
            idx = rng.integers(0, len(codebook), size=(shape[0] // 4, shape[1] // 4), dtype=np.uint8)
            state[name] = codebook[idx].transpose(0, 2, 1, 3).reshape(shape)
        else:
            state[name] = rng.standard_normal(shape).astype(np.float32)
    numel = sum(a.size for a in state.values())
    largest = max(a.nbytes for a in state.values())
    lgn, st = os.path.join(d, "model.lgn"), os.path.join(d, "model.safetensors")
    t0 = time.perf_counter()
    legofmt.save(state, lgn, k=16, block=(4, 4), stages=1, scale="none", progress=False)
    save_seconds = time.perf_counter() - t0
    save_file(state, st)
    return lgn, st, numel, largest, os.path.getsize(lgn), save_seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=22)
    p.add_argument("--dir", default=tempfile.gettempdir(), help="where the two files are written (about 1.7 GB)")
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        method, lgn, st, layers = a.child
        child(method, lgn, st, int(layers))
        return

    d = tempfile.mkdtemp(prefix="legofmt-memory-", dir=a.dir)
    try:
        lgn, st, numel, largest, lgn_bytes, save_seconds = write_files(d, a.layers)
        model_bytes = 4 * numel
        target = lgn_bytes + largest + 100 * MB
        print(
            f"Synthetic model: {numel / 1e6:.0f}M fp32 parameters ({model_bytes / MB:.0f} MB), largest tensor "
            f"{largest / MB:.0f} MB; .lgn {lgn_bytes / MB:.1f} MB (saved in {save_seconds:.0f} s), safetensors "
            f"{os.path.getsize(st) / MB:.0f} MB. Target for legofmt: extra <= {lgn_bytes / MB:.1f} + "
            f"{largest / MB:.0f} + 100 = {target / MB:.0f} MB."
        )
        print()
        print(f"| {'method':<56} | {'peak - before (MB)':>18} | {'extra (MB)':>10} | {'time (s)':>8} | target |")
        print(f"|{'-' * 58}|{'-' * 20}|{'-' * 12}|{'-' * 10}|{'-' * 8}|")
        for method, label, minus_model in METHODS:
            out = subprocess.run(
                [sys.executable, __file__, "--child", method, lgn, st, str(a.layers)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            r = json.loads(out.strip().splitlines()[-1])
            grew = r["peak"] - r["before"]
            extra = grew - (model_bytes if minus_model else 0)
            ok = ("yes" if extra <= target else "NO") if method in dict(LEGOFMT) else "-"
            print(
                f"| {label:<56} | {round(grew / MB):18d} | {round(extra / MB):10d} | {r['seconds']:8.2f} | {ok:>6} |",
                flush=True,
            )
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
