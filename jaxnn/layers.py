"""Layers: Dense, Flatten, Conv2D, pooling, Dropout and the normalisations (Layer, Batch, Group).

Each forward is followed by its hand-derived backward.
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .core import check_batch, make_layer, matmul
from .errors import InputError


def lecun_normal(key, shape, dtype=jnp.float32):
    """Weights ~ N(0, 1 / fan_in), fan_in = product of all but the last axis."""
    fan_in = math.prod(shape[:-1])
    return jax.random.normal(key, shape, dtype) / math.sqrt(fan_in)


def Dense(features, w_init=lecun_normal):
    """Fully connected: y = x @ w + b (the lecture's F(W, x, b) = Wx + b, rows as examples).

    params {"w": (n_in, features), "b": (features,)};  x: (batch, n_in) -> y: (batch, features),
    or (batch, ..., n_in) -> (batch, ..., features) position by position (sequences).

    Backward, with dy = dL/dy of shape (batch, features) (more axes: every position is a row):
        dL/dw = x^T dy        dL/db = sum over the batch of dy        dL/dx = dy w^T
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

    return make_layer(f"Dense({features})", init, forward, backward)


def Flatten():
    """(batch, d1, d2, ...) -> (batch, d1 * d2 * ...). Backward reshapes dy back. Params: ()."""

    def init(key, input_shape, dtype=jnp.float32):
        return (math.prod(input_shape),), ()

    def forward(params, x):
        if jnp.ndim(x) < 1:
            raise InputError(f"Flatten: expected input with a batch axis, got shape {jnp.shape(x)}")
        return jnp.reshape(x, (x.shape[0], -1)), x.shape

    def backward(shape, dy):
        return (), jnp.reshape(dy, shape)

    return make_layer("Flatten", init, forward, backward)


# --- convolution and pooling (NHWC) ------------------------------------------------------------------

_CONV_DIMS = ("NHWC", "HWIO", "NHWC")


class ConvResiduals(NamedTuple):
    x: Any  # the input (batch, H, W, c_in)
    w: Any  # the kernel (kh, kw, c_in, features)


def _pair(v, what):
    v = (v, v) if isinstance(v, int) else tuple(v)
    if len(v) != 2 or not all(isinstance(i, int) and i > 0 for i in v):
        raise InputError(f"{what} must be a positive int or a pair of them, got {v!r}")
    return v


def _check_image_shape(name, input_shape):
    """At init: raise unless input_shape is one image example (H, W, C)."""
    if len(input_shape) != 3:
        raise InputError(
            f"{name}: expected one example of shape (H, W, C), got input_shape {tuple(input_shape)}"
        )


def _check_image(name, x, channels=None):
    if jnp.ndim(x) != 4:
        raise InputError(f"{name}: expected images of shape (batch, H, W, C), got {jnp.shape(x)}")
    if channels is not None and x.shape[-1] != channels:
        raise InputError(
            f"{name}: expected {channels} input channels, got {x.shape[-1]} (shape {jnp.shape(x)})"
        )


def Conv2D(features, kernel_size=(3, 3), stride=(1, 1), padding="SAME", w_init=lecun_normal, backward="auto"):
    """2-D convolution (cross-correlation, as in every framework), NHWC.

    params {"w": (kh, kw, c_in, features), "b": (features,)}; x: (batch, H, W, c_in).
    With x padded by (lo, hi) and stride s:
        y[n, p, q, o] = sum_{i, j, c} x[n, s p + i, s q + j, c] w[i, j, c, o] + b[o]

    Backward (dy: (batch, P, Q, features)):
      dL/db = sum_{n,p,q} dy
      dL/dw[i, j, c, o] = sum_{n,p,q} x[n, s p + i, s q + j, c] dy[n, p, q, o]
      dL/dx[n, s p + i, s q + j, c] += sum_o dy[n, p, q, o] w[i, j, c, o]     (then drop the padding)

    Exact formulations of these sums, chosen by `backward`:
      "conv": as convolutions: dw is x correlated with dy dilated by s (batch and feature axes
              swapped so the sum runs over n); dx is the transposed convolution: dy dilated by s,
              correlated with w flipped in space and its in/out channels swapped, written as an
              ordinary forward convolution (kernel laid out (kh, kw, features, c_in)).
      "taps": one matmul per kernel tap (i, j) on the strided view x[:, i::s, j::s]: kh*kw matmuls,
              no loop over pixels; dx adds each tap's dy w[i, j]^T into its view of the padded dx
              (a fori_loop for stride 1, one view in memory at a time). With few input channels
              (kh kw c_in <= 32, a first layer) dw is one matmul of the patches (all taps' views
              side by side) instead.
      "auto" (default): on the CPU dw as in "taps", dx as in "conv"; "conv" elsewhere. XLA's CPU
              backend runs the swapped-axes convolution of "conv"'s dw about 20x slower inside a
              `lax.scan` (our whole-epoch loop), while dx's forward convolution runs at full speed.
              Measured on 2 CPU cores (benchmarks/cnn_step.py, issue 10), the scanned training
              step of the small MNIST CNN at batch 128 went 23.2 -> 20.4 ms when dx moved from taps
              to the convolution and dw's taps to dy^T view (one shared transpose of dy instead of
              one per view), and the ResNet's from 264 to 190 ms.
    """
    kernel_size, stride = _pair(kernel_size, "kernel_size"), _pair(stride, "stride")
    if padding not in ("SAME", "VALID"):
        raise InputError(f"Conv2D: padding must be 'SAME' or 'VALID', got {padding!r}")
    if backward not in ("auto", "conv", "taps"):
        raise InputError(f"Conv2D: backward must be 'auto', 'conv' or 'taps', got {backward!r}")

    def pads(spatial):
        return jax.lax.padtype_to_pads(spatial, kernel_size, stride, padding)

    def init(key, input_shape, dtype=jnp.float32):
        _check_image_shape("Conv2D", input_shape)
        h, w, c = input_shape
        (lo_h, hi_h), (lo_w, hi_w) = pads((h, w))
        out_h = (h + lo_h + hi_h - kernel_size[0]) // stride[0] + 1
        out_w = (w + lo_w + hi_w - kernel_size[1]) // stride[1] + 1
        if out_h < 1 or out_w < 1:
            raise InputError(
                f"Conv2D: input {h}x{w} is smaller than the kernel {kernel_size} with {padding} padding"
            )
        weights = w_init(key, kernel_size + (c, features), dtype)
        return (out_h, out_w, features), {"w": weights, "b": jnp.zeros((features,), dtype)}

    def forward(params, x):
        w = params["w"]
        if jnp.ndim(w) != 4 or w.shape[:2] != kernel_size or w.shape[3] != features:
            raise InputError(
                f"Conv2D({features}): params w {jnp.shape(w)} are not those of this layer "
                f"(w: {kernel_size + ('c_in', features)})"
            )
        _check_image("Conv2D", x, w.shape[2])
        y = jax.lax.conv_general_dilated(x, w, stride, pads(x.shape[1:3]), dimension_numbers=_CONV_DIMS)
        return y + params["b"], ConvResiduals(x, w)

    def trimmed_pads(x):
        """The padding, its high side trimmed of rows and columns no window reaches."""
        (lo_h, hi_h), (lo_w, hi_w) = pads(x.shape[1:3])
        hi_h -= (x.shape[1] + lo_h + hi_h - kernel_size[0]) % stride[0]
        hi_w -= (x.shape[2] + lo_w + hi_w - kernel_size[1]) % stride[1]
        return (lo_h, hi_h), (lo_w, hi_w)

    def padded(x):
        """x with its padding: (batch, H + lo + hi, W + lo + hi, c_in)."""
        return jnp.pad(x, ((0, 0), *pads(x.shape[1:3]), (0, 0)))

    def weight_grad_conv(x, dy):
        """dw as x correlated with dy dilated by the stride, batch and feature axes swapped."""
        return jax.lax.conv_general_dilated(
            x, dy, (1, 1), trimmed_pads(x), rhs_dilation=stride, dimension_numbers=("CHWN", "IHWO", "HWNC")
        )

    def weight_grad_taps(x, dy):
        """dw[i, j] = view_ij^T dy, one matmul per kernel tap (i, j), the view_ij = x_pad[:, i::s, j::s]
        cut to dy's size. Each is computed as (dy^T view_ij)^T: dy^T is then one transpose shared by
        every tap, where view_ij^T dy made XLA transpose each of the kh*kw views."""
        x_pad = padded(x)
        dw = [
            jnp.einsum("npqo,npqc->oc", dy, view)
            for _, _, view in _taps(x_pad, kernel_size, stride, dy.shape[1:3])
        ]
        return jnp.stack(dw).transpose(0, 2, 1).reshape(kernel_size + (x.shape[3], dy.shape[3]))

    def weight_grad_patches(x, dy):
        """dw as one matmul: the patches (the kh*kw strided views of x_pad side by side along the
        channels, (N P Q, kh kw c_in)) transposed times dy (N P Q, features). For few input
        channels (a first layer) this reads dy once instead of once per tap."""
        x_pad = padded(x)
        views = [view for _, _, view in _taps(x_pad, kernel_size, stride, dy.shape[1:3])]
        patches = jnp.concatenate(views, axis=-1).reshape(-1, len(views) * x.shape[3])
        dw = jnp.einsum("mk,mo->ko", patches, dy.reshape(-1, dy.shape[3]))
        return dw.reshape(kernel_size + (x.shape[3], dy.shape[3]))

    def input_grad_loop(x, w, dy):
        """dx as input_grad_taps for stride 1, one tap at a time in a fori_loop (a slice update)."""
        (lo_h, hi_h), (lo_w, hi_w) = pads(x.shape[1:3])
        kw = kernel_size[1]
        dx_pad = jnp.zeros(
            (x.shape[0], x.shape[1] + lo_h + hi_h, x.shape[2] + lo_w + hi_w, x.shape[3]), x.dtype
        )

        def tap(t, dx_pad):
            i, j = t // kw, t % kw
            start = (0, i, j, 0)
            part = jax.lax.dynamic_slice(dx_pad, start, dy.shape[:3] + (x.shape[3],))
            return jax.lax.dynamic_update_slice(
                dx_pad, part + jnp.einsum("npqo,co->npqc", dy, w[i, j]), start
            )

        dx_pad = jax.lax.fori_loop(0, kernel_size[0] * kw, tap, dx_pad)
        return dx_pad[:, lo_h : lo_h + x.shape[1], lo_w : lo_w + x.shape[2]]

    def input_grad_conv(x, w, dy):
        """dx as the transposed convolution: dy dilated by the stride, correlated with w flipped
        in space, input and output channels swapped."""
        dilated = [(o - 1) * s + 1 for o, s in zip(dy.shape[1:3], stride)]
        dx_pads = []
        for size, k, (lo, _), d in zip(x.shape[1:3], kernel_size, trimmed_pads(x), dilated):
            first = k - 1 - lo
            dx_pads.append((first, size - 1 + k - d - first))
        w_t = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)  # (kh, kw, features, c_in): a forward kernel
        return jax.lax.conv_general_dilated(
            dy, w_t, (1, 1), dx_pads, lhs_dilation=stride, dimension_numbers=_CONV_DIMS
        )

    def input_grad_taps(x, w, dy):
        """dx: each tap's dy w[i, j]^T added into its strided view of the padded dx."""
        if stride == (1, 1):
            return input_grad_loop(x, w, dy)
        (lo_h, hi_h), (lo_w, hi_w) = pads(x.shape[1:3])
        dx_pad = jnp.zeros(
            (x.shape[0], x.shape[1] + lo_h + hi_h, x.shape[2] + lo_w + hi_w, x.shape[3]), x.dtype
        )
        for (i, j), index, _ in _taps(dx_pad, kernel_size, stride, dy.shape[1:3]):
            dx_pad = dx_pad.at[index].add(jnp.einsum("npqo,co->npqc", dy, w[i, j]))
        return dx_pad[:, lo_h : lo_h + x.shape[1], lo_w : lo_w + x.shape[2]]

    def backward_rule(residuals, dy):
        x, w = residuals
        # "auto" on the CPU mixes the two: dw from the taps, dx from the convolution
        kind = backward if backward != "auto" else ("mixed" if jax.default_backend() == "cpu" else "conv")
        if kind == "conv":
            dw = weight_grad_conv(x, dy)
        else:
            few_inputs = x.shape[3] * kernel_size[0] * kernel_size[1] <= _PATCH_LIMIT
            dw = weight_grad_patches(x, dy) if few_inputs else weight_grad_taps(x, dy)
        dx = input_grad_taps(x, w, dy) if kind == "taps" else input_grad_conv(x, w, dy)
        return {"w": dw, "b": jnp.sum(dy, axis=(0, 1, 2))}, dx

    name = f"Conv2D({features}, {kernel_size}, {stride}, {padding})"
    return make_layer(name, init, forward, backward_rule)


# patches of at most this many numbers (kh kw c_in) make Conv2D's CPU weight gradient one matmul
_PATCH_LIMIT = 32


def _taps(x, window, stride, out_size):
    """For each window offset (i, j): ((i, j), index, x[index]) with x[index] the strided view
    x[:, i::s, j::s] cut to the output size out_size = (P, Q)."""
    for i in range(window[0]):
        for j in range(window[1]):
            index = (
                slice(None),
                slice(i, i + stride[0] * (out_size[0] - 1) + 1, stride[0]),
                slice(j, j + stride[1] * (out_size[1] - 1) + 1, stride[1]),
            )
            yield (i, j), index, x[index]


def _windows(x, window, stride):
    """Pooling windows as taps: (index, view) per window offset (VALID: the output size follows)."""
    out_size = ((x.shape[1] - window[0]) // stride[0] + 1, (x.shape[2] - window[1]) // stride[1] + 1)
    for _, index, view in _taps(x, window, stride, out_size):
        yield index, view


class Reduction(NamedTuple):
    """How a pooling window is reduced, and how its dy is shared back among the window's inputs.

    reduce(views) -> (y, aux): views are the strided views of x, one per window offset k;
    share(k, aux, dy, size) -> the gradient reaching offset k's view (size: inputs per window).
    """

    name: str
    reduce: Callable
    share: Callable


def _max_reduce(views):
    """y = the max over the window; aux = the offset of its first maximum (int8, y's shape), found
    in the forward pass: the backward never compares floats that XLA might recompute differently."""
    y, first = views[0], jnp.zeros(views[0].shape, jnp.int8)
    for k, view in enumerate(views[1:], start=1):
        first = jnp.where(view > y, jnp.int8(k), first)
        y = jnp.maximum(y, view)
    return y, first


MAX = Reduction("MaxPool", _max_reduce, lambda k, first, dy, size: jnp.where(first == k, dy, 0))
MEAN = Reduction("AvgPool", lambda views: (sum(views) / len(views), None), lambda k, aux, dy, size: dy / size)


class PoolResiduals(NamedTuple):
    x: Any  # the input (batch, H, W, C): its shape, and the rows and columns the windows miss
    aux: Any  # what the reduction keeps (max: the offset of each window's first maximum)


def Pool(reduction, window=(2, 2), stride=None):
    """Pooling (VALID, NHWC) by a Reduction (MAX or MEAN), over windows of `window` every `stride`
    (default: the window, so windows tile the input). Params: ().

    Tiling windows take one reshape in the backward pass; overlapping ones a pass per window offset,
    each adding its share into dx.
    """
    window = _pair(window, "window")
    stride = window if stride is None else _pair(stride, "stride")
    size = window[0] * window[1]
    kind = reduction.name
    if size > 127:
        raise InputError(f"{kind}: windows of at most 127 inputs are supported, got {window}")

    def init(key, input_shape, dtype=jnp.float32):
        _check_image_shape(kind, input_shape)
        h, w, c = input_shape
        if h < window[0] or w < window[1]:
            raise InputError(f"{kind}: input {h}x{w} is smaller than the window {window}")
        return ((h - window[0]) // stride[0] + 1, (w - window[1]) // stride[1] + 1, c), ()

    def forward(params, x):
        _check_image(kind, x)
        y, aux = reduction.reduce([view for _, view in _windows(x, window, stride)])
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
        for k, (index, _) in enumerate(_windows(x, window, stride)):
            dx = dx.at[index].add(reduction.share(k, aux, dy, size))
        return (), dx

    return make_layer(f"{kind}({window}, {stride})", init, forward, backward)


def MaxPool(window=(2, 2), stride=None):
    """Max pooling (VALID), NHWC. y = max over each window; dL/dx = dy at the window's maximum
    (the first one if tied), 0 elsewhere; overlapping windows add up. Params: ()."""
    return Pool(MAX, window, stride)


def AvgPool(window=(2, 2), stride=None):
    """Average pooling (VALID), NHWC. y = mean over each window; dL/dx = dy / (kh kw) to every
    input of the window; overlapping windows add up. Params: ()."""
    return Pool(MEAN, window, stride)


# --- regularisation and normalisation ------------------------------------------------------------------


def Dropout(rate):
    """Inverted dropout: y = x * m / (1 - rate), m ~ Bernoulli(1 - rate) per element, when on;
    y = x when off. Backward: dx = dy * m / (1 - rate). Params: ().

    On with train=True (which needs key=), off with train=False; without `train`, on exactly when
    given a key (the rule of DESIGN.md section 2).
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
        scale = jax.random.bernoulli(key, 1 - rate, x.shape).astype(x.dtype) / (1 - rate)
        return x * scale, scale

    def backward(scale, dy):
        return (), dy if scale is None else dy * scale

    return make_layer(f"Dropout({rate})", init, forward, backward)


def _normalize(x, axes, eps):
    """xhat = (x - mu) / sqrt(var + eps), mu and var (biased) over `axes`; returns xhat, the
    1 / sqrt(var + eps), mu and var (kept dims)."""
    mu = jnp.mean(x, axis=axes, keepdims=True)
    centred = x - mu
    var = jnp.mean(centred * centred, axis=axes, keepdims=True)
    inv_std = jax.lax.rsqrt(var + eps)
    return centred * inv_std, inv_std, mu, var


def _normalize_backward(xhat, inv_std, dxhat, axes):
    """dL/dx for xhat = (x - mu) / sqrt(var + eps) when mu and var are statistics of x over `axes`
    (means below over the same axes, m entries each). From d mu/dx = 1/m and d var/dx = 2 (x - mu)/m:

        dL/dx = (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) / sqrt(var + eps)
    """
    mean = lambda a: jnp.mean(a, axis=axes, keepdims=True)  # noqa: E731
    return inv_std * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))


class NormResiduals(NamedTuple):
    xhat: Any  # the normalised input, x's shape
    inv_std: Any  # 1 / sqrt(var + eps), broadcastable to x
    scale: Any  # the learned scale g


class FixedStatsResiduals(NamedTuple):
    """BatchNorm in evaluation: the statistics are constants, not functions of x."""

    xhat: Any
    inv_std: Any
    scale: Any


def _scale_and_bias(features, dtype):
    return {"scale": jnp.ones((features,), dtype), "bias": jnp.zeros((features,), dtype)}


def _affine_grads(dy, xhat):
    """dL/dscale and dL/dbias of y = scale xhat + bias (per feature, the last axis)."""
    axes = tuple(range(dy.ndim - 1))
    return {"scale": jnp.sum(dy * xhat, axis=axes), "bias": jnp.sum(dy, axis=axes)}


def _check_features(name, x, params):
    if jnp.ndim(x) < 2 or x.shape[-1] != params["scale"].shape[0]:
        raise InputError(
            f"{name}: expected (batch, ..., {params['scale'].shape[0]}) with the features "
            f"last, got shape {jnp.shape(x)}"
        )


def LayerNorm(eps=1e-5):
    """Layer normalisation over the last axis, with a learned scale g and bias b.
    params {"scale": (d,), "bias": (d,)}.

        mu, var = mean and variance of x over the last axis;  xhat = (x - mu) / sqrt(var + eps)
        y = g xhat + b

    Backward, with the means over the last axis (d entries):
        dL/dg = sum over the other axes of dy xhat        dL/db = sum of dy
        dxhat = dy g
        dL/dx = (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) / sqrt(var + eps)
    """

    def init(key, input_shape, dtype=jnp.float32):
        return tuple(input_shape), _scale_and_bias(input_shape[-1], dtype)

    def forward(params, x):
        _check_features("LayerNorm", x, params)
        xhat, inv_std, _, _ = _normalize(x, -1, eps)
        return xhat * params["scale"] + params["bias"], NormResiduals(xhat, inv_std, params["scale"])

    def backward(residuals, dy):
        xhat, inv_std, scale = residuals
        return _affine_grads(dy, xhat), _normalize_backward(xhat, inv_std, dy * scale, -1)

    return make_layer("LayerNorm", init, forward, backward)


def BatchNorm(momentum=0.9, eps=1e-5):
    """Batch normalisation over every axis but the last (the C features or channels).
    params {"scale": (C,), "bias": (C,)} (1 and 0); state {"mean": (C,), "var": (C,)} (0 and 1).

    train=True:  m, v = the batch's mean and biased variance per channel (over n = batch * H * W
                 values);  xhat = (x - m) / sqrt(v + eps);  y = scale xhat + bias;
                 new mean = momentum mean + (1 - momentum) m;
                 new var  = momentum var  + (1 - momentum) v n / (n - 1)  (the unbiased variance)
    otherwise:   the same y with the running mean and var: xhat = (x - mean) / sqrt(var + eps).

    Backward (dxhat = dy scale; sums and means over all axes but the last):
        dL/dscale = sum dy xhat        dL/dbias = sum dy
        train:  dL/dx = (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) / sqrt(v + eps)
                (m and v depend on x: the two mean terms are their contributions)
        eval:   dL/dx = dxhat / sqrt(var + eps)     (the running statistics are constants)
    The state gets no gradient: it is not trained.
    """
    if not 0 <= momentum <= 1:
        raise InputError(f"BatchNorm: momentum must be in [0, 1], got {momentum}")

    def init(key, input_shape, dtype=jnp.float32):
        return tuple(input_shape), _scale_and_bias(input_shape[-1], dtype)

    def init_state(input_shape, dtype=jnp.float32):
        c = input_shape[-1]
        return {"mean": jnp.zeros((c,), dtype), "var": jnp.ones((c,), dtype)}

    def forward(params, x, state, train=None):
        _check_features("BatchNorm", x, params)
        axes = tuple(range(x.ndim - 1))
        if train:
            n = x.size // x.shape[-1]
            if n < 2:
                raise InputError(
                    f"BatchNorm: training needs more than one value per channel to take "
                    f"batch statistics, got input of shape {x.shape}"
                )
            xhat, inv_std, m, v = _normalize(x, axes, eps)
            new_state = {
                "mean": momentum * state["mean"] + (1 - momentum) * m.reshape(-1),
                "var": momentum * state["var"] + (1 - momentum) * v.reshape(-1) * (n / (n - 1)),
            }
            new_state = jax.tree_util.tree_map(lambda new, old: new.astype(old.dtype), new_state, state)
            residuals = NormResiduals(xhat, inv_std, params["scale"])
        else:
            inv_std = jax.lax.rsqrt(state["var"] + eps).astype(x.dtype)
            xhat = (x - state["mean"].astype(x.dtype)) * inv_std
            new_state, residuals = state, FixedStatsResiduals(xhat, inv_std, params["scale"])
        return xhat * params["scale"] + params["bias"], residuals, new_state

    def backward(residuals, dy):
        xhat, inv_std, scale = residuals
        axes = tuple(range(dy.ndim - 1))
        if isinstance(residuals, FixedStatsResiduals):
            dx = dy * scale * inv_std
        else:
            dx = _normalize_backward(xhat, inv_std, dy * scale, axes)
        return _affine_grads(dy, xhat), dx

    return make_layer(f"BatchNorm({momentum})", init, forward, backward, init_state)


def GroupNorm(groups, eps=1e-5):
    """Group normalisation: per example, over the spatial axes and the C/groups channels of each
    group (groups are contiguous blocks of channels). x: (batch, ..., C); params {"scale": (C,),
    "bias": (C,)}. No state: the statistics are the example's own, in training and evaluation.

    With x viewed as (batch, S, groups, C/groups), S the spatial positions, and the means over
    S and C/groups (m = S C/groups entries):
        xhat = (x - mu) / sqrt(var + eps);  y = scale xhat + bias
    Backward (dxhat = dy scale):
        dL/dscale = sum dy xhat   dL/dbias = sum dy   (over batch and spatial axes)
        dL/dx = (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) / sqrt(var + eps)   per group
    """
    if not isinstance(groups, int) or groups < 1:
        raise InputError(f"GroupNorm: groups must be a positive int, got {groups!r}")

    def init(key, input_shape, dtype=jnp.float32):
        if input_shape[-1] % groups:
            raise InputError(f"GroupNorm: {input_shape[-1]} channels do not split into {groups} groups")
        return tuple(input_shape), _scale_and_bias(input_shape[-1], dtype)

    def grouped(a):  # (batch, ..., C) -> (batch, S, groups, C / groups)
        return a.reshape(a.shape[0], -1, groups, a.shape[-1] // groups)

    def forward(params, x):
        _check_features("GroupNorm", x, params)
        xhat, inv_std, _, _ = _normalize(grouped(x), (1, 3), eps)
        xhat = xhat.reshape(x.shape)
        return xhat * params["scale"] + params["bias"], NormResiduals(xhat, inv_std, params["scale"])

    def backward(residuals, dy):
        xhat, inv_std, scale = residuals
        dx = _normalize_backward(grouped(xhat), inv_std, grouped(dy * scale), (1, 3))
        return _affine_grads(dy, xhat), dx.reshape(dy.shape)

    return make_layer(f"GroupNorm({groups})", init, forward, backward)


# --- more convolutions and pooling --------------------------------------------------------------------------


def GlobalAvgPool():
    """(batch, H, W, C) -> (batch, C): the mean over all positions. Backward: dx = dy / (H W) at
    every position. Params: ()."""

    def init(key, input_shape, dtype=jnp.float32):
        _check_image_shape("GlobalAvgPool", input_shape)
        return (input_shape[-1],), ()

    def forward(params, x):
        _check_image("GlobalAvgPool", x)
        return jnp.mean(x, axis=(1, 2)), x.shape

    def backward(shape, dy):
        return (), jnp.broadcast_to(dy[:, None, None, :] / (shape[1] * shape[2]), shape)

    return make_layer("GlobalAvgPool", init, forward, backward)


def Conv1D(features, kernel_size, stride=1, padding="SAME", w_init=lecun_normal, backward="auto"):
    """1-D convolution over time: x (batch, time, c_in) -> (batch, time', features);
    params {"w": (k, c_in, features), "b": (features,)}.

        y[n, t, o] = sum_{i, c} x[n, s t + i, c] w[i, c, o] + b[o]     (x padded as `padding` says)

    It is Conv2D on (batch, 1, time, c_in) with a (1, k) kernel, so forward and hand backward are
    Conv2D's (see there), with the height axis of size 1 added and removed.
    """
    if not isinstance(kernel_size, int) or not isinstance(stride, int):
        raise InputError(f"Conv1D: kernel_size and stride must be ints, got {kernel_size!r}, {stride!r}")
    inner = Conv2D(features, (1, kernel_size), (1, stride), padding, w_init, backward)

    def init(key, input_shape, dtype=jnp.float32):
        if len(input_shape) != 2:
            raise InputError(
                f"Conv1D: expected one example of shape (time, channels), got {tuple(input_shape)}"
            )
        (_, t, f), params = inner.init(key, (1,) + tuple(input_shape), dtype)
        return (t, f), {"w": params["w"][0], "b": params["b"]}

    def forward(params, x):
        if jnp.ndim(x) != 3:
            raise InputError(f"Conv1D: expected (batch, time, channels), got {jnp.shape(x)}")
        y, residuals = inner.forward({"w": params["w"][None], "b": params["b"]}, x[:, None])
        return y[:, 0], residuals

    def backward_rule(residuals, dy):
        grads, dx = inner.backward(residuals, dy[:, None])
        return {"w": grads["w"][0], "b": grads["b"]}, dx[:, 0]

    return make_layer(f"Conv1D({features}, {kernel_size}, {stride}, {padding})", init, forward, backward_rule)


def ConvTranspose2D(features, kernel_size, stride=(1, 1), padding="VALID", w_init=lecun_normal):
    """Transposed convolution (the adjoint of a strided Conv2D: it spreads each input pixel over a
    kernel-sized patch of the output), NHWC. params {"w": (kh, kw, c_in, features), "b": (features,)}.

        y[n, s i + a, s j + b, o] += x[n, i, j, c] w[a, b, c, o]      (+ b[o]);  size (H - 1) s + k

    Backward (dy: (batch, (H - 1) s + kh, (W - 1) s + kw, features)):
        dL/dx[n, i, j, c] = sum_{a, b, o} dy[n, s i + a, s j + b, o] w[a, b, c, o]
                            (a strided convolution of dy with w, in/out channels swapped)
        dL/dw[a, b] = x^T dy[:, a::s, b::s]      (one matmul per kernel tap; x's H x W positions)
        dL/db = sum dy
    The forward is the convolution of x dilated by s, padded by k - 1, with w flipped in space.
    """
    kernel_size, stride = _pair(kernel_size, "kernel_size"), _pair(stride, "stride")
    if padding != "VALID":
        raise InputError(f"ConvTranspose2D: only padding='VALID' is implemented, got {padding!r}")

    def init(key, input_shape, dtype=jnp.float32):
        _check_image_shape("ConvTranspose2D", input_shape)
        h, w, c = input_shape
        out = ((h - 1) * stride[0] + kernel_size[0], (w - 1) * stride[1] + kernel_size[1], features)
        fan_in = c * math.prod(kernel_size) / math.prod(stride)  # inputs reaching one output, on average
        weights = jax.random.normal(key, kernel_size + (c, features), dtype) / math.sqrt(fan_in)
        return out, {"w": weights, "b": jnp.zeros((features,), dtype)}

    def forward(params, x):
        w = params["w"]
        if jnp.ndim(w) != 4 or w.shape[:2] != kernel_size or w.shape[3] != features:
            raise InputError(
                f"ConvTranspose2D({features}): params w {jnp.shape(w)} are not those of this layer"
            )
        _check_image("ConvTranspose2D", x, w.shape[2])
        pads = [(k - 1, k - 1) for k in kernel_size]
        y = jax.lax.conv_general_dilated(
            x, jnp.flip(w, (0, 1)), (1, 1), pads, lhs_dilation=stride, dimension_numbers=_CONV_DIMS
        )
        return y + params["b"], ConvResiduals(x, w)

    def backward(residuals, dy):
        x, w = residuals
        dx = jax.lax.conv_general_dilated(dy, w, stride, "VALID", dimension_numbers=("NHWC", "HWOI", "NHWC"))
        h, wd = x.shape[1:3]
        dw = jnp.stack(
            [
                jnp.stack(
                    [
                        jnp.einsum(
                            "nijc,nijo->co",
                            x,
                            dy[
                                :,
                                a : a + stride[0] * (h - 1) + 1 : stride[0],
                                b : b + stride[1] * (wd - 1) + 1 : stride[1],
                            ],
                        )
                        for b in range(kernel_size[1])
                    ]
                )
                for a in range(kernel_size[0])
            ]
        )
        return {"w": dw, "b": jnp.sum(dy, axis=(0, 1, 2))}, dx

    return make_layer(f"ConvTranspose2D({features}, {kernel_size}, {stride})", init, forward, backward)
