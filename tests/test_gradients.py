"""One table (jaxnn_lab/gradient_table.py) drives the gradient checks: add an op to LAYERS or
LOSSES there and it is checked in float64 against jax.grad (rel. error <= 1e-10) and central finite
differences (<= 1e-6), and its hand rule is run under `jit` and under `vmap` against the eager result.

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
from jaxnn_lab.gradient_table import ELEMENTWISE, INTEGER_INPUTS, LAYERS, LOSSES, build

AUTODIFF_TOL = 1e-10
FD_TOL = 1e-6
SETTINGS = settings(max_examples=6, deadline=None, derandomize=True)
FIXED_DIMS = (3, 4)  # (batch, width) of the default run's one example per op
shapes = st.tuples(st.integers(1, 5), st.integers(1, 6))  # (batch, width)


def _check(name, dims, seed):
    batch, width = dims
    with jax.enable_x64(True):
        layer, params, x = build(name, (width,), batch, seed, away_from_kinks=True)
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
        layer, params, x = build(name, (FIXED_DIMS[1],), FIXED_DIMS[0], seed=3, away_from_kinks=True)
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
        layer, params, x = build(name, (width,), batch, seed, away_from_kinks=False)
        gradcheck.check_layer(layer, params, x, finite_diff=False).assert_close(AUTODIFF_TOL)


def test_kink_points_follow_the_lecture():
    """Default run: every element-wise op at x = 0 exactly against jax.grad, in one batch."""
    with jax.enable_x64(True):
        for name in sorted(ELEMENTWISE):
            layer, params, x = build(name, (5,), 3, seed=1, away_from_kinks=False)
            gradcheck.check_layer(layer, params, x, finite_diff=False).assert_close(AUTODIFF_TOL)


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
