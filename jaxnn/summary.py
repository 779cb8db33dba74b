"""A model's table: one row per layer with its output shape, parameter count and forward FLOPs.

    print(nn.summary(model, (28, 28, 1)))

FLOPs are XLA's own count for one example's forward pass (`cost_analysis` of the compiled layer):
a multiply-add is 2, a bias add or a ReLU one per element, and a SAME convolution counts only the
taps that fall inside the image (the padding's zeros are not multiplied).
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .core import output_shape


class Row(NamedTuple):
    name: str
    output_shape: tuple
    params: int
    flops: float


def layer_flops(layer, input_shape, dtype=jnp.float32):
    """XLA's FLOP count of layer's forward pass on one example of input_shape (evaluation mode)."""
    key = jax.random.PRNGKey(0)
    params = jax.eval_shape(lambda k: layer.init(k, tuple(input_shape))[1], key)
    state = jax.eval_shape(lambda: layer.init_state(tuple(input_shape)))
    x = jax.ShapeDtypeStruct((1,) + tuple(input_shape), dtype)

    def forward(p, s, x):
        return layer.apply(p, x, state=s, train=False)[0]

    cost = jax.jit(forward).lower(params, state, x).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float((cost or {}).get("flops", 0.0))


def rows(model, input_shape, dtype=jnp.float32):
    """The table's rows: each layer of a serial model in turn (or the model itself), then a total."""
    table, shape = [], tuple(input_shape)
    for layer in model.layers or (model,):
        params = jax.eval_shape(
            lambda k, layer=layer, shape=shape: layer.init(k, shape)[1], jax.random.PRNGKey(0)
        )
        count = sum(math.prod(p.shape) for p in jax.tree_util.tree_leaves(params))
        out = output_shape(layer, shape)
        table.append(Row(layer.name, out, count, layer_flops(layer, shape, dtype)))
        shape, dtype = out, jnp.float32  # after the first layer (an Embedding reads ints) come floats
    return table


def summary(model, input_shape, dtype=jnp.float32):
    """The table as text: layer, output shape (one example), parameters, forward FLOPs, and totals."""
    table = rows(model, input_shape, dtype)
    width = max([len(r.name) for r in table] + [5])
    lines = [f"{'layer':<{width}}  {'output shape':<16} {'params':>12} {'FLOPs':>14}"]
    lines += [
        f"{r.name:<{width}}  {str(r.output_shape):<16} {r.params:>12,} {r.flops:>14,.0f}" for r in table
    ]
    total_params, total_flops = sum(r.params for r in table), sum(r.flops for r in table)
    lines.append(f"{'total':<{width}}  {'':<16} {total_params:>12,} {total_flops:>14,.0f}")
    return "\n".join(lines)
