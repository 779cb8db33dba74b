"""Normalisation: LayerNorm, BatchNorm (with running statistics as state) and GroupNorm.

All three normalise x to xhat = (x - mu) / sqrt(var + eps) over some axes, then scale and shift it
per feature; they differ in the axes (features; batch and space; space and a group of channels).
Their backward passes share one rule for the normalisation (`_normalize_backward`).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .core import Layer, make_layer
from .errors import InputError

__all__ = ["LayerNorm", "BatchNorm", "GroupNorm"]


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
    """Normalisation by statistics of x itself: dL/dx goes through the statistics too."""

    xhat: Any  # the normalised input, x's shape
    inv_std: Any  # 1 / sqrt(var + eps), broadcastable to x
    scale: Any  # the learned scale g


class AffineResiduals(NamedTuple):
    """BatchNorm in evaluation: with the running statistics constant, y = gain x + shift is an affine
    map of x, gain = scale / sqrt(var + eps), and dL/dx = gain dy."""

    xhat: Any  # (x - mean) / sqrt(var + eps), for dL/dscale
    gain: Any  # scale / sqrt(var + eps), per channel


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


def LayerNorm(eps: float = 1e-5) -> Layer:
    """Layer normalisation over the last axis, with a learned scale g and bias b.

    **Arguments:**

    - `eps`: added to the variance.

    **Returns:** a Layer with params `{"scale": (d,), "bias": (d,)}` (1 and 0), for x `(batch, ..., d)`:

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

    return make_layer("LayerNorm", init, forward, backward, config={"kind": "LayerNorm", "eps": eps})


def BatchNorm(momentum: float = 0.9, eps: float = 1e-5) -> Layer:
    """Batch normalisation over every axis but the last (the C features or channels).

    **Arguments:**

    - `momentum`: how much of the running statistics each training step keeps, in [0, 1].
    - `eps`: added to the variance.

    **Returns:** a Layer with params `{"scale": (C,), "bias": (C,)}` (1 and 0) and state
    `{"mean": (C,), "var": (C,)}` (0 and 1):

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
            new_state, residuals = state, AffineResiduals(xhat, inv_std * params["scale"])
        return xhat * params["scale"] + params["bias"], residuals, new_state

    def backward(residuals, dy):
        if isinstance(residuals, AffineResiduals):  # evaluation: an affine map of x
            return _affine_grads(dy, residuals.xhat), dy * residuals.gain
        xhat, inv_std, scale = residuals
        dx = _normalize_backward(xhat, inv_std, dy * scale, tuple(range(dy.ndim - 1)))
        return _affine_grads(dy, xhat), dx

    config = {"kind": "BatchNorm", "momentum": momentum, "eps": eps}
    return make_layer(f"BatchNorm({momentum})", init, forward, backward, init_state=init_state, config=config)


def GroupNorm(groups: int, eps: float = 1e-5) -> Layer:
    """Group normalisation: per example, over the spatial axes and the C/groups channels of each
    group (groups are contiguous blocks of channels).

    **Arguments:**

    - `groups`: how many groups the C channels split into (C must be a multiple).
    - `eps`: added to the variance.

    **Returns:** a Layer with params `{"scale": (C,), "bias": (C,)}` for x `(batch, ..., C)`. No state:
    the statistics are the example's own, in training and evaluation.

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

    config = {"kind": "GroupNorm", "groups": groups, "eps": eps}
    return make_layer(f"GroupNorm({groups})", init, forward, backward, config=config)
