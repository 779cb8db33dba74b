"""One derivative convention at kinks and ties, on real data.

A CNN at initialisation (zero biases) on real MNIST images has exact zeros everywhere in the
background: ReLU sits at its kink and every max-pool window there ties. The hand rules and
jax.grad of the same forward must still agree to float64 rounding, leaf by leaf, and training
with either must follow the same path."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnn as nn
from jaxnn import data, gradcheck, train


def _mnist(data_root, n):
    ds = data.load("mnist", data_dir=os.path.join(data_root, "mnist"), dtype="uint8")
    return ds.x_train[:n], ds.y_train[:n]


def _cnn():
    """conv 3x3x32, ReLU, max pool, conv 3x3x64, ReLU, max pool, Dense 128, ReLU, Dense 10."""
    return nn.models.cnn(10, (28, 28, 1))


@pytest.mark.slow  # a long end-to-end run (or a wait for a timeout): the slow pass
def test_cnn_gradients_agree_at_init_on_real_mnist(data_root, x64):
    images, labels = _mnist(data_root, 32)
    x = jnp.asarray(images, jnp.float64).reshape(32, 28, 28, 1) / 255
    model = _cnn()
    _, params = model.init(jax.random.PRNGKey(0), dtype=jnp.float64)
    ties = jnp.mean(x == 0)
    assert ties > 0.5  # most pixels are background: the ties are the common case, not measure zero
    report = gradcheck.compare(
        lambda p: nn.losses.softmax_cross_entropy(model.apply(p, x), jnp.asarray(labels)),
        (params,),
        (
            jax.jit(nn.value_and_grad(model, nn.losses.softmax_cross_entropy))(
                params, x, jnp.asarray(labels)
            )[1],
        ),
        names=["params"],
        finite_diff=False,
    )
    assert len(report.vs_autodiff) == 8  # every leaf: four convolution leaves, four Dense leaves
    assert max(report.vs_autodiff.values()) <= 1e-9, report.vs_autodiff


@pytest.mark.slow
def test_manual_and_autodiff_training_follow_the_same_path_on_real_mnist(data_root, x64):
    """The first 20 Adam steps of the CNN at batch 32, hand rules vs jax.grad, in float64."""
    images, labels = _mnist(data_root, 20 * 32)
    runs = {}
    for mode in ("manual", "autodiff"):
        _, runs[mode] = train.fit(
            _cnn(),
            nn.losses.softmax_cross_entropy,
            (images, labels, images[:32], labels[:32]),
            epochs=1,
            batch_size=32,
            opt=train.optimizer("adam", 1e-3),
            key=jax.random.PRNGKey(0),
            options=train.TrainOptions(mode=mode, dtype=jnp.float64),
            reporting=train.Reporting(progress=False),
        )
    manual, auto = np.asarray(runs["manual"]["step_losses"]), np.asarray(runs["autodiff"]["step_losses"])
    assert len(manual) == 20
    np.testing.assert_allclose(manual, auto, rtol=1e-12)


def _max_pool_autodiff(x):
    return jax.grad(lambda x: jnp.sum(nn.MaxPool().apply((), x)))(x)


def test_a_tied_window_sends_its_gradient_to_its_first_maximum(x64):
    """Both paths, on windows tied in every way: all four equal, and two of four equal."""
    x = jnp.array([[[[0.0], [0.0]], [[0.0], [0.0]]], [[[1.0], [2.0]], [[2.0], [0.0]]]])  # (2, 2, 2, 1)
    expected = np.array([[[[1.0], [0.0]], [[0.0], [0.0]]], [[[0.0], [1.0]], [[0.0], [0.0]]]])
    layer = nn.MaxPool()
    _, residuals = layer.forward((), x)
    np.testing.assert_array_equal(layer.backward(residuals, jnp.ones((2, 1, 1, 1)))[1], expected)
    np.testing.assert_array_equal(_max_pool_autodiff(x), expected)


def test_a_nan_in_a_window_propagates():
    x = jnp.array([[[[1.0], [jnp.nan]], [[3.0], [2.0]]]])
    assert bool(jnp.isnan(nn.MaxPool().apply((), x)).all())


@pytest.mark.parametrize(
    "layer",
    [nn.AvgPool(), nn.GlobalAvgPool(), nn.MaxPool((3, 3), stride=2), nn.activation("relu"), nn.prelu()],
    ids=["AvgPool", "GlobalAvgPool", "MaxPool overlapping", "relu", "prelu"],
)
def test_pools_and_kinked_activations_on_constant_inputs(layer, x64):
    """Inputs where every window ties and every element sits at a kink (all zeros): both paths agree."""
    x = jnp.zeros((2, 7, 7, 2), jnp.float64)
    _, params = layer.init(jax.random.PRNGKey(0), (7, 7, 2), dtype=jnp.float64)
    gradcheck.check_layer(layer, params, x, finite_diff=False).assert_close()
