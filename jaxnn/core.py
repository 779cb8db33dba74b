"""The Layer: four pure functions, and `serial`, the chain rule in a few lines.

A layer is a NamedTuple of functions, in the style of stax's (init_fun, apply_fun) pairs,
plus a hand-derived backward pass in the shape of `jax.custom_vjp`'s fwd/bwd pair:

    out_shape, params = layer.init(key, input_shape)  # input_shape: ONE example, no batch axis
    y = layer.apply(params, x)                        # x: (batch, *input_shape)
    y, residuals = layer.forward(params, x)           # same y + what backward needs
    dparams, dx = layer.backward(residuals, dy)       # dparams has the structure of params

apply and forward also take `key=None`: a PRNG key for layers with randomness (Dropout). With
no key a layer runs in evaluation mode; `serial` splits the key among its layers.

`core` knows nothing of training or datasets.
"""
import inspect
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp


class Layer(NamedTuple):
    """A layer or a whole model: init / apply / forward / backward, all pure."""

    init: Callable[..., Any]
    apply: Callable[..., Any]
    forward: Callable[..., Any]
    backward: Callable[..., Any]
    name: str = "layer"
    stochastic: bool = False  # does forward use a PRNG key (Dropout)? Others skip the key splitting.

    def __repr__(self):
        return f"Layer({self.name})"


def make_layer(name, init, forward, backward):
    """Build a Layer whose `apply` is `forward` without the residuals.

    `forward(params, x)` may also take `key` (and other keyword options, e.g. an initial state);
    a forward without a `key` parameter simply never sees one.
    """
    takes_key = "key" in inspect.signature(forward).parameters

    def forward_(params, x, key=None, **options):
        return forward(params, x, key=key, **options) if takes_key else forward(params, x, **options)

    def apply(params, x, key=None, **options):
        return forward_(params, x, key=key, **options)[0]

    return Layer(init, apply, forward_, backward, name, stochastic=takes_key)


def split_key(key, n):
    """n keys from key, or n Nones when there is no key (evaluation mode)."""
    return [None] * n if key is None else list(jax.random.split(key, n))


def check_batch(name, x, input_shape):
    """Raise a clear error unless x has shape (batch, *input_shape).

    Shapes are static under `jit`, so this check also runs inside compiled code.
    """
    x_shape = tuple(jnp.shape(x))
    expected = "(batch, " + ", ".join(str(d) for d in input_shape) + ")"
    if len(x_shape) != len(input_shape) + 1 or x_shape[1:] != tuple(input_shape):
        raise ValueError(f"{name}: expected input of shape {expected}, got {x_shape}")


def serial(*layers):
    """Compose layers: y = f_n(...f_2(f_1(x))).

    params: a tuple, one entry per layer (() for a layer without params).
    backward is the chain rule run in reverse: each layer turns dL/dy into dL/dx,
    which is the dL/dy of the layer before it.
    """
    if not layers:
        raise ValueError("serial() needs at least one layer")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(f"serial: argument {i} is a {type(layer).__name__}, expected a jaxnn Layer")

    def init(key, input_shape, dtype=jnp.float32):
        all_params = []
        for layer, layer_key in zip(layers, jax.random.split(key, len(layers))):
            input_shape, params = layer.init(layer_key, input_shape, dtype=dtype)
            all_params.append(params)
        return input_shape, tuple(all_params)

    stochastic = any(layer.stochastic for layer in layers)

    def keys(key):
        return split_key(key if stochastic else None, len(layers))

    def apply(params, x, key=None):
        _check_params(params, len(layers))
        for layer, p, k in zip(layers, params, keys(key)):
            x = layer.apply(p, x, key=k)
        return x

    def forward(params, x, key=None):
        _check_params(params, len(layers))
        residuals = []
        for layer, p, k in zip(layers, params, keys(key)):
            x, r = layer.forward(p, x, key=k)
            residuals.append(r)
        return x, tuple(residuals)

    def backward(residuals, dy):
        grads = [None] * len(layers)
        for i in reversed(range(len(layers))):
            grads[i], dy = layers[i].backward(residuals[i], dy)
        return tuple(grads), dy

    name = "serial(" + ", ".join(layer.name for layer in layers) + ")"
    return Layer(init, apply, forward, backward, name, stochastic)


def _check_params(params, n):
    if not isinstance(params, (tuple, list)) or len(params) != n:
        got = f"a {type(params).__name__}" + (f" of length {len(params)}" if hasattr(params, "__len__") else "")
        raise ValueError(f"serial: expected params as a tuple of {n} entries (one per layer), got {got}")


def Residual(inner):
    """y = x + f(x) for a Layer f whose output has the input's shape. params: f's params.

    Backward adds the two paths: dL/dx = dy (the identity path) + f.backward(dy)'s dx.
    """
    if not isinstance(inner, Layer):
        raise TypeError(f"Residual: expected a jaxnn Layer, got {type(inner).__name__}")

    def init(key, input_shape, dtype=jnp.float32):
        out_shape, params = inner.init(key, input_shape, dtype=dtype)
        if tuple(out_shape) != tuple(input_shape):
            raise ValueError(f"Residual: {inner.name} maps {tuple(input_shape)} to {tuple(out_shape)}; "
                             "y = x + f(x) needs the same shape")
        return tuple(input_shape), params

    def forward(params, x, key=None):
        y, residuals = inner.forward(params, x, key=key)
        return x + y, residuals

    def backward(residuals, dy):
        dparams, dx = inner.backward(residuals, dy)
        return dparams, dy + dx

    return make_layer(f"Residual({inner.name})", init, forward, backward)._replace(stochastic=inner.stochastic)
