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
    assert len(r.search) == len(legofmt._target.CANDIDATES)
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
    assert r.max_rel_mse == min(c.max_rel_mse for c in feasible)
    pareto = [c for c in r.search if c.pareto]
    for c in r.search:  # every candidate is dominated by (or is) a Pareto one
        assert any(p.ratio >= c.ratio and p.max_rel_mse <= c.max_rel_mse for p in pareto)


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
