"""A model's table: one row per layer with its output shape, parameter count, forward FLOPs and
how its backward pass is made (by hand, or by autodiff for a layer built without a hand rule).

    print(nn.summary(model, (28, 28, 1)))

FLOPs are XLA's own count for one example's forward pass (`cost_analysis` of the compiled layer):
a multiply-add is 2, a bias add or a ReLU one per element, and a SAME convolution counts only the
taps that fall inside the image (the padding's zeros are not multiplied).
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .core import Layer, init_shapes, model_input_shape
from .renamed import removed_keywords
from .types import DTypeLike, Shape

__all__ = ["summary", "rows", "layer_flops", "Row"]


class Row(NamedTuple):
    """One layer of the table."""

    name: str
    output_shape: Shape
    params: int
    flops: float
    rule: str  # "hand", "autodiff" or "mixed" (see Layer.rule)


@removed_keywords(dtype="input_dtype=...")
def layer_flops(layer: Layer, input_shape: Shape, input_dtype: DTypeLike = jnp.float32) -> float:
    """XLA's FLOP count of one example's forward pass through `layer`, in evaluation mode.

    **Arguments:**

    - `layer`: any Layer.
    - `input_shape`: the shape of one example.
    - `input_dtype`: the dtype of the input (integer for token ids).

    **Returns:** the count (0.0 where XLA gives none).
    """
    params = init_shapes(layer, input_shape)[1]
    state = jax.eval_shape(lambda: layer.init_state(tuple(input_shape)))
    x = jax.ShapeDtypeStruct((1,) + tuple(input_shape), input_dtype)

    def forward(p, s, x):
        return layer.apply(p, x, state=s, train=False)[0]

    cost = jax.jit(forward).lower(params, state, x).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float((cost or {}).get("flops", 0.0))


def _shape_of(model: Layer, input_shape: Shape | None) -> Shape:
    return model_input_shape(model, input_shape, "summary")


@removed_keywords(dtype="input_dtype=...")
def rows(model: Layer, input_shape: Shape | None = None, input_dtype: DTypeLike = jnp.float32) -> list[Row]:
    """The table's rows: each layer of a serial model in turn (or the model itself).

    **Arguments:**

    - `model`: any Layer.
    - `input_shape`: the shape of one example (default `model.input_shape`).
    - `input_dtype`: the dtype of the input (integer for token ids).

    **Returns:** one Row per layer.
    """
    table, shape, dtype = [], _shape_of(model, input_shape), input_dtype
    for layer in model.layers or (model,):
        out, params = init_shapes(layer, shape)
        count = sum(math.prod(p.shape) for p in jax.tree_util.tree_leaves(params))
        table.append(Row(layer.name, out, count, layer_flops(layer, shape, dtype), layer.rule))
        shape, dtype = out, jnp.float32  # after the first layer (an Embedding reads ints) come floats
    return table


@removed_keywords(dtype="input_dtype=...")
def summary(model: Layer, input_shape: Shape | None = None, input_dtype: DTypeLike = jnp.float32) -> str:
    """The model's table as text.

    **Arguments:**

    - `model`: any Layer (a `serial` model gets a row per layer).
    - `input_shape`: the shape of one example (default `model.input_shape`).
    - `input_dtype`: the dtype of the input (integer for token ids).

    **Returns:** the table: layer, output shape (one example), parameters, forward FLOPs, backward
    ("hand" or "autodiff"), and a line of totals.
    """
    table = rows(model, input_shape, input_dtype)
    width = max([len(r.name) for r in table] + [5])
    lines = [f"{'layer':<{width}}  {'output shape':<16} {'params':>12} {'FLOPs':>14}  backward"]
    lines += [
        f"{r.name:<{width}}  {str(r.output_shape):<16} {r.params:>12,} {r.flops:>14,.0f}  {r.rule}"
        for r in table
    ]
    total_params, total_flops = sum(r.params for r in table), sum(r.flops for r in table)
    lines.append(f"{'total':<{width}}  {'':<16} {total_params:>12,} {total_flops:>14,.0f}  {model.rule}")
    return "\n".join(lines)
