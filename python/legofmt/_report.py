"""Result objects of :func:`legofmt.save` and :func:`legofmt.info`, printable as tables."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._dtypes import NP_DTYPES


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"  # pragma: no cover


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


@dataclass(frozen=True)
class TensorReport:
    """What :func:`legofmt.save` did to one tensor."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    clustered: bool
    stored_bytes: int
    index_bits: int
    rel_mse: float
    """``sum((x - x')**2) / sum(x**2)`` of the decoded tensor (0 for raw tensors)."""
    max_abs_err: float
    outliers: int = 0
    """Elements stored exactly (the ``outliers`` option of :func:`legofmt.save`; format 2.0)."""
    reason: str = ""
    """Why the policy clustered it or kept it raw."""
    codebook: str = ""
    """``"shared"`` (the shared codebooks, whose block and stages ``save`` sets), ``"sensitive"``
    (the sensitive tensors' own codebook, see :mod:`legofmt._policy`) or ``""`` (raw)."""


@dataclass(frozen=True)
class Candidate:
    """One configuration tried by the target search of :func:`legofmt.save`."""

    options: dict[str, Any]
    file_bytes: int
    """Bytes of the candidate's file; for the chosen one, of the file written (with the bias
    correction's metadata note, if any), as in the :class:`SaveReport`."""
    ratio: float
    max_rel_mse: float
    mean_rel_mse: float
    seconds: float
    weighted_rel_mse: float = 0.0
    """``mean_rel_mse`` with each tensor's error times its weight (layers inside residual
    branches count less; see :func:`legofmt._target._error_weights`): what ``target_ratio``
    ranks by. Equal to ``mean_rel_mse`` when the model gave no weights."""
    chosen: bool = False
    pareto: bool = False
    """Not dominated by another candidate in (ratio, error): the error is ``max_rel_mse`` when the
    search had ``max_error``, else ``weighted_rel_mse`` (what each mode ranks by)."""


def _option_text(key: str, value: Any) -> str:
    """``key=value``; a per-tensor dict is summarised (``stages=2..3 per tensor (3: 4 tensors)``)."""
    if isinstance(value, dict) and value:
        counts = Counter(value.values())
        lo, top = min(counts), max(counts)
        return f"{key}={lo}..{top} per tensor ({top}: {counts[top]} tensors)" if lo != top else f"{key}={lo}"
    return f"{key}={value}"


def options_text(options: Mapping[str, Any]) -> str:
    """A candidate's options as ``key=value, ...`` (see :func:`_option_text`)."""
    return ", ".join(_option_text(k, v) for k, v in options.items())


def search_table(candidates: list[Candidate]) -> str:
    """The candidates as a text table, best ratio first."""
    rows = [
        [
            options_text(c.options),
            f"{c.ratio:.2f}x",
            f"{c.max_rel_mse:.2e}",
            f"{c.mean_rel_mse:.2e}",
            f"{c.weighted_rel_mse:.2e}",
            f"{c.seconds:.1f}",
            ("chosen" if c.chosen else "") + (" pareto" if c.pareto else ""),
        ]
        for c in sorted(candidates, key=lambda c: -c.ratio)
    ]
    return _table(["options", "ratio", "max rel. MSE", "mean rel. MSE", "weighted", "seconds", ""], rows)


@dataclass(frozen=True)
class SaveReport:
    """Sizes and errors of a saved file. ``ratio`` counts every byte of the file against fp32."""

    path: str
    file_bytes: int
    fp32_bytes: int
    source_bytes: int
    numel: int
    seconds: float
    tensors: list[TensorReport] = field(default_factory=list)
    codebooks: list[dict[str, Any]] = field(default_factory=list)
    search: list[Candidate] = field(default_factory=list)
    """With ``target_ratio=`` or ``max_error=``: every configuration tried (see :class:`Candidate`)."""
    bias_corrected: dict[str, str] = field(default_factory=dict)
    """Raw tensors (biases, batch-norm running means) moved by bias correction, each with the
    clustered weight whose mean shift it cancels (see :mod:`legofmt._bias`)."""
    bias_note: str = ""
    """Why bias correction changed nothing, when it did not ("off", "not traceable ...", ...)."""

    @property
    def ratio(self) -> float:
        """fp32 bytes of all tensors / bytes of the file."""
        return self.fp32_bytes / max(self.file_bytes, 1)

    @property
    def max_rel_mse(self) -> float:
        """The largest relative MSE of any clustered tensor (0 when none is clustered)."""
        return max((t.rel_mse for t in self.tensors if t.clustered), default=0.0)

    @property
    def ratio_source(self) -> float:
        """Source-dtype bytes of all tensors / bytes of the file."""
        return self.source_bytes / max(self.file_bytes, 1)

    @property
    def bits_per_weight(self) -> float:
        """Bits of the file per weight."""
        return 8 * self.file_bytes / max(self.numel, 1)

    @property
    def clustered_fraction(self) -> float:
        """Fraction of weights (elements) that were clustered."""
        n = sum(_numel(t.shape) for t in self.tensors if t.clustered)
        return n / max(self.numel, 1)

    def summary(self) -> str:
        """One line: size, ratio and bits per weight."""
        return (
            f"{self.path}: {_fmt_bytes(self.file_bytes)} ({self.ratio:.2f}x vs fp32, "
            f"{self.ratio_source:.2f}x vs source, {self.bits_per_weight:.3f} bits/weight, "
            f"{100 * self.clustered_fraction:.1f}% of weights clustered) in {self.seconds:.2f} s"
        )

    def __str__(self) -> str:
        rows = [
            [
                t.name,
                t.dtype,
                "x".join(map(str, t.shape)) or "scalar",
                "clustered" if t.clustered else "raw",
                str(t.index_bits) if t.clustered else "-",
                _fmt_bytes(t.stored_bytes),
                f"{t.rel_mse:.2e}" if t.clustered else "-",
            ]
            for t in self.tensors
        ]
        headers = ["tensor", "dtype", "shape", "encoding", "bits/block", "stored", "rel. MSE"]
        if any(t.outliers for t in self.tensors):
            headers.append("outliers")
            rows = [[*r, str(t.outliers) if t.clustered else "-"] for r, t in zip(rows, self.tensors)]
        table = _table(headers, rows)
        return f"{table}\n{self.summary()}"


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a file, as :func:`legofmt.info` describes it."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    encoding: str
    """``"raw"`` or ``"clustered"``."""
    stored_bytes: int
    index_bits: int
    block: tuple[int, int] | None
    scale: str | None
    codebooks: tuple[int, ...]
    outliers: int = 0
    """Elements stored exactly (format 2.0)."""

    @property
    def numel(self) -> int:
        return _numel(self.shape)


@dataclass(frozen=True)
class FileInfo:
    """What is inside an ``.lgn`` (or safetensors) file. Ratios count every byte of the file."""

    path: str
    file_bytes: int
    version: str | None
    """Format version, ``None`` for a plain safetensors file."""
    tensors: list[TensorInfo]
    codebooks: list[dict[str, Any]]
    metadata: dict[str, str]

    @property
    def numel(self) -> int:
        return sum(t.numel for t in self.tensors)

    @property
    def fp32_bytes(self) -> int:
        return 4 * self.numel

    @property
    def source_bytes(self) -> int:
        return sum(t.numel * NP_DTYPES[t.dtype].itemsize for t in self.tensors)

    @property
    def ratio(self) -> float:
        """fp32 bytes / file bytes."""
        return self.fp32_bytes / max(self.file_bytes, 1)

    @property
    def ratio_source(self) -> float:
        """Source-dtype bytes / file bytes."""
        return self.source_bytes / max(self.file_bytes, 1)

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.file_bytes / max(self.numel, 1)

    def __str__(self) -> str:
        rows = [
            [
                t.name,
                t.dtype,
                "x".join(map(str, t.shape)) or "scalar",
                t.encoding,
                f"{t.block[0]}x{t.block[1]}" if t.block else "-",
                t.scale or "-",
                str(t.index_bits) if t.encoding == "clustered" else "-",
                _fmt_bytes(t.stored_bytes),
            ]
            for t in self.tensors
        ]
        headers = ["tensor", "dtype", "shape", "encoding", "block", "scale", "bits/block", "stored"]
        if any(t.outliers for t in self.tensors):
            headers.append("outliers")
            rows = [[*r, str(t.outliers) if t.encoding == "clustered" else "-"] for r, t in zip(rows, self.tensors)]
        head = _table(headers, rows)
        cbs = ", ".join(
            f"#{i}: k={c['k']} ({c['bits']} bits) {c['block'][0]}x{c['block'][1]} {_fmt_bytes(c['stored_bytes'])}"
            for i, c in enumerate(self.codebooks)
        )
        n_cl = sum(1 for t in self.tensors if t.encoding == "clustered")
        version = f"lgn {self.version}" if self.version else "plain safetensors"
        return (
            f"{head}\n"
            f"codebooks: {cbs or 'none'}\n"
            f"{self.path} ({version}): {len(self.tensors)} tensors ({n_cl} clustered), "
            f"{self.numel} weights, {_fmt_bytes(self.file_bytes)}; "
            f"{self.ratio:.2f}x vs fp32, {self.ratio_source:.2f}x vs source dtypes, "
            f"{self.bits_per_weight:.3f} bits/weight"
        )
