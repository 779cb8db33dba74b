"""The same quantities the autodiff way, for comparison: `jax.vmap` of `jax.grad` for each
example's gradient, per-example Jacobians (`jax.jacrev`) against the loss's Hessian (`jax.hessian`)
for the GGN's diagonal, and `jax.hessian` of the flattened parameters for the Hessian's. No hand
rule is used; the cost grows with the batch (N gradients) or with the parameters (P x P)."""

from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from ..core import Layer
from ..errors import InputError
from .loss_factors import loss_curvature, mean_loss_columns, sampled_key

HESSIAN_PARAMS_LIMIT = 4096
"""The most parameters whose Hessian the autodiff way makes (it holds P x P numbers)."""


def run(
    model: Layer, loss: Any, which: set, params: Any, x: Any, y: Any, key: Any, state: Any, train: Any
) -> tuple[Any, Any, Any, Any, dict]:
    """(value, outputs, new_state, grads, extra), as `sweep.run` gives them."""
    if which & {"kflr", "kfac"}:
        raise InputError("curvature: kflr and kfac have no autodiff form here; use mode='manual'")
    if model.stochastic and train:
        raise InputError("curvature: mode='autodiff' maps over single examples; Dropout needs train=False")
    n = x.shape[0]

    def outputs(p, xs):
        out = model.apply(p, xs, key=key, state=state, train=train)
        return out if state is None else out[0]

    def one_loss(p, x1, y1):  # l_n: the mean over a batch of one example
        return loss(outputs(p, x1[None]), y1[None])

    def objective(p):  # one forward pass gives the value, the outputs and the new state
        out = model.apply(p, x, key=key, state=state, train=train)
        out, new_state = (out, None) if state is None else out
        return loss(out, y), (out, new_state)

    (value, (out, new_state)), grads = jax.value_and_grad(objective, has_aux=True)(params)
    extra: dict = {}
    if which & {"batch_grad", "batch_l2", "sum_grad_squared", "variance"}:
        batch = jax.vmap(jax.grad(one_loss), in_axes=(None, 0, 0))(params, x, y)
        batch = jax.tree_util.tree_map(lambda g: g / n, batch)
        extra["batch_grad"] = batch
        extra["batch_l2"] = jax.tree_util.tree_map(lambda g: jnp.sum(g**2, tuple(range(1, g.ndim))), batch)
        extra["sum_grad_squared"] = jax.tree_util.tree_map(lambda g: jnp.sum(g**2, 0), batch)
        extra["variance"] = jax.tree_util.tree_map(
            lambda sq, g: sq / n - (g / n) ** 2, extra["sum_grad_squared"], grads
        )
    if which & {"diag_ggn", "diag_ggn_mc"}:
        jacobians = jax.vmap(jax.jacrev(lambda p, x1: outputs(p, x1[None])[0]), in_axes=(None, 0))(params, x)
        d = out[0].size
        flat = jax.tree_util.tree_map(lambda j: j.reshape(n, d, -1), jacobians)
        if "diag_ggn" in which:
            hessians = jax.vmap(jax.hessian(lambda z1, y1: loss(z1[None], y1[None])))(out, y).reshape(n, d, d)
            diag = jax.tree_util.tree_map(lambda j: jnp.einsum("ndp,nde,nep->p", j, hessians, j), flat)
            extra["diag_ggn"] = jax.tree_util.tree_map(lambda v, p: (v / n).reshape(p.shape), diag, params)
        if "diag_ggn_mc" in which:
            sampled = mean_loss_columns(loss_curvature(loss).sample(out, sampled_key(key, "diag_ggn_mc")))
            s = sampled.reshape(n, d)
            diag = jax.tree_util.tree_map(lambda j: jnp.sum(jnp.einsum("nd,ndp->np", s, j) ** 2, 0), flat)
            extra["diag_ggn_mc"] = jax.tree_util.tree_map(lambda v, p: v.reshape(p.shape), diag, params)
    if "diag_hessian" in which:
        flat_params, unravel = ravel_pytree(params)
        if flat_params.size > HESSIAN_PARAMS_LIMIT:
            raise InputError(
                f"curvature: mode='autodiff' makes the whole Hessian for diag_hessian ({flat_params.size}^2 "
                f"numbers; at most {HESSIAN_PARAMS_LIMIT} parameters); use mode='manual'"
            )
        hessian = jax.hessian(lambda f: loss(outputs(unravel(f), x), y))(flat_params)
        extra["diag_hessian"] = unravel(jnp.diagonal(hessian))
    extra = {name: value for name, value in extra.items() if name in which}
    return value, out, new_state, grads, extra
