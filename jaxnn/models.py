"""The model zoo: the networks the experiments and benchmarks train, each defined once here.

    model = models.mlp([784, 256, 256, 10])
    model = models.cnn(10, (28, 28, 1), batchnorm=True)
    model.input_shape        # (28, 28, 1): the shape of one example the model reads

Every builder returns a Layer whose `input_shape` is the shape of one input example (the MLP reads
flat images, the recurrent readers read rows, the language models windows of token ids), and whose
`init(key)` defaults to it.
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp

from .activations import activation as activation_layer
from .attention import Embedding, MultiHeadAttention, PositionalEmbedding
from .conv import Conv2D, ConvTranspose2D
from .core import Layer, Residual, example_shape, serial
from .errors import InputError
from .layers import Dense, Dropout, Flatten
from .normalization import BatchNorm, LayerNorm
from .pooling import GlobalAvgPool, MaxPool
from .recurrent import GRU, LSTM, RNN, LastStep
from .remat import remat as remat_layer
from .renamed import removed_attribute
from .types import Shape

__all__ = [
    "mlp",
    "linear",
    "image_mlp",
    "cnn",
    "resnet",
    "residual_block",
    "recurrent_reader",
    "transformer_block",
    "LongContext",
    "char_transformer",
    "char_lstm",
    "conv_autoencoder",
    "for_inputs",
]


def for_inputs(model: Layer, input_shape: Shape, name: str | None = None) -> Layer:
    """The model, recording the shape of one example it reads; its `init(key)` defaults to that shape.

    **Arguments:**

    - `model`: a Layer.
    - `input_shape`: the shape of one input example.
    - `name`: a new name for the model (default: its own).

    **Returns:** the Layer with `input_shape` set; `init(key)` (or `init(key, None)`) uses it.
    """
    shape = tuple(input_shape)
    inner = model.init

    def init(key, input_shape=None, dtype=jnp.float32):
        return inner(key, shape if input_shape is None else input_shape, dtype=dtype)

    return model._replace(init=init, input_shape=shape, name=name or model.name)


def mlp(sizes: list[int], activation: str | Layer = "relu", **options: float) -> Layer:
    """A feed-forward net: Dense/activation pairs, no activation after the last Dense.

    **Arguments:**

    - `sizes`: the widths, input first: `mlp([784, 512, 512, 10])` maps `(batch, 784)` to `(batch, 10)`.
    - `activation`: a name from the activation table (with its `**options`), or a Layer.

    **Returns:** a Layer with `input_shape` `(sizes[0],)`; params a tuple with one entry per layer.
    """
    sizes = list(sizes)
    if len(sizes) < 2 or not all(isinstance(s, int) and s > 0 for s in sizes):
        raise InputError(f"mlp: sizes must be at least two positive ints (input width first), got {sizes}")
    act = activation if isinstance(activation, Layer) else None
    layers = []
    for width in sizes[1:-1]:
        layers += [Dense(width), act or activation_layer(activation, **options)]  # type: ignore[arg-type]
    layers.append(Dense(sizes[-1]))
    model = serial(*layers)
    inner = model.init

    def init(key, input_shape, dtype=jnp.float32):
        if example_shape("mlp.init", input_shape) != (sizes[0],):
            raise InputError(
                f"mlp: built for inputs of shape ({sizes[0]},), got input_shape {tuple(input_shape)}"
            )
        return inner(key, input_shape, dtype=dtype)

    name = f"mlp({sizes}, {getattr(activation, 'name', activation)})"
    return for_inputs(model._replace(init=init), (sizes[0],), name)


def linear(classes: int, image_shape: Shape) -> Layer:
    """The lecture's linear classifier F(W, x, b) = Wx + b on flat images.

    **Arguments:**

    - `classes`: the number of classes (rows of W).
    - `image_shape`: the shape of one image; the model reads it flat.

    **Returns:** a Dense layer with `input_shape` `(pixels,)`.
    """
    return for_inputs(Dense(classes), (math.prod(image_shape),), f"linear({classes})")


def image_mlp(classes: int, image_shape: Shape, width: int = 256, activation: str = "relu") -> Layer:
    """`mlp([pixels, width, width, classes])` on flat images.

    **Arguments:**

    - `classes`: output width.
    - `image_shape`: the shape of one image; the model reads it flat.
    - `width`: the two hidden layers' width.
    - `activation`: a name from the activation table.

    **Returns:** a Layer with `input_shape` `(pixels,)`.
    """
    return mlp([math.prod(image_shape), width, width, classes], activation=activation)


def cnn(
    classes: int,
    image_shape: Shape,
    dropout: float = 0.0,
    batchnorm: bool = False,
    channels: tuple[int, ...] = (32, 64),
    dense: int = 128,
    conv_backward: str = "auto",
) -> Layer:
    """Conv blocks (3x3 convolution, [BatchNorm], ReLU, 2x2 max pool), then Dense(dense), ReLU,
    Dense(classes).

    **Arguments:**

    - `classes`: output width.
    - `image_shape`: the shape of one image `(H, W, C)`.
    - `dropout`: Dropout before each Dense when > 0.
    - `batchnorm`: BatchNorm after each convolution.
    - `channels`: each block's convolution width.
    - `dense`: the hidden Dense layer's width.
    - `conv_backward`: Conv2D's backward formulation ("auto", "taps", "conv").

    **Returns:** a Layer with `input_shape` `image_shape`.
    """
    drop = [Dropout(dropout)] if dropout > 0 else []
    blocks = []
    for c in channels:
        norm = [BatchNorm()] if batchnorm else []
        blocks += [Conv2D(c, (3, 3), backward=conv_backward), *norm, activation_layer("relu"), MaxPool()]
    model = serial(*blocks, Flatten(), *drop, Dense(dense), activation_layer("relu"), *drop, Dense(classes))
    return for_inputs(model, image_shape)


def residual_block(
    features: int, stride: int = 1, project: bool = False, conv_backward: str = "auto"
) -> Layer:
    """A ResNet basic block: ReLU(x' + BN(conv3x3(ReLU(BN(conv3x3_stride(x)))))).

    **Arguments:**

    - `features`: the block's width.
    - `stride`: the first convolution's stride (2 halves height and width).
    - `project`: x' is a 1x1 strided convolution and BatchNorm of x (needed when the block changes
      the shape: stride > 1 or a new width); otherwise x' = x.
    - `conv_backward`: Conv2D's backward formulation.

    **Returns:** a Layer (with BatchNorm state).
    """
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


def resnet(
    classes: int,
    image_shape: Shape,
    channels: tuple[int, ...] = (32, 64, 128),
    blocks: int = 1,
    conv_backward: str = "auto",
) -> Layer:
    """A small ResNet for 28x28 images: a 3x3 convolution stem (channels[0], BatchNorm, ReLU), one
    stage per entry of `channels`, global average pooling and Dense(classes).

    **Arguments:**

    - `classes`: output width.
    - `image_shape`: the shape of one image `(H, W, C)`.
    - `channels`: each stage's width; every stage after the first halves height and width (28 -> 14 -> 7).
    - `blocks`: residual blocks per stage.
    - `conv_backward`: Conv2D's backward formulation.

    **Returns:** a Layer with `input_shape` `image_shape` and BatchNorm state.
    """
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
    return for_inputs(
        model, image_shape, f"resnet({list(channels)}, {blocks} block{'s' * (blocks > 1)} per stage)"
    )


def recurrent_reader(
    cell: str | Callable[[int], Layer], classes: int, image_shape: Shape, width: int = 128
) -> Layer:
    """Reads an image row by row (28 steps of 28 pixels for MNIST), then Dense on the last hidden state.

    **Arguments:**

    - `cell`: "lstm", "gru", "rnn", or a constructor `cell(width) -> Layer`.
    - `classes`: output width.
    - `image_shape`: the shape of one image `(H, W, C)`; each of the H rows is one step of W C values.
    - `width`: the hidden state's width.

    **Returns:** a Layer with `input_shape` `(H, W C)`.
    """
    cells: dict[str, Callable[..., Layer]] = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
    if isinstance(cell, str) and cell not in cells or not (isinstance(cell, str) or callable(cell)):
        raise InputError(f"recurrent_reader: unknown cell {cell!r}; choose 'lstm', 'gru' or 'rnn'")
    make = cells[cell] if isinstance(cell, str) else cell
    rows, cols = image_shape[0], math.prod(image_shape[1:])
    return for_inputs(serial(make(width), LastStep(), Dense(classes)), (rows, cols))


class LongContext(NamedTuple):
    """How a transformer trades computation for memory at long contexts.

    - `block_size`: attention block by block (`MultiHeadAttention(..., block_size=)`): memory linear
      in the context instead of quadratic, the same function. None: dense attention.
    - `remat`: each transformer block wrapped in `nn.remat`: its backward reruns its forward, and
      only the blocks' inputs are kept between the forward and the backward pass.
    """

    block_size: int | None = None
    remat: bool = False


def transformer_block(
    d: int, heads: int, causal: bool = True, mlp_ratio: int = 4, block_size: int | None = None
) -> Layer:
    """A pre-norm transformer block on (batch, time, d): x + attention(LayerNorm(x)), then that +
    MLP(LayerNorm(.)), the MLP Dense(mlp_ratio d), GELU, Dense(d).

    **Arguments:**

    - `d`: the model width.
    - `heads`: attention heads (d must be divisible by it).
    - `causal`: causal attention (a language model's).
    - `mlp_ratio`: the MLP's hidden width over d.
    - `block_size`: the attention's (None: dense; see `MultiHeadAttention`).

    **Returns:** a Layer mapping `(batch, time, d)` to `(batch, time, d)`.
    """
    attention = Residual(serial(LayerNorm(), MultiHeadAttention(heads, causal=causal, block_size=block_size)))
    mlp_part = Residual(serial(LayerNorm(), Dense(mlp_ratio * d), activation_layer("gelu"), Dense(d)))
    config = {"kind": "TransformerBlock", "d": d, "heads": heads, "causal": causal, "mlp_ratio": mlp_ratio}
    return serial(attention, mlp_part)._replace(
        name=f"TransformerBlock({d}, {heads}{', causal' if causal else ''})", config=config
    )


def char_transformer(
    vocab: int, context: int, d: int = 128, heads: int = 4, layers: int = 4, long: LongContext = LongContext()
) -> Layer:
    """A character-level GPT: token and position embeddings, causal pre-norm blocks, a final
    LayerNorm and Dense(vocab).

    **Arguments:**

    - `vocab`: the number of distinct tokens.
    - `context`: the longest window it reads (the position table's length).
    - `d`, `heads`, `layers`: the width, attention heads and number of blocks.
    - `long`: blockwise attention and recomputation for long contexts (`LongContext`); the default
      is dense attention, no recomputation.

    **Returns:** a Layer with `input_shape` `(context,)` mapping integer tokens `(batch, time <= context)`
    to logits `(batch, time, vocab)`.
    """
    if not isinstance(long, LongContext):
        raise InputError(f"char_transformer: long must be a models.LongContext, got {type(long).__name__}")
    blocks = [transformer_block(d, heads, block_size=long.block_size) for _ in range(layers)]
    if long.remat:
        blocks = [remat_layer(block) for block in blocks]
    model = serial(Embedding(vocab, d), PositionalEmbedding(context), *blocks, LayerNorm(), Dense(vocab))
    return for_inputs(model, (context,))


def char_lstm(vocab: int, context: int, d: int = 64, hidden: int = 256) -> Layer:
    """A character-level LSTM: Embedding(vocab, d), LSTM(hidden), Dense(vocab) at every step.

    **Arguments:**

    - `vocab`: the number of distinct tokens.
    - `context`: the window length it is trained on.
    - `d`, `hidden`: the embedding's and the LSTM's widths.

    **Returns:** a Layer with `input_shape` `(context,)`.
    """
    return for_inputs(serial(Embedding(vocab, d), LSTM(hidden), Dense(vocab)), (context,))


def conv_autoencoder(image_shape: Shape = (28, 28, 1), channels: tuple[int, int] = (16, 4)) -> Layer:
    """A convolutional autoencoder. Encoder: stride-2 3x3 convolutions with ReLU (28 -> 14 -> 7x7x4, a
    quarter of the pixels); decoder: stride-2 2x2 transposed convolutions back (7 -> 14 -> 28), ReLU
    between, a logistic output in [0, 1].

    **Arguments:**

    - `image_shape`: the shape of one image `(H, W, C)`.
    - `channels`: the two convolutions' widths.

    **Returns:** a Layer with `input_shape` `image_shape`, output of the same shape.
    """
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
    return for_inputs(model, image_shape)


def __getattr__(name: str):
    """Names earlier versions had here: an error that says where they went."""
    moved = {
        "build": "the command line's registry, jaxnn_lab.zoo (MODELS, build_model); "
        "call a builder of this module directly",
        "BUILDERS": "jaxnn_lab.zoo.MODELS (the command line's names for these builders)",
    }
    raise removed_attribute(__name__, name, moved)
