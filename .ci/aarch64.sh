#!/usr/bin/env bash
# Cross-build one crate of the workspace for aarch64-unknown-linux-gnu and run
# its tests under qemu user-mode emulation, using only Debian bookworm packages.
#
# The rustup toolchain on these machines cannot add targets and nothing can be
# downloaded outside crates.io / PyPI / Debian, so the cross toolchain is
# Debian's "web" Rust (rustc-web + cargo-web, installed as /usr/bin/rustc and
# /usr/bin/cargo) plus its aarch64 standard library (libstd-rust-web-dev:arm64,
# a multiarch package). Linking uses gcc-aarch64-linux-gnu; test binaries run
# through plain `qemu-aarch64`, which finds the aarch64 dynamic loader and libc
# through the multiarch libc6:arm64 (/lib/ld-linux-aarch64.so.1). Do NOT use
# `qemu-aarch64 -L /usr/aarch64-linux-gnu` / QEMU_LD_PREFIX: it hangs threaded
# (rayon) test binaries.
#
# The rustup toolchain stays first on PATH and is left untouched: the Debian
# tools are called by full path (cargo) and through RUSTC/RUSTDOC, and build
# into their own target dir so the two never share fingerprints.
#
# Usage (as root):
#   .ci/aarch64.sh [CRATE] [EXTRA CARGO TEST ARGS...]
#     CRATE defaults to legofmt. Runs, in order:
#       cargo test -p CRATE --no-default-features [EXTRA...]
#       cargo test -p CRATE                       [EXTRA...]   (default features)
#     e.g. .ci/aarch64.sh legofmt -- --nocapture
#
# Environment:
#   WORKSPACE_DIR       workspace root (default: the repo root, parent of .ci/)
#   AARCH64_TARGET_DIR  cargo target dir (default: $WORKSPACE_DIR/target/aarch64)
#   AARCH64_SKIP_APT=1  never touch apt (fail if the tools are missing)
#   AARCH64_RUSTFLAGS   extra rustflags for the aarch64 target only
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORKSPACE_DIR="$(cd "${WORKSPACE_DIR:-$SCRIPT_DIR/..}" && pwd)"
TARGET_DIR="${AARCH64_TARGET_DIR:-$WORKSPACE_DIR/target/aarch64}"
TRIPLE=aarch64-unknown-linux-gnu

CRATE="${1:-legofmt}"
if [[ $# -gt 0 ]]; then shift; fi
EXTRA_ARGS=("$@")

DEB_CARGO=/usr/bin/cargo
DEB_RUSTC=/usr/bin/rustc
DEB_RUSTDOC=/usr/bin/rustdoc

# Debian packages (all from bookworm main / bookworm-security).
# rustc-web and libstd-rust-web-dev:arm64 must have the same version; apt
# enforces that (libstd-rust-web-dev is Multi-Arch: same and rustc-web depends
# on the exact version of the amd64 one).
PKGS=(
  rustc-web                 # /usr/bin/rustc, /usr/bin/rustdoc
  cargo-web                 # /usr/bin/cargo
  libstd-rust-web-dev:arm64 # /usr/lib/rustlib/aarch64-unknown-linux-gnu
  gcc-aarch64-linux-gnu     # linker (aarch64-linux-gnu-gcc)
  libc6-dev-arm64-cross     # crt files / libc for linking
  libc6:arm64               # runtime loader + libc for qemu (multiarch)
  libgcc-s1:arm64           # runtime libgcc_s.so.1 (Rust unwinding)
  qemu-user                 # /usr/bin/qemu-aarch64
)

log() { printf '==> %s\n' "$*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

pkg_installed() {
  [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" == installed ]]
}

need_apt() {
  dpkg --print-foreign-architectures | grep -qx arm64 || return 0
  local p
  for p in "${PKGS[@]}"; do
    pkg_installed "$p" || return 0
  done
  [[ "$(dpkg-query -W -f='${Version}' rustc-web)" == \
     "$(dpkg-query -W -f='${Version}' libstd-rust-web-dev:arm64)" ]] || return 0
  return 1
}

# ---------------------------------------------------------------- install
if need_apt; then
  if [[ "${AARCH64_SKIP_APT:-0}" == 1 ]]; then
    log "aarch64 cross toolchain missing and AARCH64_SKIP_APT=1"; exit 1
  fi
  if [[ "$(id -u)" != 0 ]]; then
    log "must run as root to install: ${PKGS[*]}"; exit 1
  fi
  if [[ "$(dpkg --print-architecture)" != amd64 ]]; then
    log "expected an amd64 host, got $(dpkg --print-architecture)"; exit 1
  fi
  t0=$(now)
  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
  apt-get update -q -o DPkg::Lock::Timeout=300
  apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 \
    -o Dpkg::Use-Pty=0 "${PKGS[@]}"
  log "apt install took $(elapsed "$t0")s"
else
  log "aarch64 cross toolchain already installed; skipping apt"
fi

for tool in "$DEB_CARGO" "$DEB_RUSTC" "$DEB_RUSTDOC" \
            /usr/bin/aarch64-linux-gnu-gcc /usr/bin/qemu-aarch64; do
  [[ -x "$tool" ]] || { log "missing $tool"; exit 1; }
done
SYSROOT="$("$DEB_RUSTC" --print sysroot)"
[[ -d "$SYSROOT/lib/rustlib/$TRIPLE/lib" ]] || {
  log "no $TRIPLE std under $SYSROOT/lib/rustlib (is libstd-rust-web-dev:arm64 installed?)"; exit 1; }

# ------------------------------------------------------------ environment
# Keep the caller's (rustup) settings from leaking into the Debian toolchain.
unset RUSTUP_TOOLCHAIN RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER \
      RUSTFLAGS RUSTDOCFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_ENCODED_RUSTDOCFLAGS \
      CARGO_BUILD_TARGET CARGO_BUILD_RUSTFLAGS CARGO_TARGET_DIR \
      QEMU_LD_PREFIX
export RUSTC="$DEB_RUSTC"
export RUSTDOC="$DEB_RUSTDOC"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=/usr/bin/qemu-aarch64
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="${AARCH64_RUSTFLAGS:-}"
# For any build script that compiles C with the cc crate.
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

log "$("$DEB_RUSTC" --version) / $("$DEB_CARGO" --version)"
log "workspace: $WORKSPACE_DIR, target dir: $TARGET_DIR, crate: $CRATE"

cd "$WORKSPACE_DIR"

run_tests() {
  local label="$1"; shift
  local args=(test --target "$TRIPLE" --target-dir "$TARGET_DIR" -p "$CRATE" "$@")
  local t0
  t0=$(now)
  log "[$label] build: cargo ${args[*]} --no-run"
  "$DEB_CARGO" "${args[@]}" --no-run "${EXTRA_ARGS[@]}"
  log "[$label] build took $(elapsed "$t0")s"
  t0=$(now)
  log "[$label] run: cargo ${args[*]} ${EXTRA_ARGS[*]}"
  "$DEB_CARGO" "${args[@]}" "${EXTRA_ARGS[@]}"
  log "[$label] test run took $(elapsed "$t0")s"
}

total=$(now)
run_tests "no-default-features" --no-default-features
run_tests "default-features"
log "aarch64 tests of $CRATE passed in $(elapsed "$total")s"
