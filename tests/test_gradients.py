"""One table drives the gradient checks: add an op to LAYERS or LOSSES and it is checked in
float64 against jax.grad (rel. error <= 1e-10) and central finite differences (<= 1e-6), and its
hand rule is run under `jit` and under `vmap` against the eager result.

The default run checks every op at one fixed shape against jax.grad and finite differences, and one
op of each family under jit and vmap; the `slow` run (`.ci/run`) puts every op under jit and vmap
and adds random shapes and inputs drawn by hypothesis, kink points included for the jax.grad
comparison.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxnn as nn
from jaxnn import gradcheck

AUTODIFF_TOL = 1e-10
FD_TOL = 1e-6
SETTINGS = settings(max_examples=6, deadline=None, derandomize=True)
FIXED_DIMS = (3, 4)  # (batch, width) of the default run's one example per op
KINKED = {"relu", "prelu", "elu", "leaky_relu", "binary_step"}  # a kink (or jump) at x = 0


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


def _bn_cnn():
    """A small CNN with BatchNorm, one of them inside a Residual (state threads through both)."""
    return nn.serial(
        nn.Conv2D(3, (3, 3)),
        nn.BatchNorm(),
        nn.activation("relu"),
        nn.MaxPool(),
        nn.Residual(nn.serial(nn.Conv2D(3, (3, 3)), nn.BatchNorm())),
        nn.Flatten(),
        nn.Dense(2),
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
        "cnn with BatchNorm, training": _image(_with_state(_bn_cnn(), train=True)),
        "cnn with BatchNorm, evaluation": _image(_with_state(_bn_cnn(), train=False)),
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


def _build(name, shape, batch, seed, away_from_kinks):
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


shapes = st.tuples(st.integers(1, 5), st.integers(1, 6))  # (batch, width)


def _check(name, dims, seed):
    batch, width = dims
    with jax.enable_x64(True):
        layer, params, x = _build(name, (width,), batch, seed, away_from_kinks=True)
        # a key independent of the one that drew x: dy must not be a copy of x
        key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
        gradcheck.check_layer(layer, params, x, key=key).assert_close(AUTODIFF_TOL, FD_TOL)


def _hand_rule(layer):
    def rule(params, x, dy):
        _, residuals = layer.forward(params, x)
        return layer.backward(residuals, dy)

    return rule


# composites of layers the default run checks one by one; their whole-model checks run with the slow ones
COMPOSITES_IN_SLOW = {
    "small ResNet",
    "ResNet block with BatchNorm, training",
    "ResNet block with BatchNorm, evaluation",
    "cnn with BatchNorm, evaluation",
    "remat(transformer block, blockwise)",  # each part is checked by default (and tests/test_long_context.py)
    "MultiHeadAttention blockwise",  # the causal blockwise case stays in the default run
}


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in COMPOSITES_IN_SLOW else n for n in sorted(LAYERS)],
)
def test_layer_vs_jax_grad_and_finite_differences(name):
    _check(name, FIXED_DIMS, seed=0)


# the default run puts one op of each family under jit and vmap; the slow run puts every op
UNDER_VMAP_BY_DEFAULT = {
    "Dense",
    "relu",
    "prelu(alpha=-0.5)",
    "Conv2D 3x3 SAME",
    "Conv2D 3x3 stride 2 SAME",
    "MaxPool 3x3 stride 2 (overlapping)",
    "LSTM",
    "BatchNorm training",
    "MultiHeadAttention causal",
    "Embedding",
    "Dropout(0.3) training",
}


@pytest.mark.parametrize(
    "name",
    [n if n in UNDER_VMAP_BY_DEFAULT else pytest.param(n, marks=pytest.mark.slow) for n in sorted(LAYERS)],
)
def test_hand_rule_under_jit_and_vmap(name):
    """The hand rule on each of two independent problems, and vmapped over both (a leading axis that
    the layer never sees), give the same gradients, under jit."""
    with jax.enable_x64(True):
        layer, params, x = _build(name, (FIXED_DIMS[1],), FIXED_DIMS[0], seed=3, away_from_kinks=True)
        y = jax.eval_shape(lambda p, x: layer.forward(p, x)[0], params, x)
        dys = jax.random.normal(jax.random.PRNGKey(4), (2,) + y.shape, y.dtype)
        xs = jnp.stack([x, x[::-1] if name in INTEGER_INPUTS else -0.5 * x + 0.25])
        rule = _hand_rule(layer)
        eager = [jax.jit(rule)(params, xs[i], dys[i]) for i in range(2)]  # one program for both
        batched = jax.jit(jax.vmap(rule, in_axes=(None, 0, 0)))(params, xs, dys)
        for i in range(2):
            _assert_trees_close(jax.tree_util.tree_map(lambda t, i=i: t[i], batched), eager[i], 1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LAYERS))
@SETTINGS
@given(dims=shapes, seed=st.integers(0, 2**16))
def test_layer_on_random_shapes(name, dims, seed):
    _check(name, dims, seed)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
@SETTINGS
@given(dims=shapes, seed=st.integers(0, 2**16))
def test_layer_at_kinks_matches_jax_grad(name, dims, seed):
    """Exact kink points (x = 0) of the element-wise ops against jax.grad, on random shapes; the
    rest of the table has no kink that _build can plant (MaxPool's are ties of measure zero)."""
    batch, width = dims
    with jax.enable_x64(True):
        layer, params, x = _build(name, (width,), batch, seed, away_from_kinks=False)
        gradcheck.check_layer(layer, params, x, finite_diff=False).assert_close(AUTODIFF_TOL)


def test_kink_points_follow_the_lecture():
    """Default run: every element-wise op at x = 0 exactly against jax.grad, in one batch."""
    with jax.enable_x64(True):
        for name in sorted(ELEMENTWISE):
            layer, params, x = _build(name, (5,), 3, seed=1, away_from_kinks=False)
            gradcheck.check_layer(layer, params, x, finite_diff=False).assert_close(AUTODIFF_TOL)


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


def test_every_loss_is_in_the_table():
    assert set(LOSSES) == set(nn.losses.ALL)


def _check_loss(name, batch, classes, seed):
    with jax.enable_x64(True):
        loss, pred, target = LOSSES[name](batch, classes, jax.random.PRNGKey(seed))
        gradcheck.check_loss(loss, pred, target).assert_close(AUTODIFF_TOL, FD_TOL)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_vs_jax_grad_and_finite_differences(name):
    _check_loss(name, batch=5, classes=4, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LOSSES))
@SETTINGS
@given(batch=st.integers(1, 6), classes=st.integers(2, 7), seed=st.integers(0, 2**16))
def test_loss_on_random_shapes(name, batch, classes, seed):
    _check_loss(name, batch, classes, seed)


@pytest.mark.parametrize(
    "activation",
    [
        a if a in ("relu", "tanh", "softmax") else pytest.param(a, marks=pytest.mark.slow)
        for a in nn.activations.NAMES
    ],
)
def test_every_activation_inside_an_mlp_end_to_end(activation):
    with jax.enable_x64(True):
        model = nn.mlp([6, 5, 4, 3], activation=activation)
        _, params = model.init(jax.random.PRNGKey(1), (6,), dtype=jnp.float64)
        x = jax.random.normal(jax.random.PRNGKey(2), (7, 6), jnp.float64)
        labels = jnp.array([0, 1, 2, 0, 1, 2, 0])
        report = gradcheck.check_model(model, nn.losses.softmax_cross_entropy, params, x, labels)
        report.assert_close(AUTODIFF_TOL, FD_TOL)
        assert len(report.vs_autodiff) == len(jax.tree_util.tree_leaves(params))


# --- jit, vmap, custom_vjp -------------------------------------------------------------------


def _problem(dtype=jnp.float64):
    model = nn.mlp([8, 16, 16, 4], activation="relu")
    _, params = model.init(jax.random.PRNGKey(0), (8,), dtype=dtype)
    x = jax.random.normal(jax.random.PRNGKey(1), (10, 8), dtype)
    labels = jax.random.randint(jax.random.PRNGKey(2), (10,), 0, 4)
    return model, params, x, labels


def _assert_trees_close(a, b, rtol):
    jax.tree_util.tree_map(lambda u, v: np.testing.assert_allclose(u, v, rtol=rtol, atol=1e-12), a, b)


def test_jit_of_manual_gradients_equals_autodiff(x64):
    model, params, x, labels = _problem()
    loss = nn.losses.softmax_cross_entropy
    manual = jax.jit(nn.value_and_grad(model, loss, "manual"))(params, x, labels)
    auto = jax.jit(nn.value_and_grad(model, loss, "autodiff"))(params, x, labels)
    _assert_trees_close(manual, auto, 1e-10)


def test_vmap_per_example_gradients_equal_a_python_loop(x64):
    model, params, x, labels = _problem()
    loss = nn.losses.softmax_cross_entropy
    values, grads = jax.jit(nn.per_example_grads(model, loss))(params, x, labels)
    single = nn.value_and_grad(model, loss, "autodiff")
    for i in range(x.shape[0]):
        v, g = single(params, x[i : i + 1], labels[i : i + 1])
        _assert_trees_close((values[i], jax.tree_util.tree_map(lambda t, i=i: t[i], grads)), (v, g), 1e-10)


def test_with_hand_rules_plugs_into_jax_grad_jit_and_vmap(x64):
    model, params, x, labels = _problem()
    hand = nn.with_hand_rules(model)
    hand_loss = nn.loss_with_hand_rules(nn.losses.softmax_cross_entropy)

    def user_objective(p, inputs, y):  # user code: jax.grad sees only custom_vjp functions
        return hand_loss(hand.apply(p, inputs), y) + 0.0

    expected = nn.value_and_grad(model, nn.losses.softmax_cross_entropy, "autodiff")(params, x, labels)
    got = jax.jit(jax.value_and_grad(user_objective))(params, x, labels)
    _assert_trees_close(got, expected, 1e-10)
    per_example = jax.vmap(jax.grad(user_objective), in_axes=(None, 0, 0))(
        params, x[:, None], labels[:, None]
    )
    loop = [jax.grad(user_objective)(params, x[i : i + 1], labels[i : i + 1]) for i in range(3)]
    for i in range(3):
        _assert_trees_close(jax.tree_util.tree_map(lambda t, i=i: t[i], per_example), loop[i], 1e-10)


def test_with_hand_rules_really_runs_the_hand_backward():
    calls = []
    base = nn.Dense(2)

    def backward(residuals, dy):
        calls.append(1)
        return base.backward(residuals, dy)

    layer = nn.with_hand_rules(base._replace(backward=backward))
    _, params = layer.init(jax.random.PRNGKey(0), (3,))
    jax.grad(lambda p: jnp.sum(layer.apply(p, jnp.ones((2, 3)))))(params)
    assert calls == [1]


def test_manual_mode_never_calls_jax_autodiff(monkeypatch):
    model, params, x, labels = _problem(jnp.float32)

    def forbidden(*args, **kwargs):
        raise AssertionError("autodiff called on the manual path")

    f = nn.value_and_grad(model, nn.losses.softmax_cross_entropy, "manual")
    for name in ("grad", "vjp", "linearize", "value_and_grad", "jvp"):
        monkeypatch.setattr(jax, name, forbidden)
    value, grads = jax.jit(f)(params, x, labels)
    assert np.isfinite(value) and len(grads) == len(params)


def test_value_and_grad_rejects_unknown_mode():
    model, *_ = _problem(jnp.float32)
    with pytest.raises(ValueError, match="manual"):
        nn.value_and_grad(model, nn.losses.softmax_cross_entropy, mode="numeric")


def test_gradcheck_reports_a_wrong_rule(x64):
    """The checker itself must catch a mistake: a Dense whose dw forgets a transpose-free factor."""
    base = nn.Dense(3)

    def wrong_backward(residuals, dy):
        grads, dx = base.backward(residuals, dy)
        return {"w": grads["w"] * 1.001, "b": grads["b"]}, dx

    layer = base._replace(backward=wrong_backward)
    _, params = layer.init(jax.random.PRNGKey(0), (4,), dtype=jnp.float64)
    report = gradcheck.check_layer(layer, params, jnp.ones((2, 4)))
    assert report.vs_autodiff["params['w']"] > 1e-4
    assert report.vs_finite_diff["params['w']"] > 1e-4
    with pytest.raises(AssertionError, match="params\\['w'\\]"):
        report.assert_close()
