r"""K-FAC as an optax transformation: the hand-derived Kronecker factors put to use.

K-FAC (Martens & Grosse 2015; convolutions: Grosse & Martens 2016) preconditions the gradient with
a block-diagonal approximation of the Fisher (here the GGN) of the mean loss, one block per layer,
each a Kronecker product kron(A, G) of the layer's input second moment A and the second moment G
of what reaches its output (`value_and_grad_with(..., "kfac")`). For a Dense or Conv2D kernel W
held as (K, O), (A kron G) vec(X) = vec(A X G), so the step inverts two small matrices, not one
of K O x K O:

    Delta_W = -(A + pi sqrt(lambda) I)^-1  dL/dW  (G + sqrt(lambda)/pi I)^-1

The bias is the weight of a constant input 1, appended to A as one more row and column (its
cross terms with the other inputs dropped), so that its step is Delta_b = -(G + sqrt(lambda)/pi
I)^-1 dL/db / (1 + pi sqrt(lambda)). The damping lambda is split between the factors by the
pi-rule, pi^2 = ((tr(A) + 1)/(K + 1)) / (tr(G)/O), which keeps the two added multiples of I in
proportion to each factor's size. A parameter without factors (PReLU's slope,
BatchNorm's scale and shift, a layer the sweep handles through `jax.vmap`) is preconditioned by
its diagonal: Delta = -dL/dtheta / (diag_ggn_mc + lambda).

Each step: the factors (and the diagonal) enter an exponential moving average, weight `ema` on
the past; every `inverse_every` steps the damped averages are inverted (by Cholesky), with the
damping of that step: (A + pi sqrt(lambda) I)^-1 and (G + sqrt(lambda)/pi I)^-1. Between
refreshes the damping still changes the quadratic model below.

The update is delta = alpha Delta + mu delta_0 (delta_0 the previous update). Given, alpha is the
learning rate and mu the momentum. Left to the optimiser (learning_rate=None), they minimise the
quadratic model M(delta) = g^T delta + (1/2) delta^T (F + lambda I) delta over (alpha, mu), with
F the exact GGN of the batch, of which only the four numbers below are needed (the outputs'
changes J Delta and J delta_0 by forward passes, then the loss's Hessian: `ggn_inner_products`):

$$
\begin{pmatrix} \Delta^\top C \Delta & \Delta^\top C \delta_0 \\
\delta_0^\top C \Delta & \delta_0^\top C \delta_0 \end{pmatrix}
\begin{pmatrix} \alpha \\ \mu \end{pmatrix}
= - \begin{pmatrix} g^\top \Delta \\ g^\top \delta_0 \end{pmatrix},
\qquad C = F + \lambda I
$$

With `adapt_damping_every` = T1, every T1 steps the damping follows Levenberg-Marquardt: the loss
at the new parameters is compared with the model's prediction, rho = (h(theta + delta) - h(theta))
/ (g^T delta + delta^T F delta / 2); lambda shrinks by omega = (19/20)^T1 when rho > 3/4 and grows
by 1/omega when rho < 1/4.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ..errors import InputError

__all__ = ["KFAC", "KFACState", "kfac"]


class KFACState(NamedTuple):
    """K-FAC's state, one pytree.

    **Fields:**

    - `count`: the steps taken.
    - `factors`: the moving averages of {"A", "G"} per Dense or Conv2D layer, None elsewhere
      (aligned with params, as `value_and_grad_with`'s "kfac").
    - `diagonal`: the moving average of the GGN's diagonal (params' structure).
    - `inverses`: {"A", "G", "b"} per layer, the damped factors' inverses of the last refresh.
    - `damping`: lambda.
    - `previous`: the last update delta_0 (params' structure).
    - `rho`: the last reduction ratio measured by the damping's adaptation (1 before the first).
    """

    count: Any
    factors: Any
    diagonal: Any
    inverses: Any
    damping: Any
    previous: Any
    rho: Any


class KFAC(optax.GradientTransformationExtraArgs):
    """A K-FAC optimiser: an optax `GradientTransformationExtraArgs` whose `update` takes the
    batch's curvature as keyword arguments (see `kfac`). `jaxnn.train`'s steps recognise it and
    compute them."""

    __slots__ = ()


def _is_block(f: Any) -> bool:
    return f is None or (isinstance(f, dict) and "A" in f)


def _per_layer(fn: Callable, factors: Any, *trees: Any) -> Any:
    """fn(layer's factors or None, the layer's subtree of each tree...) over the layers."""
    return jax.tree_util.tree_map(fn, factors, *trees, is_leaf=_is_block)


def _dot(a: Any, b: Any) -> Any:
    return sum(
        (jnp.vdot(u, v) for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))), 0.0
    )


def _has_factors(p: Any) -> bool:
    """Whether a layer's params are those of a Dense or Conv2D layer (what "kfac" gives factors)."""
    return isinstance(p, dict) and set(p) == {"w", "b"} and jnp.ndim(p["w"]) in (2, 4)


def _layer_params(p: Any) -> bool:
    """Whether p is one layer's params: a dict (Dense's, Conv2D's, PReLU's...), an empty tuple, an array."""
    return isinstance(p, dict) or (isinstance(p, tuple) and not p) or not isinstance(p, (tuple, list))


def needs_diagonal(params: Any) -> bool:
    """Whether some layer has parameters but no Kronecker factors (and so is preconditioned by its
    diagonal)."""
    found = jax.tree_util.tree_map(
        lambda p: bool(jax.tree_util.tree_leaves(p)) and not _has_factors(p), params, is_leaf=_layer_params
    )
    return any(jax.tree_util.tree_leaves(found))


def factors_like(params: Any) -> Any:
    """Zero factors {"A": (K, K), "G": (O, O)} where `value_and_grad_with(..., "kfac")` gives them,
    None elsewhere: a kernel w of shape (..., O) has K = its size / O."""

    def one(p):
        if not _has_factors(p):
            return None
        k, o = p["w"].size // p["w"].shape[-1], p["w"].shape[-1]
        return {"A": jnp.zeros((k, k), p["w"].dtype), "G": jnp.zeros((o, o), p["w"].dtype)}

    return jax.tree_util.tree_map(one, params, is_leaf=_layer_params)


def _check_factors(expected: Any, given: Any) -> None:
    """A model whose factors are not where the state (made from params) expects them: say which."""
    found = _per_layer(lambda f: f is not None, given)
    wanted = _per_layer(lambda f: f is not None, expected)
    if found != wanted:  # nested tuples and dicts of bools: Python compares structure and values
        raise InputError(
            "kfac: the Kronecker factors given do not match the parameters the state was made for "
            f"(layers with factors: expected {jax.tree_util.tree_leaves(wanted)}, got "
            f"{jax.tree_util.tree_leaves(found)})"
        )


def _pi(f: dict) -> jax.Array:
    """The pi-rule for the input factor with the bias's constant input 1 appended:
    sqrt(((tr(A) + 1) / (dim A + 1)) / (tr(G) / dim G)), 1 where G's trace vanishes."""
    mean_a = (jnp.trace(f["A"]) + 1) / (len(f["A"]) + 1)
    mean_g = jnp.trace(f["G"]) / len(f["G"])
    ok = mean_g > 0
    return jnp.where(ok, jnp.sqrt(mean_a / jnp.where(ok, mean_g, 1.0)), 1.0)


def _psd_inverse(m: jax.Array, shift: jax.Array) -> jax.Array:
    """(m + shift I)^-1 of a symmetric positive semi-definite m, by Cholesky."""
    eye = jnp.eye(len(m), dtype=m.dtype)
    return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(m + shift * eye), eye)


def invert(factors: Any, damping: jax.Array) -> Any:
    """Each layer's damped factors, inverted: {"A": (A + pi sqrt(d) I)^-1, "G": (G + sqrt(d)/pi I)^-1,
    "b": 1 / (1 + pi sqrt(d))} (the pi-rule splits the damping d between the two factors; "b" is
    the bias's entry of the input factor, whose input is the constant 1)."""

    def one(f):
        if f is None:
            return None
        pi, root = _pi(f), jnp.sqrt(damping)
        return {
            "A": _psd_inverse(f["A"], pi * root),
            "G": _psd_inverse(f["G"], root / pi),
            "b": 1 / (1 + pi * root),
        }

    return jax.tree_util.tree_map(one, factors, is_leaf=_is_block)


def precondition(inverses: Any, diagonal: Any, grads: Any, damping: jax.Array) -> Any:
    """-(F~ + damping)^-1 grads: each Dense or Conv2D layer by its damped Kronecker factors'
    inverses, every other parameter by its damped diagonal."""

    def one(inv, diag, g):
        if inv is None:
            return jax.tree_util.tree_map(lambda gi, di: -gi / (di + damping), g, diag)
        w = g["w"].reshape(len(inv["A"]), len(inv["G"]))  # (K, O) as the factors read it
        return {"w": -(inv["A"] @ w @ inv["G"]).reshape(g["w"].shape), "b": -inv["b"] * (inv["G"] @ g["b"])}

    return _per_layer(one, inverses, diagonal, grads)


def kfac(
    learning_rate: float | None = None,
    momentum: float | None = None,
    *,
    damping: float = 0.1,
    ema: float = 0.95,
    inverse_every: int = 5,
    adapt_damping_every: int | None = 5,
    min_damping: float = 1e-8,
    max_damping: float = 1e4,
) -> KFAC:
    """K-FAC on the hand-derived Kronecker factors (see the module's text for the mathematics).

    **Arguments:**

    - `learning_rate`, `momentum`: alpha and mu of the update delta = alpha Delta + mu delta_0;
      `learning_rate=None` chooses alpha each step by the quadratic model (and mu, unless given).
    - `damping`: the initial Tikhonov damping lambda.
    - `ema`: the moving averages' weight on the past factors.
    - `inverse_every`: steps between two decompositions of the averaged factors.
    - `adapt_damping_every`: T1 of the Levenberg-Marquardt rule, or None for a fixed damping.
    - `min_damping`, `max_damping`: the bounds of the adapted damping.

    **Returns:** a `KFAC` transformation: `init(params) -> KFACState` and
    `update(grads, state, params, *, kfac, value, diag_ggn_mc=None, ggn=None, loss_at=None) ->
    (updates, state)`, where `kfac` and `diag_ggn_mc` are those of `value_and_grad_with` (the
    diagonal needed only where a layer with parameters has no factors, `needs_diagonal`), `value`
    the batch's loss, `ggn(vectors) -> (k, k)` the batch's GGN inner products of k stacked
    directions (`ggn_inner_products`) and `loss_at(params) -> loss`
    the batch's loss at other parameters. `ggn` is needed when the learning rate is left to the
    quadratic model or the damping adapts, `loss_at` when the damping adapts. `jaxnn.train`'s
    steps pass them all.
    """
    for name, value, ok in (
        ("learning_rate", learning_rate, learning_rate is None or learning_rate > 0),
        ("momentum", momentum, momentum is None or 0 <= momentum < 1),
        ("damping", damping, damping >= 0),
        ("ema", ema, 0 <= ema < 1),
        ("inverse_every", inverse_every, isinstance(inverse_every, int) and inverse_every >= 1),
        ("adapt_damping_every", adapt_damping_every, adapt_damping_every is None or adapt_damping_every >= 1),
    ):
        if not ok:
            raise InputError(f"kfac: {name}={value!r} is out of range (see the docstring)")
    adaptive = learning_rate is None
    omega = (19 / 20) ** (adapt_damping_every or 1)

    def init(params):
        factors = factors_like(params)
        return KFACState(
            count=jnp.zeros((), jnp.int32),
            factors=factors,
            diagonal=jax.tree_util.tree_map(jnp.zeros_like, params),
            inverses=invert(factors, jnp.asarray(1.0, jnp.result_type(float))),  # replaced at step 0
            damping=jnp.asarray(damping, jnp.result_type(float)),  # strongly typed: float64 under x64
            previous=jax.tree_util.tree_map(jnp.zeros_like, params),  # its own buffers: states are donated
            rho=jnp.asarray(1.0, jnp.result_type(float)),
        )

    def update(updates, state, params=None, **extra):  # optax's extra-args form
        grads, kfac, value = updates, extra.get("kfac"), extra.get("value")
        diag_ggn_mc, ggn, loss_at = extra.get("diag_ggn_mc"), extra.get("ggn"), extra.get("loss_at")
        if kfac is None or value is None:
            raise InputError("kfac: update needs kfac= (the Kronecker factors) and value= (the loss)")
        if (adaptive or adapt_damping_every) and ggn is None:
            raise InputError("kfac: update needs ggn= (the batch's GGN inner products)")
        _check_factors(state.factors, kfac)
        weight = jnp.where(state.count == 0, 0.0, ema)

        def average(old, new):
            return jax.tree_util.tree_map(lambda o, n: weight * o + (1 - weight) * n, old, new)

        new_factors = _per_layer(lambda f: None if f is None else {"A": f["A"], "G": f["G"]}, kfac)
        factors = average(state.factors, new_factors)
        diagonal = state.diagonal if diag_ggn_mc is None else average(state.diagonal, diag_ggn_mc)
        refresh = state.count % inverse_every == 0
        lam = state.damping.astype(jnp.result_type(value))
        inverses = jax.lax.cond(refresh, lambda f: invert(f, lam), lambda _: state.inverses, factors)
        step = precondition(inverses, diagonal, grads, lam)
        modelled = ggn if adaptive or adapt_damping_every else None  # the quadratic model, when read
        delta, quadratic = _combine(step, state.previous, grads, lam, modelled, learning_rate, momentum)
        damping_, rho = state.damping, state.rho
        if adapt_damping_every:
            if loss_at is None or params is None:
                raise InputError("kfac: adapting the damping needs params and loss_at=")
            due = (state.count + 1) % adapt_damping_every == 0
            measure, start = loss_at, params  # narrowed, for the closure below
            new_value = jax.lax.cond(due, lambda: measure(optax.apply_updates(start, delta)), lambda: value)
            measured = (new_value - value) / jnp.where(quadratic < 0, quadratic, -1.0)
            measured = jnp.where(quadratic < 0, measured, -1.0)  # a step the model calls uphill: grow
            factor = jnp.where(measured > 0.75, omega, jnp.where(measured < 0.25, 1 / omega, 1.0))
            damping_ = jnp.where(
                due, jnp.clip(state.damping * factor, min_damping, max_damping), state.damping
            )
            rho = jnp.where(due, measured, state.rho).astype(state.rho.dtype)
        new_state = KFACState(state.count + 1, factors, diagonal, inverses, damping_, delta, rho)
        return delta, new_state

    return KFAC(init, update)


def _combine(step, previous, grads, lam, ggn, learning_rate, momentum):
    """(delta, the quadratic model's change g^T delta + delta^T F delta / 2), or (delta, -1) without
    a GGN-vector product (nothing to model)."""
    if ggn is None:  # the learning rate and momentum given, the damping fixed
        mu = momentum or 0.0
        return jax.tree_util.tree_map(lambda s, p: learning_rate * s + mu * p, step, previous), jnp.asarray(
            -1.0
        )
    both = jax.tree_util.tree_map(lambda s, p: jnp.stack([s, p]), step, previous)
    ff = ggn(both)  # [[Delta F Delta, Delta F delta_0], [delta_0 F Delta, delta_0 F delta_0]]
    dd = jnp.array(
        [[_dot(step, step), _dot(step, previous)], [_dot(previous, step), _dot(previous, previous)]]
    )
    b = jnp.array([_dot(grads, step), _dot(grads, previous)])
    c = ff + lam * dd
    if learning_rate is not None:
        coefficients = jnp.array([learning_rate, momentum or 0.0], c.dtype)
    elif momentum is not None:
        coefficients = jnp.array([-(b[0] + momentum * c[0, 1]) / c[0, 0], momentum], c.dtype)
    else:  # both: solve the 2 x 2 system; with no previous update (the first step), alpha alone
        det = c[0, 0] * c[1, 1] - c[0, 1] * c[1, 0]
        solvable = det > 1e-12 * c[0, 0] * c[1, 1]
        safe = jnp.where(solvable, det, 1.0)
        joint = jnp.array(
            [(-b[0] * c[1, 1] + b[1] * c[0, 1]) / safe, (-b[1] * c[0, 0] + b[0] * c[1, 0]) / safe]
        )
        coefficients = jnp.where(solvable, joint, jnp.array([-b[0] / c[0, 0], 0.0], c.dtype))
    alpha, mu = coefficients[0], coefficients[1]
    delta = jax.tree_util.tree_map(lambda s, p: alpha * s + mu * p, step, previous)
    return delta, coefficients @ b + 0.5 * coefficients @ ff @ coefficients
