"""The README's Python quickstart runs as written, and every relative link of the README and of
docs/*.md leads to a file (and, where it names one, a heading) that exists."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch  # noqa: F401  (the quickstart saves a torch model)

import legofmt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOCS = os.path.join(ROOT, "docs")


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def python_blocks(markdown: str) -> list[str]:
    """The bodies of the fenced ```python blocks of ``markdown``, in order."""
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.S | re.M)


def test_readme_has_one_quickstart_block() -> None:
    blocks = python_blocks(_read(README))
    assert len(blocks) == 1
    assert len(blocks[0].splitlines()) <= 15


def test_readme_quickstart_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (code,) = python_blocks(_read(README))
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    scope: dict[str, object] = {"__name__": "__readme__"}
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), scope)

    assert (tmp_path / "model.lgn").stat().st_size > 0
    model, report, state = scope["model"], scope["report"], scope["state"]
    assert isinstance(report, legofmt.SaveReport)
    assert 4.0 < report.ratio < 6.0  # the defaults on two dense layers: about 5x
    # What it prints: the ratio, the file's table (with its own ratio), the shapes.
    lines = out.getvalue().splitlines()
    assert float(lines[0]) == pytest.approx(report.ratio)
    assert "vs fp32" in out.getvalue()
    assert lines[-1] == "(512, 784) (64, 784)"
    # The loaded tensors match the model's, and load_into put the same values into the model.
    params = model.state_dict()  # type: ignore[attr-defined]
    assert isinstance(state, dict)
    assert set(state) == set(params)
    for name, t in state.items():
        assert t.shape == params[name].shape and t.dtype == params[name].dtype
        assert bool((t == params[name]).all())
    w = scope["w"]
    assert isinstance(w, np.ndarray)
    np.testing.assert_array_equal(w[100:164], scope["rows"])


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: str) -> set[str]:
    headings = re.findall(r"^#+ (.*)$", _read(path), flags=re.M)
    return {_slug(h) for h in headings}


def _pages() -> list[str]:
    return [README, *sorted(os.path.join(DOCS, f) for f in os.listdir(DOCS) if f.endswith(".md"))]


def test_slug_matches_github() -> None:
    assert _slug("Outliers (format 2.0)") == "outliers-format-20"
    assert _slug("Issue 5's targets") == "issue-5s-targets"
    assert _slug("The `.lgn` format") == "the-lgn-format"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_resolve(page: str) -> None:
    text = re.sub(r"^```.*?^```", "", _read(page), flags=re.S | re.M)  # links in code are not links
    links = LINK.findall(text)
    assert links, "a page without links"
    for link in links:
        if re.match(r"[a-z]+:", link):  # http:, https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        path = os.path.normpath(os.path.join(os.path.dirname(page), target)) if target else page
        assert os.path.exists(path), f"{os.path.relpath(page, ROOT)}: {link} does not exist"
        if anchor:
            assert path.endswith(".md"), f"{link}: an anchor into a file that is not Markdown"
            assert anchor in _anchors(path), f"{os.path.relpath(page, ROOT)}: no heading for {link}"


def _table_rows(lines: list[str]) -> dict[str, list[str]]:
    """The rows of the Markdown tables among ``lines``: first cell -> the other cells."""
    rows = {}
    for line in lines:
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def _section(lines: list[str], heading: str) -> list[str]:
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("#")), len(lines))
    return lines[start:end]


@pytest.mark.parametrize(
    ("summary", "heading"),
    [
        ("**MNIST CNN**", "### MNIST CNN"),
        ("**EfficientNet-Lite0**", "### EfficientNet-Lite0"),
        ("**all-MiniLM-L6-v2**", "### all-MiniLM-L6-v2"),
    ],
)
def test_readme_results_match_the_full_tables(summary: str, heading: str) -> None:
    """Each row of a README summary table is a row of docs/accuracy.md's full table of that
    model, same label, same ratio and metrics (the full table also has bits/weight and time)."""
    readme = _read(README).splitlines()
    start = next(i for i, line in enumerate(readme) if line.startswith(summary))
    end = next(i for i in range(start + 1, len(readme)) if readme[i].startswith("!["))
    short = _table_rows(readme[start:end])
    full = _table_rows(_section(_read(os.path.join(DOCS, "accuracy.md")).splitlines(), heading))
    assert short.pop("configuration") == ["ratio vs fp32", *full["configuration"][2:5]]
    assert len(short) >= 3
    for label, cells in short.items():
        assert label in full, f"{summary}: {label!r} is not in the full table"
        ratio, _bits, *metrics = full[label]
        assert cells == [ratio, *metrics[:3]], label


def test_plot_script_reads_the_published_tables() -> None:
    """benches/pareto.py parses each model's full table of docs/accuracy.md (drawing needs
    matplotlib, which the tests do not)."""
    import sys

    sys.path.insert(0, os.path.join(ROOT, "benches"))
    try:
        import pareto
    finally:
        sys.path.pop(0)
    text = _read(os.path.join(DOCS, "accuracy.md"))
    for model, metrics in [("mnist", "agreement"), ("effnet", "agreement"), ("minilm", "MRR")]:
        columns, rows = pareto.parse_table(text, model)
        assert metrics in columns and len(rows) >= 20
        assert sum("**defaults**" in r.label for r in rows) == 1
        families = {pareto.family(r.label) for r in rows}
        assert len(families) == len(pareto.FAMILIES)  # every family has rows, data-aware included
        front = pareto.frontier([(r.ratio, r.metrics[metrics]) for r in rows], False)
        assert front and all(0 <= i < len(rows) for i in front)
