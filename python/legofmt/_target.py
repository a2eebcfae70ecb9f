"""Target mode of :func:`legofmt.save`: ``target_ratio=`` or ``max_error=``.

The search is data-free and honest about what it measures: it writes every candidate
configuration (block shape x residual stages, the other options as given), reads back each
file's all-in ratio and the relative MSE of every clustered tensor, and keeps

* with ``max_error=e``: the smallest file whose worst clustered tensor has relative MSE <= e;
  candidates that miss ``e`` are also tried with one more stage on just the tensors that miss
  it (per-tensor stages, see :func:`_refine`);
* with ``target_ratio=r``: among files at least ``r`` times smaller than fp32, the one whose
  clustered tensors have the lowest mean relative MSE, each tensor's error weighted by how much
  of it reaches the network's output when the model's graph says so (layers inside residual
  branches, see :func:`_error_weights`); besides the uniform candidates, per-tensor stage plans
  built from their error tables are tried (see :func:`_allocate`);
* with both: the smallest file meeting both, else the closest to ``max_error`` at ratio ``r``.

``max_error`` bounds the worst tensor because one badly clustered layer is enough to break a
network (see the accuracy tables in docs/accuracy.md). ``target_ratio`` ranks by the mean over tensors
(each layer's error adding to the output's, to first order), because with per-tensor stages the
worst tensor alone is a poor ranking: it prefers a uniform plan over one that gives a tensor
which tolerates it fewer stages, with a slightly worse worst tensor but a far lower mean (see
docs/accuracy.md, "Target mode").

Every candidate is reported in ``SaveReport.search``, with the Pareto-optimal ones marked. The
search shows one progress display for all the files it writes ("candidate 3/28: ...").
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable
from typing import Any

from . import _bias_glue
from ._compress import compress_file
from ._legofmt import MAX_STAGES
from ._options import SaveOptions
from ._progress import ProgressLine, enabled
from ._report import Candidate, SaveReport, options_text
from .errors import InvalidArgumentError

#: Configurations tried, from the smallest files to the largest, with the given k; with
#: ``target_ratio`` also with k / :data:`SMALL_K_DIVISOR` (see :func:`_with_k`).
CANDIDATES: list[dict[str, Any]] = [
    {"block": (4, 4), "stages": 1},
    {"block": (4, 4), "stages": 2},
    {"block": (2, 4), "stages": 1},
    {"block": (2, 4), "stages": 2},
    {"block": (1, 4), "stages": 1},
    {"block": (2, 2), "stages": 1},
    {"block": (4, 4), "stages": 3},
    {"block": (2, 4), "stages": 3},
    {"block": (2, 2), "stages": 2},
    {"block": (1, 4), "stages": 2},
    {"block": (2, 2), "stages": 3},
    {"block": (1, 4), "stages": 3},
    {"block": (2, 2), "stages": 4},
    {"block": (1, 4), "stages": 4},
]


#: Each built-in candidate is also tried with this many times fewer codewords: on a small model
#: the codebooks are a large share of the file (a 4x4, k=256 codebook is 16 KiB), and there
#: fewer codewords buy more accuracy per byte (see docs/accuracy.md, "Target mode"). Not with
#: ``max_error`` alone: a worst-tensor bound does not see that fewer codewords raise every
#: tensor's error at once, so it would pick smaller, less accurate files.
SMALL_K_DIVISOR = 4


def _with_k(cands: list[dict[str, Any]], k: int, small_k: bool) -> list[dict[str, Any]]:
    """The built-in candidates with ``k`` and, if ``small_k`` and it is at least 16,
    ``k // SMALL_K_DIVISOR``."""
    small = k // SMALL_K_DIVISOR
    ks = [k] + ([small] if small_k and small >= 16 else [])
    return [{**c, "k": kk} for kk in ks for c in cands]


class _Trials:
    """The files written by one search: ``tried`` holds ``(options, report, path)`` of each.
    ``planned`` files are announced (the candidates); refinements come on top. ``line`` is the
    search's one progress display (``None``: none)."""

    def __init__(self, obj: Any, base: SaveOptions, tmp: str, planned: int, line: ProgressLine | None) -> None:
        self.obj, self.base, self.tmp, self.planned, self.line = obj, base, tmp, planned, line
        self.tried: list[tuple[dict[str, Any], SaveReport, str]] = []

    def run(self, opts: dict[str, Any]) -> SaveReport:
        """Saves ``obj`` with the search's options and ``opts`` to a new file, records it."""
        i = len(self.tried)
        path = os.path.join(self.tmp, f"{i}.lgn")
        what = options_text(opts)
        if i < self.planned:
            prefix = f"candidate {i + 1}/{self.planned} ({what}): "
        else:
            prefix = f"refinement {i + 1 - self.planned} ({what}): "
        n = max(self.planned, i + 1)
        rep = compress_file(
            self.obj, path, self.base.with_options(opts), line=self.line, span=(i / n, (i + 1) / n), prefix=prefix
        )
        self.tried.append((dict(opts), rep, path))
        return rep


#: Rounds of per-tensor stage raising tried from one candidate (see :func:`_refine`).
REFINE_ROUNDS = 3


def _refine(trials: _Trials, err: float, ok: Callable[[SaveReport], bool]) -> None:
    """Per-tensor stages for ``max_error``: a candidate whose worst tensors miss ``max_error``
    gets one more residual stage on exactly those tensors (the others keep theirs), up to
    :data:`REFINE_ROUNDS` times, as long as the file stays smaller than the best feasible one.
    Each refined file is added to ``trials``; its ``stages`` option is the per-tensor dict."""
    best = max((r.ratio for _, r, _ in trials.tried if ok(r)), default=0.0)
    for c, r, _ in list(trials.tried):
        base = c.get("stages")
        if ok(r) or r.ratio <= best or not isinstance(base, int):
            continue
        per = {t.name: base for t in r.tensors if t.codebook == "shared"}
        rep = r
        for _ in range(REFINE_ROUNDS):
            over = [t.name for t in rep.tensors if t.name in per and t.rel_mse > err and per[t.name] < MAX_STAGES]
            if not over:
                break
            for name in over:
                per[name] += 1
            rep = trials.run({**c, "stages": dict(per)})
            if rep.ratio <= best:
                break
            if ok(rep):
                best = rep.ratio
                break


#: Allocations saved per block shape by :func:`_allocate` (each after the previous missed the ratio).
ALLOCATE_TRIES = 3


def _stage_plan(
    err: dict[int, dict[str, float]],
    size: dict[int, dict[str, int]],
    counts: list[int],
    fixed: float,
    cb: int,
    budget: float,
) -> dict[str, int]:
    """Greedy allocation for :func:`_allocate`: ``err[s][name]`` and ``size[s][name]`` are a
    tensor's relative MSE and stored bytes with ``s`` stages (``s`` in ``counts``), ``fixed``
    the bytes besides indices and codebooks, ``cb`` one codebook's bytes. Stages are nested
    (stage ``s`` has one codebook for every tensor with more than ``s`` stages), so a plan
    costs ``cb`` times its largest stage count. The greedy runs from every uniform start that
    fits (raising one tensor's cheap stages first can leave no room for a big tensor's next
    stage, where starting higher would), and the plan with the least total error is kept."""

    def greedy(start: int) -> dict[str, int] | None:
        """The plan from ``start`` stages everywhere (None if that does not fit): each step
        adds the stage that removes the most error per byte; linear in the tensors a step."""
        names = list(err[start])
        p = dict.fromkeys(names, start)
        top = start  # the largest stage count in use: the number of codebooks
        used = fixed + sum(size[start].values()) + cb * top
        if used > budget:
            return None
        while True:
            best: tuple[float, str, int, float] | None = None
            for n in names:
                cur = p[n]
                if cur == counts[-1]:
                    continue
                nxt = counts[counts.index(cur) + 1]
                cost = used + size[nxt][n] - size[cur][n] + cb * max(0, nxt - top)
                gain = err[cur][n] - err[nxt][n]
                if cost <= budget and gain > 0:
                    per = gain / max(cost - used, 1.0)
                    if best is None or per > best[0]:
                        best = (per, n, nxt, cost)
            if best is None:
                return p
            _, n, nxt, used = best
            p[n] = nxt
            top = max(top, nxt)

    plans = [greedy(start) for start in counts]
    fits = [p for p in plans if p is not None] or [dict.fromkeys(err[counts[0]], counts[0])]
    return min(fits, key=lambda p: sum(err[s][n] for n, s in p.items()))


def _allocate(trials: _Trials, ratio: float, weights: dict[str, float]) -> None:
    """Per-tensor stages for ``target_ratio``. For each block shape tried with several uniform
    stage counts, the reports give every tensor's relative MSE and stored bytes at each count.
    Starting from uniform stage counts (see :func:`_stage_plan`), the plan repeatedly adds the
    stage that removes the most relative error per byte (a codebook counted when a tensor gets more stages than
    any before it) while the estimated file (index bytes, codebooks, and what the uniform file holds
    besides) stays within the budget of ``ratio``: the classic greedy bit allocation for the
    sum of the tensors' relative errors. The plan is saved; when the real file misses the
    ratio the budget shrinks by the miss and it is tried again (the estimate counts shared
    codebooks: with ``codebook="tensor"`` it is low, and the real ratio decides). Each tensor's
    error counts with its weight (see :func:`_error_weights`)."""
    shapes: dict[tuple[tuple[int, int], int, Any], dict[int, SaveReport]] = {}
    for c, r, _ in trials.tried:
        if isinstance(c.get("stages"), int) and "block" in c:
            k = int(c.get("k", trials.base.k))
            shapes.setdefault((tuple(c["block"]), k, c.get("outliers")), {})[c["stages"]] = r
    for (block, k, outliers), by_count in shapes.items():
        counts = sorted(by_count)
        if len(counts) < 2:
            continue
        err = {
            s: {t.name: t.rel_mse * weights.get(t.name, 1.0) for t in r.tensors if t.codebook == "shared"}
            for s, r in by_count.items()
        }
        size = {s: {t.name: t.stored_bytes for t in r.tensors if t.codebook == "shared"} for s, r in by_count.items()}
        if not err[counts[0]]:
            continue  # nothing in the shared codebooks: no stages to plan
        cb = k * block[0] * block[1] * 4  # one f32 codebook
        r0 = by_count[counts[0]]
        # Header, raw and sensitive tensors (with their codebook): the same in every plan.
        fixed = r0.file_bytes - sum(size[counts[0]].values()) - counts[0] * cb

        budget = r0.fp32_bytes / ratio
        seen: list[dict[str, int]] = []
        for _ in range(ALLOCATE_TRIES):
            p = _stage_plan(err, size, counts, fixed, cb, budget)
            if p in seen or len(set(p.values())) == 1:
                break  # a uniform plan: already tried
            seen.append(p)
            opts: dict[str, Any] = {"block": block, "k": k, "stages": p}
            if outliers is not None:
                opts["outliers"] = outliers
            rep = trials.run(opts)
            if rep.ratio >= ratio:
                break
            budget *= rep.ratio / ratio * 0.999


def _mean_rel_mse(r: SaveReport, weights: dict[str, float] | None = None) -> float:
    """The mean over clustered tensors (not weighted by size) of their relative MSE, each
    times its weight in ``weights`` (1 where absent)."""
    w = weights or {}
    errs = [t.rel_mse * w.get(t.name, 1.0) for t in r.tensors if t.clustered]
    return sum(errs) / max(1, len(errs))


def _error_weights(found: Any) -> dict[str, float]:
    """How much each tensor's error counts when ``target_ratio`` ranks files, from ``found``, the
    model's :func:`legofmt._bias_glue.analysis` (``None`` for a state dict): for a
    ``torch.nn.Module`` that ``torch.fx`` traces, the layers inside residual branches count with
    their branch's share of the variance at the sum, from the batch norms' statistics (see
    :func:`legofmt._bias._residual_weights`); everything else counts 1. Data-free (what it does
    to accuracy: docs/accuracy.md, "Target mode")."""
    return {} if found is None else dict(found.weights)


#: One written file of a search: ``(the candidate's options, its report, its path)``.
Tried = tuple[dict[str, Any], SaveReport, str]


def _candidates(opts: SaveOptions) -> list[dict[str, Any]]:
    """The configurations to try: the caller's, else the built-in ones (see :func:`_with_k`)."""
    if opts.candidates is not None:
        return opts.candidates
    cands = _with_k(CANDIDATES, opts.k, small_k=opts.target_ratio is not None)
    if "outliers" not in opts.given:
        # Outliers cost 8 bytes each: at 1 bit a weight, 0.1% of them are 6% of the file.
        # Without the option, each candidate is tried with and without them.
        cands = cands + [{**c, "outliers": 0.0} for c in cands]
    return cands


def _meets(r: SaveReport, ratio: float | None, err: float | None) -> bool:
    """Whether the file of ``r`` meets the targets that are set."""
    return (ratio is None or r.ratio >= ratio) and (err is None or r.max_rel_mse <= err)


def _choose(tried: list[Tried], ratio: float | None, err: float | None, weights: dict[str, float]) -> Tried:
    """The file the search keeps (see the module's docstring)."""
    feasible = [t for t in tried if _meets(t[1], ratio, err)]
    if feasible:
        if err is not None:
            return max(feasible, key=lambda t: (t[1].ratio, -t[1].max_rel_mse))
        return min(feasible, key=lambda t: (_mean_rel_mse(t[1], weights), -t[1].ratio))
    if ratio is not None:
        at_ratio = [t for t in tried if t[1].ratio >= ratio] or [max(tried, key=lambda t: t[1].ratio)]
        return min(at_ratio, key=lambda t: t[1].max_rel_mse)
    return min(tried, key=lambda t: t[1].max_rel_mse)


def _table(tried: list[Tried], best: Tried, err: float | None, weights: dict[str, float]) -> list[Candidate]:
    """Every file tried as a :class:`Candidate`, the Pareto front marked in (ratio, the error
    the choice was made on)."""

    def score(r: SaveReport) -> float:
        return r.max_rel_mse if err is not None else _mean_rel_mse(r, weights)

    def dominated(r: SaveReport) -> bool:
        return any(
            o.ratio >= r.ratio and score(o) <= score(r) and (o.ratio, score(o)) != (r.ratio, score(r))
            for _, o, _ in tried
        )

    return [
        Candidate(
            options=c,
            file_bytes=r.file_bytes,
            ratio=r.ratio,
            max_rel_mse=r.max_rel_mse,
            mean_rel_mse=_mean_rel_mse(r),
            weighted_rel_mse=_mean_rel_mse(r, weights),
            seconds=r.seconds,
            chosen=(p == best[2]),
            pareto=not dominated(r),
        )
        for c, r, p in tried
    ]


def search(obj: Any, path: str, opts: SaveOptions) -> SaveReport:
    """Runs the target search for ``opts`` (checked, in target mode) and writes the chosen file
    to ``path``."""
    ratio, err = opts.target_ratio, opts.max_error
    cands = _candidates(opts)
    # Bias correction does not change the weights' errors that rank the candidates: it is
    # applied once, to the chosen file.
    wanted = opts.bias_correction
    # One trace of the model serves the weights and the bias correction.
    found = _bias_glue.analysis(obj) if ratio is not None or not _bias_glue.wanted_why_not(obj, wanted) else None
    base = opts.with_options({"bias_correction": False})
    weights = _error_weights(found) if ratio is not None else {}
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InvalidArgumentError(f"{path}: the folder {folder} does not exist")
    line = ProgressLine() if enabled(opts.progress) else None
    try:
        with tempfile.TemporaryDirectory(dir=folder, prefix=".lgn-search-") as tmp:
            trials = _Trials(obj, base, tmp, len(cands), line)
            for c in cands:
                trials.run(c)
            tried = trials.tried
            if ratio is not None:
                _allocate(trials, ratio, weights)
            if err is not None:
                _refine(trials, err, lambda r: _meets(r, ratio, err))
            best = _choose(tried, ratio, err, weights)
            corrected, note = _bias_glue.finish(obj, wanted, best[2], path, best[1].tensors, found)
            # The chosen file may have grown by bias correction's metadata note: its report (its
            # row of the table, and the returned report) says what was written.
            i = tried.index(best)
            best = tried[i] = (best[0], dataclasses.replace(best[1], file_bytes=os.path.getsize(path)), best[2])
    finally:
        if line is not None:
            line.close()
    b = best[1]
    return SaveReport(
        path=os.fspath(path),
        file_bytes=b.file_bytes,
        fp32_bytes=b.fp32_bytes,
        source_bytes=b.source_bytes,
        numel=b.numel,
        seconds=sum(r.seconds for _, r, _ in tried),
        tensors=_bias_glue.with_reasons(b.tensors, corrected),
        codebooks=b.codebooks,
        search=_table(tried, best, err, weights),
        bias_corrected=corrected,
        bias_note=note,
    )
