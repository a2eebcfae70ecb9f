"""The public functions: save, load, load_into, open, info."""

from __future__ import annotations

import fnmatch
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Union

import numpy as np

from . import _legofmt
from ._dtypes import NP_DTYPES, np_bytes, np_name, require_torch, torch_bytes, torch_dtypes, torch_name
from ._legofmt import MAX_BLOCK_SIDE, MAX_K, MAX_OUTLIER_FRACTION, MAX_STAGES, MIN_K
from ._policy import RAW, SENSITIVE, SHARED, decide
from ._report import FileInfo, SaveReport, TensorInfo, TensorReport
from .errors import InvalidArgumentError

if TYPE_CHECKING:
    import torch

PathLike = Union[str, "os.PathLike[str]"]
Framework = Literal["pt", "np"]

#: Defaults, chosen from the measured accuracy tables in the README ("Defaults"): 4x4 blocks
#: destroyed EfficientNet-Lite0 at every stage count we tried, 2x2 blocks with three residual
#: stages of k=256 kept 100% top-1 agreement on it (95% with the earlier k-means) and 100% on the MNIST CNN.
DEFAULT_K = 256
DEFAULT_BLOCK = (2, 2)
DEFAULT_STAGES = 3

#: Tensors with fewer elements than this are sensitive (their own codebook) unless ``min_size``
#: says otherwise.
DEFAULT_MIN_SIZE = 4096
#: The codebook group of the sensitive tensors (depthwise convolutions, tensors under
#: ``min_size``): 1x1 blocks, k=256, one stage, row scales, i.e. an 8-bit non-uniform scalar
#: code per row. On EfficientNet-Lite0 it takes the defaults from 4.10x to 4.65x at the same
#: 100% agreement, where 4-bit codes (k=16, or 1x2 blocks) for these tensors cost 48-55 points.
DEFAULT_SENSITIVE: dict[str, Any] = {"block": (1, 1), "k": 256, "stages": 1, "scale": "row", "outliers": 0.0}

#: Largest ``outliers`` fraction (the format stores each outlier in 8 bytes).
MAX_OUTLIERS = MAX_OUTLIER_FRACTION
#: Fraction of each shared-codebook tensor's elements stored exactly by default (format 2.0):
#: 0.1% costs about 0.064 bits per weight (1.4% of a default file). Measured (README, "Outliers"):
#: all-MiniLM-L6-v2's defaults keep cosine 0.9959 instead of 0.9934 (1x2 blocks, one stage:
#: MRR 0.158 -> 0.515), EfficientNet-Lite0's KL 0.0063 instead of 0.0106; a transformer's few
#: extreme weights are what a codebook fitted by squared error serves worst.
DEFAULT_OUTLIERS = 0.001

#: Options accepted by :func:`save` besides ``k``, ``block`` and ``seed``.
SAVE_OPTIONS: dict[str, str] = {
    "stages": (
        f"residual stages (1..16): each clusters what the previous ones left; default {DEFAULT_STAGES}; "
        "or a dict {tensor name or glob pattern: stages} (exact names first, then patterns in order; "
        "'*' sets the rest, else the default)"
    ),
    "scale": "'row' (default: each row's largest |value|), 'row-rms' (each row's RMS), 'tensor' or 'none'",
    "raw": "glob patterns of tensor names stored unchanged, e.g. ['*.bias', 'fc.*']",
    "min_size": "tensors with fewer elements are sensitive: own codebook, or raw (default 4096)",
    "cluster_depthwise": "cluster depthwise convolutions into the shared codebook (default False: sensitive)",
    "sensitive": (
        "codebook of the sensitive tensors (depthwise convolutions, tensors under min_size): a dict of "
        "block/k/stages/scale (default 1x1 blocks, k=256, 1 stage, row scales: 8 bits a weight) or 'raw'"
    ),
    "codebook": "'global' (default): one codebook per stage shared by all tensors; 'tensor': one per tensor",
    "outliers": (
        "fraction (0..0.5) of each shared-codebook tensor's elements stored exactly, those largest relative "
        f"to their row's RMS, 8 bytes each, zero for clustering; none where the codebook is exact (default "
        f"{DEFAULT_OUTLIERS}; files with outliers are format 2.0)"
    ),
    "batch_size": "k-means mini-batch size",
    "max_iter": "k-means iteration budget",
    "metadata": "dict of str -> str stored in the file's __metadata__",
    "target_ratio": "search block and per-tensor stages: least mean tensor error at >= this ratio vs fp32",
    "max_error": "search for the smallest file whose worst clustered tensor has relative MSE <= this",
    "candidates": "with target_ratio/max_error: list of option dicts to try instead of the built-in list",
    "progress": "show a progress bar (default: when stderr is a terminal)",
    "bias_correction": (
        "cancel the mean shift clustering adds to each layer's output, estimated from the model's batch "
        "norms without data (needs the torch.nn.Module); True, False, or None (default: when given a module)"
    ),
}


def _tensor_items(obj: Any) -> list[tuple[str, str, tuple[int, ...], np.ndarray[Any, Any]]]:
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


def _stages_for(name: str, stages: Any) -> Any:
    """The stage count of tensor ``name``: ``stages`` itself, or its entry for the name (exact
    first, then the first matching glob pattern, then the default)."""
    if not isinstance(stages, Mapping):
        return stages
    if name in stages:
        return stages[name]
    for pattern, value in stages.items():
        if fnmatch.fnmatchcase(name, pattern):
            return value
    return DEFAULT_STAGES


def _checked_k_block(k: Any, block: Any, what: str = "") -> tuple[int, tuple[int, int]]:
    """``k`` (MIN_K..MAX_K) and ``block`` (two sides in 1..MAX_BLOCK_SIDE) checked; ``what`` prefixes the error."""
    if isinstance(k, bool) or not isinstance(k, int) or not MIN_K <= k <= MAX_K:
        raise InvalidArgumentError(f"{what}k must be an int in {MIN_K}..{MAX_K}, got {k!r}")
    if (
        not isinstance(block, (tuple, list))
        or len(block) != 2
        or not all(isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= MAX_BLOCK_SIDE for b in block)
    ):
        raise InvalidArgumentError(
            f"{what}block must be (height, width) with sides in 1..{MAX_BLOCK_SIDE}, got {block!r}"
        )
    return k, (int(block[0]), int(block[1]))


def _checked_outliers(value: Any, what: str = "") -> float:
    """The ``outliers`` fraction, checked; ``what`` prefixes the error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_OUTLIERS:
        raise InvalidArgumentError(f"{what}outliers must be a fraction in 0..{MAX_OUTLIERS}, got {value!r}")
    return float(value)


def _sensitive_group(value: Any) -> dict[str, Any] | None:
    """The codebook group of the sensitive tensors (``None``: they stay raw), checked."""
    if isinstance(value, str) and value == "raw":
        return None
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(f"sensitive must be 'raw' or a dict of block/k/stages/scale, got {value!r}")
    unknown = sorted(set(value) - set(DEFAULT_SENSITIVE))
    if unknown:
        raise InvalidArgumentError(
            f"sensitive: unknown key(s) {', '.join(map(str, unknown))}; valid keys: {', '.join(DEFAULT_SENSITIVE)}"
        )
    group = {**DEFAULT_SENSITIVE, **value}
    _, group["block"] = _checked_k_block(group["k"], group["block"], "sensitive: ")
    group["outliers"] = _checked_outliers(group["outliers"], "sensitive: ")
    stages = group["stages"]
    if isinstance(stages, bool) or not isinstance(stages, int) or not 1 <= stages <= MAX_STAGES:
        raise InvalidArgumentError(f"sensitive: stages must be an int in 1..{MAX_STAGES}, got {stages!r}")
    return group


def _progress_bar(enabled: bool | None) -> Callable[[str, int, int], None] | None:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm.auto import tqdm

    state: dict[str, Any] = {"phase": None, "bar": None}

    def update(phase: str, done: int, total: int) -> None:
        if phase != state["phase"]:
            if state["bar"] is not None:
                state["bar"].close()
            state["phase"] = phase
            state["bar"] = tqdm(total=total, desc=phase, leave=False, file=sys.stderr)
        bar = state["bar"]
        bar.total = total
        bar.n = done
        bar.refresh()

    update.close = lambda: state["bar"] is not None and state["bar"].close()  # type: ignore[attr-defined]
    return update


def save(
    obj: Any,
    path: PathLike,
    *,
    k: int = DEFAULT_K,
    block: tuple[int, int] | None = None,
    seed: int = 0,
    **options: Any,
) -> SaveReport:
    """Compresses ``obj`` (a ``torch.nn.Module``, a dict of torch tensors or of numpy arrays)
    into the ``.lgn`` file ``path`` and returns a :class:`SaveReport`.

    Every float tensor of rank >= 2 that covers at least one block is cut into ``block``-shaped
    blocks, all blocks are clustered into one shared codebook of ``k`` codewords (2..65536),
    and each block is stored as a ``ceil(log2 k)``-bit index. Other tensors are stored as they
    are (see :mod:`legofmt._policy`). Options: see :data:`SAVE_OPTIONS`. The file is written
    to a temporary file and renamed, so a failure never leaves a partial file.

    ``block=None`` means the default, 2x2 (see the README, "Defaults"). With ``target_ratio=``
    and/or ``max_error=`` the block shape and stage count are searched instead (see
    :mod:`legofmt._target`); the report's ``search`` lists every configuration tried.
    """
    unknown = sorted(set(options) - set(SAVE_OPTIONS))
    if unknown:
        raise InvalidArgumentError(f"unknown option(s) {', '.join(unknown)}; valid options: {', '.join(SAVE_OPTIONS)}")
    if {"target_ratio", "max_error", "candidates"} & set(options):
        from . import _target

        target_ratio = options.pop("target_ratio", None)
        max_error = options.pop("max_error", None)
        candidates = options.pop("candidates", None)
        if block is not None:
            options["block"] = block
        return _target.search(
            save,
            obj,
            os.fspath(path),
            target_ratio=target_ratio,
            max_error=max_error,
            candidates=candidates,
            k=k,
            seed=seed,
            **options,
        )
    if block is None:
        block = DEFAULT_BLOCK
    k, (bh, bw) = _checked_k_block(k, block)
    stages = options.get("stages", DEFAULT_STAGES)
    if isinstance(stages, Mapping) and not all(isinstance(p, str) for p in stages):
        raise InvalidArgumentError(f"stages: keys must be tensor names or glob patterns (str), got {list(stages)!r}")
    scale = options.get("scale", "row")
    raw: Sequence[str] = options.get("raw", ())
    if isinstance(raw, str):
        raw = [raw]
    min_size = options.get("min_size", DEFAULT_MIN_SIZE)
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0:
        raise InvalidArgumentError(f"min_size must be an int >= 0, got {min_size!r}")
    cluster_depthwise = bool(options.get("cluster_depthwise", False))
    sensitive = _sensitive_group(options.get("sensitive", DEFAULT_SENSITIVE))
    items = _tensor_items(obj)
    if not items:
        raise InvalidArgumentError("nothing to save: the model or dict has no tensors")
    decisions = [
        decide(
            n,
            d,
            s,
            block=(bh, bw),
            raw=raw,
            min_size=min_size,
            cluster_depthwise=cluster_depthwise,
            sensitive=None if sensitive is None else sensitive["block"],
        )
        for n, d, s, _ in items
    ]
    codebook = options.get("codebook", "global")
    if codebook not in ("global", "tensor"):
        raise InvalidArgumentError(f"codebook must be 'global' or 'tensor', got {codebook!r}")
    stages_of = [_stages_for(n, stages) for n, _, _, _ in items]
    spec = {
        "k": k,
        "block": (bh, bw),
        "scale": scale,
        "outliers": _checked_outliers(options.get("outliers", DEFAULT_OUTLIERS)),
    }
    if codebook == "global":
        # One group: stage s has one codebook, shared by every tensor with more than s stages
        # (nested stages), so a tensor given fewer stages adds no codebook.
        shared = [dec.target == SHARED for dec in decisions]
        most = max((s for s, sh in zip(stages_of, shared) if sh), default=stages_of[0])
        group_of = [0 if sh else None for sh in shared]
        groups = [{**spec, "stages": most}]
        per_tensor = [s if sh else None for s, sh in zip(stages_of, shared)]
    else:  # one codebook (per stage) for each tensor of the shared codebook
        order = [i for i, dec in enumerate(decisions) if dec.target == SHARED]
        group_of = [order.index(i) if i in order else None for i in range(len(decisions))]
        groups = [{**spec, "stages": stages_of[i]} for i in order] or [{**spec, "stages": stages_of[0]}]
        per_tensor = [None] * len(decisions)
    if any(dec.target == SENSITIVE for dec in decisions):
        assert sensitive is not None
        groups.append(sensitive)
        group_of = [len(groups) - 1 if dec.target == SENSITIVE else g for g, dec in zip(group_of, decisions)]
    tensors = [(n, d, list(s), data, g) for (n, d, s, data), g in zip(items, group_of)]
    wanted = options.get("bias_correction")
    why_not = _bias_wanted(obj, wanted)
    # With bias correction the clustered file is written aside, then rewritten to ``path`` with
    # the corrected raw tensors: ``path`` never holds a partial or uncorrected file.
    aside = not why_not
    out = _temp_beside(path) if aside else os.fspath(path)
    bar = _progress_bar(options.get("progress"))
    try:
        r = _legofmt.compress_to_file(
            out,
            tensors,
            groups,
            seed=seed,
            batch_size=options.get("batch_size"),
            max_iter=options.get("max_iter"),
            metadata=options.get("metadata"),
            progress=bar,
            stages=per_tensor,
        )
    except BaseException:
        if aside and os.path.exists(out):
            os.remove(out)
        raise
    finally:
        if bar is not None:
            bar.close()  # type: ignore[attr-defined]
    reports = [
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
    corrected: dict[str, str] = {}
    note = why_not
    if aside:
        corrected, note = _finish(obj, wanted, out, os.fspath(path), reports)
        reports = _with_reasons(reports, corrected)
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


def _is_module(obj: Any) -> bool:
    """Whether ``obj`` is a ``torch.nn.Module`` (without importing torch: if it was never
    imported, ``obj`` cannot be one)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def _analysis(obj: Any) -> Any:
    """:func:`legofmt._bias.analyse` of ``obj`` when it is a module, else ``None``."""
    if not _is_module(obj):
        return None
    from . import _bias

    return _bias.analyse(obj)


def _bias_wanted(obj: Any, wanted: Any) -> str:
    """Checks the ``bias_correction`` option: "" when the correction is to be tried, else why not."""
    if wanted is not None and not isinstance(wanted, bool):
        raise InvalidArgumentError(f"bias_correction must be True, False or None, got {wanted!r}")
    if wanted is False:
        return "off"
    if not _is_module(obj):
        if wanted:
            raise InvalidArgumentError(
                "bias_correction=True needs the torch.nn.Module (its graph tells which layer feeds which), "
                f"got a {type(obj).__name__}"
            )
        return "not a torch.nn.Module"
    return ""


def _bias_plan(obj: Any, wanted: Any, clustered: set[str], found: Any = None) -> tuple[list[Any], str]:
    """The bias corrections to make (see :mod:`legofmt._bias`) for the layers whose weight is
    clustered, and a note saying why there are none when that is so. ``found``: the module's
    :func:`_analysis` when the caller already has it."""
    why = _bias_wanted(obj, wanted)
    if why:
        return [], why
    if found is None:
        found = _analysis(obj)
    corrections = [c for c in found.corrections if c.weight in clustered]
    if corrections:
        return corrections, ""
    return [], found.note or "no clustered layer to correct"


def _finish(
    obj: Any, wanted: Any, src: str, dest: str, tensors: list[TensorReport], found: Any = None
) -> tuple[dict[str, str], str]:
    """Moves the written file ``src`` to ``dest``, bias-corrected if ``wanted`` allows (see
    :func:`_bias_plan`); returns the corrected tensors and the note of :class:`SaveReport`."""
    corrections, note = _bias_plan(obj, wanted, {t.name for t in tensors if t.clustered}, found)
    if not corrections:
        os.replace(src, dest)
        return {}, note
    try:
        return _correct_biases(src, dest, corrections, obj.state_dict()), note
    finally:
        if os.path.exists(src):
            os.remove(src)


def _with_reasons(tensors: list[TensorReport], corrected: Mapping[str, str]) -> list[TensorReport]:
    """``tensors`` with the bias-corrected ones saying so in their ``reason``."""
    import dataclasses

    return [
        dataclasses.replace(t, reason=f"{t.reason}; bias-corrected for {corrected[t.name]}")
        if t.name in corrected
        else t
        for t in tensors
    ]


def _temp_beside(path: PathLike) -> str:
    """A new temporary file name in ``path``'s folder (so that a rename can replace ``path``)."""
    import tempfile

    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".lgn.tmp")
    os.close(fd)
    return tmp


def _correct_biases(src: str, dest: str, corrections: list[Any], state: Mapping[str, Any]) -> dict[str, str]:
    """Rewrites ``src`` into ``dest`` with the raw tensors of ``corrections`` moved by the mean
    shift of their layer's clustered weight; returns {corrected tensor: weight}."""
    import json

    import torch

    from . import _bias

    replace: dict[str, np.ndarray[Any, Any]] = {}
    done: dict[str, str] = {}
    with open(src, "pt") as f:
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
        f._r.rewrite(dest, replace, {"legofmt.bias_correction": note})
    return done


class LgnReader:
    """A lazily decoding view of an ``.lgn`` (or plain safetensors) file.

    Use as a context manager (like ``safetensors.safe_open``)::

        with legofmt.open("model.lgn") as f:
            for name in f.keys():
                t = f.get_tensor(name)

    Only the header and the codebooks are read when opening; each :meth:`get_tensor` decodes
    one tensor, from a memory map of the file or, with ``mmap=False``, from plain reads of
    that tensor's stored bytes (nothing of the file stays mapped or cached by the process).
    """

    def __init__(
        self, path: PathLike, framework: Framework = "pt", *, verify_checksums: bool = True, mmap: bool = True
    ):
        if framework not in ("pt", "np", "numpy", "torch"):
            raise InvalidArgumentError(f"framework must be 'pt' or 'np', got {framework!r}")
        self.framework: Framework = "np" if framework in ("np", "numpy") else "pt"
        if self.framework == "pt":
            require_torch()
        self._torch_dtypes: dict[str, Any] = torch_dtypes() if self.framework == "pt" else {}
        self.path = os.fspath(path)
        self._r = _legofmt.Reader(self.path, verify_checksums, mmap)

    def __enter__(self) -> LgnReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Releases the file."""
        self._r.close()

    def keys(self) -> list[str]:
        """Tensor names in saved order."""
        return self._r.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def __contains__(self, name: object) -> bool:
        return name in self.keys()

    def dtype_and_shape(self, name: str) -> tuple[str, tuple[int, ...]]:
        """The safetensors dtype name and shape of a tensor, without decoding it."""
        dtype, shape = self._r.tensor_info(name)
        return dtype, tuple(shape)

    def get_tensor(self, name: str) -> Any:
        """Decodes one tensor (``torch.Tensor`` or ``numpy.ndarray``, per ``framework``)."""
        dtype, shape = self._r.tensor_info(name)
        if self.framework == "np":
            arr = np.empty(shape, dtype=NP_DTYPES[dtype])
            self._r.decode_into(name, arr.reshape(-1).view(np.uint8))
            return arr
        import torch

        t = torch.empty(shape, dtype=self._torch_dtypes[dtype])
        self._r.decode_into(name, t.reshape(-1).view(torch.uint8).numpy())
        return t

    def get_rows(self, name: str, start: int, stop: int) -> Any:
        """Decodes rows ``start:stop`` of a tensor (along its first dimension) without decoding
        the rest: shape ``(stop - start, *shape[1:])``. For a clustered tensor only the indices
        of the block rows involved are used (and, with ``verify_checksums=False``, read from
        the file): an embedding lookup on a memory-limited device touches a few rows' bytes.
        With ``verify_checksums=True`` (the default) each call checks the CRC-32 of the whole
        tensor: for many lookups, call :meth:`verify` once and open without checksums."""
        dtype, shape = self.dtype_and_shape(name)
        if not shape:
            raise InvalidArgumentError(f"tensor {name!r} is a scalar: it has no rows")
        for v in (start, stop):
            if isinstance(v, bool) or not isinstance(v, int):
                raise InvalidArgumentError(f"rows of {name!r}: start and stop must be ints, got {start!r}, {stop!r}")
        if not 0 <= start <= stop <= shape[0]:
            raise InvalidArgumentError(f"rows {start}:{stop} are outside tensor {name!r} of {shape[0]} rows")
        out_shape = (stop - start, *shape[1:])
        if self.framework == "np":
            arr = np.empty(out_shape, dtype=NP_DTYPES[dtype])
            self._r.decode_rows_into(name, start, stop, arr.reshape(-1).view(np.uint8))
            return arr
        import torch

        t = torch.empty(out_shape, dtype=self._torch_dtypes[dtype])
        self._r.decode_rows_into(name, start, stop, t.reshape(-1).view(torch.uint8).numpy())
        return t

    def decode_into(self, name: str, out: Any) -> None:
        """Decodes a tensor straight into ``out`` (a contiguous CPU tensor or array of the
        tensor's dtype and shape), without an intermediate copy."""
        dtype, shape = self.dtype_and_shape(name)
        if isinstance(out, np.ndarray):
            # BF16 has no NumPy dtype: get_tensor gives its bit patterns as uint16, accept those.
            ok_dtype = np_name(out) == dtype or (dtype == "BF16" and out.dtype == np.uint16)
            if tuple(out.shape) != shape or not ok_dtype or not out.flags.c_contiguous:
                raise InvalidArgumentError(f"output for {name!r} must be a contiguous {dtype} array of shape {shape}")
            self._r.decode_into(name, out.reshape(-1).view(np.uint8))
            return
        import torch

        if (
            tuple(out.shape) != shape
            or out.dtype != self._torch_dtypes[dtype]
            or out.device.type != "cpu"
            or not out.is_contiguous()
        ):
            raise InvalidArgumentError(f"output for {name!r} must be a contiguous CPU {dtype} tensor of shape {shape}")
        self._r.decode_into(name, out.reshape(-1).view(torch.uint8).numpy())

    def tensors(self) -> Iterator[tuple[str, Any]]:
        """Yields ``(name, tensor)`` one at a time, decoding lazily: a tensor dropped by the
        caller before the next is taken is freed, so streaming a model this way needs memory
        for one tensor at a time."""
        for name in self.keys():
            yield name, self.get_tensor(name)

    def metadata(self) -> dict[str, str]:
        """The user metadata stored with :func:`save` (``metadata=``)."""
        return self._r.metadata()

    def info(self) -> FileInfo:
        """See :func:`legofmt.info`."""
        d = self._r.info()
        return FileInfo(
            path=d["path"],
            file_bytes=d["file_bytes"],
            version=d["version"],
            tensors=[
                TensorInfo(
                    name=t["name"],
                    dtype=t["dtype"],
                    shape=tuple(t["shape"]),
                    encoding=t["encoding"],
                    stored_bytes=t["stored_bytes"],
                    index_bits=t["index_bits"],
                    block=tuple(t["block"]) if t["block"] else None,
                    scale=t["scale"],
                    codebooks=tuple(t["codebooks"]),
                    outliers=t["outliers"],
                )
                for t in d["tensors"]
            ],
            codebooks=d["codebooks"],
            metadata=self._r.metadata(),
        )

    def verify(self) -> None:
        """Checks every checksum and every index; raises a :class:`legofmt.FormatError` subclass."""
        self._r.verify()


def open(path: PathLike, framework: Framework = "pt", *, verify_checksums: bool = True, mmap: bool = True) -> LgnReader:
    """Opens a file for lazy, tensor-by-tensor decoding. See :class:`LgnReader`.

    ``mmap=False`` reads each tensor's stored bytes with plain reads instead of mapping the
    file (for file systems without mmap, or to keep the page cache out of the process's RSS)."""
    return LgnReader(path, framework, verify_checksums=verify_checksums, mmap=mmap)


def load(path: PathLike, *, framework: Framework = "pt") -> dict[str, Any]:
    """Decodes every tensor: ``dict[str, torch.Tensor]`` with the original names, shapes and
    dtypes (``framework="np"`` gives NumPy arrays; BF16 then comes as raw uint16 bits)."""
    with open(path, framework) as f:
        return dict(f.tensors())


class LoadResult(NamedTuple):
    """Keys that did not match, like ``torch.nn.Module.load_state_dict`` returns."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def load_into(model: torch.nn.Module, path: PathLike, strict: bool = True) -> LoadResult:
    """Loads a file into ``model``'s parameters and buffers, tensor by tensor, decoding
    straight into their memory where dtype, device and layout allow (no second copy of the
    model: at most one tensor is decoded aside, when a dtype or device differs). With
    ``strict`` every key must match, as in ``load_state_dict``.

    A model built on the ``meta`` device (``with torch.device("meta"): model = Net()``) is
    materialized on the CPU: each tensor is decoded into new memory (in the model's dtype)
    and assigned to its module, keeping ``requires_grad`` and tied parameters."""
    import torch

    state = model.state_dict(keep_vars=True)
    dtypes = torch_dtypes()
    with open(path, "pt") as f:
        names = f.keys()
        in_file = set(names)
        missing = [k for k in state if k not in in_file]
        unexpected = [k for k in names if k not in state]
        if strict and (missing or unexpected):
            raise InvalidArgumentError(
                f"{os.fspath(path)} does not match the model: missing keys {missing}, unexpected keys {unexpected}"
            )
        materialized: dict[int, Any] = {}
        with torch.no_grad():
            for name in names:
                if name not in state:
                    continue
                current = state[name]
                target = current.data if isinstance(current, torch.nn.Parameter) else current
                dtype, shape = f.dtype_and_shape(name)
                if tuple(target.shape) != shape:
                    raise InvalidArgumentError(
                        f"tensor {name!r} has shape {shape} in the file but {tuple(target.shape)} in the model"
                    )
                if target.device.type == "meta":
                    new = materialized.get(id(current))
                    if new is None:
                        t = f.get_tensor(name)
                        if t.dtype != target.dtype:
                            t = t.to(target.dtype)
                        new = torch.nn.Parameter(t, current.requires_grad) if current is not target else t
                        materialized[id(current)] = new
                    _assign(model, name, new)
                elif target.dtype == dtypes[dtype] and target.device.type == "cpu" and target.is_contiguous():
                    f.decode_into(name, target)
                else:
                    target.copy_(f.get_tensor(name))
    return LoadResult(missing, unexpected)


def _assign(model: torch.nn.Module, name: str, value: Any) -> None:
    """Replaces the parameter or buffer ``name`` of ``model`` by ``value``."""
    prefix, _, leaf = name.rpartition(".")
    module = model.get_submodule(prefix)
    if leaf in module._parameters:
        module._parameters[leaf] = value
    else:
        module._buffers[leaf] = value


def info(path: PathLike) -> FileInfo:
    """Describes a file: per tensor raw or clustered, bits and bytes, and the file's ratio
    against fp32 and against the source dtypes (every byte of the file counted)."""
    with open(path, "np") as f:
        return f.info()
