"""What each data-free technique adds, one at a time: bias correction, outliers, and target mode's
residual weights, on the real fixtures (prints Markdown tables).

    python benches/ablation.py                 # all three parts, about 15 min on 2 cores
    python benches/ablation.py --part bias     # EfficientNet-Lite0: bias correction on and off
    python benches/ablation.py --part target   # EfficientNet-Lite0: target_ratio=8, three seeds
    python benches/ablation.py --part outliers # all-MiniLM-L6-v2: outlier fractions
    python benches/ablation.py --part calibration  # EfficientNet-Lite0 at 8x: finetune on real
                                                   # ImageNet images, two folds (not in "all")

EfficientNet-Lite0 is measured on the 200 inputs of ``benches/accuracy.py`` (20 ImageNet images x
5 crops x 2 flips: a top-1 flip of one borderline image moves agreement by up to 5 points, so
read the KL column too). The target part turns target mode's residual weights off by replacing
``legofmt._target._error_weights`` (there is no option for it): "off" ranks files by the plain
mean of the tensors' relative errors, as before the weights existed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from typing import Any

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import accuracy
import legofmt
import legofmt._target


def measure(task: accuracy.Task, **opts: Any) -> tuple[float, list[float]]:
    """Saves the task's model with ``opts`` and returns (ratio vs fp32, metrics)."""
    m = task.make()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.lgn")
        r = legofmt.save(task.module(m), path, progress=False, **opts)
        legofmt.load_into(task.module(m), path)
        return r.fp32_bytes / os.path.getsize(path), task.metrics(m)


def header(task: accuracy.Task, first: list[str]) -> None:
    cols = [*first, "ratio vs fp32", *task.columns]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))


def bias(task: accuracy.Task) -> None:
    print("EfficientNet-Lite0, bias correction off and on (0.1% outliers in both):\n")
    header(task, ["setting", "bias correction"])
    settings: list[tuple[str, dict[str, Any]]] = [
        ("defaults (2x2, k=256, 3 stages)", {}),
        ("1x4, k=256, 2 stages", {"block": (1, 4), "stages": 2}),
        ("2x2, k=256, 2 stages", {"block": (2, 2), "stages": 2}),
        ("1x4, k=64, 3 stages", {"block": (1, 4), "k": 64, "stages": 3}),
    ]
    for label, opts in settings:
        for on in (False, True):
            ratio, vals = measure(task, bias_correction=on, **opts)
            print(f"| {label} | {'on' if on else 'off'} | {ratio:.2f}x | {' | '.join(task.cells(vals))} |", flush=True)
    print()


def target(task: accuracy.Task) -> None:
    print("EfficientNet-Lite0, target_ratio=8 (bias correction on), three seeds:\n")
    header(task, ["outliers", "residual weights", "seed"])
    weights = legofmt._target._error_weights
    try:
        for outliers in (0.0, 0.001):
            for on in (False, True):
                legofmt._target._error_weights = weights if on else (lambda found: {})  # type: ignore[assignment]
                for seed in (0, 1, 2):
                    ratio, vals = measure(task, target_ratio=8, outliers=outliers, seed=seed)
                    cells = " | ".join(task.cells(vals))
                    print(f"| {outliers} | {'on' if on else 'off'} | {seed} | {ratio:.2f}x | {cells} |", flush=True)
    finally:
        legofmt._target._error_weights = weights
    print()


def outliers(task: accuracy.Task) -> None:
    print("all-MiniLM-L6-v2, outlier fractions:\n")
    header(task, ["setting", "outliers"])
    settings: list[tuple[str, dict[str, Any]]] = [
        ("1x2, k=256, 1 stage, codebook per tensor", {"block": (1, 2), "stages": 1, "codebook": "tensor"}),
        ("1x4, k=256, 2 stages", {"block": (1, 4), "stages": 2}),
        ("defaults (2x2, k=256, 3 stages)", {}),
    ]
    for label, opts in settings:
        for f in (0.0, 0.001, 0.002):
            ratio, vals = measure(task, outliers=f, **opts)
            print(f"| {label} | {100 * f:.1f}% | {ratio:.2f}x | {' | '.join(task.cells(vals))} |", flush=True)
    print()


def calibration(task: accuracy.Classifier) -> None:
    """The data-aware mode with real ImageNet images instead of CIFAR: the 20 images split in two
    folds of 10 (each image's 10 views stay together); the target_ratio=8 file is fine-tuned on
    one fold's 100 inputs and measured on the other's, and the data-free file on the same fold."""
    print("EfficientNet-Lite0, target_ratio=8, legofmt.finetune on 10 ImageNet images, measured on the other 10:\n")
    print("| calibration | measured on | ratio vs fp32 | top-1 | agreement | KL |")
    print("|---|---|---|---|---|---|")
    image = (np.arange(len(task.x)) % (len(task.x) // 2)) // 5  # x holds 5 crops per image, then their flips
    folds = {"images 1-10": np.flatnonzero(image < 10), "images 11-20": np.flatnonzero(image >= 10)}
    teacher = task.make()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.lgn")
        fp32 = legofmt.save(teacher, path, target_ratio=8, progress=False).fp32_bytes
        for cal, test in (("images 1-10", "images 11-20"), ("images 11-20", "images 1-10")):
            for how, opts in (
                ("none (data-free)", None),
                ("finetune", {}),
                ("finetune, scales=False", {"scales": False}),
            ):
                tuned = os.path.join(d, "t.lgn")
                shutil.copy(path, tuned)
                if opts is not None:
                    legofmt.finetune(teacher, tuned, task.x[folds[cal]], progress=False, **task.finetune, **opts)
                m = task.make()
                legofmt.load_into(m, tuned)
                with torch.no_grad():
                    out = m(task.x[folds[test]])
                vals = task.scores(out, task.base[folds[test]], task.y[folds[test]])
                label = how if opts is None else f"{how} on {cal}"
                cells = " | ".join(task.cells(vals))
                print(f"| {label} | {test} | {fp32 / os.path.getsize(tuned):.2f}x | {cells} |", flush=True)
    print()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["bias", "target", "outliers", "calibration", "all"], default="all")
    a = p.parse_args()
    torch.manual_seed(0)
    np.random.seed(0)
    if a.part in ("bias", "target", "all"):
        effnet = accuracy.Classifier("effnet")
        if a.part in ("bias", "all"):
            bias(effnet)
        if a.part in ("target", "all"):
            target(effnet)
    if a.part == "calibration":
        calibration(accuracy.Classifier("effnet"))
    if a.part in ("outliers", "all"):
        outliers(accuracy.MiniLM())


if __name__ == "__main__":
    main()
