"""jaxnn: a functional neural-network library in JAX, every backward pass derived by hand.

import jaxnn as nn
model = nn.mlp([784, 512, 512, 10], activation="relu")
out_shape, params = model.init(jax.random.PRNGKey(0), (784,))
value, grads = nn.value_and_grad(model, nn.losses.softmax_cross_entropy)(params, x, labels)
"""

from . import activations, augment, gradcheck, losses, models
from .activations import activation, prelu, softmax
from .attention import Embedding, MultiHeadAttention, PositionalEmbedding
from .core import Layer, Residual, check_params, make_layer, output_shape, serial
from .errors import (
    CheckpointError,
    DataError,
    DownloadError,
    Error,
    InputError,
    InputTypeError,
    TrainingDiverged,
)
from .gradients import loss_with_hand_rules, per_example_grads, value_and_grad, with_hand_rules
from .layers import (
    AvgPool,
    BatchNorm,
    Conv1D,
    Conv2D,
    ConvTranspose2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    GroupNorm,
    LayerNorm,
    MaxPool,
    Pool,
)
from .models import mlp
from .precision import mixed_precision
from .recurrent import GRU, LSTM, RNN, LastStep
from .summary import summary

__version__ = "0.2.0"

__all__ = [
    "Error",
    "InputError",
    "InputTypeError",
    "DataError",
    "DownloadError",
    "CheckpointError",
    "TrainingDiverged",
    "check_params",
    "mixed_precision",
    "summary",
    "Layer",
    "make_layer",
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
    "gradcheck",
    "models",
    "augment",
]
