"""The one gradient table: every op with a hand rule, as a case the gradient checks build.

Each row of LAYERS maps a name to make(example_shape) -> (layer, one example's input shape); each
row of LOSSES maps a loss's name to make(batch, classes, key) -> (loss, prediction, target).
tests/test_gradients.py checks every row in float64 against jax.grad and finite differences, and
benchmarks/gradcheck_report.py reports their errors; a new op needs only its row here.
"""

import jax
import jax.numpy as jnp

import jaxnn as nn


def _activation_case(name, **options):
    def make(shape):
        return nn.activation(name, **options), shape

    return make


def _dense(shape):
    return nn.Dense(3), shape[-1:]


def _flatten(shape):
    return nn.Flatten(), shape + (2,)


def _serial(shape):
    return nn.serial(nn.Dense(4), nn.activation("tanh"), nn.Dense(2), nn.activation("softmax")), shape[-1:]


# name -> make(example_shape) -> (layer, input_shape of one example)
LAYERS = {name: _activation_case(name) for name in nn.activations.NAMES}
INTEGER_INPUTS = {"Embedding": 7}  # name -> vocabulary: x drawn as integers below it
ELEMENTWISE = set(LAYERS) | {"elu(alpha=0.7)", "leaky_relu(0.2)", "prelu(alpha=-0.5)"}


def _activation_like(layer, width=None):
    def make(shape):
        return layer, (width,) if width else shape

    return make


def _image(layer, channels=2):
    def make(shape):  # odd and even sizes: (w + 2) x (w + 3)
        return layer, (shape[-1] + 2, shape[-1] + 3, channels)

    return make


def _sequence(layer, features=3):
    def make(shape):  # sequences of length 1..6
        return layer, (shape[-1], features)

    return make


def _with_state(layer, train):
    """A stateful layer (BatchNorm) with its state bound: running statistics away from their
    initial 0 and 1 so that evaluation mode is not the identity map; train picks the mode."""

    def state_for(x):
        state = layer.init_state(x.shape[1:], dtype=x.dtype)
        return jax.tree_util.tree_map(
            lambda a: a + 0.5 + 0.25 * jnp.cos(jnp.arange(a.size, dtype=a.dtype)), state
        )

    return layer._replace(
        forward=lambda p, x, key=None, train=train: layer.forward(p, x, state=state_for(x), train=train)[:2],
        apply=lambda p, x, key=None, train=train: layer.apply(p, x, state=state_for(x), train=train)[0],
        stateful=False,
    )


def bn_cnn(channels=3, classes=2, inner_momentum=0.9):
    """A small CNN with BatchNorm, one of them inside a Residual (state threads through both)."""
    return nn.serial(
        nn.Conv2D(channels, (3, 3)),
        nn.BatchNorm(),
        nn.activation("relu"),
        nn.MaxPool(),
        nn.Residual(nn.serial(nn.Conv2D(channels, (3, 3)), nn.BatchNorm(inner_momentum))),
        nn.Flatten(),
        nn.Dense(classes),
    )


def _with_key(layer, seed=7):
    """Dropout's training mode: the same fixed key in forward and apply, so the mask is shared."""
    fixed = jax.random.PRNGKey(seed)
    return layer._replace(
        forward=lambda p, x, key=None, train=None: layer.forward(p, x, key=fixed),
        apply=lambda p, x, key=None, train=None: layer.apply(p, x, key=fixed),
    )


LAYERS.update(
    {
        "Dropout(0.3) training": _activation_like(_with_key(nn.Dropout(0.3))),
        "Dropout(0.3) evaluation": _activation_like(nn.Dropout(0.3)),
        # widths >= 5: dL/dx is dy projected off the 2-D span of (1, xhat), so with few features it can
        # be nearly 0 by chance (exactly 0 for 1 or 2), and a relative error of rounding noise means nothing
        "LayerNorm": lambda shape: (nn.LayerNorm(), (shape[-1] + 4,)),
        "LayerNorm on images": _image(nn.LayerNorm(), channels=3),
        "Residual(Dense, tanh)": _activation_like(
            nn.Residual(nn.serial(nn.Dense(4), nn.activation("tanh"), nn.Dense(4))), 4
        ),
        "small ResNet": _image(
            nn.serial(
                nn.Conv2D(4, (3, 3)),
                nn.Residual(
                    nn.serial(
                        nn.Conv2D(4, (3, 3)), nn.LayerNorm(), nn.activation("relu"), nn.Conv2D(4, (3, 3))
                    )
                ),
                nn.AvgPool(),
                nn.Flatten(),
                nn.Dense(2),
            )
        ),
        "Residual with a projection shortcut": _image(
            nn.Residual(
                nn.serial(nn.Conv2D(3, (3, 3), stride=2), nn.activation("tanh"), nn.Conv2D(3, (3, 3))),
                shortcut=nn.Conv2D(3, (1, 1), stride=2),
            )
        ),
        "ResNet block with BatchNorm, training": _image(
            _with_state(nn.models.residual_block(3, stride=2, project=True), train=True)
        ),
        "ResNet block with BatchNorm, evaluation": _image(
            _with_state(nn.models.residual_block(3, stride=2, project=True), train=False)
        ),
        "Conv2D 3x3 SAME": _image(nn.Conv2D(3, (3, 3))),  # 2 channels: the weight gradient as one matmul
        "Conv2D 3x3 SAME, 4 input channels": _image(nn.Conv2D(3, (3, 3)), channels=4),  # per-tap matmuls
        "Conv2D 3x2 stride 2 VALID": _image(nn.Conv2D(2, (3, 2), stride=2, padding="VALID")),
        "Conv2D 1x1 stride (2,1) SAME": _image(
            nn.Conv2D(4, (1, 1), stride=(2, 1), padding="SAME"), channels=3
        ),
        "Conv2D 3x3 stride 2 SAME": _image(nn.Conv2D(2, (3, 3), stride=2, padding="SAME")),
        "Conv2D 3x3 SAME, taps backward": _image(nn.Conv2D(3, (3, 3), backward="taps"), channels=4),
        "Conv2D 3x2 stride 2 VALID, taps backward": _image(
            nn.Conv2D(2, (3, 2), stride=2, padding="VALID", backward="taps")
        ),
        "Conv2D 3x3 SAME, conv backward": _image(nn.Conv2D(3, (3, 3), backward="conv")),
        "Conv2D 3x2 stride 2 VALID, conv backward": _image(
            nn.Conv2D(2, (3, 2), stride=2, padding="VALID", backward="conv")
        ),
        "Conv2D 5x5 stride (2,3) SAME, conv backward": _image(
            nn.Conv2D(2, (5, 5), stride=(2, 3), backward="conv")
        ),
        "MaxPool 2x2": _image(nn.MaxPool()),
        "MaxPool 3x3 stride 2 (overlapping)": _image(nn.MaxPool((3, 3), stride=2)),
        "AvgPool 2x3 stride 1": _image(nn.AvgPool((2, 3), stride=1)),
        "RNN": _sequence(nn.RNN(4)),
        "LSTM": _sequence(nn.LSTM(3)),
        "GRU": _sequence(nn.GRU(3)),
        "LastStep": _sequence(nn.LastStep()),
        "BatchNorm training": _image(_with_state(nn.BatchNorm(), train=True), channels=3),
        "BatchNorm evaluation": _image(_with_state(nn.BatchNorm(), train=False), channels=3),
        "BatchNorm training on sequences": _sequence(_with_state(nn.BatchNorm(0.8), train=True), features=5),
        "GroupNorm(2) on images": _image(nn.GroupNorm(2), channels=6),
        "GroupNorm(1) on sequences": _sequence(nn.GroupNorm(1), features=5),
        "GroupNorm(3) per channel": _image(nn.GroupNorm(3), channels=3),
        "cnn with BatchNorm, training": _image(_with_state(bn_cnn(), train=True)),
        "cnn with BatchNorm, evaluation": _image(_with_state(bn_cnn(), train=False)),
        "cnn": _image(
            nn.serial(nn.Conv2D(3, (3, 3)), nn.activation("relu"), nn.MaxPool(), nn.Flatten(), nn.Dense(2))
        ),
        "lstm classifier": _sequence(nn.serial(nn.LSTM(3), nn.LastStep(), nn.Dense(2))),
        "Embedding": lambda shape: (nn.Embedding(7, 3), (shape[-1],)),
        "MultiHeadAttention": _sequence(nn.MultiHeadAttention(2), features=4),
        "MultiHeadAttention causal": _sequence(nn.MultiHeadAttention(2, causal=True), features=4),
        # blocks of 2 over lengths 1..6: padded and whole last blocks, one block and several
        "MultiHeadAttention blockwise": _sequence(nn.MultiHeadAttention(2, block_size=2), features=4),
        "MultiHeadAttention causal blockwise": _sequence(
            nn.MultiHeadAttention(2, causal=True, block_size=2), features=4
        ),
        "GlobalAvgPool": _image(nn.GlobalAvgPool()),
        "PositionalEmbedding": lambda shape: (nn.PositionalEmbedding(8), (shape[-1], 3)),
        "transformer block": _sequence(nn.models.transformer_block(4, 2), features=4),
        "remat(transformer block, blockwise)": _sequence(
            nn.remat(nn.models.transformer_block(4, 2, block_size=2)), features=4
        ),
        "Conv1D 3 SAME": _sequence(nn.Conv1D(3, 3), features=2),
        "Conv1D 3 stride 2 VALID": lambda shape: (
            nn.Conv1D(2, 3, stride=2, padding="VALID"),
            (shape[-1] + 2, 2),
        ),
        "ConvTranspose2D 2x2 stride 2": _image(nn.ConvTranspose2D(3, 2, 2)),
        "ConvTranspose2D 3x2 stride (2, 1)": _image(nn.ConvTranspose2D(2, (3, 2), (2, 1))),
        "elu(alpha=0.7)": _activation_case("elu", alpha=0.7),
        "leaky_relu(0.2)": _activation_case("leaky_relu", negative_slope=0.2),
        "prelu(alpha=-0.5)": _activation_case("prelu", alpha=-0.5),
        "Dense": _dense,
        "Dense on sequences": _sequence(nn.Dense(3), features=4),
        "Flatten": _flatten,
        "serial": _serial,
    }
)


def build(name, shape, batch, seed, away_from_kinks):
    """(layer, params, x) for the table's op `name` in float64 (call it under jax.enable_x64):
    one example of `shape`'s last size, `batch` examples drawn from `seed`; an element-wise op's
    inputs kept at |x| >= 0.1 when away_from_kinks (for finite differences), else with exact kink
    points planted (for the comparison with jax.grad)."""
    layer, input_shape = LAYERS[name](shape)
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    _, params = layer.init(k1, input_shape, dtype=jnp.float64)
    if name in INTEGER_INPUTS:  # token ids: no gradient for x, only for the table
        return layer, params, jax.random.randint(k2, (batch,) + tuple(input_shape), 0, INTEGER_INPUTS[name])
    x = jax.random.normal(k2, (batch,) + tuple(input_shape), jnp.float64) * 2
    if name not in ELEMENTWISE:  # kinks only where an element-wise op has one; MaxPool's are ties
        return layer, params, x
    if away_from_kinks:  # finite differences are meaningless across a kink: keep |x| >= 0.1
        x = jnp.where(jnp.abs(x) < 0.1, jnp.sign(x) * 0.1 + (x == 0) * 0.1, x)
    else:  # plant exact kink points for the comparison with jax.grad
        x = x.at[..., 0].set(0.0)
    return layer, params, x


def _class_case(loss):
    def make(batch, classes, key):
        k1, k2 = jax.random.split(key)
        logits = 3 * jax.random.normal(k1, (batch, classes), jnp.float64)
        return loss, logits, jax.random.randint(k2, (batch,), 0, classes)

    return make


def _bce(batch, classes, key):
    k1, k2 = jax.random.split(key)
    logits = 3 * jax.random.normal(k1, (batch, classes), jnp.float64)
    return nn.losses.binary_cross_entropy, logits, jax.random.uniform(k2, (batch, classes), jnp.float64)


def _mse(batch, classes, key):
    k1, k2 = jax.random.split(key)
    pred = jax.random.normal(k1, (batch, classes), jnp.float64)
    return nn.losses.mean_squared_error, pred, jax.random.normal(k2, (batch, classes), jnp.float64)


def _sequence_case(batch, classes, key):
    k1, k2 = jax.random.split(key)
    logits = 3 * jax.random.normal(k1, (batch, 3, classes), jnp.float64)
    return nn.losses.sequence_cross_entropy, logits, jax.random.randint(k2, (batch, 3), 0, classes)


LOSSES = {
    "softmax_cross_entropy": _class_case(nn.losses.softmax_cross_entropy),
    "smoothed_cross_entropy(0.1)": _class_case(nn.losses.smoothed_cross_entropy(0.1)),
    "softmax_binary_cross_entropy": _class_case(nn.losses.softmax_binary_cross_entropy),
    "binary_cross_entropy": _bce,
    "mean_squared_error": _mse,
    "sequence_cross_entropy": _sequence_case,
}
