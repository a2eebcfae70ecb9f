"""The Python API's contract: accepted inputs, lazy reading, load_into, info, and typed errors."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import ClassVar

import numpy as np
import pytest
import torch

import legofmt


@pytest.fixture
def state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "conv.weight": torch.randn(16, 8, 3, 3, generator=g),
        "conv.bias": torch.randn(16, generator=g),
        "fc.weight": torch.randn(10, 144, generator=g).half(),
        "fc.bias": torch.zeros(10).bfloat16(),
        "bn.num_batches_tracked": torch.tensor(7),
        "tiny": torch.randn(2, 2, generator=g),
    }


def test_module_dict_and_numpy_inputs_give_the_same_file(tmp_path, state):
    model = torch.nn.Sequential(torch.nn.Linear(12, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    a, b, c = (tmp_path / n for n in ("a.lgn", "b.lgn", "c.lgn"))
    legofmt.save(model, a, k=16)
    legofmt.save(model.state_dict(), b, k=16)
    legofmt.save({k: v.numpy() for k, v in model.state_dict().items()}, c, k=16)
    assert a.read_bytes() == b.read_bytes() == c.read_bytes()


def test_policy_keeps_small_integer_and_1d_tensors_raw(tmp_path, state):
    report = legofmt.save(state, tmp_path / "m.lgn", k=32, block=(4, 4), min_size=0)
    enc = {t.name: t.clustered for t in report.tensors}
    assert enc == {
        "conv.weight": True,
        "conv.bias": False,
        "fc.weight": True,
        "fc.bias": False,
        "bn.num_batches_tracked": False,
        "tiny": False,  # 2x2 is smaller than one 4x4 block
    }
    loaded = legofmt.load(tmp_path / "m.lgn")
    for name in ("conv.bias", "fc.bias", "bn.num_batches_tracked", "tiny"):
        assert torch.equal(loaded[name], state[name]) and loaded[name].dtype == state[name].dtype
    reasons = {t.name: t.reason for t in report.tensors}
    assert "rank 1" in reasons["conv.bias"] and "I64" in reasons["bn.num_batches_tracked"]


def test_raw_patterns_and_min_size(tmp_path, state):
    r = legofmt.save(state, tmp_path / "m.lgn", k=8, raw=["fc.*"], min_size=2000, sensitive="raw")
    enc = {t.name: t.clustered for t in r.tensors}
    assert not enc["fc.weight"]  # pattern
    assert enc["conv.weight"] is False  # 1152 elements < min_size, sensitive tensors raw
    r = legofmt.save(state, tmp_path / "m.lgn", k=8, raw="fc.*", min_size=0)
    assert {t.name: t.clustered for t in r.tensors}["conv.weight"]


def _codebook_of(path, name):
    """(block, k) of each stage's codebook of tensor ``name``, from the file's manifest."""
    import json

    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        man = json.loads(f.metadata()["lgn.manifest"])
    t = next(t for t in man["tensors"] if t["name"] == name)
    if t["encoding"] == "raw":
        return None
    return [
        (tuple(man["codebooks"][s["codebook"]]["block"]), man["codebooks"][s["codebook"]]["k"]) for s in t["stages"]
    ]


def test_default_policy_gives_depthwise_and_small_tensors_their_own_codebook(tmp_path):
    g = torch.Generator().manual_seed(0)
    state = {
        "dw.weight": torch.randn(512, 1, 3, 3, generator=g),  # depthwise: sensitive
        "pw.weight": torch.randn(512, 64, 1, 1, generator=g),  # 32,768 elements: shared codebook
        "head.weight": torch.randn(10, 128, generator=g),  # 1,280 < 4,096 elements: sensitive
        "stem.weight": torch.randn(4, 3, 3, 3, generator=g),  # 108 < 256 elements: raw
    }
    path = tmp_path / "m.lgn"
    r = legofmt.save(state, path)
    assert {t.name: t.clustered for t in r.tensors} == {
        "dw.weight": True,
        "pw.weight": True,
        "head.weight": True,
        "stem.weight": False,
    }
    reasons = {t.name: t.reason for t in r.tensors}
    assert "depthwise" in reasons["dw.weight"] and "own codebook" in reasons["dw.weight"]
    assert "min_size=4096" in reasons["head.weight"] and "own codebook" in reasons["head.weight"]
    assert "256" in reasons["stem.weight"]
    # Sensitive tensors: one 1x1, k=256 stage (8-bit scalar code per row); the rest: 2x2, 3 stages.
    assert _codebook_of(path, "dw.weight") == _codebook_of(path, "head.weight") == [((1, 1), 256)]
    assert _codebook_of(path, "pw.weight") == [((2, 2), 256)] * 3
    assert {t.name: t.index_bits for t in r.tensors}["dw.weight"] == 8
    dw = legofmt.load(path)["dw.weight"]
    rel = float(((dw - state["dw.weight"]) ** 2).mean() / (state["dw.weight"] ** 2).mean())
    assert rel < 1e-3  # 256 levels per row: close to lossless

    r = legofmt.save(state, path, sensitive="raw")
    assert {t.name: t.clustered for t in r.tensors} == {
        "dw.weight": False,
        "pw.weight": True,
        "head.weight": False,
        "stem.weight": False,
    }
    r = legofmt.save(state, path, sensitive={"block": (1, 3), "k": 16})
    assert _codebook_of(path, "dw.weight") == [((1, 3), 16)]
    assert _codebook_of(path, "head.weight") == [((1, 3), 16)]
    r = legofmt.save(state, path, cluster_depthwise=True, min_size=0)
    assert all(t.clustered for t in r.tensors if t.name != "stem.weight")
    assert _codebook_of(path, "dw.weight") == [((2, 2), 256)] * 3
    with pytest.raises(legofmt.InvalidArgumentError, match="min_size"):
        legofmt.save(state, path, min_size=-1)
    for bad, what in [("int8", "'raw' or a dict"), ({"bits": 8}, "unknown key"), ({"k": 1}, "k must"),
                      ({"block": (0, 1)}, "block must"), ({"stages": 0}, "stages must")]:  # fmt: skip
        with pytest.raises(legofmt.InvalidArgumentError, match=what):
            legofmt.save(state, path, sensitive=bad)


def test_report_and_info_agree_with_the_file(tmp_path, state):
    path = tmp_path / "m.lgn"
    report = legofmt.save(state, path, k=32, metadata={"model": "test"})
    i = legofmt.info(path)
    size = os.path.getsize(path)
    assert report.file_bytes == i.file_bytes == size
    numel = sum(t.numel() for t in state.values())
    assert report.numel == i.numel == numel
    assert report.ratio == pytest.approx(4 * numel / size)
    assert i.ratio == pytest.approx(4 * numel / size)
    src = sum(t.numel() * t.element_size() for t in state.values())
    assert i.ratio_source == pytest.approx(src / size)
    assert report.bits_per_weight == pytest.approx(8 * size / numel)
    assert i.metadata == {"model": "test"}
    assert sum(t.stored_bytes for t in i.tensors) < size
    assert {t.name for t in i.tensors} == set(state)
    text = str(i)
    assert "conv.weight" in text and "clustered" in text


def test_open_is_lazy_and_matches_load(tmp_path, state):
    path = tmp_path / "m.lgn"
    legofmt.save(state, path, k=32)
    full = legofmt.load(path)
    with legofmt.open(path) as f:
        assert f.keys() == list(state)
        assert "fc.weight" in f and len(f) == len(state)
        assert f.dtype_and_shape("fc.weight") == ("F16", (10, 144))
        for name in f.keys():
            assert torch.equal(f.get_tensor(name), full[name])
        with pytest.raises(legofmt.InvalidArgumentError, match="no tensor named `nope`"):
            f.get_tensor("nope")
    with pytest.raises(legofmt.LgnError, match="closed"):
        f.get_tensor("conv.weight")
    with legofmt.open(path, framework="np") as f:
        arr = f.get_tensor("conv.weight")
        assert isinstance(arr, np.ndarray) and np.array_equal(arr, full["conv.weight"].numpy())


def test_load_into_decodes_into_existing_parameters(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.BatchNorm2d(16), torch.nn.Flatten())
    path = tmp_path / "m.lgn"
    legofmt.save(model, path, k=16)
    expected = legofmt.load(path)
    ptrs = {k: v.data_ptr() for k, v in model.state_dict().items()}
    fresh = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.BatchNorm2d(16), torch.nn.Flatten())
    res = legofmt.load_into(fresh, path)
    assert res.missing_keys == [] and res.unexpected_keys == []
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, expected[k]), k
    # Decoded in place: the model's own storage (the original model's pointers are unchanged).
    res = legofmt.load_into(model, path)
    assert {k: v.data_ptr() for k, v in model.state_dict().items()} == ptrs


def test_load_into_strict_and_shape_mismatch(tmp_path):
    model = torch.nn.Linear(8, 4)
    path = tmp_path / "m.lgn"
    legofmt.save({"weight": torch.randn(4, 8)}, path, k=4)
    with pytest.raises(legofmt.InvalidArgumentError, match="missing keys \\['bias'\\]"):
        legofmt.load_into(model, path)
    res = legofmt.load_into(model, path, strict=False)
    assert res.missing_keys == ["bias"]
    legofmt.save({"weight": torch.randn(8, 4), "bias": torch.randn(4)}, path, k=4)
    with pytest.raises(legofmt.InvalidArgumentError, match=r"weight.*shape"):
        legofmt.load_into(model, path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 1}, "k must be an int in 2..65536"),
        ({"k": 65537}, "k must be an int in 2..65536"),
        ({"k": 2.5}, "k must be"),
        ({"block": (0, 4)}, "block must be"),
        ({"block": (9, 1)}, "block must be"),
        ({"stages": 0}, "stages"),
        ({"stages": 17}, "stages"),
        ({"scale": "channel"}, "scale.*row-rms"),
        ({"colour": "red"}, "unknown option.*colour"),
    ],
)
def test_bad_arguments_raise_invalid_argument(tmp_path, kwargs, match):
    with pytest.raises(legofmt.InvalidArgumentError, match=match) as e:
        legofmt.save({"w": torch.randn(8, 8)}, tmp_path / "m.lgn", **kwargs)
    assert isinstance(e.value, ValueError) and isinstance(e.value, legofmt.LgnError)
    assert not os.listdir(tmp_path)  # nothing written, not even a temporary file


def test_row_rms_scales_are_stored_as_row_scales(tmp_path):
    """scale="row-rms" changes what rows are divided by before clustering, not the format:
    the file has ordinary row scales (refit by least squares) that any reader applies."""
    import json

    from safetensors import safe_open

    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 64, generator=g) * torch.logspace(-2, 1, 64).unsqueeze(1)
    w[3, 5] = 40.0  # an outlier: absmax and RMS scaling now differ a lot on row 3
    reports = {}
    for scale in ("row", "row-rms"):
        path = tmp_path / f"{scale}.lgn"
        reports[scale] = legofmt.save({"w": w}, path, block=(2, 2), k=16, scale=scale, progress=False)
        with safe_open(str(path), framework="pt") as f:
            manifest = json.loads(f.metadata()["lgn.manifest"])
            scales = f.get_tensor("w.lgn.scale").float()
        assert manifest["tensors"][0]["scale"]["mode"] == "row"
        assert scales.shape == (64,) and bool((scales > 0).all())
        decoded = legofmt.load(path)["w"]
        err = float(((decoded - w) ** 2).sum() / (w**2).sum())
        assert err == pytest.approx(reports[scale].tensors[0].rel_mse, rel=1e-4)
    # Different statistics, different clusterings: not the same file.
    assert reports["row"].tensors[0].rel_mse != reports["row-rms"].tensors[0].rel_mse


def test_bad_inputs(tmp_path):
    with pytest.raises(legofmt.InvalidArgumentError, match="dict of tensors"):
        legofmt.save([1, 2], tmp_path / "m.lgn")
    with pytest.raises(legofmt.InvalidArgumentError, match="'w' is a list"):
        legofmt.save({"w": [1.0]}, tmp_path / "m.lgn")
    with pytest.raises(legofmt.InvalidArgumentError, match="nothing to save"):
        legofmt.save({}, tmp_path / "m.lgn")
    with pytest.raises(legofmt.LgnIOError) as e:
        legofmt.save({"w": torch.randn(8, 8)}, tmp_path / "missing" / "m.lgn")
    assert isinstance(e.value, OSError) and "missing" in str(e.value)
    with pytest.raises(legofmt.LgnIOError, match=r"nope\.lgn"):
        legofmt.load(tmp_path / "nope.lgn")
    (tmp_path / "junk.lgn").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(legofmt.FormatError, match=r"junk\.lgn"):
        legofmt.load(tmp_path / "junk.lgn")


def test_failed_save_keeps_the_old_file(tmp_path):
    path = tmp_path / "m.lgn"
    legofmt.save({"w": torch.randn(8, 8)}, path, k=4)
    before = path.read_bytes()

    class Boom(Exception):
        pass

    def stop(phase: str, done: int, total: int) -> None:
        raise Boom

    big = {"w": torch.randn(512, 512)}
    with pytest.raises(Boom):
        legofmt._legofmt.compress_to_file(
            str(path),
            [("w", "F32", [512, 512], big["w"].numpy().reshape(-1).view(np.uint8), 0)],
            [{"k": 256, "block": (4, 4), "stages": 1, "scale": "row"}],
            progress=stop,
        )
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.lgn"]


def test_numpy_only_without_torch(tmp_path):
    """save/load/info with numpy arrays work when torch cannot be imported."""
    code = f"""
import sys
sys.modules['torch'] = None  # any 'import torch' now raises ImportError
import numpy as np, legofmt
x = np.random.default_rng(0).standard_normal((32, 24)).astype(np.float32)
r = legofmt.save({{'w': x, 'b': np.ones(3, np.float16)}}, {str(tmp_path / "n.lgn")!r}, k=16)
out = legofmt.load({str(tmp_path / "n.lgn")!r}, framework='np')
assert out['w'].shape == (32, 24) and out['b'].dtype == np.float16
assert legofmt.info({str(tmp_path / "n.lgn")!r}).numel == 32 * 24 + 3
try:
    legofmt.load({str(tmp_path / "n.lgn")!r})
except ImportError as e:
    assert 'torch' in str(e)
else:
    raise SystemExit('framework="pt" without torch should say torch is needed')
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_codebook_per_tensor(tmp_path):
    g = torch.Generator().manual_seed(2)
    state = {"a": torch.randn(64, 64, generator=g), "b": torch.randn(32, 128, generator=g) * 10, "c": torch.randn(8)}
    r = legofmt.save(state, tmp_path / "t.lgn", k=16, stages=2, codebook="tensor", min_size=0)
    i = legofmt.info(tmp_path / "t.lgn")
    by = {t.name: t for t in i.tensors}
    assert len(i.codebooks) == 4  # 2 clustered tensors x 2 stages
    assert set(by["a"].codebooks).isdisjoint(by["b"].codebooks)
    shared = legofmt.save(state, tmp_path / "g.lgn", k=16, stages=2, min_size=0)
    assert len(legofmt.info(tmp_path / "g.lgn").codebooks) == 2
    loaded = legofmt.load(tmp_path / "t.lgn")
    for t in r.tensors:
        if t.clustered:
            x, y = state[t.name].double(), loaded[t.name].double()
            assert float(((x - y) ** 2).sum() / (x**2).sum()) == pytest.approx(t.rel_mse, rel=1e-4)
    assert r.file_bytes > shared.file_bytes  # two more codebooks
    with pytest.raises(legofmt.InvalidArgumentError, match="codebook must be"):
        legofmt.save(state, tmp_path / "x.lgn", codebook="layer")


def test_save_options_are_one_checked_type():
    """``save``'s keyword arguments become one frozen SaveOptions, checked once; SAVE_OPTIONS
    is derived from its fields (their help texts)."""
    import dataclasses

    from legofmt._options import DEFAULT_BLOCK, DEFAULT_OUTLIERS, SaveOptions

    fields = {f.name: f for f in dataclasses.fields(SaveOptions)}
    assert legofmt.SAVE_OPTIONS == {n: f.metadata["help"] for n, f in fields.items() if f.metadata["option"]}
    assert {"k", "block", "seed"} <= fields.keys() and not {"k", "block", "seed"} & legofmt.SAVE_OPTIONS.keys()
    assert "outliers" in legofmt.SAVE_OPTIONS and all(legofmt.SAVE_OPTIONS.values())
    o = SaveOptions.from_kwargs(k=16, raw="fc.*", stages={"a": 2})
    assert (o.k, o.block, o.raw, o.outliers, o.stages_for("a"), o.stages_for("b")) == (
        16,
        DEFAULT_BLOCK,
        ("fc.*",),
        DEFAULT_OUTLIERS,
        2,
        legofmt._options.DEFAULT_STAGES,
    )
    assert o.given == {"raw", "stages"} and not o.target_mode
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.k = 8  # type: ignore[misc]
    raw_sensitive = SaveOptions.from_kwargs(sensitive="raw", max_error=0.1)
    assert raw_sensitive.sensitive is None and raw_sensitive.target_mode
    trial = raw_sensitive.with_options({"block": (4, 4), "stages": 1})
    assert trial.sensitive is None and trial.block == (4, 4) and not trial.target_mode
    for kwargs, words in [
        ({"colour": "red"}, "unknown option"),
        ({"k": 1}, "k must be an int"),
        ({"min_size": -1}, "min_size"),
        ({"sensitive": {"k": 1}}, "sensitive: k"),
        ({"codebook": "layer"}, "codebook must be"),
        ({"bias_correction": 1}, "True, False or None"),
        ({"target_ratio": 0}, "target_ratio must be a number > 0"),
        ({"candidates": [{"stages": 1}]}, "give target_ratio= and/or max_error="),
        ({"max_error": 0.1, "block": (2, 2)}, "block cannot be combined"),
    ]:
        with pytest.raises(legofmt.InvalidArgumentError, match=words):
            SaveOptions.from_kwargs(**kwargs)


def _package_imports() -> dict[str, set[str]]:
    """legofmt's modules and the package modules each imports, anywhere in its code."""
    import ast
    import pathlib

    folder = pathlib.Path(legofmt.__file__).parent
    graph: dict[str, set[str]] = {}
    for path in sorted(folder.glob("*.py")):
        name = path.stem
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    deps.add(node.module.split(".")[0])
                else:
                    deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("legofmt."):
                deps.add(node.module.split(".")[1])  # type: ignore[union-attr]
            elif isinstance(node, ast.Import):
                deps.update(a.name.split(".")[1] for a in node.names if a.name.startswith("legofmt."))
        graph[name] = deps - {name}
    return graph


def test_package_modules_import_each_other_without_cycle():
    """The import graph of the package's modules (every import, lazy ones inside functions
    included) is acyclic, so no module depends on importing lazily to break a cycle."""
    graph = _package_imports()
    assert {"_options", "_save", "_compress", "_reader", "_bias_glue", "_target", "_progress"} <= graph.keys()
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name in done or name not in graph:
            return
        for dep in graph[name]:
            visit(dep, (*path, name))
        done.add(name)

    for name in graph:
        visit(name, ())
    # Each private module imports on its own in a fresh interpreter.
    mods = sorted(n for n in graph if n.startswith("_") and n != "__init__")
    code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module('legofmt.' + m)"
    out = subprocess.run([sys.executable, "-c", code, *mods], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr


def test_package_defines_no_function_named_open():
    """``legofmt.open`` is ``open_file`` exported under that name: no module shadows the builtin."""
    import ast
    import pathlib

    folder = pathlib.Path(legofmt.__file__).parent
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.name != "open", f"{path.name}:{node.lineno}"
    assert legofmt.open is legofmt._reader.open_file


class _FakeBar:
    """Records what a tqdm bar is asked to draw."""

    made: ClassVar[list[_FakeBar]] = []

    def __init__(self, **kwargs: object) -> None:
        self.kwargs = kwargs
        self.lines: list[tuple[str, str, int]] = []
        self.desc, self.postfix, self.n, self.closed = str(kwargs.get("desc", "")), "", 0, False
        _FakeBar.made.append(self)

    def set_description_str(self, s: str, refresh: bool = True) -> None:
        self.desc = s

    def set_postfix_str(self, s: str, refresh: bool = True) -> None:
        self.postfix = s

    def refresh(self) -> None:
        self.lines.append((self.desc, self.postfix, self.n))

    def close(self) -> None:
        self.closed = True


#: Events of one ``compress_to_file`` call (two groups: shared 2x2 k=256 with 2 stages, and the
#: sensitive tensors' 1x1 k=256), as the core reports them; stage names old and new.
EVENTS = [
    ("prepare g0", 0, 2),
    ("prepare g0", 1, 2),
    ("cluster g0 s0 init", 129, 256),
    ("cluster g0 s0 samples", 16480, 491520),
    ("cluster g0 s0 assign", 49152, 49152),
    ("cluster g0 s1 init", 256, 256),
    ("cluster g0 s1 samples", 16264, 491520),
    ("cluster g0 s1 lloyd", 20000, 98304),
    ("cluster g0 s1 assign", 49152, 49152),
    ("pack g0", 0, 2),
    ("prepare g1", 0, 1),
    ("cluster g1 s0 init", 256, 256),
    ("cluster g1 s0 samples", 576, 5760),
    ("cluster g1 s0 assign", 576, 576),
    ("pack g1", 0, 1),
    ("measure", 0, 3),
    ("measure", 2, 3),
]


def test_progress_is_one_line_in_words(monkeypatch):
    """Recorded core events become one bar for the whole job: phases in words with k, block
    and stage counts, counts of each phase, a fraction that only grows, no rate."""
    from legofmt import _progress

    monkeypatch.setattr(_progress, "REDRAW_S", 0.0)
    _FakeBar.made = []
    plans = [
        _progress.GroupPlan.of(256, (2, 2), 2, [((512, 256), 2), ((256, 256), 2)], "shared codebook"),
        _progress.GroupPlan.of(256, (1, 1), 1, [((64, 9), 1)], "sensitive tensors"),
    ]
    assert plans[0].blocks == (49152, 49152) and plans[1].blocks == (576,)
    line = _progress.ProgressLine(factory=_FakeBar)
    callback = _progress.CompressProgress(plans, 512 * 256 + 256 * 256 + 64 * 9 + 9, line)
    for event in EVENTS:
        callback(*event)
    line.close()
    assert len(_FakeBar.made) == 1
    bar = _FakeBar.made[0]
    assert bar.closed and bar.kwargs["total"] == _progress.STEPS and "rate" not in str(bar.kwargs["bar_format"])
    descs = [d for d, _, _ in bar.lines]
    for words in (
        "shared codebook: preparing blocks",
        "shared codebook: clustering stage 1/2 (k=256, 2x2 blocks): choosing initial centroids",
        "shared codebook: clustering stage 1/2 (k=256, 2x2 blocks): fitting on samples",
        "shared codebook: clustering stage 2/2 (k=256, 2x2 blocks): fitting on samples",
        "shared codebook: clustering stage 2/2 (k=256, 2x2 blocks): Lloyd iterations",
        "shared codebook: clustering stage 2/2 (k=256, 2x2 blocks): assigning",
        "sensitive tensors: clustering stage 1/1 (k=256, 1x1 blocks): assigning",
        "sensitive tensors: packing indices",
        "measuring errors",
    ):
        assert words in descs, words
    assert ("shared codebook: clustering stage 1/2 (k=256, 2x2 blocks): assigning", "49,152/49,152 blocks") in [
        (d, p) for d, p, _ in bar.lines
    ]
    assert ("measuring errors", "tensor 3/3") in [(d, p) for d, p, _ in bar.lines]
    ns = [n for _, _, n in bar.lines]
    assert ns == sorted(ns) and 0 <= ns[0] < ns[-1] <= _progress.STEPS
    assert not any("g0" in d or " s0 " in d for d in descs)  # no raw phase names leak


def test_save_draws_one_bar_and_none_when_asked_not_to(tmp_path, monkeypatch):
    from legofmt import _progress

    made: list[object] = []
    real = _progress.ProgressLine

    def line() -> _progress.ProgressLine:
        made.append(1)
        return real(factory=_FakeBar)

    monkeypatch.setattr(legofmt._save, "ProgressLine", line)
    _FakeBar.made = []
    state = {"w": torch.randn(128, 64), "s": torch.randn(16, 16)}
    legofmt.save(state, tmp_path / "a.lgn", k=16, progress=True)
    assert len(made) == 1 and len(_FakeBar.made) == 1 and _FakeBar.made[0].closed
    legofmt.save(state, tmp_path / "b.lgn", k=16, progress=False)
    legofmt.save(state, tmp_path / "c.lgn", k=16)  # stderr is not a terminal under pytest
    assert len(made) == 1
    assert (tmp_path / "a.lgn").read_bytes() == (tmp_path / "b.lgn").read_bytes()
