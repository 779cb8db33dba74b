"""Mixed precision: bfloat16 compute around float32 parameters, with the hand backward."""

import functools

import jax
import jax.numpy as jnp
import pytest

import jaxnn as nn
from jaxnn import train


def _cnn():
    # BatchNorm after Flatten, not right after the convolution: a bias just before a BatchNorm has
    # gradient 0 in exact arithmetic, so in any precision its computed gradient is pure rounding
    return nn.serial(
        nn.Conv2D(4, (3, 3)), nn.activation("relu"), nn.MaxPool(), nn.Flatten(), nn.BatchNorm(), nn.Dense(3)
    )


def _problem():
    key1, key2, key3 = jax.random.split(jax.random.PRNGKey(0), 3)
    model = _cnn()
    _, params = model.init(key1, (6, 6, 2))
    x = jax.random.normal(key2, (8, 6, 6, 2))
    labels = jax.random.randint(key3, (8,), 0, 3)
    return model, params, model.init_state((6, 6, 2)), x, labels


@pytest.mark.slow
@pytest.mark.parametrize("compute", ["bfloat16", "float16"])
def test_hand_backward_in_low_precision_matches_float32_gradients(compute):
    """The gradients agree with float32's to the compute type's rounding (8 bits of mantissa for
    bfloat16: a few parts in 100 after the sums), and keep the parameters' float32 dtype; the
    output and the updated state stay float32."""
    model, params, state, x, labels = _problem()
    loss = nn.losses.softmax_cross_entropy
    (value, new_state), grads = nn.value_and_grad(model, loss)(params, x, labels, state=state, train=True)
    fast = nn.mixed_precision(model, compute)
    (low_value, low_state), low_grads = nn.value_and_grad(fast, loss)(
        params, x, labels, state=state, train=True
    )
    y, _ = fast.apply(params, x, state=state, train=True)
    assert y.dtype == jnp.float32 and low_value.dtype == jnp.float32
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves((low_grads, low_state)))
    assert jnp.allclose(low_value, value, rtol=2e-2)
    for g, low in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(low_grads)):
        assert jnp.linalg.norm(low - g) <= 5e-2 * jnp.linalg.norm(g) + 1e-6


def test_the_low_precision_hand_backward_is_jax_grad_of_the_low_precision_forward():
    """Against jax.grad of the same bfloat16 forward. Both round in bfloat16 but in different orders
    of operations, so they agree to its rounding (the bound of the float32 comparison), not better."""
    model, params, state, x, labels = _problem()
    fast = nn.mixed_precision(model, "bf16")
    loss = nn.losses.softmax_cross_entropy
    hand, auto = (
        jax.jit(functools.partial(nn.value_and_grad(fast, loss, mode), train=True))(
            params, x, labels, state=state
        )[1]
        for mode in ("manual", "autodiff")
    )
    for h, a in zip(jax.tree_util.tree_leaves(hand), jax.tree_util.tree_leaves(auto)):
        assert jnp.linalg.norm(h - a) <= 5e-2 * jnp.linalg.norm(a) + 1e-6


def test_the_matmuls_run_in_bfloat16():
    """The compiled forward holds bfloat16 dot and convolution operations."""
    model, params, state, x, _ = _problem()
    fast = nn.mixed_precision(model, "bfloat16")
    text = jax.jit(lambda p, s, x: fast.apply(p, x, state=s, train=False)).lower(params, state, x).as_text()
    assert "bf16" in text and ("convolution" in text or "conv" in text)


def test_low_precision_matmuls_accumulate_in_float32_and_keep_their_dtype():
    """core.matmul: bfloat16 inputs give a bfloat16 product computed with float32 accumulation (the
    compiled dot outputs f32), closer to the exact product than a bfloat16-accumulated one would be
    allowed to be; float32 and float64 are plain a @ b."""
    a = jax.random.normal(jax.random.PRNGKey(0), (64, 512))
    b = jax.random.normal(jax.random.PRNGKey(1), (512, 32))
    low = nn.core.matmul(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16))
    assert low.dtype == jnp.bfloat16
    exact = a.astype(jnp.bfloat16).astype(jnp.float32) @ b.astype(jnp.bfloat16).astype(jnp.float32)
    # one bfloat16 rounding of the float32-accumulated result: relative error <= 2^-8 per entry
    assert jnp.all(jnp.abs(low.astype(jnp.float32) - exact) <= 2**-8 * jnp.abs(exact) + 1e-6)
    text = jax.jit(nn.core.matmul).lower(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)).as_text()
    assert "-> tensor<64x32xf32>" in text  # the dot itself outputs float32 (a plain one: bf16)
    assert jnp.array_equal(nn.core.matmul(a, b), a @ b) and nn.core.matmul(a, b).dtype == jnp.float32


def test_float32_is_the_model_itself_and_bad_names_are_refused():
    model = _cnn()
    assert nn.mixed_precision(model, "float32") is model
    with pytest.raises(nn.InputError, match="compute must be one of"):
        nn.mixed_precision(model, "int8")
    with pytest.raises(nn.InputTypeError):
        nn.mixed_precision(lambda x: x)


def test_training_in_bfloat16_learns():
    rng = jax.random.PRNGKey(1)
    x = jax.random.normal(rng, (256, 2))
    y = (x[:, 0] * x[:, 1] > 0).astype(jnp.int32)
    model = nn.mixed_precision(nn.mlp([2, 32, 32, 2]), "bfloat16")
    state, history = train.fit(
        model,
        nn.losses.softmax_cross_entropy,
        (x, y, x, y),
        epochs=30,
        batch_size=32,
        opt=train.optimizer("adam", 1e-2),
        key=rng,
        input_shape=(2,),
        reporting=train.Reporting(progress=False),
    )
    assert jax.tree_util.tree_leaves(state.params)[0].dtype == jnp.float32
    assert history["epochs"][-1]["test_accuracy"] > 0.9


def test_mixed_precision_keeps_a_built_models_input_shape():
    """The wrapped model's init is the model's own: a built model's default input shape survives."""
    fast = nn.mixed_precision(nn.mlp([4, 3]), "bf16")
    assert fast.input_shape == (4,) and fast.init(jax.random.PRNGKey(0))[0] == (3,)
