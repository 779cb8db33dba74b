"""Normalisation: LayerNorm, BatchNorm (with running statistics as state) and GroupNorm.

All three normalise x to xhat = (x - mu) / sqrt(var + eps) over some axes, then scale and shift it
per feature; they differ in the axes (features; batch and space; space and a group of channels).
Their backward passes share one rule for the normalisation, written once in this module.
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
    r"""Layer normalisation over the last axis, with a learned scale g and bias b.

    **Arguments:**

    - `eps`: added to the variance.

    **Returns:** a Layer with params `{"scale": (d,), "bias": (d,)}` (1 and 0), for x `(batch, ..., d)`:

    $$
    \hat x = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}}, \qquad y = g \hat x + b
    $$

    with $\mu$ and $\sigma^2$ the mean and variance of x over the last axis. Backward, with the
    means $\langle \cdot \rangle$ over the last axis (d entries) and the parameters' sums over the
    other axes:

    $$
    \begin{aligned}
    \frac{\partial L}{\partial g} &= \sum dy\, \hat x, \qquad
    \frac{\partial L}{\partial b} = \sum dy, \qquad d\hat x = dy\, g \\
    \frac{\partial L}{\partial x} &= \frac{d\hat x - \langle d\hat x \rangle
        - \hat x \langle d\hat x\, \hat x \rangle}{\sqrt{\sigma^2 + \epsilon}}
    \end{aligned}
    $$
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
    r"""Batch normalisation over every axis but the last (the C features or channels).

    **Arguments:**

    - `momentum`: how much of the running statistics each training step keeps, in [0, 1].
    - `eps`: added to the variance.

    **Returns:** a Layer with params `{"scale": (C,), "bias": (C,)}` (1 and 0) and state
    `{"mean": (C,), "var": (C,)}` (0 and 1):

    With `train=True`, m and v are the batch's mean and biased variance per channel, over
    n = batch H W values, and the running statistics move towards them (the variance unbiased):

    $$
    \hat x = \frac{x - m}{\sqrt{v + \epsilon}}, \qquad y = \text{scale}\, \hat x + \text{bias},
    \qquad
    \begin{aligned}
    \text{mean} &\leftarrow \beta\, \text{mean} + (1 - \beta)\, m \\
    \text{var} &\leftarrow \beta\, \text{var} + (1 - \beta)\, v \tfrac{n}{n - 1}
    \end{aligned}
    $$

    with $\beta$ the momentum; otherwise the same y with the running statistics,
    $\hat x = (x - \text{mean}) / \sqrt{\text{var} + \epsilon}$.

    Backward, with $d\hat x = dy\, \text{scale}$, sums and means $\langle \cdot \rangle$ over all
    axes but the last:

    $$
    \begin{aligned}
    \frac{\partial L}{\partial \text{scale}} &= \sum dy\, \hat x, \qquad
    \frac{\partial L}{\partial \text{bias}} = \sum dy \\
    \text{train:} \quad \frac{\partial L}{\partial x} &= \frac{d\hat x - \langle d\hat x \rangle
        - \hat x \langle d\hat x\, \hat x \rangle}{\sqrt{v + \epsilon}} \\
    \text{evaluation:} \quad \frac{\partial L}{\partial x} &= \frac{d\hat x}{\sqrt{\text{var} + \epsilon}}
    \end{aligned}
    $$

    In training m and v depend on x: the two mean terms are their contributions; in evaluation the
    running statistics are constants. The state gets no gradient: it is not trained.
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
    r"""Group normalisation: per example, over the spatial axes and the C/groups channels of each
    group (groups are contiguous blocks of channels).

    **Arguments:**

    - `groups`: how many groups the C channels split into (C must be a multiple).
    - `eps`: added to the variance.

    **Returns:** a Layer with params `{"scale": (C,), "bias": (C,)}` for x `(batch, ..., C)`. No state:
    the statistics are the example's own, in training and evaluation.

    With x viewed as (batch, S, groups, C/groups), S the spatial positions, and the means
    $\langle \cdot \rangle$ per example and group over S and C/groups (S C/groups entries):

    $$
    \hat x = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}}, \qquad y = \text{scale}\, \hat x + \text{bias}
    $$

    Backward, with $d\hat x = dy\, \text{scale}$ and the parameters' sums over batch and space:

    $$
    \frac{\partial L}{\partial \text{scale}} = \sum dy\, \hat x, \qquad
    \frac{\partial L}{\partial \text{bias}} = \sum dy, \qquad
    \frac{\partial L}{\partial x} = \frac{d\hat x - \langle d\hat x \rangle
        - \hat x \langle d\hat x\, \hat x \rangle}{\sqrt{\sigma^2 + \epsilon}}
    $$
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
