"""Layers: Dense (the lecture's Wx + b), Flatten and Dropout, each forward followed by its hand backward.

Convolutions are in `conv`, pooling in `pooling`, normalisations in `normalization`, sequence
layers in `attention` and `recurrent`; `jaxnn` re-exports them all.
"""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from .core import Layer, check_batch, make_layer, matmul
from .errors import InputError
from .types import Array, DTypeLike, PRNGKey, Shape

__all__ = ["Dense", "Flatten", "Dropout", "lecun_normal"]


def lecun_normal(key: PRNGKey, shape: Shape, dtype: DTypeLike = jnp.float32) -> Array:
    """Weights ~ N(0, 1 / fan_in), fan_in the product of all but the last axis (LeCun's initialisation).

    **Arguments:**

    - `key`: a PRNG key.
    - `shape`: the weight's shape, outputs last (Dense `(n_in, features)`, Conv2D `(kh, kw, c_in, features)`).
    - `dtype`: the weight's dtype.

    **Returns:** an array of `shape`.
    """
    fan_in = math.prod(shape[:-1])
    return jax.random.normal(key, shape, dtype) / math.sqrt(fan_in)


def Dense(features: int, w_init: Callable[..., Array] = lecun_normal) -> Layer:
    r"""Fully connected: y = x @ w + b (the lecture's F(W, x, b) = Wx + b, rows as examples).

    **Arguments:**

    - `features`: the output width.
    - `w_init(key, shape, dtype) -> w`: the weights' initialisation (default `lecun_normal`); b starts at 0.

    **Returns:** a Layer with params `{"w": (n_in, features), "b": (features,)}`, mapping
    x `(batch, n_in)` to y `(batch, features)`, or `(batch, ..., n_in)` to `(batch, ..., features)`
    position by position (sequences).

    Backward, with $dy = \partial L / \partial y$ of shape (batch, features) (more axes: every
    position is a row):

    $$
    \frac{\partial L}{\partial w} = x^\top dy, \qquad
    \frac{\partial L}{\partial b} = \sum_{\text{batch}} dy, \qquad
    \frac{\partial L}{\partial x} = dy\, w^\top
    $$
    """
    if not isinstance(features, int) or features < 1:
        raise InputError(f"Dense: features must be a positive int, got {features!r}")

    def init(key, input_shape, dtype=jnp.float32):
        if len(input_shape) not in (1, 2):
            raise InputError(
                f"Dense: expected one example of shape (n_in,) or (time, n_in), got input_shape "
                f"{tuple(input_shape)}; put Flatten() before Dense for images"
            )
        w = w_init(key, (input_shape[-1], features), dtype)
        return tuple(input_shape[:-1]) + (features,), {"w": w, "b": jnp.zeros((features,), dtype)}

    def forward(params, x):
        w, b = params["w"], params["b"]
        if jnp.ndim(w) != 2 or w.shape[1] != features or jnp.shape(b) != (features,):
            raise InputError(
                f"Dense({features}): params w {jnp.shape(w)}, b {jnp.shape(b)} are not those of a "
                f"Dense({features}) layer (w: (n_in, {features}), b: ({features},))"
            )
        if jnp.ndim(x) < 2 or x.shape[-1] != w.shape[0]:  # (batch, n_in), or (batch, ..., n_in) for sequences
            check_batch("Dense", x, w.shape[:1])
        return matmul(x, w) + b, (x, w)

    def backward(residuals, dy):
        x, w = residuals
        rows_x, rows_dy = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])  # every position a row
        return {"w": matmul(rows_x.T, rows_dy), "b": jnp.sum(rows_dy, axis=0)}, matmul(dy, w.T)

    return make_layer(
        f"Dense({features})", init, forward, backward, config={"kind": "Dense", "features": features}
    )


def Flatten() -> Layer:
    """(batch, d1, d2, ...) -> (batch, d1 * d2 * ...), in row-major order (for an image: H, then W,
    then C). Backward reshapes dy back.

    **Returns:** a Layer without params.
    """

    def init(key, input_shape, dtype=jnp.float32):
        return (math.prod(input_shape),), ()

    def forward(params, x):
        if jnp.ndim(x) < 1:
            raise InputError(f"Flatten: expected input with a batch axis, got shape {jnp.shape(x)}")
        return jnp.reshape(x, (x.shape[0], -1)), x.shape

    def backward(shape, dy):
        return (), jnp.reshape(dy, shape)

    return make_layer("Flatten", init, forward, backward, config={"kind": "Flatten"})


def Dropout(rate: float) -> Layer:
    """Inverted dropout: y = x * m / (1 - rate), m ~ Bernoulli(1 - rate) per element, when on;
    y = x when off. Backward: dx = dy * m / (1 - rate).

    **Arguments:**

    - `rate`: the probability of dropping an element, in [0, 1).

    **Returns:** a Layer without params. It is on with `train=True` (which needs `key=`) and off with
    `train=False`; without `train`, on exactly when given a key.
    """
    if not 0 <= rate < 1:
        raise InputError(f"Dropout: rate must be in [0, 1), got {rate}")

    def init(key, input_shape, dtype=jnp.float32):
        return tuple(input_shape), ()

    def forward(params, x, key=None, train=None):
        if train and key is None:
            raise InputError(
                "Dropout: train=True needs key=... (a PRNG key for the masks); pass train=False to evaluate"
            )
        on = key is not None if train is None else train
        if not on or rate == 0:
            return x, None
        assert key is not None  # on: train=True checked above, or on because a key was given
        scale = jax.random.bernoulli(key, 1 - rate, x.shape).astype(x.dtype) / (1 - rate)
        return x * scale, scale

    def backward(scale, dy):
        return (), dy if scale is None else dy * scale

    return make_layer(f"Dropout({rate})", init, forward, backward, config={"kind": "Dropout", "rate": rate})
