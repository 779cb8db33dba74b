"""Curvature by hand: one backward pass that gives, beside the gradient, each example's gradient
and the diagonal and Kronecker-factored curvature of the loss.

    from jaxnn import curvature as cv
    f = cv.value_and_grad_with(model, loss, ("batch_grad", "diag_ggn", "kflr"))
    value, grads, extra = f(params, x, y)
    # params' structure: the diagonal of the GGN of the mean loss
    extra["diag_ggn"]

For the mean loss L = (1/N) sum_n l_n, with g_n the gradient of (1/N) l_n (so sum_n g_n = grads),
the quantities are those of BackPACK (Dangel, Kunstner & Hennig, ICLR 2020) for reduction="mean":

| name | value |
| --- | --- |
| `batch_grad` | g_n, a leading batch axis on every leaf |
| `batch_l2` | ||g_n||^2, one number per example and leaf |
| `sum_grad_squared` | sum_n g_n^2 |
| `variance` | (1/N) sum_n g_n^2 - ((1/N) sum_n g_n)^2 |
| `diag_ggn` | the diagonal of the generalized Gauss-Newton matrix G = sum_n J_n^T H_n J_n / N |
| `diag_ggn_mc` | its Monte-Carlo estimate, one sampled label per example (needs `key`) |
| `diag_hessian` | the diagonal of the Hessian of L |
| `kflr` | per Dense or Conv2D layer, the Kronecker factors {"A", "G", "G_b"} of its GGN block |
| `kfac` | the same with G from one sampled column (needs `key`) |

J_n is the Jacobian of example n's output with respect to the parameters and H_n the Hessian of
l_n with respect to that output. `kflr` and `kfac` are tuples aligned with params; a layer without
parameters, and one with parameters other than Dense or Conv2D (PReLU, BatchNorm), gives None.
`f.rules` says per layer how its quantities are made: "hand" (the layer's extension is written
out), "vmap" (its own backward, one example at a time), "autodiff" (as for `Layer.rule`).

How it is derived: `sweep` (the extended backward pass), `loss_factors` (the loss's Hessian as
columns), `extensions` (each layer's rule). `sharpness` finds the Hessian's largest eigenvalue
from its products with vectors (`spectrum`, Lanczos). `mode="autodiff"` computes the same
quantities the autodiff way.
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from ..core import Layer
from ..errors import InputError, InputTypeError
from ..gradients import check_mode, value_and_grad
from ..losses import LossFn, as_loss
from . import autodiff, sweep
from .kfac_optimizer import KFAC, KFACState, kfac, needs_diagonal
from .loss_factors import loss_curvature
from .spectrum import lanczos, sharpness

__all__ = [
    "QUANTITIES",
    "value_and_grad_with",
    "ggn_vector_product",
    "ggn_inner_products",
    "hessian_vector_product",
    "sharpness",
    "lanczos",
    "kfac",
    "KFAC",
    "KFACState",
    "kfac_step_gradients",
]

QUANTITIES = (
    "batch_grad",
    "batch_l2",
    "sum_grad_squared",
    "variance",
    "diag_ggn",
    "diag_ggn_mc",
    "diag_hessian",
    "kflr",
    "kfac",
)
"""Every quantity `value_and_grad_with` computes, by name."""


def _check(model: Layer, which: Sequence[str] | str, where: str) -> set:
    if not isinstance(model, Layer):
        raise InputTypeError(f"{where}: model must be a jaxnn Layer, got {type(model).__name__}")
    names = (which,) if isinstance(which, str) else tuple(which)
    unknown = [name for name in names if name not in QUANTITIES]
    if unknown or not names:
        raise InputError(
            f"{where}: unknown quantity {unknown or names!r}; choose from {', '.join(QUANTITIES)}"
        )
    return set(names)


def value_and_grad_with(
    model: Layer,
    loss: LossFn | Callable,
    which: Sequence[str] | str,
    mode: str = "manual",
    with_outputs: bool = False,
) -> Callable[..., Any]:
    """The loss, its gradient, and the curvature quantities `which`, from one extended backward pass.

    **Arguments:**

    - `model`: a Layer: a `serial` model (nested or not) of Dense, Conv2D, MaxPool, AvgPool,
      Flatten, Dropout, BatchNorm (evaluation mode) and the activations of the table; a layer
      built with `make_layer(..., apply=f)` is handled through its own backward. Any other layer
      is an InputError that names it.
    - `loss`: `losses.softmax_cross_entropy`, `losses.mean_squared_error` or
      `losses.binary_cross_entropy` (the first-order quantities take any loss).
    - `which`: a name of `QUANTITIES`, or several.
    - `mode`: "manual" (the extended backward pass) or "autodiff" (`jax.vmap` of `jax.grad`,
      Jacobians and `jax.hessian`; no kflr or kfac): the same numbers, computed the slow way.
    - `with_outputs`: also return the model's outputs, as `nn.value_and_grad` does.

    **Returns:** `f(params, x, y, *, key=None, state=None, train=False) -> (value, grads, extra)`:
    `value` and `grads` as `nn.value_and_grad` gives them (with `state=`, value is `(loss,
    new_state)`; with `with_outputs`, `(loss, outputs)` or `(loss, outputs, new_state)`), and
    `extra[name]` for each name of `which` (see the module's table). `f.rules`, aligned with
    params, says how each layer's quantities are made. `key` serves Dropout (with `train=True`)
    and the Monte-Carlo quantities, which draw from `jax.random.fold_in(key, 1)`.
    """
    names = _check(model, which, "value_and_grad_with")
    check_mode(mode, "value_and_grad_with")
    loss = as_loss(loss, "value_and_grad_with")
    if names & sweep.SECOND_ORDER:
        loss_curvature(loss)  # refuse a loss without curvature rules now, not at the first call
    run = sweep.run if mode == "manual" else autodiff.run
    chain = sweep.leaves(model)  # refuse an unsupported layer now
    own = [leaf.layer.name for leaf in chain if leaf.layer.rule == "autodiff"]
    if "diag_hessian" in names and own and mode == "manual":
        raise InputError(
            f"value_and_grad_with: diag_hessian needs each layer's second derivative, and {own[0]} was "
            "built with make_layer(..., apply=f), which has none; diag_ggn works, and so does mode='autodiff'"
        )

    def f(params, x, y, *, key=None, state=None, train=False):
        value, out, new_state, grads, extra = run(model, loss, names, params, x, y, key, state, train)
        aux = ((out,) if with_outputs else ()) + ((new_state,) if state is not None else ())
        return ((value, *aux) if aux else value), grads, extra

    f.rules = sweep.rules(model) if mode == "manual" else "autodiff"  # type: ignore[attr-defined]
    return f


def _jvp(layer: Layer, record: sweep.Record, v_params: Any, tangent: Any) -> jax.Array:
    """J v through one layer: the transpose of its own backward pass (dy -> (dparams, dx)), which is
    linear in dy, applied to (v_params, tangent of the input)."""
    tangent = jnp.zeros_like(record.x) if tangent is None else tangent
    transposed = jax.linear_transpose(lambda dy: layer.backward(record.residuals, dy), record.y)
    return transposed((v_params, tangent))[0]


def _ggn_parts(model: Layer, loss: LossFn | Callable, where: str) -> tuple[Any, list]:
    """The loss's curvature rules and the model's chain of leaves, for the products with G."""
    _check(model, "diag_ggn", where)
    return loss_curvature(as_loss(loss, where)), sweep.leaves(model)


def ggn_vector_product(model: Layer, loss: LossFn | Callable) -> Callable[..., Any]:
    """G v, the generalized Gauss-Newton matrix of the mean loss times a vector, by hand.

    **Arguments:** `model`, `loss` as for `value_and_grad_with` (the loss one of the three with
    curvature rules).

    **Returns:** `gvp(params, x, y, v, *, state=None) -> G v`, v and G v with params' structure, in
    evaluation mode. G v = sum_n J_n^T H_n J_n v / N in three sweeps: J_n v forward (each layer's
    Jacobian-vector product is the transpose of its hand backward pass, Pearlmutter's R-operator
    for a linear map), H_n by the loss's closed-form Hessian, J_n^T back by the hand backward pass.
    """
    rules, chain = _ggn_parts(model, loss, "ggn_vector_product")

    def gvp(params, x, y, v, *, state=None):
        out, records = sweep.forward(chain, params, x, state, False)
        tangent = _output_tangent(chain, records, v)
        dy = rules.hvp(out, tangent) / out.shape[0]
        grads = params
        for leaf, record in zip(reversed(chain), reversed(records)):
            dparams, dy = leaf.layer.backward(record.residuals, dy)
            grads = sweep.put(grads, leaf.path, dparams)
        return grads

    return gvp


def _output_tangent(chain: list, records: list, v: Any) -> Any:
    """J v: the outputs' change along the parameters' direction v, layer by layer (`_jvp`)."""
    tangent = None
    for leaf, record in zip(chain, records):
        tangent = _jvp(leaf.layer, record, sweep.at(v, leaf.path), tangent)
    return tangent


def ggn_inner_products(model: Layer, loss: LossFn | Callable) -> Callable[..., Any]:
    """The k x k matrix v_i^T G v_j of a few directions, G the generalized Gauss-Newton matrix of
    the mean loss, from forward passes alone.

    **Arguments:** `model`, `loss` as for `ggn_vector_product`.

    **Returns:** `products(params, x, y, vectors, *, state=None) -> (k, k)`, `vectors` with
    params' structure and a leading axis of k directions. v_i^T G v_j = sum_n (J_n v_i)^T H_n
    (J_n v_j) / N needs each direction's J v (one forward sweep, shared by all k) and the loss's
    closed-form Hessian; no backward pass. This is what a quadratic model over a few directions
    reads (`kfac`'s learning rate and momentum).
    """
    rules, chain = _ggn_parts(model, loss, "ggn_inner_products")

    def products(params, x, y, vectors, *, state=None):
        out, records = sweep.forward(chain, params, x, state, False)
        return _inner_products(rules, chain, records, out, vectors)

    return products


def _inner_products(rules: Any, chain: list, records: list, out: jax.Array, vectors: Any) -> jax.Array:
    """v_i^T G v_j from a forward pass's records: each J v_i, then the loss's Hessian between them."""
    tangents = jax.vmap(lambda v: _output_tangent(chain, records, v))(vectors)  # (k, N, ...)
    curved = jax.vmap(lambda t: rules.hvp(out, t))(tangents)
    k = tangents.shape[0]
    return tangents.reshape(k, -1) @ curved.reshape(k, -1).T / out.shape[0]


def hessian_vector_product(model: Layer, loss: LossFn | Callable) -> Callable[..., Any]:
    """H v, the Hessian of the mean loss times a vector: Pearlmutter's R-operator (forward-mode
    differentiation, `jax.jvp`) applied to the hand-derived gradient.

    **Arguments:** `model`, `loss` as for `nn.value_and_grad`.

    **Returns:** `hvp(params, x, y, v, *, state=None) -> H v`, v and H v with params' structure, in
    evaluation mode.
    """
    _check(model, "diag_hessian", "hessian_vector_product")
    f = value_and_grad(model, loss)

    def hvp(params, x, y, v, *, state=None):
        return jax.jvp(lambda p: f(p, x, y, state=state, train=False)[1], (params,), (v,))[1]

    return hvp


def kfac_step_gradients(model: Layer, loss: LossFn | Callable) -> Callable[..., Any]:
    """What a training step hands a `KFAC` optimiser, from one extended sweep.

    **Arguments:** `model`, `loss` as for `value_and_grad_with`.

    **Returns:** `f(params, x, y, key, state=None, train=True) -> ((loss, outputs, new_state),
    grads, update_kwargs)`, where `opt.update(grads, opt_state, params, **update_kwargs)` is the
    K-FAC step: the factors (and, where needed, the diagonal) of this batch, its loss, its GGN's
    inner products and its loss at other parameters (same batch, same key).
    """
    _check(model, "kfac", "kfac_step_gradients")
    loss = as_loss(loss, "kfac_step_gradients")
    rules = loss_curvature(loss)
    sweep.leaves(model)  # refuse an unsupported layer now

    def f(params, x, y, key, state=None, train=True):
        which = {"kfac", "diag_ggn_mc"} if needs_diagonal(params) else {"kfac"}
        found = sweep.run_keeping_forward(model, loss, which, params, x, y, key, state, train)
        value, out, new_state, grads, extra, (chain, records) = found

        def loss_at(p):
            out = model.apply(p, x, key=key, state=state, train=train)
            return loss(out if state is None else out[0], y)

        kwargs = dict(
            kfac=extra["kfac"],
            diag_ggn_mc=extra.get("diag_ggn_mc"),
            value=value,
            ggn=lambda vectors: _inner_products(rules, chain, records, out, vectors),  # the same forward
            loss_at=loss_at,
        )
        return (value, out, new_state), grads, kwargs

    return f
