#!/usr/bin/env bash
# The whole test suite: installs what is missing, then lint, Rust tests (with and without the
# `parallel` feature), the docs (warnings denied), the aarch64 cross tests under qemu (both
# feature sets), the type stubs against the compiled module, Python tests. Exits non-zero on
# the first failure. A skipped Python test or an ignored Rust test is a failure: on a fresh
# install every test must run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh

# cargo test "$@", failing when a test binary reports ignored tests (`#[ignore]`, or a doctest
# marked `ignore`): they would pass silently without running.
cargo_test() {
    local log
    log=$(mktemp)
    cargo test "$@" 2>&1 | tee "$log"
    if grep -Eq '^test result: .*; [1-9][0-9]* ignored;' "$log"; then
        echo "test.sh: \`cargo test $*\` ignored these tests; every test must run:" >&2
        grep -E '^test .* \.\.\. ignored' "$log" >&2 || true
        rm -f "$log"
        exit 1
    fi
    rm -f "$log"
}

echo "== cargo fmt / clippy"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p legofmt --no-default-features --all-targets -- -D warnings

echo "== Rust tests"
cargo_test -p legofmt
cargo_test -p legofmt --no-default-features
# The Rust example decodes a file that Python's legofmt.save wrote (a conformance vector).
cargo run -q -p legofmt --example decode -- spec/vectors/valid/save_conv_rank4_odd.lgn

echo "== Rust docs (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace

echo "== aarch64: cross-built core tests under qemu (both feature sets), decode bit-identical to x86-64"
bash scripts/aarch64.sh all

echo "== Python lint and types"
python3 -m ruff check python tests examples benches spec
python3 -m ruff format --check python tests examples benches spec
python3 -m mypy
# python/legofmt/_legofmt.pyi against the compiled module, both as install.sh just installed
# them from this checkout (in a checkout with a built module: PYTHONPATH=python, same command).
python3 -m mypy.stubtest legofmt._legofmt

echo "== Python tests"
# tests/_no_skips.py fails the run when a test is skipped (importable as tests._no_skips
# because `python3 -m` puts the repository root on sys.path).
python3 -m pytest -q -p tests._no_skips tests
