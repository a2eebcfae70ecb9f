#!/usr/bin/env bash
# The whole test suite: installs what is missing, then lint, Rust tests (with and without the
# `parallel` feature), the aarch64 cross tests under qemu, Python tests. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh

echo "== cargo fmt / clippy"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p legofmt --no-default-features --all-targets -- -D warnings

echo "== Rust tests"
cargo test -p legofmt
cargo test -p legofmt --no-default-features
# The Rust example decodes a file that Python's legofmt.save wrote (a conformance vector).
cargo run -q -p legofmt --example decode -- spec/vectors/valid/save_conv_rank4_odd.lgn

echo "== aarch64: cross-built core tests under qemu, decode bit-identical to x86-64"
bash scripts/aarch64.sh all

echo "== Python lint and types"
python3 -m ruff check python tests examples benches spec
python3 -m ruff format --check python tests examples benches spec
python3 -m mypy

echo "== Python tests"
python3 -m pytest -q tests
