"""State and mode: BatchNorm's running statistics flow as an explicit pytree
through layers, serial, Residual, the gradients, training, checkpoints, ensembles and data parallelism."""

import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnn as nn
from jaxnn import data, train
from jaxnn_lab.gradient_table import bn_cnn

KEY = jax.random.PRNGKey(0)
LOSS = nn.losses.softmax_cross_entropy


def _bn_cnn():
    return bn_cnn(channels=4, classes=3, inner_momentum=0.5)


def _trees_equal(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(u, v)


def _trees_close(a, b, rtol=1e-5, atol=1e-6):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(u, v, rtol=rtol, atol=atol)


def test_batchnorm_contract_and_formulas():
    layer = nn.BatchNorm(momentum=0.9, eps=1e-5)
    out_shape, params = layer.init(KEY, (5, 5, 3))
    state = layer.init_state((5, 5, 3))
    assert out_shape == (5, 5, 3)
    _trees_equal(params, {"scale": jnp.ones(3), "bias": jnp.zeros(3)})
    _trees_equal(state, {"mean": jnp.zeros(3), "var": jnp.ones(3)})
    params = {"scale": jnp.array([1.0, 2.0, 0.5]), "bias": jnp.array([0.0, -1.0, 3.0])}
    x = 2 + 3 * jax.random.normal(KEY, (4, 5, 5, 3))
    y, new = layer.apply(params, x, state=state, train=True)
    xs = np.asarray(x, np.float64).reshape(-1, 3)
    m, v = xs.mean(0), xs.var(0)
    expected = (xs - m) / np.sqrt(v + 1e-5) * np.asarray(params["scale"]) + np.asarray(params["bias"])
    np.testing.assert_allclose(np.asarray(y).reshape(-1, 3), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(new["mean"], 0.1 * m, rtol=1e-5)
    np.testing.assert_allclose(new["var"], 0.9 + 0.1 * xs.var(0, ddof=1), rtol=1e-5)  # the unbiased variance
    # evaluation uses the running statistics and leaves the state as it is
    y_eval, same = layer.apply(params, x, state=new, train=False)
    expected = (
        (xs - np.asarray(new["mean"])) / np.sqrt(np.asarray(new["var"]) + 1e-5) * np.asarray(params["scale"])
    )
    np.testing.assert_allclose(
        np.asarray(y_eval).reshape(-1, 3), expected + np.asarray(params["bias"]), rtol=1e-4, atol=1e-4
    )
    assert same is new
    # without train=, BatchNorm evaluates
    _trees_equal(layer.apply(params, x, state=new), (y_eval, new))


def test_a_model_with_state_called_without_it_says_how_to_get_one():
    model = nn.serial(nn.Dense(4), nn.BatchNorm())
    _, params = model.init(KEY, (3,))
    for call in (model.apply, model.forward):
        with pytest.raises(ValueError, match=r"init_state\(input_shape\)"):
            call(params, jnp.ones((2, 3)))


def test_batchnorm_training_needs_two_values_per_channel():
    layer = nn.BatchNorm()
    _, params = layer.init(KEY, (3,))
    with pytest.raises(ValueError, match="more than one value per channel"):
        layer.apply(params, jnp.ones((1, 3)), state=layer.init_state((3,)), train=True)


def test_serial_state_is_a_tuple_with_empty_entries_and_threads_through_residual():
    model = _bn_cnn()
    assert model.stateful and not nn.mlp([2, 3]).stateful
    _, params = model.init(KEY, (8, 8, 2))
    state = model.init_state((8, 8, 2))
    assert len(state) == 7 and state[0] == () and set(state[1]) == {"mean", "var"} and state[2] == ()
    assert state[1]["mean"].shape == (4,) and state[4][1]["var"].shape == (4,)  # inside the Residual
    x = jax.random.normal(KEY, (5, 8, 8, 2))
    y, new = jax.jit(functools.partial(model.apply, train=True))(params, x, state=state)
    assert y.shape == (5, 3)
    assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(state)
    assert not np.allclose(new[1]["mean"], 0) and not np.allclose(new[4][1]["mean"], 0)

    @jax.jit
    def forward_and_backward(params, x, state):
        y, residuals, new = model.forward(params, x, state=state, train=True)
        return y, new, model.backward(residuals, jnp.ones_like(y))

    y2, new2, (dparams, dx) = forward_and_backward(params, x, state)
    np.testing.assert_allclose(y, y2, rtol=1e-6)
    _trees_equal(new, new2)
    assert (
        jax.tree_util.tree_structure(dparams) == jax.tree_util.tree_structure(params) and dx.shape == x.shape
    )


def test_models_without_state_keep_section_2_and_accept_state():
    model = nn.mlp([3, 4, 2])
    _, params = model.init(KEY, (3,))
    x = jnp.ones((2, 3))
    state = model.init_state((3,))
    assert state == ((), (), ())
    y, new = model.apply(params, x, state=state, train=True)
    np.testing.assert_array_equal(y, model.apply(params, x))
    assert new == state


def test_dropout_follows_train():
    layer = nn.Dropout(0.5)
    x = jnp.ones((4, 100))
    with pytest.raises(ValueError, match="train=True needs key"):
        layer.apply((), x, train=True)
    np.testing.assert_array_equal(layer.apply((), x, key=KEY, train=False), x)  # evaluation, key or not
    assert np.any(layer.apply((), x, key=KEY, train=True) == 0)
    assert np.any(layer.apply((), x, key=KEY) == 0)  # section 2: on when given a key


def test_groupnorm_matches_its_formula_per_example():
    layer = nn.GroupNorm(2)
    _, params = layer.init(KEY, (4, 4, 6))
    params = {"scale": jnp.arange(1.0, 7.0), "bias": jnp.arange(6.0) / 10}
    x = jax.random.normal(KEY, (3, 4, 4, 6)) * 3 + 1
    y = np.asarray(layer.apply(params, x))
    g = np.asarray(x, np.float64).reshape(3, 16, 2, 3)
    xhat = (g - g.mean((1, 3), keepdims=True)) / np.sqrt(g.var((1, 3), keepdims=True) + 1e-5)
    expected = xhat.reshape(3, 4, 4, 6) * np.arange(1.0, 7.0) + np.arange(6.0) / 10
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.apply(params, x[:1]), y[:1], rtol=1e-5, atol=1e-5)  # no batch statistics
    with pytest.raises(ValueError, match="do not split into 4 groups"):
        nn.GroupNorm(4).init(KEY, (4, 4, 6))


def test_value_and_grad_returns_the_new_state(x64):
    """Both modes return the new state; autodiff's value, state and grads equal the manual ones."""
    model = _bn_cnn()
    _, params = model.init(KEY, (8, 8, 2), dtype=jnp.float64)
    state = model.init_state((8, 8, 2), dtype=jnp.float64)
    x = jax.random.normal(KEY, (6, 8, 8, 2), jnp.float64)
    labels = jnp.array([0, 1, 2, 0, 1, 2])
    auto = nn.value_and_grad(model, LOSS, "autodiff", with_outputs=True)
    (value, out, new), grads = jax.jit(functools.partial(auto, train=True))(params, x, labels, state=state)
    y, expected_state = jax.jit(functools.partial(model.apply, train=True))(params, x, state=state)
    np.testing.assert_allclose(out, y, rtol=1e-12)
    _trees_close(new, expected_state, rtol=1e-12, atol=1e-14)
    manual = nn.value_and_grad(model, LOSS, "manual")
    (value_m, new_m), grads_m = jax.jit(functools.partial(manual, train=True))(params, x, labels, state=state)
    np.testing.assert_allclose(value, value_m, rtol=1e-12)
    _trees_close(new_m, expected_state, rtol=1e-12, atol=1e-14)
    _trees_close(grads, grads_m, rtol=1e-9, atol=1e-12)


def test_with_hand_rules_carries_state_through_jax_grad(x64):
    model = _bn_cnn()
    hand = nn.with_hand_rules(model)
    _, params = model.init(KEY, (8, 8, 2), dtype=jnp.float64)
    state = model.init_state((8, 8, 2), dtype=jnp.float64)
    x = jax.random.normal(KEY, (6, 8, 8, 2), jnp.float64)
    labels = jnp.array([0, 1, 2, 0, 1, 2])

    def objective(p):
        out, new_state = hand.apply(p, x, state=state, train=True)
        return LOSS(out, labels), new_state

    (value, new), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(params)
    autodiff = functools.partial(nn.value_and_grad(model, LOSS, "autodiff"), train=True)
    (expected_value, expected_state), expected = jax.jit(autodiff)(params, x, labels, state=state)
    np.testing.assert_allclose(value, expected_value, rtol=1e-12)
    _trees_close(grads, expected, rtol=1e-9, atol=1e-12)
    _trees_close(new, expected_state, rtol=1e-12, atol=1e-14)


def _blob_images():
    ds = data.load("blobs", key=KEY, n=600, classes=3)
    # 2-D points as 2x2x1 "images" so that a conv net with BatchNorm can read them
    images = lambda a: np.repeat(a, 2, axis=1).reshape(-1, 2, 2, 1).astype(np.float32)  # noqa: E731
    return (images(ds.x_train), ds.y_train, images(ds.x_test), ds.y_test)


def _bn_net():
    return nn.serial(nn.Conv2D(8, (1, 1)), nn.BatchNorm(), nn.activation("relu"), nn.Flatten(), nn.Dense(3))


def _fit_bn(tmp_path, epochs, name="ckpt.npz", resume=False):
    opt = train.optimizer("momentum", 0.05)
    return train.fit(
        _bn_net(),
        LOSS,
        _blob_images(),
        epochs=epochs,
        batch_size=32,
        opt=opt,
        key=KEY,
        input_shape=(2, 2, 1),
        checkpointing=train.Checkpointing(str(tmp_path / name), resume=resume),
        reporting=train.Reporting(progress=False),
    )


def test_fit_updates_running_statistics_and_evaluates_with_them(tmp_path):
    state, history = _fit_bn(tmp_path, epochs=3)
    assert history["epochs"][-1]["test_accuracy"] > 0.95
    running = state.model_state[1]
    assert not np.allclose(running["mean"], 0) and not np.allclose(running["var"], 1)
    x_test, y_test = _blob_images()[2:]
    evaluate = train.make_evaluate(_bn_net(), LOSS, (2, 2, 1))
    test_loss, acc = evaluate(state.params, x_test, y_test, state.model_state)
    np.testing.assert_allclose(acc, history["epochs"][-1]["test_accuracy"])
    fresh = evaluate(state.params, x_test, y_test, _bn_net().init_state((2, 2, 1)))
    assert not np.isclose(fresh[0], test_loss)  # evaluation really reads the running statistics


def test_checkpoint_resume_restores_the_state_bitwise(tmp_path):
    full, _ = _fit_bn(tmp_path, epochs=3, name="full.npz")
    _fit_bn(tmp_path, epochs=1, name="part.npz")
    resumed, _ = _fit_bn(tmp_path, epochs=3, name="part.npz", resume=True)
    _trees_equal(full, resumed)
    assert not np.allclose(resumed.model_state[1]["mean"], 0)


def test_ensemble_members_carry_their_own_state():
    model, opt = _bn_net(), train.optimizer("momentum", 0.05)  # Adam would amplify rounding noise in
    # the conv bias, whose true gradient is 0 before BatchNorm, into the running mean
    x_train, y_train = _blob_images()[:2]
    keys = jax.random.split(KEY, 3)
    states = train.init_ensemble(model, opt, keys, (2, 2, 1))
    assert states.model_state[1]["mean"].shape == (3, 8)
    epoch = train.make_ensemble_epoch(model, LOSS, opt, 32, (2, 2, 1))
    states, _ = epoch(states, x_train, y_train)
    single = train.make_epoch(model, LOSS, opt, 32, (2, 2, 1))
    alone, _ = single(train.init_state(model, opt, keys[1], (2, 2, 1)), x_train, y_train)
    _trees_close(jax.tree_util.tree_map(lambda t: t[1], states.model_state), alone.model_state)


PARALLEL = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    import jaxnn as nn
    from jaxnn import parallel, train
    assert jax.device_count() == 8
    model = nn.serial(nn.Dense(16), nn.BatchNorm(), nn.activation("relu"), nn.Dense(3))
    loss, mesh = nn.losses.softmax_cross_entropy, parallel.data_mesh(8)
    opt = train.optimizer("momentum", 0.05)  # not Adam: see test_ensemble_members_carry_their_own_state
    state = train.init_state(model, opt, jax.random.PRNGKey(0), (2,))
    # per-device batches with different statistics: device d gets points around d
    x = jax.random.normal(jax.random.PRNGKey(1), (64, 2)) + jnp.repeat(jnp.arange(8.0), 8)[:, None]
    y = jax.random.randint(jax.random.PRNGKey(2), (64,), 0, 3)
    single = jax.jit(train.make_step(model, loss, opt))(state, x, y)[0]
    sharded = jax.jit(train.make_step(model, loss, opt, options=train.TrainOptions(mesh=mesh)))(
        parallel.replicate(state, mesh), parallel.replicate(x, mesh), parallel.replicate(y, mesh))[0]
    for a, b in zip(jax.tree_util.tree_leaves(single), jax.tree_util.tree_leaves(sharded)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=1e-6)
    # the running mean is that of the global batch (one device's would be far from it)
    h = x @ state.params[0]["w"] + state.params[0]["b"]
    expected = 0.1 * np.asarray(h).mean(0)
    np.testing.assert_allclose(sharded.model_state[1]["mean"], expected, rtol=1e-4, atol=1e-6)
    print("OK")
""")


@pytest.mark.slow  # a long end-to-end run (or a wait for a timeout): the slow pass
def test_batch_statistics_over_the_global_batch_on_8_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-c", PARALLEL], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0 and "OK" in out.stdout, out.stdout + out.stderr
