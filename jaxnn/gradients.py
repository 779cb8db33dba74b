"""Gradients two ways: by the hand rules, or by `jax.grad`; and hand rules inside `jax.grad`.

f = value_and_grad(model, loss, mode="manual")   # hand rules only: forward, then backward
f = value_and_grad(model, loss, mode="autodiff") # jax.value_and_grad of loss(model.apply(...))
value, grads = f(params, x, labels)

fast = with_hand_rules(model)   # apply is a jax.custom_vjp: jax.grad/jit/vmap use the hand rules
"""

import jax
import jax.numpy as jnp
import numpy as np

from .core import Layer, call_forward
from .errors import InputError, InputTypeError
from .losses import is_loss

MODES = ("manual", "autodiff")


def value_and_grad(model, loss, mode="manual", with_outputs=False):
    """Return f(params, x, labels, key=None, *, state=None, train=None) -> (value, grads) for the
    loss of model's output.

    **Arguments:**
    - model: a Layer (e.g. from `serial` or `mlp`).
    - loss: a Loss (e.g. `losses.softmax_cross_entropy`).
    - mode: "manual" runs the hand-derived backward passes and nothing else (no jax.grad, vjp or
      linearize on that path); "autodiff" is `jax.value_and_grad` of `loss(model.apply(...))`.
    - with_outputs: if True, f also returns the model's output, handy for accuracy.

    What f returns: `value, grads`; with_outputs: `(value, out), grads`. Given `state=` (a model
    with BatchNorm needs it; use `train=True` to train on batch statistics), the new state comes
    last in the first part: `(value, new_state), grads` or `(value, out, new_state), grads`.
    """
    if mode not in MODES:
        raise InputError(f"value_and_grad: mode must be one of {MODES}, got {mode!r}")
    if not isinstance(model, Layer):
        raise InputTypeError(f"value_and_grad: model must be a jaxnn Layer, got {type(model).__name__}")
    if not is_loss(loss):
        raise InputTypeError(f"value_and_grad: loss must be a jaxnn Loss, got {type(loss).__name__}")

    def pack(value, out, new_state, has_state):
        parts = (value,) + ((out,) if with_outputs else ()) + ((new_state,) if has_state else ())
        return parts[0] if len(parts) == 1 else parts

    def manual(params, x, labels, key=None, *, state=None, train=None):
        out, residuals, new_state = call_forward(model, params, x, key, state, train)
        value, loss_residuals = loss.forward(out, labels)
        grads, _ = model.backward(residuals, loss.backward(loss_residuals, 1.0))
        return pack(value, out, new_state, state is not None), grads

    def autodiff(params, x, labels, key=None, *, state=None, train=None):
        def objective(p):
            out = model.apply(p, x, key=key, state=state, train=train)
            out, new_state = (out, None) if state is None else out
            return loss(out, labels), (out, new_state)

        (value, (out, new_state)), grads = jax.value_and_grad(objective, has_aux=True)(params)
        return pack(value, out, new_state, state is not None), grads

    return manual if mode == "manual" else autodiff


def with_hand_rules(model):
    """The same Layer, with `apply` wrapped in `jax.custom_vjp` so that `jax.grad`, `jax.vjp`,
    `jit` and `vmap` over any user code differentiate it with the hand-derived backward pass.
    With `state=`, apply returns (y, new_state) as usual; the state gets a zero gradient.

    Note: custom_vjp functions support reverse mode only (no `jax.jvp` / `jax.jacfwd`).
    """

    def apply(params, x, key=None, state=None, train=None):
        @jax.custom_vjp
        def f(params, x, state):
            y, _, new_state = call_forward(model, params, x, key, state, train)
            return y, new_state

        def fwd(params, x, state):
            y, residuals, new_state = call_forward(model, params, x, key, state, train)
            return (y, new_state), (residuals, state)

        def bwd(saved, cotangents):
            residuals, state = saved
            dparams, dx = model.backward(residuals, cotangents[0])
            return dparams, dx, jax.tree_util.tree_map(jnp.zeros_like, state)

        f.defvjp(fwd, bwd)
        y, new_state = f(params, x, state)
        return y if state is None else (y, new_state)

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
