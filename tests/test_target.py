"""Target mode: save(..., target_ratio=) / (..., max_error=) searches block shapes and stages."""

from __future__ import annotations

import os

import pytest

import fixtures
import legofmt


@pytest.fixture(scope="module")
def model():
    return fixtures.mnist_cnn()


def test_max_error_picks_the_smallest_file_meeting_it(tmp_path, model):
    path = tmp_path / "m.lgn"
    r = legofmt.save(model, path, max_error=0.02, progress=False)
    assert r.max_rel_mse <= 0.02
    assert os.path.getsize(path) == r.file_bytes
    # Every built-in candidate with the given k (no k/4 ones: those are for target_ratio), with
    # the default outliers and without, then per-tensor refinements of those that missed the bound.
    builtin = [{**c, "k": 256} for c in legofmt._target.CANDIDATES]
    builtin += [{**c, "outliers": 0.0} for c in builtin]
    assert [c.options for c in r.search[: len(builtin)]] == builtin
    refined = r.search[len(builtin) :]
    for c in refined:
        assert isinstance(c.options["stages"], dict) and min(c.options["stages"].values()) >= 1
    chosen = [c for c in r.search if c.chosen]
    assert len(chosen) == 1 and chosen[0].file_bytes == r.file_bytes
    # No candidate meeting the bound is smaller than the chosen one.
    assert all(c.file_bytes >= r.file_bytes for c in r.search if c.max_rel_mse <= 0.02)
    # The file on disk is the chosen candidate, and its tensors have the reported errors.
    loaded = legofmt.load(path)
    state = model.state_dict()
    for t in r.tensors:
        if t.clustered:
            x, y = state[t.name].double(), loaded[t.name].double()
            assert float(((x - y) ** 2).sum() / (x**2).sum()) == pytest.approx(t.rel_mse, rel=1e-4)
    assert not [n for n in os.listdir(tmp_path) if n != "m.lgn"]  # candidates cleaned up


def test_target_ratio_picks_the_most_accurate_file_at_that_ratio(tmp_path, model):
    r = legofmt.save(model, tmp_path / "m.lgn", target_ratio=8, progress=False)
    assert r.ratio >= 8
    feasible = [c for c in r.search if c.ratio >= 8]
    chosen = next(c for c in r.search if c.chosen)
    assert chosen.mean_rel_mse == min(c.mean_rel_mse for c in feasible)
    assert r.max_rel_mse == chosen.max_rel_mse and r.file_bytes == chosen.file_bytes
    pareto = [c for c in r.search if c.pareto]
    for c in r.search:  # every candidate is dominated by (or is) a Pareto one (ratio, mean error)
        assert any(p.ratio >= c.ratio and p.mean_rel_mse <= c.mean_rel_mse for p in pareto)


def test_target_ratio_allocates_stages_per_tensor(tmp_path, model):
    """Per-tensor stage plans built from the uniform candidates' error tables: within the
    ratio, they leave less error (mean over tensors) than any uniform file that fits."""
    r = legofmt.save(model, tmp_path / "m.lgn", target_ratio=10, progress=False)
    plans = [c for c in r.search if isinstance(c.options["stages"], dict)]
    uniform = [c for c in r.search if isinstance(c.options["stages"], int)]
    # k=256 and k=64, each with the default outliers and without
    assert len(uniform) == 4 * len(legofmt._target.CANDIDATES) and plans
    for c in plans:
        assert set(c.options["stages"]) == {t.name for t in r.tensors if t.codebook == "shared"}
        assert len(set(c.options["stages"].values())) > 1
    fitting = [c for c in plans if c.ratio >= 10]
    assert fitting
    for c in fitting:  # each plan beats every uniform file of its block shape and k that fits
        same = [
            u
            for u in uniform
            if (u.options["block"], u.options["k"], u.options.get("outliers"))
            == (c.options["block"], c.options["k"], c.options.get("outliers"))
        ]
        assert c.mean_rel_mse < min(u.mean_rel_mse for u in same if u.ratio >= 10)
    assert r.ratio >= 10
    # The chosen plan is what was written: its tensors have the stage counts it names.
    info = legofmt.info(tmp_path / "m.lgn")
    chosen = next(c for c in r.search if c.chosen)
    st = chosen.options["stages"]
    plan = st if isinstance(st, dict) else {t.name: st for t in r.tensors if t.codebook == "shared"}
    for t in info.tensors:
        if t.name in plan:
            assert len(t.codebooks) == plan[t.name]
        elif t.encoding == "clustered":  # sensitive: their own one-stage codebook
            assert len(t.codebooks) == 1


def test_target_mode_errors(tmp_path, model):
    with pytest.raises(legofmt.InvalidArgumentError, match="target_ratio must be a number > 0"):
        legofmt.save(model, tmp_path / "m.lgn", target_ratio=-1)
    with pytest.raises(legofmt.InvalidArgumentError, match="block cannot be combined"):
        legofmt.save(model, tmp_path / "m.lgn", block=(2, 2), max_error=0.1)
    with pytest.raises(legofmt.InvalidArgumentError, match="stages cannot be combined"):
        legofmt.save(model, tmp_path / "m.lgn", stages=2, max_error=0.1)
    assert not os.listdir(tmp_path)


def test_custom_candidates_and_unreachable_bound(tmp_path, model):
    cands = [{"block": (4, 4), "stages": 1}, {"block": (4, 4), "stages": 2}]
    r = legofmt.save(model, tmp_path / "m.lgn", max_error=1e-9, candidates=cands, progress=False)
    # Nothing meets 1e-9: the most accurate candidate is kept, and the report says so.
    assert r.max_rel_mse == min(c.max_rel_mse for c in r.search) > 1e-9


def test_stages_per_tensor(tmp_path, model):
    """stages= as a dict: exact names first, then patterns; stages are nested (stage s has one
    codebook, shared by the tensors with more than s stages)."""
    import json

    from safetensors import safe_open

    big = max(model.state_dict().items(), key=lambda kv: kv[1].numel())[0]
    uniform = legofmt.save(model, tmp_path / "u.lgn", block=(4, 4), stages=1, progress=False)
    mixed = legofmt.save(model, tmp_path / "m.lgn", block=(4, 4), stages={big: 3, "*": 1}, progress=False)
    with safe_open(str(tmp_path / "m.lgn"), framework="np") as f:
        manifest = json.loads(f.metadata()["lgn.manifest"])
    stages = {t["name"]: len(t["stages"]) for t in manifest["tensors"] if t["encoding"] == "clustered"}
    assert stages[big] == 3 and set(stages.values()) == {1, 3}
    shared = [i for i, c in enumerate(manifest["codebooks"]) if c["block"] == [4, 4]]
    assert len(shared) == 3  # stages 0, 1, 2 (and the sensitive tensors' own 1x1 codebook)
    uses = {
        t["name"]: [s["codebook"] for s in t["stages"]] for t in manifest["tensors"] if t["encoding"] == "clustered"
    }
    assert uses[big] == shared
    for name, u in uses.items():
        if u[0] in shared:  # a tensor with n stages uses the first n shared codebooks
            assert u == shared[: stages[name]], name
    err = {t.name: t.rel_mse for t in mixed.tensors if t.clustered}
    err1 = {t.name: t.rel_mse for t in uniform.tensors if t.clustered}
    assert err[big] < err1[big] / 2
    assert mixed.ratio < uniform.ratio
    # Without '*' the rest get the default number of stages.
    legofmt.save(model, tmp_path / "d.lgn", block=(4, 4), stages={big: 1}, progress=False)
    with safe_open(str(tmp_path / "d.lgn"), framework="np") as f:
        manifest = json.loads(f.metadata()["lgn.manifest"])
    counts = {len(t["stages"]) for t in manifest["tensors"] if t["encoding"] == "clustered"}
    assert counts <= {1, legofmt._options.DEFAULT_STAGES}
    with pytest.raises(legofmt.InvalidArgumentError, match="keys must be tensor names"):
        legofmt.save(model, tmp_path / "x.lgn", stages={1: 2})


def test_max_error_refines_per_tensor(tmp_path, model):
    """A candidate that misses max_error is retried with more stages on the tensors that miss
    it: the refined file meets the bound where the uniform one did not, and is smaller than
    the next uniform candidate that meets it."""
    cands = [{"block": (1, 4), "stages": 1}, {"block": (1, 4), "stages": 3}]
    r = legofmt.save(model, tmp_path / "m.lgn", max_error=0.02, candidates=cands, progress=False)
    base, full = r.search[0], r.search[1]
    assert base.max_rel_mse > 0.02 and full.max_rel_mse <= 0.02
    refined = [c for c in r.search[2:] if c.max_rel_mse <= 0.02]
    assert refined, [(c.options, c.max_rel_mse) for c in r.search]
    assert r.max_rel_mse <= 0.02 and r.ratio > full.ratio
    assert next(c for c in r.search if c.chosen) in refined


def test_stage_plan_fits_the_budget_and_is_maximal():
    """The greedy allocation never exceeds its byte budget (nested stages: as many codebooks
    as the largest stage count) and stops only when no tensor can take one more stage within it."""
    import random

    from legofmt._target import _stage_plan

    rng = random.Random(0)
    counts = [1, 2, 3, 4]
    for _ in range(50):
        names = [f"t{i}" for i in range(rng.randint(1, 12))]
        numel = {n: rng.choice([256, 4096, 65536]) for n in names}
        err = {s: {n: rng.uniform(0.5, 1.5) * 0.1**s for n in names} for s in counts}
        size = {s: {n: numel[n] * s // 4 for n in names} for s in counts}
        fixed, cb = rng.randint(0, 5000), rng.choice([256, 4096])

        def bytes_of(p, fixed=fixed, size=size, cb=cb):
            return fixed + sum(size[s][n] for n, s in p.items()) + cb * max(p.values())

        lo, hi = bytes_of(dict.fromkeys(names, 1)), bytes_of(dict.fromkeys(names, 4))
        budget = rng.uniform(lo, hi * 1.1)
        p = _stage_plan(err, size, counts, fixed, cb, budget)
        assert set(p) == set(names) and bytes_of(p) <= max(budget, lo)
        for n in names:
            if p[n] < 4:
                assert bytes_of({**p, n: p[n] + 1}) > budget
    # The extremes: everything fits, or nothing beyond the fewest stages does.
    names = ["a", "b"]
    err = {s: dict.fromkeys(names, 0.1**s) for s in counts}
    size = {s: dict.fromkeys(names, 100 * s) for s in counts}
    assert _stage_plan(err, size, counts, 0, 10, 1e9) == {"a": 4, "b": 4}
    assert _stage_plan(err, size, counts, 0, 10, 0) == {"a": 1, "b": 1}


def test_search_draws_one_progress_display(tmp_path, monkeypatch):
    """Target mode writes many files but shows one display, naming each candidate."""
    import torch

    from legofmt import _progress

    bars: list[list[str]] = []

    class Bar:
        def __init__(self, **kwargs: object) -> None:
            self.descs = [str(kwargs["desc"])]
            self.n = 0
            bars.append(self.descs)

        def set_description_str(self, s: str, refresh: bool = True) -> None:
            self.descs.append(s)

        def set_postfix_str(self, s: str, refresh: bool = True) -> None:
            pass

        def refresh(self) -> None:
            pass

        def close(self) -> None:
            pass

    monkeypatch.setattr(legofmt._target, "ProgressLine", lambda: _progress.ProgressLine(factory=Bar))
    g = torch.Generator().manual_seed(0)
    state = {"a": torch.randn(64, 64, generator=g), "b": torch.randn(128, 32, generator=g)}
    cands = [{"block": (4, 4), "stages": 1}, {"block": (2, 2), "stages": 1}, {"block": (2, 2), "stages": 2}]
    r = legofmt.save(state, tmp_path / "m.lgn", k=16, max_error=1e-9, candidates=cands, progress=True)
    assert len(bars) == 1 and len(r.search) >= len(cands)
    words = " | ".join(bars[0])
    for i in range(1, len(cands) + 1):
        assert f"candidate {i}/{len(cands)} (" in words
    assert "candidate 3/3 (block=(2, 2), stages=2): clustering stage 2/2 (k=16, 2x2 blocks)" in words
