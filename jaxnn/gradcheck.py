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

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .core import Layer, call_forward
from .gradients import value_and_grad
from .losses import LossFn, as_loss
from .types import PRNGKey

__all__ = ["Report", "check_layer", "check_loss", "check_model", "compare", "rules", "relative_error"]


class Report(NamedTuple):
    """The outcome of a check.

    **Fields:**

    - `vs_autodiff`: relative error per leaf ("params['w']", "x", ...), the layers' backward vs `jax.grad`.
    - `vs_finite_diff`: the same against central finite differences.
    - `rules`: `(layer name, rule)` for each layer checked: "hand" where its backward is derived by
      hand (what the check proves), "autodiff" where it comes from `jax.vjp` (built without a rule).
    """

    vs_autodiff: dict
    vs_finite_diff: dict
    rules: tuple = ()

    @property
    def max_vs_autodiff(self):
        return max(self.vs_autodiff.values(), default=0.0)

    @property
    def max_vs_finite_diff(self):
        return max(self.vs_finite_diff.values(), default=0.0)

    @property
    def by_autodiff(self) -> list[str]:
        """The layers whose backward is jax.vjp's rather than a hand rule."""
        return [name for name, rule in self.rules if rule != "hand"]

    def assert_close(self, autodiff_tol: float = 1e-10, finite_diff_tol: float = 1e-6) -> "Report":
        """Raise AssertionError listing the leaves over a tolerance; return the report otherwise."""
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


def rules(layer: Layer) -> tuple[tuple[str, str], ...]:
    """How each layer's backward is made.

    **Arguments:** `layer` a Layer.

    **Returns:** `(name, rule)` of each layer of a serial model (or of the layer itself): "hand",
    "autodiff", or "mixed" for a nested composite holding both.
    """
    return tuple((sub.name, sub.rule) for sub in (layer.layers or (layer,)))


def relative_error(a: Any, b: Any, floor: float = 0.0) -> float:
    """The relative error ||a - b|| / max(||a||, ||b||, floor) over whole arrays, in float64.

    **Arguments:** `a`, `b` arrays of one shape; `floor` the smallest denominator.

    **Returns:** the error; 0 when all are 0.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.linalg.norm(a), np.linalg.norm(b), floor)
    return 0.0 if scale == 0 else float(np.linalg.norm(a - b) / scale)


def compare(
    scalar_fn: Callable[..., Any],
    args: tuple,
    hand_grads: tuple | Callable[..., tuple],
    *,
    names: list[str] | None = None,
    key: PRNGKey | None = None,
    eps: float = 1e-6,
    directions: int = 3,
    finite_diff: bool = True,
) -> Report:
    """Compare gradients of `scalar_fn(*args)` with `jax.grad` and with central finite differences.

    **Arguments:**

    - `scalar_fn`: a function of `args` returning a scalar.
    - `args`: its arguments (pytrees of float arrays; integer ones, such as labels, get no gradient).
    - `hand_grads`: one gradient tree per arg (None for the integer ones), or a function of `args`
      returning them: the hand rule, then compiled in one program with the references.
    - `names`: how the report calls each arg (default arg0, arg1, ...).
    - `key`: the PRNG key for the random directions.
    - `eps`: the finite-difference step h.
    - `directions`: random directions per leaf.
    - `finite_diff`: False to compare with `jax.grad` only (at kinks).

    **Returns:** a Report (call `.assert_close()` on it).
    """
    names = names or [f"arg{i}" for i in range(len(args))]
    key = jax.random.PRNGKey(0) if key is None else key
    hand_rule = hand_grads if callable(hand_grads) else (lambda *_: hand_grads)
    shapes = jax.eval_shape(hand_rule, *args) if callable(hand_grads) else hand_grads
    diff_argnums = tuple(i for i, g in enumerate(shapes) if g is not None)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
    # the random directions: for every differentiable arg and leaf, `directions` draws of that leaf
    targets, draws = [], []
    for argnum in diff_argnums:
        for i, leaf in enumerate(jax.tree_util.tree_leaves(args[argnum]) if finite_diff else []):
            dtype = jnp.result_type(leaf)
            targets.append((argnum, i))
            draws.append(
                np.stack([rng.standard_normal(np.shape(leaf)).astype(dtype) for _ in range(directions)])
            )
    hand_tree, auto, moved = _measure(scalar_fn, diff_argnums, targets, hand_rule)(args, draws, eps)
    vs_auto, vs_fd = {}, {}
    # a leaf whose true gradient is 0 (a bias that softmax ignores) is compared against a floor
    # proportional to the largest gradient of the check, not against its own rounding noise
    largest = max(
        (float(np.linalg.norm(np.asarray(g))) for g in jax.tree_util.tree_leaves(hand_tree)), default=0.0
    )
    fd = {target: (d, np.asarray(m, np.float64)) for target, d, m in zip(targets, draws, moved)}
    for argnum, auto_tree in zip(diff_argnums, auto):
        paths, hand_leaves = _leaves(hand_tree[argnum], names[argnum])
        auto_leaves = jax.tree_util.tree_leaves(auto_tree)
        arg_leaves = jax.tree_util.tree_leaves(args[argnum])
        if not (len(hand_leaves) == len(auto_leaves) == len(arg_leaves)):
            raise AssertionError(f"{names[argnum]}: hand gradient tree does not match the argument's tree")
        for i, (path, hand, auto_leaf) in enumerate(zip(paths, hand_leaves, auto_leaves)):
            if jnp.shape(hand) != jnp.shape(arg_leaves[i]):
                raise AssertionError(
                    f"{path}: gradient shape {jnp.shape(hand)} != argument shape {jnp.shape(arg_leaves[i])}"
                )
            vs_auto[path] = relative_error(hand, auto_leaf, floor=AUTODIFF_FLOOR * largest)
            if finite_diff:
                vs, values = fd[argnum, i]
                measured = (values[:, 0] - values[:, 1]) / (2 * eps)  # (f(x + h v) - f(x - h v)) / 2h
                predicted = [float(np.vdot(np.asarray(hand), v)) for v in vs]
                vs_fd[path] = relative_error(predicted, measured, floor=FINITE_DIFF_FLOOR * largest)
    return Report(vs_auto, vs_fd)


def _measure(scalar_fn, diff_argnums, targets, hand_rule):
    """One jitted program: the hand rule, jax.grad of scalar_fn, and f(x + h v), f(x - h v) for every
    direction v of every target leaf. The directions are whole-argument trees (zero outside their leaf)
    taken one after another by one loop, and the two signs are the two lanes of an inner vmap: the same
    code on each, so a direction that f does not depend on gives exactly 0 (binary step), not rounding
    noise."""

    @jax.jit
    def measure(args, draws, eps):
        hand = hand_rule(*args)
        grads = jax.grad(scalar_fn, argnums=diff_argnums)(*args)
        if not targets:
            return hand, grads, []
        counts = [len(vs) for vs in draws]
        total = sum(counts)
        # the directions as K whole-argument trees: row k is draw k in its leaf, zero elsewhere
        stacked = {}
        for argnum in diff_argnums:
            leaves, treedef = jax.tree_util.tree_flatten(args[argnum])
            rows = []
            for i, leaf in enumerate(leaves):
                parts = [
                    vs if target == (argnum, i) else jnp.zeros((n,) + jnp.shape(leaf), jnp.result_type(leaf))
                    for target, vs, n in zip(targets, draws, counts)
                ]
                rows.append(jnp.concatenate(parts) if parts else jnp.zeros((total,) + jnp.shape(leaf)))
            stacked[argnum] = jax.tree_util.tree_unflatten(treedef, rows)

        def at(direction, step):
            moved = list(args)
            for argnum, d in direction.items():
                moved[argnum] = jax.tree_util.tree_map(lambda a, v: a + step * v, args[argnum], d)
            return scalar_fn(*moved)

        steps = jnp.stack([eps, -eps]).astype(jnp.result_type(float))
        # one direction after another (lax.map): the memory of two forward passes, not of 2K
        values = jax.lax.map(lambda d: jax.vmap(lambda h: at(d, h))(steps), stacked)  # (K, 2)
        bounds = np.cumsum([0] + counts)
        return hand, grads, [values[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]

    return measure


def _normal(key: PRNGKey, shape: tuple, dtype: Any) -> np.ndarray:
    """Standard normal numbers drawn by NumPy from a JAX key (no program to compile, unlike jax.random)."""
    return (
        np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
        .standard_normal(shape)
        .astype(dtype)
    )


def _leaves(tree, prefix):
    with_paths, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [prefix + jax.tree_util.keystr(p) for p, _ in with_paths], [leaf for _, leaf in with_paths]


def check_layer(
    layer: Layer,
    params: Any,
    x: Any,
    *,
    key: PRNGKey | None = None,
    state: Any = None,
    train: bool | None = None,
    **kwargs: Any,
) -> Report:
    """Check `layer.backward` against `jax.grad` of `layer.apply` and against finite differences.

    **Arguments:**

    - `layer`, `params`, `x`: the layer, its parameters and an input batch (float64 for a meaningful check).
    - `key`: the PRNG key for dy and the directions.
    - `state`, `train`: for a layer with state; the state is held constant, as the hand rules treat it.
    - `**kwargs`: passed on to `compare` (`eps`, `directions`, `finite_diff`).

    **Returns:** a Report over the leaves of params and x; its `rules` say which layers' backward is by hand.

    The scalar checked is sum(apply(params, x) * dy) for a random dy, whose gradient is exactly
    what backward(residuals, dy) returns.
    """
    key = jax.random.PRNGKey(0) if key is None else key
    key, sub = jax.random.split(key)
    y = jax.eval_shape(lambda p, inputs: call_forward(layer, p, inputs, None, state, train)[0], params, x)
    dy = _normal(sub, y.shape, y.dtype)

    def hand_rule(p, inputs):  # compiled with the references: one program per check
        return layer.backward(call_forward(layer, p, inputs, None, state, train)[1], dy)

    def scalar(p, inputs):
        return jnp.sum(call_forward(layer, p, inputs, None, state, train)[0] * dy)

    report = compare(scalar, (params, x), hand_rule, names=["params", "x"], key=key, **kwargs)
    return report._replace(rules=rules(layer))


def check_loss(
    loss: LossFn | Callable, pred: Any, target: Any, *, key: PRNGKey | None = None, **kwargs: Any
) -> Report:
    """Check `loss.backward(residuals, g)` against `jax.grad` of the loss and finite differences.

    **Arguments:**

    - `loss`: a jaxnn Loss (or a plain loss function, whose backward is then jax.vjp's).
    - `pred`, `target`: a prediction batch (float64) and its labels or targets.
    - `key`, `**kwargs`: as for `compare`.

    **Returns:** a Report over `pred`.
    """
    loss = as_loss(loss, "check_loss")
    g = 1.7  # a cotangent other than 1 catches a forgotten factor g
    report = compare(
        lambda p: g * loss(p, target),
        (pred,),
        lambda p: (loss.backward(loss.forward(p, target)[1], g),),
        names=["pred"],
        key=key,
        **kwargs,
    )
    return report._replace(rules=((loss.name, loss.rule),))


def check_model(
    model: Layer,
    loss: LossFn | Callable,
    params: Any,
    x: Any,
    labels: Any,
    *,
    key: PRNGKey | None = None,
    state: Any = None,
    train: bool | None = None,
    **kwargs: Any,
) -> Report:
    """Check the manual gradient of loss(model(x), labels) with respect to params, end to end.

    **Arguments:**

    - `model`, `loss`: a Layer and a Loss (or plain loss function).
    - `params`, `x`, `labels`: parameters (float64), an input batch and its labels.
    - `key`: the PRNG key of the check: the random directions come from it, and a model with
      Dropout gets `fold_in(key, 1)` as its `key=` (one fixed mask, so the loss is a function of the
      parameters alone).
    - `state`, `train`: as for `model.apply`: a model with BatchNorm needs `state=`, and
      `train=True` checks the gradient through the batch statistics (the state held fixed, as in
      every hand rule); Dropout with `train=True` needs `key`.
    - `**kwargs`: as for `compare` (`eps`, `directions`, `finite_diff`).

    **Returns:** a Report over the leaves of params; its `rules` list each layer's (and the loss's) rule.
    """
    loss = as_loss(loss, "check_model")
    manual = value_and_grad(model, loss, mode="manual")
    model_key = None if key is None or not model.stochastic else jax.random.fold_in(key, 1)

    def objective(p):
        out = model.apply(p, x, key=model_key, state=state, train=train)
        return loss(out if state is None else out[0], labels)

    report = compare(
        objective,
        (params,),
        lambda p: (manual(p, x, labels, model_key, state=state, train=train)[1],),
        names=["params"],
        key=key,
        **kwargs,
    )
    return report._replace(rules=rules(model) + ((loss.name, loss.rule),))
