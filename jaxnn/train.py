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

import functools
import math
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from . import checkpoint, parallel
from .core import check_params, output_shape
from .errors import CheckpointError, DataError, InputError, TrainingDiverged
from .gradients import value_and_grad
from .losses import accuracy


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    step: Any  # int32 scalar
    key: Any  # PRNG key for permutations (and dropout)
    model_state: Any = ()  # the model's state (BatchNorm's running statistics), updated every step


OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle", "warmup_cosine")


def schedule(kind, learning_rate, total_steps=None):
    """A learning-rate schedule: constant, cosine decay, one-cycle, or linear warmup + cosine."""
    if kind == "constant":
        return learning_rate
    if total_steps is None or total_steps < 1:
        raise InputError(f"schedule {kind!r} needs total_steps >= 1, got {total_steps}")
    if kind == "cosine":
        return optax.cosine_decay_schedule(learning_rate, total_steps)
    if kind == "onecycle":
        return optax.cosine_onecycle_schedule(total_steps, learning_rate)
    if kind == "warmup_cosine":
        warmup = max(1, total_steps // 20)
        return optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup, total_steps)
    raise InputError(f"unknown schedule {kind!r}; choose from {SCHEDULES}")


def optimizer(
    name="adam",
    learning_rate=1e-3,
    schedule_kind="constant",
    total_steps=None,
    momentum=0.9,
    weight_decay=None,
):
    """An optax optimizer. "sgd" is the lecture's gradient descent, W <- W - lr * dL/dW.

    weight_decay: AdamW's decoupled decay (default 1e-4); for the SGD family an L2 term
    weight_decay * W added to the gradient (default none), as ResNet recipes use it.
    """
    lr = schedule(schedule_kind, learning_rate, total_steps)
    if name == "adamw":
        return optax.adamw(lr, weight_decay=1e-4 if weight_decay is None else weight_decay)
    if name == "sgd":
        opt = optax.sgd(lr)
    elif name == "momentum":
        opt = optax.sgd(lr, momentum=momentum)
    elif name == "nesterov":
        opt = optax.sgd(lr, momentum=momentum, nesterov=True)
    elif name == "adam":
        opt = optax.adam(lr)
    else:
        raise InputError(f"unknown optimizer {name!r}; choose from {OPTIMIZERS}")
    if weight_decay:
        if name == "adam":
            raise InputError("weight decay with Adam: use optimizer 'adamw' (decoupled decay)")
        opt = optax.chain(optax.add_decayed_weights(weight_decay), opt)
    return opt


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


def make_step(model, loss, opt, grad="manual", input_shape=None, mesh=None, augment=None):
    """step(state, images, labels) -> (state, (loss, accuracy)); jit it or scan it.

    With a mesh (see `parallel.data_mesh`), each batch is split over the mesh's "data" axis.
    augment: a function (key, x) -> x applied to each batch (see `jaxnn.augment.augmentation`),
    its key drawn from the state's key and step like Dropout's.
    """
    f = value_and_grad(model, loss, grad, with_outputs=True)

    def step(state, images, labels):
        x = images if input_shape is None else to_inputs(images, input_shape)
        if mesh is not None:
            x, labels = parallel.shard_batch(x, mesh), parallel.shard_batch(labels, mesh)
        step_key = jax.random.fold_in(state.key, state.step)
        if augment is not None:
            x = augment(jax.random.fold_in(step_key, 1), x)
        key = step_key if model.stochastic else None  # for Dropout
        (value, out, model_state), grads = f(
            state.params, x, labels, key, state=state.model_state, train=True
        )
        updates, opt_state = opt.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new = state._replace(params=params, opt_state=opt_state, step=state.step + 1, model_state=model_state)
        return new, (value, accuracy(out, labels))

    return step


def epoch_order(state, n, batch_size):
    """The epoch's permutation, drawn from the state's key: (state with its key advanced, order), order
    (steps, batch_size) indices. The last n % batch_size examples of the permutation sit this epoch out.
    Traceable: the jitted epoch (`epoch_function`) draws its order inside the compiled program."""
    steps = n // batch_size
    key, perm_key = jax.random.split(state.key)
    order = jax.random.permutation(perm_key, n)[: steps * batch_size].reshape(steps, batch_size)
    return state._replace(key=key), order


def host_epoch_order(state, n, batch_size):
    """epoch_order's contract, with the permutation drawn by NumPy on the host from the state's key
    (`fit` uses it). On a CPU XLA's sort-based permutation of 60,000 indices took 22 ms a call and
    0.2 s to compile, a quarter of a 3-epoch MLP run; NumPy's takes 1 ms. The order, a NumPy array,
    is the same on every process and every platform for the same key."""
    steps = n // batch_size
    key, perm_key = jax.random.split(state.key)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(perm_key)))
    order = rng.permutation(n)[: steps * batch_size].reshape(steps, batch_size).astype(np.int32)
    return state._replace(key=key), order


def steps_function(model, loss, opt, input_shape, grad="manual", mesh=None, augment=None):
    """run(state, images, labels, order) -> (state, step_losses, step_accuracies): one `lax.scan`
    over the rows of order (batches of indices into the on-device dataset); not yet jitted."""
    step = make_step(model, loss, opt, grad, input_shape, mesh, augment)

    def run(state, images, labels, order):
        def body(s, idx):
            return step(s, images[idx], labels[idx])

        state, (losses, accs) = jax.lax.scan(body, state, order)
        return state, losses, accs

    return run


def epoch_function(model, loss, opt, batch_size, input_shape, grad="manual", mesh=None, augment=None):
    """epoch(state, images, labels) -> (state, step_losses, step_accuracies), not yet jitted:
    one `lax.scan` over a fresh permutation of the whole (on-device) dataset."""
    check_positive_int("batch_size", batch_size)
    run = steps_function(model, loss, opt, input_shape, grad, mesh, augment)

    def epoch(state, images, labels):
        n = images.shape[0]
        if n < batch_size:
            raise InputError(f"batch size {batch_size} is larger than the dataset ({n} examples)")
        state, order = epoch_order(state, n, batch_size)
        return run(state, images, labels, order)

    return epoch


def make_epoch(model, loss, opt, batch_size, input_shape, grad="manual", mesh=None, augment=None):
    """The jitted epoch (see `epoch_function`); the state's buffers are donated and reused. It
    compiles with `model_compiler_options`, as `fit` does."""
    epoch = epoch_function(model, loss, opt, batch_size, input_shape, grad, mesh, augment)
    return jax.jit(epoch, donate_argnums=0, compiler_options=model_compiler_options(model, input_shape))


def make_ensemble_epoch(model, loss, opt, batch_size, input_shape, grad="manual"):
    """K models in one compiled program: the epoch vmapped over a leading axis of K stacked
    TrainStates (different seeds, and learning rates via optax.inject_hyperparams). Each member
    draws its own permutation from its own key; the data are shared."""
    epoch = epoch_function(model, loss, opt, batch_size, input_shape, grad)
    options = model_compiler_options(model, input_shape)
    return jax.jit(jax.vmap(epoch, in_axes=(0, None, None)), donate_argnums=0, compiler_options=options)


def init_ensemble(model, opt, keys, input_shape):
    """K stacked TrainStates, one per key (vmap of init_state)."""
    return jax.vmap(lambda k: init_state(model, opt, k, input_shape))(keys)


def make_evaluate(model, loss, input_shape, batch_size=1000, flip=False):
    """evaluate(params, images, labels, model_state=None) -> (mean loss, accuracy) over the whole set,
    in evaluation mode (train=False: BatchNorm uses the running statistics of model_state).

    flip=True: test-time flip averaging for images (input_shape (H, W, C)): the model sees each
    image and its left-right mirror, and the loss and accuracy are those of log(mean of the two
    softmax outputs), logits whose softmax is that mean.

    The arrays are checked first (outside jit: lengths, shapes, finiteness, label range, not empty).
    Whole batches run under one `lax.scan`; a last, partial batch runs once after it. Each batch's
    mean loss is weighted by its size, so the result is the mean over all examples. It compiles
    with `model_compiler_options`, as `fit`'s training does.
    """
    check_positive_int("batch_size", batch_size)
    input_shape = tuple(input_shape)
    classes = output_classes(model, input_shape)
    if flip and len(input_shape) != 3:
        raise InputError(f"flip=True needs images (H, W, C), not inputs of shape {input_shape}")

    def outputs(params, model_state, x):
        out = model.apply(params, x, state=model_state, train=False)
        return out if model_state is None else out[0]

    def totals(params, model_state, images, labels):
        x = to_inputs(images, input_shape)
        out = outputs(params, model_state, x)
        if flip:
            mirrored = outputs(params, model_state, x[:, :, ::-1])
            # log((softmax(a) + softmax(b)) / 2) from the log-softmaxes: finite where a softmax underflows
            log_p = [jax.nn.log_softmax(o.astype(jnp.float32)) for o in (out, mirrored)]
            out = jnp.logaddexp(*log_p) - jnp.log(2.0)
        return loss(out, labels) * labels.shape[0], jnp.sum(jnp.argmax(out, 1) == labels)

    def run(params, images, labels, model_state):
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
            rest = slice(whole * batch_size, None)
            rest_loss, rest_correct = totals(params, model_state, images[rest], labels[rest])
            total_loss, correct = total_loss + rest_loss, correct + rest_correct
        return total_loss / n, correct / n

    run = jax.jit(run, compiler_options=model_compiler_options(model, input_shape))

    def evaluate(params, images, labels, model_state=None):
        if not isinstance(images, jax.core.Tracer):
            check_data(images, labels, input_shape, classes, "evaluation")
        return run(params, images, labels, model_state)

    evaluate.unchecked = run  # for callers that checked the arrays already (fit, once per run)
    return evaluate


# --- checks where the data enter, outside jit ------------------------------------------------------


def check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")


def output_classes(model, input_shape):
    """The number of classes a model's output row holds (its last axis), or None if not a vector."""
    out = output_shape(model, input_shape)
    return out[0] if len(out) == 1 else None


def check_data(images, labels, input_shape, classes, what):
    """Raise DataError unless images and labels are a usable set for a model reading input_shape:
    equal lengths, not empty, images numeric, finite and of the input's size, labels integers in
    [0, classes). Runs on the host, outside jit, once."""
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
    if np.ndim(labels) != 1 or not np.issubdtype(np.dtype(jnp.result_type(labels)), np.integer):
        raise DataError(
            f"{what} labels must be integers of shape (n,), got {jnp.result_type(labels)}{np.shape(labels)}"
        )
    if classes is not None:
        host_labels = np.asarray(labels)
        low, high = int(host_labels.min()), int(host_labels.max())
        if low < 0 or high >= classes:
            raise DataError(
                f"{what} labels must lie in [0, {classes}) for the model's {classes} outputs, "
                "got values from "
                f"{low} to {high}"
            )


def all_finite(tree):
    """True when every leaf of tree is finite (no NaN or inf anywhere). Checked on the host with
    NumPy: as a jitted program it took 0.1 s to compile, a tenth of the main job, and as part of
    fit's program about as much."""
    return all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree_util.tree_leaves(tree))


# --- fit ---------------------------------------------------------------------------------------------

# XLA's CPU default hands single dots, single convolutions and reductions to YNNPACK; adding
# element-wise ops lets YNNPACK fuse a convolution with its neighbours (bias add, ReLU, max) and run
# it on every core, where a lone convolution runs on one. Measured on 2 cores (jax 0.10.2, issue 10):
# the small MNIST CNN's scanned step 20.8 -> 18.8 ms, the ResNet's 189 -> 161 ms; the MLP's was
# 20% slower with it, so only programs with convolutions get it.
_CPU_CONV_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": ",".join(
        f"LIBRARY_FUSION_TYPE_{kind}"
        for kind in ("INDIVIDUAL_DOT", "INDIVIDUAL_CONVOLUTION", "REDUCE", "ELTWISE")
    )
}


def compiler_options(lowered):
    """XLA options for compiling `lowered` (a `jax.jit(f).lower(...)` program) on this backend:
    _CPU_CONV_OPTIONS for a CPU program with convolutions, else None (XLA's defaults)."""
    return _options_for(has_convolution="convolution" in lowered.as_text())


def _options_for(has_convolution):
    if jax.default_backend() != "cpu" or not has_convolution:
        return None
    return dict(_CPU_CONV_OPTIONS)


def known_options(options):
    """options if this XLA compiles with them, else None (its defaults): the options are
    experimental, and an XLA that no longer knows one refuses to compile with it."""
    if not options:
        return None
    return options if _compiles_with(tuple(sorted(options.items()))) else None


@functools.cache
def _compiles_with(option_items):
    try:
        jax.jit(lambda x: x + 1, compiler_options=dict(option_items)).lower(np.float32(0)).compile()
    except jax.errors.JaxRuntimeError:
        return False
    return True


def compile_lowered(lowered):
    """(compiled, options): lowered.compile(options) with options = compiler_options(lowered) where
    this XLA knows them, else None (XLA's defaults)."""
    options = known_options(compiler_options(lowered))
    return lowered.compile(options), options


def model_compiler_options(model, input_shape):
    """compiler_options for the programs that run `model`, decided before any data are seen from
    the jaxpr of its init and forward pass on one example (traced, not run or compiled; a few ms).
    For jitting a function of the model: `jax.jit(f, compiler_options=model_compiler_options(model,
    (28, 28, 1)))`, as make_epoch and make_evaluate do."""
    input_shape = tuple(input_shape)

    def forward(key):
        _, params = model.init(key, input_shape)
        x = jnp.zeros((1,) + input_shape)
        return model.apply(params, x, state=model.init_state(input_shape), train=False)

    jaxpr = jax.make_jaxpr(forward)(jax.random.PRNGKey(0))
    return known_options(_options_for(has_convolution="conv_general_dilated" in str(jaxpr)))


def chunk_steps(steps, checkpoint_every):
    """Steps per compiled call: the whole epoch, or with checkpoint_every about an eighth of it
    (a divisor of steps when one is near, so that one compiled program serves every chunk)."""
    if checkpoint_every is None:
        return steps
    target = max(1, steps // 8)
    best = min((d for d in range(1, steps + 1) if steps % d == 0), key=lambda d: abs(d - target))
    return best if best >= target / 2 else target


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
    checkpoint_every=None,
    augment=None,
    test_loss=None,
):
    """Train for `epochs` whole epochs; return (state, history).

    data: (x_train, y_train, x_test, y_test) arrays (images uint8 or float), checked first: equal
    lengths, finite, labels in range, not empty (DataError). history: one dict per epoch (train/test
    loss and accuracy, seconds) and `step_losses`. train_seconds counts training only (compilation
    included; evaluation and loading excluded); compile_seconds is the compilation part of it.

    A NaN/inf loss or parameter raises TrainingDiverged; the last good checkpoint stays. A model
    whose last epoch is no more accurate than always answering the most frequent class (a
    collapsed net, e.g. dead ReLUs after too large a step) is reported through `log` as a warning
    and marked history["learned_nothing"] = True.
    checkpoint_path: saved after every epoch (atomically) and, with checkpoint_every=SECONDS, also
    within an epoch once that many seconds have passed since the last save, so that a kill loses at
    most that much work; resume=True continues from it, bit for bit as if never stopped (CPU).
    A checkpoint that cannot be read is renamed aside (PATH.corrupt-TIME) and reported.
    mesh: data parallelism over its devices (batch_size must divide evenly among them).
    augment: (key, x) -> x applied to every training batch inside the step (jaxnn.augment).
    test_loss: the loss reported on the test set, when it is not the training loss (e.g. plain
    softmax_cross_entropy for a model trained with losses.smoothed_cross_entropy).
    """
    check_positive_int("epochs", epochs)
    check_positive_int("batch_size", batch_size)
    if checkpoint_every is not None and not checkpoint_every >= 0:
        raise InputError(f"checkpoint_every must be a number of seconds >= 0, got {checkpoint_every!r}")
    if mesh is not None and batch_size % mesh.size:
        raise InputError(f"batch size {batch_size} does not split evenly over {mesh.size} devices")
    input_shape = tuple(input_shape)
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
    chunk = chunk_steps(steps, checkpoint_every)
    steps_fn = steps_function(model, loss, opt, input_shape, grad, mesh, augment)
    run = jax.jit(steps_fn, donate_argnums=0)
    evaluate = make_evaluate(model, test_loss or loss, input_shape).unchecked  # test set checked above
    state = init_state(model, opt, key, input_shape)
    order = np.zeros((steps, batch_size), np.int32)  # on the host; each chunk's rows are placed as
    # they are needed (slicing a device array compiled a program for every new chunk start)
    if mesh is not None:
        state = parallel.replicate(state, mesh)
    history = {"epochs": [], "step_losses": [], "train_seconds": 0.0}
    start_epoch, position, partial = 0, 0, {"losses": [], "accuracies": []}
    if resume and checkpoint_path and os.path.exists(checkpoint_path):
        state, order, meta = _resume(checkpoint_path, state, order, model, input_shape)
        state, order = (state if mesh is None else parallel.replicate(state, mesh)), np.asarray(order)
        history, start_epoch, position, partial = (
            meta["history"],
            meta["epoch"],
            meta["position"],
            meta["partial"],
        )
        where = f" and {position} of {steps} steps of epoch {start_epoch + 1}" if position else ""
        log(f"resumed from {checkpoint_path} after epoch {start_epoch}{where}")

    writes = checkpoint_path and parallel.is_main_process()  # across processes, process 0 writes

    def save(epoch, position, partial):
        if not writes:
            return
        meta = {"epoch": epoch, "position": position, "partial": partial, "history": history, "format": 2}
        checkpoint.save(checkpoint_path, (state, order), meta)

    t0 = time.perf_counter()  # compiled ahead of time, so that its cost is reported
    compiled, options = compile_lowered(run.lower(state, x_train, y_train, place(order[:chunk])))
    if options:  # a last, shorter chunk compiles with the same options
        run = jax.jit(steps_fn, donate_argnums=0, compiler_options=options)
    history["compile_seconds"] = time.perf_counter() - t0
    history["train_seconds"] += history["compile_seconds"]
    bar = tqdm(
        range(start_epoch, epochs),
        desc="epochs",
        unit="epoch",
        total=epochs,
        initial=start_epoch,
        disable=not progress or not parallel.is_main_process(),
    )
    last_save = time.monotonic()
    for epoch in bar:
        t0 = time.perf_counter()
        if position == 0:
            state, order = host_epoch_order(state, len(data[0]), batch_size)
        while position < steps:
            end = min(position + chunk, steps)
            call = compiled if end - position == chunk else run
            new_state, losses, accs = call(state, x_train, y_train, place(order[position:end]))
            losses = np.asarray(losses)  # waits for the chunk to finish
            _stop_if_diverged(losses, new_state, epoch, position, history, partial, checkpoint_path)
            state, position = new_state, end
            partial["losses"] += [float(v) for v in losses]
            partial["accuracies"] += [float(v) for v in np.asarray(accs)]
            if checkpoint_path and checkpoint_every is not None and position < steps:
                if time.monotonic() - last_save >= checkpoint_every:
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
        if eval_every_epoch or epoch + 1 == epochs:
            test_loss, test_acc = evaluate(state.params, x_test, y_test, state.model_state)
            row.update(test_loss=float(test_loss), test_accuracy=float(test_acc))
        history["epochs"].append(row)
        history["step_losses"].extend(partial["losses"])
        position, partial = 0, {"losses": [], "accuracies": []}
        bar.set_postfix(
            loss=f"{row['train_loss']:.4f}",
            acc=f"{row['train_accuracy']:.4f}",
            test=f"{row.get('test_accuracy', float('nan')):.4f}",
            sps=f"{row['samples_per_second']:.0f}",
        )
        if checkpoint_path:
            save(epoch + 1, 0, partial)
            last_save = time.monotonic()
    _warn_if_learned_nothing(history, data[1], log)
    return state, history


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
    try:
        (state, order), meta = checkpoint.fill(path, contents, like=(state, order))
    except CheckpointError as e:
        raise CheckpointError(
            f"cannot resume: {e}; resume needs a checkpoint of the same model, batch size and dataset size"
        ) from e
    needed = {"epoch": int, "position": int, "partial": dict, "history": dict}
    missing = [k for k, t in needed.items() if not isinstance(meta.get(k), t)]
    if missing:
        raise CheckpointError(
            f"cannot resume from {path}: it has no training metadata ({', '.join(missing)} "
            "missing); it was not written by train.fit"
        )
    check_params(model, state.params, input_shape)
    return state, order, meta


def load_checkpoint(path, like):
    """(state, meta) from a checkpoint written by `fit`; like: a TrainState of the same model (e.g.
    from init_state). fit stores (state, the epoch's batch order) so that it can resume mid-epoch."""
    contents = checkpoint.read(path)
    arrays = contents[1]
    order_like = np.zeros(arrays[-1].shape, np.int32) if arrays else np.zeros((0,), np.int32)
    (state, _), meta = checkpoint.fill(path, contents, like=(like, order_like))
    return state, meta
