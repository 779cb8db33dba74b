"""Gradients two ways: by the hand rules, or by `jax.grad`; and hand rules inside `jax.grad`.

    # forward, then each layer's backward
    f = value_and_grad(model, loss, mode="manual")
    # jax.value_and_grad of loss(model.apply(...))
    f = value_and_grad(model, loss, mode="autodiff")
    value, grads = f(params, x, labels)

    # apply is a jax.custom_vjp: jax.grad/jit/vmap use the hand rules
    fast = with_hand_rules(model)

The manual path runs every layer's own backward: the hand-derived rule where the layer has one, the
pullback of `jax.vjp` where it was built without (`make_layer(..., apply=f)`, a plain function in
`serial`, a plain loss function). `layer.rule` and `loss.rule` say which.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .core import Layer, call_forward
from .errors import InputError, InputTypeError
from .losses import LossFn, as_loss

__all__ = ["value_and_grad", "with_hand_rules", "loss_with_hand_rules", "per_example_grads", "MODES"]

MODES = ("manual", "autodiff")
"""The two ways to a gradient: "manual" (the layers' own backward passes) and "autodiff" (`jax.grad`)."""


def check_mode(mode: str, where: str) -> str:
    """mode itself if it is one of MODES, else an InputError naming them."""
    if mode not in MODES:
        raise InputError(f"{where}: mode must be one of {MODES}, got {mode!r}")
    return mode


def value_and_grad(
    model: Layer, loss: LossFn | Callable[[Any, Any], Any], mode: str = "manual", with_outputs: bool = False
) -> Callable[..., Any]:
    """The loss of a model's output and its gradient with respect to the parameters.

    **Arguments:**

    - `model`: a Layer (e.g. from `serial` or `mlp`).
    - `loss`: a jaxnn Loss (e.g. `losses.softmax_cross_entropy`) or any function
      `loss(pred, labels) -> scalar` (its gradient then comes from `jax.vjp`).
    - `mode`: "manual" runs each layer's backward and the loss's: no `jax.grad` on that path, and no
      `jax.vjp` unless a layer or the loss was built without a hand rule. "autodiff" is
      `jax.value_and_grad` of `loss(model.apply(...))`.
    - `with_outputs`: if True, f also returns the model's output, handy for accuracy.

    **Returns:** `f(params, x, labels, key=None, *, state=None, train=None) -> (value, grads)`; with
    `with_outputs`, `((value, out), grads)`. Given `state=` (a model with BatchNorm needs it; use
    `train=True` to train on batch statistics) the new state comes last in the first part:
    `((value, new_state), grads)` or `((value, out, new_state), grads)`. `grads` has the structure
    of `params`.
    """
    check_mode(mode, "value_and_grad")
    if not isinstance(model, Layer):
        raise InputTypeError(f"value_and_grad: model must be a jaxnn Layer, got {type(model).__name__}")
    loss = as_loss(loss, "value_and_grad")

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


def with_hand_rules(model: Layer) -> Layer:
    """The same Layer, its `apply` a `jax.custom_vjp` that differentiates by the layers' own rules.

    **Arguments:**

    - `model`: any Layer.

    **Returns:** a Layer whose `apply` `jax.grad`, `jax.vjp`, `jit` and `vmap` differentiate with
    `model.backward` (the hand rules, and `jax.vjp` only inside layers built without one). With
    `state=`, apply returns `(y, new_state)` as usual; the state gets a zero gradient.

    Note: custom_vjp functions support reverse mode only (no `jax.jvp` / `jax.jacfwd`).
    """
    if not isinstance(model, Layer):
        raise InputTypeError(f"with_hand_rules: expected a jaxnn Layer, got {type(model).__name__}")

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


def loss_with_hand_rules(loss: LossFn | Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """A loss function that `jax.grad` differentiates with the loss's own backward.

    **Arguments:**

    - `loss`: a jaxnn Loss, or a plain function `loss(pred, target) -> scalar` (which is returned
      as it is: `jax.grad` differentiates it directly).

    **Returns:** `value(pred, target)`, a `jax.custom_vjp` using the loss's hand-derived gradient. The
    target gets no gradient (integer labels have none; float targets are treated as data).
    """
    loss = as_loss(loss, "loss_with_hand_rules")
    if loss.rule != "hand":
        return loss

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


def _zero_cotangent(x: Any) -> Any:
    dtype = jnp.result_type(x)
    if jnp.issubdtype(dtype, jnp.inexact):
        return jnp.zeros_like(x)
    return np.zeros(jnp.shape(x), dtype=jax.dtypes.float0)


def per_example_grads(
    model: Layer, loss: LossFn | Callable[[Any, Any], Any], mode: str = "manual"
) -> Callable[..., Any]:
    """Each example's own gradient, for all examples at once (`jax.vmap`).

    **Arguments:**

    - `model`, `loss`, `mode`: as for `value_and_grad`.

    **Returns:** `f(params, x, labels, key=None, *, state=None, train=None) -> (values, grads)`:
    `values` `(batch,)`, the loss of each example on a batch of one; `grads` with a leading batch
    axis on every leaf. `key` is split into one key per example (each its own Dropout mask; a model
    with Dropout and `train=True` needs it); `state` serves every example (a model with BatchNorm
    needs it). BatchNorm's training mode is refused: its batch statistics mix the examples, so an
    example's own gradient exists only in evaluation mode. Useful for differential privacy,
    influence estimates and gradient noise.
    """
    f = value_and_grad(model, loss, mode)

    def per_example(params, x, labels, key=None, *, state=None, train=None):
        if train and model.stateful:
            raise InputError(
                f"per_example_grads: {model.name} has batch statistics (BatchNorm), which mix the examples "
                "in training mode; pass train=False (the running statistics) for per-example gradients"
            )
        keys = None if key is None else jax.random.split(key, jnp.shape(x)[0])

        def one(x1, label1, key1):
            out, grads = f(params, x1[None], label1[None], key1, state=state, train=train)
            return (out if state is None else out[0]), grads

        return jax.vmap(one, in_axes=(0, 0, None if keys is None else 0))(x, labels, keys)

    return per_example
