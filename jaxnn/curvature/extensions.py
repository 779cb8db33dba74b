r"""Each layer's extension of its backward pass: from what reaches its output, the quantities of its
parameters, one example (and one factor column) at a time.

The backward pass of a layer with parameters $\theta$ sums over the batch:
$\partial L/\partial\theta = \sum_n J_n^\top dy_n$, where $J_n = \partial y_n / \partial \theta$ is
example $n$'s Jacobian and $dy_n$ what reaches its output. Every quantity here keeps the sum apart.
With $dy_n$ the gradient of the mean loss (it carries $1/N$), $g_n = J_n^\top dy_n$ is the gradient
of $l_n / N$, and

$$
\begin{aligned}
\texttt{batch\_grad}[n] &= g_n, & \texttt{batch\_l2}[n] &= \lVert g_n \rVert^2, \\
\texttt{sum\_grad\_squared} &= \textstyle\sum_n g_n^2, &
\texttt{variance} &= \tfrac1N \textstyle\sum_n g_n^2 - \big(\tfrac1N \sum_n g_n\big)^2.
\end{aligned}
$$

With the columns $s_{nc}$ of a symmetric factor of the loss's Hessian carried back to the layer's
output (for the mean loss $\sum_c s_{nc} s_{nc}^\top = J_{\text{out}}^\top H_n J_{\text{out}} / N$,
`loss_factors`), the diagonal of the generalized Gauss-Newton matrix
$G = \sum_n J_n^\top \big(\sum_c s_{nc} s_{nc}^\top\big) J_n$ is

$$
\texttt{diag\_ggn} = \sum_n \sum_c \big(J_n^\top s_{nc}\big)^2,
$$

and with signed columns (the Hessian's residual terms, `sweep`) the diagonal of the Hessian.

**Layers that are linear in patches** (Dense, Conv2D). Such a layer computes, at each output
position $t$ of example $n$, $y_{n,t,o} = \sum_k a_{n,t,k} W_{k,o} + b_o$: a Dense layer has one
position and $a = x$; a sequence has one per step; a convolution's patches $a_{n,t}$ are the
$(k_h, k_w, c_\text{in})$ windows of the padded image under output pixel $t$ (im2col), and $W$ is
its kernel reshaped to $(k_h k_w c_\text{in}, c_\text{out})$. Then $J_n^\top dy_n$ is a sum over
positions,

$$
\frac{\partial l_n}{\partial W_{k,o}} = \sum_t a_{n,t,k}\, dy_{n,t,o}, \qquad
\frac{\partial l_n}{\partial b_o} = \sum_t dy_{n,t,o},
$$

and the quantities follow. With one position the squares factor, and nothing of size $N \times P$
is ever made (Dangel, Kunstner & Hennig 2020, BackPACK), with $a^2$ element-wise:

$$
\lVert g_n(W) \rVert^2 = \lVert a_n \rVert^2 \lVert dy_n \rVert^2, \qquad
\sum_n g_n(W)^2 = (a^2)^\top (dy^2), \qquad
\texttt{diag\_ggn}(W)_{k,o} = \sum_n a_{n,k}^2 \sum_c s_{n,c,o}^2.
$$

With several positions, each example's (and column's) gradient is made first, then squared.

The Kronecker factors (K-FAC, Martens & Grosse 2015; for convolutions KFC, Grosse & Martens
2016) approximate the GGN block of $W$ by $A \otimes G$, with $A$ of size $K \times K$ and $G$ of
size $O \times O$ (from the columns of the mean loss), and $G_b = G$:

$$
A = \frac1N \sum_n \sum_t a_{n,t}\, a_{n,t}^\top, \qquad
G = \sum_n \sum_c \Big(\sum_t s_{n,c,t}\Big) \Big(\sum_t s_{n,c,t}\Big)^\top.
$$

For one example at one position, $A \otimes G$ is exactly the GGN block of $W$ in jaxnn's
row-major $(K, O)$ layout: $\partial y_o / \partial W_{k,o'} = a_k [o = o']$, so
$G_\text{GGN}[(k, o), (l, p)] = a_k a_l G_{o,p}$.

**Any other layer with parameters** (PReLU, BatchNorm in evaluation mode, a layer the user wrote):
each example's gradient comes from the layer's own backward on a batch of that one example,
mapped over the batch (and the columns) with `jax.vmap`. It is marked "vmap" in the result.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ..core import Layer, call_forward
from ..windows import taps

PATCH_KINDS = ("Dense", "Conv2D")
"""The layers whose extension is written out here (linear in patches)."""


# --- linear in patches -------------------------------------------------------------------------------


def patches(layer: Layer, x: jax.Array) -> jax.Array:
    """The layer's input as patches a (batch, positions, K), so that y = a W + b at each position.

    Dense: x (batch, n_in) is one position; x (batch, ..., n_in) one per leading index.
    Conv2D: the (kh, kw, c_in) window under each output pixel, row-major over the output.
    """
    n, config = x.shape[0], layer.config or {}
    if config.get("kind") == "Dense":
        return x.reshape(n, -1, x.shape[-1])
    (kh, kw), (sh, sw) = config["kernel_size"], config["stride"]
    (lo_h, hi_h), (lo_w, hi_w) = jax.lax.padtype_to_pads(x.shape[1:3], (kh, kw), (sh, sw), config["padding"])
    xp = jnp.pad(x, ((0, 0), (lo_h, hi_h), (lo_w, hi_w), (0, 0)))
    ho, wo = (xp.shape[1] - kh) // sh + 1, (xp.shape[2] - kw) // sw + 1
    views = [view for _, _, view in taps(xp, (kh, kw), (sh, sw), (ho, wo))]  # row-major over (i, j)
    return jnp.stack(views, axis=3).reshape(n, ho * wo, kh * kw * x.shape[-1])


def _positions(d: jax.Array, lead: int) -> jax.Array:
    """An output-side array (lead axes..., positions..., O) as (lead axes..., T, O)."""
    return d.reshape(d.shape[:lead] + (-1, d.shape[-1]))


def _as_params(params: dict, w: jax.Array, b: jax.Array, lead: tuple) -> dict:
    """{"w", "b"} with the kernel reshaped from (lead..., K, O) to (lead..., *w.shape)."""
    return {"w": w.reshape(lead + params["w"].shape), "b": b}


def patch_first_order(params: dict, grads: dict, a: jax.Array, dy: jax.Array, which: set) -> dict:
    """batch_grad, batch_l2, sum_grad_squared, variance of {"w", "b"} (those in `which`), from the
    patches a (N, T, K), dy (N, T, O) the gradient of the mean loss at the layer's output, and
    grads the layer's gradient. With several positions, "grads" holds the gradient anew, as the
    sum of the examples' (the layer's own then goes unused, and is never computed under jit)."""
    n, t = a.shape[:2]
    out: dict = {}
    batch = None
    if "batch_grad" in which or t > 1:  # with several positions every other quantity starts here
        if t == 1:  # an outer product per example, written out (XLA's batched matmul is slower)
            batch = {"w": a[:, 0, :, None] * dy[:, 0, None, :], "b": dy[:, 0]}
        else:
            batch = {"w": jnp.einsum("ntk,nto->nko", a, dy), "b": dy.sum(1)}
        out["batch_grad"] = _as_params(params, batch["w"], batch["b"], (n,))
        if t > 1:
            grads = out["grads"] = _as_params(params, batch["w"].sum(0), batch["b"].sum(0), ())
    if "batch_l2" in which:
        if batch is None:  # ||a_n dy_n^T||^2 = ||a_n||^2 ||dy_n||^2
            w_l2 = jnp.sum(a[:, 0] ** 2, 1) * jnp.sum(dy[:, 0] ** 2, 1)
        else:
            w_l2 = jnp.sum(batch["w"] ** 2, (1, 2))
        out["batch_l2"] = {"w": w_l2, "b": jnp.sum(dy.sum(1) ** 2, 1)}
    if "sum_grad_squared" in which or "variance" in which:
        if batch is None:  # sum_n (a_n dy_n^T)^2 = (a^2)^T (dy^2)
            w_sq = (a[:, 0] ** 2).T @ dy[:, 0] ** 2
        else:
            w_sq = jnp.sum(batch["w"] ** 2, 0)
        squares = _as_params(params, w_sq, jnp.sum(dy.sum(1) ** 2, 0), ())
        out["sum_grad_squared"] = squares
        if "variance" in which:  # the mean gradient is the layer's own gradient over N
            out["variance"] = jax.tree_util.tree_map(lambda sq, g: sq / n - (g / n) ** 2, squares, grads)
    return {name: value for name, value in out.items() if name in which}


def patch_diagonal(params: dict, a: jax.Array, s: jax.Array, signs: jax.Array | None) -> dict:
    """sum_n sum_c sign_nc (J_n^T s_nc)^2 for {"w", "b"}, from patches a (N, T, K) and columns
    s (N, C, T, O); signs (N, C), or None for all +1."""
    weight = jnp.ones(s.shape[:2], s.dtype) if signs is None else signs
    summed = s.sum(2)  # the bias sees the sum over positions
    b = jnp.einsum("nco,nc->o", summed**2, weight)
    if a.shape[1] == 1:  # one position: sum_n a_nk^2 (sum_c sign_nc s_nco^2)
        w = (a[:, 0] ** 2).T @ jnp.einsum("nco,nc->no", s[:, :, 0] ** 2, weight)
    else:
        n, c, t, o = s.shape  # one batched matmul per example: (K x T) (T x C O)
        by_position = s.transpose(0, 2, 1, 3).reshape(n, t, c * o)
        per_column = jnp.einsum("ntk,ntm->nkm", a, by_position).reshape(n, -1, c, o)
        w = jnp.einsum("nkco,nc->ko", per_column**2, weight)
    return _as_params(params, w, b, ())


def patch_kronecker(a: jax.Array, s: jax.Array) -> dict:
    """{"A", "G", "G_b"} from patches a (N, T, K) and mean-loss columns s (N, C, T, O)."""
    columns = s.sum(2).reshape(-1, s.shape[-1])  # (N C, O)
    rows = a.reshape(-1, a.shape[-1])  # (N T, K)
    g = columns.T @ columns
    return {"A": rows.T @ rows / a.shape[0], "G": g, "G_b": g}


# --- any other layer: its own backward, one example at a time ------------------------------------------


def per_example_columns(
    layer: Layer, params: Any, x: jax.Array, state: Any, train: Any, columns: jax.Array
) -> Any:
    """J_n^T s_nc for every example n and column c, from the layer's own forward and backward on a
    batch of one example: params' structure, each leaf (N, C, *leaf)."""

    def one(x1, columns1):
        _, residuals, _ = call_forward(layer, params, x1[None], None, state, train)
        return jax.vmap(lambda c: layer.backward(residuals, c[None])[0])(columns1)

    return jax.vmap(one)(x, columns)


def vmap_first_order(per_column: Callable, which: set) -> dict:
    """The first-order quantities from `per_column(columns)`, given dy as one column per example."""
    batch = jax.tree_util.tree_map(lambda g: g[:, 0], per_column())
    n = jax.tree_util.tree_leaves(batch)[0].shape[0]
    squares = jax.tree_util.tree_map(lambda g: jnp.sum(g**2, 0), batch)
    out = {
        "batch_grad": batch,
        "batch_l2": jax.tree_util.tree_map(lambda g: jnp.sum(g**2, tuple(range(1, g.ndim))), batch),
        "sum_grad_squared": squares,
        "variance": jax.tree_util.tree_map(lambda sq, g: sq / n - (g.sum(0) / n) ** 2, squares, batch),
    }
    return {name: value for name, value in out.items() if name in which}


def vmap_diagonal(per_column: jax.Array, signs: jax.Array | None) -> Any:
    """sum_n sum_c sign_nc g_nc^2 from per-column gradients (params' structure, leaves (N, C, ...))."""

    def diagonal(g):
        weight = jnp.ones(g.shape[:2], g.dtype) if signs is None else signs
        return jnp.einsum("nc...,nc->...", g**2, weight)

    return jax.tree_util.tree_map(diagonal, per_column)
