"""One training step, and epochs of them as one `lax.scan`: the TrainState, its options, its order.

    opt = optimizer("adam", 1e-3)
    state = init_state(model, opt, key, input_shape=(784,))
    epoch = make_epoch(model, loss, opt, batch_size=128, input_shape=(784,))
    # metrics.loss: (steps,)
    state, metrics = epoch(state, images_uint8_on_device, labels_on_device)

The dataset lives on the device as uint8 and each batch is scaled to the parameters' dtype inside
the step, so device memory stays at the dataset's own size. Each epoch's order is a permutation
drawn on the host from the state's key (`epoch_order`), so the same seed gives the same run, bit for
bit on the CPU, through `fit`, `make_epoch` and the ensemble alike.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import parallel
from ..core import Layer, model_input_shape
from ..curvature import KFAC, kfac_step_gradients
from ..errors import InputError
from ..gradients import check_mode, value_and_grad
from ..losses import LossFn, accuracy
from ..renamed import STEPS, removed_keywords
from ..types import DTypeLike, PRNGKey, Shape
from .checks import check_batch_size, check_positive_int
from .compile import model_compiler_options


class TrainState(NamedTuple):
    """Everything a run carries from step to step, one pytree.

    **Fields:**

    - `params`: the model's parameters.
    - `opt_state`: the optimiser's state.
    - `step`: the number of steps taken (int32 scalar).
    - `key`: the PRNG key for the epoch orders, Dropout and augmentation.
    - `model_state`: the model's state (BatchNorm's running statistics; `()` for most), updated every step.
    """

    params: Any
    opt_state: Any
    step: Any
    key: Any
    model_state: Any = ()


class StepMetrics(NamedTuple):
    """What a training step measured; stacked along a leading axis for a scan of steps.

    **Fields:**

    - `loss`: the training loss of the batch.
    - `accuracy`: the fraction of the batch classified right (NaN for targets that are not class
      labels: an autoencoder's images, a regression's values).
    - `grad_norm`: the global L2 norm of the gradient (all leaves together), before the optimiser.
    """

    loss: Any
    accuracy: Any
    grad_norm: Any


class TrainOptions(NamedTuple):
    """How a step trains, beyond the model, loss and optimiser.

    **Fields:**

    - `mode`: "manual" (the layers' own backward passes) or "autodiff" (`jax.grad`).
    - `augment`: a function `(key, x) -> x` applied to each training batch inside the step (see
      `jaxnn.augment.augmentation`), or None.
    - `test_loss`: the loss `fit` reports on the test set when it is not the training loss (e.g. plain
      cross-entropy for a model trained with label smoothing), or None.
    - `mesh`: a device mesh (`parallel.data_mesh`) to split each batch over, or None for one device.
    - `dtype`: the parameters' dtype; inputs are scaled to it (float64 for exact comparisons).
    """

    mode: str = "manual"
    augment: Callable[[Any, Any], Any] | None = None
    test_loss: LossFn | None = None
    mesh: Any = None
    dtype: DTypeLike = jnp.float32


def init_state(
    model: Layer,
    opt: optax.GradientTransformation,
    key: PRNGKey,
    input_shape: Shape | None = None,
    dtype: DTypeLike = jnp.float32,
) -> TrainState:
    """The run's first TrainState.

    **Arguments:**

    - `model`, `opt`: the Layer and the optax optimiser.
    - `key`: the run's PRNG key (split into the parameters' and the data's).
    - `input_shape`: the shape of one example (default `model.input_shape`).
    - `dtype`: the parameters' dtype.

    **Returns:** params from `model.init`, the optimiser's state, step 0, a data key and the model's
    own state (`model.init_state`).
    """
    input_shape = model_input_shape(model, input_shape, "init_state")
    init_key, data_key = jax.random.split(key)
    _, params = model.init(init_key, input_shape, dtype=dtype)
    model_state = model.init_state(input_shape, dtype=dtype)
    return TrainState(params, opt.init(params), jnp.zeros((), jnp.int32), data_key, model_state)


def to_inputs(images: Any, input_shape: Shape, dtype: DTypeLike = jnp.float32) -> Any:
    """Images as a model's inputs.

    **Arguments:**

    - `images`: a batch `(batch, ...)`, uint8 (scaled to [0, 1]) or numbers (cast as they are).
    - `input_shape`: the shape of one example.
    - `dtype`: the inputs' dtype.

    **Returns:** `(batch, *input_shape)` in `dtype`.
    """
    x = images.astype(dtype)
    if images.dtype == jnp.uint8:
        x = x * (1.0 / 255.0)
    return x.reshape((images.shape[0],) + tuple(input_shape))


@removed_keywords(**STEPS)
def make_step(
    model: Layer,
    loss: LossFn | Callable,
    opt: optax.GradientTransformation,
    input_shape: Shape | None = None,
    options: TrainOptions = TrainOptions(),
) -> Callable[..., Any]:
    """One training step, not yet jitted.

    **Arguments:**

    - `model`, `loss`, `opt`: the Layer, the loss (a Loss or a plain function) and the optax optimiser.
    - `input_shape`: the shape of one example, to which each batch is reshaped and scaled; None
      passes batches through as they are.
    - `options`: `mode`, `augment`, `mesh` (see TrainOptions).

    **Returns:** `step(state, images, labels) -> (state, StepMetrics)`; jit it or scan it. With a mesh,
    each batch is split over its "data" axis. The augmentation's key is drawn from the state's key and
    step, like Dropout's.
    """
    gradients = _gradients(model, loss, opt, check_mode(options.mode, "make_step"))

    def step(state, images, labels):
        x = images if input_shape is None else to_inputs(images, input_shape, options.dtype)
        if options.mesh is not None:
            x, labels = parallel.shard_batch(x, options.mesh), parallel.shard_batch(labels, options.mesh)
        step_key = jax.random.fold_in(state.key, state.step)
        if options.augment is not None:
            x = options.augment(jax.random.fold_in(step_key, 1), x)
        key = step_key if model.stochastic or isinstance(opt, KFAC) else None  # Dropout, K-FAC's sample
        (value, out, model_state), grads, curvature = gradients(
            state.params, x, labels, key, state.model_state
        )
        updates, opt_state = opt.update(grads, state.opt_state, state.params, **curvature)
        params = optax.apply_updates(state.params, updates)
        new = state._replace(params=params, opt_state=opt_state, step=state.step + 1, model_state=model_state)
        hits = accuracy(out, labels) if jnp.issubdtype(labels.dtype, jnp.integer) else jnp.nan  # targets
        return new, StepMetrics(value, hits, optax.global_norm(grads))

    return step


def _gradients(model: Layer, loss: LossFn | Callable, opt: Any, mode: str) -> Callable[..., Any]:
    """`g(params, x, labels, key, model_state) -> ((loss, outputs, new_state), grads, kwargs)`, with
    kwargs what `opt.update` takes beside the gradient: nothing, or a K-FAC optimiser's curvature."""
    if isinstance(opt, KFAC):
        if mode != "manual":
            raise InputError("a K-FAC optimiser reads the hand-derived Kronecker factors: use mode='manual'")
        f = kfac_step_gradients(model, loss)

        def with_curvature(params, x, labels, key, model_state):
            state = model_state if model.stateful else None
            (value, out, new_state), grads, kwargs = f(params, x, labels, key, state=state)
            return (value, out, new_state if model.stateful else model_state), grads, kwargs

        return with_curvature
    f = value_and_grad(model, loss, mode, with_outputs=True)

    def plain(params, x, labels, key, model_state):
        (value, out, new_state), grads = f(params, x, labels, key, state=model_state, train=True)
        return (value, out, new_state), grads, {}

    return plain


def epoch_order(state: TrainState, n: int, batch_size: int) -> tuple[TrainState, np.ndarray]:
    """An epoch's order of examples, drawn on the host by NumPy from the state's key.

    **Arguments:**

    - `state`: the TrainState (its key must be a concrete array, not traced).
    - `n`: the number of examples.
    - `batch_size`: examples per step.

    **Returns:** `(state with its key advanced, order)`, order an int32 NumPy array
    `(n // batch_size, batch_size)` of indices; the last `n % batch_size` examples of the permutation
    sit this epoch out. The order is the same on every process and platform for the same key.
    """
    key, perm_key = _draw_key(state.key)
    return state._replace(key=key), _permutation(perm_key, n, batch_size)


def _draw_key(key: Any) -> tuple[Any, Any]:
    key, perm_key = jax.random.split(key)
    return key, perm_key


def _permutation(perm_key: Any, n: int, batch_size: int) -> np.ndarray:
    steps = n // batch_size
    rng = np.random.default_rng(np.asarray(jax.random.key_data(perm_key)))
    return rng.permutation(n)[: steps * batch_size].reshape(steps, batch_size).astype(np.int32)


@removed_keywords(**STEPS)
def steps_function(
    model: Layer,
    loss: LossFn | Callable,
    opt: optax.GradientTransformation,
    input_shape: Shape | None = None,
    options: TrainOptions = TrainOptions(),
) -> Callable[..., Any]:
    """Many steps as one `lax.scan`, not yet jitted.

    **Arguments:** `model`, `loss`, `opt`, `input_shape` and `options`, as for `make_step`.

    **Returns:** `run(state, images, labels, order) -> (state, metrics)`: one step per row of `order`
    (batches of indices into the on-device dataset); `metrics` is a StepMetrics of `(steps,)` arrays.
    """
    step = make_step(model, loss, opt, input_shape, options)

    def run(state, images, labels, order):
        def body(s, idx):
            return step(s, images[idx], labels[idx])

        return jax.lax.scan(body, state, order)

    return run


@removed_keywords(**STEPS)
def make_epoch(
    model: Layer,
    loss: LossFn | Callable,
    opt: optax.GradientTransformation,
    batch_size: int,
    input_shape: Shape | None = None,
    options: TrainOptions = TrainOptions(),
) -> Callable[..., Any]:
    """A whole epoch: a fresh order (`epoch_order`), then one compiled `lax.scan` over it.

    **Arguments:**

    - `model`, `loss`, `opt`: as for `make_step`.
    - `batch_size`: examples per step.
    - `input_shape`: the shape of one example (default `model.input_shape`).
    - `options`: see TrainOptions.

    **Returns:** `epoch(state, images, labels) -> (state, metrics)`, metrics a StepMetrics of `(steps,)`
    arrays. The scan is jitted with the state's buffers donated, and compiles with
    `model_compiler_options`, as `fit` does.
    """
    input_shape = model_input_shape(model, input_shape, "make_epoch")
    check_positive_int("batch_size", batch_size)
    run = jax.jit(
        steps_function(model, loss, opt, input_shape, options),
        donate_argnums=0,
        compiler_options=model_compiler_options(model, input_shape),
    )

    def epoch(state, images, labels):
        check_batch_size(batch_size, images.shape[0])
        state, order = epoch_order(state, images.shape[0], batch_size)
        return run(state, images, labels, order)

    return epoch


def init_ensemble(
    model: Layer, opt: optax.GradientTransformation, keys: Any, input_shape: Shape | None = None
) -> TrainState:
    """K TrainStates stacked along a leading axis, one per key (`jax.vmap` of `init_state`).

    **Arguments:**

    - `model`, `opt`: the Layer and the optax optimiser.
    - `keys`: K PRNG keys, `(K, ...)`.
    - `input_shape`: the shape of one example (default `model.input_shape`).

    **Returns:** a TrainState whose every leaf has a leading axis of K.
    """
    input_shape = model_input_shape(model, input_shape, "init_ensemble")
    return jax.vmap(lambda k: init_state(model, opt, k, input_shape))(keys)


@removed_keywords(**STEPS)
def make_ensemble_epoch(
    model: Layer,
    loss: LossFn | Callable,
    opt: optax.GradientTransformation,
    batch_size: int,
    input_shape: Shape | None = None,
    options: TrainOptions = TrainOptions(),
) -> Callable[..., Any]:
    """An epoch of K models in one compiled program: `make_epoch` vmapped over K stacked TrainStates.

    **Arguments:** `model`, `loss`, `opt`, `batch_size`, `input_shape` and `options`, as for `make_epoch`.

    **Returns:** `epoch(states, images, labels) -> (states, metrics)`, metrics a StepMetrics of
    `(K, steps)` arrays.
    Each member draws its own order from its own key (as `epoch_order` would for it alone); the data
    are shared. Members may differ in seed, and in learning rate via `optax.inject_hyperparams`.
    """
    input_shape = model_input_shape(model, input_shape, "make_ensemble_epoch")
    check_positive_int("batch_size", batch_size)
    run = jax.jit(
        jax.vmap(steps_function(model, loss, opt, input_shape, options), in_axes=(0, None, None, 0)),
        donate_argnums=0,
        compiler_options=model_compiler_options(model, input_shape),
    )

    def epoch(states, images, labels):
        n = images.shape[0]
        check_batch_size(batch_size, n)
        drawn = [_draw_key(key) for key in states.key]
        keys = jnp.stack([key for key, _ in drawn])
        orders = np.stack([_permutation(perm_key, n, batch_size) for _, perm_key in drawn])
        return run(states._replace(key=keys), images, labels, orders)

    return epoch
