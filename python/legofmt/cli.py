"""The ``legofmt`` command line: compress, decompress, info, verify."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _legofmt
from ._legofmt import MAX_BLOCK_SIDE, MAX_K, MAX_STAGES, MIN_K
from ._options import DEFAULT_BLOCK, DEFAULT_K, DEFAULT_MIN_SIZE, DEFAULT_OUTLIERS, DEFAULT_STAGES
from ._reader import info, open_file
from ._report import search_table
from ._save import save
from .errors import InvalidArgumentError, LgnError


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


def _parse_block(text: str) -> tuple[int, int]:
    try:
        h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"block must look like 4x4, got {text!r}") from None
    return h, w


def _load_source(src: str) -> dict[str, Any]:
    """Tensors of a .safetensors file (as numpy, bytes exact) or a .pt/.pth state dict."""
    if not os.path.exists(src):
        raise CliError(f"{src}: no such file")
    if os.path.isdir(src):
        raise CliError(f"{src}: is a directory, expected a .safetensors or .pt/.pth file")
    lower = src.lower()
    if lower.endswith((".safetensors", ".lgn")):
        out: dict[str, Any] = {}
        with open_file(src, "np") as f:
            for name in f.keys():
                dtype, _ = f.dtype_and_shape(name)
                arr = f.get_tensor(name)
                out[name] = _bf16_to_torch(arr) if dtype == "BF16" else arr
        return out
    if lower.endswith((".pt", ".pth", ".bin", ".ckpt")):
        try:
            import torch
        except ImportError:
            raise CliError("reading .pt/.pth files needs torch: pip install torch") from None
        try:
            obj = torch.load(src, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CliError(f"{src}: cannot be read as a PyTorch state dict ({type(e).__name__}: {e})") from None
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CliError(
                f"{src}: not a state dict (expected a dict of tensors, got {type(obj).__name__}); "
                "save one with torch.save(model.state_dict(), path)"
            )
        return obj
    raise CliError(f"{src}: unknown file type; expected .safetensors, .pt or .pth")


def _bf16_to_torch(bits: np.ndarray[Any, Any]) -> Any:
    try:
        import torch
    except ImportError:
        raise CliError("the file has BF16 tensors, which need torch: pip install torch") from None
    return torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16)


def _check_destination(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise CliError(f"{path}: is a directory; give a file name for the output")
    if not os.path.isdir(parent):
        raise CliError(f"{path}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise CliError(f"{path}: the folder {parent} is not writable")


def cmd_compress(a: argparse.Namespace) -> int:
    state = _load_source(a.src)
    _check_destination(a.output)
    # Progress: forced by --progress, silenced by -q, else shown when stderr is a terminal.
    progress = True if a.progress else False if a.quiet else None
    options: dict[str, Any] = {"scale": a.scale, "progress": progress}
    if a.stages is not None:
        options["stages"] = a.stages
    if a.min_size is not None:
        options["min_size"] = a.min_size
    if a.target_ratio is not None or a.max_error is not None:
        options["target_ratio"] = a.target_ratio
        options["max_error"] = a.max_error
    if a.cluster_depthwise:
        options["cluster_depthwise"] = True
    if a.sensitive_raw:
        options["sensitive"] = "raw"
    if a.raw:
        options["raw"] = a.raw
    if a.outliers is not None:
        options["outliers"] = a.outliers
    report = save(state, a.output, k=a.k, block=a.block, seed=a.seed, **options)
    if report.search:
        print(search_table(report.search))
    print(report if a.verbose else report.summary())
    return 0


def cmd_decompress(a: argparse.Namespace) -> int:
    _check_destination(a.output)
    tensors = []
    with open_file(a.file, "np") as f:
        metadata = f.metadata()
        for name in f.keys():
            dtype, shape = f.dtype_and_shape(name)
            tensors.append((name, dtype, list(shape), f.decode_bytes(name)))
    n = _legofmt.write_safetensors(a.output, tensors, metadata or None)
    print(f"{a.output}: {len(tensors)} tensors, {n} bytes (plain safetensors)")
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    i = info(a.file)
    if a.json:
        d = {
            "path": i.path,
            "version": i.version,
            "file_bytes": i.file_bytes,
            "numel": i.numel,
            "ratio_fp32": i.ratio,
            "ratio_source": i.ratio_source,
            "bits_per_weight": i.bits_per_weight,
            "codebooks": i.codebooks,
            "tensors": [t.__dict__ for t in i.tensors],
            "metadata": i.metadata,
        }
        print(json.dumps(d, indent=2))
    else:
        print(i)
    return 0


def cmd_verify(a: argparse.Namespace) -> int:
    with open_file(a.file, "np") as f:
        f.verify()
        n = len(f.keys())
    print(f"{a.file}: OK ({n} tensors, every checksum and index checked)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="legofmt", description="Compress neural network weights by block clustering.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("compress", help="compress a .safetensors or .pt/.pth state dict into .lgn")
    c.add_argument("src", help="input .safetensors, .pt or .pth file")
    c.add_argument("-o", "--output", required=True, help="output .lgn file")
    c.add_argument(
        "-k",
        "--k",
        type=int,
        default=DEFAULT_K,
        help=f"codewords in the shared codebook, {MIN_K}..{MAX_K} (default {DEFAULT_K})",
    )
    c.add_argument(
        "--block",
        type=_parse_block,
        help=f"block shape HxW, sides 1..{MAX_BLOCK_SIDE} (default {DEFAULT_BLOCK[0]}x{DEFAULT_BLOCK[1]})",
    )
    c.add_argument("--stages", type=int, help=f"residual stages, 1..{MAX_STAGES} (default {DEFAULT_STAGES})")
    c.add_argument(
        "--scale",
        choices=["row", "row-rms", "tensor", "none"],
        default="row",
        help="scaling before clustering (row-rms: rows divided by their RMS instead of their largest value)",
    )
    c.add_argument("--raw", action="append", metavar="PATTERN", help="glob of tensor names to keep raw (repeatable)")
    c.add_argument(
        "--min-size",
        type=int,
        help="tensors with fewer elements are sensitive: they get their own 8-bit codebook (raw with "
        f"--sensitive-raw) instead of the shared one (default {DEFAULT_MIN_SIZE})",
    )
    c.add_argument("--target-ratio", type=float, help="search block shape and per-tensor stages for this ratio vs fp32")
    c.add_argument("--max-error", type=float, help="search for the smallest file with every tensor's rel. MSE <= this")
    c.add_argument(
        "--cluster-depthwise", action="store_true", help="cluster depthwise convolutions into the shared codebook"
    )
    c.add_argument(
        "--sensitive-raw",
        action="store_true",
        help="store depthwise and small tensors raw instead of in their own 8-bit codebook",
    )
    c.add_argument(
        "--outliers",
        type=float,
        metavar="FRACTION",
        help="fraction of the elements of each tensor in the shared codebook stored exactly "
        f"(default {DEFAULT_OUTLIERS}; 0: none; a file with outliers is format 2.0)",
    )
    c.add_argument("--seed", type=int, default=0)
    shown = c.add_mutually_exclusive_group()
    shown.add_argument(
        "--progress",
        action="store_true",
        help="show progress even when stderr is not a terminal (default: only on one)",
    )
    shown.add_argument("-q", "--quiet", action="store_true", help="show no progress")
    c.add_argument("-v", "--verbose", action="store_true", help="print the per-tensor table")
    c.set_defaults(func=cmd_compress)

    d = sub.add_parser("decompress", help="decode an .lgn file into a plain .safetensors file")
    d.add_argument("file")
    d.add_argument("-o", "--output", required=True)
    d.set_defaults(func=cmd_decompress)

    i = sub.add_parser("info", help="show what is inside a file and its compression ratio")
    i.add_argument("file")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=cmd_info)

    v = sub.add_parser("verify", help="check every checksum and index of a file")
    v.add_argument("file")
    v.set_defaults(func=cmd_verify)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _run(argv)
    except BrokenPipeError:
        # The reader of stdout went away (``legofmt info FILE | head -1``): stop quietly, as a
        # command killed by SIGPIPE would. stdout points at devnull so that the interpreter's
        # last flush at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13  # 128 + SIGPIPE, what a shell reports for a command stopped by it


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, inside main's handler
        return status
    except (CliError, LgnError) as e:
        hint = ""
        if isinstance(e, InvalidArgumentError):
            hint = " (see legofmt " + args.command + " --help)"
        print(f"legofmt {args.command}: error: {e}{hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"legofmt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
