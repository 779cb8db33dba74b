"""Layers with parameters or shape changes: Dense, Flatten, mlp.

Each forward is followed by its hand-derived backward.
"""
import math

import jax
import jax.numpy as jnp

from .activations import activation
from .core import Layer, check_batch, make_layer, serial


def lecun_normal(key, shape, dtype=jnp.float32):
    """Weights ~ N(0, 1 / fan_in), fan_in = product of all but the last axis."""
    fan_in = math.prod(shape[:-1])
    return jax.random.normal(key, shape, dtype) / math.sqrt(fan_in)


def Dense(features, w_init=lecun_normal):
    """Fully connected: y = x @ w + b (the lecture's F(W, x, b) = Wx + b, rows as examples).

    params {"w": (n_in, features), "b": (features,)};  x: (batch, n_in) -> y: (batch, features).

    Backward, with dy = dL/dy of shape (batch, features):
        dL/dw = x^T dy        dL/db = sum over the batch of dy        dL/dx = dy w^T
    """
    if not isinstance(features, int) or features < 1:
        raise ValueError(f"Dense: features must be a positive int, got {features!r}")

    def init(key, input_shape, dtype=jnp.float32):
        if len(input_shape) != 1:
            raise ValueError(
                f"Dense: expected one example of shape (n_in,), got input_shape {tuple(input_shape)}; "
                "put Flatten() before Dense for images"
            )
        w = w_init(key, (input_shape[0], features), dtype)
        return (features,), {"w": w, "b": jnp.zeros((features,), dtype)}

    def forward(params, x):
        w, b = params["w"], params["b"]
        check_batch("Dense", x, w.shape[:1])
        return x @ w + b, (x, w)

    def backward(residuals, dy):
        x, w = residuals
        return {"w": x.T @ dy, "b": jnp.sum(dy, axis=0)}, dy @ w.T

    return make_layer(f"Dense({features})", init, forward, backward)


def Flatten():
    """(batch, d1, d2, ...) -> (batch, d1 * d2 * ...). Backward reshapes dy back. Params: ()."""

    def init(key, input_shape, dtype=jnp.float32):
        return (math.prod(input_shape),), ()

    def forward(params, x):
        if jnp.ndim(x) < 1:
            raise ValueError(f"Flatten: expected input with a batch axis, got shape {jnp.shape(x)}")
        return jnp.reshape(x, (x.shape[0], -1)), x.shape

    def backward(shape, dy):
        return (), jnp.reshape(dy, shape)

    return make_layer("Flatten", init, forward, backward)


def mlp(sizes, activation="relu", **options):
    """A feed-forward net: Dense/activation pairs, no activation after the last Dense.

    sizes include the input width: mlp([784, 512, 512, 10]) maps (batch, 784) -> (batch, 10).
    `activation` is a name from the table (with `options`) or a Layer.
    """
    sizes = list(sizes)
    if len(sizes) < 2 or not all(isinstance(s, int) and s > 0 for s in sizes):
        raise ValueError(f"mlp: sizes must be at least two positive ints (input width first), got {sizes}")
    layers = []
    for width in sizes[1:-1]:
        layers += [Dense(width), _activation_layer(activation, options)]
    layers.append(Dense(sizes[-1]))
    model = serial(*layers)

    def init(key, input_shape=(sizes[0],), dtype=jnp.float32):
        if tuple(input_shape) != (sizes[0],):
            raise ValueError(f"mlp: built for inputs of shape ({sizes[0]},), got input_shape {tuple(input_shape)}")
        return model.init(key, input_shape, dtype=dtype)

    return model._replace(init=init, name=f"mlp({sizes}, {getattr(activation, 'name', activation)})")


def _activation_layer(act, options):
    return act if isinstance(act, Layer) else activation(act, **options)
