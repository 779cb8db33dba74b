"""The Layer contract, name for name, and clear errors for bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnn as nn

KEY = jax.random.PRNGKey(0)


def test_dense_contract():
    layer = nn.Dense(5)
    out_shape, params = layer.init(KEY, (3,))
    assert out_shape == (5,)
    assert params["w"].shape == (3, 5) and params["b"].shape == (5,)
    x = jax.random.normal(KEY, (4, 3))
    y = layer.apply(params, x)
    np.testing.assert_allclose(y, x @ params["w"] + params["b"], rtol=1e-6)
    y2, residuals = layer.forward(params, x)
    np.testing.assert_array_equal(y, y2)
    dparams, dx = layer.backward(residuals, jnp.ones_like(y))
    assert jax.tree_util.tree_structure(dparams) == jax.tree_util.tree_structure(params)
    assert dx.shape == x.shape


def test_serial_params_are_a_tuple_with_empty_entries():
    model = nn.serial(nn.Dense(4), nn.activation("relu"), nn.Dense(2))
    out_shape, params = model.init(KEY, (3,))
    assert out_shape == (2,)
    assert isinstance(params, tuple) and len(params) == 3 and params[1] == ()


def test_mlp_structure():
    model = nn.mlp([784, 512, 512, 10], activation="relu")
    out_shape, params = model.init(KEY, (784,))
    assert out_shape == (10,)
    assert len(params) == 5  # Dense, relu, Dense, relu, Dense: no activation after the last Dense
    assert [p["w"].shape for p in params[::2]] == [(784, 512), (512, 512), (512, 10)]
    assert params[1] == () and params[3] == ()
    assert model.apply(params, jnp.zeros((2, 784))).shape == (2, 10)


def test_prelu_has_learnable_alpha():
    layer = nn.activation("prelu", alpha=0.1)
    _, params = layer.init(KEY, (3,))
    assert set(params) == {"alpha"} and params["alpha"].shape == ()
    y = layer.apply(params, jnp.array([[-2.0, 0.0, 3.0]]))
    np.testing.assert_allclose(y, [[-0.2, 0.0, 3.0]], rtol=1e-6)


def test_params_are_plain_pytrees_for_optax():
    import optax

    model = nn.mlp([3, 4, 2])
    _, params = model.init(KEY, (3,))
    opt = optax.sgd(0.1)
    state = opt.init(params)
    x, labels = jnp.ones((2, 3)), jnp.array([0, 1])
    _, grads = nn.value_and_grad(model, nn.losses.softmax_cross_entropy)(params, x, labels)
    updates, state = opt.update(grads, state)
    new = optax.apply_updates(params, updates)
    assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(params)


def test_sgd_step_by_hand_lowers_the_loss():
    """The lecture's W <- W - lr dL/dW, on a linear classifier."""
    model = nn.Dense(3)
    _, params = model.init(KEY, (4,))
    x = jax.random.normal(KEY, (32, 4))
    labels = jnp.argmax(x[:, :3], axis=1)
    f = jax.jit(nn.value_and_grad(model, nn.losses.softmax_cross_entropy))
    first, _ = f(params, x, labels)
    for _ in range(50):
        value, grads = f(params, x, labels)
        params = jax.tree_util.tree_map(lambda p, g: p - 0.5 * g, params, grads)
    assert value < 0.5 * first


# --- errors --------------------------------------------------------------------------------------


def test_wrong_input_width_for_apply_names_both_shapes():
    layer = nn.Dense(2)
    _, params = layer.init(KEY, (3,))
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, 3\), got \(4, 5\)"):
        layer.apply(params, jnp.zeros((4, 5)))


def test_wrong_rank_for_apply():
    model = nn.mlp([3, 4, 2])
    _, params = model.init(KEY, (3,))
    with pytest.raises(ValueError, match=r"\(batch, 3\), got \(3,\)"):
        model.apply(params, jnp.zeros(3))


def test_shape_errors_also_fire_under_jit():
    layer = nn.Dense(2)
    _, params = layer.init(KEY, (3,))
    with pytest.raises(ValueError, match="expected input of shape"):
        jax.jit(layer.apply)(params, jnp.zeros((4, 5)))


def test_wrong_rank_for_init_suggests_flatten():
    with pytest.raises(ValueError, match="Flatten"):
        nn.Dense(2).init(KEY, (28, 28, 1))  # an image (H, W, C)


def test_dense_maps_every_position_of_a_sequence():
    layer = nn.Dense(3)
    out_shape, params = layer.init(KEY, (5, 4))  # (time, n_in)
    assert out_shape == (5, 3) and params["w"].shape == (4, 3)
    x = jax.random.normal(KEY, (2, 5, 4))
    np.testing.assert_allclose(layer.apply(params, x)[1, 2], layer.apply(params, x[1, 2][None])[0], rtol=1e-6)


def test_mlp_init_checks_the_input_width():
    with pytest.raises(ValueError, match=r"\(784,\)"):
        nn.mlp([784, 10]).init(KEY, (100,))


def test_unknown_activation_lists_valid_names():
    with pytest.raises(ValueError) as err:
        nn.activation("relu6")
    for name in ["identity", "binary_step", "logistic", "tanh", "arctan", "relu", "prelu", "elu", "softplus"]:
        assert name in str(err.value)


def test_unknown_activation_option():
    with pytest.raises(TypeError, match="alpha"):
        nn.activation("elu", beta=2.0)


def test_structure_is_one_field_and_layers_is_read_from_it():
    """serial's parts are a Chain (each reads the one before), so `layers` lists them; Residual's
    read the same input: no `layers`, as a wrapper's; and a transformer block keeps its chain."""
    from jaxnn.core import Chain

    model = nn.serial(nn.Dense(3), nn.activation("relu"), nn.Dense(2))
    assert "layers" not in nn.Layer._fields and isinstance(model.parts, Chain)
    assert model.layers == tuple(part for part, _ in model.parts)
    assert [path for _, path in model.parts] == [(0,), (1,), (2,)]
    residual = nn.Residual(nn.Dense(4), shortcut=nn.Dense(4))
    assert residual.layers == () and len(residual.parts) == 2 and not isinstance(residual.parts, Chain)
    block = nn.models.transformer_block(8, 2)
    assert block.config["kind"] == "TransformerBlock" and block.layers


def test_serial_rejects_non_layers():
    with pytest.raises(TypeError, match="argument 1"):
        nn.serial(nn.Dense(2), "relu")


def test_serial_rejects_wrong_params():
    model = nn.mlp([3, 4, 2])
    with pytest.raises(ValueError, match="tuple of 3"):
        model.apply((), jnp.zeros((1, 3)))


# --- convolutional and recurrent layers: shapes and errors ---------------------------------------------


def test_conv_contract_shapes():
    layer = nn.Conv2D(8, kernel_size=(3, 3), stride=(2, 2), padding="SAME")
    out_shape, params = layer.init(KEY, (28, 28, 1))
    assert out_shape == (14, 14, 8) and params["w"].shape == (3, 3, 1, 8) and params["b"].shape == (8,)
    assert layer.apply(params, jnp.zeros((2, 28, 28, 1))).shape == (2, 14, 14, 8)
    assert nn.MaxPool().init(KEY, (7, 7, 3))[0] == (3, 3, 3)


def test_lstm_contract_shapes():
    layer = nn.LSTM(5)
    out_shape, params = layer.init(KEY, (28, 28))
    assert out_shape == (28, 5)
    assert {k: v.shape for k, v in params.items()} == {"wx": (28, 20), "wh": (5, 20), "b": (20,)}
    assert layer.apply(params, jnp.zeros((3, 28, 28))).shape == (3, 28, 5)


def test_conv_bad_rank_and_channels():
    layer = nn.Conv2D(4)
    _, params = layer.init(KEY, (8, 8, 3))
    with pytest.raises(ValueError, match=r"\(batch, H, W, C\), got \(8, 8, 3\)"):
        layer.apply(params, jnp.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="expected 3 input channels, got 1"):
        layer.apply(params, jnp.zeros((2, 8, 8, 1)))
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        layer.init(KEY, (784,))


def test_recurrent_bad_shapes():
    layer = nn.LSTM(4)
    _, params = layer.init(KEY, (5, 3))
    with pytest.raises(ValueError, match="length 0"):
        layer.apply(params, jnp.zeros((2, 0, 3)))
    with pytest.raises(ValueError, match="expected 3 features"):
        layer.apply(params, jnp.zeros((2, 5, 4)))
    with pytest.raises(ValueError, match=r"\(batch, time, 3\)"):
        layer.apply(params, jnp.zeros((5, 3)))
    with pytest.raises(ValueError, match="length 0"):
        nn.GRU(2).init(KEY, (0, 3))


def test_dropout_is_identity_without_a_key_and_masks_with_one():
    layer = nn.Dropout(0.5)
    x = jnp.ones((4, 1000))
    np.testing.assert_array_equal(layer.apply((), x), x)
    y = layer.apply((), x, key=jax.random.PRNGKey(0))
    assert set(np.unique(np.asarray(y))) == {0.0, 2.0}
    assert abs(float(jnp.mean(y)) - 1.0) < 0.05
    model = nn.serial(nn.Dense(3), nn.Dropout(0.5))
    _, params = model.init(KEY, (2,))
    a = model.apply(params, jnp.ones((2, 2)), key=jax.random.PRNGKey(1))
    b = model.apply(params, jnp.ones((2, 2)), key=jax.random.PRNGKey(1))
    np.testing.assert_array_equal(a, b)  # keys are passed, never stored: same key, same mask


def test_residual_needs_matching_shapes():
    with pytest.raises(ValueError, match="same shape"):
        nn.Residual(nn.Dense(3)).init(KEY, (4,))


@pytest.mark.parametrize("cell,parts", [(nn.RNN, 1), (nn.LSTM, 2), (nn.GRU, 1)])
def test_recurrent_initial_state(cell, parts, x64):
    layer = cell(3)
    _, params = layer.init(KEY, (4, 2), dtype=jnp.float64)
    x = jax.random.normal(KEY, (2, 4, 2), jnp.float64)
    zeros = jnp.zeros((2, 3))
    given = zeros if parts == 1 else (zeros, zeros)
    apply = jax.jit(lambda p, v, s: layer.apply(p, v, initial_state=s))
    plain = jax.jit(layer.apply)(params, x)
    np.testing.assert_allclose(apply(params, x, given), plain, rtol=1e-12)
    h0 = jnp.ones((2, 3)) * 0.5
    state = h0 if parts == 1 else (h0, h0)
    assert not np.allclose(apply(params, x, state), plain)

    # the hand gradients for params and x with a given initial state still match jax.grad
    @jax.jit
    def both(p, v):
        out, residuals = layer.forward(p, v, initial_state=state)
        hand = layer.backward(residuals, 2 * out)
        auto = jax.grad(lambda p, v: jnp.sum(layer.apply(p, v, initial_state=state) ** 2), argnums=(0, 1))(
            p, v
        )
        return hand, auto

    (dparams, dx), (auto_p, auto_x) = both(params, x)
    np.testing.assert_allclose(dx, auto_x, rtol=1e-10)
    for k in params:
        np.testing.assert_allclose(dparams[k], auto_p[k], rtol=1e-10, atol=1e-14)
    with pytest.raises(ValueError, match="initial_state"):
        layer.apply(params, x, initial_state=jnp.zeros((5, 3)) if parts == 1 else (zeros,))


# --- layers without a hand rule, plain functions, and what the library says when given the wrong thing ---


def _wave():
    """A researcher's own layer with no backward pass: y = x * sin(w) + c, one w and c per feature."""

    def init(key, input_shape, dtype=jnp.float32):
        return input_shape, {
            "w": jax.random.normal(key, input_shape[-1:], dtype),
            "c": jnp.zeros(input_shape[-1:], dtype),
        }

    return nn.make_layer("wave", init, apply=lambda params, x: x * jnp.sin(params["w"]) + params["c"])


def test_make_layer_with_apply_alone_is_a_full_layer(x64):
    layer = _wave()
    assert layer.rule == "autodiff"
    _, params = layer.init(KEY, (3,), dtype=jnp.float64)
    x = jax.random.normal(KEY, (4, 3), jnp.float64)
    y, residuals = layer.forward(params, x)
    np.testing.assert_allclose(y, layer.apply(params, x))
    dy = jax.random.normal(jax.random.PRNGKey(1), y.shape, jnp.float64)
    dparams, dx = layer.backward(residuals, dy)
    expected = jax.grad(lambda p, x: jnp.sum(layer.apply(p, x) * dy), argnums=(0, 1))(params, x)
    for a, b in zip(jax.tree_util.tree_leaves((dparams, dx)), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-14)


def test_make_layer_apply_may_take_state_key_and_train():
    """f(params, x, key, train, state) -> (y, new_state), as a built-in layer with state would."""

    def counting(params, x, state, train=None, key=None):
        new = {"seen": state["seen"] + (x.shape[0] if train else 0)}
        return x * params["g"], new

    layer = nn.make_layer(
        "counting",
        lambda key, shape: (shape, {"g": jnp.ones(())}),
        apply=counting,
        init_state=lambda shape, dtype=jnp.float32: {"seen": jnp.zeros((), jnp.int32)},
    )
    assert layer.stateful and layer.stochastic and layer.rule == "autodiff"
    _, params = layer.init(KEY, (2,))
    y, state = layer.apply(params, jnp.ones((5, 2)), state=layer.init_state((2,)), train=True)
    assert int(state["seen"]) == 5
    y, residuals, state = layer.forward(params, jnp.ones((5, 2)), state=state, train=False)
    assert int(state["seen"]) == 5
    assert float(layer.backward(residuals, jnp.ones_like(y))[0]["g"]) == 10.0
    with pytest.raises(nn.InputError, match="has state"):
        layer.apply(params, jnp.ones((1, 2)))


def test_make_layer_refuses_half_a_hand_rule():
    forward = lambda params, x: (x, None)  # noqa: E731
    with pytest.raises(nn.InputError, match="apply=f"):
        nn.make_layer("half", lambda key, shape: (shape, ()), forward)
    with pytest.raises(nn.InputError, match="not both"):
        nn.make_layer("both", lambda key, shape: (shape, ()), forward, lambda r, dy: ((), dy), apply=forward)


def test_serial_takes_plain_functions_with_the_vjp_fallback():
    model = nn.serial(nn.Conv2D(2, (3, 3)), jnp.tanh, lambda x: x.reshape(x.shape[0], -1), nn.Dense(3))
    assert [layer.rule for layer in model.layers] == ["hand", "autodiff", "autodiff", "hand"]
    assert model.rule == "mixed" and model.layers[1].name == "tanh"
    out_shape, params = model.init(KEY, (5, 5, 1))
    assert out_shape == (3,) and params[1] == () and params[2] == ()
    assert "autodiff" in nn.summary(model, (5, 5, 1))
    with pytest.raises(nn.InputError, match="batch to a batch"):
        nn.serial(lambda x: x.sum()).init(KEY, (3,))


def test_a_params_dict_with_a_wrong_key_names_the_expected_ones():
    layer = nn.Dense(2)
    _, params = layer.init(KEY, (3,))
    wrong = {"W": params["w"], "b": params["b"]}
    with pytest.raises(
        nn.InputError, match=r"keys \['W', 'b'\], this layer's are a dict with keys \['b', 'w'\]"
    ):
        layer.apply(wrong, jnp.zeros((1, 3)))
    model = nn.serial(nn.Dense(2), nn.activation("relu"))
    with pytest.raises(nn.InputError, match="Dense"):
        model.apply((wrong, ()), jnp.zeros((1, 3)))


@pytest.mark.parametrize("shape", [784, "784", (784.0,), None])
def test_init_with_a_shape_that_is_not_a_tuple_of_ints(shape):
    if shape is not None:  # None: a built model's own input shape
        with pytest.raises(nn.InputError, match="ONE example as a tuple of ints"):
            nn.mlp([784, 10]).init(KEY, shape)
    with (
        pytest.raises(nn.InputError, match=r"write \(784,\)")
        if shape == 784
        else pytest.raises(nn.InputError)
    ):
        nn.Dense(3).init(KEY, shape)


@pytest.mark.parametrize(
    "name, options",
    [
        ("linear", {}),
        ("image_mlp", {}),
        ("cnn", {"channels": (2, 4)}),
        ("resnet", {"channels": (2, 4), "blocks": 1}),
        ("lstm", {"width": 4}),
        ("gru", {"width": 4}),
        ("rnn", {"width": 4}),
    ],
)
def test_every_builder_returns_a_layer_with_its_input_shape(name, options):
    if name in ("lstm", "gru", "rnn"):
        model = nn.models.recurrent_reader(name, 10, (28, 28, 1), **options)
    else:
        model = getattr(nn.models, name)(10, (28, 28, 1), **options)
    assert isinstance(model, nn.Layer) and model.input_shape is not None
    assert nn.output_shape(model, model.input_shape) == (10,)
    jax.eval_shape(lambda key: model.init(key)[1], KEY)  # init defaults to the model's input shape
    if name in ("linear", "lstm"):  # summary takes the model alone (each row compiles: two suffice)
        assert "total" in nn.summary(model)


def test_the_language_and_image_builders_return_layers_too():
    for model, shape in [
        (nn.models.char_transformer(7, 5, d=8, heads=2, layers=1), (5,)),
        (nn.models.char_lstm(7, 5, 4, 8), (5,)),
        (nn.models.conv_autoencoder(), (28, 28, 1)),
        (nn.mlp([6, 3]), (6,)),
    ]:
        assert isinstance(model, nn.Layer) and model.input_shape == shape


def test_import_jaxnn_gives_the_training_and_data_modules():
    import importlib

    for name in ("train", "data", "language", "checkpoint", "parallel"):
        assert getattr(nn, name) is importlib.import_module(f"jaxnn.{name}")
    with pytest.raises(AttributeError):
        nn.no_such_module  # noqa: B018


@pytest.mark.parametrize("name", ["tanh", "relu", "arctan", "softplus", "elu", "logistic"])
def test_rnn_takes_the_activations_of_the_table(name, x64):
    from jaxnn import gradcheck

    layer = nn.RNN(3, activation=name)
    _, params = layer.init(KEY, (4, 2), dtype=jnp.float64)
    x = jax.random.normal(KEY, (2, 4, 2), jnp.float64)
    gradcheck.check_layer(layer, params, x).assert_close()
    with pytest.raises(nn.InputError, match="unsupported activation 'prelu'"):
        nn.RNN(3, activation="prelu")


def test_conv_transpose_uses_the_given_initialiser():
    layer = nn.ConvTranspose2D(3, 2, 2, w_init=lambda key, shape, dtype: jnp.full(shape, 0.5, dtype))
    _, params = layer.init(KEY, (4, 4, 2))
    assert params["w"].shape == (2, 2, 2, 3) and bool(jnp.all(params["w"] == 0.5))
