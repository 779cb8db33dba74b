"""Check hand-derived gradients against `jax.grad` and against central finite differences.

The finite difference is the derivative's own definition, taken from both sides:

    f'(x) ~ (f(x + h) - f(x - h)) / 2h        (error O(h^2), so use float64)

For a tensor argument we differentiate along random directions v: the hand gradient g must give
<g, v> ~ (f(x + h v) - f(x - h v)) / 2h. Errors are relative, per leaf of the parameter tree:

    rel(a, b) = ||a - b|| / max(||a||, ||b||)        (0 when both are 0)

A leaf whose gradient is 0 or nearly so is compared against a floor, a small fraction of the
largest gradient norm in the check (AUTODIFF_FLOOR, FINITE_DIFF_FLOOR): its rounding noise is then
not a 100% relative error, while a wrong rule (off by more than 1e-16, resp. 1e-9, of the largest
gradient) still fails.

Mind the kinks: ReLU-like functions at x = 0 have one-sided derivatives, so finite differences
there disagree with any rule; compare with `jax.grad` at kinks, with finite differences away from them.

    with jax.enable_x64(True):
        report = check_layer(my_layer, params, x)
    report.assert_close()          # raises with the worst leaves listed
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .core import call_forward
from .gradients import value_and_grad


class Report(NamedTuple):
    """Relative errors per leaf ("params['w']", "x", ...): hand rule vs jax.grad, vs finite differences."""

    vs_autodiff: dict
    vs_finite_diff: dict

    @property
    def max_vs_autodiff(self):
        return max(self.vs_autodiff.values(), default=0.0)

    @property
    def max_vs_finite_diff(self):
        return max(self.vs_finite_diff.values(), default=0.0)

    def assert_close(self, autodiff_tol=1e-10, finite_diff_tol=1e-6):
        bad = {k: v for k, v in self.vs_autodiff.items() if not v <= autodiff_tol}
        bad_fd = {k: v for k, v in self.vs_finite_diff.items() if not v <= finite_diff_tol}
        if bad or bad_fd:
            raise AssertionError(
                f"hand gradients disagree: vs jax.grad (tol {autodiff_tol}): {bad}; "
                f"vs finite differences (tol {finite_diff_tol}): {bad_fd}"
            )
        return self


AUTODIFF_FLOOR = 1e-6  # x the largest gradient norm: below 1e-16 of it, differences are rounding
FINITE_DIFF_FLOOR = 1e-3  # finite differences carry noise of about 1e-10 |f| (float64, h = 1e-6)


def relative_error(a, b, floor=0.0):
    """||a - b|| / max(||a||, ||b||, floor) over whole arrays, in float64 numpy; 0 if all are 0."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.linalg.norm(a), np.linalg.norm(b), floor)
    return 0.0 if scale == 0 else float(np.linalg.norm(a - b) / scale)


def compare(scalar_fn, args, hand_grads, *, names=None, key=None, eps=1e-6, directions=3, finite_diff=True):
    """Compare `hand_grads` (a tuple, one gradient tree per arg) of `scalar_fn(*args)` with
    `jax.grad` and with central finite differences along `directions` random directions per leaf.

    Integer args (labels) get no gradient: pass None for them in hand_grads.
    """
    names = names or [f"arg{i}" for i in range(len(args))]
    key = jax.random.PRNGKey(0) if key is None else key
    diff_argnums = tuple(i for i, g in enumerate(hand_grads) if g is not None)
    auto = jax.jit(jax.grad(scalar_fn, argnums=diff_argnums))(*args)  # one compiled program
    vs_auto, vs_fd = {}, {}
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
    # a leaf whose true gradient is 0 (a bias that softmax ignores) is compared against a floor
    # proportional to the largest gradient of the check, not against its own rounding noise
    largest = max(
        (float(np.linalg.norm(np.asarray(g))) for g in jax.tree_util.tree_leaves(hand_grads)), default=0.0
    )
    for argnum, auto_tree in zip(diff_argnums, auto):
        paths, hand_leaves = _leaves(hand_grads[argnum], names[argnum])
        auto_leaves = jax.tree_util.tree_leaves(auto_tree)
        arg_leaves, treedef = jax.tree_util.tree_flatten(args[argnum])
        if not (len(hand_leaves) == len(auto_leaves) == len(arg_leaves)):
            raise AssertionError(f"{names[argnum]}: hand gradient tree does not match the argument's tree")
        central = _central_difference(scalar_fn, args, argnum, treedef)
        for i, (path, hand, auto_leaf) in enumerate(zip(paths, hand_leaves, auto_leaves)):
            if jnp.shape(hand) != jnp.shape(arg_leaves[i]):
                raise AssertionError(
                    f"{path}: gradient shape {jnp.shape(hand)} != argument shape {jnp.shape(arg_leaves[i])}"
                )
            vs_auto[path] = relative_error(hand, auto_leaf, floor=AUTODIFF_FLOOR * largest)
            if finite_diff:
                predicted, measured = [], []
                for _ in range(directions):
                    v = [np.zeros(np.shape(a), jnp.result_type(a)) for a in arg_leaves]
                    v[i] = rng.standard_normal(np.shape(arg_leaves[i])).astype(jnp.result_type(arg_leaves[i]))
                    measured.append(float(central(args, v, eps)))
                    predicted.append(float(np.vdot(np.asarray(hand), v[i])))
                vs_fd[path] = relative_error(predicted, measured, floor=FINITE_DIFF_FLOOR * largest)
    return Report(vs_auto, vs_fd)


def _central_difference(scalar_fn, args, argnum, treedef):
    """(f(x + h v) - f(x - h v)) / 2h for directions v over the leaves of args[argnum]. The shifted
    f is jitted once and runs as the same program for +h and -h, so a direction that f does not
    depend on gives exactly 0 (binary step), not rounding noise."""

    @jax.jit
    def shifted(args, direction, step):
        moved = [a + step * d for a, d in zip(jax.tree_util.tree_leaves(args[argnum]), direction)]
        new_args = list(args)
        new_args[argnum] = jax.tree_util.tree_unflatten(treedef, moved)
        return scalar_fn(*new_args)

    def central(args, direction, h):
        return (float(shifted(args, direction, h)) - float(shifted(args, direction, -h))) / (2 * h)

    return central


def _leaves(tree, prefix):
    with_paths, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [prefix + jax.tree_util.keystr(p) for p, _ in with_paths], [leaf for _, leaf in with_paths]


def check_layer(layer, params, x, *, key=None, state=None, train=None, **kwargs):
    """Check layer.backward against jax.grad of layer.apply and finite differences.

    The scalar checked is sum(apply(params, x) * dy) for a random dy, whose gradient is exactly
    what backward(residuals, dy) returns. For a layer with state, pass `state=` (and `train=`):
    the state is held constant, as the hand rules treat it.
    """
    key = jax.random.PRNGKey(0) if key is None else key
    key, sub = jax.random.split(key)
    y, residuals = call_forward(layer, params, x, None, state, train)[:2]
    dy = jax.random.normal(sub, jnp.shape(y), jnp.result_type(y))
    dparams, dx = layer.backward(residuals, dy)

    def scalar(p, inputs):
        return jnp.sum(call_forward(layer, p, inputs, None, state, train)[0] * dy)

    return compare(scalar, (params, x), (dparams, dx), names=["params", "x"], key=key, **kwargs)


def check_loss(loss, pred, target, *, key=None, **kwargs):
    """Check loss.backward(residuals, g) against jax.grad of loss and finite differences."""
    value, residuals = loss.forward(pred, target)
    g = 1.7  # a cotangent other than 1 catches a forgotten factor g
    dpred = loss.backward(residuals, g)
    return compare(lambda p: g * loss(p, target), (pred,), (dpred,), names=["pred"], key=key, **kwargs)


def check_model(model, loss, params, x, labels, *, key=None, **kwargs):
    """Check the manual gradient of loss(model(x), labels) w.r.t. params end to end."""
    _, grads = value_and_grad(model, loss, mode="manual")(params, x, labels)
    return compare(
        lambda p: loss(model.apply(p, x), labels), (params,), (grads,), names=["params"], key=key, **kwargs
    )
