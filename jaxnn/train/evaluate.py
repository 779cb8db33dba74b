"""Evaluation over a whole set: the mean loss and the accuracy, in evaluation mode, batch by batch
under one `lax.scan`.

    evaluate = make_evaluate(model, loss)
    loss, accuracy = evaluate(state.params, x_test, y_test, state.model_state)
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ..core import Layer, is_traced, model_input_shape, output_shape
from ..errors import InputError
from ..losses import LossFn
from ..types import DTypeLike, Shape
from .checks import check_data, check_positive_int, classes_of
from .compile import model_compiler_options
from .step import to_inputs


def make_evaluate(
    model: Layer,
    loss: LossFn | Callable,
    input_shape: Shape | None = None,
    batch_size: int = 1000,
    flip: bool = False,
    dtype: DTypeLike = jnp.float32,
) -> Callable[..., Any]:
    """The mean loss and the accuracy over a whole set, in evaluation mode.

    **Arguments:**

    - `model`, `loss`: the Layer and the loss (a Loss or a plain function).
    - `input_shape`: the shape of one example (default `model.input_shape`).
    - `batch_size`: examples per compiled batch.
    - `flip`: test-time flip averaging for images (input_shape (H, W, C)): the model sees each
      image and its left-right mirror, and the loss and accuracy are those of log(mean of the two
      softmax outputs), logits whose softmax is that mean.
    - `dtype`: the dtype the images are scaled to (the parameters').

    **Returns:** `evaluate(params, images, labels, model_state=None) -> (mean loss, accuracy)`, with
    `train=False` (BatchNorm uses the running statistics of model_state). The arrays are checked
    first (outside jit: lengths, shapes, finiteness, label range, not empty). Whole batches run under
    one `lax.scan`; a last, partial batch runs once after it; the loss is the mean over all
    examples. It compiles with `model_compiler_options`, as `fit`'s training does;
    `evaluate.unchecked` skips the checks (for callers that checked the arrays already).
    """
    check_positive_int("batch_size", batch_size)
    input_shape = model_input_shape(model, input_shape, "make_evaluate")
    out_shape = output_shape(model, input_shape)
    classes = classes_of(out_shape)
    if flip and len(input_shape) != 3:
        raise InputError(f"flip=True needs images (H, W, C), not inputs of shape {input_shape}")

    def outputs(params, model_state, x):
        out = model.apply(params, x, state=model_state, train=False)
        return out if model_state is None else out[0]

    def totals(params, model_state, images, labels):
        x = to_inputs(images, input_shape, dtype)
        out = outputs(params, model_state, x)
        if flip:
            mirrored = outputs(params, model_state, x[:, :, ::-1])
            # log((softmax(a) + softmax(b)) / 2) from the log-softmaxes: finite where a softmax underflows
            log_p = [jax.nn.log_softmax(o.astype(jnp.float32)) for o in (out, mirrored)]
            out = jnp.logaddexp(*log_p) - jnp.log(2.0)
        if not jnp.issubdtype(labels.dtype, jnp.integer):  # targets, not class labels: no accuracy
            return loss(out, labels) * labels.shape[0], jnp.nan
        return loss(out, labels) * labels.shape[0], jnp.sum(jnp.argmax(out, 1) == labels)

    def run(params, images, labels, model_state):
        total_loss, correct = sum_over_batches(
            lambda xb, yb: totals(params, model_state, xb, yb), (images, labels), batch_size
        )
        return total_loss / images.shape[0], correct / images.shape[0]

    run = jax.jit(run, compiler_options=model_compiler_options(model, input_shape))

    def evaluate(params, images, labels, model_state=None):
        if not is_traced(images):
            check_data(images, labels, input_shape, classes, "evaluation", out_shape)
        return run(params, images, labels, model_state)

    evaluate.unchecked = run  # type: ignore[attr-defined]  # for callers that checked the arrays already
    return evaluate


def sum_over_batches(totals: Callable[..., Any], arrays: tuple, batch_size: int) -> Any:
    """A sum over a whole set, batch by batch, as evaluation computes it (inside jit).

    **Arguments:**

    - `totals`: `totals(*batch) -> pytree of sums` over one batch of each array.
    - `arrays`: arrays of one length, split along their first axis.
    - `batch_size`: examples per batch.

    **Returns:** the pytree of sums over every example: whole batches under one `lax.scan`, a
    last, partial batch once after it.
    """
    n = arrays[0].shape[0]
    whole = n // batch_size
    sums = None
    if whole:

        def body(acc, i):
            batch = [jax.lax.dynamic_slice_in_dim(a, i * batch_size, batch_size) for a in arrays]
            return jax.tree_util.tree_map(jnp.add, acc, totals(*batch)), None

        shapes = jax.eval_shape(totals, *[a[:batch_size] for a in arrays])
        zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        sums, _ = jax.lax.scan(body, zeros, jnp.arange(whole))
    if n % batch_size:
        rest = totals(*[a[whole * batch_size :] for a in arrays])
        sums = rest if sums is None else jax.tree_util.tree_map(jnp.add, sums, rest)
    return sums
