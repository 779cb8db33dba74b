"""jaxnn: a functional neural-network library in JAX, every backward pass derived by hand.

    import jaxnn as nn
    model = nn.mlp([784, 512, 512, 10], activation="relu")
    out_shape, params = model.init(jax.random.PRNGKey(0), (784,))
    value, grads = nn.value_and_grad(model, nn.losses.softmax_cross_entropy)(params, x, labels)

The layers, losses and gradients are imported with `jaxnn`; the training loop (`jaxnn.train`),
data sets (`jaxnn.data`), language models (`jaxnn.language`), checkpoints (`jaxnn.checkpoint`),
devices (`jaxnn.parallel`), interop (`jaxnn.io`) and curvature (`jaxnn.curvature`) load on first use.
"""

import importlib
from typing import TYPE_CHECKING, Any

from . import activations, augment, blockwise, errors, gradcheck, losses, models
from .activations import activation, prelu, softmax
from .attention import Embedding, MultiHeadAttention, PositionalEmbedding
from .conv import Conv1D, Conv2D, ConvTranspose2D
from .core import (
    Layer,
    Residual,
    check_params,
    function_layer,
    make_layer,
    one_example,
    output_shape,
    serial,
)
from .errors import *  # noqa: F403 (Error and its subclasses: errors.__all__, exported below)
from .gradients import loss_with_hand_rules, per_example_grads, value_and_grad, with_hand_rules
from .hostmem import reuse_host_memory
from .layers import Dense, Dropout, Flatten
from .models import mlp
from .normalization import BatchNorm, GroupNorm, LayerNorm
from .pooling import AvgPool, GlobalAvgPool, MaxPool, Pool
from .precision import mixed_precision
from .recurrent import GRU, LSTM, RNN, LastStep
from .remat import remat
from .summary import summary

if TYPE_CHECKING:  # loaded on first use, with jaxnn.train (see __getattr__)
    from .train.compile import jit

__version__ = "0.3.0"

_LAZY = ("train", "data", "language", "checkpoint", "parallel", "io", "curvature")


def __getattr__(name: str) -> Any:
    """`jaxnn.train`, `jaxnn.data`, ... import their module on first use (they bring optax and
    tqdm): `import jaxnn` stays as quick as the layers need."""
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    if name == "plots":
        importlib.import_module(".plots", __name__)  # raises ImportError with the new place
    if name == "jit":  # lives with the compiler options it applies (jaxnn.train.compile)
        return importlib.import_module(".train.compile", __name__).jit
    raise AttributeError(f"module 'jaxnn' has no attribute {name!r}")


__all__ = [
    "check_params",
    "mixed_precision",
    "remat",
    "jit",
    "reuse_host_memory",
    "summary",
    "Layer",
    "make_layer",
    "function_layer",
    "one_example",
    "output_shape",
    "serial",
    "Residual",
    "Dense",
    "Flatten",
    "mlp",
    "Conv2D",
    "Pool",
    "MaxPool",
    "AvgPool",
    "Dropout",
    "LayerNorm",
    "BatchNorm",
    "GroupNorm",
    "Conv1D",
    "ConvTranspose2D",
    "GlobalAvgPool",
    "Embedding",
    "MultiHeadAttention",
    "PositionalEmbedding",
    "RNN",
    "LSTM",
    "GRU",
    "LastStep",
    "activation",
    "prelu",
    "softmax",
    "value_and_grad",
    "per_example_grads",
    "with_hand_rules",
    "loss_with_hand_rules",
    "losses",
    "activations",
    "blockwise",
    "gradcheck",
    "models",
    "augment",
]
__all__ += errors.__all__  # Error and its subclasses
