"""Training: a TrainState pytree, optax optimizers, a jitted step, whole epochs as one `lax.scan`.

    opt = optimizer("adam", 1e-3)
    state = init_state(model, opt, key, input_shape=(784,))
    epoch = make_epoch(model, loss, opt, batch_size=128, input_shape=(784,))
    state, step_losses, step_accuracies = epoch(state, images_uint8_on_device, labels_on_device)

The dataset lives on the device as uint8 and each batch is scaled to float32 inside the step, so
device memory stays at the dataset's own size. Each epoch draws a fresh permutation from the
state's key, so the same seed gives the same run, bit for bit on the CPU.
`train` knows nothing of datasets on disk: it takes arrays.
"""

import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from . import checkpoint, parallel
from .gradients import value_and_grad
from .losses import accuracy


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    step: Any  # int32 scalar
    key: Any  # PRNG key for permutations (and dropout)
    model_state: Any = ()  # the model's state (BatchNorm's running statistics), updated every step


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says when, and the last good state is kept."""


OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle", "warmup_cosine")


def schedule(kind, learning_rate, total_steps=None):
    """A learning-rate schedule: constant, cosine decay, one-cycle, or linear warmup + cosine."""
    if kind == "constant":
        return learning_rate
    if total_steps is None or total_steps < 1:
        raise ValueError(f"schedule {kind!r} needs total_steps >= 1, got {total_steps}")
    if kind == "cosine":
        return optax.cosine_decay_schedule(learning_rate, total_steps)
    if kind == "onecycle":
        return optax.cosine_onecycle_schedule(total_steps, learning_rate)
    if kind == "warmup_cosine":
        warmup = max(1, total_steps // 20)
        return optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup, total_steps)
    raise ValueError(f"unknown schedule {kind!r}; choose from {SCHEDULES}")


def optimizer(
    name="adam",
    learning_rate=1e-3,
    schedule_kind="constant",
    total_steps=None,
    momentum=0.9,
    weight_decay=1e-4,
):
    """An optax optimizer. "sgd" is the lecture's gradient descent, W <- W - lr * dL/dW."""
    lr = schedule(schedule_kind, learning_rate, total_steps)
    if name == "sgd":
        return optax.sgd(lr)
    if name == "momentum":
        return optax.sgd(lr, momentum=momentum)
    if name == "nesterov":
        return optax.sgd(lr, momentum=momentum, nesterov=True)
    if name == "adam":
        return optax.adam(lr)
    if name == "adamw":
        return optax.adamw(lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose from {OPTIMIZERS}")


def init_state(model, opt, key, input_shape, dtype=jnp.float32):
    """Initial TrainState: params from model.init (in dtype), the optimizer's state, step 0, a data
    key, and the model's own state (model.init_state: () for most, running statistics for BatchNorm)."""
    init_key, data_key = jax.random.split(key)
    _, params = model.init(init_key, tuple(input_shape), dtype=dtype)
    model_state = model.init_state(tuple(input_shape), dtype=dtype)
    return TrainState(params, opt.init(params), jnp.zeros((), jnp.int32), data_key, model_state)


def to_inputs(images, input_shape):
    """uint8 (or float) images -> float32 in [0, 1], reshaped to (batch, *input_shape)."""
    x = images.astype(jnp.float32)
    if images.dtype == jnp.uint8:
        x = x * (1.0 / 255.0)
    return x.reshape((images.shape[0],) + tuple(input_shape))


def make_step(model, loss, opt, grad="manual", input_shape=None, mesh=None):
    """step(state, images, labels) -> (state, (loss, accuracy)); jit it or scan it.

    With a mesh (see `parallel.data_mesh`), each batch is split over the mesh's "data" axis.
    """
    f = value_and_grad(model, loss, grad, with_outputs=True)

    def step(state, images, labels):
        x = images if input_shape is None else to_inputs(images, input_shape)
        if mesh is not None:
            x, labels = parallel.shard_batch(x, mesh), parallel.shard_batch(labels, mesh)
        key = jax.random.fold_in(state.key, state.step) if model.stochastic else None  # for Dropout
        (value, out, model_state), grads = f(
            state.params, x, labels, key, state=state.model_state, train=True
        )
        updates, opt_state = opt.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new = state._replace(params=params, opt_state=opt_state, step=state.step + 1, model_state=model_state)
        return new, (value, accuracy(out, labels))

    return step


def epoch_function(model, loss, opt, batch_size, input_shape, grad="manual", mesh=None):
    """epoch(state, images, labels) -> (state, step_losses, step_accuracies), not yet jitted:
    one `lax.scan` over a fresh permutation of the whole (on-device) dataset. The last
    len(images) % batch_size examples of each permutation are left out of that epoch."""
    step = make_step(model, loss, opt, grad, input_shape, mesh)

    def epoch(state, images, labels):
        n = images.shape[0]
        steps = n // batch_size
        if steps == 0:
            raise ValueError(f"batch size {batch_size} is larger than the dataset ({n} examples)")
        key, perm_key = jax.random.split(state.key)
        order = jax.random.permutation(perm_key, n)[: steps * batch_size].reshape(steps, batch_size)

        def body(s, idx):
            return step(s, images[idx], labels[idx])

        state, (losses, accs) = jax.lax.scan(body, state._replace(key=key), order)
        return state, losses, accs

    return epoch


def make_epoch(model, loss, opt, batch_size, input_shape, grad="manual", mesh=None):
    """The jitted epoch (see `epoch_function`); the state's buffers are donated and reused."""
    return jax.jit(epoch_function(model, loss, opt, batch_size, input_shape, grad, mesh), donate_argnums=0)


def make_ensemble_epoch(model, loss, opt, batch_size, input_shape, grad="manual"):
    """K models in one compiled program: the epoch vmapped over a leading axis of K stacked
    TrainStates (different seeds, and learning rates via optax.inject_hyperparams). Each member
    draws its own permutation from its own key; the data are shared."""
    epoch = epoch_function(model, loss, opt, batch_size, input_shape, grad)
    return jax.jit(jax.vmap(epoch, in_axes=(0, None, None)), donate_argnums=0)


def init_ensemble(model, opt, keys, input_shape):
    """K stacked TrainStates, one per key (vmap of init_state)."""
    return jax.vmap(lambda k: init_state(model, opt, k, input_shape))(keys)


def make_evaluate(model, loss, input_shape, batch_size=1000):
    """evaluate(params, images, labels, model_state=None) -> (mean loss, accuracy) over the whole set,
    in evaluation mode (train=False: BatchNorm uses the running statistics of model_state).

    Whole batches run under one `lax.scan`; a last, partial batch runs once after it. Each batch's
    mean loss is weighted by its size, so the result is the mean over all examples.
    """

    def totals(params, model_state, images, labels):
        out = model.apply(params, to_inputs(images, input_shape), state=model_state, train=False)
        out = out if model_state is None else out[0]
        return loss(out, labels) * labels.shape[0], jnp.sum(jnp.argmax(out, 1) == labels)

    def evaluate(params, images, labels, model_state=None):
        n = images.shape[0]
        whole = n // batch_size

        def body(acc, i):
            sl = jax.lax.dynamic_slice_in_dim
            batch_loss, batch_correct = totals(
                params,
                model_state,
                sl(images, i * batch_size, batch_size),
                sl(labels, i * batch_size, batch_size),
            )
            return (acc[0] + batch_loss, acc[1] + batch_correct), None

        total_loss, correct = 0.0, 0
        if whole:
            (total_loss, correct), _ = jax.lax.scan(body, (0.0, 0), jnp.arange(whole))
        if n % batch_size:
            rest_loss, rest_correct = totals(
                params, model_state, images[whole * batch_size :], labels[whole * batch_size :]
            )
            total_loss, correct = total_loss + rest_loss, correct + rest_correct
        return total_loss / n, correct / n

    return jax.jit(evaluate)


def fit(
    model,
    loss,
    data,
    *,
    epochs,
    batch_size,
    opt,
    key,
    input_shape,
    grad="manual",
    checkpoint_path=None,
    resume=False,
    progress=True,
    eval_every_epoch=True,
    log=print,
    mesh=None,
):
    """Train for `epochs` whole epochs; return (state, history).

    data: (x_train, y_train, x_test, y_test) numpy arrays (images uint8 or float).
    history: one dict per epoch (train/test loss and accuracy, seconds) and `step_losses`.
    train_seconds counts training only (compilation included; evaluation and loading excluded);
    compile_seconds is the compilation part of it.
    A NaN/inf loss raises TrainingDiverged; the checkpoint of the last good epoch stays.
    mesh: data parallelism over its devices (batch_size must divide evenly among them).
    """
    if mesh is not None and batch_size % mesh.size:
        raise ValueError(f"batch size {batch_size} does not split evenly over {mesh.size} devices")
    place = jax.device_put if mesh is None else (lambda a: parallel.replicate(a, mesh))
    x_train, y_train, x_test, y_test = (place(a) for a in data)
    epoch_fn = make_epoch(model, loss, opt, batch_size, input_shape, grad, mesh)
    evaluate = make_evaluate(model, loss, input_shape)
    state = init_state(model, opt, key, input_shape)
    if mesh is not None:
        state = parallel.replicate(state, mesh)
    history, start_epoch = {"epochs": [], "step_losses": [], "train_seconds": 0.0}, 0
    if resume and checkpoint_path and os.path.exists(checkpoint_path):
        state, meta = checkpoint.restore(checkpoint_path, like=state)
        if mesh is not None:
            state = parallel.replicate(state, mesh)
        history, start_epoch = meta["history"], meta["epoch"]
        log(f"resumed from {checkpoint_path} after epoch {start_epoch}")

    t0 = time.perf_counter()
    epoch_fn = epoch_fn.lower(state, x_train, y_train).compile()  # ahead of time: its cost is reported
    history["compile_seconds"] = time.perf_counter() - t0
    history["train_seconds"] += history["compile_seconds"]
    bar = tqdm(
        range(start_epoch, epochs),
        desc="epochs",
        unit="epoch",
        total=epochs,
        initial=start_epoch,
        disable=not progress,
    )
    for epoch in bar:
        t0 = time.perf_counter()
        new_state, losses, accs = epoch_fn(state, x_train, y_train)
        losses = np.asarray(losses)  # waits for the epoch to finish
        seconds = time.perf_counter() - t0
        if not np.all(np.isfinite(losses)):
            bad = int(np.argmax(~np.isfinite(losses)))
            kept = f"; the last good checkpoint is {checkpoint_path}" if checkpoint_path and epoch > 0 else ""
            history["step_losses"].extend(float(v) for v in losses[: bad + 1])
            err = TrainingDiverged(
                f"loss became {losses[bad]} at step {bad} of epoch {epoch + 1} "
                f"(learning rate too large?); stopped{kept}"
            )
            err.history = history  # the run up to the first non-finite loss, for plotting
            raise err
        state = new_state
        history["train_seconds"] += seconds
        row = {
            "epoch": epoch + 1,
            "train_loss": float(losses.mean()),
            "train_accuracy": float(np.mean(accs)),
            "seconds": seconds,
            "samples_per_second": losses.size * batch_size / seconds,
        }
        if eval_every_epoch or epoch + 1 == epochs:
            test_loss, test_acc = evaluate(state.params, x_test, y_test, state.model_state)
            row.update(test_loss=float(test_loss), test_accuracy=float(test_acc))
        history["epochs"].append(row)
        history["step_losses"].extend(float(v) for v in losses)
        bar.set_postfix(
            loss=f"{row['train_loss']:.4f}",
            acc=f"{row['train_accuracy']:.4f}",
            test=f"{row.get('test_accuracy', float('nan')):.4f}",
            sps=f"{row['samples_per_second']:.0f}",
        )
        if checkpoint_path:
            checkpoint.save(checkpoint_path, state, {"epoch": epoch + 1, "history": history})
    return state, history
