"""A model's table: one row per layer with its output shape, parameter count, forward FLOPs and
how its backward pass is made (by hand, or by autodiff for a layer built without a hand rule).

    print(nn.summary(model, (28, 28, 1)))
    # and one training step's FLOPs
    print(nn.summary(model, (28, 28, 1), batch_size=128))

With a batch size, the table ends with the FLOPs of a training step's loss and hand gradient at that
batch (XLA's count of the compiled program) and the least time the step can take at this machine's
matmul ceiling (`jaxnn.throughput`): how far a measured step is from what the arithmetic allows.

FLOPs are XLA's own count for one example's forward pass (`cost_analysis` of the compiled layer):
a multiply-add is 2, a bias add or a ReLU one per element, and a SAME convolution counts only the
taps that fall inside the image (the padding's zeros are not multiplied).
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import throughput
from .core import Layer, init_shapes, model_input_shape, state_shapes
from .errors import InputError
from .gradients import value_and_grad
from .losses import LossFn, softmax_cross_entropy
from .renamed import removed_attribute, removed_keywords
from .types import DTypeLike, Shape

__all__ = ["summary", "rows", "layer_flops", "step_flops", "LayerRow"]


class LayerRow(NamedTuple):
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
    state = state_shapes(layer, input_shape)
    x = jax.ShapeDtypeStruct((1,) + tuple(input_shape), input_dtype)

    def forward(p, s, x):
        return layer.apply(p, x, state=s, train=False)[0]

    return throughput.program_flops(jax.jit(forward).lower(params, state, x).compile())


def step_flops(
    model: Layer,
    batch_size: int,
    loss: LossFn = softmax_cross_entropy,
    input_shape: Shape | None = None,
    input_dtype: DTypeLike = jnp.float32,
) -> float:
    """XLA's FLOP count of a training step's loss and hand gradient at `batch_size`.

    **Arguments:**

    - `model`: any Layer.
    - `batch_size`: examples per step.
    - `loss`: the loss (default softmax cross-entropy, against integer labels: one per output row).
    - `input_shape`: the shape of one example (default `model.input_shape`).
    - `input_dtype`: the dtype of the input (integer for token ids).

    **Returns:** the count for the compiled `value_and_grad(model, loss)` (the optimiser's update,
    a few FLOPs per parameter, not included); 0.0 where XLA gives none.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"step_flops: batch_size must be a positive int, got {batch_size!r}")
    shape = model_input_shape(model, input_shape, "summary")
    out_shape, params = init_shapes(model, shape)
    state = state_shapes(model, shape)
    x = jax.ShapeDtypeStruct((batch_size,) + tuple(shape), input_dtype)
    labels = jax.ShapeDtypeStruct((batch_size,) + tuple(out_shape[:-1]), jnp.int32)
    grad = value_and_grad(model, loss)
    extra = {"state": state, "train": True} if jax.tree_util.tree_leaves(state) else {}

    def step(p, x, y):
        return grad(p, x, y, jax.random.PRNGKey(0), **extra)

    return throughput.program_flops(jax.jit(step).lower(params, x, labels).compile())


@removed_keywords(dtype="input_dtype=...")
def rows(
    model: Layer, input_shape: Shape | None = None, input_dtype: DTypeLike = jnp.float32
) -> list[LayerRow]:
    """The table's rows: each layer of a serial model in turn (or the model itself).

    **Arguments:**

    - `model`: any Layer.
    - `input_shape`: the shape of one example (default `model.input_shape`).
    - `input_dtype`: the dtype of the input (integer for token ids).

    **Returns:** one LayerRow per layer.
    """
    table, shape, dtype = [], model_input_shape(model, input_shape, "summary"), input_dtype
    for layer in model.layers or (model,):
        out, params = init_shapes(layer, shape)
        count = sum(math.prod(p.shape) for p in jax.tree_util.tree_leaves(params))
        table.append(LayerRow(layer.name, out, count, layer_flops(layer, shape, dtype), layer.rule))
        shape, dtype = out, jnp.float32  # after the first layer (an Embedding reads ints) come floats
    return table


@removed_keywords(dtype="input_dtype=...")
def summary(
    model: Layer,
    input_shape: Shape | None = None,
    input_dtype: DTypeLike = jnp.float32,
    *,
    batch_size: int | None = None,
    loss: LossFn = softmax_cross_entropy,
) -> str:
    """The model's table as text.

    **Arguments:**

    - `model`: any Layer (a `serial` model gets a row per layer).
    - `input_shape`: the shape of one example (default `model.input_shape`).
    - `input_dtype`: the dtype of the input (integer for token ids).
    - `batch_size`: if given, a last line with a training step's FLOPs at this batch (`step_flops`,
      with `loss`) and the least time it can take at this machine's matmul ceiling.
    - `loss`: the training step's loss (default softmax cross-entropy).

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
    if batch_size is not None:
        flops = step_flops(model, batch_size, loss, input_shape, input_dtype)
        ceiling = throughput.matmul_ceiling()  # GFLOP/s, so flops / ceiling is in nanoseconds
        lines.append(
            f"training step at batch {batch_size} (loss and gradient): {flops / 1e9:.3g} GFLOP; at this "
            f"machine's matmul ceiling ({ceiling:.0f} GFLOP/s) at least {flops / ceiling / 1e6:.3g} ms"
        )
    return "\n".join(lines)


def __getattr__(name: str):
    """Names earlier versions had here: an error that says where they went."""
    raise removed_attribute(__name__, name, {"Row": "jaxnn.summary.LayerRow"})
