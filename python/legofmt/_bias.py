"""What a model's batch norms say without data: bias correction, and error weights of residual branches.

Bias correction cancels the mean shift that clustering adds to each layer's output.

Clustering replaces a layer's weight ``W`` by ``W + dW``. For an input ``x`` the output moves by
``dW @ x``, and its average over inputs by ``dW @ E[x]``: a systematic shift per output channel
that adds up from layer to layer (inputs after a ReLU have large positive means). When ``E[x]``
is known, the shift is cancelled exactly, at no cost in bytes, by moving a tensor that is stored
raw anyway: the layer's bias (``bias -= dW @ E[x]``) or, for a convolution without bias followed
by a batch norm, that norm's running mean (``running_mean += dW @ E[x]``).

``E[x]`` comes from the model itself, without data, as in Nagel et al., "Data-Free Quantization
Through Weight Equalization and Bias Correction" (ICCV 2019): a batch norm's output has mean
``beta`` and standard deviation ``|gamma|`` per channel (its running statistics say what the
training data did), and an element-wise activation of a normal variable has a mean computed by
numerical integration. The model is traced with ``torch.fx`` and these statistics are carried
through the graph (:func:`plan`); anything the propagation does not understand (the model's
inputs, layer norms, products of activations, max pooling, ...) gives "unknown", and a layer
whose input mean is unknown is left alone. So the correction applies to convolutional networks
with batch norms (ResNet, MobileNet, EfficientNet, ...) and does nothing for transformers; a
model that ``torch.fx`` cannot trace is saved uncorrected, with the reason in the report.

Assumptions, as in the paper: pre-activations are normal per channel; zero padding at the
borders of a convolution is ignored (it sees the mean everywhere).

The same statistics give the target mode its error weights (:func:`_residual_weights`): where
a residual branch is added to its input, the branch carries a share of the sum's variance, and
only that share of its layers' errors reaches the rest of the network.
"""

from __future__ import annotations

import functools
import math
import operator
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: Points of the grid over which activations of a normal variable are integrated (+-10 sigma).
GRID_POINTS = 4001


@dataclass(frozen=True)
class Stats:
    """Per-channel statistics of a value in the graph: the mean and, where known, the standard
    deviation (both float64 vectors over the channels). ``spatial``: channels are dim 1 of a
    tensor with spatial dims (a convolution's input); ``flattened``: a flattened feature map,
    whose features are the channels repeated over the positions (a linear layer's input)."""

    mean: torch.Tensor
    std: torch.Tensor | None
    spatial: bool
    flattened: bool = False


@dataclass(frozen=True)
class Correction:
    """One layer to correct: the shift ``dW @ mean`` is added to ``target`` times ``sign``."""

    weight: str
    """State-dict name of the layer's weight."""
    target: str
    """The raw tensor that absorbs the shift: the layer's bias or the next norm's running mean."""
    sign: int
    """-1 for a bias (``bias -= shift``), +1 for a running mean (``running_mean += shift``)."""
    mean: torch.Tensor
    """Estimated mean of the layer's input, one value per input channel."""
    groups: int = 1
    flattened: bool = False
    """The input is a flattened feature map: each channel's mean stands for its positions."""


@dataclass(frozen=True)
class Analysis:
    """What :func:`analyse` found in a model's graph."""

    corrections: list[Correction]
    """The layers to bias-correct."""
    note: str
    """Why there are no corrections, when that is so."""
    weights: dict[str, float] = field(default_factory=dict)
    """Error weights of the weights inside residual branches (see :func:`_residual_weights`);
    absent names weigh 1."""


@functools.cache
def _normal_grid() -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    z = torch.linspace(-10.0, 10.0, GRID_POINTS, dtype=torch.float64)
    w = torch.exp(-0.5 * z * z)
    return z, w / w.sum()


def _activation_stats(fn: Callable[[torch.Tensor], torch.Tensor], s: Stats) -> Stats | None:
    """Mean and standard deviation of ``fn(X)`` per channel, ``X ~ N(mean, std^2)``."""
    import torch

    if s.std is None:
        return None
    z, w = _normal_grid()
    x = s.mean[:, None] + s.std[:, None] * z[None, :]
    try:
        with torch.no_grad():
            y = fn(x.float().unsqueeze(0)).squeeze(0).double()
    except Exception:  # an activation that does not take this input: unknown
        return None
    if y.shape != x.shape or not bool(torch.isfinite(y).all()):
        return None
    m = (y * w).sum(1)
    var = ((y - m[:, None]) ** 2 * w).sum(1)
    return Stats(m, var.clamp_min(0).sqrt(), s.spatial, s.flattened)


@functools.cache
def _elementwise() -> tuple[tuple[type, ...], set[Any], set[str]]:
    """Modules, functions and tensor methods that act element by element."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    modules = (
        nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
        nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus,
        nn.Softsign, nn.LogSigmoid, nn.Tanhshrink, nn.Threshold,
    )  # fmt: skip
    functions = {
        F.relu, F.relu_, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish,
        F.hardswish, F.hardsigmoid, F.hardtanh, F.tanh, F.sigmoid, F.softplus, F.softsign,
        F.logsigmoid, torch.relu, torch.relu_, torch.sigmoid, torch.tanh, torch.clamp, torch.clip,
    }  # fmt: skip
    methods = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "clip", "clip_"}
    return modules, functions, methods


@functools.cache
def _same() -> tuple[tuple[type, ...], set[Any], set[str]]:
    """Modules, functions and methods that leave per-channel statistics as they are (dropout is
    the identity at inference; zero padding is ignored, as for convolutions)."""
    import torch.nn.functional as F
    from torch import nn

    modules = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.ZeroPad2d)
    return modules, {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d}, {"contiguous"}


def _avg_pools() -> tuple[type, ...]:
    from torch import nn

    return (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)


def _calls(node: Any, function: Any, method: str) -> bool:
    """Whether ``node`` calls ``function`` or the tensor method ``method``."""
    return (node.op == "call_function" and node.target is function) or (
        node.op == "call_method" and node.target == method
    )


def _is_flatten_from_1(node: Any) -> bool:
    """``torch.flatten(x, 1)``, ``x.flatten(1)``, ``x.view(n, -1)`` or ``x.reshape(n, -1)``."""
    import torch

    args = list(node.args[1:])
    if _calls(node, torch.flatten, "flatten"):
        start = args[0] if args else node.kwargs.get("start_dim", 0)
        end = args[1] if len(args) > 1 else node.kwargs.get("end_dim", -1)
        return bool(start == 1 and end == -1)
    if node.op == "call_method" and node.target in ("view", "reshape"):
        return len(args) == 2 and isinstance(args[1], int) and args[1] == -1
    return False


def _is_channel_mean(node: Any) -> bool:
    """``x.mean(dims)`` / ``torch.mean(x, dims)`` over spatial dims only (dims >= 2)."""
    import torch

    if not _calls(node, torch.mean, "mean"):
        return False
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if isinstance(dims, int):
        dims = (dims,)
    return isinstance(dims, (tuple, list)) and len(dims) > 0 and all(isinstance(d, int) and d >= 2 for d in dims)


def _conv_call(node: Any, modules: Mapping[str, Any]) -> tuple[str, Any, Any, int, bool] | None:
    """For a convolution or linear layer node: (weight name, input node, bias name or None,
    groups, is_linear); None for anything else. Weights must be parameters used as they are."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    if node.op == "call_module":
        mod = modules[node.target]
        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and type(mod).forward in (
            nn.Conv1d.forward,
            nn.Conv2d.forward,
            nn.Conv3d.forward,
        ):
            bias = f"{node.target}.bias" if mod.bias is not None else None
            return f"{node.target}.weight", node.args[0], bias, mod.groups, False
        if type(mod) is nn.Linear:
            bias = f"{node.target}.bias" if mod.bias is not None else None
            return f"{node.target}.weight", node.args[0], bias, 1, True
        return None
    if node.op != "call_function":
        return None
    convs = {F.conv1d, F.conv2d, F.conv3d, torch.conv1d, torch.conv2d, torch.conv3d}
    if node.target not in convs and node.target is not F.linear:
        return None
    linear = node.target is F.linear
    args = list(node.args)
    weight = args[1] if len(args) > 1 else node.kwargs.get("weight")
    bias = args[2] if len(args) > 2 else node.kwargs.get("bias")
    groups = 1 if linear else (args[6] if len(args) > 6 else node.kwargs.get("groups", 1))
    if getattr(weight, "op", None) != "get_attr" or not isinstance(groups, int):
        return None
    if bias is not None and getattr(bias, "op", None) != "get_attr":
        return None
    return weight.target, args[0], None if bias is None else bias.target, groups, linear


def _bn_after(node: Any, modules: Mapping[str, Any]) -> str | None:
    """The running mean that absorbs a shift of ``node``'s output: that of the batch norm that
    is its only user (in inference mode, with running statistics)."""
    from torch import nn

    users = list(node.users)
    if len(users) != 1 or users[0].op != "call_module":
        return None
    bn = modules[users[0].target]
    if isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.track_running_stats and bn.running_mean is not None:
        return f"{users[0].target}.running_mean"
    return None


def _propagate(node: Any, env: dict[Any, Stats | None], modules: Mapping[str, Any]) -> Stats | None:
    """The statistics of ``node``'s output from those of its inputs (None: unknown)."""
    from torch import nn

    elem_mod, elem_fn, elem_meth = _elementwise()
    same_mod, same_fn, same_meth = _same()

    def arg(i: int = 0) -> Stats | None:
        a = node.args[i] if len(node.args) > i else None
        return env.get(a) if hasattr(a, "op") else None

    op, target = node.op, node.target
    if op == "call_module":
        mod = modules[target]
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            if not mod.track_running_stats or mod.running_mean is None:
                return None
            n = mod.num_features
            gamma = mod.weight.detach().double() if mod.affine else _ones(n)
            beta = mod.bias.detach().double() if mod.affine else _zeros(n)
            return Stats(beta.clone(), gamma.abs(), spatial=not isinstance(mod, nn.BatchNorm1d))
        if isinstance(mod, elem_mod):
            s = arg()
            return None if s is None else _activation_stats(modules[target], s)
        if isinstance(mod, same_mod):
            return arg()
        if isinstance(mod, _avg_pools()):
            s = arg()
            return None if s is None else Stats(s.mean, None, s.spatial)
        if isinstance(mod, nn.Flatten):
            s = arg()
            ok = mod.start_dim == 1 and mod.end_dim == -1
            return None if s is None or not ok else Stats(s.mean, s.std, False, s.spatial or s.flattened)
    elif op in ("call_function", "call_method"):
        if (op == "call_function" and target in elem_fn) or (op == "call_method" and target in elem_meth):
            s = arg()
            if (
                s is None
                or any(hasattr(a, "op") for a in node.args[1:])
                or any(hasattr(v, "op") for v in node.kwargs.values())
            ):
                return None
            rest, kwargs = node.args[1:], dict(node.kwargs)
            if op == "call_function":
                return _activation_stats(lambda t: target(t, *rest, **kwargs), s)
            return _activation_stats(lambda t: getattr(t, target)(*rest, **kwargs), s)
        if (op == "call_function" and target in same_fn) or (op == "call_method" and target in same_meth):
            return arg()
        if _is_flatten_from_1(node):
            s = arg()
            return None if s is None else Stats(s.mean, s.std, False, s.spatial or s.flattened)
        if _is_channel_mean(node):
            s = arg()
            return None if s is None or not s.spatial else Stats(s.mean, None, False)
        if (op == "call_function" and target in (operator.add, operator.iadd)) or (
            op == "call_method"
            and target
            in (
                "add",
                "add_",
            )
        ):
            a, b = (node.args[0], node.args[1]) if len(node.args) == 2 else (None, None)
            sa, sb = env.get(a) if hasattr(a, "op") else None, env.get(b) if hasattr(b, "op") else None
            if sa is None or sb is None or sa.mean.shape != sb.mean.shape or sa.spatial != sb.spatial:
                return None
            std = None if sa.std is None or sb.std is None else (sa.std**2 + sb.std**2).sqrt()
            return Stats(sa.mean + sb.mean, std, sa.spatial, sa.flattened or sb.flattened)
        if op == "call_function" and target in (operator.mul, operator.truediv) and len(node.args) == 2:
            a, b = node.args
            if hasattr(a, "op") and isinstance(b, (int, float)):
                s, f = env.get(a), float(b) if target is operator.mul else 1.0 / float(b)
            elif hasattr(b, "op") and isinstance(a, (int, float)) and target is operator.mul:
                s, f = env.get(b), float(a)
            else:
                return None
            if s is None or not math.isfinite(f):
                return None
            return Stats(s.mean * f, None if s.std is None else s.std * abs(f), s.spatial, s.flattened)
    return None


def _ones(n: int) -> torch.Tensor:
    import torch

    return torch.ones(n, dtype=torch.float64)


def _zeros(n: int) -> torch.Tensor:
    import torch

    return torch.zeros(n, dtype=torch.float64)


def analyse(model: Any) -> Analysis:
    """Traces ``model`` (a ``torch.nn.Module``) and carries the statistics its batch norms give
    through the graph: the layers whose input mean they determine, with the raw tensor that will
    absorb each shift, and the error weights of residual branches."""
    import torch

    try:
        import torch.fx

        with warnings.catch_warnings():  # tracing runs the model's code: its warnings are not ours
            warnings.simplefilter("ignore")
            gm = torch.fx.symbolic_trace(model)
    except Exception as e:  # tracing runs the model's Python code: anything can fail
        return Analysis([], f"not traceable by torch.fx ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
    modules = dict(gm.named_modules())
    env: dict[Any, Stats | None] = {}
    found: list[Correction] = []
    uses: dict[str, int] = {}
    layers: dict[Any, str] = {}
    for node in gm.graph.nodes:
        layer = _conv_call(node, modules)
        if layer is None:
            env[node] = _propagate(node, env, modules)
            continue
        weight, inp, bias, groups, linear = layer
        layers[node] = weight
        uses[weight] = uses.get(weight, 0) + 1
        env[node] = None  # the pre-activation: a batch norm after it sets the statistics again
        s = env.get(inp) if hasattr(inp, "op") else None
        # A convolution needs channels along dim 1 of a feature map, a linear layer features.
        if s is None or s.spatial == linear:
            continue
        target = bias if bias is not None else _bn_after(node, modules)
        if target is None:
            continue
        found.append(Correction(weight, target, -1 if bias is not None else 1, s.mean, groups, s.flattened))
    # A weight used by several layers, or a tensor absorbing two shifts, is left alone.
    targets = [c.target for c in found]
    corrections = [c for c in found if uses[c.weight] == 1 and targets.count(c.target) == 1]
    note = "" if corrections else "no layer whose input mean the model's batch norms determine"
    return Analysis(corrections, note, _residual_weights(gm, env, layers))


def _residual_weights(gm: Any, env: Mapping[Any, Stats | None], layers: Mapping[Any, str]) -> dict[str, float]:
    """Error weights of the layers inside residual branches.

    Where two values are added (``y = x + f(x)``, or two branches), each input carries a share
    of the sum's variance, ``var_i / (var_a + var_b)`` (per-channel variances from the batch
    norms, summed over channels). A relative error ``e`` in a layer that only one input depends
    on reaches the sum as a relative error of energy ``e * share``: a residual branch that adds
    a small correction to its input passes on a small part of its layers' errors. Nested sums
    multiply. Layers upstream of both inputs, and sums whose inputs' variances are unknown, are
    left at weight 1."""
    weights: dict[str, float] = {}
    ancestors: dict[Any, set[Any]] = {}

    def upstream(node: Any) -> set[Any]:
        if node not in ancestors:
            seen: set[Any] = set()
            todo = [node]
            while todo:
                n = todo.pop()
                if n not in seen:
                    seen.add(n)
                    todo.extend(n.all_input_nodes)
            ancestors[node] = seen
        return ancestors[node]

    for node in gm.graph.nodes:
        is_add = node.op == "call_function" and node.target in (operator.add, operator.iadd)
        if not is_add or len(node.args) != 2 or not all(hasattr(a, "op") for a in node.args):
            continue
        a, b = node.args
        sa, sb = env.get(a), env.get(b)
        if sa is None or sb is None or sa.std is None or sb.std is None:
            continue
        va, vb = float((sa.std**2).sum()), float((sb.std**2).sum())
        if not va + vb > 0:
            continue
        up_a, up_b = upstream(a), upstream(b)
        for own, other, var in ((up_a, up_b, va), (up_b, up_a, vb)):
            for n in own - other:
                if n in layers:
                    weights[layers[n]] = weights.get(layers[n], 1.0) * var / (va + vb)
    return weights


def shift(c: Correction, dw: torch.Tensor) -> torch.Tensor | None:
    """``dW @ mean`` per output channel (float64), or None when the shapes do not fit."""
    w = dw.double().reshape(dw.shape[0], dw.shape[1], -1).sum(2)  # (out, in / groups)
    out, per_group = w.shape
    mean = c.mean
    n_in = per_group * c.groups
    if mean.numel() != n_in:
        if not c.flattened or c.groups != 1 or mean.numel() == 0 or n_in % mean.numel():
            return None
        mean = mean.repeat_interleave(n_in // mean.numel())  # a flattened feature map
    if out % c.groups:
        return None
    w = w.reshape(c.groups, out // c.groups, per_group)
    return (w @ mean.reshape(c.groups, per_group, 1)).reshape(out)
