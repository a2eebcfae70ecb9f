"""The ``legofmt`` console script, run as a user would: exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import legofmt

EXE = shutil.which("legofmt") or ""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [EXE] if EXE else [sys.executable, "-m", "legofmt.cli"]
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, check=False, timeout=300)


@pytest.fixture
def state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"a.weight": torch.randn(32, 40, generator=g), "a.bias": torch.randn(32, generator=g)}


def test_console_script_is_installed():
    assert EXE, "the legofmt console script is not on PATH"


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_compress_info_verify_decompress(tmp_path, state, suffix):
    src = tmp_path / f"m{suffix}"
    if suffix == ".pt":
        torch.save(state, src)
    else:
        save_file(state, src)
    out = run("compress", src, "-o", tmp_path / "m.lgn", "-k", "16", "--block", "2x4", "--min-size", "0", "-q")
    assert out.returncode == 0, out.stderr
    assert "m.lgn" in out.stdout and "x vs fp32" in out.stdout

    out = run("info", tmp_path / "m.lgn", "--json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["file_bytes"] == os.path.getsize(tmp_path / "m.lgn")
    assert {t["name"]: t["encoding"] for t in d["tensors"]} == {"a.weight": "clustered", "a.bias": "raw"}

    out = run("verify", tmp_path / "m.lgn")
    assert out.returncode == 0 and "OK" in out.stdout

    out = run("decompress", tmp_path / "m.lgn", "-o", tmp_path / "d.safetensors")
    assert out.returncode == 0, out.stderr
    plain = load_file(tmp_path / "d.safetensors")
    loaded = legofmt.load(tmp_path / "m.lgn")
    assert plain.keys() == loaded.keys()
    for k in plain:
        assert torch.equal(plain[k], loaded[k])
    assert torch.equal(plain["a.bias"], state["a.bias"])


def test_compress_with_options_records_them(tmp_path, state):
    save_file(state, tmp_path / "m.safetensors")
    out = run(
        "compress",
        tmp_path / "m.safetensors",
        "-o",
        tmp_path / "m.lgn",
        "--stages",
        "2",
        "--scale",
        "tensor",
        "--raw",
        "a.*",
        "-q",
    )
    assert out.returncode == 0, out.stderr
    i = legofmt.info(tmp_path / "m.lgn")
    assert all(t.encoding == "raw" for t in i.tensors)


def test_compress_sensitive_raw(tmp_path):
    """--sensitive-raw stores depthwise and small tensors as they are (default: own codebook)."""
    g = torch.Generator().manual_seed(0)
    save_file({"dw.weight": torch.randn(64, 1, 3, 3, generator=g)}, tmp_path / "d.safetensors")
    for flag, encoding in ((), "clustered"), (("--sensitive-raw",), "raw"):
        out = run("compress", tmp_path / "d.safetensors", "-o", tmp_path / "d.lgn", "-q", *flag)
        assert out.returncode == 0, out.stderr
        assert [t.encoding for t in legofmt.info(tmp_path / "d.lgn").tensors] == [encoding]


def test_compress_outliers(tmp_path):
    """--outliers keeps the largest elements exact (format 2.0); info and verify read it."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(128, 64, generator=g)
    w[5, 7] = 40.0
    save_file({"w": w}, tmp_path / "w.safetensors")
    out = run("compress", tmp_path / "w.safetensors", "-o", tmp_path / "w.lgn", "-q", "--outliers", "0.001")
    assert out.returncode == 0, out.stderr
    assert legofmt.info(tmp_path / "w.lgn").tensors[0].outliers == 8
    assert legofmt.load(tmp_path / "w.lgn")["w"][5, 7] == 40.0
    info = run("info", tmp_path / "w.lgn")
    assert info.returncode == 0 and "2.0" in info.stdout, info.stdout
    assert run("verify", tmp_path / "w.lgn").returncode == 0
    bad = run("compress", tmp_path / "w.safetensors", "-o", tmp_path / "x.lgn", "-q", "--outliers", "2")
    assert bad.returncode != 0 and "outliers" in bad.stderr and not (tmp_path / "x.lgn").exists()


def test_verify_detects_corruption(tmp_path, state):
    legofmt.save(state, tmp_path / "m.lgn", k=16)
    data = bytearray((tmp_path / "m.lgn").read_bytes())
    data[-1] ^= 0xFF  # inside the last stored tensor
    (tmp_path / "bad.lgn").write_bytes(bytes(data))
    out = run("verify", tmp_path / "bad.lgn")
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "checksum" in out.stderr.lower() and "bad.lgn" in out.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["compress", "{d}/missing.safetensors", "-o", "{d}/o.lgn"], "no such file"),
        (["compress", "{d}/list.pt", "-o", "{d}/o.lgn"], "not a state dict"),
        (["compress", "{d}/m.safetensors", "-o", "{d}/nodir/o.lgn"], "does not exist"),
        (["compress", "{d}/m.safetensors", "-o", "{d}/o.lgn", "-k", "1"], "k must be an int in 2..65536"),
        (["compress", "{d}/m.safetensors", "-o", "{d}/o.lgn", "-k", "70000"], "k must be an int in 2..65536"),
        (["compress", "{d}/notes.txt", "-o", "{d}/o.lgn"], "unknown file type"),
        (["info", "{d}/notes.txt"], "notes.txt"),
        (["verify", "{d}/missing.lgn"], "missing.lgn"),
        (["decompress", "{d}/missing.lgn", "-o", "{d}/x.safetensors"], "missing.lgn"),
    ],
)
def test_bad_input_gives_one_line_and_exit_1(tmp_path, state, args, needle):
    save_file(state, tmp_path / "m.safetensors")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    (tmp_path / "notes.txt").write_text("hello")
    out = run(*(a.format(d=tmp_path) for a in args))
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert out.stderr.startswith(f"legofmt {args[0]}: error:")
    assert out.stderr.count("\n") == 1, out.stderr
    assert needle in out.stderr
    assert not (tmp_path / "o.lgn").exists()


def test_unknown_option_is_rejected(tmp_path, state):
    save_file(state, tmp_path / "m.safetensors")
    out = run("compress", tmp_path / "m.safetensors", "-o", tmp_path / "o.lgn", "--colour", "red")
    assert out.returncode == 2 and "unrecognized arguments: --colour" in out.stderr
    assert not (tmp_path / "o.lgn").exists()


def test_bf16_safetensors_source_round_trips(tmp_path):
    t = {"w": torch.randn(16, 16).bfloat16(), "n": torch.arange(5, dtype=torch.int32)}
    save_file(t, tmp_path / "m.safetensors")
    out = run("compress", tmp_path / "m.safetensors", "-o", tmp_path / "m.lgn", "-k", "8", "-q")
    assert out.returncode == 0, out.stderr
    got = legofmt.load(tmp_path / "m.lgn")
    assert got["w"].dtype == torch.bfloat16 and torch.equal(got["n"], t["n"])
    assert np.isfinite(got["w"].float().numpy()).all()


def test_compress_progress_only_when_asked_or_on_a_terminal(tmp_path, state):
    """Without a terminal the CLI prints no progress unless --progress asks for it; then it is
    one line in words, with no per-phase bars and no rates."""
    save_file(state, tmp_path / "m.safetensors")
    quiet = run("compress", tmp_path / "m.safetensors", "-o", tmp_path / "a.lgn", "-k", "16", "--min-size", "0")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    shown = run(
        "compress", tmp_path / "m.safetensors", "-o", tmp_path / "b.lgn", "-k", "16", "--min-size", "0", "--progress"
    )
    assert shown.returncode == 0, shown.stderr
    assert "clustering stage 1/3 (k=16, 2x2 blocks)" in shown.stderr, shown.stderr
    assert "it/s" not in shown.stderr and "cluster g0" not in shown.stderr
    both = run("compress", tmp_path / "m.safetensors", "-o", tmp_path / "c.lgn", "--progress", "-q")
    assert both.returncode == 2 and "not allowed with" in both.stderr


def test_help_texts_say_what_the_options_do():
    out = run("compress", "--help")
    text = " ".join(out.stdout.split())
    assert "own 8-bit codebook" in text and "stay raw" not in text  # --min-size
    assert f"default {legofmt._options.DEFAULT_OUTLIERS}" in text  # --outliers
    assert "--progress" in text


@pytest.mark.parametrize("command", ["info", "info --json", "verify"])
def test_output_into_a_closed_pipe_ends_quietly(tmp_path, state, command):
    """``legofmt info FILE | head -1``: the reader goes away early; no traceback, and the exit
    status is 0 or the conventional 141 of a command stopped by SIGPIPE."""
    many = {f"layer{i}.weight": torch.randn(8, 8) for i in range(300)}
    legofmt.save({**state, **many}, tmp_path / "m.lgn", k=4, progress=False)
    cmd = [EXE] if EXE else [sys.executable, "-m", "legofmt.cli"]
    args = [*cmd, *command.split(), str(tmp_path / "m.lgn")]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()  # before the command writes anything: every write fails
    err = p.stderr.read()
    p.stderr.close()
    assert p.wait(timeout=300) in (0, 141)
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err
    head = subprocess.run(f"{' '.join(args)} | head -1", shell=True, capture_output=True, text=True, check=False)
    assert head.returncode == 0 and head.stdout.count("\n") == 1 and head.stderr == "", head.stderr
