"""Pooling, NHWC: max and average pooling over windows, and global average pooling.

A window's inputs share its output's gradient: all of it to the window's first maximum (max), or
equal parts (mean). Overlapping windows add their shares.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp

from .core import Layer, make_layer
from .errors import InputError
from .windows import check_image, check_image_shape, pair, windows

__all__ = ["MaxPool", "AvgPool", "GlobalAvgPool", "Pool", "Reduction", "MAX", "MEAN"]


class Reduction(NamedTuple):
    """How a pooling window is reduced, and how its dy is shared back among the window's inputs.

    reduce(views) -> (y, aux): views are the strided views of x, one per window offset k;
    share(k, aux, dy, size) -> the gradient reaching offset k's view (size: inputs per window).
    """

    name: str
    reduce: Callable
    share: Callable


def _max_reduce(views):
    """y = the max over the window, written as a choice: `first` is the offset of the window's first
    maximum (the first in row-major order when tied; a NaN counts as a maximum, so it propagates),
    and y is the view at that offset. jax.grad of a choice (`where`) sends dy to the chosen input
    alone, so jax.grad of this forward follows the hand rule's convention exactly, ties included,
    where a chain of `jnp.maximum` would split a tied window's dy (1/8, 1/8, 1/4, 1/2 for four).
    aux = first (int8, y's shape), found once in the forward: the backward compares no floats."""
    y, first = views[0], jnp.zeros(views[0].shape, jnp.int8)
    for k, view in enumerate(views[1:], start=1):
        take = (view > y) | jnp.isnan(view)  # once y is NaN, only another NaN replaces it
        first = jnp.where(take, jnp.int8(k), first)
        y = jnp.where(take, view, y)
    return y, first


MAX = Reduction("MaxPool", _max_reduce, lambda k, first, dy, size: jnp.where(first == k, dy, 0))
"""The window's max; its dy goes to the window's first maximum."""
MEAN = Reduction("AvgPool", lambda views: (sum(views) / len(views), None), lambda k, aux, dy, size: dy / size)
"""The window's mean; its dy is shared equally."""


class PoolResiduals(NamedTuple):
    x: Any  # the input (batch, H, W, C): its shape, and the rows and columns the windows miss
    aux: Any  # what the reduction keeps (max: the offset of each window's first maximum)


def Pool(
    reduction: Reduction, window: int | tuple[int, int] = (2, 2), stride: int | tuple[int, int] | None = None
) -> Layer:
    """Pooling (VALID, NHWC) by a Reduction over windows.

    **Arguments:**

    - `reduction`: `MAX` or `MEAN` (or a Reduction of your own).
    - `window`: `(kh, kw)`, or one int for both; at most 127 inputs.
    - `stride`: `(sh, sw)`; default the window, so that windows tile the input.

    **Returns:** a Layer without params mapping `(batch, H, W, C)` to
    `(batch, (H - kh) // sh + 1, (W - kw) // sw + 1, C)`.

    Tiling windows take one reshape in the backward pass; overlapping ones a pass per window offset,
    each adding its share into dx.
    """
    window = pair(window, "window")
    stride = window if stride is None else pair(stride, "stride")
    size = window[0] * window[1]
    kind = reduction.name
    if size > 127:
        raise InputError(f"{kind}: windows of at most 127 inputs are supported, got {window}")

    def init(key, input_shape, dtype=jnp.float32):
        check_image_shape(kind, input_shape)
        h, w, c = input_shape
        if h < window[0] or w < window[1]:
            raise InputError(f"{kind}: input {h}x{w} is smaller than the window {window}")
        return ((h - window[0]) // stride[0] + 1, (w - window[1]) // stride[1] + 1, c), ()

    def forward(params, x):
        check_image(kind, x)
        y, aux = reduction.reduce([view for _, view in windows(x, window, stride)])
        return y, PoolResiduals(x, aux)

    def backward_tiled(x, aux, dy):
        """Windows that tile the input (stride == window): one reshape puts each window on its own
        axes, and dx is formed in one pass, without a scatter per window offset."""
        (kh, kw), (n, oh, ow, c) = window, dy.shape
        rows = [
            jnp.stack(
                [jnp.broadcast_to(reduction.share(i * kw + j, aux, dy, size), dy.shape) for j in range(kw)],
                axis=3,
            )
            for i in range(kh)
        ]  # each (n, oh, ow, kw, c)
        dx = jnp.stack(rows, axis=2).reshape(n, oh * kh, ow * kw, c)
        if dx.shape != x.shape:  # rows or columns the windows did not reach get no gradient
            dx = jnp.pad(dx, ((0, 0), (0, x.shape[1] - oh * kh), (0, x.shape[2] - ow * kw), (0, 0)))
        return dx

    def backward(residuals, dy):
        x, aux = residuals
        if stride == window:
            return (), backward_tiled(x, aux, dy)
        dx = jnp.zeros_like(x)
        for k, (index, _) in enumerate(windows(x, window, stride)):
            dx = dx.at[index].add(reduction.share(k, aux, dy, size))
        return (), dx

    config = {"kind": kind, "window": window, "stride": stride}
    return make_layer(f"{kind}({window}, {stride})", init, forward, backward, config=config)


def MaxPool(window: int | tuple[int, int] = (2, 2), stride: int | tuple[int, int] | None = None) -> Layer:
    """Max pooling (VALID), NHWC: y = the max over each window.

    **Arguments:** `window` and `stride` as for `Pool`.

    **Returns:** a Layer without params. Backward: dL/dx = dy at the window's maximum, the first one
    in row-major order when several inputs tie (as in PyTorch), 0 elsewhere; overlapping windows add
    up. `jax.grad` of its forward follows the same convention (the forward's max is written so
    that autodiff picks the same input; see "Derivative conventions at kinks and ties").
    """
    return Pool(MAX, window, stride)


def AvgPool(window: int | tuple[int, int] = (2, 2), stride: int | tuple[int, int] | None = None) -> Layer:
    """Average pooling (VALID), NHWC: y = the mean over each window.

    **Arguments:** `window` and `stride` as for `Pool`.

    **Returns:** a Layer without params. Backward: dL/dx = dy / (kh kw) to every input of the window;
    overlapping windows add up.
    """
    return Pool(MEAN, window, stride)


def GlobalAvgPool() -> Layer:
    """The mean over all positions: (batch, H, W, C) -> (batch, C).

    **Returns:** a Layer without params. Backward: dx = dy / (H W) at every position.
    """

    def init(key, input_shape, dtype=jnp.float32):
        check_image_shape("GlobalAvgPool", input_shape)
        return (input_shape[-1],), ()

    def forward(params, x):
        check_image("GlobalAvgPool", x)
        return jnp.mean(x, axis=(1, 2)), x.shape

    def backward(shape, dy):
        return (), jnp.broadcast_to(dy[:, None, None, :] / (shape[1] * shape[2]), shape)

    return make_layer("GlobalAvgPool", init, forward, backward, config={"kind": "GlobalAvgPool"})
