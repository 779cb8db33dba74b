"""Whether a jaxnn model and the PyTorch module whose weights it took compute the same function.

Matching the weights (`pytorch.match`) proves the layers with parameters agree. What has no weights
can still differ: a Tanh where the model has ReLU, average pooling where it has max pooling, a
`F.gelu` in the module's forward. Two checks find that:

1. The parameter-free layers, in the order the module's forward calls them (found with forward
   pre-hooks; for a `Sequential` that cannot run, its registration order), are compared with the
   model's between each pair of matched layers. A stretch where PyTorch calls no module (its forward
   uses `torch.nn.functional`) or a module this file does not know is left to the second check.
2. Both run on one random batch in evaluation mode; outputs further apart than rounding are refused.

Each difference is an InputError that names it.
"""

import math
from typing import Any

import jax
import numpy as np

from ..core import Layer
from ..errors import InputError
from ..types import Params, Shape, State
from .pytorch import Leaf, Matched, _torch, describe, kind_of, torch_leaves

__all__ = ["check_same_function", "jaxnn_op", "torch_op"]

UNKNOWN = "?"


def jaxnn_op(layer: Layer) -> str | None:
    """What a parameter-free jaxnn layer computes, spelled as `torch_op` spells PyTorch's; None for a
    layer that changes no value (Dropout in evaluation, identity, Flatten, whose layout the weights
    carry) or that PyTorch has no module for (LastStep)."""
    config = dict(layer.config or {})
    kind = config.pop("kind", None)
    if kind == "activation":
        name = config.pop("name")
        options = ", ".join(f"{k}={float(v):g}" for k, v in sorted(config.items()))
        return None if name == "identity" else f"{name}({options})"
    if kind in ("MaxPool", "AvgPool"):
        return f"{kind}(window={tuple(config['window'])}, stride={tuple(config['stride'])})"
    if kind in ("GlobalAvgPool", "softmax"):
        return kind
    return None


def _pair(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def torch_op(module: Any) -> str | None:
    """What a parameter-free PyTorch module computes, spelled as `jaxnn_op` spells jaxnn's layers;
    None for one that changes no value; UNKNOWN for one this file does not know."""
    name, m = type(module).__name__, module
    simple = {"ReLU": "relu()", "Tanh": "tanh()", "Sigmoid": "logistic()", "SiLU": "silu()"}
    if name in simple:
        return simple[name]
    if name in ("Identity", "Flatten", "Dropout", "Dropout1d", "Dropout2d"):
        return None
    if name == "ELU":
        return f"elu(alpha={float(m.alpha):g})"
    if name == "LeakyReLU":
        return f"leaky_relu(negative_slope={float(m.negative_slope):g})"
    if name == "Softplus":  # PyTorch's is linear above its threshold: equal to rounding for beta 1
        return "softplus()" if m.beta == 1 else f"softplus(beta={m.beta:g})"
    if name == "GELU":
        return "gelu()" if m.approximate == "none" else f"gelu(approximate={m.approximate!r})"
    if name in ("MaxPool2d", "AvgPool2d"):
        plain = _pair(m.padding) == (0, 0) and not m.ceil_mode
        plain = plain and (name == "AvgPool2d" or _pair(m.dilation) == (1, 1))
        stride = _pair(m.stride if m.stride else m.kernel_size)
        kind = name[:3] + "Pool"
        return f"{kind}(window={_pair(m.kernel_size)}, stride={stride})" if plain else f"{name}(padded)"
    if name in ("AdaptiveAvgPool2d",) and _pair(m.output_size) == (1, 1):
        return "GlobalAvgPool"
    if name == "Softmax" and m.dim in (-1, 1):
        return "softmax"
    return UNKNOWN if not list(m.children()) else None


def check_same_function(
    model: Layer, params: Params, state: State, module: Any, input_shape: Shape, matched: Matched
) -> None:
    """Raise InputError unless the model computes what the module computes (see the module's doc).

    **Arguments:**

    - `model`, `params`, `state`: the jaxnn model and what `from_torch` made for it.
    - `module`: the torch.nn.Module.
    - `input_shape`: one example's shape, jaxnn's layout.
    - `matched`: the model matched with the module (`pytorch.match`).

    **Returns:** None.
    """
    torch = _torch()
    batch = _random_batch(matched.leaves[0], input_shape, module)
    calls, outputs = _run_torch(module, batch, model)
    if calls is None and isinstance(module, torch.nn.Sequential):  # its order is its calls' order
        calls = _computing_modules(module)
    if calls is not None:
        _compare_ops(matched, calls, module)
    if outputs is not None:
        _compare_outputs(model, params, state, batch, outputs)


def _random_batch(first: Leaf, input_shape: Shape, module: Any) -> np.ndarray:
    """Two random examples, jaxnn's layout, in the module's dtype; token ids for an Embedding."""
    rng = np.random.default_rng(0)
    if kind_of(first.layer) == "Embedding":
        vocab = (first.layer.config or {})["vocab"]
        return rng.integers(0, vocab, (2, *input_shape))
    dtype = next((p.detach().numpy().dtype for p in module.parameters()), np.float32)
    return rng.standard_normal((2, *input_shape)).astype(dtype)


def _computing_modules(module: Any) -> list:
    """The modules that compute something themselves: the leaves, and the modules matched whole
    (attention, recurrent layers, transformer layers) without what is inside them."""
    whole = [sub for _, sub in torch_leaves(module)]
    inside = {id(m) for sub in whole for m in sub.modules() if m is not sub}
    return [
        sub
        for sub in module.modules()
        if id(sub) not in inside and (any(sub is w for w in whole) or not list(sub.children()))
    ]


def _torch_layout(module: Any, batch: np.ndarray):
    """The batch as the module reads it, and a function taking its output back to jaxnn's layout."""
    torch = _torch()
    x = torch.from_numpy(batch)
    first = next(iter(torch_leaves(module)), ("", None))[1]
    if batch.ndim == 4:  # images: NHWC -> NCHW, and back for image outputs
        return x.permute(0, 3, 1, 2), lambda y: y.permute(0, 2, 3, 1) if y.ndim == 4 else y
    if batch.ndim == 3 and isinstance(first, torch.nn.Conv1d):  # (batch, time, C) -> (batch, C, time)
        return x.permute(0, 2, 1), lambda y: y.permute(0, 2, 1) if y.ndim == 3 else y
    return x, lambda y: y


def _run_torch(module: Any, batch: np.ndarray, model: Layer):
    """(the parameter-free modules in the order the forward called them, the output in jaxnn's
    layout); (None, None) when the module's forward cannot be called with one batch."""
    torch = _torch()
    calls: list = []
    record = lambda m, args: calls.append(m)  # noqa: E731
    hooks = [sub.register_forward_pre_hook(record) for sub in _computing_modules(module)]
    x, back = _torch_layout(module, batch)
    kwargs = {}
    config = model.config or {}
    if isinstance(module, torch.nn.TransformerEncoderLayer) and config.get("causal"):
        t = batch.shape[1]  # the module is causal only when called so: call it as the block computes
        kwargs = {"src_mask": torch.nn.Transformer.generate_square_subsequent_mask(t), "is_causal": True}
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            out = module(x, **kwargs)
    except Exception:  # a ModuleList, a forward that needs more arguments: nothing to run
        return None, None
    finally:
        module.train(was_training)
        for hook in hooks:
            hook.remove()
    out = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(out, torch.Tensor):
        return calls, None
    return calls, back(out).detach().numpy()


def _segments(items: list, is_anchor) -> list[list]:
    """items cut at each anchor: the stretches before, between and after them."""
    out: list[list] = [[]]
    for item in items:
        if is_anchor(item):
            out.append([])
        else:
            out[-1].append(item)
    return out


def _compare_ops(matched: Matched, calls: list, module: Any) -> None:
    """The parameter-free layers between matched layers, against the modules PyTorch called there."""
    anchors = {id(sub) for _, _, sub in matched.pairs}
    names = {id(sub): name for name, sub in module.named_modules()}
    if sum(1 for m in calls if id(m) in anchors) != len(matched.pairs):
        return  # a module called more or fewer times than once: the outputs decide
    jaxnn_parts = _segments(matched.leaves, lambda leaf: leaf.has_params)
    torch_parts = _segments(calls, lambda m: id(m) in anchors)
    for k, (ours, theirs) in enumerate(zip(jaxnn_parts, torch_parts)):
        torch_ops = [op for op in map(torch_op, theirs) if op is not None]
        if not torch_ops or UNKNOWN in torch_ops:
            continue  # PyTorch calls no module here (functional), or one unknown: the outputs decide
        jaxnn_ops = [op for op in (jaxnn_op(leaf.layer) for leaf in ours) if op is not None]
        if jaxnn_ops != torch_ops:
            after = f"after {describe(matched.pairs[k - 1][0])}" if k else "before the first layer"
            modules = ", ".join(f"{names.get(id(m), '?')} ({type(m).__name__})" for m in theirs) or "none"
            raise InputError(
                f"{after}, PyTorch computes {torch_ops} (its modules {modules}) where the jaxnn model "
                f"computes {jaxnn_ops or 'nothing'}: the weights match, the functions do not"
            )


def _compare_outputs(model, params, state, batch, torch_out) -> None:
    """Both models' outputs on the batch, within rounding of the module's dtype."""
    has_state = bool(jax.tree_util.tree_leaves(state))
    y = model.apply(params, batch, state=state, train=False)[0] if has_state else model.apply(params, batch)
    y = np.asarray(y)
    if y.shape != torch_out.shape:
        return  # an output layout this file cannot map (a custom forward's): the weights decide
    scale = 1.0 + float(np.max(np.abs(torch_out)))
    both_double = y.dtype == np.float64 and torch_out.dtype == np.float64  # float64 needs x64 on jaxnn's side
    tolerance = (1e-9 if both_double else 2e-4) * scale
    difference = float(np.max(np.abs(y - torch_out))) if y.size else 0.0
    if not difference <= tolerance or not math.isfinite(difference):
        raise InputError(
            f"the weights match, but on a random batch the jaxnn model's outputs differ from PyTorch's "
            f"by up to {difference:.3g} (rounding allows {tolerance:.2g}): the module computes another "
            "function. Look for an activation, pooling or normalisation that its forward applies "
            "through torch.nn.functional and the jaxnn model has not (or the other way round)"
        )
