"""The optional data-aware mode: fine-tune a saved file's codebooks (and scales) on calibration
inputs, by distillation from the uncompressed model.

Block clustering fixes, per block, *which* codeword it uses (the indices). What the codewords
and the per-row scales hold can still move: every weight of the network is a differentiable
function of them (section 9 of the spec, "Reconstruction"). :func:`finetune` rebuilds the
clustered weights from the file's codebooks, indices and scales with torch, runs the model on
calibration inputs with those weights (and with the file's raw tensors where they differ from the
model's: bias correction moves biases and running means), and moves the codewords and scales by
Adam so that the outputs match the uncompressed model's outputs on the same inputs (no labels
needed). Only the
codebooks and scales change, so the data keeps its size and layout: the indices, the raw tensors
and the manifest are copied, the CRC-32s of the changed tensors recomputed
(:meth:`legofmt.LgnReader.rewrite`).

This is off by default and separate from :func:`legofmt.save`, which never sees data.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from . import _legofmt
from ._dtypes import require_torch
from ._progress import enabled
from ._reader import LgnReader
from .errors import InvalidArgumentError, UnsupportedVersionError

if TYPE_CHECKING:
    import torch

PathLike = Union[str, "os.PathLike[str]"]
LossFn = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]

#: Major versions of the format whose manifest the torch rebuild (:class:`_Clustered`) reads:
#: 1.x, and 2.x, which adds exactly stored outliers.
REBUILD_MAJORS = (1, 2)


def _manifest(path: str, md: Mapping[str, str]) -> dict[str, Any]:
    """The manifest of the file ``path`` from its ``__metadata__`` ``md``, after checking that
    ``lgn.version`` is a version the rebuild understands."""
    if "lgn.manifest" not in md:
        raise InvalidArgumentError(f"{path}: not an .lgn file (no lgn.manifest)")
    version = md.get("lgn.version", "")
    major = version.split(".")[0]
    if not major.isdigit() or int(major) not in REBUILD_MAJORS:
        raise UnsupportedVersionError(
            f"{path}: lgn.version {version!r}: finetune rebuilds files of format major version "
            f"{' or '.join(map(str, REBUILD_MAJORS))} only"
        )
    manifest: dict[str, Any] = json.loads(md["lgn.manifest"])
    return manifest


@dataclass(frozen=True)
class FinetuneReport:
    """What :func:`finetune` did."""

    path: str
    #: Optimiser steps taken, and the step whose state was kept (0: none, the file is unchanged).
    steps: int
    best_step: int
    #: Loss on the held-out calibration batches (every fifth; all batches when there is only
    #: one) before fine-tuning and at the kept step.
    loss_before: float
    loss_after: float
    #: False when fine-tuning never lowered the held-out loss: the file was then left unchanged.
    written: bool
    #: Codebook and scale tensors changed.
    tuned_tensors: int
    seconds: float


def _output(y: Any) -> torch.Tensor:
    """The tensor of a model output (a tensor, a tuple/list, a dict, or a ModelOutput)."""
    import torch

    if isinstance(y, torch.Tensor):
        return y
    if hasattr(y, "last_hidden_state"):
        return y.last_hidden_state  # type: ignore[no-any-return]
    if isinstance(y, Mapping):
        return _output(next(iter(y.values())))
    if isinstance(y, (tuple, list)) and y:
        return _output(y[0])
    raise InvalidArgumentError(f"the model returned a {type(y).__name__}; pass forward= returning a tensor")


def _call(module: Any, batch: Any) -> Any:
    if isinstance(batch, Mapping):
        return module(**batch)
    if isinstance(batch, (tuple, list)):
        return module(*batch)
    return module(batch)


def _loss_fn(loss: str | LossFn) -> LossFn:
    import torch

    if callable(loss):
        return loss
    if loss == "mse":
        # Relative: the mean squared error over the teacher's mean square, so that the value
        # reads the same whatever the output's scale.
        return lambda s, t: ((s - t) ** 2).mean() / (t**2).mean().clamp_min(1e-12)
    if loss == "kl":
        return lambda s, t: torch.nn.functional.kl_div(
            s.flatten(0, -2).log_softmax(-1),
            t.flatten(0, -2).log_softmax(-1),
            log_target=True,
            reduction="batchmean",
        )
    raise InvalidArgumentError(f"loss must be 'mse', 'kl' or a callable, got {loss!r}")


def _batches(inputs: Any, batch_size: int) -> list[Any]:
    import torch

    if isinstance(inputs, torch.Tensor):
        if inputs.shape[0] == 0:
            raise InvalidArgumentError("inputs is empty")
        return list(inputs.split(batch_size))  # type: ignore[no-untyped-call]
    if isinstance(inputs, np.ndarray):
        return _batches(torch.from_numpy(inputs), batch_size)
    if isinstance(inputs, Iterable):
        batches = list(inputs)
        if not batches:
            raise InvalidArgumentError("inputs is empty")
        return batches
    raise InvalidArgumentError(
        f"inputs must be a tensor of inputs or an iterable of batches, got {type(inputs).__name__}"
    )


def _le_bytes(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The little-endian bytes of ``a``, flat."""
    return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).reshape(-1).view(np.uint8)


class _Clustered:
    """One clustered tensor of the file, rebuilt differentiably from codebooks and scales."""

    def __init__(self, entry: dict[str, Any], codebooks: list[dict[str, Any]], stored: Any) -> None:
        import torch

        self.name: str = entry["name"]
        self.shape = tuple(entry["shape"])
        rows = self.shape[0]
        cols = math.prod(self.shape[1:])
        bh, bw = codebooks[entry["stages"][0]["codebook"]]["block"]
        self.rows, self.cols, self.bh, self.bw = rows, cols, bh, bw
        self.gr, self.gc = -(-rows // bh), -(-cols // bw)
        n = self.gr * self.gc
        self.stages: list[tuple[int, torch.Tensor]] = []
        for st in entry["stages"]:
            cb = codebooks[st["codebook"]]
            packed = stored.get_tensor(st["indices"]).numpy()
            idx = _legofmt.unpack_indices(packed, cb["bits"], n)
            self.stages.append((st["codebook"], torch.from_numpy(idx.astype(np.int64))))
        self.scale = entry.get("scale")
        # Format 2.0: elements stored exactly, which replace the reconstruction (not tuned).
        self.outliers: tuple[torch.Tensor, torch.Tensor] | None = None
        if entry.get("outliers"):
            o = entry["outliers"]
            pos = torch.from_numpy(stored.get_tensor(o["indices"]).numpy().astype(np.int64))
            self.outliers = (pos, stored.get_tensor(o["values"]).float())

    def weight(self, codebooks: Sequence[torch.Tensor], scales: dict[str, torch.Tensor]) -> torch.Tensor:
        acc = None
        for c, idx in self.stages:
            v = codebooks[c][idx]
            acc = v if acc is None else acc + v
        assert acc is not None
        w = acc.view(self.gr, self.gc, self.bh, self.bw).permute(0, 2, 1, 3).reshape(self.gr * self.bh, -1)
        w = w[: self.rows, : self.cols]
        if self.scale is not None:
            s = scales[self.scale["tensor"]]
            w = w * (s[:, None] if self.scale["mode"] == "row" else s[0])
        if self.outliers is not None:
            pos, values = self.outliers
            w = w.reshape(-1).index_put((pos,), values)
        return w.reshape(self.shape)


@dataclass
class _Stored:
    """What :func:`finetune` reads from the file: its manifest, the clustered tensors rebuilt
    differentiably, the codebooks as parameters, the stored scales, the raw tensors that differ
    from the model's, and the model's parameters and buffers by name."""

    manifest: dict[str, Any]
    clustered: list[_Clustered]
    cbs: list[torch.nn.Parameter]
    scale0: dict[str, torch.Tensor]
    raw: dict[str, torch.Tensor]
    params: dict[str, torch.Tensor]


def _read_stored(path: str, model: torch.nn.Module) -> _Stored:
    """Reads the file ``path`` for fine-tuning ``model`` (checking that its clustered tensors
    are tensors of the model, of the same shapes)."""
    import torch

    try:
        from safetensors import safe_open
    except ImportError as e:  # pragma: no cover - exercised only without safetensors
        raise ImportError("legofmt.finetune needs safetensors: pip install 'legofmt[torch]'") from e

    # The reader checks the file (every checksum and index); the layout of the clustered
    # tensors (which stored tensors hold their indices, scales, outliers) is the manifest's.
    reader = LgnReader(path, "np")
    try:
        reader.verify()
        with safe_open(path, framework="pt") as f:
            manifest = _manifest(path, f.metadata() or {})
            params: dict[str, torch.Tensor] = dict(model.named_parameters())
            params.update(dict(model.named_buffers()))
            entries = [t for t in manifest["tensors"] if t["encoding"] == "clustered"]
            missing = [t["name"] for t in entries if t["name"] not in params]
            if missing:
                raise InvalidArgumentError(
                    f"{path}: clustered tensor(s) {', '.join(missing[:5])} are not tensors of the model"
                )
            for t in entries:
                if tuple(params[t["name"]].shape) != tuple(t["shape"]):
                    raise InvalidArgumentError(
                        f"{path}: tensor {t['name']!r} is {t['shape']} in the file but "
                        f"{list(params[t['name']].shape)} in the model"
                    )
            clustered = [_Clustered(t, manifest["codebooks"], f) for t in entries]
            cbs = [
                torch.nn.Parameter(f.get_tensor(c["tensor"]).float().reshape(c["k"], -1).clone())
                for c in manifest["codebooks"]
            ]
            scale_names = sorted({c.scale["tensor"] for c in clustered if c.scale is not None})
            scale0 = {n: f.get_tensor(n) for n in scale_names}
            # The student runs with the file's raw tensors where they differ from the model's
            # (bias correction moves biases and running means): it is the model as loaded.
            raw: dict[str, torch.Tensor] = {}
            for t in manifest["tensors"]:
                own = params.get(t["name"])
                if t["encoding"] != "raw" or own is None or tuple(own.shape) != tuple(t["shape"]):
                    continue
                stored_raw = f.get_tensor(t["name"]).to(own.dtype)
                if not torch.equal(stored_raw, own.detach().cpu()):
                    raw[t["name"]] = stored_raw.to(own.device)
    finally:
        reader.close()
    return _Stored(manifest, clustered, cbs, scale0, raw, params)


def finetune(
    model: torch.nn.Module,
    path: PathLike,
    inputs: Any,
    *,
    steps: int = 200,
    lr: float = 1e-2,
    batch_size: int = 32,
    loss: str | LossFn = "mse",
    forward: Callable[[torch.nn.Module, Any], Any] | None = None,
    scales: bool = True,
    out: PathLike | None = None,
    seed: int = 0,
    progress: bool | None = None,
) -> FinetuneReport:
    """Fine-tunes the codebooks (and per-row scales) of the ``.lgn`` file ``path`` so that
    ``model`` run with the file's weights reproduces ``model``'s own outputs on ``inputs``.

    ``model`` is the uncompressed model the file was saved from (``legofmt.save(model, path)``,
    same tensor names); it is used as the teacher and is not modified. ``inputs`` is a tensor
    of calibration inputs (cut into batches of ``batch_size``) or an iterable of batches (a
    tensor, a tuple of positional arguments or a dict of keyword arguments each). ``forward``
    (``forward(module, batch) -> output``) replaces the plain call; an output that is not a
    tensor is reduced to one (``last_hidden_state``, or the first element).

    ``loss``: ``"mse"`` (default; relative mean squared error of the outputs), ``"kl"`` (KL
    divergence of the softmax of the last dimension, for classifier logits) or a callable
    ``loss(student, teacher)``. Every fifth batch (the last one if there are fewer than five;
    none if there is only one) is held out: ``steps`` Adam steps cycle over the other batches,
    the held-out loss is measured about ten times along the way, and the state with the lowest
    held-out loss is kept (early stopping against overfitting a small calibration set). ``lr``
    is relative (each codebook's step is ``lr`` times its RMS value; scales move by ``exp`` of
    a parameter). With ``scales=False`` only the codebooks move.

    The result is written to ``out`` (default: ``path`` itself, atomically) only if the
    held-out loss went down; the data keeps its size, layout and indices, and the file records
    what was done under the metadata key ``legofmt.finetune``. Calibration inputs should look
    like the inputs the model will see: a held-out loss measured on unlike inputs can improve
    while real accuracy falls.
    """
    require_torch()
    import torch

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise InvalidArgumentError(f"steps must be an int >= 0, got {steps!r}")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise InvalidArgumentError(f"lr must be a positive number, got {lr!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not isinstance(model, torch.nn.Module):
        raise InvalidArgumentError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    lossf = _loss_fn(loss)
    path = os.fspath(path)
    dest = os.fspath(out) if out is not None else path
    batches = _batches(inputs, batch_size)
    t0 = time.perf_counter()

    stored = _read_stored(path, model)
    manifest, clustered, cbs, scale0, raw = stored.manifest, stored.clustered, stored.cbs, stored.scale0, stored.raw
    params, scale_names = stored.params, sorted(scale0)
    log_s = {n: torch.nn.Parameter(torch.zeros(s.shape)) for n, s in scale0.items()}

    def scale_values(stored: bool = False) -> dict[str, torch.Tensor]:
        """The scales; with ``stored``, rounded to their stored dtype as the file will hold them."""
        v = {n: scale0[n].float() * torch.exp(log_s[n]) for n in scale_names}
        return {n: s.to(scale0[n].dtype).float() for n, s in v.items()} if stored else v

    fwd = forward if forward is not None else _call

    class _Wrapped(torch.nn.Module):
        """``fwd(model, batch)`` as a module, so that functional_call can swap the weights."""

        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, batch: Any) -> Any:
            return fwd(self.m, batch)

    wrapped = _Wrapped()

    def run(batch: Any, w: dict[str, torch.Tensor] | None) -> torch.Tensor:
        if w is None:
            return _output(fwd(model, batch))
        swapped = {"m." + k: v for k, v in w.items()}
        return _output(torch.func.functional_call(wrapped, swapped, (batch,), strict=False))

    def weights(stored: bool = False) -> dict[str, torch.Tensor]:
        sv = scale_values(stored)
        return {**raw, **{c.name: c.weight(cbs, sv).to(params[c.name].dtype) for c in clustered}}

    was_training = model.training
    model.eval()
    # The model's own parameters must not collect gradients (it is the user's model).
    grads = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in grads:
        p.requires_grad_(False)
    torch.manual_seed(seed)
    try:
        with torch.no_grad():
            teacher = [run(b, None).detach() for b in batches]

        # Every fifth batch (when there are at least two) is held out: the loss on those picks
        # the best state seen (early stopping) and decides whether the file is rewritten.
        nb = len(batches)
        val = ([i for i in range(nb) if i % 5 == 4] or [nb - 1]) if nb >= 2 else []
        train = [i for i in range(len(batches)) if i not in val]
        judged = val or train

        def mean_loss() -> float:
            with torch.no_grad():
                w = weights(stored=True)
                return float(sum(float(lossf(run(batches[i], w), teacher[i])) for i in judged) / len(judged))

        def snapshot() -> list[torch.Tensor]:
            return [t.detach().clone() for t in [*cbs, *log_s.values()]]

        before = mean_loss()
        best, best_state, best_step = before, snapshot(), 0
        groups: list[dict[str, Any]] = [
            {"params": [c], "lr": lr * max(float(c.detach().pow(2).mean().sqrt()), 1e-8)} for c in cbs
        ]
        if scales and log_s:
            groups.append({"params": list(log_s.values()), "lr": lr})
        opt = torch.optim.Adam(groups)
        check_every = max(1, min(len(train), steps // 10 or 1))
        bar = None
        if enabled(progress):
            from tqdm.auto import tqdm

            bar = tqdm(total=steps, desc="fine-tuning codebooks", unit="step", leave=False)
        for step in range(1, steps + 1):
            i = train[(step - 1) % len(train)]
            opt.zero_grad()
            value = lossf(run(batches[i], weights()), teacher[i])
            value.backward()  # type: ignore[no-untyped-call]
            opt.step()
            if step % check_every == 0 or step == steps:
                current = mean_loss()
                if current < best:
                    best, best_state, best_step = current, snapshot(), step
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(value):.4g}", held_out=f"{best:.4g}")
        if bar is not None:
            bar.close()
        with torch.no_grad():
            for t, v in zip([*cbs, *log_s.values()], best_state):
                t.copy_(v)
        after = best
    finally:
        model.train(was_training)
        for p, flag in grads:
            p.requires_grad_(flag)

    written = best_step > 0
    tuned = 0
    if written:
        replace: dict[str, np.ndarray[Any, Any]] = {}
        for c, p in zip(manifest["codebooks"], cbs):
            replace[c["tensor"]] = _le_bytes(p.detach().float().numpy())
        if scales:
            for n, v in scale_values().items():
                replace[n] = _le_bytes(v.detach().to(scale0[n].dtype).numpy())
        tuned = len(replace)
        note = json.dumps(
            {
                "steps": steps,
                "best_step": best_step,
                "batches": len(batches),
                "held_out_batches": len(val),
                "loss_before": before,
                "loss_after": after,
                "scales": scales,
            }
        )
        with LgnReader(path, "np") as reader:
            reader.rewrite(dest, replace, {"legofmt.finetune": note})
    return FinetuneReport(
        path=dest,
        steps=steps,
        best_step=best_step,
        loss_before=before,
        loss_after=after,
        written=written,
        tuned_tensors=tuned,
        seconds=time.perf_counter() - t0,
    )
