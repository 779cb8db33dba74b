"""The checks a run makes, on the host and outside jit: what it is given (the model is trainable,
counts are positive, the data fit the model: a bad array ends in a DataError that names the
problem, before anything is compiled), and what it makes (`all_finite`, for divergence). With them
the one fact the data check needs from a model: how many classes its output holds.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..core import Layer, output_shape
from ..errors import DataError, InputError
from ..types import Shape


def check_trainable(model: Layer, params: Any, where: str) -> None:
    """Raise InputError unless the model has parameters to train (a model of pooling and activations
    alone would "train" without changing).

    **Arguments:** `model` a Layer; `params` its parameters (or their shapes, `core.init_shapes`);
    `where` the caller.

    **Returns:** None.
    """
    if not jax.tree_util.tree_leaves(params):
        raise InputError(
            f"{where}: {model.name} has no parameters, so training would change nothing; add a layer "
            "with parameters (Dense, Conv2D, ...)"
        )


def check_positive_int(name: str, value: Any) -> None:
    """Raise InputError unless a value is an int >= 1 (not a bool).

    **Arguments:** `name` what to call it; `value` the value.

    **Returns:** None.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")


def check_batch_size(batch_size: Any, n: int, what: str = "the dataset") -> None:
    """Raise InputError unless `batch_size` is a positive int no larger than the `n` examples of
    `what` (a step needs a whole batch)."""
    check_positive_int("batch_size", batch_size)
    if n < batch_size:
        raise InputError(f"batch size {batch_size} is larger than {what} ({n} examples)")


def output_classes(model: Layer, input_shape: Shape) -> int | None:
    """The number of classes a model's output row holds.

    **Arguments:** `model` a Layer; `input_shape` the shape of one example.

    **Returns:** the output's width, or None when one example's output is not a vector.
    """
    return classes_of(output_shape(model, input_shape))


def classes_of(out_shape: Shape) -> int | None:
    """The classes an output of one example's shape `out_shape` holds: its width for a vector, else None.

    **Arguments:** `out_shape` one example's output shape.

    **Returns:** the width, or None.
    """
    return out_shape[0] if len(out_shape) == 1 else None


def check_data(
    images: Any,
    labels: Any,
    input_shape: Shape,
    classes: int | None,
    what: str,
    targets_shape: Shape | None = None,
) -> None:
    """Raise DataError unless images and labels are a usable set for a model: equal lengths, not
    empty, images numeric, finite and of the input's size, labels integers in [0, classes) (or,
    given `targets_shape`, float targets of that shape per example: an autoencoder's images).

    **Arguments:**

    - `images`, `labels`: the arrays.
    - `input_shape`: the shape of one example the model reads.
    - `classes`: the model's outputs (None: labels are not checked against it).
    - `what`: what to call the set in messages ("training", "test").
    - `targets_shape`: one example's output shape, to accept float targets of it (None: labels only).

    **Returns:** None. Runs on the host, outside jit, once.
    """
    n_images, n_labels = np.shape(images)[:1], np.shape(labels)[:1]
    if not n_images or not n_labels:
        raise DataError(
            f"{what} images and labels need a batch axis, got shapes {np.shape(images)}, {np.shape(labels)}"
        )
    if n_images != n_labels:
        raise DataError(
            f"{what} images and labels differ in length: {n_images[0]} images, {n_labels[0]} labels"
        )
    if n_images[0] == 0:
        raise DataError(f"the {what} set is empty (0 examples)")
    per_example = math.prod(np.shape(images)[1:])
    if per_example != math.prod(input_shape):
        raise DataError(
            f"{what} images of shape {np.shape(images)[1:]} ({per_example} values) do not fit the model's "
            "input "
            f"{tuple(input_shape)} ({math.prod(input_shape)} values)"
        )
    kind = np.dtype(jnp.result_type(images)).kind
    if kind not in "uif":
        raise DataError(
            f"{what} images must be numbers (uint8 or float), got dtype {jnp.result_type(images)}"
        )
    host_images = np.asarray(images)
    if kind == "f" and not np.all(np.isfinite(host_images)):
        bad = int(np.sum(~np.isfinite(host_images)))
        raise DataError(f"{what} images hold {bad} NaN or infinite values; clean or drop those examples")
    label_type = np.dtype(jnp.result_type(labels))
    if targets_shape is not None and label_type.kind == "f":
        _check_targets(labels, targets_shape, what)
    else:
        _check_labels(labels, classes, what, targets_shape)


def _check_labels(labels: Any, classes: int | None, what: str, targets_shape: Shape | None) -> None:
    """Class labels: integers of shape (n,), each in [0, classes) when classes is known."""
    label_type = np.dtype(jnp.result_type(labels))
    if np.ndim(labels) != 1 or not np.issubdtype(label_type, np.integer):
        targets = "" if targets_shape is None else f", or float targets of shape (n, *{tuple(targets_shape)})"
        raise DataError(
            f"{what} labels must be integers of shape (n,){targets}, got {label_type}{np.shape(labels)}"
        )
    if classes is not None:
        host_labels = np.asarray(labels)
        low, high = int(host_labels.min()), int(host_labels.max())
        if low < 0 or high >= classes:
            raise DataError(
                f"{what} labels must lie in [0, {classes}) for the model's {classes} outputs, "
                f"got values from {low} to {high}"
            )


def _check_targets(targets: Any, shape: Shape, what: str) -> None:
    """Float targets: one per example, of the model's output shape, finite."""
    if tuple(np.shape(targets)[1:]) != tuple(shape):
        raise DataError(
            f"{what} targets of shape {np.shape(targets)[1:]} per example do not match the model's "
            f"output {tuple(shape)}: give class labels as integers of shape (n,), or float targets "
            "of the output's shape"
        )
    if not np.all(np.isfinite(np.asarray(targets))):
        raise DataError(f"{what} targets hold NaN or infinite values")


def all_finite(tree: Any) -> bool:
    """Whether a pytree holds no NaN or inf, checked on the host with NumPy (no compilation).

    **Arguments:** `tree` a pytree of arrays.

    **Returns:** True when every leaf is finite.
    """
    return all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree_util.tree_leaves(tree))
