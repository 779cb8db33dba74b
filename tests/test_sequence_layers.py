"""Embedding, attention, Conv1D, ConvTranspose2D, GlobalAvgPool: contracts and properties; and the
FLOP counts of nn.summary, checked by hand on Dense and Conv2D."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnn as nn
from jaxnn.summary import rows

KEY = jax.random.PRNGKey(0)


def test_embedding_looks_up_rows_and_adds_repeated_gradients():
    layer = nn.Embedding(5, 3)
    out_shape, params = layer.init(KEY, (4,))
    assert out_shape == (4, 3) and params["table"].shape == (5, 3)
    x = jnp.array([[0, 2, 2, 4]])
    y, residuals = layer.forward(params, x)
    np.testing.assert_array_equal(y[0], params["table"][jnp.array([0, 2, 2, 4])])
    grads, dx = layer.backward(residuals, jnp.ones_like(y))
    np.testing.assert_array_equal(grads["table"][:, 0], [1, 0, 2, 0, 1])  # row 2 appears twice
    assert dx is None
    with pytest.raises(nn.InputError, match=r"\[0, 5\)"):
        layer.apply(params, jnp.array([[5]]))
    with pytest.raises(nn.InputError, match="integer"):
        layer.apply(params, jnp.ones((1, 4)))


@pytest.mark.parametrize("block_size", [None, 4])
def test_causal_attention_never_looks_ahead(block_size):
    layer = nn.MultiHeadAttention(2, causal=True, block_size=block_size)
    _, params = layer.init(KEY, (6, 4))
    x = jax.random.normal(KEY, (2, 6, 4))
    changed = x.at[:, 4:].set(7.0)  # change the last two positions only
    np.testing.assert_allclose(layer.apply(params, x)[:, :4], layer.apply(params, changed)[:, :4], rtol=1e-5)
    assert not np.allclose(layer.apply(params, x)[:, 4:], layer.apply(params, changed)[:, 4:])
    full = nn.MultiHeadAttention(2, block_size=block_size)
    assert not np.allclose(full.apply(params, x)[:, :4], full.apply(params, changed)[:, :4])


@pytest.mark.parametrize("causal", [False, True])
def test_blockwise_attention_is_the_dense_function_for_every_block_size(causal, x64):
    """Blocks that divide the time, blocks that leave a padded last block, one block longer than the
    sequence: the output and the hand gradients equal the dense layer's to rounding, in float64."""
    dense = nn.MultiHeadAttention(2, causal=causal)
    _, params = dense.init(KEY, (7, 4), dtype=jnp.float64)
    x = jax.random.normal(KEY, (2, 7, 4), jnp.float64)
    dy = jax.random.normal(jax.random.PRNGKey(1), (2, 7, 4), jnp.float64)

    @jax.jit
    def outputs_and_grads(x):
        results = []
        for layer in [dense] + [nn.MultiHeadAttention(2, causal, block) for block in (1, 3, 7, 16)]:
            y, residuals = layer.forward(params, x)
            results.append((y, layer.backward(residuals, dy)))
        return results

    (y, grads), *blockwise = outputs_and_grads(x)
    for y_b, grads_b in blockwise:
        np.testing.assert_allclose(y_b, y, rtol=1e-12, atol=1e-13)
        jax.tree_util.tree_map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13), grads_b, grads
        )


def test_blockwise_attention_refuses_a_bad_block_size():
    with pytest.raises(nn.InputError, match="block_size"):
        nn.MultiHeadAttention(2, block_size=0)


def test_attention_matches_its_formula_head_by_head():
    layer = nn.MultiHeadAttention(2)
    _, params = layer.init(KEY, (3, 4))
    x = jax.random.normal(KEY, (1, 3, 4))
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    q, k, v = (np.asarray(x[0], np.float64) @ p[f"w{n}"] + p[f"b{n}"] for n in "qkv")
    heads = []
    for h in range(2):
        cols = slice(2 * h, 2 * h + 2)
        s = q[:, cols] @ k[:, cols].T / np.sqrt(2)
        a = np.exp(s - s.max(1, keepdims=True))
        heads.append(a / a.sum(1, keepdims=True) @ v[:, cols])
    expected = np.concatenate(heads, 1) @ p["wo"] + p["bo"]
    np.testing.assert_allclose(layer.apply(params, x)[0], expected, rtol=1e-4, atol=1e-5)


def test_conv1d_and_transposed_conv_shapes_and_adjointness():
    conv1d = nn.Conv1D(5, 3, stride=2, padding="VALID")
    out_shape, params = conv1d.init(KEY, (9, 2))
    assert out_shape == (4, 5) and params["w"].shape == (3, 2, 5)
    assert conv1d.apply(params, jnp.ones((2, 9, 2))).shape == (2, 4, 5)
    up = nn.ConvTranspose2D(3, (2, 2), (2, 2))
    out_shape, params = up.init(KEY, (7, 7, 4))
    assert out_shape == (14, 14, 3) and params["w"].shape == (2, 2, 4, 3)
    # the transposed convolution is the adjoint of the strided convolution with the same kernel:
    # <T x, z> = <x, C z> for C = Conv2D(4, (2, 2), stride 2, VALID) with w's in/out channels swapped
    x = jax.random.normal(KEY, (1, 7, 7, 4))
    z = jax.random.normal(jax.random.PRNGKey(1), (1, 14, 14, 3))
    zero_bias = {"w": params["w"], "b": jnp.zeros(3)}
    conv = nn.Conv2D(4, (2, 2), stride=2, padding="VALID")
    cz = conv.apply({"w": jnp.swapaxes(params["w"], 2, 3), "b": jnp.zeros(4)}, z)
    np.testing.assert_allclose(jnp.vdot(up.apply(zero_bias, x), z), jnp.vdot(x, cz), rtol=1e-4)


def test_global_average_pool():
    layer = nn.GlobalAvgPool()
    x = jax.random.normal(KEY, (2, 3, 5, 4))
    np.testing.assert_allclose(layer.apply((), x), x.mean(axis=(1, 2)), rtol=1e-6)


def test_summary_flops_by_hand():
    (row,) = rows(nn.Dense(256), (784,))
    assert row.params == 784 * 256 + 256
    assert row.flops == 2 * 784 * 256 + 256  # a multiply-add per weight, an add per bias
    (row,) = rows(nn.Conv2D(32, (3, 3), padding="VALID"), (28, 28, 1))
    assert row.output_shape == (26, 26, 32) and row.params == 9 * 32 + 32
    assert row.flops == 2 * 9 * 1 * 32 * 26 * 26 + 32 * 26 * 26
    (row,) = rows(nn.Conv2D(32, (3, 3)), (28, 28, 1))  # SAME: only taps inside the image count
    inside = (3 * 28 - 2) ** 2  # sum over output pixels of the taps that fall inside
    assert row.flops == 2 * inside * 32 + 32 * 28 * 28
    model = nn.models.cnn(10, (28, 28, 1))
    table = rows(model)  # the model's own input_shape
    assert [r.output_shape for r in table][-1] == (10,) and sum(r.params for r in table) == 421_642
    assert "total" in nn.summary(model) and all(r.rule == "hand" for r in table)


def test_positional_embedding_adds_one_row_per_position():
    layer = nn.PositionalEmbedding(10)
    _, params = layer.init(KEY, (4, 3))
    x = jnp.zeros((2, 4, 3))
    np.testing.assert_array_equal(layer.apply(params, x)[1], params["table"][:4])
    with pytest.raises(nn.InputError, match="time <= 10"):
        layer.apply(params, jnp.zeros((1, 11, 3)))


def test_text_loader_split_and_vocabulary(data_root):
    from jaxnn import data

    text = data.load_text(f"{data_root}/tinyshakespeare")
    assert len(text.train) + len(text.val) == 1_115_394 and len(text.train) == 1_003_854
    assert len(text.vocab) == 65 and text.decode(text.train[:14]) == "First Citizen:"
    np.testing.assert_array_equal(text.encode("First"), text.train[:5])


def test_text_loader_refuses_a_damaged_file(tmp_path):
    from jaxnn import data

    (tmp_path / "input.txt").write_text("not shakespeare")
    with pytest.raises(nn.DataError, match="md5"):
        data.load_text(str(tmp_path))


@pytest.mark.slow  # a long end-to-end run (or a wait for a timeout): the slow pass
def test_language_model_windows_evaluation_and_sampling():
    from jaxnn import language, train

    tokens = jnp.arange(50, dtype=jnp.int32) % 7
    x, y = language.random_windows(KEY, tokens, 5, 3)
    assert x.shape == y.shape == (3, 5)
    np.testing.assert_array_equal((x + 1) % 7, y)  # y is x shifted by one position
    model = nn.models.char_transformer(7, 5, d=8, heads=2, layers=1)
    opt = train.optimizer("adam", 1e-2)
    state = train.init_state(model, opt, KEY)
    loss = nn.losses.sequence_cross_entropy
    run = jax.jit(language.lm_steps_function(model, loss, opt, 5, 8), static_argnums=2)
    evaluate = language.make_lm_evaluate(model, loss, 5, batch_size=4)
    before = evaluate(state.params, tokens, state.model_state)
    state, losses = run(state, tokens, 60)
    assert losses.shape == (60,) and evaluate(state.params, tokens, state.model_state) < 0.5 * before
    blocks = jnp.stack([tokens[i * 5 : i * 5 + 5] for i in range(9)])  # the 9 whole blocks of 49 + 1 tokens
    targets = jnp.stack([tokens[i * 5 + 1 : i * 5 + 6] for i in range(9)])
    by_hand = jax.jit(lambda p, s: loss(model.apply(p, blocks, state=s, train=False)[0], targets))
    np.testing.assert_allclose(
        evaluate(state.params, tokens, state.model_state), by_hand(state.params, state.model_state), rtol=1e-5
    )
    ids = language.make_sampler(model, 5, 20)(state.params, tokens[:5], KEY, 0.5, state.model_state)
    assert ids.shape == (20,) and int(ids.min()) >= 0 and int(ids.max()) < 7


@pytest.mark.parametrize(
    "build",
    [
        lambda: nn.models.char_transformer(7, 4, d=8, heads=2, layers=1),
        lambda: nn.models.char_lstm(7, 4, 4, 8),
    ],
)
def test_sampler_defaults_work_and_a_short_prompt_grows_its_window(build, x64):
    """make_sampler's default state serves every language model of the zoo; a prompt shorter than
    the context grows its window token by token up to the context, then slides: the same tokens as a
    step-by-step reference that feeds the model exactly that window."""
    from jaxnn import language

    model, context, length, temperature = build(), 4, 5, 0.7
    _, params = model.init(KEY, dtype=jnp.float64)
    prompt = jnp.array([3, 1], jnp.int32)
    tokens = language.make_sampler(model, context, length)(params, prompt, KEY, temperature)
    apply = jax.jit(
        lambda params, window: model.apply(params, window, state=model.init_state(window.shape[1:]))[0]
    )
    window, expected = [int(t) for t in prompt], []
    for key in jax.random.split(KEY, length):  # windows of 2, 3, 4, then 4 tokens sliding
        token = int(jax.random.categorical(key, apply(params, jnp.array([window]))[0, -1] / temperature))
        expected.append(token)
        window = (window + [token])[-context:]
    assert [int(t) for t in tokens] == expected


def test_embedding_under_jit_closing_over_concrete_tokens():
    """The host-side range check of concrete ids must not run jnp inside a trace (it raised a
    ConcretizationTypeError when a jitted function closed over a token array)."""
    layer = nn.Embedding(7, 3)
    _, params = layer.init(KEY, (4,))
    tokens = jnp.array([[1, 2, 3, 4]])
    np.testing.assert_array_equal(
        jax.jit(lambda p: layer.apply(p, tokens))(params), layer.apply(params, tokens)
    )
    bad = jnp.array([[1, 9, 3, 4]])  # concrete, so checked even when the trace closes over it
    with pytest.raises(nn.InputError, match=r"\[0, 7\)"):
        jax.jit(lambda p: layer.apply(p, bad))(params)
