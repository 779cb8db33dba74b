r"""One forward pass and one extended backward pass: the gradient, and beside it the loss's
curvature carried back layer by layer as factor columns.

Backpropagation carries $\partial L/\partial y$ from the loss to each layer's output and through
the layer's own backward pass (its transposed Jacobian $J^\top$). The extended pass carries, beside
it, a set of columns per example: the symmetric factor of the loss's Hessian (`loss_factors`),
$S_n$ with $S_n S_n^\top = H_n / N$. A column goes back through a layer exactly as a gradient
does, $s \leftarrow J^\top s$, so at the output of layer $l$ the columns satisfy

$$
\sum_c s_{nc} s_{nc}^\top = J_{l,n}^\top H_n J_{l,n} / N, \qquad
J_{l,n} = \frac{\partial (\text{model output})}{\partial (\text{output of layer } l)},
$$

and the layer's extension (`extensions`) turns them into its parameters' share of the GGN.

**The Hessian.** The GGN leaves out the second derivative of the network itself. Of the layers
here only the element-wise activations have one (a Dense layer, a convolution, pooling and
BatchNorm in evaluation mode are linear, or piecewise linear, in their input, and linear in their
own parameters). For $a = f(z)$ element-wise, the Hessian of $L$ with respect to $z$ is

$$
\frac{\partial^2 L}{\partial z^2} = J^\top \frac{\partial^2 L}{\partial a^2} J
+ \mathrm{diag}\Big(f''(z) \odot \frac{\partial L}{\partial a}\Big), \qquad J = \mathrm{diag}(f'(z)),
$$

so each activation adds a diagonal term $r = f''(z) \odot \partial L/\partial a$ for each example.
It joins the columns as $\sqrt{|r_d|}\, e_d$, one per unit $d$, with the sign of $r_d$ kept beside
it; the Hessian's diagonal is then the GGN's plus $\sum_c \operatorname{sign}_c (J^\top s_c)^2$
over these signed columns (BackPACK's DiagHessian).
Rows whose f'' is 0 (ReLU and the other piecewise-linear ones) add nothing: for them the
Hessian's diagonal is the GGN's.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ..activations import PIECEWISE_LINEAR, activation_row
from ..core import Layer, call_forward, split_key
from ..errors import InputError
from . import extensions as ext
from .loss_factors import loss_curvature, mean_loss_columns, sampled_key

SUPPORTED = (
    "Dense",
    "Conv2D",
    "MaxPool",
    "AvgPool",
    "Flatten",
    "Dropout",
    "activation",
    "prelu",
    "BatchNorm",
)
"""The kinds of layer the sweep knows (and any layer the user wrote with `make_layer(..., apply=f)`)."""

HESSIAN_COLUMNS_LIMIT = 2**28
"""The most numbers the Hessian's residual columns at one activation may hold (batch x units^2)."""


class Leaf(NamedTuple):
    """One layer of the model as the sweep runs it."""

    layer: Layer
    path: tuple  # its index path in the model's params (and state)
    key: Any  # its PRNG key (Dropout), or None


class Record(NamedTuple):
    """What the forward pass keeps of one layer for the extended backward pass."""

    x: Any  # the layer's input
    y: Any  # its output
    residuals: Any
    params: Any
    state: Any


def leaves(model: Layer, key: Any = None, path: tuple = ()) -> list[Leaf]:
    """The model's layers in the order they run, `serial` models opened (their keys split as
    `serial` splits them); an InputError names any other composite or unsupported layer."""
    if model.layers:
        keys = split_key(key if model.stochastic else None, len(model.layers))
        return [leaf for (part, sub), k in zip(model.parts, keys) for leaf in leaves(part, k, path + sub)]
    kind = (model.config or {}).get("kind")
    if kind not in SUPPORTED and model.rule != "autodiff":
        raise InputError(
            f"curvature: no curvature rule for {model.name} (kind {kind!r}); the sweep knows "
            f"{', '.join(SUPPORTED)}, serial models of them, and layers built with make_layer(..., apply=f)"
        )
    return [Leaf(model, path, key)]


def at(tree: Any, path: tuple) -> Any:
    """tree[path[0]][path[1]]...; None stays None (no state)."""
    for i in path:
        if tree is None:
            return None
        tree = tree[i]
    return tree


def put(tree: Any, path: tuple, value: Any) -> Any:
    """A copy of the nested tuple `tree` with the entry at `path` replaced by `value`."""
    if not path:
        return value
    parts = list(tree)
    parts[path[0]] = put(parts[path[0]], path[1:], value)
    return tuple(parts)


def has_params(params: Any) -> bool:
    return bool(jax.tree_util.tree_leaves(params))


def forward(chain: list[Leaf], params: Any, x: Any, state: Any, train: Any) -> tuple[Any, list[Record]]:
    """Run the layers in order; return the output and each layer's Record."""
    records = []
    for leaf in chain:
        p, s = at(params, leaf.path), at(state, leaf.path) if leaf.layer.stateful else None
        if leaf.layer.stateful and train:
            raise InputError(
                f"curvature: {leaf.layer.name} uses batch statistics in training mode, which mix the "
                "examples; pass train=False (its running statistics)"
            )
        y, residuals, _ = call_forward(leaf.layer, p, x, leaf.key, s, train)
        records.append(Record(x, y, residuals, p, s))
        x = y
    return x, records


def back_columns(layer: Layer, residuals: Any, columns: jax.Array) -> jax.Array:
    """J^T s for every column s (axis 1): the layer's own backward, mapped over the columns. For
    Dense and Conv2D, whose dx reads only the weights, the columns join the batch instead (one
    batch of N C examples, their residual input tiled to match: its values go unused)."""
    if (layer.config or {}).get("kind") in ext.PATCH_KINDS:
        x, w = residuals
        n, c = columns.shape[:2]
        tiled = jnp.broadcast_to(x[:, None], (n, c) + x.shape[1:]).reshape((n * c,) + x.shape[1:])
        wide = residuals._replace(x=tiled) if hasattr(residuals, "_replace") else (tiled, w)
        dx = layer.backward(wide, columns.reshape((n * c,) + columns.shape[2:]))[1]
        return dx.reshape((n, c) + dx.shape[1:])
    return jax.vmap(lambda c: layer.backward(residuals, c)[1], in_axes=1, out_axes=1)(columns)


def residual_columns(layer: Layer, record: Record, dy: jax.Array) -> tuple[jax.Array, jax.Array] | None:
    """The Hessian's term of an element-wise activation, r = f''(z) * dL/da, as signed columns
    (sqrt(|r_d|) e_d (batch, units, *shape), sign (batch, units)); None where f'' = 0."""
    config = dict(layer.config or {})
    if config.get("kind") != "activation" or config["name"] in PIECEWISE_LINEAR:
        return None
    options = {k: v for k, v in config.items() if k not in ("kind", "name")}
    row = activation_row(config["name"], options, "curvature")
    r = (row.d2f(record.x, record.y, **options) * dy).reshape(dy.shape[0], -1)
    units = r.shape[1]
    if dy.shape[0] * units * units > HESSIAN_COLUMNS_LIMIT:
        raise InputError(
            f"curvature: diag_hessian at {layer.name} needs {dy.shape[0]} x {units}^2 numbers for its "
            f"{units} units; use diag_ggn (equal for piecewise-linear activations) or a smaller batch"
        )
    eye = jnp.eye(units, dtype=r.dtype)
    columns = (eye[None] * jnp.sqrt(jnp.abs(r))[:, None, :]).reshape((r.shape[0], units) + dy.shape[1:])
    return columns, jnp.sign(r)


class Columns(NamedTuple):
    """The factor columns the requested quantities need, at the current layer's output."""

    exact: Any  # (N, C, *shape): the loss Hessian's factor, or None
    sampled: Any  # (N, 1, *shape): one Monte-Carlo column, or None
    residual: Any  # (N, R, *shape): the Hessian's signed residual columns, or None
    signs: Any  # (N, R)

    def back(self, layer: Layer, residuals: Any) -> "Columns":
        def go(c):
            return None if c is None else back_columns(layer, residuals, c)

        return Columns(go(self.exact), go(self.sampled), go(self.residual), self.signs)

    def add_residual(self, extra: tuple[jax.Array, jax.Array] | None) -> "Columns":
        if extra is None:
            return self
        if self.residual is None:
            return self._replace(residual=extra[0], signs=extra[1])
        return self._replace(
            residual=jnp.concatenate([self.residual, extra[0]], 1),
            signs=jnp.concatenate([self.signs, extra[1]], 1),
        )


def start_columns(loss: Any, out: jax.Array, target: Any, which: set, key: Any) -> Columns:
    """The columns at the model's output, for the mean loss."""
    exact = sampled = None
    if not which & SECOND_ORDER:
        return Columns(exact, sampled, None, None)
    rules = loss_curvature(loss)
    if which & {"diag_ggn", "diag_hessian", "kflr"}:
        exact = mean_loss_columns(rules.factor(out, target))
    if which & {"diag_ggn_mc", "kfac"}:
        drawn = sorted(which & {"diag_ggn_mc", "kfac"})[0]
        sampled = mean_loss_columns(rules.sample(out, sampled_key(key, drawn)))
    return Columns(exact, sampled, None, None)


SECOND_ORDER = {"diag_ggn", "diag_ggn_mc", "diag_hessian", "kflr", "kfac"}


def extend(
    leaf: Leaf, record: Record, dy: jax.Array, grads: Any, columns: Columns, which: set, train: Any
) -> dict:
    """The requested quantities of one layer's parameters: name -> value (and "grads" where the
    extension computed the layer's gradient anew)."""
    layer, p = leaf.layer, record.params
    found: dict = {}
    diagonal: Callable[..., Any]
    kronecker: Callable[..., Any] | None = None
    if (layer.config or {}).get("kind") in ext.PATCH_KINDS:
        a = ext.patches(layer, record.x)
        found.update(ext.patch_first_order(p, grads, a, ext._positions(dy, 1), which))
        diagonal = lambda c, signs=None: ext.patch_diagonal(p, a, ext._positions(c, 2), signs)  # noqa: E731
        kronecker = lambda c: ext.patch_kronecker(a, ext._positions(c, 2))  # noqa: E731
    else:

        def per_column(c=None):
            c = dy[:, None] if c is None else c
            return ext.per_example_columns(layer, p, record.x, record.state, train, c)

        found.update(ext.vmap_first_order(per_column, which))
        diagonal = lambda c, signs=None: ext.vmap_diagonal(per_column(c), signs)  # noqa: E731
    if which & {"diag_ggn", "diag_hessian"}:
        ggn = diagonal(columns.exact)
        found["diag_ggn"] = ggn
        if "diag_hessian" in which:
            found["diag_hessian"] = ggn
            if columns.residual is not None:
                rest = diagonal(columns.residual, columns.signs)
                found["diag_hessian"] = jax.tree_util.tree_map(jnp.add, ggn, rest)
    if "diag_ggn_mc" in which:
        found["diag_ggn_mc"] = diagonal(columns.sampled)
    for name, c in (("kflr", columns.exact), ("kfac", columns.sampled)):
        if name in which:
            found[name] = None if kronecker is None else kronecker(c)
    return found


PARAMETER_FREE = ("MaxPool", "AvgPool", "Flatten", "Dropout", "activation")


def rules(model: Layer) -> Any:
    """How each layer's quantities are computed, aligned with params: "hand" (its extension is
    written out), "vmap" (its own hand backward, one example at a time), "autodiff" (its backward
    is jax.vjp's), None for a layer without parameters."""
    if model.layers:
        return tuple(rules(part) for part, _ in model.parts)
    kind = (model.config or {}).get("kind")
    if kind in ext.PATCH_KINDS:
        return "hand"
    if kind in PARAMETER_FREE:
        return None
    return "autodiff" if model.rule == "autodiff" else "vmap"


def run(
    model: Layer, loss: Any, which: set, params: Any, x: Any, y: Any, key: Any, state: Any, train: Any
) -> tuple[Any, Any, Any, Any, dict]:
    """(value, outputs, new_state, grads, extra) of one extended sweep."""
    return run_keeping_forward(model, loss, which, params, x, y, key, state, train)[:5]


def run_keeping_forward(
    model: Layer, loss: Any, which: set, params: Any, x: Any, y: Any, key: Any, state: Any, train: Any
) -> tuple[Any, Any, Any, Any, dict, tuple]:
    """`run`'s results and the forward pass it made, `(chain, records)`, for more sweeps from it."""
    chain = leaves(model, key)
    out, records = forward(chain, params, x, state, train)
    value, loss_residuals = loss.forward(out, y)
    dy = loss.backward(loss_residuals, 1.0)
    columns = start_columns(loss, out, y, which, key)
    grads, extra = params, {name: params for name in which}
    for i in reversed(range(len(chain))):
        leaf, record = chain[i], records[i]
        layer = leaf.layer
        dparams, dx = layer.backward(record.residuals, dy)
        if has_params(record.params):
            found = extend(leaf, record, dy, dparams, columns, which, train)
            grads = put(grads, leaf.path, found.get("grads", dparams))
            for name in which:
                extra[name] = put(extra[name], leaf.path, found[name])
        else:
            for name in which & {"kflr", "kfac"}:
                extra[name] = put(extra[name], leaf.path, None)
        if i > 0:
            columns = columns.back(layer, record.residuals)
            if "diag_hessian" in which:
                columns = columns.add_residual(residual_columns(layer, record, dy))
        dy = dx
    return value, out, state, grads, extra, (chain, records)
