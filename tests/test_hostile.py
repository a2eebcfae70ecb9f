"""Mutated valid files (truncated, bytes flipped, header fields rewritten) must load cleanly or
raise a legofmt.LgnError: never another exception, a crash or a hang (issue 3)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import legofmt

VALID = sorted((Path(__file__).parent.parent / "spec" / "vectors" / "valid").glob("*.lgn"))
SMALL = [p for p in VALID if p.stat().st_size < 64 * 1024]


def exercise(path: Path) -> None:
    """Every entry point; only LgnError may escape (checked by the caller)."""
    with legofmt.open(path, framework="np") as f:
        f.info()
        for name in f.keys():
            f.get_tensor(name)
        f.verify()


def _rewrite_header(data: bytes, fn) -> bytes:  # type: ignore[no-untyped-def]
    (n,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8 : 8 + n])
        fn(header)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return data  # an earlier mutation already broke the header: leave it broken
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data[8 + n :]


mutations = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 2**20)),
    st.tuples(st.just("flip"), st.tuples(st.integers(0, 2**20), st.integers(1, 255))),
    st.tuples(st.just("header_len"), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("field"), st.tuples(st.integers(0, 10**6), st.sampled_from([-1, 0, 1, 2**31, 2**63, 3.5]))),
    st.tuples(st.just("manifest"), st.tuples(st.integers(0, 10**6), st.sampled_from([-1, 0, 7, 65537, None, "x"]))),
)


def mutate(data: bytes, m: tuple) -> bytes:  # type: ignore[type-arg]
    kind, arg = m
    if kind == "truncate":
        return data[: arg % max(1, len(data))]
    if kind == "flip":
        at, xor = arg
        b = bytearray(data)
        b[at % len(b)] ^= xor
        return bytes(b)
    if kind == "header_len":
        return struct.pack("<Q", arg) + data[8:]
    if kind == "field":  # a shape or offset number of one stored tensor
        nth, value = arg

        def fn(h: dict) -> None:  # type: ignore[type-arg]
            names = sorted(k for k in h if k != "__metadata__")
            e = h[names[nth % len(names)]]
            key = ["shape", "data_offsets"][nth % 2]
            if e[key]:
                e[key][nth % len(e[key])] = value

        return _rewrite_header(data, fn)
    nth, value = arg  # a number inside the manifest (k, bits, codebook index, shape...)

    def fm(h: dict) -> None:  # type: ignore[type-arg]
        meta = h.get("__metadata__", {})
        if "lgn.manifest" not in meta:
            return
        man = json.loads(meta["lgn.manifest"])
        slots: list[tuple[object, object]] = []

        def walk(o: object) -> None:
            if isinstance(o, dict):
                for k, v in o.items():
                    if isinstance(v, int) and k != "crc32":
                        slots.append((o, k))
                    walk(v)
            elif isinstance(o, list):
                for i, v in enumerate(o):
                    if isinstance(v, int):
                        slots.append((o, i))
                    walk(v)

        walk({k: v for k, v in man.items() if k != "crc32"})
        if slots:
            obj, key = slots[nth % len(slots)]
            obj[key] = value  # type: ignore[index]
        meta["lgn.manifest"] = json.dumps(man)

    return _rewrite_header(data, fm)


@settings(max_examples=int(os.environ.get("LGN_MUTATIONS", "1500")))
@given(idx=st.integers(0, 10**6), muts=st.lists(mutations, min_size=1, max_size=3))
def test_mutated_files_raise_only_lgn_errors(tmp_path_factory, idx, muts):
    src = SMALL[idx % len(SMALL)]
    data = src.read_bytes()
    for m in muts:
        if len(data) < 8:
            break
        data = mutate(data, m)
    path = tmp_path_factory.mktemp("m") / "x.lgn"
    path.write_bytes(data)
    try:
        exercise(path)
    except legofmt.LgnError:
        pass


def test_a_mutation_run_in_a_subprocess_does_not_crash(tmp_path):
    """A crash (abort, segfault) would kill pytest itself; run a sample in a child to see it."""
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_hostile as t, legofmt\n"
        "from pathlib import Path\n"
        "for i, p in enumerate(t.SMALL):\n"
        "    d = p.read_bytes()\n"
        "    for cut in range(8, len(d), max(1, len(d) // 16)):\n"
        f"        q = Path({str(tmp_path)!r}) / f'{{i}}_{{cut}}.lgn'\n"
        "        q.write_bytes(d[:cut])\n"
        "        try:\n"
        "            t.exercise(q)\n"
        "        except legofmt.LgnError:\n"
        "            pass\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"


def test_an_empty_tensor_too_wide_for_numpy_is_an_lgn_error(tmp_path):
    """``[0, 2**63, 4]`` is a valid shape (its byte size is 0, spec section 3) that numpy and
    torch cannot index: the reader says so with an LgnError naming the tensor, and the other
    tensors still decode."""
    header = {
        "wide": {"dtype": "F32", "shape": [0, 2**63, 4], "data_offsets": [0, 0]},
        "ok": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
    }
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path = tmp_path / "wide.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + struct.pack("<2f", 1.5, -2.0))
    for framework in ("np", "pt"):
        with legofmt.open(path, framework=framework) as f:
            assert f.dtype_and_shape("wide") == ("F32", (0, 2**63, 4))
            with pytest.raises(legofmt.LgnError, match=r"'wide'.*cannot represent"):
                f.get_tensor("wide")
            with pytest.raises(legofmt.LgnError, match=r"'wide'.*cannot represent"):
                f.get_rows("wide", 0, 0)
            assert [float(v) for v in f.get_tensor("ok")] == [1.5, -2.0]
