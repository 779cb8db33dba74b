"""Gradients two ways: by the hand rules, or by `jax.grad`; and hand rules inside `jax.grad`.

    f = value_and_grad(model, loss, mode="manual")   # hand rules only: forward, then backward
    f = value_and_grad(model, loss, mode="autodiff") # jax.value_and_grad of loss(model.apply(...))
    value, grads = f(params, x, labels)

    fast = with_hand_rules(model)   # apply is a jax.custom_vjp: jax.grad/jit/vmap use the hand rules
"""
import jax
import jax.numpy as jnp
import numpy as np

from .core import Layer
from .losses import is_loss

MODES = ("manual", "autodiff")


def value_and_grad(model, loss, mode="manual", with_outputs=False):
    """Return f(params, x, labels) -> (value, grads) for the loss of model's output.

    **Arguments:**
    - model: a Layer (e.g. from `serial` or `mlp`).
    - loss: a Loss (e.g. `losses.softmax_cross_entropy`).
    - mode: "manual" runs the hand-derived backward passes and nothing else (no jax.grad, vjp or
      linearize on that path); "autodiff" is `jax.value_and_grad` of `loss(model.apply(...))`.
    - with_outputs: if True, f returns ((value, model_output), grads), handy for accuracy.
    """
    if mode not in MODES:
        raise ValueError(f"value_and_grad: mode must be one of {MODES}, got {mode!r}")
    if not isinstance(model, Layer):
        raise TypeError(f"value_and_grad: model must be a jaxnn Layer, got {type(model).__name__}")
    if not is_loss(loss):
        raise TypeError(f"value_and_grad: loss must be a jaxnn Loss, got {type(loss).__name__}")

    def manual(params, x, labels, key=None):
        out, residuals = model.forward(params, x, key=key)
        value, loss_residuals = loss.forward(out, labels)
        dout = loss.backward(loss_residuals, 1.0)
        grads, _ = model.backward(residuals, dout)
        return ((value, out) if with_outputs else value), grads

    def objective(params, x, labels, key=None):
        out = model.apply(params, x, key=key)
        value = loss(out, labels)
        return (value, out) if with_outputs else value

    if mode == "manual":
        return manual
    return jax.value_and_grad(objective, has_aux=with_outputs)  # ((value, out), grads) with aux


def with_hand_rules(model):
    """The same Layer, with `apply` wrapped in `jax.custom_vjp` so that `jax.grad`, `jax.vjp`,
    `jit` and `vmap` over any user code differentiate it with the hand-derived backward pass.

    Note: custom_vjp functions support reverse mode only (no `jax.jvp` / `jax.jacfwd`).
    """

    def apply(params, x, key=None):
        @jax.custom_vjp
        def f(params, x):
            return model.forward(params, x, key=key)[0]

        def fwd(params, x):
            return model.forward(params, x, key=key)

        f.defvjp(fwd, model.backward)
        return f(params, x)

    return model._replace(apply=apply, name=f"with_hand_rules({model.name})")


def loss_with_hand_rules(loss):
    """A function value(pred, target), a `jax.custom_vjp` that uses the loss's hand-derived gradient.

    The target gets no gradient (integer labels have none; float targets are treated as data).
    """

    @jax.custom_vjp
    def value(pred, target):
        return loss.forward(pred, target)[0]

    def fwd(pred, target):
        v, residuals = loss.forward(pred, target)
        return v, (residuals, target)

    def bwd(saved, g):
        residuals, target = saved
        return loss.backward(residuals, g), _zero_cotangent(target)

    value.defvjp(fwd, bwd)
    return value


def _zero_cotangent(x):
    dtype = jnp.result_type(x)
    if jnp.issubdtype(dtype, jnp.inexact):
        return jnp.zeros_like(x)
    return np.zeros(jnp.shape(x), dtype=jax.dtypes.float0)


def per_example_grads(model, loss, mode="manual"):
    """f(params, x, labels) -> (values (batch,), grads with a leading batch axis on every leaf).

    Each example's gradient is that of the loss on a batch of one, computed for all examples at
    once by `jax.vmap` (useful for differential privacy, influence estimates, gradient noise).
    """
    f = value_and_grad(model, loss, mode)

    def one(params, x, label):
        return f(params, x[None], label[None])

    return jax.vmap(one, in_axes=(None, 0, 0))
