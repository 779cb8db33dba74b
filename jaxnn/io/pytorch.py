"""PyTorch weights in and out: a torch.nn.Module's parameters as a jaxnn model's, and back.

    # the module's weights, jaxnn's layout
    params, state = from_torch(model, module, (28, 28, 1))
    # module.load_state_dict(...)
    state_dict = to_torch(model, params, state, module, (28, 28, 1))

(A model from `jaxnn.models` records its input shape and may leave it out; one built with `serial`
records none.)

The module's parameterised submodules, taken in registration order, must match the model's
parameterised layers in order (attention, LSTM, GRU and RNN count as one module each, with their
inner projections; a TransformerEncoderLayer matches a transformer block whole). Each pair is
converted by the rule of its kind, below; the rule also checks that the two compute the same
function (sizes, stride, padding, eps, momentum, heads...), and the first pair that does not gets an
InputError naming both. What has no weights (activations, pooling) is compared by `compare`.
PyTorch itself is needed only here (`pip install -e '.[interop]'`).

The layouts: PyTorch multiplies `x W^T` (W: (out, in)), jaxnn `x w` (w: (in, out)); PyTorch's
images are NCHW with kernels (out, in, kh, kw), jaxnn's NHWC with kernels (kh, kw, in, out); and
PyTorch flattens an image as (C, H, W) where jaxnn flattens (H, W, C), so a Dense layer after a
Flatten of an image has its input rows reordered.
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..core import Layer, init_shapes, model_input_shape, output_shape, state_shapes
from ..errors import InputError, InputTypeError
from ..types import Params, Shape, State

__all__ = ["from_torch", "to_torch", "layer_leaves"]


class Leaf(NamedTuple):
    """A leaf layer of a model (or a block that PyTorch has as one module), where it sits, and what
    it reads."""

    layer: Layer
    path: tuple  # the index path of its params (and state) in the model's params
    input_shape: Shape  # the shape of one example it reads
    flattened_from: Shape | None  # (H, W, C) when its input is a Flatten of an image (a Dense after Flatten)
    has_params: bool = True
    parts: tuple = ()  # a block's own leaves, used when PyTorch's module is not one block


POSITIONWISE = ("activation", "Dropout", "prelu")
"""The kinds of layer that act on each feature where it stands: after a Flatten of an image they
keep its features in the image's order, so the Dense that follows still reads (H, W, C)."""


def kind_of(layer: Layer) -> str | None:
    """What a layer is (`Layer.config`'s "kind"), or None for a layer that does not say."""
    return (layer.config or {}).get("kind")


def layer_leaves(model: Layer, input_shape: Shape) -> list[Leaf]:
    """The model's parameterised leaf layers in the order they run, each with its params' path.

    **Arguments:**

    - `model`: a Layer (composites are walked through `Layer.parts`).
    - `input_shape`: the shape of one example the model reads.

    **Returns:** one Leaf per layer that has parameters, blocks opened into their layers.
    """
    return [leaf for leaf in _opened(all_leaves(model, input_shape)) if leaf.has_params]


def all_leaves(model: Layer, input_shape: Shape) -> list[Leaf]:
    """Every leaf layer of the model in the order they run, parameter-free ones included; a block
    with a PyTorch rule of its own (a transformer block) is one Leaf, its layers in `parts`."""
    leaves: list[Leaf] = []
    _walk(model, tuple(input_shape), (), None, leaves)
    return leaves


def _opened(leaves: list[Leaf]) -> list[Leaf]:
    """leaves with every block replaced by its own leaves."""
    return [inner for leaf in leaves for inner in (_opened(list(leaf.parts)) if leaf.parts else [leaf])]


def _walk(layer, shape, path, pending, leaves):
    """Append layer's leaves to leaves; return (output shape, pending flatten)."""
    kind = kind_of(layer)
    if layer.parts and kind in CONVERSIONS:  # a block PyTorch may hold as one module
        inner: list[Leaf] = []
        _walk(layer._replace(config=None), shape, path, None, inner)
        leaves.append(Leaf(layer, path, shape, None, True, tuple(inner)))
        return output_shape(layer, shape), None
    if layer.parts:
        if layer.layers:  # serial: each part reads the one before it
            for part, sub in layer.parts:
                shape, pending = _walk(part, shape, path + sub, pending, leaves)
            return shape, pending
        for part, sub in layer.parts:  # Residual, mixed precision: each part reads the same input
            _walk(part, shape, path + sub, None, leaves)
        return output_shape(layer, shape), None
    out_shape, params = init_shapes(layer, shape)
    has_params = bool(jax.tree_util.tree_leaves(params))
    leaves.append(Leaf(layer, path, shape, pending if kind == "Dense" else None, has_params))
    if kind == "Flatten":
        pending = shape if len(shape) == 3 else None
    elif kind not in POSITIONWISE:
        pending = None
    return out_shape, pending


# --- the PyTorch side ---------------------------------------------------------------------------------


def _torch():
    try:
        import torch  # noqa: PLC0415
    except ImportError as e:
        raise InputError("jaxnn.io's PyTorch interop needs PyTorch: pip install -e '.[interop]'") from e
    return torch


def torch_leaves(module: Any) -> list[tuple[str, Any]]:
    """(name, submodule) of every submodule that holds parameters or buffers of its own, in
    registration order; attention, the recurrent layers and the transformer encoder layer count as
    one with what is inside them."""
    torch = _torch()
    whole = (
        torch.nn.MultiheadAttention,
        torch.nn.LSTM,
        torch.nn.GRU,
        torch.nn.RNN,
        torch.nn.TransformerEncoderLayer,
    )
    found, inside = [], []
    for name, sub in module.named_modules():
        if any(prefix == "" or name.startswith(prefix + ".") for prefix in inside):
            continue
        own = list(sub.parameters(recurse=False)) + list(sub.buffers(recurse=False))
        if isinstance(sub, whole):
            found.append((name, sub))
            inside.append(name)
        elif own:
            found.append((name, sub))
    return found


def _array(tensor: Any) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def _check(ok: bool, where: str, what: str) -> None:
    if not ok:
        raise InputError(f"{where}: {what}")


class Rule(NamedTuple):
    """How one kind of jaxnn layer and its PyTorch module map onto each other."""

    modules: tuple[str, ...]  # the torch.nn class names it takes
    to_jaxnn: Callable  # (leaf, module, where) -> (params, state)
    to_torch: Callable  # (leaf, params, state) -> {local name: array}


def _dense_in(leaf, module, where):
    """Linear: w = W^T, its rows reordered from (C, H, W) to (H, W, C) after a Flatten of an image."""
    n_in, features = leaf.input_shape[-1], leaf.layer.config["features"]
    w = _array(module.weight)
    _check(w.shape == (features, n_in), where, f"weight {w.shape}, the layer needs ({features}, {n_in})")
    if leaf.flattened_from is not None:
        h, wd, c = leaf.flattened_from
        w = w.reshape(features, c, h, wd).transpose(0, 2, 3, 1).reshape(features, n_in)
    b = _array(module.bias) if module.bias is not None else np.zeros(features, w.dtype)
    return {"w": w.T, "b": b}, ()


def _dense_out(leaf, params, state):
    w = np.asarray(params["w"]).T  # (out, in), jaxnn's (H, W, C) order
    if leaf.flattened_from is not None:
        h, wd, c = leaf.flattened_from
        w = w.reshape(w.shape[0], h, wd, c).transpose(0, 3, 1, 2).reshape(w.shape[0], -1)
    return {"weight": w, "bias": np.asarray(params["b"])}


def _torch_padding(leaf, module, where, spatial, kernel, stride):
    """PyTorch's symmetric padding for jaxnn's SAME or VALID at this input size."""
    padding = leaf.layer.config["padding"]
    if padding == "VALID":
        return (0,) * len(spatial)
    pads = jax.lax.padtype_to_pads(spatial, kernel, stride, "SAME")
    _check(
        all(lo == hi for lo, hi in pads),
        where,
        f"SAME padding at this input size is {pads} (lower, upper) per axis: uneven, which PyTorch's "
        "symmetric padding cannot express",
    )
    return tuple(lo for lo, _ in pads)


def _check_conv(leaf, module, where, spatial, kernel, stride):
    torch_padding = module.padding
    if isinstance(torch_padding, str):
        torch_padding = {"valid": (0,) * len(spatial)}.get(torch_padding, torch_padding)
    expected = _torch_padding(leaf, module, where, spatial, kernel, stride)
    _check(
        tuple(module.stride) == tuple(stride),
        where,
        f"stride {tuple(module.stride)}, the layer's is {stride}",
    )
    _check(
        all(d == 1 for d in module.dilation) and module.groups == 1, where, "dilation and groups must be 1"
    )
    _check(
        module.padding_mode == "zeros", where, f"padding_mode {module.padding_mode!r}: jaxnn pads with zeros"
    )
    _check(
        torch_padding == "same" or tuple(torch_padding) == expected,
        where,
        f"padding {module.padding}, the layer's {leaf.layer.config['padding']} is {expected} here",
    )


def _conv2d_in(leaf, module, where):
    """Conv2d: (out, in, kh, kw) -> (kh, kw, in, out)."""
    cfg = leaf.layer.config
    w = _array(module.weight)
    _check(
        w.shape[2:] == cfg["kernel_size"], where, f"kernel {w.shape[2:]}, the layer's is {cfg['kernel_size']}"
    )
    _check(
        w.shape[:2] == (cfg["features"], leaf.input_shape[-1]),
        where,
        f"weight {w.shape}, the layer needs ({cfg['features']}, {leaf.input_shape[-1]}, ...)",
    )
    _check_conv(leaf, module, where, leaf.input_shape[:2], cfg["kernel_size"], cfg["stride"])
    b = _array(module.bias) if module.bias is not None else np.zeros(cfg["features"], w.dtype)
    return {"w": w.transpose(2, 3, 1, 0), "b": b}, ()


def _conv2d_out(leaf, params, state):
    return {"weight": np.asarray(params["w"]).transpose(3, 2, 0, 1), "bias": np.asarray(params["b"])}


def _conv1d_in(leaf, module, where):
    """Conv1d: (out, in, k) -> (k, in, out)."""
    cfg = leaf.layer.config
    w = _array(module.weight)
    _check(
        w.shape == (cfg["features"], leaf.input_shape[-1], cfg["kernel_size"]),
        where,
        f"weight {w.shape}, the layer needs {(cfg['features'], leaf.input_shape[-1], cfg['kernel_size'])}",
    )
    _check_conv(leaf, module, where, leaf.input_shape[:1], (cfg["kernel_size"],), (cfg["stride"],))
    b = _array(module.bias) if module.bias is not None else np.zeros(cfg["features"], w.dtype)
    return {"w": w.transpose(2, 1, 0), "b": b}, ()


def _conv1d_out(leaf, params, state):
    return {"weight": np.asarray(params["w"]).transpose(2, 1, 0), "bias": np.asarray(params["b"])}


def _transpose_in(leaf, module, where):
    """ConvTranspose2d: (in, out, kh, kw) -> (kh, kw, in, out); VALID, no output padding."""
    cfg = leaf.layer.config
    w = _array(module.weight)
    _check(
        w.shape == (leaf.input_shape[-1], cfg["features"]) + cfg["kernel_size"],
        where,
        f"weight {w.shape}, the layer needs {(leaf.input_shape[-1], cfg['features'], *cfg['kernel_size'])}",
    )
    _check(
        tuple(module.stride) == cfg["stride"],
        where,
        f"stride {tuple(module.stride)}, the layer's is {cfg['stride']}",
    )
    _check(
        tuple(module.padding) == (0, 0) and tuple(module.output_padding) == (0, 0),
        where,
        "padding and output_padding must be 0 (jaxnn's ConvTranspose2D is VALID)",
    )
    _check(
        all(d == 1 for d in module.dilation) and module.groups == 1, where, "dilation and groups must be 1"
    )
    b = _array(module.bias) if module.bias is not None else np.zeros(cfg["features"], w.dtype)
    return {"w": w.transpose(2, 3, 0, 1), "b": b}, ()


def _transpose_out(leaf, params, state):
    return {"weight": np.asarray(params["w"]).transpose(2, 3, 0, 1), "bias": np.asarray(params["b"])}


def _affine(module, n, dtype):
    scale = _array(module.weight) if module.weight is not None else np.ones(n, dtype)
    bias = _array(module.bias) if module.bias is not None else np.zeros(n, dtype)
    return scale, bias


def _batchnorm_in(leaf, module, where):
    """BatchNorm1d/2d: weight, bias -> scale, bias; running mean and var -> the state."""
    c = leaf.input_shape[-1]
    _check(module.num_features == c, where, f"{module.num_features} features, the layer reads {c}")
    _check(
        math.isclose(module.eps, leaf.layer.config["eps"]),
        where,
        f"eps {module.eps}, the layer's is {leaf.layer.config['eps']}",
    )
    _check(
        module.running_mean is not None,
        where,
        "track_running_stats=False: jaxnn's BatchNorm keeps running statistics",
    )
    momentum, torch_momentum = leaf.layer.config["momentum"], module.momentum
    _check(torch_momentum is not None, where, "momentum None (a cumulative average), which jaxnn has not")
    _check(
        math.isclose(1 - torch_momentum, momentum),
        where,
        f"momentum {torch_momentum} weighs the new batch, jaxnn's the running value: the layer needs "
        f"BatchNorm(momentum={1 - torch_momentum:g}), it has {momentum}",
    )
    scale, bias = _affine(module, c, _array(module.running_mean).dtype)
    return {"scale": scale, "bias": bias}, {
        "mean": _array(module.running_mean),
        "var": _array(module.running_var),
    }


def _batchnorm_out(leaf, params, state):
    out: dict[str, Any] = {"weight": np.asarray(params["scale"]), "bias": np.asarray(params["bias"])}
    if state:
        out.update(running_mean=np.asarray(state["mean"]), running_var=np.asarray(state["var"]))
    out["num_batches_tracked"] = np.asarray(0, np.int64)  # PyTorch keeps the count; jaxnn does not
    return out


def _layernorm_in(leaf, module, where):
    d = leaf.input_shape[-1]
    _check(
        tuple(module.normalized_shape) == (d,),
        where,
        f"normalized_shape {tuple(module.normalized_shape)}, the layer normalises ({d},)",
    )
    _check(
        math.isclose(module.eps, leaf.layer.config["eps"]),
        where,
        f"eps {module.eps}, the layer's is {leaf.layer.config['eps']}",
    )
    scale, bias = _affine(module, d, np.float64 if module.weight is None else _array(module.weight).dtype)
    return {"scale": scale, "bias": bias}, ()


def _norm_out(leaf, params, state):
    return {"weight": np.asarray(params["scale"]), "bias": np.asarray(params["bias"])}


def _groupnorm_in(leaf, module, where):
    cfg, c = leaf.layer.config, leaf.input_shape[-1]
    _check(
        module.num_groups == cfg["groups"] and module.num_channels == c,
        where,
        f"{module.num_groups} groups of {module.num_channels} channels, the layer's {cfg['groups']} of {c}",
    )
    _check(math.isclose(module.eps, cfg["eps"]), where, f"eps {module.eps}, the layer's is {cfg['eps']}")
    scale, bias = _affine(module, c, np.float64 if module.weight is None else _array(module.weight).dtype)
    return {"scale": scale, "bias": bias}, ()


def _embedding_in(leaf, module, where):
    """Embedding: weight -> table (also a learned position table: PositionalEmbedding)."""
    table = _array(module.weight)
    cfg = leaf.layer.config
    rows = cfg.get("vocab", cfg.get("max_len"))
    _check(table.shape[0] == rows, where, f"{table.shape[0]} rows, the layer has {rows}")
    return {"table": table}, ()


def _embedding_out(leaf, params, state):
    return {"weight": np.asarray(params["table"])}


def _check_recurrent(leaf, module, where, gates):
    h = leaf.layer.config["hidden"]
    _check(module.hidden_size == h, where, f"hidden size {module.hidden_size}, the layer's is {h}")
    _check(
        module.input_size == leaf.input_shape[-1],
        where,
        f"input size {module.input_size}, the layer reads {leaf.input_shape[-1]}",
    )
    _check(
        module.num_layers == 1 and not module.bidirectional,
        where,
        "one layer, one direction: stack jaxnn layers for more",
    )
    _check(getattr(module, "proj_size", 0) == 0, where, "proj_size must be 0")
    return h


def _biases(module, n):
    if not module.bias:
        return np.zeros(n), np.zeros(n)
    return _array(module.bias_ih_l0), _array(module.bias_hh_l0)


def _lstm_in(leaf, module, where):
    """LSTM (gates i, f, g, o in both): wx = W_ih^T, wh = W_hh^T, b = b_ih + b_hh."""
    h = _check_recurrent(leaf, module, where, 4)
    b_ih, b_hh = _biases(module, 4 * h)
    return {"wx": _array(module.weight_ih_l0).T, "wh": _array(module.weight_hh_l0).T, "b": b_ih + b_hh}, ()


def _rnn_in(leaf, module, where):
    """RNN: as LSTM, one gate; its nonlinearity must be the layer's."""
    h = _check_recurrent(leaf, module, where, 1)
    _check(
        module.nonlinearity == leaf.layer.config["activation"],
        where,
        f"nonlinearity {module.nonlinearity!r}, the layer's is {leaf.layer.config['activation']!r}",
    )
    b_ih, b_hh = _biases(module, h)
    return {"wx": _array(module.weight_ih_l0).T, "wh": _array(module.weight_hh_l0).T, "b": b_ih + b_hh}, ()


def _gru_in(leaf, module, where):
    """GRU (gates r, z, n in both): b = b_ih + [b_hr, b_hz, 0]. PyTorch's n = tanh(W_in x + b_in +
    r (W_hn h + b_hn)) has a bias inside the reset product that jaxnn's n = tanh(a_n + r u_n) lacks:
    a nonzero b_hn is refused, since no jaxnn GRU computes that function."""
    h = _check_recurrent(leaf, module, where, 3)
    b_ih, b_hh = _biases(module, 3 * h)
    _check(
        not np.any(b_hh[2 * h :]),
        where,
        "its b_hn (the hidden bias inside the reset gate's product, bias_hh_l0[2h:]) is nonzero; jaxnn's "
        "GRU has no such bias, so it cannot hold this module exactly (set it to 0, or fold it into "
        "nothing: it depends on r)",
    )
    b = b_ih + np.concatenate([b_hh[: 2 * h], np.zeros(h, b_hh.dtype)])
    return {"wx": _array(module.weight_ih_l0).T, "wh": _array(module.weight_hh_l0).T, "b": b}, ()


def _recurrent_out(leaf, params, state):
    b = np.asarray(params["b"])
    return {
        "weight_ih_l0": np.asarray(params["wx"]).T,
        "weight_hh_l0": np.asarray(params["wh"]).T,
        "bias_ih_l0": b,
        "bias_hh_l0": np.zeros_like(b),
    }


def _attention_in(leaf, module, where):
    """MultiheadAttention: in_proj (3d, d) split into q, k, v and transposed; out_proj transposed."""
    d, heads = leaf.input_shape[-1], leaf.layer.config["heads"]
    _check(
        module.embed_dim == d and module.num_heads == heads,
        where,
        f"embed_dim {module.embed_dim} with {module.num_heads} heads, the layer's is {d} with {heads}",
    )
    _check(
        module._qkv_same_embed_dim and module.bias_k is None and not module.add_zero_attn,
        where,
        "kdim = vdim = embed_dim, no add_bias_kv, no add_zero_attn (self-attention)",
    )
    w = _array(module.in_proj_weight)
    b = _array(module.in_proj_bias) if module.in_proj_bias is not None else np.zeros(3 * d, w.dtype)
    params = {}
    for i, name in enumerate("qkv"):
        params[f"w{name}"] = w[i * d : (i + 1) * d].T
        params[f"b{name}"] = b[i * d : (i + 1) * d]
    params["wo"] = _array(module.out_proj.weight).T
    params["bo"] = _array(module.out_proj.bias) if module.out_proj.bias is not None else np.zeros(d, w.dtype)
    return params, ()


def _attention_out(leaf, params, state):
    w = np.concatenate([np.asarray(params[f"w{n}"]).T for n in "qkv"])
    b = np.concatenate([np.asarray(params[f"b{n}"]) for n in "qkv"])
    return {
        "in_proj_weight": w,
        "in_proj_bias": b,
        "out_proj.weight": np.asarray(params["wo"]).T,
        "out_proj.bias": np.asarray(params["bo"]),
    }


def _prelu_in(leaf, module, where):
    w = _array(module.weight)
    _check(w.size == 1, where, f"{w.size} slopes: jaxnn's prelu learns one (PReLU(num_parameters=1))")
    return {"alpha": w.reshape(())}, ()


def _prelu_out(leaf, params, state):
    return {"weight": np.asarray(params["alpha"]).reshape(1)}


def _block_in(leaf, module, where):
    """TransformerEncoderLayer (batch_first, norm_first, GELU) -> the pre-norm transformer block:
    norm1 and self_attn are the attention half's LayerNorm and attention, norm2, linear1 and linear2
    the MLP half's; the attention's weights convert as MultiheadAttention's."""
    cfg, torch = leaf.layer.config, _torch()
    d, heads, hidden = cfg["d"], cfg["heads"], cfg["mlp_ratio"] * cfg["d"]
    activation = module.activation
    gelu = activation is torch.nn.functional.gelu or (
        isinstance(activation, torch.nn.GELU) and activation.approximate == "none"
    )
    checks = [
        (module.self_attn.batch_first, "batch_first=False: jaxnn's sequences are (batch, time, d)"),
        (module.norm_first, "norm_first=False (post-norm): jaxnn's block normalises first"),
        (gelu, f"activation {getattr(activation, '__name__', activation)}: the block's is the exact GELU"),
        (module.linear1.out_features == hidden, f"dim_feedforward {module.linear1.out_features}, "
         f"the block's MLP is {hidden} wide (mlp_ratio {cfg['mlp_ratio']})"),
    ]  # fmt: skip
    for ok, what in checks:
        _check(ok, where, what)
    sub = leaf._replace(input_shape=leaf.input_shape[:-1] + (d,))
    norm = leaf.layer.parts[0][0].parts[0][0].parts[0][0]  # the first LayerNorm, for its eps
    parts = {
        "attention": _attention_in(sub._replace(layer=_Config({"heads": heads})), module.self_attn, where)[0],
        "norm1": _layernorm_in(sub._replace(layer=norm), module.norm1, where)[0],
        "norm2": _layernorm_in(sub._replace(layer=norm), module.norm2, where)[0],
        "linear1": _dense_in(_as_dense(sub, hidden), module.linear1, where)[0],
        "linear2": _dense_in(_as_dense(sub._replace(input_shape=(hidden,)), d), module.linear2, where)[0],
    }
    attention_half = (parts["norm1"], parts["attention"])
    mlp_half = (parts["norm2"], parts["linear1"], (), parts["linear2"])
    return (attention_half, mlp_half), ()


class _Config(NamedTuple):
    """A stand-in layer for a rule that reads only `config` (the parts of a block)."""

    config: dict


def _as_dense(leaf, features):
    return leaf._replace(layer=_Config({"features": features}), flattened_from=None)


def _block_out(leaf, params, state):
    (norm1, attention), (norm2, linear1, _, linear2) = params
    out = {f"self_attn.{k}": v for k, v in _attention_out(leaf, attention, ()).items()}
    for name, p in (("norm1", norm1), ("norm2", norm2)):
        out.update({f"{name}.{k}": v for k, v in _norm_out(leaf, p, ()).items()})
    plain = leaf._replace(flattened_from=None)
    for name, p in (("linear1", linear1), ("linear2", linear2)):
        out.update({f"{name}.{k}": v for k, v in _dense_out(plain, p, ()).items()})
    return out


CONVERSIONS: dict[str, Rule] = {
    "Dense": Rule(("Linear",), _dense_in, _dense_out),
    "Conv2D": Rule(("Conv2d",), _conv2d_in, _conv2d_out),
    "Conv1D": Rule(("Conv1d",), _conv1d_in, _conv1d_out),
    "ConvTranspose2D": Rule(("ConvTranspose2d",), _transpose_in, _transpose_out),
    "BatchNorm": Rule(("BatchNorm1d", "BatchNorm2d"), _batchnorm_in, _batchnorm_out),
    "LayerNorm": Rule(("LayerNorm",), _layernorm_in, _norm_out),
    "GroupNorm": Rule(("GroupNorm",), _groupnorm_in, _norm_out),
    "Embedding": Rule(("Embedding",), _embedding_in, _embedding_out),
    "PositionalEmbedding": Rule(("Embedding",), _embedding_in, _embedding_out),
    "LSTM": Rule(("LSTM",), _lstm_in, _recurrent_out),
    "GRU": Rule(("GRU",), _gru_in, _recurrent_out),
    "RNN": Rule(("RNN",), _rnn_in, _recurrent_out),
    "MultiHeadAttention": Rule(("MultiheadAttention",), _attention_in, _attention_out),
    "prelu": Rule(("PReLU",), _prelu_in, _prelu_out),
    "TransformerBlock": Rule(("TransformerEncoderLayer",), _block_in, _block_out),
}
"""jaxnn layer kind -> the PyTorch modules it matches and the two conversions."""


def describe(leaf: Leaf) -> str:
    """A layer as messages name it: its place in the model's params, and its name."""
    return f"layer {''.join(f'[{k}]' for k in leaf.path) or '(the model)'} {leaf.layer.name}"


class Matched(NamedTuple):
    """A model matched with a PyTorch module: the (leaf, module name, module) pairs of the layers
    with parameters, and every leaf of the model in order (blocks kept whole where PyTorch has one
    module for them, opened elsewhere)."""

    pairs: list[tuple[Leaf, str, Any]]
    leaves: list[Leaf]


def match(model: Layer, module: Any, input_shape: Shape) -> Matched:
    """The model's parameterised layers beside the module's, checked one for one.

    **Arguments:** `model` the Layer; `module` the torch.nn.Module; `input_shape` one example's shape.

    **Returns:** a Matched. Another kind of layer, a missing or an extra one raises an InputError
    naming the first that differs.
    """
    queue, modules = all_leaves(model, input_shape), torch_leaves(module)
    n_layers = len(layer_leaves(model, input_shape))
    pairs: list[tuple[Leaf, str, Any]] = []
    leaves: list[Leaf] = []
    while queue:
        leaf = queue.pop(0)
        if not leaf.has_params:
            leaves.append(leaf)
            continue
        kind, i = kind_of(leaf.layer), len(pairs)
        fits = (
            i < len(modules)
            and kind in CONVERSIONS
            and type(modules[i][1]).__name__ in CONVERSIONS[kind].modules
        )
        if leaf.parts and not fits:  # PyTorch holds the block's layers one by one: match those
            queue[:0] = list(leaf.parts)
            continue
        if kind not in CONVERSIONS:
            raise InputError(f"{describe(leaf)}: jaxnn.io has no PyTorch rule for it")
        if i >= len(modules):
            raise InputError(
                f"{describe(leaf)} has no PyTorch module to match: the module "
                f"has {len(modules)} parameterised submodules, the model {n_layers} parameterised layers"
            )
        name, sub = modules[i]
        if not fits:
            raise InputError(
                f"{describe(leaf)} does not match PyTorch's {name or 'module'} "
                f"({type(sub).__name__}): it takes {' or '.join(CONVERSIONS[kind].modules)}"
            )
        pairs.append((leaf, name, sub))
        leaves.append(leaf)
    if len(modules) > len(pairs):
        name, sub = modules[len(pairs)]
        raise InputError(
            f"PyTorch's {name} ({type(sub).__name__}) has no layer to match: the model has "
            f"{n_layers} parameterised layers, the module {len(modules)} parameterised submodules"
        )
    return Matched(pairs, leaves)


def _template(model: Layer, input_shape: Shape):
    return init_shapes(model, input_shape)[1], state_shapes(model, input_shape)


def _fill(template: Any, parts: dict, what: str) -> Any:
    """template's structure with each leaf taken from parts: {layer path: that layer's subtree}."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    values = []
    for path, like in leaves:
        keys = tuple(k.idx if hasattr(k, "idx") else k.key for k in path)
        for cut in range(len(keys), -1, -1):
            if keys[:cut] in parts:
                sub = parts[keys[:cut]]
                for k in keys[cut:]:
                    sub = sub[k]
                break
        else:
            raise InputError(f"{what}{jax.tree_util.keystr(path)} has no PyTorch counterpart")
        array = np.asarray(sub)
        if array.shape != like.shape:
            raise InputError(
                f"{what}{jax.tree_util.keystr(path)}: got {array.shape}, the model needs {like.shape}"
            )
        values.append(jnp.asarray(array))
    return jax.tree_util.tree_unflatten(treedef, values)


def from_torch(
    model: Layer, module: Any, input_shape: Shape | None = None, *, check: bool = True
) -> tuple[Params, State]:
    """A PyTorch module's weights as the parameters (and state) of a jaxnn model of the same architecture.

    **Arguments:**

    - `model`: the jaxnn Layer.
    - `module`: a `torch.nn.Module` whose parameterised submodules, in registration order, match the
      model's parameterised layers in order (a `TransformerEncoderLayer` matches a
      `models.transformer_block` whole).
    - `input_shape`: the shape of one example, jaxnn's layout (NHWC images); default
      `model.input_shape` (a model built with `serial` records none: pass it).
    - `check`: compare what has no weights as well (see below); False skips the forward passes.

    **Returns:** `(params, state)`, in the module's dtype (float64 needs `jax.enable_x64`). BatchNorm's
    running mean and variance become its state. A module that does not match (another architecture,
    a missing or extra layer, another size, stride, padding, eps or momentum) raises an InputError
    naming the first pair that differs. With `check`, the parameter-free layers are compared too
    (activations and pooling, in the order the module's forward calls them), and then both models
    run on one random batch in evaluation mode: outputs that differ (a functional call in the
    module's forward that the model lacks, say) raise an InputError with the difference. A module
    whose forward cannot be called with one batch (a ModuleList) is compared by its weights alone.
    """
    shape = model_input_shape(model, input_shape, "from_torch")
    _check_module(module)
    matched = match(model, module, shape)
    params_parts, state_parts = {}, {}
    for leaf, name, sub in matched.pairs:
        where = f"{describe(leaf)} and PyTorch's {name or 'module'} ({type(sub).__name__})"
        params, state = CONVERSIONS[str(kind_of(leaf.layer))].to_jaxnn(leaf, sub, where)
        params_parts[leaf.path] = params
        if state:
            state_parts[leaf.path] = state
    params_like, state_like = _template(model, shape)
    params = _fill(params_like, params_parts, "params")
    state = _fill(state_like, state_parts, "state") if jax.tree_util.tree_leaves(state_like) else state_like
    if check:
        from .compare import check_same_function  # noqa: PLC0415  (it needs this module's rules)

        check_same_function(model, params, state, module, shape, matched)
    return params, state


def to_torch(
    model: Layer, params: Params, state: State = None, module: Any = None, input_shape: Shape | None = None
) -> dict:
    """A jaxnn model's parameters (and state) as a PyTorch state_dict.

    **Arguments:**

    - `model`: the jaxnn Layer.
    - `params`, `state`: its parameters and state (state: None or `()` for a model without).
    - `module`: a `torch.nn.Module` of the same architecture, whose names the state_dict takes; without
      it the names are the layers' index paths (`"0.weight"`, `"3.running_mean"`), which are the names
      of a `torch.nn.Sequential` built in the model's order.
    - `input_shape`: the shape of one example (default `model.input_shape`; a model built with
      `serial` records none: pass it).

    **Returns:** `{name: torch.Tensor}` for `module.load_state_dict`. Converting back with `from_torch`
    gives the same parameters exactly; LSTM, GRU and RNN biases come back as `bias_ih` (their sum),
    `bias_hh` zero.
    """
    torch = _torch()
    shape = model_input_shape(model, input_shape, "to_torch")
    if module is not None:
        _check_module(module)
        named = [(leaf, name) for leaf, name, _ in match(model, module, shape).pairs]
    else:
        named = [(leaf, ".".join(map(str, leaf.path))) for leaf in layer_leaves(model, shape)]
    out = {}
    for leaf, prefix in named:
        kind = kind_of(leaf.layer)
        if kind not in CONVERSIONS:
            raise InputError(f"{describe(leaf)}: jaxnn.io has no PyTorch rule for it")
        sub_params, sub_state = _at(params, leaf.path), _at(state, leaf.path) if state else ()
        for local, value in CONVERSIONS[kind].to_torch(leaf, sub_params, sub_state).items():
            key = f"{prefix}.{local}" if prefix else local
            out[key] = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.array(value))
    return out


def _at(tree: Any, path: tuple) -> Any:
    for k in path:
        tree = tree[k]
    return tree


def _check_module(module: Any) -> None:
    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        raise InputTypeError(f"expected a torch.nn.Module, got {type(module).__name__}")
