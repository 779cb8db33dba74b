"""The names jaxnn's signatures use for its kinds of values.

Shapes in annotations follow jaxtyping: `Float[Array, "batch n_in"]` is a floating array whose first
axis is the batch and second the input width. Parameters, state and residuals are pytrees: nested
dicts and tuples of arrays that `jax.tree_util`, optax and checkpoints read as they are.
"""

from collections.abc import Callable
from typing import Any, TypeAlias

from jaxtyping import Array, ArrayLike, Float, Int, PyTree

__all__ = [
    "Array",
    "ArrayLike",
    "Float",
    "Int",
    "PyTree",
    "Shape",
    "Params",
    "State",
    "Residuals",
    "PRNGKey",
    "DTypeLike",
    "Scalar",
]

Shape: TypeAlias = tuple[int, ...]
"""The shape of ONE example, without the batch axis: (784,) for a flat MNIST image, (28, 28, 1) an image."""

Params: TypeAlias = Any
"""A layer's parameters: a dict of arrays (Dense: {"w", "b"}), () for none, a tuple per layer for serial."""

State: TypeAlias = Any
"""A layer's state (what it updates but does not train, e.g. BatchNorm's running statistics); () for none."""

Residuals: TypeAlias = Any
"""What a layer's forward keeps for its backward (a pytree; its contents are the layer's own affair)."""

PRNGKey: TypeAlias = Array
"""A JAX random key (jax.random.PRNGKey(seed) or jax.random.key(seed))."""

DTypeLike: TypeAlias = Any
"""A dtype or its name: jnp.float32, "float64", ..."""

Scalar: TypeAlias = Float[Array, ""]
"""A 0-dimensional floating array (a loss value)."""

InitFn: TypeAlias = Callable[..., tuple[Shape, Params]]
ApplyFn: TypeAlias = Callable[..., Any]
ForwardFn: TypeAlias = Callable[..., Any]
BackwardFn: TypeAlias = Callable[[Any, Any], tuple[Any, Any]]
