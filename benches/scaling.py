"""Scalings that format 1.0 does not have, emulated, against the row scales it has (issue 5).

    python benches/scaling.py                 # all three fixtures (about 5 minutes on 2 cores)
    python benches/scaling.py --model minilm

``.lgn`` 1.0 stores one scale per output row (or per tensor), the largest absolute value of the
row, refit by least squares after clustering. This bench asks whether other scalings would keep
more accuracy at the same setting, without changing the format to find out: each variant
divides every tensor legofmt clusters by its own scales before ``legofmt.save``, multiplies the
decoded tensor back, refits the scales by least squares on the result (as the encoder does for
row scales), and counts its scales as F16 bytes on top of the file:

* ``row absmax`` is legofmt as it is (the reference row);
* ``row RMS``: one scale per row, the row's root mean square instead of its largest value;
* ``column RMS x row absmax``: a scale per column of the 2-D view (its RMS, normalised to a
  geometric mean of 1), then legofmt's row scales: two-sided scaling, for the input features
  with large activations that transformers are known for;
* ``groups of 64 absmax``: a scale per 64 consecutive weights of a row (Q4_0/NF4-style).

The metrics are those of ``benches/accuracy.py`` on the same inputs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import legofmt
from accuracy import Classifier, MiniLM, Task

#: The setting per model: where clustering loses accuracy but does not collapse.
SETTINGS = {"mnist": ((4, 4), 1), "effnet": ((2, 2), 2), "minilm": ((2, 2), 2)}
VARIANTS = ["row absmax", "row RMS", "column RMS x row absmax", "groups of 64 absmax"]


def _f16(x: torch.Tensor) -> torch.Tensor:
    return x.half().float()


def _floor(s: torch.Tensor) -> torch.Tensor:
    """Scales of all-zero rows/columns/groups become a small positive number (nothing to scale)."""
    top = float(s.max()) if s.numel() else 0.0
    return s.clamp_min(top * 1e-3 if top > 0 else 1.0)


def _scales(w: torch.Tensor, variant: str) -> tuple[torch.Tensor, int, str]:
    """Per-element multipliers ``m`` (the variant clusters ``w / m``), their F16 count, and the
    legofmt ``scale`` option to save with."""
    rows, cols = w.shape
    if variant == "row RMS":
        r = _f16(_floor(w.pow(2).mean(1).sqrt()))
        return r[:, None].expand(rows, cols), rows, "none"
    if variant == "column RMS x row absmax":
        c = _floor(w.pow(2).mean(0).sqrt())
        c = _f16(c / c.log().mean().exp())
        return c[None, :].expand(rows, cols), cols, "row"  # legofmt adds its row scales
    if variant == "groups of 64 absmax":
        groups = -(-cols // 64)
        padded = torch.nn.functional.pad(w.abs(), (0, groups * 64 - cols)).reshape(rows, groups, 64)
        g = _f16(_floor(padded.amax(2)))
        return g.repeat_interleave(64, 1)[:, :cols], rows * groups, "none"
    raise ValueError(variant)


def _refit(w: torch.Tensor, q: torch.Tensor, variant: str) -> torch.Tensor:
    """Least-squares refit of the variant's own scales (legofmt refits its row scales itself)."""
    if variant == "row RMS":
        a = (w * q).sum(1) / (q * q).sum(1).clamp_min(1e-30)
        return q * torch.where(a > 0, a, torch.ones_like(a))[:, None]
    if variant == "groups of 64 absmax":
        rows, cols = w.shape
        groups = -(-cols // 64)
        pad = groups * 64 - cols
        wp = torch.nn.functional.pad(w, (0, pad)).reshape(rows, groups, 64)
        qp = torch.nn.functional.pad(q, (0, pad)).reshape(rows, groups, 64)
        a = (wp * qp).sum(2) / (qp * qp).sum(2).clamp_min(1e-30)
        a = torch.where(a > 0, a, torch.ones_like(a))
        return (qp * a[:, :, None]).reshape(rows, groups * 64)[:, :cols]
    return q


def run(task: Task, model_name: str, folder: str) -> list[str]:
    block, stages = SETTINGS[model_name]
    out = []
    path = os.path.join(folder, "v.lgn")
    for variant in VARIANTS:
        model = task.make()
        module = task.module(model)
        ref = {k: v.detach().clone() for k, v in module.state_dict().items()}
        if variant == "row absmax":
            report = legofmt.save(module, path, block=block, stages=stages, progress=False)
            names = [t.name for t in report.tensors if t.clustered]  # the same tensors for every variant
            extra, mult = 0, {}
        else:
            state = dict(ref)
            mult, extra = {}, 0
            for n in names:
                w = ref[n].reshape(ref[n].shape[0], -1)
                m, count, scale = _scales(w, variant)
                mult[n] = m
                extra += 2 * count
                state[n] = (w / m).reshape(ref[n].shape)
            report = legofmt.save(state, path, block=block, stages=stages, scale=scale, progress=False)
        decoded = legofmt.load(path)
        errs = []
        for n in names:
            w = ref[n].reshape(ref[n].shape[0], -1)
            q = decoded[n].reshape(w.shape)
            if n in mult:
                q = _refit(w, q * mult[n], variant)
            decoded[n] = q.reshape(ref[n].shape)
            errs.append(float((w - q).pow(2).sum() / w.pow(2).sum().clamp_min(1e-30)))
        module.load_state_dict(decoded)
        ratio = 4 * report.numel / (report.file_bytes + extra)
        vals = task.metrics(model)
        cells = task.cells(vals)
        head = f"{block[0]}x{block[1]}, {stages} stage{'s' * (stages > 1)}"
        out.append(
            f"| {model_name} | {head} | {variant} | {ratio:.2f}x | {max(errs):.4f} | {sum(errs) / len(errs):.4f} | "
            + " / ".join(f"{c} {v}" for c, v in zip(task.columns, cells))
            + " |"
        )
        print(out[-1], flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["mnist", "effnet", "minilm", "all"], default="all")
    a = p.parse_args()
    models = ["mnist", "effnet", "minilm"] if a.model == "all" else [a.model]
    print("| model | setting | scaling | ratio vs fp32 | worst rel. MSE | mean rel. MSE | metrics |")
    print("|---|---|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for name in models:
            task: Task = MiniLM() if name == "minilm" else Classifier(name)
            run(task, name, folder)


if __name__ == "__main__":
    main()
