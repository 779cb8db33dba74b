"""K-FAC as an optax transformation: the hand-derived Kronecker factors put to use.

K-FAC (Martens & Grosse 2015; convolutions: Grosse & Martens 2016) preconditions the gradient with
a block-diagonal approximation of the Fisher (here the GGN) of the mean loss, one block per layer,
each a Kronecker product kron(A, G) of the layer's input second moment A and the second moment G
of what reaches its output (`value_and_grad_with(..., "kfac")`). For a Dense or Conv2D kernel W
held as (K, O), (A kron G) vec(X) = vec(A X G), so the step inverts two small matrices, not one
of K O x K O:

    Delta_W = -(A + pi sqrt(lambda) I)^-1  dL/dW  (G + sqrt(lambda)/pi I)^-1

The damping lambda is split between the factors by the pi-rule, pi^2 = (tr(A)/K) / (tr(G)/O),
which keeps the two added multiples of I in proportion to each factor's size. A bias's block is
G itself: Delta_b = -(G + lambda I)^-1 dL/db. A parameter without factors (PReLU's slope,
BatchNorm's scale and shift, a layer the sweep handles through `jax.vmap`) is preconditioned by
its diagonal: Delta = -dL/dtheta / (diag_ggn_mc + lambda).

Each step: the factors (and the diagonal) enter an exponential moving average, weight `ema` on
the past; every `inverse_every` steps the averages are decomposed, A = U_A diag(s_A) U_A^T and
G = U_G diag(s_G) U_G^T, so that any damping is applied in that basis for free:

    (A + a I)^-1 X (G + g I)^-1 = U_A [(U_A^T X U_G) / ((s_A + a)(s_G + g)^T)] U_G^T

The update is delta = alpha Delta + mu delta_0 (delta_0 the previous update). Given, alpha is the
learning rate and mu the momentum. Left to the optimiser (learning_rate=None), they minimise the
quadratic model M(delta) = g^T delta + (1/2) delta^T (F + lambda I) delta over (alpha, mu), with
F the exact GGN of the batch applied to Delta and delta_0 (two GGN-vector products):

    [Delta^T C Delta    Delta^T C delta_0  ] [alpha]     [g^T Delta  ]
    [delta_0^T C Delta  delta_0^T C delta_0] [mu   ] = - [g^T delta_0],    C = F + lambda I

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

NEEDS = ("kfac", "diag_ggn_mc")
"""The quantities of `value_and_grad_with` each K-FAC step reads: the factors, and the diagonal
for parameters without them."""


class KFACState(NamedTuple):
    """K-FAC's state, one pytree.

    **Fields:**

    - `count`: the steps taken.
    - `factors`: the moving averages of {"A", "G"} per Dense or Conv2D layer, None elsewhere
      (aligned with params, as `value_and_grad_with`'s "kfac").
    - `diagonal`: the moving average of the GGN's diagonal (params' structure).
    - `eigen`: {"s_A", "U_A", "s_G", "U_G"} per layer, the decompositions of the last refresh.
    - `damping`: lambda.
    - `previous`: the last update delta_0 (params' structure).
    - `rho`: the last reduction ratio measured by the damping's adaptation (1 before the first).
    """

    count: Any
    factors: Any
    diagonal: Any
    eigen: Any
    damping: Any
    previous: Any
    rho: Any


class KFAC(optax.GradientTransformationExtraArgs):
    """A K-FAC optimiser: an optax `GradientTransformationExtraArgs` whose `update` takes the
    batch's curvature as keyword arguments (see `kfac`). `jaxnn.train`'s steps recognise it and
    compute them."""

    __slots__ = ()


def _is_block(f: Any) -> bool:
    return f is None or (isinstance(f, dict) and ("A" in f or "s_A" in f))


def _per_layer(fn: Callable, factors: Any, *trees: Any) -> Any:
    """fn(layer's factors or None, the layer's subtree of each tree...) over the layers."""
    return jax.tree_util.tree_map(fn, factors, *trees, is_leaf=_is_block)


def _dot(a: Any, b: Any) -> jax.Array:
    return sum(
        (jnp.vdot(u, v) for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))), 0.0
    )


def _has_factors(p: Any) -> bool:
    """Whether a layer's params are those of a Dense or Conv2D layer (what "kfac" gives factors)."""
    return isinstance(p, dict) and set(p) in ({"w", "b"}, {"w"}) and jnp.ndim(p["w"]) in (2, 4)


def factors_like(params: Any) -> Any:
    """Zero factors {"A": (K, K), "G": (O, O)} where `value_and_grad_with(..., "kfac")` gives them,
    None elsewhere: a kernel w of shape (..., O) has K = its size / O."""

    def one(p):
        if not _has_factors(p):
            return None
        k, o = p["w"].size // p["w"].shape[-1], p["w"].shape[-1]
        return {"A": jnp.zeros((k, k), p["w"].dtype), "G": jnp.zeros((o, o), p["w"].dtype)}

    def leaf(p):  # a layer's params: a dict (Dense's, Conv2D's, PReLU's...), an empty tuple, an array
        return isinstance(p, dict) or (isinstance(p, tuple) and not p) or not isinstance(p, (tuple, list))

    return jax.tree_util.tree_map(one, params, is_leaf=leaf)


def _check_factors(expected: Any, given: Any) -> None:
    """A model whose factors are not where the state (made from params) expects them: say which."""
    found = _per_layer(lambda f: f is not None, given)
    wanted = _per_layer(lambda f: f is not None, expected)
    if jax.tree_util.tree_structure(found) != jax.tree_util.tree_structure(
        wanted
    ) or jax.tree_util.tree_leaves(found) != jax.tree_util.tree_leaves(wanted):
        raise InputError(
            "kfac: the Kronecker factors given do not match the parameters the state was made for "
            f"(layers with factors: expected {jax.tree_util.tree_leaves(wanted)}, got "
            f"{jax.tree_util.tree_leaves(found)})"
        )


def _decompose(factors: Any) -> Any:
    def one(f):
        if f is None:
            return None
        s_a, u_a = jnp.linalg.eigh(f["A"])
        s_g, u_g = jnp.linalg.eigh(f["G"])  # clipped: round-off can leave tiny negative eigenvalues
        return {"s_A": jnp.maximum(s_a, 0.0), "U_A": u_a, "s_G": jnp.maximum(s_g, 0.0), "U_G": u_g}

    return jax.tree_util.tree_map(one, factors, is_leaf=_is_block)


def _pi(e: dict) -> jax.Array:
    """The pi-rule: sqrt((tr(A) / dim A) / (tr(G) / dim G)), 1 where a trace vanishes."""
    mean_a, mean_g = jnp.mean(e["s_A"]), jnp.mean(e["s_G"])
    ok = (mean_a > 0) & (mean_g > 0)
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, mean_a / jnp.where(ok, mean_g, 1.0), 1.0)), 1.0)


def precondition(eigen: Any, diagonal: Any, grads: Any, damping: jax.Array) -> Any:
    """-(F~ + damping)^-1 grads: each Dense or Conv2D layer by its damped Kronecker factors (the
    pi-rule), every other parameter by its damped diagonal."""

    def one(e, diag, g):
        if e is None:
            return jax.tree_util.tree_map(lambda gi, di: -gi / (di + damping), g, diag)
        pi, root = _pi(e), jnp.sqrt(damping)
        w = g["w"].reshape(e["U_A"].shape[0], e["U_G"].shape[0])  # (K, O) as the factors read it
        rotated = e["U_A"].T @ w @ e["U_G"]
        scale = jnp.outer(e["s_A"] + pi * root, e["s_G"] + root / pi)
        out = {"w": -(e["U_A"] @ (rotated / scale) @ e["U_G"].T).reshape(g["w"].shape)}
        if "b" in g:
            out["b"] = -(e["U_G"] @ ((e["U_G"].T @ g["b"]) / (e["s_G"] + damping)))
        return out

    return _per_layer(one, eigen, diagonal, grads)


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
    `update(grads, state, params, *, kfac, diag_ggn_mc, value, ggn=None, loss_at=None) ->
    (updates, state)`, where `kfac` and `diag_ggn_mc` are those of `value_and_grad_with`, `value`
    the batch's loss, `ggn(v) -> G v` the batch's GGN-vector product and `loss_at(params) -> loss`
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
            eigen=_decompose(factors),
            damping=jnp.asarray(float(damping)),  # float64 under x64
            previous=jax.tree_util.tree_map(jnp.zeros_like, params),  # its own buffers: states are donated
            rho=jnp.asarray(1.0),
        )

    def update(grads, state, params=None, *, kfac, diag_ggn_mc, value, ggn=None, loss_at=None, **_):
        if (adaptive or adapt_damping_every) and ggn is None:
            raise InputError("kfac: update needs ggn= (the batch's GGN-vector product)")
        if adapt_damping_every and (loss_at is None or params is None):
            raise InputError("kfac: adapting the damping needs params and loss_at=")
        _check_factors(state.factors, kfac)
        weight = jnp.where(state.count == 0, 0.0, ema)

        def average(old, new):
            return jax.tree_util.tree_map(lambda o, n: weight * o + (1 - weight) * n, old, new)

        new_factors = _per_layer(lambda f: None if f is None else {"A": f["A"], "G": f["G"]}, kfac)
        factors = average(state.factors, new_factors)
        diagonal = average(state.diagonal, diag_ggn_mc)
        refresh = state.count % inverse_every == 0
        eigen = jax.lax.cond(refresh, _decompose, lambda _: state.eigen, factors)
        lam = state.damping.astype(jnp.result_type(value))
        step = precondition(eigen, diagonal, grads, lam)
        delta, quadratic = _combine(step, state.previous, grads, lam, ggn, learning_rate, momentum)
        damping_, rho = state.damping, state.rho
        if adapt_damping_every:
            due = (state.count + 1) % adapt_damping_every == 0
            new_value = jax.lax.cond(due, lambda: loss_at(optax.apply_updates(params, delta)), lambda: value)
            measured = (new_value - value) / jnp.where(quadratic < 0, quadratic, -1.0)
            measured = jnp.where(quadratic < 0, measured, -1.0)  # a step the model calls uphill: grow
            factor = jnp.where(measured > 0.75, omega, jnp.where(measured < 0.25, 1 / omega, 1.0))
            damping_ = jnp.where(
                due, jnp.clip(state.damping * factor, min_damping, max_damping), state.damping
            )
            rho = jnp.where(due, measured, state.rho).astype(state.rho.dtype)
        new_state = KFACState(state.count + 1, factors, diagonal, eigen, damping_, delta, rho)
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
    products = jax.vmap(ggn)(both)  # one sweep for the two vectors: the forward pass is shared
    f_step, f_prev = (jax.tree_util.tree_map(lambda v, i=i: v[i], products) for i in (0, 1))
    ff = jnp.array(
        [[_dot(step, f_step), _dot(step, f_prev)], [_dot(previous, f_step), _dot(previous, f_prev)]]
    )
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
