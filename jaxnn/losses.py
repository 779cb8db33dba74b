"""Losses from logits, each with its hand-derived gradient.

A loss is called like a function and carries the custom_vjp-shaped pair:

    value = loss(logits, labels)
    value, residuals = loss.forward(logits, labels)
    # g = dL_total/d(value), 1.0 for the loss itself
    dlogits = loss.backward(residuals, g)

Every loss is a mean over the batch (the lecture's 1/N). Shapes and dtypes are checked always
(they are static under `jit`); label values are checked only outside `jit`, where they are known.
Under `jit` label values cannot be checked before running; an out-of-range integer label makes
the loss NaN (and the hand-derived gradient rows of those examples NaN), so a training loop that
watches for a non-finite loss stops on it.
"""

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, cast

import jax
import jax.numpy as jnp
import numpy as np

from .core import is_traced
from .errors import InputError, InputTypeError

__all__ = [
    "LossFn",
    "Loss",
    "as_loss",
    "is_loss",
    "softmax_cross_entropy",
    "smoothed_cross_entropy",
    "softmax_binary_cross_entropy",
    "lecture_cross_entropy",
    "binary_cross_entropy",
    "mean_squared_error",
    "sequence_cross_entropy",
    "accuracy",
    "ALL",
]


class ClassResiduals(NamedTuple):
    p: Any  # softmax probabilities (batch, classes)
    labels: Any  # integer class labels (batch,)
    smoothing: float  # the label smoothing eps (0: one-hot targets)


class LectureResiduals(NamedTuple):
    log_p: Any  # log softmax (batch, classes)
    log_not: Any  # log(1 - softmax)
    y: Any  # one-hot labels


class BinaryResiduals(NamedTuple):
    logits: Any
    targets: Any


class LossFn(Protocol):
    """What every jaxnn loss is: a function of (pred, target) carrying its rule."""

    forward: Callable[[Any, Any], tuple[Any, Any]]
    backward: Callable[[Any, Any], Any]
    name: str
    rule: str

    def __call__(self, pred: Any, target: Any, /) -> Any: ...


def Loss(forward: Callable, backward: Callable, name: str, rule: str = "hand") -> LossFn:
    """A loss: a plain function `value = loss(pred, target)` carrying `.forward`, `.backward` (the
    shape of `jax.custom_vjp`'s fwd/bwd pair), `.name` and `.rule` ("hand" or "autodiff").

    **Arguments:**

    - `forward(pred, target) -> (value, residuals)`.
    - `backward(residuals, g) -> dpred`, g the cotangent of the value (1.0 for the loss itself).
    - `name`: what reports call it.
    - `rule`: "hand" for a hand-derived backward, "autodiff" for one from `jax.vjp`.

    **Returns:** the loss, a function (so `jax.jit(loss)` just works).
    """

    def loss(pred, target):
        return forward(pred, target)[0]

    loss.forward, loss.backward, loss.name, loss.rule = forward, backward, name, rule  # type: ignore[attr-defined]
    loss.__name__ = loss.__qualname__ = name
    loss.__doc__ = f"{name}(pred, target) -> scalar.\n\n{forward.__doc__}\n{backward.__doc__}"
    return cast(LossFn, loss)


def is_loss(obj: Any) -> bool:
    """Whether `obj` is a jaxnn Loss.

    **Arguments:** `obj` anything.

    **Returns:** True for a callable with forward, backward and name.
    """
    return callable(obj) and all(hasattr(obj, a) for a in ("forward", "backward", "name"))


def as_loss(fn: Callable, where: str = "loss") -> LossFn:
    """A jaxnn Loss as it is; a plain function `fn(pred, labels) -> scalar` as a Loss whose backward
    is `jax.vjp`'s (rule "autodiff"), so that it trains on the manual path like any other.

    **Arguments:**

    - `fn`: a Loss, or a function of the model's output and the labels returning a scalar.
    - `where`: the caller's name, for the error message.

    **Returns:** a Loss.
    """
    if is_loss(fn):
        return cast(LossFn, fn)
    if not callable(fn):
        raise InputTypeError(
            f"{where}: expected a jaxnn Loss or a function (pred, labels) -> scalar, got {type(fn).__name__}"
        )

    def forward(pred, target):
        value, pullback = jax.vjp(lambda p: fn(p, target), pred)
        if jnp.shape(value) != ():
            raise InputError(f"{where}: the loss function must return a scalar, got shape {jnp.shape(value)}")
        return value, (pullback, value)

    def backward(residuals, g):
        pullback, value = residuals
        return pullback(jnp.asarray(g, jnp.result_type(value)))[0]  # the cotangent in the value's dtype

    name = getattr(fn, "__name__", "loss")
    return Loss(forward, backward, "loss" if name == "<lambda>" else name, rule="autodiff")


def _check_class_labels(name, logits, labels):
    """logits (batch, classes) and integer labels (batch,) in [0, classes)."""
    logits_shape, labels_shape = jnp.shape(logits), jnp.shape(labels)
    if len(logits_shape) != 2:
        raise InputError(f"{name}: expected logits of shape (batch, classes), got {logits_shape}")
    if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise InputTypeError(f"{name}: expected integer class labels, got dtype {jnp.result_type(labels)}")
    if labels_shape != logits_shape[:1]:
        raise InputError(
            f"{name}: batch sizes differ: logits {logits_shape} need labels of shape ({logits_shape[0]},), "
            f"got {labels_shape}"
        )
    if not is_traced(labels):
        values = np.asarray(labels)
        classes = logits_shape[1]
        if values.size and (values.min() < 0 or values.max() >= classes):
            raise InputError(
                f"{name}: labels must lie in [0, {classes}) for {classes} classes, "
                f"got values from {values.min()} to {values.max()}"
            )


def _check_same_shape(name, pred, target):
    if jnp.shape(pred) != jnp.shape(target):
        raise InputError(
            f"{name}: prediction and target shapes differ: {jnp.shape(pred)} vs {jnp.shape(target)}"
        )
    if jnp.ndim(pred) < 1:
        raise InputError(f"{name}: expected a batch axis, got a scalar")


def _one_hot(labels, classes, dtype):
    """One-hot rows; a label outside [0, classes) gets a row of NaN (see the module docstring)."""
    valid = (labels >= 0) & (labels < classes)
    onehot = (labels[:, None] == jnp.arange(classes)).astype(dtype)
    return jnp.where(valid[:, None], onehot, jnp.nan)


def _shifted_logsumexp(logits):
    """z = logits minus each row's max, and logsumexp(z) per row (keepdims): never overflows.

    The shift cancels in log softmax, so no convention is needed at a tied max: whichever way jax.grad
    splits the max's gradient among the ties, that gradient is 0 up to rounding."""
    z = logits - jnp.max(logits, axis=1, keepdims=True)
    return z, jnp.log(jnp.sum(jnp.exp(z), axis=1, keepdims=True))


# --- softmax cross-entropy ------------------------------------------------------------------


def _cross_entropy(name, logits, labels, smoothing=0.0):
    """-(1/N) sum_i sum_c q_ic log softmax(z_i)_c for targets q (one-hot, or smoothed), with the
    residuals that the backward needs."""
    _check_class_labels(name, logits, labels)
    z, lse = _shifted_logsumexp(logits)
    log_p = z - lse
    target = _one_hot(labels, logits.shape[1], logits.dtype)
    if smoothing:
        target = (1 - smoothing) * target + smoothing / logits.shape[1]
    value = -jnp.sum(target * log_p) / logits.shape[0]
    return value, ClassResiduals(jnp.exp(log_p), labels, smoothing)


def _sce_forward(logits, labels):
    """L = (1/N) sum_i [ logsumexp(z_i) - z_i[y_i] ],  z = logits with the row max subtracted."""
    return _cross_entropy("softmax_cross_entropy", logits, labels)


def _sce_backward(residuals, g):
    """dL/dz_i = g (softmax(z_i) - q_i) / N, q_i the target row: onehot(y_i), or its smoothed
    version (1 - eps) onehot(y_i) + eps / C (each sums to 1).

    p - q is written as p - eps / C with 1 - eps taken off each row's label entry (a scatter), not
    as a one-hot matrix subtracted: the same numbers, in a form XLA's CPU backend fuses better into
    a whole network's gradient (the own-loop benchmark page compares it with plain JAX). A label
    outside [0, C) gives its row NaN, as the forward's value."""
    p, labels, smoothing = residuals
    classes = p.shape[1]
    valid = (labels >= 0) & (labels < classes)
    rows = jnp.arange(p.shape[0])
    p_minus_q = (p - smoothing / classes).at[rows, labels].add(smoothing - 1.0)
    return (g / p.shape[0]) * jnp.where(valid[:, None], p_minus_q, jnp.nan)


softmax_cross_entropy = Loss(_sce_forward, _sce_backward, "softmax_cross_entropy")
r"""`softmax_cross_entropy(logits, labels) -> scalar`: softmax cross-entropy from logits z
`(batch, classes)` and integer labels y `(batch,)`, the mean over the batch, and its hand gradient:

$$
L = \frac{1}{N} \sum_i \Big[\log \sum_c e^{z_{ic}} - z_{i y_i}\Big], \qquad
\frac{\partial L}{\partial z_i} = \frac{\operatorname{softmax}(z_i) - \operatorname{onehot}(y_i)}{N}
$$
"""


def smoothed_cross_entropy(smoothing: float = 0.1) -> LossFn:
    """Softmax cross-entropy against label-smoothed targets (Szegedy et al., 2016).

    **Arguments:**

    - `smoothing`: eps in [0, 1): the target for class c is q_c = (1 - eps) [c = y] + eps / C
      rather than the one-hot [c = y]; 0 is softmax_cross_entropy itself.

    **Returns:** a Loss taking logits `(batch, classes)` and integer labels `(batch,)`, the mean over
    the batch; its hand gradient is (softmax(z_i) - q_i) / N.
    """
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0 <= smoothing < 1:
        raise InputError(f"smoothed_cross_entropy: smoothing must lie in [0, 1), got {smoothing!r}")
    name = f"smoothed_cross_entropy({smoothing:g})"

    def forward(logits, labels):
        """q_i = (1 - eps) onehot(y_i) + eps / C;   L = -(1/N) sum_i sum_c q_ic log softmax(z_i)_c."""
        return _cross_entropy(name, logits, labels, smoothing)

    return Loss(forward, _sce_backward, name)  # the same softmax - target rule


# --- the lecture's formula: binary cross-entropy of softmax outputs ---------------------------


def _lecture_forward(logits, labels):
    """The lecture's loss with out = softmax(logits) and y the one-hot labels:

        L = -(1/N) sum_i sum_c [ y_ic log(out_ic) + (1 - y_ic) log(1 - out_ic) ]

    log(out_c) = z_c - LSE(z) and log(1 - out_c) = LSE_{j != c}(z) - LSE(z), both from logits, so
    neither log ever sees a 0 even when a probability rounds to 0 or 1.
    """
    _check_class_labels("softmax_binary_cross_entropy", logits, labels)
    n, classes = logits.shape
    z, lse = _shifted_logsumexp(logits)
    log_p = z - lse
    others = jnp.where(jnp.eye(classes, dtype=bool), -jnp.inf, z[:, None, :])  # (n, c, j): z_j, j != c
    others_max = jnp.max(others, axis=2, keepdims=True)
    log_not = jnp.log(jnp.sum(jnp.exp(others - others_max), axis=2)) + others_max[..., 0] - lse
    y = _one_hot(labels, classes, logits.dtype)
    value = -jnp.sum(y * log_p + (1 - y) * log_not) / n
    return value, LectureResiduals(log_p, log_not, y)


def _lecture_backward(residuals, g):
    """With p = softmax(z), q_ck = p_k / (1 - p_c) and one-hot y:

        d log p_c / dz_k = [c = k] - p_k         d log(1 - p_c) / dz_k = [c != k] q_ck - p_k
        dL/dz_k = -(g/N) [ y_k - C p_k + sum_{c != k} (1 - y_c) q_ck ]

    q_ck is formed as exp(log p_k - log(1 - p_c)), finite for saturated logits.
    """
    log_p, log_not, y = residuals
    n, classes = log_p.shape
    q = jnp.exp(log_p[:, None, :] - log_not[:, :, None])  # (n, c, k)
    q = jnp.where(jnp.eye(classes, dtype=bool), 0, q)
    spread = jnp.einsum("nc,nck->nk", 1 - y, q)
    return -(g / n) * (y - classes * jnp.exp(log_p) + spread)


softmax_binary_cross_entropy = Loss(_lecture_forward, _lecture_backward, "softmax_binary_cross_entropy")
r"""`softmax_binary_cross_entropy(logits, labels) -> scalar`: the lecture's loss, binary
cross-entropy of every softmax output $p = \operatorname{softmax}(z)$ against the one-hot labels y,
computed from logits:

$$
L = -\frac{1}{N} \sum_i \sum_c \big[y_{ic} \log p_{ic} + (1 - y_{ic}) \log(1 - p_{ic})\big]
$$

It is softmax cross-entropy plus the wrong classes' terms $-\log(1 - p_{ic})$: both losses fall
towards 0 as p approaches the one-hot labels, with different gradients on the way.
"""
lecture_cross_entropy = softmax_binary_cross_entropy
"""Another name for softmax_binary_cross_entropy."""


# --- binary cross-entropy from logits ----------------------------------------------------------


def _bce_forward(logits, targets):
    """Targets t in [0, 1], same shape as logits z; s = logistic(z):

    L = -(1/N) sum [ t log s + (1 - t) log(1 - s) ] = (1/N) sum [ softplus(z) - t z ]
    """
    _check_same_shape("binary_cross_entropy", logits, targets)
    targets = jnp.asarray(targets, logits.dtype)
    n = logits.shape[0]
    return jnp.sum(jnp.logaddexp(logits, 0) - targets * logits) / n, BinaryResiduals(logits, targets)


def _bce_backward(residuals, g):
    """dL/dz = g (logistic(z) - t) / N."""
    logits, targets = residuals
    return (g / logits.shape[0]) * (jax.nn.sigmoid(logits) - targets)


binary_cross_entropy = Loss(_bce_forward, _bce_backward, "binary_cross_entropy")
r"""`binary_cross_entropy(logits, targets) -> scalar`: binary cross-entropy from logits z and
targets t in [0, 1] of the same shape, with its hand gradient ($\sigma$ the logistic):

$$
L = \frac{1}{N} \sum \big[\log(1 + e^{z}) - t z\big], \qquad
\frac{\partial L}{\partial z} = \frac{\sigma(z) - t}{N}
$$
"""


# --- mean squared error --------------------------------------------------------------------------


def _mse_forward(pred, target):
    """L = (1/N) sum_i ||pred_i - target_i||^2   (sum over each example's outputs, mean over the batch)."""
    _check_same_shape("mean_squared_error", pred, target)
    diff = pred - jnp.asarray(target, pred.dtype)
    return jnp.sum(diff * diff) / pred.shape[0], diff


def _mse_backward(diff, g):
    """dL/dpred = 2 g (pred - target) / N."""
    return (2 * g / diff.shape[0]) * diff


mean_squared_error = Loss(_mse_forward, _mse_backward, "mean_squared_error")
r"""`mean_squared_error(pred, target) -> scalar`: the squared error summed over each example's
outputs, the mean over the batch, and its hand gradient:

$$
L = \frac{1}{N} \sum_i \lVert \text{pred}_i - \text{target}_i \rVert^2, \qquad
\frac{\partial L}{\partial\, \text{pred}} = \frac{2\,(\text{pred} - \text{target})}{N}
$$
"""

# --- next-token cross-entropy over sequences -------------------------------------------------------


class SequenceResiduals(NamedTuple):
    inner: Any  # softmax_cross_entropy's residuals over the flattened positions
    shape: Any  # the logits' shape (batch, time, classes)


def _seq_forward(logits, labels):
    """Softmax cross-entropy at every position: logits (batch, time, classes), integer labels
    (batch, time); the mean over all batch * time positions (nats per token):

        L = -(1/(N T)) sum_{n,t} log softmax(z_nt)[y_nt]
    """
    if jnp.ndim(logits) != 3 or jnp.shape(labels) != jnp.shape(logits)[:2]:
        raise InputError(
            f"sequence_cross_entropy: expected logits (batch, time, classes) and labels (batch, time), "
            f"got {jnp.shape(logits)} and {jnp.shape(labels)}"
        )
    classes = logits.shape[-1]
    value, inner = _sce_forward(logits.reshape(-1, classes), jnp.reshape(labels, (-1,)))
    return value, SequenceResiduals(inner, logits.shape)


def _seq_backward(residuals, g):
    """softmax_cross_entropy's gradient (p - onehot) g / (N T), reshaped back to (batch, time, classes)."""
    return _sce_backward(residuals.inner, g).reshape(residuals.shape)


sequence_cross_entropy = Loss(_seq_forward, _seq_backward, "sequence_cross_entropy")
"""`sequence_cross_entropy(logits, labels) -> scalar`: softmax cross-entropy at every position,
logits `(batch, time, classes)` and integer labels `(batch, time)`, the mean over all positions
(nats per token)."""

ALL = {
    loss.name: loss
    for loss in (
        softmax_cross_entropy,
        smoothed_cross_entropy(0.1),  # the family, checked at its usual setting
        softmax_binary_cross_entropy,
        binary_cross_entropy,
        mean_squared_error,
        sequence_cross_entropy,
    )
}
"""Every loss by name, each in the gradient table of the tests (smoothed_cross_entropy at 0.1)."""


def accuracy(logits: Any, labels: Any) -> Any:
    """The fraction of rows whose largest logit is at the label.

    **Arguments:** `logits` `(batch, ..., classes)`; `labels` integers `(batch, ...)`.

    **Returns:** a scalar in [0, 1].
    """
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)
