"""Losses: the formulas, stability for logits of +-1e4 in float32, clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnn as nn

L = nn.losses


def test_softmax_cross_entropy_formula(x64):
    logits = jnp.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
    labels = jnp.array([2, 0])
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = -np.mean(np.log(p[[0, 1], [2, 0]]))
    np.testing.assert_allclose(L.softmax_cross_entropy(logits, labels), expected, rtol=1e-12)


def test_smoothed_cross_entropy_formula(x64):
    """-(1/N) sum_i sum_c q_ic log p_ic with q = (1 - eps) onehot + eps / C, written out; eps = 0
    is softmax_cross_entropy."""
    logits = jnp.array([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    labels = jnp.array([0, 2])
    log_p = np.log(np.exp(logits) / np.exp(logits).sum(1, keepdims=True))
    q = 0.8 * np.eye(3)[[0, 2]] + 0.2 / 3
    expected = -(q * log_p).sum() / 2
    np.testing.assert_allclose(L.smoothed_cross_entropy(0.2)(logits, labels), expected, rtol=1e-12)
    assert L.smoothed_cross_entropy(0.0)(logits, labels) == L.softmax_cross_entropy(logits, labels)


@pytest.mark.parametrize("smoothing", [-0.1, 1.0, True, "0.1"])
def test_smoothed_cross_entropy_rejects_a_bad_smoothing(smoothing):
    with pytest.raises(nn.InputError, match=r"smoothing must lie in \[0, 1\)"):
        L.smoothed_cross_entropy(smoothing)


def test_lecture_formula(x64):
    """-(1/N) sum_i sum_c [y log out + (1 - y) log(1 - out)], out = softmax(logits)."""
    logits = jnp.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
    labels = jnp.array([2, 0])
    out = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.eye(3)[labels]
    expected = -np.sum(y * np.log(out) + (1 - y) * np.log(1 - out)) / 2
    np.testing.assert_allclose(L.softmax_binary_cross_entropy(logits, labels), expected, rtol=1e-12)


def test_bce_and_mse_formulas(x64):
    z = jnp.array([[0.3, -2.0], [4.0, 0.0]])
    t = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    s = 1 / (1 + np.exp(-z))
    bce = -np.sum(t * np.log(s) + (1 - t) * np.log(1 - s)) / 2
    np.testing.assert_allclose(L.binary_cross_entropy(z, t), bce, rtol=1e-12)
    np.testing.assert_allclose(L.mean_squared_error(z, t), np.sum((z - t) ** 2) / 2, rtol=1e-12)


@pytest.mark.parametrize(
    "loss", [L.softmax_cross_entropy, L.smoothed_cross_entropy(0.1), L.softmax_binary_cross_entropy]
)
def test_class_losses_stable_at_1e4_in_float32(loss):
    logits = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], jnp.float32)
    labels = jnp.array([1, 0])
    value, residuals = loss.forward(logits, labels)
    grad = loss.backward(residuals, 1.0)
    auto = jax.grad(loss)(logits, labels)
    assert np.isfinite(value) and value > 1e4 - 1  # wrong by a margin of 1e4 each
    assert np.all(np.isfinite(grad)) and np.all(np.isfinite(auto))
    np.testing.assert_allclose(grad, auto, atol=1e-6)


def test_bce_stable_at_1e4_in_float32():
    z = jnp.array([[1e4, -1e4]], jnp.float32)
    value, res = L.binary_cross_entropy.forward(z, jnp.array([[0.0, 1.0]]))
    assert np.isfinite(value) and np.all(np.isfinite(L.binary_cross_entropy.backward(res, 1.0)))


def test_labels_out_of_range():
    with pytest.raises(ValueError, match=r"\[0, 3\).*got values from 0 to 3"):
        L.softmax_cross_entropy(jnp.zeros((2, 3)), jnp.array([0, 3]))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        L.softmax_binary_cross_entropy(jnp.zeros((2, 3)), jnp.array([-1, 0]))


def test_non_integer_labels():
    with pytest.raises(TypeError, match="integer"):
        L.softmax_cross_entropy(jnp.zeros((2, 3)), jnp.array([0.0, 1.0]))


def test_mismatched_batch_sizes():
    with pytest.raises(ValueError, match=r"batch sizes differ.*\(4,\).*got \(3,\)"):
        L.softmax_cross_entropy(jnp.zeros((4, 3)), jnp.array([0, 1, 2]))
    model = nn.mlp([3, 2])
    _, params = model.init(jax.random.PRNGKey(0), (3,))
    with pytest.raises(ValueError, match="batch sizes differ"):
        nn.value_and_grad(model, L.softmax_cross_entropy)(params, jnp.zeros((4, 3)), jnp.array([0, 1]))


@pytest.mark.parametrize(
    "loss", [L.softmax_cross_entropy, L.smoothed_cross_entropy(0.1), L.softmax_binary_cross_entropy]
)
def test_under_jit_out_of_range_label_gives_nan(loss):
    """Documented behaviour: values cannot be checked under jit; the loss becomes NaN, loudly."""
    logits, labels = jnp.zeros((2, 4)), jnp.array([1, 7])
    value, residuals = jax.jit(loss.forward)(logits, labels)
    assert np.isnan(value)
    grad = loss.backward(residuals, 1.0)
    assert np.all(np.isfinite(grad[0])) and np.all(np.isnan(grad[1]))


def test_shape_mismatch_for_regression_losses():
    with pytest.raises(ValueError, match="shapes differ"):
        L.mean_squared_error(jnp.zeros((2, 3)), jnp.zeros((2, 2)))
