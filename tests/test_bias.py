"""Data-free bias correction (legofmt._bias): the statistics it derives from batch norms, the
layers it corrects, and what it does to a network's outputs.

A small convolutional network with batch norms is given running statistics that describe its
inputs (a pass in training mode over them, cumulative averages), so that "the mean a batch norm
says" is true of the data, as it is for a trained model. Clustering it coarsely shifts each
layer's output mean; the corrected file must remove most of the shift measured on those inputs.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch import nn

import legofmt
from legofmt import _bias
from legofmt.errors import InvalidArgumentError


class Net(nn.Module):
    """conv -> BN -> ReLU6 -> depthwise conv -> BN -> ReLU -> 1x1 conv -> BN (+ skip) -> pool ->
    flatten -> linear: the shapes of a MobileNet/EfficientNet block and a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(32, momentum=None)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False)
        self.bn1 = nn.BatchNorm2d(32, momentum=None)
        self.pw = nn.Conv2d(32, 32, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(32, momentum=None)
        self.head = nn.Conv2d(32, 96, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(96, momentum=None)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(96, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = nn.functional.relu6(self.bn0(self.stem(x)))
        b = torch.relu(self.bn1(self.dw(a)))
        c = self.bn2(self.pw(b)) + a
        d = nn.functional.relu6(self.bn3(self.head(c)))
        return self.fc(torch.flatten(self.pool(d), 1))


@pytest.fixture(scope="module")
def net_and_inputs() -> tuple[Net, torch.Tensor]:
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):  # non-trivial affine parameters, as after training
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 1.0)
    x = torch.randn(256, 3, 16, 16)
    net.train()
    with torch.no_grad():
        for i in range(0, len(x), 64):  # running statistics = the statistics of these inputs
            net(x[i : i + 64])
    return net.eval(), x


def test_relu_of_a_normal_matches_the_closed_form():
    mean = torch.tensor([-1.0, 0.0, 0.7, 3.0], dtype=torch.float64)
    std = torch.tensor([0.5, 1.0, 2.0, 0.1], dtype=torch.float64)
    got = _bias._activation_stats(torch.relu, _bias.Stats(mean, std, spatial=True))
    assert got is not None and got.std is not None
    a = mean / std
    phi = torch.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + torch.erf(a / math.sqrt(2)))
    expected = mean * cdf + std * phi
    assert torch.allclose(got.mean, expected, atol=1e-6)
    second = (mean**2 + std**2) * cdf + mean * std * phi  # E[relu(X)^2]
    assert torch.allclose(got.std, (second - expected**2).sqrt(), atol=1e-5)


def test_plan_finds_the_layers_batch_norms_describe(net_and_inputs):
    net, _ = net_and_inputs
    plan = _bias.analyse(net)
    by_weight = {c.weight: c for c in plan.corrections}
    # The stem sees the raw input (unknown); every other layer's input comes from a batch norm.
    assert set(by_weight) == {"dw.weight", "pw.weight", "head.weight", "fc.weight"}
    assert by_weight["dw.weight"].target == "bn1.running_mean" and by_weight["dw.weight"].sign == 1
    assert by_weight["dw.weight"].groups == 32
    assert by_weight["fc.weight"].target == "fc.bias" and by_weight["fc.weight"].sign == -1
    # The head's input is bn2's output plus the skip (relu6 of bn0): means add.
    bn0 = _bias.Stats(net.bn0.bias.double(), net.bn0.weight.double(), spatial=True)
    relu6 = _bias._activation_stats(nn.functional.relu6, bn0)
    assert relu6 is not None
    assert torch.allclose(by_weight["head.weight"].mean, net.bn2.bias.double() + relu6.mean)
    # The estimated means are those of the data the running statistics came from.
    _, x = net_and_inputs
    seen = {}
    hook = net.pw.register_forward_hook(lambda m, i, o: seen.update(pw=i[0].mean((0, 2, 3))))
    with torch.no_grad():
        net(x)
    hook.remove()
    est = by_weight["pw.weight"].mean.float()
    assert torch.corrcoef(torch.stack([est, seen["pw"]]))[0, 1] > 0.95


def test_correction_removes_the_output_mean_shift(tmp_path, net_and_inputs):
    net, x = net_and_inputs
    with torch.no_grad():
        ref = net(x)

    def shift(bias_correction: bool) -> tuple[float, legofmt.SaveReport]:
        path = tmp_path / f"bc{bias_correction}.lgn"
        report = legofmt.save(net, path, k=8, block=(1, 4), stages=1, min_size=0, bias_correction=bias_correction)
        m = Net()
        legofmt.load_into(m, path)
        with torch.no_grad():
            out = m.eval()(x)
        return float((out - ref).mean(0).norm()), report

    plain, r0 = shift(False)
    corrected, r1 = shift(True)
    print(f"output mean shift: {plain:.4f} -> {corrected:.4f}")
    assert r0.bias_corrected == {} and r0.bias_note == "off"
    assert r1.bias_corrected == {
        "bn1.running_mean": "dw.weight",
        "bn2.running_mean": "pw.weight",
        "bn3.running_mean": "head.weight",
        "fc.bias": "fc.weight",
    }
    assert corrected < 0.5 * plain
    # Only the corrected raw tensors differ; clustered tensors and sizes are the same.
    a, b = legofmt.load(tmp_path / "bcFalse.lgn"), legofmt.load(tmp_path / "bcTrue.lgn")
    for name in a:
        assert torch.equal(a[name], b[name]) == (name not in r1.bias_corrected), name
    reasons = {t.name: t.reason for t in r1.tensors}
    assert "bias-corrected for fc.weight" in reasons["fc.bias"]
    assert r1.file_bytes == os.path.getsize(tmp_path / "bcTrue.lgn")
    assert "legofmt.bias_correction" in legofmt.open(tmp_path / "bcTrue.lgn").metadata()
    assert sorted(os.listdir(tmp_path)) == ["bcFalse.lgn", "bcTrue.lgn"]  # no temporary file left


def test_default_corrects_modules_only(tmp_path, net_and_inputs):
    net, _ = net_and_inputs
    r = legofmt.save(net, tmp_path / "m.lgn", k=16)
    assert r.bias_corrected and r.bias_note == ""
    d = legofmt.save(net.state_dict(), tmp_path / "d.lgn", k=16)
    assert d.bias_corrected == {} and d.bias_note == "not a torch.nn.Module"


def test_untraceable_model_is_saved_uncorrected(tmp_path):
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm1d(64)
            self.fc = nn.Linear(64, 64)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                x = -x
            return self.fc(self.bn(x))

    m = Branchy().eval()
    r = legofmt.save(m, tmp_path / "a.lgn", k=16, min_size=0)
    assert r.bias_corrected == {} and r.bias_note.startswith("not traceable by torch.fx")
    legofmt.save(m, tmp_path / "b.lgn", k=16, min_size=0, bias_correction=False)
    assert (tmp_path / "a.lgn").read_bytes() == (tmp_path / "b.lgn").read_bytes()


def test_bias_correction_option_errors(tmp_path, net_and_inputs):
    net, _ = net_and_inputs
    with pytest.raises(InvalidArgumentError, match=r"needs the torch\.nn\.Module"):
        legofmt.save(net.state_dict(), tmp_path / "x.lgn", bias_correction=True)
    with pytest.raises(InvalidArgumentError, match="True, False or None"):
        legofmt.save(net, tmp_path / "x.lgn", bias_correction="yes")
    assert not (tmp_path / "x.lgn").exists()


def test_target_mode_corrects_the_chosen_file(tmp_path, net_and_inputs):
    net, _ = net_and_inputs
    r = legofmt.save(net, tmp_path / "t.lgn", k=16, target_ratio=4, min_size=0)
    assert r.search and "fc.bias" in r.bias_corrected
    assert r.file_bytes == os.path.getsize(tmp_path / "t.lgn")
    # The chosen candidate's row is the file written, metadata note included.
    chosen = next(c for c in r.search if c.chosen)
    assert chosen.file_bytes == r.file_bytes and chosen.ratio == pytest.approx(r.ratio)
    assert sorted(os.listdir(tmp_path)) == ["t.lgn"]


def test_residual_branch_weights(net_and_inputs):
    """A layer inside a residual branch passes on its branch's share of the sum's variance."""
    net, _ = net_and_inputs
    weights = _bias.analyse(net).weights
    assert set(weights) == {"dw.weight", "pw.weight"}  # only these are inside the branch
    bn0 = _bias.Stats(net.bn0.bias.detach().double(), net.bn0.weight.detach().double(), spatial=True)
    skip = _bias._activation_stats(nn.functional.relu6, bn0)
    assert skip is not None and skip.std is not None
    branch = float((net.bn2.weight.detach().double() ** 2).sum())
    share = branch / (branch + float((skip.std**2).sum()))
    assert weights["dw.weight"] == pytest.approx(share) and weights["pw.weight"] == pytest.approx(share)
    assert 0 < share < 1


def test_two_branches_share_the_variance():
    """A downsampling block (main branch + projection shortcut): each branch's layers get their
    own share; layers before the split count fully."""

    class Down(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pre, self.bn_pre = nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8)
            self.main, self.bn_main = nn.Conv2d(8, 16, 3, bias=False), nn.BatchNorm2d(16)
            self.short, self.bn_short = nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.bn_pre(self.pre(x)))
            return self.bn_main(self.main(h)) + self.bn_short(self.short(h)[:, :, 1:-1, 1:-1])

    m = Down().eval()
    with torch.no_grad():
        m.bn_main.weight.fill_(3.0)  # variance 9 per channel against the shortcut's 1
        m.bn_short.weight.fill_(1.0)
    w = _bias.analyse(m).weights
    assert w == {"main.weight": pytest.approx(0.9), "short.weight": pytest.approx(0.1)}


def test_target_ratio_ranks_by_the_weighted_error(tmp_path, net_and_inputs):
    """With a module, target_ratio counts residual-branch layers' errors with their weights."""
    net, _ = net_and_inputs
    r = legofmt.save(net, tmp_path / "t.lgn", k=16, target_ratio=3, min_size=0)
    feasible = [c for c in r.search if c.ratio >= 3]
    chosen = next(c for c in r.search if c.chosen)
    assert chosen.weighted_rel_mse == min(c.weighted_rel_mse for c in feasible)
    assert all(c.weighted_rel_mse < c.mean_rel_mse for c in r.search)  # dw and pw weigh < 1
    # A state dict has no graph: plain mean.
    d = legofmt.save(net.state_dict(), tmp_path / "d.lgn", k=16, target_ratio=3, min_size=0)
    assert all(c.weighted_rel_mse == c.mean_rel_mse for c in d.search)


def test_finetune_starts_from_the_corrected_file(tmp_path, net_and_inputs):
    """legofmt.finetune's student is the model as the file loads it: with the corrected biases
    and running means, not the model's own. Its starting held-out loss is the loaded model's."""
    net, x = net_and_inputs
    path = tmp_path / "ft.lgn"
    r = legofmt.save(net, path, k=8, block=(1, 4), stages=1, min_size=0)
    assert r.bias_corrected
    ft = legofmt.finetune(net, path, x, steps=0, batch_size=32)
    loaded = Net()
    loaded.load_state_dict(net.state_dict())
    legofmt.load_into(loaded, path)
    loaded.eval()
    held_out = [b for i, b in enumerate(x.split(32)) if i % 5 == 4]
    with torch.no_grad():
        losses = [((loaded(b) - net(b)) ** 2).mean() / (net(b) ** 2).mean() for b in held_out]
    assert ft.loss_before == pytest.approx(float(sum(losses)) / len(losses), rel=1e-4)
