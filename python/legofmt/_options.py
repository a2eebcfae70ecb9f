"""The options of :func:`legofmt.save`, validated once into a :class:`SaveOptions`.

Every option is one field of :class:`SaveOptions`, whose help text sits in the field's
metadata; :data:`SAVE_OPTIONS` (the name -> help dict the package exports) is derived from
those fields. :meth:`SaveOptions.from_kwargs` turns ``save``'s keyword arguments into the
typed object, raising :class:`~legofmt.InvalidArgumentError` for an unknown name or a bad
value before any work starts. Values the Rust core checks itself (scale names, the range of a
stage count, ``batch_size``, ``metadata`` keys) are passed through and rejected there, with its
messages.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from ._legofmt import MAX_BLOCK_SIDE, MAX_K, MAX_OUTLIER_FRACTION, MAX_STAGES, MIN_K
from .errors import InvalidArgumentError

#: Defaults, chosen from the measured accuracy tables in docs/accuracy.md ("Defaults"): 2x2 blocks
#: with three residual stages of k=256.
DEFAULT_K = 256
DEFAULT_BLOCK = (2, 2)
DEFAULT_STAGES = 3

#: Tensors with fewer elements than this are sensitive (their own codebook) unless ``min_size``
#: says otherwise.
DEFAULT_MIN_SIZE = 4096
#: The codebook group of the sensitive tensors (depthwise convolutions, tensors under
#: ``min_size``): 1x1 blocks, k=256, one stage, row scales, i.e. an 8-bit non-uniform scalar
#: code per row (see the docs/accuracy.md, "Defaults", for what it buys over 4-bit codes).
DEFAULT_SENSITIVE: dict[str, Any] = {"block": (1, 1), "k": 256, "stages": 1, "scale": "row", "outliers": 0.0}

#: Largest ``outliers`` fraction (the format stores each outlier in 8 bytes).
MAX_OUTLIERS = MAX_OUTLIER_FRACTION
#: Fraction of each shared-codebook tensor's elements stored exactly by default (format 2.0):
#: each outlier costs 8 bytes, so 0.1% costs about 0.064 bits per weight. A transformer's few
#: extreme weights are what a codebook fitted by squared error serves worst (see
#: docs/accuracy.md, "Outliers").
DEFAULT_OUTLIERS = 0.001

#: The options that select target mode (see :mod:`legofmt._target`).
TARGET_OPTIONS = ("target_ratio", "max_error", "candidates")

Stages = Union[int, Mapping[str, int]]


def _help(text: str, *, option: bool = True) -> dict[str, Any]:
    """Field metadata: the option's help text; ``option=False`` for ``save``'s own keyword
    arguments (``k``, ``block``, ``seed``), which :data:`SAVE_OPTIONS` does not list."""
    return {"help": text, "option": option}


def checked_k_block(k: Any, block: Any, what: str = "") -> tuple[int, tuple[int, int]]:
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


def checked_outliers(value: Any, what: str = "") -> float:
    """The ``outliers`` fraction, checked; ``what`` prefixes the error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_OUTLIERS:
        raise InvalidArgumentError(f"{what}outliers must be a fraction in 0..{MAX_OUTLIERS}, got {value!r}")
    return float(value)


def sensitive_group(value: Any) -> dict[str, Any] | None:
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
    _, group["block"] = checked_k_block(group["k"], group["block"], "sensitive: ")
    group["outliers"] = checked_outliers(group["outliers"], "sensitive: ")
    stages = group["stages"]
    if isinstance(stages, bool) or not isinstance(stages, int) or not 1 <= stages <= MAX_STAGES:
        raise InvalidArgumentError(f"sensitive: stages must be an int in 1..{MAX_STAGES}, got {stages!r}")
    return group


def positive(name: str, v: Any) -> float | None:
    """``v`` as a float > 0, or ``None`` when it is ``None``; ``name`` names it in the error."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise InvalidArgumentError(f"{name} must be a number > 0, got {v!r}")
    return float(v)


@dataclass(frozen=True)
class SaveOptions:
    """The keyword arguments of :func:`legofmt.save`, checked (build with :meth:`from_kwargs`).

    ``given`` names the options the caller set (target mode refuses ``block`` and ``stages``
    and tries each candidate with and without outliers unless ``outliers`` was set)."""

    k: int = field(default=DEFAULT_K, metadata=_help(f"codewords per codebook, {MIN_K}..{MAX_K}", option=False))
    block: tuple[int, int] = field(
        default=DEFAULT_BLOCK, metadata=_help("block shape (height, width); None: the default", option=False)
    )
    seed: int = field(default=0, metadata=_help("seed of every random choice", option=False))
    stages: Stages = field(
        default=DEFAULT_STAGES,
        metadata=_help(
            f"residual stages (1..{MAX_STAGES}): each clusters what the previous ones left; default {DEFAULT_STAGES}; "
            "or a dict {tensor name or glob pattern: stages} (exact names first, then patterns in order; "
            "'*' sets the rest, else the default)"
        ),
    )
    scale: str = field(
        default="row",
        metadata=_help("'row' (default: each row's largest |value|), 'row-rms' (each row's RMS), 'tensor' or 'none'"),
    )
    raw: tuple[str, ...] = field(
        default=(), metadata=_help("glob patterns of tensor names stored unchanged, e.g. ['*.bias', 'fc.*']")
    )
    min_size: int = field(
        default=DEFAULT_MIN_SIZE,
        metadata=_help("tensors with fewer elements are sensitive: own codebook, or raw (default 4096)"),
    )
    cluster_depthwise: bool = field(
        default=False,
        metadata=_help("cluster depthwise convolutions into the shared codebook (default False: sensitive)"),
    )
    sensitive: Mapping[str, Any] | None = field(
        default_factory=lambda: dict(DEFAULT_SENSITIVE),
        metadata=_help(
            "codebook of the sensitive tensors (depthwise convolutions, tensors under min_size): a dict of "
            "block/k/stages/scale (default 1x1 blocks, k=256, 1 stage, row scales: 8 bits a weight) or 'raw'"
        ),
    )
    codebook: str = field(
        default="global",
        metadata=_help("'global' (default): one codebook per stage shared by all tensors; 'tensor': one per tensor"),
    )
    outliers: float = field(
        default=DEFAULT_OUTLIERS,
        metadata=_help(
            f"fraction (0..{MAX_OUTLIER_FRACTION}) of each shared-codebook tensor's elements stored exactly, those "
            "largest relative to their row's RMS, 8 bytes each, zero for clustering; none where the codebook is "
            f"exact (default {DEFAULT_OUTLIERS}; files with outliers are format 2.0)"
        ),
    )
    batch_size: int | None = field(
        default=None, metadata=_help("smallest sample of the k-means sample phase (default 2048)")
    )
    max_iter: int | None = field(default=None, metadata=_help("k-means iteration budget"))
    metadata: dict[str, str] | None = field(
        default=None, metadata=_help("dict of str -> str stored in the file's __metadata__")
    )
    target_ratio: float | None = field(
        default=None,
        metadata=_help("search block and per-tensor stages: least mean tensor error at >= this ratio vs fp32"),
    )
    max_error: float | None = field(
        default=None,
        metadata=_help("search for the smallest file whose worst clustered tensor has relative MSE <= this"),
    )
    candidates: list[dict[str, Any]] | None = field(
        default=None,
        metadata=_help("with target_ratio/max_error: list of option dicts to try instead of the built-in list"),
    )
    progress: bool | None = field(
        default=None, metadata=_help("show a progress bar (default: when stderr is a terminal)")
    )
    bias_correction: bool | None = field(
        default=None,
        metadata=_help(
            "cancel the mean shift clustering adds to each layer's output, estimated from the model's batch "
            "norms without data (needs the torch.nn.Module); True, False, or None (default: when given a module)"
        ),
    )
    given: frozenset[str] = field(default=frozenset(), metadata=_help("options the caller set", option=False))

    @classmethod
    def from_kwargs(cls, *, k: Any = DEFAULT_K, block: Any = None, seed: Any = 0, **options: Any) -> SaveOptions:
        """Checks ``save``'s keyword arguments once. ``block=None`` means the default (in target
        mode: chosen by the search). Raises :class:`~legofmt.InvalidArgumentError`."""
        unknown = sorted(set(options) - set(SAVE_OPTIONS))
        if unknown:
            raise InvalidArgumentError(
                f"unknown option(s) {', '.join(unknown)}; valid options: {', '.join(SAVE_OPTIONS)}"
            )
        given = frozenset(options) | ({"block"} if block is not None else set())
        target = bool(set(TARGET_OPTIONS) & given)
        target_ratio = positive("target_ratio", options.get("target_ratio"))
        max_error = positive("max_error", options.get("max_error"))
        if target:
            if target_ratio is None and max_error is None:
                raise InvalidArgumentError("give target_ratio= and/or max_error=")
            fixed = {name for name in ("block", "stages") if name in given}
            if fixed:
                raise InvalidArgumentError(
                    f"{' and '.join(sorted(fixed))} cannot be combined with target_ratio/max_error: "
                    "the search chooses them"
                )
            if options.get("candidates") is not None and not options["candidates"]:
                raise InvalidArgumentError("candidates must not be empty")
        k, block = checked_k_block(k, DEFAULT_BLOCK if block is None else block)
        stages = options.get("stages", DEFAULT_STAGES)
        if isinstance(stages, Mapping) and not all(isinstance(p, str) for p in stages):
            raise InvalidArgumentError(
                f"stages: keys must be tensor names or glob patterns (str), got {list(stages)!r}"
            )
        raw = options.get("raw", ())
        raw = (raw,) if isinstance(raw, str) else tuple(raw)
        min_size = options.get("min_size", DEFAULT_MIN_SIZE)
        if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0:
            raise InvalidArgumentError(f"min_size must be an int >= 0, got {min_size!r}")
        codebook = options.get("codebook", "global")
        if codebook not in ("global", "tensor"):
            raise InvalidArgumentError(f"codebook must be 'global' or 'tensor', got {codebook!r}")
        wanted = options.get("bias_correction")
        if wanted is not None and not isinstance(wanted, bool):
            raise InvalidArgumentError(f"bias_correction must be True, False or None, got {wanted!r}")
        candidates = options.get("candidates")
        return cls(
            k=k,
            block=block,
            seed=seed,
            stages=stages,
            scale=options.get("scale", "row"),
            raw=raw,
            min_size=min_size,
            cluster_depthwise=bool(options.get("cluster_depthwise", False)),
            sensitive=sensitive_group(options.get("sensitive", DEFAULT_SENSITIVE)),
            codebook=codebook,
            outliers=checked_outliers(options.get("outliers", DEFAULT_OUTLIERS)),
            batch_size=options.get("batch_size"),
            max_iter=options.get("max_iter"),
            metadata=options.get("metadata"),
            target_ratio=target_ratio,
            max_error=max_error,
            candidates=None if candidates is None else list(candidates),
            progress=options.get("progress"),
            bias_correction=wanted,
            given=given,
        )

    @property
    def target_mode(self) -> bool:
        """Whether the block shape and stages are to be searched (see :mod:`legofmt._target`)."""
        return self.target_ratio is not None or self.max_error is not None

    def with_options(self, changes: Mapping[str, Any]) -> SaveOptions:
        """These options with ``changes`` (option names as ``save`` takes them, e.g. one target-mode
        candidate) applied and checked again; the target options are dropped."""
        kwargs: dict[str, Any] = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("given", *TARGET_OPTIONS)
        }
        if self.sensitive is None:
            kwargs["sensitive"] = "raw"
        kwargs.update(changes)
        given = (self.given - set(TARGET_OPTIONS)) | set(changes)
        checked = SaveOptions.from_kwargs(**kwargs)
        return dataclasses.replace(checked, given=frozenset(given))

    def stages_for(self, name: str) -> Any:
        """The stage count of tensor ``name``: ``stages`` itself, or its entry for the name (exact
        first, then the first matching glob pattern, then the default)."""
        stages = self.stages
        if not isinstance(stages, Mapping):
            return stages
        if name in stages:
            return stages[name]
        for pattern, value in stages.items():
            if fnmatch.fnmatchcase(name, pattern):
                return value
        return DEFAULT_STAGES


#: Options accepted by :func:`save` besides ``k``, ``block`` and ``seed``: name -> help text.
SAVE_OPTIONS: dict[str, str] = {
    f.name: f.metadata["help"] for f in dataclasses.fields(SaveOptions) if f.metadata["option"]
}
