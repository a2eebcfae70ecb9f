#!/usr/bin/env bash
# Cross-builds the core crate (`legofmt`, no Python) for aarch64-unknown-linux-gnu with
# Debian's Rust toolchain and runs its tests under qemu user-mode emulation; optionally checks
# that the aarch64 `lgn` binary decodes files to exactly the same bytes as the x86-64 one.
#
# usage: scripts/aarch64.sh [MODE] [FILE...]
#   all        (default) install, then `test`, then `compare`
#   install    install the cross toolchain (apt; idempotent, non-interactive)
#   test       for each feature set (the default features, then --no-default-features):
#              cross-build `cargo test -p legofmt --no-run`, run every test binary under
#              qemu-aarch64, one test at a time with its own time limit, and print a summary;
#              fails if a test fails, times out or is ignored
#   compare [FILE...]
#              build `lgn` (release) for x86-64 and aarch64 and run `info`, `verify` and
#              `decode` with both on each FILE (default: every vector of spec/vectors/manifest.json,
#              also checked against its expected tensors or expected rejection; or a generated
#              file when there are none); fails unless outputs and exit codes are identical (where the
#              vector manifest says NaN bits are unspecified, any NaN matches any NaN)
#
# Environment:
#   AARCH64_TEST_TIMEOUT   seconds allowed per test under qemu (default 900)
#   AARCH64_FEATURE_SETS   the feature sets `test` runs, in order (default
#                          "default no-default-features"; `compare` builds the default features)
#   AARCH64_CARGO_ARGS     extra cargo arguments for every build, e.g. "-j 1"
#   AARCH64_SKIP_INSTALL=1 do not touch apt (fail if something is missing)
#
# Why Debian's toolchain: the rustup toolchain here cannot add targets (no network to
# static.rust-lang.org), but Debian ships the aarch64 standard library as a multiarch package
# (libstd-rust-web-dev:arm64) matching its rustc-web. The build uses its own target folder
# (target/aarch64) so it never clobbers the host build.
#
# qemu is run plainly (`qemu-aarch64 BINARY`), never with `-L /usr/aarch64-linux-gnu`: that
# prefix makes threaded programs hang; the multiarch libc6:arm64 package provides
# /lib/ld-linux-aarch64.so.1 and the libraries the binaries need. Binaries that start other
# binaries (the `lgn` CLI test) get the runner through LGN_CLI_RUNNER, since no binfmt_misc
# handler is registered in a container.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET=aarch64-unknown-linux-gnu
TARGET_DIR="$ROOT/target/aarch64"
TEST_TIMEOUT=${AARCH64_TEST_TIMEOUT:-900}
read -r -a EXTRA_CARGO_ARGS <<<"${AARCH64_CARGO_ARGS:-}"
read -r -a FEATURE_SETS <<<"${AARCH64_FEATURE_SETS:-default no-default-features}"
[ ${#FEATURE_SETS[@]} -gt 0 ] || FEATURE_SETS=(default no-default-features)
for set in "${FEATURE_SETS[@]}"; do
    case "$set" in
    default | no-default-features) ;;
    *)
        echo "aarch64.sh: unknown feature set '$set' in AARCH64_FEATURE_SETS" \
            "(expected default or no-default-features)" >&2
        exit 2
        ;;
    esac
done

MODE=${1:-all}
[ $# -gt 0 ] && shift
case "$MODE" in
all | install | test | compare) ;;
-h | --help | help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
*)
    echo "aarch64.sh: unknown mode '$MODE' (expected all, install, test or compare; see --help)" >&2
    exit 2
    ;;
esac
if [ "$MODE" != compare ] && [ $# -gt 0 ]; then
    echo "aarch64.sh: FILE arguments are only accepted by the compare mode" >&2
    exit 2
fi

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
log() { printf '\n== %s\n' "$*"; }
die() {
    echo "aarch64.sh: error: $*" >&2
    exit 1
}

declare -A TIMES=()

# ---------------------------------------------------------------------------------------------
# Install
# ---------------------------------------------------------------------------------------------

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "not root and sudo is missing: cannot install packages"
    SUDO=(sudo)
fi
APT=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0)

installed() { # installed PKG -> 0 when dpkg has it installed
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}
version_of() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }

do_install() {
    local t0 updated=0
    t0=$(now)
    log "install: Debian cross toolchain for $TARGET"
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        echo "adding dpkg architecture arm64"
        "${SUDO[@]}" dpkg --add-architecture arm64
        "${APT[@]}" update
        updated=1
    fi
    local pkgs=(rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu
        libc6-dev-arm64-cross qemu-user libc6:arm64)
    local missing=()
    for p in "${pkgs[@]}"; do
        installed "$p" || missing+=("$p")
    done
    # The aarch64 standard library must be the exact version of the compiler.
    local rv sv
    rv=$(version_of rustc-web)
    sv=$(version_of libstd-rust-web-dev:arm64)
    if [ ${#missing[@]} -gt 0 ] || [ "$rv" != "$sv" ]; then
        [ $updated -eq 1 ] || "${APT[@]}" update
        # Pin the three Rust packages to rustc-web's candidate (bookworm-security carries
        # newer releases than bookworm itself; apt picks the highest).
        local cand
        cand=$(apt-cache policy rustc-web | awk '/Candidate:/ { print $2 }')
        [ -n "$cand" ] && [ "$cand" != "(none)" ] ||
            die "apt offers no rustc-web package (is bookworm or bookworm-security in the sources?)"
        echo "installing: ${missing[*]:-(version sync)}; rustc-web candidate $cand"
        "${APT[@]}" install --no-install-recommends \
            "rustc-web=$cand" "cargo-web=$cand" "libstd-rust-web-dev:arm64=$cand" \
            gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user libc6:arm64
    else
        echo "already installed: ${pkgs[*]}"
    fi
    TIMES[install]=$(elapsed "$t0")
}

# ---------------------------------------------------------------------------------------------
# Toolchain checks
# ---------------------------------------------------------------------------------------------

DEB_CARGO=
DEB_RUSTC=
find_toolchain() {
    DEB_CARGO=$(dpkg -L cargo-web 2>/dev/null | grep -E '^/usr/bin/cargo[^/]*$' | head -n1 || true)
    DEB_RUSTC=$(dpkg -L rustc-web 2>/dev/null | grep -E '^/usr/bin/rustc[^/]*$' | head -n1 || true)
    [ -x "$DEB_CARGO" ] || die "Debian's cargo (package cargo-web) is not installed; run: $0 install"
    [ -x "$DEB_RUSTC" ] || die "Debian's rustc (package rustc-web) is not installed; run: $0 install"
    for p in libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu qemu-user libc6:arm64; do
        installed "$p" || die "package $p is missing; run: $0 install"
    done
    [ -e /lib/ld-linux-aarch64.so.1 ] || die "/lib/ld-linux-aarch64.so.1 is missing (libc6:arm64)"
    command -v qemu-aarch64 >/dev/null || die "qemu-aarch64 is missing (qemu-user)"
    local rv sv
    rv=$(version_of rustc-web)
    sv=$(version_of libstd-rust-web-dev:arm64)
    [ "$rv" = "$sv" ] || die "rustc-web $rv and libstd-rust-web-dev:arm64 $sv differ; run: $0 install"

    # The toolchain must satisfy the workspace's rust-version and read the lockfile.
    local cv need lockv
    cv=$("$DEB_CARGO" --version | awk '{ print $2 }')
    need=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -n1)
    lockv=$(sed -n 's/^version = \([0-9]*\)$/\1/p' Cargo.lock | head -n1)
    ver_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }
    if [ -n "$need" ] && ! ver_ge "${cv%%-*}" "$need"; then
        die "Debian cargo $cv is older than the workspace rust-version $need"
    fi
    # Lockfile v4 needs cargo >= 1.78; v3 is read by every cargo this script can meet.
    if [ "${lockv:-3}" -ge 4 ] && ! ver_ge "${cv%%-*}" 1.78; then
        die "Cargo.lock is version $lockv, which cargo $cv cannot read"
    fi
    echo "toolchain: $("$DEB_CARGO" --version), $("$DEB_RUSTC" --version)"
    echo "           $(aarch64-linux-gnu-gcc --version | head -n1), $(qemu-aarch64 --version | head -n1)"
    echo "workspace: rust-version ${need:-unset}, Cargo.lock version ${lockv:-?}"
}

# Debian's cargo and rustc only; rustup's proxies (~/.cargo/bin) are kept off PATH, so build
# scripts and rustc invocations cannot pick up the other toolchain.
deb_cargo() {
    env -u RUSTUP_TOOLCHAIN -u RUSTC_WRAPPER -u RUSTC_WORKSPACE_WRAPPER -u CARGO_BUILD_TARGET \
        -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS \
        PATH="/usr/bin:/bin:/usr/sbin:/sbin" \
        RUSTC="$DEB_RUSTC" RUSTDOC="$(dirname "$DEB_RUSTC")/rustdoc" \
        CARGO_TARGET_DIR="$TARGET_DIR" \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
        "$DEB_CARGO" "$@"
}

# --locked: the script never rewrites Cargo.lock (other tools and people edit the workspace).
locked_hint() {
    echo "aarch64.sh: if cargo says Cargo.lock needs updating, build once on the host" \
        "(cargo build -p legofmt) to refresh it, then re-run" >&2
}

# ---------------------------------------------------------------------------------------------
# Test
# ---------------------------------------------------------------------------------------------

# do_test SET: build and run the tests of one feature set (default | no-default-features).
# Each set is built and then run before the next is built: the CLI test runs the `lgn` binary
# of target/aarch64/.../debug, which each build overwrites with its own features.
do_test() {
    local set=$1 t0 json
    local args=("${EXTRA_CARGO_ARGS[@]}")
    [ "$set" = no-default-features ] && args=(--no-default-features "${args[@]}")
    t0=$(now)
    log "[$set] build: cargo test -p legofmt --target $TARGET --no-run ${args[*]}"
    json=$(mktemp)
    if ! deb_cargo test -p legofmt --target "$TARGET" --no-run --locked \
        --message-format=json-render-diagnostics "${args[@]}" >"$json"; then
        locked_hint
        rm -f "$json"
        die "[$set] the aarch64 build failed"
    fi
    TIMES[build:$set]=$(elapsed "$t0")
    # Test executables from cargo's JSON messages: "name<TAB>path" per line.
    local bins
    bins=$(python3 - "$json" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        t = m["target"]
        print(f'{t["kind"][0]}:{t["name"]}\t{m["executable"]}')
EOF
)
    rm -f "$json"
    [ -n "$bins" ] || die "[$set] cargo produced no test binaries"
    local lgn_bin="$TARGET_DIR/$TARGET/debug/lgn"
    [ -x "$lgn_bin" ] || die "the aarch64 lgn binary was not built ($lgn_bin)"

    t0=$(now)
    local passed=0 failed=0 ignored=0 total=0 failures=() slow=()
    local name bin tests t out rc dt res
    while IFS=$'\t' read -r name bin; do
        log "[$set] run under qemu-aarch64: $name ($(basename "$bin"))"
        # List the tests, then run each alone (exact name) with its own time limit, so a hang
        # or a crash is pinned to one test and every test gets a time.
        if ! tests=$(cd "$ROOT/rust/legofmt" && qemu-aarch64 "$bin" --list --format terse 2>&1); then
            echo "$tests"
            failures+=("$name: could not list tests")
            failed=$((failed + 1))
            continue
        fi
        tests=$(printf '%s\n' "$tests" | sed -n 's/: test$//p')
        [ -n "$tests" ] || {
            echo "  (no tests)"
            continue
        }
        while IFS= read -r t; do
            total=$((total + 1))
            local s0
            s0=$(now)
            set +e
            out=$(cd "$ROOT/rust/legofmt" && LGN_CLI_RUNNER=qemu-aarch64 \
                timeout --kill-after=10 "$TEST_TIMEOUT" qemu-aarch64 "$bin" --exact "$t" 2>&1)
            rc=$?
            set -e
            dt=$(elapsed "$s0")
            res=$(printf '%s\n' "$out" | grep -E '^test result:' | tail -n1 || true)
            if [ $rc -eq 0 ] && [[ "$res" == *" 1 passed;"* ]]; then
                passed=$((passed + 1))
                printf '  ok       %6.1fs  %s\n' "$dt" "$t"
            elif [ $rc -eq 0 ] && [[ "$res" == *" 1 ignored;"* ]]; then
                ignored=$((ignored + 1))
                printf '  ignored  %6.1fs  %s\n' "$dt" "$t"
            else
                failed=$((failed + 1))
                if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
                    failures+=("$name::$t (timed out after ${TEST_TIMEOUT}s)")
                else
                    failures+=("$name::$t (exit $rc)")
                fi
                printf '  FAILED   %6.1fs  %s\n' "$dt" "$t"
                printf '%s\n' "$out" | sed 's/^/    | /'
            fi
            slow+=("$dt $name::$t")
        done <<<"$tests"
    done <<<"$bins"
    TIMES[qemu:$set]=$(elapsed "$t0")

    log "[$set] aarch64 test summary"
    echo "test binaries: $(printf '%s\n' "$bins" | wc -l)"
    echo "tests: $total  passed: $passed  failed: $failed  ignored: $ignored"
    echo "slowest under qemu:"
    printf '%s\n' "${slow[@]}" | sort -rn | head -n 5 | awk '{ printf "  %7.1fs  %s\n", $1, $2 }'
    echo "(doctests are not run: cross-compiled doctests need nightly's -Zdoctest-xcompile)"
    TEST_TOTALS+=("$set: $total tests, $passed passed, $failed failed, $ignored ignored")
    [ $total -gt 0 ] || die "[$set] no tests ran"
    if [ $failed -gt 0 ]; then
        printf '  failed: %s\n' "${failures[@]}"
        return 1
    fi
    # An ignored test is one that did not run: like a skipped Python test, it fails the run.
    if [ $ignored -gt 0 ]; then
        echo "  $ignored ignored test(s): every test must run (remove the #[ignore])"
        return 1
    fi
}

# ---------------------------------------------------------------------------------------------
# Compare: x86-64 vs aarch64 `lgn`
# ---------------------------------------------------------------------------------------------

# Prints "same" when two safetensors files hold the same tensors (names, dtypes, shapes and
# data bytes; header layout, data order and metadata may differ), else what differs. $3 is an
# optional comma-separated list of tensors whose NaN bits the spec leaves unspecified (NaN from
# arithmetic, or converted to F16/BF16: the vector manifest's `nan_bits_unspecified`): there a
# NaN matches any NaN, every other element still bit for bit. Needs numpy only.
st_same() {
    python3 - "$1" "$2" "${3:-}" <<'EOF'
import json, struct, sys

import numpy as np

NAN_ANY = {n for n in sys.argv[3].split(",") if n}
FLOATS = {"F16": "<f2", "F32": "<f4", "F64": "<f8"}


def nan_mask(dtype, data):
    if dtype == "BF16":
        bits = np.frombuffer(data, "<u2")
        return ((bits & 0x7F80) == 0x7F80) & ((bits & 0x7F) != 0)
    return np.isnan(np.frombuffer(data, FLOATS[dtype]))


def equal(name, x, y):
    if x == y:
        return True
    if name not in NAN_ANY or x[:2] != y[:2] or len(x[2]) != len(y[2]) or x[0] not in (*FLOATS, "BF16"):
        return False
    size = 2 if x[0] in ("F16", "BF16") else int(FLOATS[x[0]][2])
    a, b = (np.frombuffer(v[2], f"<u{size}") for v in (x, y))
    na, nb = nan_mask(x[0], x[2]), nan_mask(y[0], y[2])
    return bool(np.array_equal(na, nb) and np.array_equal(a[~na], b[~nb]))

def load(path):
    with open(path, "rb") as f:
        b = f.read()
    (n,) = struct.unpack("<Q", b[:8])
    h = json.loads(b[8:8 + n])
    h.pop("__metadata__", None)
    base = 8 + n
    return {k: (v["dtype"], v["shape"], b[base + v["data_offsets"][0]:base + v["data_offsets"][1]])
            for k, v in h.items()}

a, b = load(sys.argv[1]), load(sys.argv[2])
if a.keys() != b.keys():
    print("tensor names differ:", sorted(a.keys() ^ b.keys()))
    sys.exit(1)
bad = [k for k in a if not equal(k, a[k], b[k])]
if bad:
    print("tensors differ:", ", ".join(sorted(bad)[:10]))
    sys.exit(1)
print("same")
EOF
}

do_compare() {
    local t0
    t0=$(now)
    log "build: lgn (release) for x86-64 and $TARGET"
    local host
    host=$("$DEB_RUSTC" -vV | sed -n 's/^host: //p')
    deb_cargo build --release --locked -p legofmt --bin lgn --target "$host" \
        "${EXTRA_CARGO_ARGS[@]}" || {
        locked_hint
        die "the x86-64 build failed"
    }
    deb_cargo build --release --locked -p legofmt --bin lgn --target "$TARGET" \
        "${EXTRA_CARGO_ARGS[@]}" || {
        locked_hint
        die "the aarch64 build failed"
    }
    TIMES[compare_build]=$(elapsed "$t0")
    local x86="$TARGET_DIR/$host/release/lgn" arm="$TARGET_DIR/$TARGET/release/lgn"
    echo "x86-64:  $x86"
    echo "aarch64: $arm (run with qemu-aarch64)"

    t0=$(now)
    local work
    work=$(mktemp -d "${TMPDIR:-/tmp}/lgn-aarch64-compare.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" EXIT
    # One line per file: "PATH<TAB>KIND<TAB>EXPECTED<TAB>NAN_ANY", KIND = valid | invalid |
    # unknown, NAN_ANY the comma-separated tensors whose NaN bits are unspecified.
    local list="$work/files.tsv" f
    if [ $# -gt 0 ]; then
        for f in "$@"; do printf '%s\tunknown\t\t\n' "$f"; done >"$list"
    elif [ -f spec/vectors/manifest.json ]; then
        python3 - spec/vectors >"$list" <<'EOF' || die "cannot read spec/vectors/manifest.json"
import json, os, sys
root = sys.argv[1]
for v in json.load(open(os.path.join(root, "manifest.json")))["vectors"]:
    exp = os.path.join(root, v["expected"]) if v.get("expected") else ""
    nan_any = ",".join(v.get("nan_bits_unspecified", []))
    print(os.path.join(root, v["file"]), "valid" if v["valid"] else "invalid", exp, nan_any, sep="\t")
EOF
        echo "using the $(wc -l <"$list") conformance vectors of spec/vectors/manifest.json"
    elif find spec/vectors -name '*.lgn' 2>/dev/null | grep -q .; then
        find spec/vectors -type f -name '*.lgn' | sort | sed 's/$/\tunknown\t\t/' >"$list"
        echo "using the $(wc -l <"$list") .lgn files of spec/vectors (no manifest.json)"
    else
        echo "no spec/vectors: generating a file with the Python package"
        python3 -c "import legofmt, numpy as np; legofmt.save({'w': np.random.default_rng(0).standard_normal((64,48)).astype('float32'), 'b': np.ones(3,'float32')}, '$work/generated.lgn', k=16)" ||
            die "no conformance vectors and the Python package could not generate a file"
        printf '%s\tunknown\t\t\n' "$work/generated.lgn" >"$list"
    fi

    local n=0 same=0 differ=0 decoded=0 rejected=0 expected_ok=0 nonconform=0 abs kind exp nan_any
    while IFS=$'\t' read -r f kind exp nan_any; do
        n=$((n + 1))
        [ -f "$f" ] || die "no such file: $f"
        abs=$(cd "$(dirname "$f")" && pwd)/$(basename "$f")
        local ok=1 cmd d a="$work/$n/x86" b="$work/$n/arm"
        mkdir -p "$a" "$b"
        for cmd in info verify decode; do
            for d in "$a" "$b"; do
                local run=("$x86") args=("$cmd" "$abs")
                [ "$d" = "$b" ] && run=(qemu-aarch64 "$arm")
                [ $cmd = decode ] && args+=(-o out.safetensors)
                local rc=0
                (cd "$d" && "${run[@]}" "${args[@]}" >"$cmd.stdout" 2>"$cmd.stderr" </dev/null) || rc=$?
                echo $rc >"$d/$cmd.rc"
            done
            if ! cmp -s "$a/$cmd.rc" "$b/$cmd.rc" || ! cmp -s "$a/$cmd.stdout" "$b/$cmd.stdout" ||
                ! cmp -s "$a/$cmd.stderr" "$b/$cmd.stderr"; then
                ok=0
                echo "  DIFFER    $f: lgn $cmd exits $(cat "$a/$cmd.rc") on x86-64, $(cat "$b/$cmd.rc") on aarch64"
                diff <(cat "$a/$cmd.stdout" "$a/$cmd.stderr") <(cat "$b/$cmd.stdout" "$b/$cmd.stderr") |
                    head -n 20 | sed 's/^/    | /' || true
            fi
        done
        local rc note=""
        rc=$(cat "$a/decode.rc")
        if [ "$rc" = 0 ]; then
            decoded=$((decoded + 1))
            note="decoded $(stat -c %s "$b/out.safetensors") bytes, sha256 $(sha256sum "$b/out.safetensors" | cut -c1-16)"
            if cmp -s "$a/out.safetensors" "$b/out.safetensors"; then
                :
            elif [ -n "$nan_any" ] && st_same "$a/out.safetensors" "$b/out.safetensors" "$nan_any" >/dev/null; then
                note="$note; NaN bits differ between the two where the spec leaves them unspecified"
            else
                ok=0
                echo "  DIFFER    $f: decoded bytes differ between x86-64 and aarch64"
                cmp "$a/out.safetensors" "$b/out.safetensors" 2>&1 | head -n 3 | sed 's/^/    | /' || true
            fi
            if [ "$kind" = invalid ]; then
                nonconform=$((nonconform + 1))
                note="$note; NOT REJECTED although the vector is invalid"
            elif [ -n "$exp" ]; then
                local r
                if r=$(st_same "$b/out.safetensors" "$exp" "$nan_any"); then
                    expected_ok=$((expected_ok + 1))
                    note="$note; equals $(basename "$exp")"
                else
                    nonconform=$((nonconform + 1))
                    note="$note; DIFFERS FROM $(basename "$exp"): $r"
                fi
            fi
        else
            rejected=$((rejected + 1))
            note="rejected (exit $rc): $(head -c 150 "$a/decode.stderr")"
            if [ "$kind" = valid ]; then
                nonconform=$((nonconform + 1))
                note="$note; REJECTED although the vector is valid"
            fi
        fi
        if [ $ok = 1 ]; then same=$((same + 1)); else differ=$((differ + 1)); fi
        printf '  %-9s %s  %s\n' "$([ $ok = 1 ] && echo IDENTICAL || echo DIFFER)" "$f" "$note"
    done <"$list"
    TIMES[compare_run]=$(elapsed "$t0")
    log "x86-64 vs aarch64 summary (lgn info, verify and decode on each file)"
    echo "files: $n  identical on both: $same  different: $differ" \
        "(decoded: $decoded, rejected: $rejected)"
    echo "decoded output equal to the vector's expected tensors: $expected_ok;" \
        "not conforming to the vector manifest: $nonconform"
    COMPARE_TOTALS="$n files, $same identical, $differ different; $expected_ok match expected, $nonconform non-conforming"
    [ $differ -eq 0 ] && [ $nonconform -eq 0 ]
}

# ---------------------------------------------------------------------------------------------

TEST_TOTALS=()
COMPARE_TOTALS=
status=0
T_ALL=$(now)
if [ "$MODE" = all ] || [ "$MODE" = install ]; then
    if [ "${AARCH64_SKIP_INSTALL:-0}" = 1 ]; then
        echo "AARCH64_SKIP_INSTALL=1: not touching apt"
    else
        do_install
    fi
fi
if [ "$MODE" != install ]; then
    find_toolchain
fi
if [ "$MODE" = all ] || [ "$MODE" = test ]; then
    for set in "${FEATURE_SETS[@]}"; do
        do_test "$set" || status=1
    done
fi
if [ "$MODE" = all ] || [ "$MODE" = compare ]; then
    do_compare "$@" || status=1
fi

log "done in $(elapsed "$T_ALL")s"
# Times in the order of the steps: install, each feature set's build and run, compare.
steps=(install)
for set in "${FEATURE_SETS[@]}"; do steps+=("build:$set" "qemu:$set"); done
steps+=(compare_build compare_run)
for k in "${steps[@]}"; do
    [ -n "${TIMES[$k]:-}" ] && printf '  %-32s %ss\n' "$k" "${TIMES[$k]}"
done
for t in "${TEST_TOTALS[@]}"; do
    echo "  aarch64 tests, $t"
done
[ -n "$COMPARE_TOTALS" ] && echo "  lgn x86-64 vs aarch64: $COMPARE_TOTALS"
if [ $status -ne 0 ]; then
    echo "aarch64.sh: FAILED" >&2
fi
exit $status
