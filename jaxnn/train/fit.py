"""`fit`: whole epochs of training with checks, checkpoints, resume and a progress bar.

    state, history = fit(model, loss, (x_train, y_train, x_test, y_test),
                         opt=optimizer("adam", 1e-3), key=jax.random.PRNGKey(0), epochs=3, batch_size=128)

The options come in three named tuples: `TrainOptions` (how each step trains: mode, augmentation,
mesh, dtype), `Checkpointing` (where and how often to save, whether to resume) and `Reporting`
(progress bar, log, evaluation per epoch).
"""

import contextlib
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
from tqdm.auto import tqdm

from .. import checkpoint, parallel
from ..core import Layer, check_params, model_input_shape
from ..errors import CheckpointError, InputError, TrainingDiverged
from ..losses import LossFn
from ..renamed import FIT, removed_keywords
from ..types import PRNGKey, Shape
from . import tensorboard
from .checks import all_finite, check_data, check_positive_int, check_trainable, output_classes
from .compile import compile_lowered
from .evaluate import make_evaluate
from .step import TrainOptions, TrainState, epoch_order, init_state, steps_function


class Checkpointing(NamedTuple):
    """Where `fit` saves its state, and when.

    **Fields:**

    - `path`: the checkpoint file, saved atomically after every epoch; None for no checkpoints.
    - `resume`: continue from `path` if it exists, bit for bit as if never stopped (on the CPU).
    - `every`: also save within an epoch once this many seconds have passed since the last save,
      so that a kill loses at most that much work; None saves at epoch ends only.
    """

    path: str | None = None
    resume: bool = False
    every: float | None = None


class Reporting(NamedTuple):
    """What `fit` shows while it runs.

    **Fields:**

    - `progress`: a progress bar over the epochs.
    - `log`: where messages go (resumed from, warnings), a function of one string.
    - `eval_every_epoch`: evaluate on the test set after every epoch (else after the last only).
    - `tensorboard`: a folder for TensorBoard scalars (loss, gradient norm and learning rate per step;
      accuracies, test loss and samples per second per epoch), or None.
    - `learning_rate`: the optimiser's learning rate, a number or a schedule (a function of the step),
      for the TensorBoard log; None leaves it out.
    """

    progress: bool = True
    log: Callable[[str], Any] = print
    eval_every_epoch: bool = True
    tensorboard: str | None = None
    learning_rate: float | Callable | None = None


def chunk_steps(steps: int, checkpoint_every: float | None) -> int:
    """Steps per compiled call of `fit`.

    **Arguments:** `steps` per epoch; `checkpoint_every` seconds between saves, or None.

    **Returns:** the whole epoch, or with checkpoint_every about an eighth of it (a divisor of steps
    when one is near, so that one compiled program serves every chunk).
    """
    if checkpoint_every is None:
        return steps
    target = max(1, steps // 8)
    best = min((d for d in range(1, steps + 1) if steps % d == 0), key=lambda d: abs(d - target))
    return best if best >= target / 2 else target


@removed_keywords(**FIT)
def fit(
    model: Layer,
    loss: LossFn | Callable,
    data: tuple,
    *,
    opt: optax.GradientTransformation,
    key: PRNGKey,
    epochs: int,
    batch_size: int,
    input_shape: Shape | None = None,
    options: TrainOptions = TrainOptions(),
    checkpointing: Checkpointing = Checkpointing(),
    reporting: Reporting = Reporting(),
) -> tuple[TrainState, dict]:
    """Train for `epochs` whole epochs.

    **Arguments:**

    - `model`, `loss`: the Layer and the loss (a Loss, or a plain function `loss(pred, labels)`).
    - `data`: `(x_train, y_train, x_test, y_test)` arrays (images uint8 or float), checked first:
      equal lengths, finite, labels in range, not empty (DataError).
    - `opt`: an optax optimiser (e.g. `optimizer("adam", 1e-3)`).
    - `key`: the run's PRNG key: the same key gives the same run.
    - `epochs`, `batch_size`: the run's length and the examples per step.
    - `input_shape`: the shape of one example (default `model.input_shape`).
    - `options`: how each step trains (TrainOptions: mode, augment, test_loss, mesh, dtype).
    - `checkpointing`: where and when to save, and whether to resume (Checkpointing).
    - `reporting`: progress bar, log and evaluation (Reporting).

    **Returns:** `(state, history)`: the final TrainState, and a dict with one row per epoch under
    "epochs" (train/test loss and accuracy, seconds, samples per second), every step's loss under
    "step_losses", "train_seconds" (training only: compilation included, evaluation and loading
    excluded) and "compile_seconds".

    A NaN/inf loss or parameter raises TrainingDiverged; the last good checkpoint stays. A model
    whose last epoch is no more accurate than always answering the most frequent class (a
    collapsed net, e.g. dead ReLUs after too large a step) is reported through `reporting.log` as
    a warning and marked `history["learned_nothing"] = True`. A checkpoint that cannot be read is
    renamed aside (PATH.corrupt-TIME) and reported. With a mesh, batch_size must divide evenly
    among its devices.
    """
    check_positive_int("epochs", epochs)
    check_positive_int("batch_size", batch_size)
    every, mesh, log = checkpointing.every, options.mesh, reporting.log
    if every is not None and not every >= 0:
        raise InputError(f"checkpointing.every must be a number of seconds >= 0, got {every!r}")
    if mesh is not None and batch_size % mesh.size:
        raise InputError(f"batch size {batch_size} does not split evenly over {mesh.size} devices")
    input_shape = model_input_shape(model, input_shape, "fit")
    check_trainable(model, input_shape, "fit")
    classes = output_classes(model, input_shape)
    if len(data) != 4:
        raise InputError(f"data must be (x_train, y_train, x_test, y_test), got {len(data)} arrays")
    check_data(data[0], data[1], input_shape, classes, "training")
    check_data(data[2], data[3], input_shape, classes, "test")
    if batch_size > len(data[0]):
        raise InputError(f"batch size {batch_size} is larger than the training set ({len(data[0])} examples)")
    place = jax.device_put if mesh is None else (lambda a: parallel.replicate(a, mesh))
    x_train, y_train, x_test, y_test = (place(a) for a in data)
    steps = len(data[0]) // batch_size
    chunk = chunk_steps(steps, every)
    steps_fn = steps_function(model, loss, opt, input_shape, options)
    run = jax.jit(steps_fn, donate_argnums=0)
    evaluate = make_evaluate(model, options.test_loss or loss, input_shape, dtype=options.dtype)
    evaluate = evaluate.unchecked  # type: ignore[attr-defined]  # the test set was checked above
    state = init_state(model, opt, key, input_shape, dtype=options.dtype)
    order = np.zeros((steps, batch_size), np.int32)  # on the host; each chunk's rows are placed as
    # they are needed (a slice of a device array at a new start would compile a program of its own)
    if mesh is not None:
        state = parallel.replicate(state, mesh)
    history: dict = {"epochs": [], "step_losses": [], "train_seconds": 0.0}
    start_epoch, position, partial = 0, 0, {"losses": [], "accuracies": []}
    path = checkpointing.path
    if checkpointing.resume and path and os.path.exists(path):
        state, order, meta = _resume(path, state, order, model, input_shape)
        state, order = (state if mesh is None else parallel.replicate(state, mesh)), np.asarray(order)
        history, start_epoch, position, partial = (
            meta["history"],
            meta["epoch"],
            meta["position"],
            meta["partial"],
        )
        where = f" and {position} of {steps} steps of epoch {start_epoch + 1}" if position else ""
        log(f"resumed from {path} after epoch {start_epoch}{where}")

    writes = path and parallel.is_main_process()  # across processes, process 0 writes

    def save(epoch, position, partial):
        if not writes or path is None:
            return
        meta = {"epoch": epoch, "position": position, "partial": partial, "history": history, "format": 2}
        checkpoint.save(path, (state, order), meta)

    t0 = time.perf_counter()  # compiled ahead of time, so that its cost is reported
    compiled, compile_options = compile_lowered(run.lower(state, x_train, y_train, place(order[:chunk])))
    if compile_options:  # a last, shorter chunk compiles with the same options
        run = jax.jit(steps_fn, donate_argnums=0, compiler_options=compile_options)
    history["compile_seconds"] = time.perf_counter() - t0
    history["train_seconds"] += history["compile_seconds"]
    bar = tqdm(
        range(start_epoch, epochs),
        desc="epochs",
        unit="epoch",
        total=epochs,
        initial=start_epoch,
        disable=not reporting.progress or not parallel.is_main_process(),
    )
    last_save = time.monotonic()
    with _writer(reporting.tensorboard) as writer:
        for epoch in bar:
            t0 = time.perf_counter()
            if position == 0:
                state, order = epoch_order(state, len(data[0]), batch_size)
            while position < steps:
                end = min(position + chunk, steps)
                call = compiled if end - position == chunk else run
                new_state, metrics = call(state, x_train, y_train, place(order[position:end]))
                losses = np.asarray(metrics.loss)  # waits for the chunk to finish
                _stop_if_diverged(losses, new_state, epoch, position, history, partial, path)
                if writer is not None:
                    tensorboard.log_steps(writer, epoch * steps + position, metrics, reporting.learning_rate)
                state, position = new_state, end
                partial["losses"] += [float(v) for v in losses]
                partial["accuracies"] += [float(v) for v in np.asarray(metrics.accuracy)]
                if path and every is not None and position < steps and time.monotonic() - last_save >= every:
                    save(epoch, position, partial)
                    last_save = time.monotonic()
            seconds = time.perf_counter() - t0
            history["train_seconds"] += seconds
            row = {
                "epoch": epoch + 1,
                "train_loss": float(np.mean(partial["losses"])),
                "train_accuracy": float(np.mean(partial["accuracies"])),
                "seconds": seconds,
                "samples_per_second": steps * batch_size / seconds,
            }
            if reporting.eval_every_epoch or epoch + 1 == epochs:
                test_loss, test_acc = evaluate(state.params, x_test, y_test, state.model_state)
                row.update(test_loss=float(test_loss), test_accuracy=float(test_acc))
            history["epochs"].append(row)
            if writer is not None:
                tensorboard.log_epoch(writer, (epoch + 1) * steps, row)
            history["step_losses"].extend(partial["losses"])
            position, partial = 0, {"losses": [], "accuracies": []}
            bar.set_postfix(
                loss=f"{row['train_loss']:.4f}",
                acc=f"{row['train_accuracy']:.4f}",
                test=f"{row.get('test_accuracy', float('nan')):.4f}",
                sps=f"{row['samples_per_second']:.0f}",
            )
            if path:
                save(epoch + 1, 0, partial)
                last_save = time.monotonic()
    _warn_if_learned_nothing(history, data[1], log)
    return state, history


@contextlib.contextmanager
def _writer(folder):
    """A TensorBoard writer into folder for process 0 (closed at the end), or None."""
    if folder is None or not parallel.is_main_process():
        yield None
        return
    writer = tensorboard.open_writer(folder)
    try:
        yield writer
    finally:
        writer.close()


def _warn_if_learned_nothing(history, labels, log):
    """Flag a run whose last epoch's training accuracy is no better than the majority class's share
    (plus one point): it finished without NaNs, yet predicts as if it had seen no input."""
    if not history["epochs"]:
        return
    majority = np.bincount(np.asarray(labels).astype(np.int64)).max() / len(labels)
    accuracy = history["epochs"][-1]["train_accuracy"]
    if accuracy <= majority + 0.01:
        history["learned_nothing"] = True
        log(
            f"warning: the training accuracy ended at {accuracy:.1%}, no better than always answering "
            f"the most frequent class ({majority:.1%}): the model learned nothing (learning rate too "
            "large or too small?)"
        )


def _stop_if_diverged(losses, new_state, epoch, position, history, partial, checkpoint_path):
    """Raise TrainingDiverged if a step's loss, or the parameters after the steps, are not finite."""
    bad_loss = not np.all(np.isfinite(losses))
    if not bad_loss and all_finite(new_state.params):
        return
    kept = (
        f"; the last good checkpoint is {checkpoint_path}"
        if checkpoint_path and os.path.exists(checkpoint_path)
        else ""
    )
    if bad_loss:
        bad = int(np.argmax(~np.isfinite(losses)))
        what = f"loss became {losses[bad]} at step {position + bad} of epoch {epoch + 1}"
        history["step_losses"].extend(partial["losses"] + [float(v) for v in losses[: bad + 1]])
    else:
        last = position + len(losses) - 1
        what = f"parameters became NaN or infinite in steps {position}-{last} of epoch {epoch + 1}"
        history["step_losses"].extend(partial["losses"] + [float(v) for v in losses])
    err = TrainingDiverged(f"{what} (learning rate too large?); stopped{kept}")
    err.history = history  # the run up to the first non-finite value, for plotting
    raise err


def _resume(path, state, order, model, input_shape):
    """(state, order, meta) from the checkpoint at path; a corrupt file is set aside and reported."""
    try:
        contents = checkpoint.read(path)
    except CheckpointError as e:
        aside = checkpoint.set_aside(path)
        raise CheckpointError(
            f"{e}; moved it aside to {aside} (nothing was loaded); start again without "
            "--resume or restore a good copy"
        ) from e
    meta = contents[2]
    needed = {"epoch": int, "position": int, "partial": dict, "history": dict}
    missing = [k for k, t in needed.items() if not isinstance(meta.get(k), t)]
    if missing:  # checked first: a checkpoint of the user's own is not "another model"
        raise CheckpointError(
            f"cannot resume from {path}: it has no training metadata ({', '.join(missing)} "
            "missing), so it was not written by train.fit (jaxnn.checkpoint.save writes such files; "
            "train.fit resumes only its own checkpoints)"
        )
    try:
        (state, order), meta = checkpoint.fill(path, contents, like=(state, order))
    except CheckpointError as e:
        raise CheckpointError(
            f"cannot resume: {e}; resume needs a checkpoint of the same model, batch size and dataset size"
        ) from e
    check_params(model, state.params, input_shape)
    return state, order, meta


def load_checkpoint(path: str, like: TrainState) -> tuple[TrainState, dict]:
    """A TrainState from a checkpoint that `fit` wrote.

    **Arguments:**

    - `path`: the checkpoint file.
    - `like`: a TrainState of the same model (e.g. from `init_state`), giving the structure to fill.

    **Returns:** `(state, meta)`; meta holds fit's history and position. (fit stores the state with
    the epoch's batch order, so that it can resume mid-epoch.)
    """
    contents = checkpoint.read(path)
    arrays = contents[1]
    order_like = np.zeros(arrays[-1].shape, np.int32) if arrays else np.zeros((0,), np.int32)
    (state, _), meta = checkpoint.fill(path, contents, like=(like, order_like))
    return state, meta
