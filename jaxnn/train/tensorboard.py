"""A run's scalars as TensorBoard event files (tensorboardX's writer: no TensorFlow needed).

    tensorboard --logdir DIR        # then open http://localhost:6006

Per step: `train/loss`, `train/grad_norm` (the gradient's global L2 norm before the optimiser) and
`train/learning_rate`; per epoch: `train/accuracy`, `test/loss`, `test/accuracy` and
`speed/samples_per_second`. The x axis is the global step (the number of updates before it).
"""

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["open_writer", "log_steps", "log_epoch", "TAGS"]

TAGS = (
    "train/loss",
    "train/grad_norm",
    "train/learning_rate",
    "train/accuracy",
    "test/loss",
    "test/accuracy",
    "speed/samples_per_second",
)
"""The scalars `fit` writes."""


def open_writer(folder: str) -> Any:
    """A TensorBoard event writer into folder.

    **Arguments:** `folder` the log directory (created if missing).

    **Returns:** a `tensorboardX.SummaryWriter`; close it when the run ends.
    """
    try:
        from tensorboardX import SummaryWriter  # noqa: PLC0415
    except ImportError as e:
        raise InputError("TensorBoard logs need tensorboardX: pip install -e '.[interop]'") from e
    return SummaryWriter(folder)


def log_steps(writer: Any, first_step: int, metrics: Any, learning_rate: float | Callable | None) -> None:
    """Write one chunk's per-step scalars.

    **Arguments:**

    - `writer`: from `open_writer`.
    - `first_step`: the global step of the chunk's first step.
    - `metrics`: a StepMetrics of host arrays `(steps,)`.
    - `learning_rate`: the optimiser's rate, a number or a schedule (a function of the step), or None.

    **Returns:** None.
    """
    losses, norms = np.asarray(metrics.loss), np.asarray(metrics.grad_norm)
    for i, (loss, norm) in enumerate(zip(losses, norms)):
        step = first_step + i
        writer.add_scalar("train/loss", float(loss), step)
        writer.add_scalar("train/grad_norm", float(norm), step)
        if learning_rate is not None:
            rate = learning_rate(step) if callable(learning_rate) else learning_rate
            writer.add_scalar("train/learning_rate", float(rate), step)


def log_epoch(writer: Any, step: int, row: dict) -> None:
    """Write an epoch's scalars.

    **Arguments:**

    - `writer`: from `open_writer`.
    - `step`: the global step at the epoch's end.
    - `row`: the epoch's row of `fit`'s history.

    **Returns:** None.
    """
    for tag, key in (
        ("train/accuracy", "train_accuracy"),
        ("test/loss", "test_loss"),
        ("test/accuracy", "test_accuracy"),
        ("speed/samples_per_second", "samples_per_second"),
    ):
        if key in row:
            writer.add_scalar(tag, float(row[key]), step)
    writer.flush()
