r"""The loss's curvature with respect to the model's outputs, as symmetric factors.

Each of jaxnn's losses is a mean over the batch, $L = \frac1N \sum_n l_n$, and each $l_n$ is convex
in its example's outputs $z_n$, with Hessian $H_n = \partial^2 l_n / \partial z_n^2$ written in
closed form below. The curvature sweep carries $H_n$ as the columns of a symmetric factor $S_n$,
$H_n = S_n S_n^\top$, because columns can be backpropagated through a layer's own backward pass
(its transposed Jacobian), exactly as a gradient is:

$$
\begin{aligned}
&\text{softmax cross-entropy}, \ p = \mathrm{softmax}(z_n): &
  H_n &= \mathrm{diag}(p) - p p^\top, &
  S_n[:, k] &= \sqrt{p_k}\,(e_k - p) \quad (C \text{ columns}) \\
&\text{mean squared error}, \ l_n = \lVert z_n - t_n \rVert^2: &
  H_n &= 2 I, &
  S_n &= \sqrt 2\, I \quad (D \text{ columns}) \\
&\text{binary cross-entropy}, \ s = \sigma(z_n): &
  H_n &= \mathrm{diag}(s (1 - s)), &
  S_n &= \mathrm{diag}\big(\sqrt{s (1 - s)}\big) \quad (D \text{ columns})
\end{aligned}
$$

The softmax factor checks out as
$\sum_k p_k (e_k - p)(e_k - p)^\top = \operatorname{diag}(p) - 2 p p^\top + (\sum_k p_k)\, p p^\top
= \operatorname{diag}(p) - p p^\top$. The columns of the mean loss carry its $1/N$ as $1/\sqrt N$ in
each: $\sum_n S_n S_n^\top / N$ is the Hessian of $L$ with respect to all the outputs, block by
block.

A Monte-Carlo factor has one column per example whose outer product is $H_n$ in expectation: the
gradient of $l_n$ at a label drawn from the model's own predictive distribution (Martens &
Grosse's "sampled Fisher"):

$$
\begin{aligned}
&\text{softmax cross-entropy}: & y &\sim \text{Categorical}(p), & s &= p - e_y, &
  \mathbb E[s s^\top] &= \mathrm{diag}(p) - p p^\top \\
&\text{mean squared error}: & e &\sim \mathcal N(0, I), & s &= \sqrt 2\, e, &
  \mathbb E[s s^\top] &= 2 I \\
&\text{binary cross-entropy}: & y &\sim \text{Bernoulli}(s), & s' &= s - y, &
  \mathbb E[s' s'^\top] &= \mathrm{diag}(s (1 - s))
\end{aligned}
$$
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..errors import InputError
from ..losses import LossFn
from ..types import PRNGKey


class LossCurvature(NamedTuple):
    """A loss's curvature rules, for outputs z `(batch, *out)` and their targets."""

    factor: Callable  # factor(z, target) -> S (batch, K, *out), H_n = S_n S_n^T for l_n
    sample: Callable  # sample(z, key) -> s (batch, 1, *out), E[s s^T] = H_n
    hvp: Callable  # hvp(z, u) -> H_n u_n for each example, (batch, *out)


def _flat_eye(z):
    """The identity on one example's outputs as columns: (batch, D, *out), D = prod(out)."""
    shape = z.shape[1:]
    d = math.prod(shape)
    eye = jnp.eye(d, dtype=z.dtype).reshape((d,) + shape)
    return jnp.broadcast_to(eye, (z.shape[0],) + eye.shape)


def _ce_factor(z, target):
    """S[n, :, k] = sqrt(p_k) (e_k - p): columns k along axis 1, so S[n, k, c] = sqrt(p_k) ([k = c] - p_c)."""
    p = jax.nn.softmax(z, axis=-1)
    eye = jnp.eye(z.shape[-1], dtype=z.dtype)
    return jnp.sqrt(p)[:, :, None] * (eye[None] - p[:, None, :])


def _ce_sample(z, key):
    p = jax.nn.softmax(z, axis=-1)
    y = jax.random.categorical(key, z, axis=-1)
    return (p - jax.nn.one_hot(y, z.shape[-1], dtype=z.dtype))[:, None]


def _ce_hvp(z, u):
    """(diag(p) - p p^T) u = p * u - p (p . u)."""
    p = jax.nn.softmax(z, axis=-1)
    return p * u - p * jnp.sum(p * u, axis=-1, keepdims=True)


def _mse_factor(z, target):
    return jnp.sqrt(2.0).astype(z.dtype) * _flat_eye(z)


def _mse_sample(z, key):
    return (jnp.sqrt(2.0) * jax.random.normal(key, z.shape, z.dtype))[:, None]


def _mse_hvp(z, u):
    return 2 * u


def _bce_factor(z, target):
    s = jax.nn.sigmoid(z)
    return jnp.sqrt(s * (1 - s))[:, None] * _flat_eye(z)


def _bce_sample(z, key):
    s = jax.nn.sigmoid(z)
    y = jax.random.bernoulli(key, s).astype(z.dtype)
    return (s - y)[:, None]


def _bce_hvp(z, u):
    s = jax.nn.sigmoid(z)
    return s * (1 - s) * u


LOSS_CURVATURES = {
    "softmax_cross_entropy": LossCurvature(_ce_factor, _ce_sample, _ce_hvp),
    "mean_squared_error": LossCurvature(_mse_factor, _mse_sample, _mse_hvp),
    "binary_cross_entropy": LossCurvature(_bce_factor, _bce_sample, _bce_hvp),
}
"""The losses the curvature sweep knows, by `Loss.name`."""


def loss_curvature(loss: LossFn) -> LossCurvature:
    """The curvature rules of `loss`, or an InputError naming it and the losses that have them."""
    name = getattr(loss, "name", getattr(loss, "__name__", type(loss).__name__))
    if name not in LOSS_CURVATURES:
        known = ", ".join(LOSS_CURVATURES)
        raise InputError(f"curvature: no curvature rule for the loss {name!r}; the losses with one: {known}")
    return LOSS_CURVATURES[name]


def mean_loss_columns(columns: jax.Array) -> jax.Array:
    """Per-example factor columns (batch, K, *out) scaled to the mean loss: each by 1/sqrt(N)."""
    return columns / jnp.sqrt(jnp.asarray(columns.shape[0], columns.dtype))


def sampled_key(key: PRNGKey | None, which: str) -> PRNGKey:
    """The key the Monte-Carlo quantities draw from, or an InputError saying that one is needed."""
    if key is None:
        raise InputError(f"curvature: {which} draws a sample from the model's predictions; pass key=")
    return jax.random.fold_in(key, 1)
