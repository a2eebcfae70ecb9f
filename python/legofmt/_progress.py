"""One progress display per job: a single line with the phase in words, counts and an ETA.

The Rust core reports ``progress(phase, done, total)`` with phases ``"prepare g{G}"``,
``"cluster g{G} s{S} {stage}"`` (stage ``init``, ``samples``,
``lloyd`` or ``assign``), ``"pack g{G}"`` and ``"measure"``; ``done``/``total`` count units
that differ from phase to phase (centroids, blocks, tensors). :class:`CompressProgress` knows
each codebook group's k, block and stage count (from :class:`GroupPlan`), turns each event
into words ("clustering stage 2/3 (k=256, 2x2 blocks): assigning") and into a fraction of the
whole job, weighting the phases by an estimate of their work. :class:`ProgressLine` draws that
fraction as one bar (tqdm) for the whole job, created on the first event: no bar per phase,
no rate in made-up units, an ETA over the job.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

#: Steps of the bar (the job's fraction is drawn in thousandths).
STEPS = 1000
#: Least seconds between two redraws of the line.
REDRAW_S = 0.1

#: Where each k-means stage starts and ends within one clustering stage's work.
KMEANS_SPANS = {
    "init": (0.0, 0.15),
    "samples": (0.15, 0.6),
    "lloyd": (0.6, 0.75),
    "assign": (0.75, 1.0),
}
#: What each k-means stage does, in words.
KMEANS_WORDS = {
    "init": "choosing initial centroids",
    "samples": "fitting on samples",
    "lloyd": "Lloyd iterations",
    "assign": "assigning",
}

#: Work estimate per element for preparing (scaling, outlier selection, block extraction),
#: packing and measuring, and per multiply-add of clustering (a stage runs about three
#: nearest-centroid passes over its blocks: initialisation, samples, final assignment).
PREPARE_WORK = 50.0
PACK_WORK = 5.0
MEASURE_WORK = 20.0
CLUSTER_PASSES = 3.0


def enabled(progress: Any) -> bool:
    """Whether to show progress: ``progress`` if set, else when stderr is a terminal."""
    if progress is None:
        return sys.stderr.isatty()
    return bool(progress)


@dataclass(frozen=True)
class GroupPlan:
    """What one codebook group passed to the core will do: its k, block shape, stage count,
    the blocks clustered at each stage (nested stages: a prefix of the members), the elements
    of its member tensors, and a label naming it ("shared codebook", "sensitive tensors")."""

    k: int
    block: tuple[int, int]
    stages: int
    blocks: tuple[int, ...]
    elements: int
    tensors: int
    label: str = ""

    @staticmethod
    def of(
        k: int, block: tuple[int, int], stages: int, members: Sequence[tuple[Sequence[int], int]], label: str = ""
    ) -> GroupPlan:
        """The plan of a group from its members' ``(shape, stages)``."""
        bh, bw = block
        blocks = []
        for s in range(stages):
            n = 0
            for shape, own in members:
                if own > s:
                    rows, cols = shape[0], math.prod(shape[1:])
                    n += -(-rows // bh) * -(-cols // bw)
            blocks.append(n)
        elements = sum(math.prod(shape) for shape, _ in members)
        return GroupPlan(k, block, stages, tuple(blocks), elements, len(members), label)

    def stage_work(self, s: int) -> float:
        """Estimated work of clustering stage ``s``."""
        n = self.blocks[s] if s < len(self.blocks) else 0
        return CLUSTER_PASSES * n * min(self.k, n) * self.block[0] * self.block[1]


class ProgressLine:
    """One progress bar for a whole job, drawn on stderr by tqdm (created on the first
    :meth:`show`). ``factory`` replaces ``tqdm`` (tests record what is drawn)."""

    def __init__(self, factory: Callable[..., Any] | None = None) -> None:
        self._factory = factory
        self._bar: Any = None
        self._fraction = 0.0
        self._drawn = 0.0
        self._words = ""

    def show(self, fraction: float, words: str, counts: str = "") -> None:
        """Shows ``fraction`` (0..1) of the job done, what is being done and its counts; the
        bar never moves back."""
        self._fraction = max(self._fraction, min(fraction, 1.0))
        if self._bar is None:
            factory = self._factory
            if factory is None:
                from tqdm.auto import tqdm  # imported when a bar is first drawn: quiet runs never load it

                factory = tqdm
            self._bar = factory(
                total=STEPS,
                desc=words,
                postfix=counts,
                leave=False,
                file=sys.stderr,
                bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}",
            )
        now = time.monotonic()
        if words == self._words and now - self._drawn < REDRAW_S and fraction < 1.0:
            return  # the same step drawn a moment ago: every new step is drawn at once
        self._drawn, self._words = now, words
        self._bar.set_description_str(words, refresh=False)
        self._bar.set_postfix_str(counts, refresh=False)
        self._bar.n = round(self._fraction * STEPS)
        self._bar.refresh()

    def close(self) -> None:
        """Removes the line."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _phase_words(plan: Sequence[GroupPlan], phase: str, done: int, total: int) -> tuple[str, str, int, float]:
    """``(words, counts, group, fraction of the group's step)`` of one event; the group is -1
    for a phase that belongs to none (``measure``) and for phases not known here."""
    parts = phase.split()
    g = int(parts[1][1:]) if len(parts) > 1 and parts[1][:1] == "g" and parts[1][1:].isdigit() else -1
    group = plan[g] if 0 <= g < len(plan) else None
    # The group is named when several groups have tensors.
    named = group is not None and group.label and sum(1 for p in plan if p.tensors) > 1
    label = f"{group.label}: " if named and group is not None else ""
    if parts[0] == "prepare" and group is not None:
        return f"{label}preparing blocks", f"tensor {min(done + 1, total)}/{total}", g, done / max(total, 1)
    if parts[0] == "pack" and group is not None:
        return f"{label}packing indices", f"{total} tensors", g, 0.0
    if parts[0] == "cluster" and group is not None and len(parts) == 4 and parts[2][1:].isdigit():
        s, stage = int(parts[2][1:]), parts[3]
        a, b = KMEANS_SPANS.get(stage, (0.0, 1.0))
        what = KMEANS_WORDS.get(stage, stage)
        bh, bw = group.block
        words = f"{label}clustering stage {s + 1}/{group.stages} (k={group.k}, {bh}x{bw} blocks): {what}"
        if stage == "init":
            counts = f"{done}/{total} centroids"
        elif stage == "samples":
            counts = f"{done:,} block assignments"
        else:
            counts = f"{done:,}/{total:,} blocks"
        return words, counts, g, a + (b - a) * min(done / max(total, 1), 1.0)
    if parts[0] == "measure":
        return "measuring errors", f"tensor {min(done + 1, total)}/{total}", -1, done / max(total, 1)
    return phase, f"{done}/{total}", -1, 0.0


class CompressProgress:
    """The progress callback of one ``compress_to_file`` call: each event in words, and the
    job's fraction from the work estimate of every step (prepare, each clustering stage and
    pack of each group, then measuring ``elements`` elements). With ``span`` the call is part
    ``span`` of a larger job (a target-mode search) and ``prefix`` starts its words."""

    def __init__(
        self,
        plan: Sequence[GroupPlan],
        elements: int,
        line: ProgressLine,
        *,
        span: tuple[float, float] = (0.0, 1.0),
        prefix: str = "",
    ) -> None:
        self.plan, self.line, self.span, self.prefix = list(plan), line, span, prefix
        # Work of each step in job order: (group, step) -> (start, length); step is
        # "prepare", a stage number, or "pack".
        self._steps: dict[tuple[int, Any], tuple[float, float]] = {}
        at = 0.0
        for gi, gp in enumerate(self.plan):
            for step, work in (
                ("prepare", PREPARE_WORK * gp.elements),
                *((s, gp.stage_work(s)) for s in range(gp.stages)),
                ("pack", PACK_WORK * gp.elements),
            ):
                self._steps[(gi, step)] = (at, work)
                at += work
        self._steps[(-1, "measure")] = (at, MEASURE_WORK * elements)
        self._total = max(at + MEASURE_WORK * elements, 1.0)

    def __call__(self, phase: str, done: int, total: int) -> None:
        words, counts, g, part = _phase_words(self.plan, phase, done, total)
        parts = phase.split()
        if parts[0] == "cluster" and g >= 0:
            step: Any = int(parts[2][1:])
        else:
            step = parts[0] if parts else phase
        start, work = self._steps.get((g, step), (None, 0.0))
        lo, hi = self.span
        if start is None:
            self.line.show(lo, self.prefix + words, counts)
            return
        self.line.show(lo + (hi - lo) * (start + part * work) / self._total, self.prefix + words, counts)
