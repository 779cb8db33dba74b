"""Long contexts: nn.remat (a layer recomputed in its backward) and the language model's
LongContext options; blockwise attention itself is checked in test_sequence_layers and the
gradient table."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnn as nn

KEY = jax.random.PRNGKey(0)


def _close(a, b, rtol=1e-12, atol=1e-14):
    jax.tree_util.tree_map(lambda u, v: np.testing.assert_allclose(u, v, rtol=rtol, atol=atol), a, b)


def test_remat_keeps_only_its_inputs_and_gives_the_same_gradients(x64):
    block = nn.models.transformer_block(8, 2)
    again = nn.remat(block)
    _, params = again.init(KEY, (5, 8), dtype=jnp.float64)
    x = jax.random.normal(KEY, (2, 5, 8), jnp.float64)
    dy = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 8), jnp.float64)

    @jax.jit
    def both(params, x):
        y, residuals = block.forward(params, x)
        y_r, residuals_r = again.forward(params, x)
        return (y, block.backward(residuals, dy)), (y_r, again.backward(residuals_r, dy)), residuals_r

    plain, recomputed, residuals = both(params, x)
    _close(recomputed, plain)
    kept = jax.tree_util.tree_leaves(residuals)
    inputs = jax.tree_util.tree_leaves((params, x))
    assert sum(leaf.size for leaf in kept) == sum(leaf.size for leaf in inputs)
    assert again.rule == block.rule and again.input_shape == block.input_shape


def test_remat_under_jax_grad_and_with_state(x64):
    """with_hand_rules(remat(...)) differentiates through the recomputation; a stateful layer's
    state threads through as before (BatchNorm's running statistics in training)."""
    model = nn.serial(nn.Dense(6), nn.BatchNorm(), nn.activation("tanh"), nn.Dense(3))
    again = nn.remat(model)
    _, params = model.init(KEY, (4,), dtype=jnp.float64)
    state = model.init_state((4,), dtype=jnp.float64)
    x = jax.random.normal(KEY, (5, 4), jnp.float64)
    labels = jnp.array([0, 1, 2, 1, 0])

    def loss(layer):
        def f(params):
            out, new_state = nn.with_hand_rules(layer).apply(params, x, state=state, train=True)
            return nn.losses.softmax_cross_entropy(out, labels), new_state

        return jax.jit(jax.value_and_grad(f, has_aux=True))

    _close(loss(again)(params), loss(model)(params))


def test_remat_refuses_what_is_not_a_layer():
    with pytest.raises(nn.InputTypeError, match="remat"):
        nn.remat(lambda x: x)


def test_remat_stack_needs_less_compiled_memory():
    """A stack of blocks: the compiled program of the hand rules with remat keeps the blocks'
    inputs, not their insides (XLA's memory analysis; nothing is run)."""
    blocks = [nn.models.transformer_block(32, 2) for _ in range(3)]
    x = jax.ShapeDtypeStruct((1, 256, 32), jnp.float32)

    def temp_bytes(model):
        params = jax.eval_shape(lambda: model.init(KEY, (256, 32))[1])

        def grads(params, x):
            y, residuals = model.forward(params, x)
            return model.backward(residuals, y)

        return jax.jit(grads).lower(params, x).compile().memory_analysis().temp_size_in_bytes

    assert temp_bytes(nn.serial(*map(nn.remat, blocks))) < 0.7 * temp_bytes(nn.serial(*blocks))


@pytest.mark.slow  # a whole language model in float64, three ways (6 s)
def test_long_context_options_leave_the_language_model_unchanged(x64):
    """Blockwise attention and remat are the same function: the same logits and hand gradients."""
    dense = nn.models.char_transformer(7, 6, d=8, heads=2, layers=2)
    long = nn.models.char_transformer(7, 6, d=8, heads=2, layers=2, long=nn.models.LongContext(4, remat=True))
    _, params = dense.init(KEY, dtype=jnp.float64)
    tokens = jax.random.randint(KEY, (3, 6), 0, 7)
    loss = nn.losses.sequence_cross_entropy
    targets = jnp.roll(tokens, -1, axis=1)

    @jax.jit
    def both(params):
        return [nn.value_and_grad(m, loss)(params, tokens, targets) for m in (dense, long)]

    plain, options = both(params)
    _close(options, plain, rtol=1e-11, atol=1e-13)
    with pytest.raises(nn.InputError, match="LongContext"):
        nn.models.char_transformer(7, 6, long=512)
