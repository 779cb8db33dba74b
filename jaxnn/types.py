"""The names jaxnn's signatures use for its kinds of values.

Arrays are `jax.Array`; their shapes are written in each docstring, batch axis first. Parameters,
state and residuals are pytrees: nested dicts and tuples of arrays that `jax.tree_util`, optax and
checkpoints read as they are.
"""

from collections.abc import Callable
from typing import Any, TypeAlias

import jax

__all__ = [
    "Array",
    "Shape",
    "Params",
    "State",
    "PRNGKey",
    "DTypeLike",
]

Array: TypeAlias = jax.Array
"""A JAX array."""

Shape: TypeAlias = tuple[int, ...]
"""The shape of ONE example, without the batch axis: (784,) for a flat MNIST image, (28, 28, 1) an image."""

Params: TypeAlias = Any
"""A layer's parameters: a dict of arrays (Dense: {"w", "b"}), () for none, a tuple per layer for serial."""

State: TypeAlias = Any
"""A layer's state (what it updates but does not train, e.g. BatchNorm's running statistics); () for none."""

PRNGKey: TypeAlias = Array
"""A JAX random key (jax.random.PRNGKey(seed) or jax.random.key(seed))."""

DTypeLike: TypeAlias = Any
"""A dtype or its name: jnp.float32, "float64", ..."""

InitFn: TypeAlias = Callable[..., tuple[Shape, Params]]
ApplyFn: TypeAlias = Callable[..., Any]
ForwardFn: TypeAlias = Callable[..., Any]
BackwardFn: TypeAlias = Callable[[Any, Any], tuple[Any, Any]]
