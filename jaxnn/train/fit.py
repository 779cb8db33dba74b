"""`fit`: whole epochs of training with checks, checkpoints, resume and a progress bar.

    state, history = fit(
        model, loss, (x_train, y_train, x_test, y_test),
        opt=optimizer("adam", 1e-3), key=jax.random.PRNGKey(0),
        epochs=3, batch_size=128,
    )

The options come in three named tuples: `TrainOptions` (how each step trains: mode, augmentation,
mesh, dtype), `Checkpointing` (where and how often to save, whether to resume) and `Reporting`
(progress bar, log, evaluation per epoch).

`fit` is the loop; each of its steps is a function below, in the order it runs: check the run,
prepare it (data on the devices, the compiled program), start (fresh or resumed), then per epoch
train its chunks of steps and evaluate, saving as it goes.
"""

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
from tqdm.auto import tqdm

from .. import checkpoint, parallel, throughput
from ..core import Layer, check_params, init_shapes, model_input_shape
from ..errors import CheckpointError, InputError, TrainingDiverged
from ..losses import LossFn
from ..renamed import FIT, removed_keywords
from ..types import PRNGKey, Shape
from . import tensorboard
from .checks import all_finite, check_batch_size, check_data, check_positive_int, check_trainable, classes_of
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
    - `throughput`: report each step's FLOPs (XLA's count) and the GFLOP/s reached per epoch, as a
      fraction of this machine's matmul ceiling (`jaxnn.throughput.matmul_ceiling`: measured once
      per machine, under a second, then kept), on the bar and in the history.
    """

    progress: bool = True
    log: Callable[[str], Any] = print
    eval_every_epoch: bool = True
    tensorboard: str | None = None
    learning_rate: float | Callable | None = None
    throughput: bool = True


__all__ = ["Checkpointing", "Reporting", "chunk_steps", "fit", "in_chunks", "load_checkpoint"]


class Run(NamedTuple):
    """What stays fixed for a whole run of `fit`."""

    data: tuple  # (x_train, y_train, x_test, y_test), placed on the devices
    batch_size: int
    steps: int  # per epoch
    chunk: int  # steps per compiled call
    steps_fn: Callable  # (state, x, y, order rows) -> (state, StepMetrics), not jitted
    program: Callable  # steps_fn jitted (compiles a shorter last chunk when there is one)
    compiled: Any  # the program compiled for a whole chunk (None until `compile_run`)
    evaluate: Callable  # (params, x, y, model_state) -> (loss, accuracy)
    place: Callable  # a host array onto the devices (replicated over a mesh)
    replicate: Callable  # the state over the mesh's devices (as it is without a mesh)
    step_flops: float = 0.0  # XLA's count for one step on one device (0 until `compile_run`)
    ceiling: float = 0.0  # this machine's matmul ceiling, GFLOP/s (0: not reported)


class Position(NamedTuple):
    """Where a run stands: the epoch, the step within it, and that epoch's metrics so far."""

    epoch: int = 0
    step: int = 0
    losses: tuple = ()
    accuracies: tuple = ()


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


def in_chunks(call: Callable, state: Any, start: int, stop: int, size: int) -> Iterator[tuple[int, Any, Any]]:
    """Steps `start` to `stop` of a run, in compiled calls of `size` steps and a shorter last one:
    the loop of `fit` and of a language model's training.

    **Arguments:**

    - `call(state, begin, end) -> (state, metrics)`: runs steps begin to end (one compiled call).
    - `state`: the state before step `start`.
    - `start`, `stop`, `size`: the span of steps and the steps per call.

    **Returns:** an iterator of `(end, state, metrics)`, one per call, the state as the call left
    it: the caller checks, logs and saves between calls.
    """
    while start < stop:
        end = min(start + size, stop)
        state, metrics = call(state, start, end)
        yield end, state, metrics
        start = end


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
    - `data`: `(x_train, y_train, x_test, y_test)` arrays (images uint8 or float; y class labels,
      or float targets of the model's output shape, as an autoencoder's images, whose accuracy is
      then NaN), checked first: equal lengths, finite, labels in range, not empty (DataError).
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
    excluded) and "compile_seconds". With `reporting.throughput`, also "step_flops" (XLA's count
    of one step, per device) and "matmul_ceiling_gflops", and each epoch's row "gflops" (GFLOP/s
    per device) and "fraction_of_ceiling".

    A NaN/inf loss or parameter raises TrainingDiverged; the last good checkpoint stays. A model
    whose last epoch is no more accurate than always answering the most frequent class (a
    collapsed net, e.g. dead ReLUs after too large a step) is reported through `reporting.log` as
    a warning and marked `history["learned_nothing"] = True`. A checkpoint that cannot be read is
    renamed aside (PATH.corrupt-TIME) and reported. With a mesh, batch_size must divide evenly
    among its devices.
    """
    input_shape = check_run(model, data, epochs, batch_size, input_shape, options, checkpointing)
    run = prepare_run(model, loss, opt, data, input_shape, batch_size, options, checkpointing.every)
    state = run.replicate(init_state(model, opt, key, input_shape, dtype=options.dtype))
    order = np.zeros((run.steps, batch_size), np.int32)  # on the host, placed a chunk at a time
    history: dict = {"epochs": [], "step_losses": [], "train_seconds": 0.0}
    at, path = Position(), checkpointing.path
    if checkpointing.resume and path and os.path.exists(path):
        state, order, history, at = resume(path, state, order, model, input_shape)
        state = run.replicate(state)
        reporting.log(f"resumed from {path} after epoch {at.epoch}{_mid_epoch(at, run.steps)}")
    run, history["compile_seconds"] = compile_run(run, state, order)
    history["train_seconds"] += history["compile_seconds"]
    if reporting.throughput:
        run = run._replace(ceiling=throughput.matmul_ceiling())
        history.update(step_flops=run.step_flops, matmul_ceiling_gflops=run.ceiling)
    save = saver(path, checkpointing.every)
    bar = progress_bar(reporting, at.epoch, epochs)
    with tensorboard_writer(reporting.tensorboard) as writer:
        for epoch in bar:
            t0 = time.perf_counter()
            state, order, at = train_epoch(run, state, order, at._replace(epoch=epoch), history, writer,
                                           reporting.learning_rate, save, path)  # fmt: skip
            row = epoch_row(at, run, time.perf_counter() - t0)
            if reporting.eval_every_epoch or epoch + 1 == epochs:
                test_loss, test_accuracy = run.evaluate(state.params, *run.data[2:], state.model_state)
                row.update(test_loss=float(test_loss), test_accuracy=float(test_accuracy))
            history["train_seconds"] += row["seconds"]
            history["epochs"].append(row)
            history["step_losses"].extend(at.losses)
            if writer is not None:
                tensorboard.log_epoch(writer, (epoch + 1) * run.steps, row)
            bar.set_postfix(_postfix(row))
            at = Position(epoch + 1)
            if path:
                save(state, order, history, at, periodic=False)
    _warn_if_learned_nothing(history, data[1], reporting.log)
    return state, history


def check_run(model, data, epochs, batch_size, input_shape, options, checkpointing) -> Shape:
    """Every check of the arguments and the data, before anything is placed or compiled; returns
    one example's shape."""
    check_positive_int("epochs", epochs)
    check_positive_int("batch_size", batch_size)
    every, mesh = checkpointing.every, options.mesh
    if every is not None and not every >= 0:
        raise InputError(f"checkpointing.every must be a number of seconds >= 0, got {every!r}")
    if mesh is not None and batch_size % mesh.size:
        raise InputError(f"batch size {batch_size} does not split evenly over {mesh.size} devices")
    input_shape = model_input_shape(model, input_shape, "fit")
    out_shape, params = init_shapes(model, input_shape)  # one trace gives both
    check_trainable(model, params, "fit")
    classes = classes_of(out_shape)
    if len(data) != 4:
        raise InputError(f"data must be (x_train, y_train, x_test, y_test), got {len(data)} arrays")
    check_data(data[0], data[1], input_shape, classes, "training", targets_shape=out_shape)
    check_data(data[2], data[3], input_shape, classes, "test", targets_shape=out_shape)
    check_batch_size(batch_size, len(data[0]), "the training set")
    return input_shape


def prepare_run(model, loss, opt, data, input_shape, batch_size, options, every) -> Run:
    """The data on the devices, the steps' program (not yet compiled) and the evaluation."""
    mesh = options.mesh
    replicate = (lambda a: a) if mesh is None else (lambda a: parallel.replicate(a, mesh))
    place = jax.device_put if mesh is None else replicate
    steps = len(data[0]) // batch_size
    steps_fn = steps_function(model, loss, opt, input_shape, options)
    evaluate = make_evaluate(model, options.test_loss or loss, input_shape, dtype=options.dtype)
    return Run(
        data=tuple(place(a) for a in data),
        batch_size=batch_size,
        steps=steps,
        chunk=chunk_steps(steps, every),
        steps_fn=steps_fn,
        program=jax.jit(steps_fn, donate_argnums=0),
        compiled=None,
        evaluate=evaluate.unchecked,  # type: ignore[attr-defined]  # the data were checked in check_run
        place=place,
        replicate=replicate,
    )


def compile_run(run: Run, state: TrainState, order: np.ndarray) -> tuple[Run, float]:
    """The program compiled ahead of time for a whole chunk (so that its cost is reported), with
    the model's XLA options; a last, shorter chunk compiles with the same options. Returns the run
    and the seconds compilation took."""
    t0 = time.perf_counter()
    x, y = run.data[:2]
    compiled, options = compile_lowered(run.program.lower(state, x, y, _rows(run, order, 0, run.chunk)))
    program = run.program
    if options:
        program = jax.jit(run.steps_fn, donate_argnums=0, compiler_options=options)
    flops = throughput.program_flops(compiled)  # the chunk's scan: XLA counts its body, one step, once
    return run._replace(compiled=compiled, program=program, step_flops=flops), time.perf_counter() - t0


def _rows(run: Run, order: np.ndarray, start: int, end: int) -> Any:
    """A chunk's rows of the epoch's order, placed as they are needed (a slice of a device array at
    a new start would compile a program of its own)."""
    return run.place(order[start:end])


def train_epoch(run, state, order, at, history, writer, learning_rate, save, path):
    """The epoch's steps from `at.step` on, one compiled call per chunk, each checked for
    divergence, logged and (when due) saved. Returns `(state, order, position)` at the epoch's end."""
    if at.step == 0:
        state, order = epoch_order(state, len(run.data[0]), run.batch_size)

    def call(state, begin, end):
        program = run.compiled if end - begin == run.chunk else run.program
        return program(state, *run.data[:2], _rows(run, order, begin, end))

    for end, new_state, metrics in in_chunks(call, state, at.step, run.steps, run.chunk):
        losses = np.asarray(metrics.loss)  # waits for the chunk to finish
        stop_if_diverged(losses, new_state, at, history, path)
        if writer is not None:
            tensorboard.log_steps(writer, at.epoch * run.steps + at.step, metrics, learning_rate)
        state = new_state
        at = at._replace(
            step=end,
            losses=at.losses + tuple(float(v) for v in losses),
            accuracies=at.accuracies + tuple(float(v) for v in np.asarray(metrics.accuracy)),
        )
        if at.step < run.steps:
            save(state, order, history, at, periodic=True)
    return state, order, at


def epoch_row(at: Position, run: Run, seconds: float) -> dict:
    """The history's row of a finished epoch (before its evaluation)."""
    row = {
        "epoch": at.epoch + 1,
        "train_loss": float(np.mean(at.losses)),
        "train_accuracy": float(np.mean(at.accuracies)),
        "seconds": seconds,
        "samples_per_second": run.steps * run.batch_size / seconds,
    }
    if run.ceiling:
        gflops = run.step_flops * run.steps / seconds / 1e9
        row.update(gflops=gflops, fraction_of_ceiling=gflops / run.ceiling)
    return row


def saver(path: str | None, every: float | None) -> Callable[..., None]:
    """`save(state, order, history, position, periodic)`: the checkpoint with fit's metadata, by
    process 0. A periodic save (within an epoch) happens once `every` seconds have passed since the
    last save; the others always."""
    last = [time.monotonic()]

    def save(state, order, history, at: Position, periodic: bool) -> None:
        if path is None or (periodic and (every is None or time.monotonic() - last[0] < every)):
            return
        if parallel.is_main_process():  # across processes, process 0 writes
            partial = {"losses": list(at.losses), "accuracies": list(at.accuracies)}
            meta = {"epoch": at.epoch, "position": at.step, "partial": partial, "history": history}
            checkpoint.save(path, (state, order), {**meta, "format": 2})
        last[0] = time.monotonic()

    return save


def progress_bar(reporting: Reporting, start: int, epochs: int) -> Any:
    """A tqdm bar over the epochs still to run (on process 0, when reporting.progress)."""
    return tqdm(
        range(start, epochs),
        desc="epochs",
        unit="epoch",
        total=epochs,
        initial=start,
        disable=not reporting.progress or not parallel.is_main_process(),
    )


def _postfix(row: dict) -> dict:
    shown = {"loss": f"{row['train_loss']:.4f}"}
    if np.isnan(row["train_accuracy"]):  # targets, not class labels: the test loss says more
        shown["test loss"] = f"{row.get('test_loss', float('nan')):.4f}"
    else:
        shown["acc"] = f"{row['train_accuracy']:.4f}"
        shown["test"] = f"{row.get('test_accuracy', float('nan')):.4f}"
    shown["sps"] = f"{row['samples_per_second']:.0f}"
    if "gflops" in row:
        shown["GFLOP/s"] = f"{row['gflops']:.0f} ({row['fraction_of_ceiling']:.0%} of matmul)"
    return shown


def _mid_epoch(at: Position, steps: int) -> str:
    return f" and {at.step} of {steps} steps of epoch {at.epoch + 1}" if at.step else ""


@contextlib.contextmanager
def tensorboard_writer(folder):
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
    labels = np.asarray(labels)
    if not history["epochs"] or labels.ndim != 1 or labels.dtype.kind not in "iu":
        return  # no epoch, or targets that are not class labels (an autoencoder's images)
    majority = np.bincount(np.asarray(labels).astype(np.int64)).max() / len(labels)
    accuracy = history["epochs"][-1]["train_accuracy"]
    if accuracy <= majority + 0.01:
        history["learned_nothing"] = True
        log(
            f"warning: the training accuracy ended at {accuracy:.1%}, no better than always answering "
            f"the most frequent class ({majority:.1%}): the model learned nothing (learning rate too "
            "large or too small?)"
        )


def stop_if_diverged(losses, new_state, at: Position, history, checkpoint_path):
    """Raise TrainingDiverged if a step's loss, or the parameters after the steps, are not finite;
    the error's `history` is the run up to the first non-finite value."""
    bad_loss = not np.all(np.isfinite(losses))
    if not bad_loss and all_finite(new_state.params):
        return
    kept = (
        f"; the last good checkpoint is {checkpoint_path}"
        if checkpoint_path and os.path.exists(checkpoint_path)
        else ""
    )
    epoch, position = at.epoch, at.step
    if bad_loss:
        bad = int(np.argmax(~np.isfinite(losses)))
        what = f"loss became {losses[bad]} at step {position + bad} of epoch {epoch + 1}"
        seen = [float(v) for v in losses[: bad + 1]]
    else:
        steps = f"{position}-{position + len(losses) - 1}"
        what = f"parameters became NaN or infinite in steps {steps} of epoch {epoch + 1}"
        seen = [float(v) for v in losses]
    err = TrainingDiverged(f"{what} (learning rate too large?); stopped{kept}")
    err.history = {**history, "step_losses": history["step_losses"] + list(at.losses) + seen}
    raise err


def resume(path, state, order, model, input_shape):
    """(state, order, history, position) from fit's checkpoint at path; a corrupt file is set aside
    and reported."""
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
    partial = meta["partial"]
    at = Position(meta["epoch"], meta["position"], tuple(partial["losses"]), tuple(partial["accuracies"]))
    return state, np.asarray(order), meta["history"], at


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
