"""Training: optimisers, the jitted step, whole epochs as one `lax.scan`, evaluation, and `fit`.

    from jaxnn import train
    opt = train.optimizer("adam", 1e-3)
    state, history = train.fit(model, loss, (x_train, y_train, x_test, y_test),
                               opt=opt, key=jax.random.PRNGKey(0), epochs=3, batch_size=128)

One idea per module: `optim` (optimisers and schedules by name), `step` (the TrainState, one step,
epochs of steps, ensembles), `evaluate` (a whole set in evaluation mode), `checks` (the data, on the
host, before anything compiles), `compile` (XLA options for a model's programs) and `fit` (the loop
with checkpoints, resume and progress). `train` knows nothing of datasets on disk: it takes arrays.
"""

from ..renamed import removed_attribute
from .checks import all_finite, check_data, check_positive_int, output_classes
from .compile import compile_lowered, compiler_options, known_options, model_compiler_options
from .evaluate import make_evaluate, sum_over_batches
from .fit import Checkpointing, Reporting, chunk_steps, fit, in_chunks, load_checkpoint
from .optim import OPTIMIZERS, SCHEDULES, optimizer, schedule, weight_decay_refusal
from .step import (
    StepMetrics,
    TrainOptions,
    TrainState,
    epoch_order,
    init_ensemble,
    init_state,
    make_ensemble_epoch,
    make_epoch,
    make_step,
    steps_function,
    to_inputs,
)

_MOVED = {
    "TrainingDiverged": "jaxnn.TrainingDiverged (jaxnn.errors)",
    "host_epoch_order": "jaxnn.train.epoch_order",
    "epoch_function": "jaxnn.train.steps_function (one scan of steps) or make_epoch",
}


def __getattr__(name: str):
    """Names earlier versions had here: an error that says where they went."""
    raise removed_attribute(__name__, name, _MOVED)


__all__ = [
    "TrainState",
    "TrainOptions",
    "StepMetrics",
    "Checkpointing",
    "Reporting",
    "OPTIMIZERS",
    "SCHEDULES",
    "optimizer",
    "schedule",
    "weight_decay_refusal",
    "init_state",
    "to_inputs",
    "make_step",
    "epoch_order",
    "steps_function",
    "make_epoch",
    "init_ensemble",
    "make_ensemble_epoch",
    "make_evaluate",
    "sum_over_batches",
    "fit",
    "load_checkpoint",
    "chunk_steps",
    "in_chunks",
    "check_data",
    "check_positive_int",
    "output_classes",
    "all_finite",
    "compiler_options",
    "known_options",
    "compile_lowered",
    "model_compiler_options",
]
