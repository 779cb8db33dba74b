r"""The Hessian's largest eigenvalue (the sharpness) from Hessian-vector products, by Lanczos.

Lanczos (1950) builds an orthonormal basis $v_1, \dots, v_k$ of the Krylov space
$\{v, Hv, H^2 v, \dots\}$ in which $H$ is tridiagonal. Step $j$:

$$
\begin{aligned}
w &= H v_j - \beta_{j-1} v_{j-1}, & \alpha_j &= w^\top v_j, & w &\leftarrow w - \alpha_j v_j, \\
w &\leftarrow w - V (V^\top w), & \beta_j &= \lVert w \rVert, & v_{j+1} &= w / \beta_j,
\end{aligned}
$$

the second line's projection a full reorthogonalisation (rounding keeps the basis orthonormal).
The eigenvalues of the $k \times k$ tridiagonal $T$ ($\alpha$ on the diagonal, $\beta$ beside it)
approach H's
extreme eigenvalues first, the largest after a few tens of products even for millions of
parameters; each product costs about two gradients (`hessian_vector_product`), and H itself is
never formed.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from ..core import Layer
from ..errors import InputError
from ..losses import LossFn

__all__ = ["lanczos", "sharpness"]


def lanczos(matvec: Callable[[jax.Array], jax.Array], start: jax.Array, steps: int) -> tuple[Any, Any]:
    """The largest eigenvalue of a symmetric linear map and its eigenvector, by `steps` Lanczos steps.

    **Arguments:**

    - `matvec`: v -> A v on flat vectors, A symmetric.
    - `start`: the first vector (any direction with a component along the answer: a random one).
    - `steps`: the Krylov space's dimension (at most the vectors' length).

    **Returns:** `(eigenvalue, vector)`: the largest eigenvalue of the tridiagonal T and its Ritz
    vector, of unit length.
    """
    n = start.shape[0]
    if not 1 <= steps <= n:
        raise InputError(f"lanczos: steps must lie in [1, {n}] (the vectors' length), got {steps}")
    basis = jnp.zeros((steps + 1, n), start.dtype).at[0].set(start / jnp.linalg.norm(start))

    def step(j, carry):
        basis, alphas, betas = carry
        w = matvec(basis[j]) - jnp.where(j > 0, betas[j - 1], 0.0) * basis[j - 1]
        alpha = w @ basis[j]
        w = w - alpha * basis[j]
        used = (jnp.arange(steps + 1) <= j)[:, None]  # the vectors made so far
        w = w - (basis * used).T @ ((basis * used) @ w)
        beta = jnp.linalg.norm(w)
        basis = basis.at[j + 1].set(w / jnp.where(beta > 0, beta, 1.0))
        return basis, alphas.at[j].set(alpha), betas.at[j].set(beta)

    zeros = jnp.zeros(steps, start.dtype)
    basis, alphas, betas = jax.lax.fori_loop(0, steps, step, (basis, zeros, zeros))
    tridiagonal = jnp.diag(alphas) + jnp.diag(betas[:-1], 1) + jnp.diag(betas[:-1], -1)
    values, vectors = jnp.linalg.eigh(tridiagonal)
    return values[-1], vectors[:, -1] @ basis[:steps]


def sharpness(model: Layer, loss: LossFn | Callable, steps: int = 20) -> Callable[..., Any]:
    """The largest eigenvalue of the Hessian of the mean loss with respect to the parameters.

    **Arguments:** `model`, `loss` as for `hessian_vector_product`; `steps` Lanczos steps.

    **Returns:** `f(params, x, y, key, *, state=None) -> (eigenvalue, vector)`, the vector with
    params' structure and unit length; `key` draws the start. Gradient descent with learning
    rate eta is stable on the local quadratic model only while this eigenvalue stays below 2 / eta.
    """
    from . import hessian_vector_product  # noqa: PLC0415  (the package's own function)

    hvp = hessian_vector_product(model, loss)

    def f(params, x, y, key, *, state=None):
        flat, unravel = ravel_pytree(params)
        start = jax.random.normal(key, flat.shape, flat.dtype)
        value, vector = lanczos(
            lambda v: ravel_pytree(hvp(params, x, y, unravel(v), state=state))[0], start, steps
        )
        return value, unravel(vector)

    return f
