"""Writing one ``.lgn`` file from checked options: the codebook groups and the tensors'
assignment to them (from :mod:`legofmt._policy`), the call into the Rust core, the report,
and bias correction of the written file (:mod:`legofmt._bias_glue`)."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from . import _bias_glue, _legofmt
from ._dtypes import np_bytes, np_name, torch_bytes, torch_name
from ._options import SaveOptions
from ._policy import RAW, SENSITIVE, SHARED, Decision, decide
from ._progress import CompressProgress, GroupPlan, ProgressLine
from ._report import SaveReport, TensorReport
from .errors import InvalidArgumentError

PathLike = Union[str, "os.PathLike[str]"]
#: ``(name, dtype name, shape, uint8 view of the bytes)`` of one tensor to save.
Item = tuple[str, str, tuple[int, ...], np.ndarray[Any, Any]]


def tensor_items(obj: Any) -> list[Item]:
    """(name, dtype name, shape, uint8 view) for a module, a dict of tensors or a dict of arrays."""
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise InvalidArgumentError(
            f"save() takes a torch.nn.Module or a dict of tensors/arrays, got {type(obj).__name__}"
        )
    items = []
    for name, value in obj.items():
        if not isinstance(name, str):
            raise InvalidArgumentError(f"tensor names must be str, got {name!r}")
        if isinstance(value, np.ndarray):
            items.append((name, np_name(value), tuple(value.shape), np_bytes(value)))
        elif type(value).__module__.startswith("torch") and hasattr(value, "dtype"):
            items.append((name, torch_name(value), tuple(value.shape), torch_bytes(value)))
        else:
            raise InvalidArgumentError(
                f"value of {name!r} is a {type(value).__name__}, not a torch.Tensor or numpy.ndarray"
            )
    return items


@dataclass
class Layout:
    """Where each tensor goes: the policy's decisions, the codebook groups passed to the core
    (dicts of k/block/scale/outliers/stages), each tensor's group (``None``: raw), the stage
    count of each tensor of the global group (``None``: its group's), and a :class:`GroupPlan`
    per group for the progress display."""

    decisions: list[Decision]
    groups: list[dict[str, Any]]
    group_of: list[int | None]
    per_tensor: list[int | None]
    plans: list[GroupPlan]


def _count(stages: Any) -> int:
    """A stage count for the progress estimate (the core rejects a bad one with its own message)."""
    return stages if isinstance(stages, int) else 1


def layout(items: list[Item], opts: SaveOptions) -> Layout:
    """The codebook groups of ``items`` under ``opts``."""
    sensitive = opts.sensitive
    decisions = [
        decide(
            n,
            d,
            s,
            block=opts.block,
            raw=opts.raw,
            min_size=opts.min_size,
            cluster_depthwise=opts.cluster_depthwise,
            sensitive=None if sensitive is None else sensitive["block"],
        )
        for n, d, s, _ in items
    ]
    stages_of = [opts.stages_for(n) for n, _, _, _ in items]
    spec = {"k": opts.k, "block": opts.block, "scale": opts.scale, "outliers": opts.outliers}
    shapes = [s for _, _, s, _ in items]
    if opts.codebook == "global":
        # One group: stage s has one codebook, shared by every tensor with more than s stages
        # (nested stages), so a tensor given fewer stages adds no codebook.
        shared = [dec.target == SHARED for dec in decisions]
        most = max((s for s, sh in zip(stages_of, shared) if sh), default=stages_of[0])
        group_of: list[int | None] = [0 if sh else None for sh in shared]
        groups = [{**spec, "stages": most}]
        per_tensor = [s if sh else None for s, sh in zip(stages_of, shared)]
        members = [(shapes[i], _count(stages_of[i])) for i, sh in enumerate(shared) if sh]
        plans = [GroupPlan.of(opts.k, opts.block, _count(most), members, "shared codebook")]
    else:  # one codebook (per stage) for each tensor of the shared codebook
        order = [i for i, dec in enumerate(decisions) if dec.target == SHARED]
        group_of = [order.index(i) if i in order else None for i in range(len(decisions))]
        groups = [{**spec, "stages": stages_of[i]} for i in order] or [{**spec, "stages": stages_of[0]}]
        per_tensor = [None] * len(decisions)
        plans = [
            GroupPlan.of(opts.k, opts.block, _count(stages_of[i]), [(shapes[i], _count(stages_of[i]))], items[i][0])
            for i in order
        ] or [GroupPlan.of(opts.k, opts.block, _count(stages_of[0]), [])]
    if any(dec.target == SENSITIVE for dec in decisions):
        assert sensitive is not None
        groups.append(dict(sensitive))
        group_of = [len(groups) - 1 if dec.target == SENSITIVE else g for g, dec in zip(group_of, decisions)]
        members = [(shapes[i], sensitive["stages"]) for i, dec in enumerate(decisions) if dec.target == SENSITIVE]
        plans.append(
            GroupPlan.of(sensitive["k"], sensitive["block"], sensitive["stages"], members, "sensitive tensors")
        )
    return Layout(decisions, groups, group_of, per_tensor, plans)


def temp_beside(path: PathLike) -> str:
    """A new temporary file name in ``path``'s folder (so that a rename can replace ``path``)."""
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".lgn.tmp")
    os.close(fd)
    return tmp


def _tensor_reports(r: Mapping[str, Any], decisions: list[Decision]) -> list[TensorReport]:
    """The core's per-tensor results with the policy's reasons."""
    return [
        TensorReport(
            name=t["name"],
            dtype=t["dtype"],
            shape=tuple(t["shape"]),
            clustered=t["clustered"],
            stored_bytes=t["stored_bytes"],
            index_bits=t["index_bits"],
            rel_mse=t["rel_mse"],
            max_abs_err=t["max_abs_err"],
            outliers=t["outliers"],
            reason=dec.reason,
            codebook="" if dec.target == RAW else dec.target,
        )
        for t, dec in zip(r["tensors"], decisions)
    ]


def compress_file(
    obj: Any,
    path: PathLike,
    opts: SaveOptions,
    *,
    line: ProgressLine | None = None,
    span: tuple[float, float] = (0.0, 1.0),
    prefix: str = "",
) -> SaveReport:
    """Writes ``obj`` to ``path`` with ``opts`` (the block shape and stages fixed: no search).
    ``line``: the job's progress display, of which this file is part ``span``."""
    items = tensor_items(obj)
    if not items:
        raise InvalidArgumentError("nothing to save: the model or dict has no tensors")
    lay = layout(items, opts)
    tensors = [(n, d, list(s), data, g) for (n, d, s, data), g in zip(items, lay.group_of)]
    why_not = _bias_glue.wanted_why_not(obj, opts.bias_correction)
    # With bias correction the clustered file is written aside, then rewritten to ``path`` with
    # the corrected raw tensors: ``path`` never holds a partial or uncorrected file.
    aside = not why_not
    out = temp_beside(path) if aside else os.fspath(path)
    elements = sum(math.prod(s) for _, _, s, _ in items)
    progress = None if line is None else CompressProgress(lay.plans, elements, line, span=span, prefix=prefix)
    try:
        r = _legofmt.compress_to_file(
            out,
            tensors,
            lay.groups,
            seed=opts.seed,
            batch_size=opts.batch_size,
            max_iter=opts.max_iter,
            metadata=opts.metadata,
            progress=progress,
            stages=lay.per_tensor,
        )
    except BaseException:
        if aside and os.path.exists(out):
            os.remove(out)
        raise
    reports = _tensor_reports(r, lay.decisions)
    corrected: dict[str, str] = {}
    note = why_not
    if aside:
        corrected, note = _bias_glue.finish(obj, opts.bias_correction, out, os.fspath(path), reports)
        reports = _bias_glue.with_reasons(reports, corrected)
    return SaveReport(
        path=os.fspath(path),
        file_bytes=os.path.getsize(path) if aside else r["file_bytes"],
        fp32_bytes=r["fp32_bytes"],
        source_bytes=r["source_bytes"],
        numel=r["numel"],
        seconds=r["seconds"],
        tensors=reports,
        codebooks=r["codebooks"],
        bias_corrected=corrected,
        bias_note=note,
    )
