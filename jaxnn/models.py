"""The model zoo: the networks the experiments and benchmarks train, each defined once here.

    model = models.mlp([784, 256, 256, 10])
    model, input_shape = models.build("cnn", classes=10, image_shape=(28, 28, 1), batchnorm=True)

`build(name, classes, image_shape, **options)` returns the model and the shape of one input
example (the MLP reads flat images, the recurrent readers read rows).
"""

import math

import jax.numpy as jnp

from .activations import activation as activation_layer
from .attention import Embedding, MultiHeadAttention, PositionalEmbedding
from .core import Layer, Residual, serial
from .errors import InputError
from .layers import (
    BatchNorm,
    Conv2D,
    ConvTranspose2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    LayerNorm,
    MaxPool,
)
from .recurrent import GRU, LSTM, RNN, LastStep


def mlp(sizes, activation="relu", **options):
    """A feed-forward net: Dense/activation pairs, no activation after the last Dense.

    sizes include the input width: mlp([784, 512, 512, 10]) maps (batch, 784) -> (batch, 10).
    `activation` is a name from the table (with `options`) or a Layer.
    """
    sizes = list(sizes)
    if len(sizes) < 2 or not all(isinstance(s, int) and s > 0 for s in sizes):
        raise InputError(f"mlp: sizes must be at least two positive ints (input width first), got {sizes}")
    act = activation if isinstance(activation, Layer) else None
    layers = []
    for width in sizes[1:-1]:
        layers += [Dense(width), act or activation_layer(activation, **options)]
    layers.append(Dense(sizes[-1]))
    model = serial(*layers)

    def init(key, input_shape=(sizes[0],), dtype=jnp.float32):
        if tuple(input_shape) != (sizes[0],):
            raise InputError(
                f"mlp: built for inputs of shape ({sizes[0]},), got input_shape {tuple(input_shape)}"
            )
        return model.init(key, input_shape, dtype=dtype)

    return model._replace(init=init, name=f"mlp({sizes}, {getattr(activation, 'name', activation)})")


def linear(classes, image_shape):
    """The lecture's linear classifier F(W, x, b) = Wx + b on flat images."""
    return Dense(classes), (math.prod(image_shape),)


def image_mlp(classes, image_shape, width=256, activation="relu"):
    """mlp([pixels, width, width, classes]) on flat images."""
    n = math.prod(image_shape)
    return mlp([n, width, width, classes], activation=activation), (n,)


def cnn(
    classes, image_shape, dropout=0.0, batchnorm=False, channels=(32, 64), dense=128, conv_backward="auto"
):
    """Conv blocks (3x3 convolution, [BatchNorm], ReLU, 2x2 max pool) with `channels`, then
    Dense(dense), ReLU, Dense(classes); Dropout before each Dense when dropout > 0.
    conv_backward: Conv2D's backward formulation ("auto", "taps", "conv")."""
    drop = [Dropout(dropout)] if dropout > 0 else []
    blocks = []
    for c in channels:
        norm = [BatchNorm()] if batchnorm else []
        blocks += [Conv2D(c, (3, 3), backward=conv_backward), *norm, activation_layer("relu"), MaxPool()]
    model = serial(*blocks, Flatten(), *drop, Dense(dense), activation_layer("relu"), *drop, Dense(classes))
    return model, tuple(image_shape)


def residual_block(features, stride=1, project=False, conv_backward="auto"):
    """A ResNet basic block: ReLU(x' + BN(conv3x3(ReLU(BN(conv3x3_stride(x)))))), where x' is x, or
    with project=True (needed when the block changes the shape: stride > 1 or new width) a 1x1
    strided convolution and BatchNorm of x."""
    relu = activation_layer("relu")
    body = serial(
        Conv2D(features, (3, 3), stride, backward=conv_backward),
        BatchNorm(),
        relu,
        Conv2D(features, (3, 3), backward=conv_backward),
        BatchNorm(),
    )
    shortcut = (
        serial(Conv2D(features, (1, 1), stride, backward=conv_backward), BatchNorm()) if project else None
    )
    block = serial(Residual(body, shortcut=shortcut), relu)
    return block._replace(name=f"ResBlock({features}{', stride ' + str(stride) if stride != 1 else ''})")


def resnet(classes, image_shape, channels=(32, 64, 128), blocks=1, conv_backward="auto"):
    """A small ResNet for 28x28 images: a 3x3 convolution stem (channels[0], BatchNorm, ReLU), then one
    stage per entry of `channels` of `blocks` residual blocks each, every stage after the first halving
    height and width (28 -> 14 -> 7), global average pooling and Dense(classes)."""
    layers = [Conv2D(channels[0], (3, 3), backward=conv_backward), BatchNorm(), activation_layer("relu")]
    width = channels[0]
    for stage, c in enumerate(channels):
        for b in range(blocks):
            stride = 2 if stage > 0 and b == 0 else 1
            layers.append(
                residual_block(c, stride, project=stride != 1 or c != width, conv_backward=conv_backward)
            )
            width = c
    model = serial(*layers, GlobalAvgPool(), Dense(classes))
    return model._replace(
        name=f"resnet({list(channels)}, {blocks} block{'s' * (blocks > 1)} per stage)"
    ), tuple(image_shape)


def recurrent_reader(cell, classes, image_shape, width=128):
    """Reads an image row by row (28 steps of 28 pixels for MNIST) with `cell` ("lstm", "gru",
    "rnn" or a constructor), then Dense on the last hidden state."""
    cell = {"lstm": LSTM, "gru": GRU, "rnn": RNN}.get(cell, cell)
    rows, cols = image_shape[0], math.prod(image_shape[1:])
    return serial(cell(width), LastStep(), Dense(classes)), (rows, cols)


def transformer_block(d, heads, causal=True, mlp_ratio=4):
    """A pre-norm transformer block on (batch, time, d):
    x + attention(LayerNorm(x)), then that + MLP(LayerNorm(.)), the MLP Dense(mlp_ratio d), GELU, Dense(d)."""
    attention = Residual(serial(LayerNorm(), MultiHeadAttention(heads, causal=causal)))
    mlp_part = Residual(serial(LayerNorm(), Dense(mlp_ratio * d), activation_layer("gelu"), Dense(d)))
    return serial(attention, mlp_part)._replace(
        name=f"TransformerBlock({d}, {heads}{', causal' if causal else ''})"
    )


def char_transformer(vocab, context, d=128, heads=4, layers=4):
    """A character-level GPT: token and position embeddings, `layers` causal pre-norm blocks, a final
    LayerNorm and Dense(vocab). Integer tokens (batch, time <= context) -> logits (batch, time, vocab)."""
    blocks = [transformer_block(d, heads) for _ in range(layers)]
    model = serial(Embedding(vocab, d), PositionalEmbedding(context), *blocks, LayerNorm(), Dense(vocab))
    return model, (context,)


def char_lstm(vocab, context, d=64, hidden=256):
    """A character-level LSTM: Embedding(vocab, d), LSTM(hidden), Dense(vocab) at every step."""
    return serial(Embedding(vocab, d), LSTM(hidden), Dense(vocab)), (context,)


def conv_autoencoder(image_shape=(28, 28, 1), channels=(16, 4)):
    """Encoder: stride-2 3x3 convolutions with ReLU (28 -> 14 -> 7x7x4, a quarter of the pixels);
    decoder: stride-2 2x2 transposed convolutions back (7 -> 14 -> 28), ReLU between, a logistic
    output in [0, 1]."""
    c1, c2 = channels
    model = serial(
        Conv2D(c1, (3, 3), stride=2),
        activation_layer("relu"),
        Conv2D(c2, (3, 3), stride=2),
        activation_layer("relu"),
        ConvTranspose2D(c1, 2, 2),
        activation_layer("relu"),
        ConvTranspose2D(image_shape[-1], 2, 2),
        activation_layer("logistic"),
    )
    return model, tuple(image_shape)


BUILDERS = {
    "linear": linear,
    "mlp": image_mlp,
    "cnn": cnn,
    "resnet": resnet,
    "lstm": lambda classes, image_shape, **kw: recurrent_reader("lstm", classes, image_shape, **kw),
    "gru": lambda classes, image_shape, **kw: recurrent_reader("gru", classes, image_shape, **kw),
    "rnn": lambda classes, image_shape, **kw: recurrent_reader("rnn", classes, image_shape, **kw),
}


def build(name, classes, image_shape, **options):
    """(model, input_shape) for the zoo's `name` (one of BUILDERS), with its keyword options."""
    if name not in BUILDERS:
        raise InputError(f"unknown model {name!r}; choose from {sorted(BUILDERS)}")
    return BUILDERS[name](classes, tuple(image_shape), **options)
