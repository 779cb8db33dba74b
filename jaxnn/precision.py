"""Mixed precision: a model computed in bfloat16 (or float16) around float32 parameters.

    fast = nn.mixed_precision(model, "bfloat16")

The parameters (and so the optimizer's state), the model's state and the output stay in float32,
the loss is computed from float32 logits; every matmul and convolution inside runs on `compute`
copies of the parameters and inputs. The hand backward is the model's own, run on the cast
cotangent; its parameter gradients come back cast to float32 (the cast is the identity map in the
chain rule, so its derivative is a cast back).
"""

import jax
import jax.numpy as jnp

from .core import Layer, call_forward, wrapper_layer
from .errors import InputError, InputTypeError

__all__ = ["mixed_precision", "PRECISIONS"]

PRECISIONS = ("float32", "bfloat16", "float16")
"""The compute precisions `mixed_precision` takes (also as "fp32", "bf16", "fp16")."""
ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _cast(tree, dtype):
    """Every floating array of tree cast to dtype; integer arrays (token ids, counters) untouched."""

    def cast(a):
        return a.astype(dtype) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a

    return jax.tree_util.tree_map(cast, tree)


def mixed_precision(model: Layer, compute: str = "bfloat16") -> Layer:
    """The model computed in a lower precision around its float32 parameters.

    **Arguments:**

    - `model`: any Layer.
    - `compute`: "bfloat16" (or "bf16"), "float16" (or "fp16"); "float32" returns the model itself.

    **Returns:** a Layer with the model's parameters and state, in their own dtype (float32); its
    output is float32. Inside, every op runs on `compute` copies of the parameters and inputs.
    """
    if not isinstance(model, Layer):
        raise InputTypeError(f"mixed_precision: expected a jaxnn Layer, got {type(model).__name__}")
    compute = ALIASES.get(compute, compute)
    if compute not in PRECISIONS:
        raise InputError(f"mixed_precision: compute must be one of {PRECISIONS}, got {compute!r}")
    if compute == "float32":
        return model
    dtype = jnp.dtype(compute)

    def forward(params, x, key=None, state=None, train=None):
        inner_state = None if state is None else _cast(state, dtype)
        y, residuals, new_state = call_forward(
            model, _cast(params, dtype), _cast(x, dtype), key, inner_state, train
        )
        if state is not None:
            new_state = jax.tree_util.tree_map(lambda new, old: new.astype(old.dtype), new_state, state)
        return y.astype(jnp.float32), (residuals, params), new_state  # params: their dtypes, for backward

    def backward(residuals, dy):
        inner, params = residuals
        dparams, dx = model.backward(inner, dy.astype(dtype))
        dparams = jax.tree_util.tree_map(lambda g, p: g.astype(p.dtype), dparams, params)
        return dparams, _cast(dx, jnp.float32)

    # the parameters are the model's own, in their own dtype: so are its init and state
    return wrapper_layer(model, f"mixed_precision({model.name}, {compute})", forward, backward)
