"""Bias correction as :func:`legofmt.save` applies it to a written file.

:mod:`legofmt._bias` finds, in a model's graph, the layers whose output shift can be cancelled;
this module decides whether to try (the ``bias_correction`` option), keeps the corrections of
the layers whose weight was clustered, and rewrites the written file with the corrected raw
tensors (:func:`finish`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _bias
from ._dtypes import torch_bytes
from ._reader import LgnReader
from ._report import TensorReport
from .errors import InvalidArgumentError


def is_module(obj: Any) -> bool:
    """Whether ``obj`` is a ``torch.nn.Module`` (without importing torch: if it was never
    imported, ``obj`` cannot be one)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def analysis(obj: Any) -> _bias.Analysis | None:
    """:func:`legofmt._bias.analyse` of ``obj`` when it is a module, else ``None``."""
    if not is_module(obj):
        return None
    return _bias.analyse(obj)


def wanted_why_not(obj: Any, wanted: bool | None) -> str:
    """The ``bias_correction`` option (checked by :class:`legofmt._options.SaveOptions`) for
    ``obj``: "" when the correction is to be tried, else why not."""
    if wanted is False:
        return "off"
    if not is_module(obj):
        if wanted:
            raise InvalidArgumentError(
                "bias_correction=True needs the torch.nn.Module (its graph tells which layer feeds which), "
                f"got a {type(obj).__name__}"
            )
        return "not a torch.nn.Module"
    return ""


def plan(
    obj: Any, wanted: bool | None, clustered: set[str], found: _bias.Analysis | None = None
) -> tuple[list[_bias.Correction], str]:
    """The bias corrections to make for the layers whose weight is clustered, and a note saying
    why there are none when that is so. ``found``: the module's :func:`analysis` when the caller
    already has it."""
    why = wanted_why_not(obj, wanted)
    if why:
        return [], why
    if found is None:
        found = analysis(obj)
    assert found is not None  # wanted_why_not said obj is a module
    corrections = [c for c in found.corrections if c.weight in clustered]
    if corrections:
        return corrections, ""
    return [], found.note or "no clustered layer to correct"


def finish(
    obj: Any,
    wanted: bool | None,
    src: str,
    dest: str,
    tensors: list[TensorReport],
    found: _bias.Analysis | None = None,
) -> tuple[dict[str, str], str]:
    """Moves the written file ``src`` to ``dest``, bias-corrected if ``wanted`` allows (see
    :func:`plan`); returns the corrected tensors and the note of :class:`SaveReport`."""
    corrections, note = plan(obj, wanted, {t.name for t in tensors if t.clustered}, found)
    if not corrections:
        os.replace(src, dest)
        return {}, note
    try:
        return correct_biases(src, dest, corrections, obj.state_dict()), note
    finally:
        if os.path.exists(src):
            os.remove(src)


def with_reasons(tensors: list[TensorReport], corrected: Mapping[str, str]) -> list[TensorReport]:
    """``tensors`` with the bias-corrected ones saying so in their ``reason``."""
    return [
        dataclasses.replace(t, reason=f"{t.reason}; bias-corrected for {corrected[t.name]}")
        if t.name in corrected
        else t
        for t in tensors
    ]


def correct_biases(
    src: str, dest: str, corrections: list[_bias.Correction], state: Mapping[str, Any]
) -> dict[str, str]:
    """Rewrites ``src`` into ``dest`` with the raw tensors of ``corrections`` moved by the mean
    shift of their layer's clustered weight; returns {corrected tensor: weight}."""
    import torch  # only reached with a torch.nn.Module: torch stays optional for the package

    replace: dict[str, np.ndarray[Any, Any]] = {}
    done: dict[str, str] = {}
    with LgnReader(src, "pt") as f:
        names = set(f.keys())
        for c in corrections:
            if c.target not in names or c.weight not in names or c.target not in state:
                continue
            original = state[c.weight].detach().cpu()
            dw = f.get_tensor(c.weight).double() - original.double()
            delta = _bias.shift(c, dw)
            old = state[c.target].detach().cpu()
            if delta is None or tuple(old.shape) != tuple(delta.shape) or not old.is_floating_point():
                continue
            new = (old.double() + c.sign * delta).to(old.dtype)
            if not bool(torch.isfinite(new).all()):
                continue
            replace[c.target] = torch_bytes(new).copy()
            done[c.target] = c.weight
        note = json.dumps({"corrected": len(done), "method": "data-free, from batch-norm statistics"})
        f.rewrite(dest, replace, {"legofmt.bias_correction": note})
    return done
