"""The lecture's activation table: values, derivatives, kinks, stability at |x| = 1e4 in float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnn as nn

X = np.linspace(-4, 4, 81)  # includes 0 exactly

# the lecture's table, written out independently in numpy: name -> (f, f')
LECTURE = {
    "identity": (lambda x: x, lambda x: np.ones_like(x)),
    "binary_step": (lambda x: (x >= 0) * 1.0, lambda x: np.zeros_like(x)),
    "logistic": (lambda x: 1 / (1 + np.exp(-x)), lambda x: np.exp(-x) / (1 + np.exp(-x)) ** 2),
    "tanh": (lambda x: 2 / (1 + np.exp(-2 * x)) - 1, lambda x: 1 - np.tanh(x) ** 2),
    "arctan": (np.arctan, lambda x: 1 / (x**2 + 1)),
    "relu": (lambda x: np.where(x >= 0, x, 0), lambda x: (x >= 0) * 1.0),
    "prelu": (lambda x: np.where(x >= 0, x, 0.25 * x), lambda x: np.where(x >= 0, 1, 0.25)),
    "elu": (lambda x: np.where(x >= 0, x, np.exp(x) - 1), lambda x: np.where(x >= 0, 1, np.exp(x))),
    "softplus": (lambda x: np.log(1 + np.exp(x)), lambda x: 1 / (1 + np.exp(-x))),
}


def _value_and_derivative(name, x, **options):
    layer = nn.activation(name, **options)
    _, params = layer.init(jax.random.PRNGKey(0), x.shape[1:], dtype=x.dtype)
    y, residuals = layer.forward(params, x)
    _, dx = layer.backward(residuals, jnp.ones_like(y))
    return np.asarray(y), np.asarray(dx)


@pytest.mark.parametrize("name", sorted(LECTURE))
def test_matches_the_lecture_table(name, x64):
    f, df = LECTURE[name]
    y, dy = _value_and_derivative(name, jnp.asarray(X)[None])
    np.testing.assert_allclose(y[0], f(X), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dy[0], df(X), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "name,expected", [("relu", 1.0), ("prelu", 1.0), ("elu", 1.0), ("leaky_relu", 1.0), ("binary_step", 0.0)]
)
def test_derivative_at_the_kink(name, expected):
    _, dy = _value_and_derivative(name, jnp.zeros((1, 1)))
    assert dy[0, 0] == expected


@pytest.mark.parametrize("name", sorted(nn.activations.NAMES))
def test_finite_at_large_inputs_in_float32(name):
    x = jnp.array([[-1e4, -100.0, -30.0, 0.0, 30.0, 100.0, 1e4]], jnp.float32)
    y, dy = _value_and_derivative(name, x)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dy)), (y, dy)
    layer = nn.activation(name)
    _, params = layer.init(jax.random.PRNGKey(0), (7,))
    auto = jax.grad(lambda v: jnp.sum(layer.apply(params, v)))(x)
    assert np.all(np.isfinite(auto)), auto


def test_softplus_does_not_overflow():
    y, dy = _value_and_derivative("softplus", jnp.array([[1e4, -1e4]], jnp.float32))
    np.testing.assert_allclose(y, [[1e4, 0.0]])
    np.testing.assert_allclose(dy, [[1.0, 0.0]])


def test_aliases_and_case():
    assert nn.activation("Sigmoid").name == "logistic"
    assert nn.activation("swish").name == "silu"


def test_softmax_layer_rows_sum_to_one():
    layer = nn.activation("softmax")
    y = layer.apply((), jnp.array([[1e4, 0.0, -1e4], [1.0, 2.0, 3.0]], jnp.float32))
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(np.sum(y, axis=1), 1.0, rtol=1e-6)


def test_the_modules_table_lists_every_row_of_the_activation_table():
    doc = nn.activations.__doc__ or ""
    rows = [line.split("|")[1].strip() for line in doc.splitlines() if line.startswith("| ")]
    assert rows[:2] == ["name", "---"] and set(rows[2:]) == set(nn.activations.TABLE) | {"prelu"}
