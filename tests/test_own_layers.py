"""A researcher's own pieces compose with the hand rules: a layer built without a backward pass, a
plain function in serial and a plain loss function train on the manual path, and give what
jax.grad gives (float64); reports say which backward each layer has."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnn as nn
from jaxnn import data, gradcheck, train

KEY = jax.random.PRNGKey(0)


def _own_model():
    """Dense (hand) -> an own layer with no backward -> a plain function -> Dense (hand)."""

    def init(key, input_shape, dtype=jnp.float32):
        return input_shape, {"w": 1 + 0.1 * jax.random.normal(key, input_shape[-1:], dtype)}

    gate = nn.make_layer("gate", init, apply=lambda params, x: x * jax.nn.sigmoid(params["w"] * x))
    return nn.serial(nn.Dense(16), gate, jnp.tanh, nn.Dense(3))


def _plain_loss(logits, labels):
    """Cross-entropy written the way one writes it without jaxnn."""
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))


def test_own_layer_plain_function_and_plain_loss_give_jax_grads_gradient(x64):
    model = _own_model()
    _, params = model.init(KEY, (4,), dtype=jnp.float64)
    x = jax.random.normal(KEY, (8, 4), jnp.float64)
    labels = jax.random.randint(jax.random.PRNGKey(1), (8,), 0, 3)
    manual = nn.value_and_grad(model, _plain_loss, "manual")(params, x, labels)
    auto = nn.value_and_grad(model, _plain_loss, "autodiff")(params, x, labels)
    for a, b in zip(jax.tree_util.tree_leaves(manual), jax.tree_util.tree_leaves(auto)):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    report = gradcheck.check_model(model, _plain_loss, params, x, labels).assert_close()
    assert report.rules == (
        ("Dense(16)", "hand"),
        ("gate", "autodiff"),
        ("tanh", "autodiff"),
        ("Dense(3)", "hand"),
        ("_plain_loss", "autodiff"),
    )
    assert report.by_autodiff == ["gate", "tanh", "_plain_loss"]


def test_manual_mode_still_runs_the_hand_rules_of_the_built_in_layers(monkeypatch):
    """jax.vjp runs for the own layers only: a model of built-in layers never calls it."""
    model = nn.mlp([4, 5, 3])
    _, params = model.init(KEY, (4,))
    calls = []
    original = jax.vjp
    monkeypatch.setattr(jax, "vjp", lambda *a, **k: calls.append(1) or original(*a, **k))
    nn.value_and_grad(model, nn.losses.softmax_cross_entropy)(params, jnp.ones((2, 4)), jnp.array([0, 1]))
    assert calls == []
    nn.value_and_grad(_own_model(), nn.losses.softmax_cross_entropy)(
        _own_model().init(KEY, (4,))[1], jnp.ones((2, 4)), jnp.array([0, 1])
    )
    assert len(calls) == 2  # the gate and tanh


def test_fit_trains_an_own_model_with_a_plain_loss_the_same_way_in_both_modes(x64):
    ds = data.load("blobs", key=KEY, n=480, classes=3)
    arrays = (ds.x_train, ds.y_train, ds.x_test, ds.y_test)
    runs = {}
    for mode in ("manual", "autodiff"):
        runs[mode] = train.fit(
            _own_model(),
            _plain_loss,
            arrays,
            epochs=2,
            batch_size=32,
            opt=train.optimizer("adam", 1e-2),
            key=KEY,
            input_shape=(2,),
            options=train.TrainOptions(mode=mode, dtype=jnp.float64),
            reporting=train.Reporting(progress=False),
        )
    (m_state, m_history), (a_state, a_history) = runs["manual"], runs["autodiff"]
    np.testing.assert_allclose(m_history["step_losses"], a_history["step_losses"], rtol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(m_state.params), jax.tree_util.tree_leaves(a_state.params)):
        assert a.dtype == jnp.float64
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    assert m_history["epochs"][-1]["test_accuracy"] > 0.9


def test_with_hand_rules_and_loss_with_hand_rules_take_own_pieces(x64):
    model = _own_model()
    _, params = model.init(KEY, (4,), dtype=jnp.float64)
    x = jax.random.normal(KEY, (8, 4), jnp.float64)
    labels = jnp.arange(8) % 3
    hand, loss = nn.with_hand_rules(model), nn.loss_with_hand_rules(_plain_loss)
    got = jax.grad(lambda p: loss(hand.apply(p, x), labels))(params)
    expected = jax.grad(lambda p: _plain_loss(model.apply(p, x), labels))(params)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-13)


def test_a_loss_that_is_not_a_function_or_not_a_scalar():
    model = nn.mlp([4, 3])
    with pytest.raises(nn.InputTypeError, match="function"):
        nn.value_and_grad(model, "cross-entropy")
    _, params = model.init(KEY, (4,))
    f = nn.value_and_grad(model, lambda out, labels: out - 1.0)
    with pytest.raises(nn.InputError, match="scalar"):
        f(params, jnp.ones((2, 4)), jnp.array([0, 1]))
