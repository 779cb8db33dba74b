"""Optimisers and learning-rate schedules by name: thin, checked wrappers over optax.

opt = optimizer("adam", 1e-3)                                   # an optax GradientTransformation
opt = optimizer("nesterov", 0.1, "onecycle", total_steps=1400, weight_decay=5e-4)
"""

import optax

from ..curvature import kfac
from ..errors import InputError

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "kfac")
"""The optimiser names `optimizer` accepts."""
SCHEDULES = ("constant", "cosine", "onecycle", "warmup_cosine")
"""The schedule names `schedule` accepts."""


def schedule(kind: str, learning_rate: float, total_steps: int | None = None) -> optax.ScalarOrSchedule:
    """A learning-rate schedule by name.

    **Arguments:**

    - `kind`: "constant", "cosine" (decay to 0), "onecycle" (warm up to the peak, then anneal) or
      "warmup_cosine" (linear warmup over the first 5%, then cosine decay).
    - `learning_rate`: the (peak) learning rate. For "kfac" (`jaxnn.curvature.kfac`, a constant
      rate, no weight decay) None lets the quadratic model choose the rate and the momentum.
    - `total_steps`: the run's length in steps; needed by every kind but "constant".

    **Returns:** the learning rate, or an optax schedule (a function of the step).
    """
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


def weight_decay_refusal(
    name: str, weight_decay: float | None, schedule_kind: str = "constant"
) -> str | None:
    """Why `optimizer` refuses this optimiser with this weight decay (and schedule), or None.

    **Arguments:** `name`, `weight_decay` and `schedule_kind` as `optimizer` takes them.

    **Returns:** the refusal's message (Adam, or K-FAC, with weight decay; K-FAC with a
    schedule), or None when the combination is accepted.
    """
    if name == "kfac" and (schedule_kind != "constant" or weight_decay):
        return "optimizer 'kfac' takes a constant learning rate (or None) and no weight decay"
    if name == "adam" and weight_decay:
        return "weight decay with Adam: use optimizer 'adamw' (decoupled decay)"
    return None


def optimizer(
    name: str = "adam",
    learning_rate: float | None = 1e-3,
    schedule_kind: str = "constant",
    total_steps: int | None = None,
    momentum: float = 0.9,
    weight_decay: float | None = None,
) -> optax.GradientTransformation:
    """An optax optimiser by name. "sgd" is the lecture's gradient descent, W <- W - lr dL/dW.

    **Arguments:**

    - `name`: one of `OPTIMIZERS`.
    - `learning_rate`: the (peak) learning rate. For "kfac" (`jaxnn.curvature.kfac`, a constant
      rate, no weight decay) None lets the quadratic model choose the rate and the momentum.
    - `schedule_kind`, `total_steps`: the learning-rate schedule (see `schedule`).
    - `momentum`: for "momentum" and "nesterov".
    - `weight_decay`: AdamW's decoupled decay (default 1e-4); for the SGD family an L2 term
      weight_decay W added to the gradient (default none), as ResNet recipes use it.

    **Returns:** an optax GradientTransformation.
    """
    refusal = weight_decay_refusal(name, weight_decay, schedule_kind)
    if refusal:
        raise InputError(refusal)
    if name == "kfac":
        return kfac(learning_rate, None if learning_rate is None else momentum)
    if learning_rate is None:
        raise InputError(f"optimizer {name!r} needs a learning rate (only 'kfac' chooses its own)")
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
        opt = optax.chain(optax.add_decayed_weights(weight_decay), opt)
    return opt
