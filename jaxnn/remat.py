"""Recomputation by hand: a layer whose backward reruns its forward instead of keeping its residuals.

    # residuals: the block's input only
    block = nn.remat(nn.models.transformer_block(128, 4))

A layer's forward keeps what its backward needs (activations, attention weights, normalised inputs):
for a stack of blocks at a long context, most of a training step's memory. `remat(layer)` keeps only
the layer's parameters and input (and key and state); its backward runs the layer's forward again
to get the residuals back, then the layer's own backward. One more forward per step buys memory that
no longer grows with the layer's insides: the hand-rule counterpart of `jax.checkpoint`.

The derivative is the layer's own, unchanged: the residuals are recomputed from the same inputs by
the same function, so backward(residuals, dy) is the same number.

Inside one jitted program XLA would see the rerun as a copy of the first forward and merge the
two (common-subexpression elimination), keeping the residuals alive after all; XLA's CPU compiler
does so even through `jax.lax.optimization_barrier`, the guard `jax.checkpoint` relies on (the
remat benchmark page shows `jax.checkpoint` saving no memory on the CPU). The rerun is therefore
computed inside a conditional whose two branches are both the rerun: XLA does not merge across a
conditional's branches, and the predicate, read from dy, is no constant XLA could fold away, so the
rerun also waits for dy, in the backward pass. (Under `jax.vmap` the predicate is batched, the
conditional becomes a select, and the rerun may merge with the forward again: per-example
gradients save no memory.)
"""

import jax
import jax.numpy as jnp

from .core import Layer, call_forward, wrapper_layer
from .errors import InputTypeError

__all__ = ["remat"]


def remat(layer: Layer) -> Layer:
    """The layer, recomputed in its backward pass instead of storing its residuals.

    **Arguments:**

    - `layer`: any Layer (a transformer block, a whole stage of a network).

    **Returns:** a Layer with the same init, parameters, state and output; its residuals are its
    inputs, and its backward reruns `layer.forward` before `layer.backward` (one more forward pass,
    the memory of the layer's residuals saved).
    """
    if not isinstance(layer, Layer):
        raise InputTypeError(f"remat: expected a jaxnn Layer, got {type(layer).__name__}")

    def forward(params, x, key=None, state=None, train=None):
        y, _, new_state = call_forward(layer, params, x, key, state, train)
        return y, (params, x, key, state, train), new_state

    def backward(residuals, dy):
        params, x, key, state, train = residuals

        def rerun(args):
            params, x, key, state = args
            return call_forward(layer, params, x, key, state, train)[1]

        first = jax.tree_util.tree_leaves(dy)[0].ravel()[0]
        inner = jax.lax.cond(jnp.isfinite(first), rerun, rerun, (params, x, key, state))
        return layer.backward(inner, dy)

    return wrapper_layer(layer, f"remat({layer.name})", forward, backward)
