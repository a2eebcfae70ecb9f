"""Pareto plots of accuracy vs size, drawn from the published accuracy tables.

    python benches/pareto.py docs/accuracy.md --model effnet -o docs/pareto_effnet.png

reads the full table of one model in ``docs/accuracy.md`` (the rows that
``benches/accuracy.py --model MODEL`` prints: label, ratio vs fp32, metric columns) and draws two
panels side by side: the rank metric (agreement with fp32 for the classifiers, MRR for MiniLM)
and the distance metric (KL of the logits, log scale, or the embeddings' cosine to fp32), each
against the ratio vs fp32 (log scale). Every method family has one colour and its Pareto frontier
drawn as a line through its non-dominated points (dominated points are faint); the defaults are a
star, target-mode rows a diamond. ``benches/accuracy.py --plot`` calls :func:`draw` on the rows it
has just measured, so both ways give the same figure.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Each model's full table follows the first Markdown heading that contains this title.
TITLES = {"mnist": "MNIST CNN", "effnet": "EfficientNet-Lite0", "minilm": "all-MiniLM-L6-v2"}

# Method families in legend order: (name, colour, marker of an ordinary point).
FAMILIES = [
    ("legofmt, data-free", "#1f62b4", "o"),
    ("legofmt, calibrated (finetune)", "#2ca02c", "o"),
    ("int per-channel (int8, int4)", "#d62728", "s"),
    ("Q4_0-style", "#ff7f0e", "s"),
    ("NF4-style", "#9467bd", "s"),
    ("scalar k-means (4, 3 bit)", "#8c564b", "s"),
]

# Metrics where a smaller value is better; every other metric is better when larger.
LOWER_IS_BETTER = {"KL"}
# Rates printed as percentages in the tables.
PERCENT = {"top-1", "agreement"}
# A KL of 0.0000 (below the table's four decimals) is drawn at this floor of the log axis.
KL_FLOOR = 5e-5
# Metrics whose best value is 1 (100%): drawn on a log scale of the distance to it, so that
# 99%, 99.9% and 100% do not merge: (top, floor, ticks). A value within ``floor`` (half the
# tables' last digit) of the top is drawn at ``top - floor``, where the top's tick sits.
CLOSE_TO_ONE = {
    "agreement": (100.0, 0.05, [0, 50, 80, 90, 95, 98, 99, 99.5, 99.8, 99.9, 100]),
    "cosine": (1.0, 5e-5, [0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9999]),
}
# The MRR axis shows 0.40 and up, where the methods differ; lower rows sit at its edge.
MRR_BOTTOM = 0.40
X_TICKS = [2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50, 80, 100]


@dataclass
class Row:
    """One table row: its label, ratio vs fp32 and its metrics (rates as fractions), by column."""

    label: str
    ratio: float
    metrics: dict[str, float]


def family(label: str) -> str:
    """The method family of a table row, from its label."""
    if label.startswith("baseline:"):
        if "per-channel" in label:
            return FAMILIES[2][0]
        if "Q4_0" in label:
            return FAMILIES[3][0]
        if "NF4" in label:
            return FAMILIES[4][0]
        return FAMILIES[5][0]
    if label.startswith("data-aware:"):
        return FAMILIES[1][0]
    return FAMILIES[0][0]


def _cell(text: str) -> float:
    """A table cell as a number: "99.9%" -> 0.999, "0.0063" -> 0.0063."""
    text = text.strip()
    if text.endswith("%"):
        return float(text[:-1]) / 100
    return float(text)


def parse_table(markdown: str, model: str) -> tuple[list[str], list[Row]]:
    """The metric columns and rows of ``model``'s full table in ``markdown``: the first table
    with the columns "configuration" and "ratio vs fp32" after the first heading naming the model."""
    title = TITLES[model]
    lines = markdown.splitlines()
    start = next((i for i, s in enumerate(lines) if s.startswith("#") and title in s), None)
    if start is None:
        raise ValueError(f"no heading naming {title!r}")
    for i in range(start + 1, len(lines)):
        cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
        if lines[i].startswith("|") and cells[:2] == ["configuration", "ratio vs fp32"]:
            header = cells
            break
    else:
        raise ValueError(f"no table of configurations after the heading naming {title!r}")
    metrics = [c for c in header[2:] if c not in ("bits/weight", "compress s")]
    rows = []
    for line in lines[i + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        values = dict(zip(header, cells))
        ratio = float(values["ratio vs fp32"].rstrip("x"))
        rows.append(Row(cells[0], ratio, {m: _cell(values[m]) for m in metrics}))
    return metrics, rows


def frontier(points: Sequence[tuple[float, float]], lower_is_better: bool) -> list[int]:
    """Indices of the non-dominated ``(ratio, value)`` points, by ratio: no other point is at
    least as small a file (as high a ratio) with at least as good a value, and better in one."""
    sign = -1.0 if lower_is_better else 1.0
    keep = []
    for i, (r, v) in enumerate(points):
        dominated = any(
            r2 >= r and sign * v2 >= sign * v and (r2 > r or sign * v2 > sign * v)
            for j, (r2, v2) in enumerate(points)
            if j != i
        )
        if not dominated:
            keep.append(i)
    return sorted(keep, key=lambda i: points[i][0])


def _drawn(metric: str, value: float) -> float:
    """Where a table value is drawn: KL 0.0000 at the floor of its log axis, an agreement of
    100.0% or a cosine of 1.0000 where the axis' top tick is."""
    if metric in LOWER_IS_BETTER:
        return max(value, KL_FLOOR)
    if metric in CLOSE_TO_ONE:
        top, floor, _ = CLOSE_TO_ONE[metric]
        scale = 100.0 if metric in PERCENT else 1.0
        return min(value, (top - floor) / scale)
    return value


def _axis_label(metric: str) -> str:
    return {
        "agreement": "top-1 agreement with fp32, % (log scale of 100 - x)",
        "KL": "KL(fp32 || compressed) of the logits (log)",
        "MRR": f"retrieval MRR (\u25bc: under {MRR_BOTTOM:.2f})",
        "cosine": "embeddings' cosine to fp32 (log scale of 1 - x)",
    }.get(metric, metric)


def _scale_y(ax: Any, metric: str, ys: Sequence[float]) -> None:
    """The y axis of one panel (``ys``: its values as drawn): better is up, with room where
    the rows are close to fp32."""
    import numpy as np

    if metric in LOWER_IS_BETTER:
        ax.set_yscale("log")
        ax.invert_yaxis()
        return
    if metric in CLOSE_TO_ONE:
        top, floor, ticks = CLOSE_TO_ONE[metric]

        def forward(y: Any) -> Any:
            return -np.log10(np.maximum(top - np.asarray(y, dtype=float), floor / 4))

        def inverse(t: Any) -> Any:
            return top - 10.0 ** (-np.asarray(t, dtype=float))

        ax.set_yscale("function", functions=(forward, inverse))
        ax.set_yticks([min(t, top - floor) for t in ticks])
        ax.set_yticklabels([f"{t:g}" for t in ticks])
        lo = max([t for t in ticks if t <= min(ys)], default=ticks[0])
        hi = min([t for t in ticks if t >= max(ys)], default=top)
        hi = min(hi, top - floor)
        ax.set_ylim(lo, top - (top - hi) / 10**0.08)  # a little room above the best row
        ax.minorticks_off()
        return
    if metric == "MRR":
        ax.set_ylim(MRR_BOTTOM, max(ys) + 0.005)


def draw(title: str, metrics: Sequence[str], rows: Sequence[Row], path: str) -> None:
    """Draw two panels (``metrics[-2]`` and ``metrics[-1]`` against the ratio) into a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    panels = list(metrics[-2:])
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.4))
    ratios = [r.ratio for r in rows]
    for ax, metric in zip(axes, panels):
        low = metric in LOWER_IS_BETTER
        scale = 100.0 if metric in PERCENT else 1.0
        for name, colour, marker in FAMILIES:
            members = [r for r in rows if family(r.label) == name]
            if not members:
                continue
            pts = [(r.ratio, _drawn(metric, r.metrics[metric])) for r in members]
            best = frontier(pts, low)
            ax.plot([pts[i][0] for i in best], [pts[i][1] * scale for i in best], "-", color=colour, lw=2, zorder=2)
            for i, (r, (x, y)) in enumerate(zip(members, pts)):
                on = i in best
                if "**defaults**" in r.label:
                    m, size = "*", 280
                elif "target mode" in r.label:
                    m, size = "D", 70
                else:
                    m, size = marker, 40
                if metric == "MRR" and y < MRR_BOTTOM:  # off the zoomed axis: at its edge
                    m, size, y = "v", 50, MRR_BOTTOM
                ax.scatter(
                    x,
                    y * scale,
                    marker=m,
                    s=size,
                    color=colour,
                    alpha=1.0 if on else 0.3,
                    edgecolors="black" if m in ("*", "D") else "none",
                    linewidths=0.8,
                    zorder=3 if on else 1,
                    clip_on=False,
                )
        _scale_y(ax, metric, [_drawn(metric, r.metrics[metric]) * scale for r in rows])
        ax.set_xscale("log")
        ticks = [t for t in X_TICKS if min(ratios) / 1.1 <= t <= max(ratios) * 1.1]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("ratio vs fp32, all bytes of the file (log)")
        ax.set_ylabel(_axis_label(metric))
        ax.grid(True, which="major", alpha=0.3)
    handles = [
        Line2D([], [], color=c, marker=m, lw=2, label=n)
        for n, c, m in FAMILIES
        if any(family(r.label) == n for r in rows)
    ]
    handles += [
        Line2D([], [], color="gray", marker="*", ms=15, mec="black", lw=0, label="defaults"),
        Line2D([], [], color="gray", marker="D", ms=7, mec="black", lw=0, label="target mode"),
        Line2D([], [], color="gray", marker="o", alpha=0.3, lw=0, label="dominated in its family"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=5, frameon=False, bbox_to_anchor=(0.5, -0.01))
    fig.suptitle(title + ": each line is one family's Pareto frontier; up and right is better")
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tables", help="Markdown file with the full accuracy tables (docs/accuracy.md)")
    p.add_argument("--model", choices=sorted(TITLES), required=True)
    p.add_argument("-o", "--output", required=True, help="PNG to write")
    a = p.parse_args()
    with open(a.tables, encoding="utf-8") as f:
        try:
            metrics, rows = parse_table(f.read(), a.model)
        except ValueError as e:
            p.error(f"{a.tables}: {e}")
    draw(TITLES[a.model], metrics, rows, a.output)
    print(f"{a.output}: {len(rows)} rows of {TITLES[a.model]}")


if __name__ == "__main__":
    main()
