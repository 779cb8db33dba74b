"""Where two parts meet, a difference is an error that names it, never a silently different result:
exports and state, files and templates, custom layers and the loop, language models and their text,
gradient checks and per-example gradients with state and keys, and the spellings earlier versions
accepted. (PyTorch's side is in test_interop.py; files, downloads and the CLI in test_reliability.py.)"""

import os
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnn as nn
from jaxnn import checkpoint, gradcheck, io, language, models, renamed, train
from jaxnn.io import artifact

KEY = jax.random.PRNGKey(0)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bn_model():
    model = nn.serial(nn.Dense(3), nn.BatchNorm(), nn.activation("relu"), nn.Dense(2))
    _, params = model.init(KEY, (4,))
    state = jax.tree_util.tree_map(lambda a: a + 2.0, model.init_state((4,)))  # "trained" statistics
    return model, params, state


# --- export and its state -------------------------------------------------------------------------


def test_export_refuses_a_stateful_model_without_its_state_and_embeds_the_state_given(tmp_path):
    pytest.importorskip("flatbuffers")
    model, params, state = _bn_model()
    path = str(tmp_path / "m.jaxexport")
    for missing in (None, ()):
        with pytest.raises(nn.InputError, match="has state .* none was given"):
            io.export(model, params, missing, (4,), path)
    with pytest.raises(nn.InputError, match="not .*'s"):
        io.export(model, params, nn.BatchNorm().init_state((3,)), (4,), path)
    assert not os.path.exists(path)
    io.export(model, params, state, (4,), path)
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    expected = model.apply(params, x, state=state, train=False)[0]
    np.testing.assert_allclose(io.load_exported(path).call(x), expected, rtol=1e-6)


def test_the_docs_name_what_an_artifact_needs_and_the_interop_extra_brings_it():
    """An exported artifact runs without jaxnn but needs flatbuffers besides jax (jax.export reads
    artifacts with it): the pages say so, and `pip install -e '.[interop]'` installs it."""
    pyproject = open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8").read()
    assert re.search(r'interop = \[[^]]*"flatbuffers', pyproject)
    page = open(os.path.join(ROOT, "docs", "interop.md"), encoding="utf-8").read()
    assert "pip install jax flatbuffers" in page
    assert "flatbuffers" in (artifact.__doc__ or "")


def test_every_interop_call_on_the_pages_passes_the_input_shape_a_serial_model_needs():
    page = open(os.path.join(ROOT, "docs", "interop.md"), encoding="utf-8").read()
    for call in re.findall(r"io\.(?:from_torch|to_torch)\([^)]*\)", page):
        assert "28, 28, 1" in call or "input_shape" in call, call


@pytest.mark.parametrize("content", [b"", b"\x00\x01\x02", b"jaxnn" * 50])
def test_load_exported_names_a_file_that_is_no_artifact(tmp_path, content):
    path = tmp_path / "bad.jaxexport"
    path.write_bytes(content)
    with pytest.raises(nn.CheckpointError, match=f"{re.escape(str(path))} is not a jax.export artifact"):
        io.load_exported(str(path))


def test_load_exported_names_a_cut_artifact(tmp_path):
    pytest.importorskip("flatbuffers")
    model = nn.mlp([4, 3, 2])
    _, params = model.init(KEY)
    path = tmp_path / "m.jaxexport"
    io.export(model, params, None, None, str(path))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(nn.CheckpointError, match="100 bytes"):
        io.load_exported(str(path))


# --- safetensors and checkpoints ------------------------------------------------------------------


def test_safetensors_refuses_tensors_the_template_lacks(tmp_path):
    pytest.importorskip("safetensors")
    path = str(tmp_path / "deep.safetensors")
    deep, shallow = nn.mlp([4, 3, 3]), nn.mlp([4, 3])  # the shallow model's tensors are the deep one's first
    io.save_safetensors(path, deep.init(KEY)[1])
    with pytest.raises(nn.CheckpointError, match=r"2 tensors the model does not have.*'2\.b', '2\.w'"):
        io.load_safetensors(path, shallow.init(KEY)[1])
    model, params, state = _bn_model()
    io.save_safetensors(path, params, state)
    with pytest.raises(nn.CheckpointError, match="pass state_like"):
        io.load_safetensors(path, params)
    got, got_state = io.load_safetensors(path, params, state)
    for a, b in zip(jax.tree_util.tree_leaves((params, state)), jax.tree_util.tree_leaves((got, got_state))):
        np.testing.assert_array_equal(a, b)


def _bfloat16(tree):
    return jax.tree_util.tree_map(lambda a: (a / 3).astype(jnp.bfloat16), tree)


def test_safetensors_round_trips_bfloat16_bitwise_as_bf16(tmp_path):
    pytest.importorskip("safetensors")
    model, params, state = _bn_model()
    params, state = _bfloat16(params), _bfloat16(state)
    path = str(tmp_path / "bf16.safetensors")
    io.save_safetensors(path, params, state)
    got, got_state = io.load_safetensors(path, params, state)
    for a, b in zip(jax.tree_util.tree_leaves((params, state)), jax.tree_util.tree_leaves((got, got_state))):
        assert b.dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(a).view(np.uint16), np.asarray(b).view(np.uint16))
    torch = pytest.importorskip("torch")
    import safetensors.torch  # noqa: PLC0415

    assert safetensors.torch.load_file(path)["0.w"].dtype == torch.bfloat16  # a real BF16 tensor
    with pytest.raises(nn.CheckpointError, match="bfloat16.*float32"):
        io.load_safetensors(path, model.init(KEY, (4,))[1], model.init_state((4,)))


def test_checkpoints_round_trip_typed_keys_and_bfloat16_bitwise(tmp_path):
    tree = {
        "key": jax.random.key(7),
        "keys": jax.random.split(jax.random.key(1), 3),
        "raw_key": jax.random.PRNGKey(3),
        "half": jnp.arange(6, dtype=jnp.bfloat16) / 7,
        "full": jnp.ones((2, 2)),
    }
    path = str(tmp_path / "c.npz")
    checkpoint.save(path, tree, {"step": 1})
    got, meta = checkpoint.restore(path, tree)
    assert meta == {"step": 1}
    for name in ("key", "keys"):
        assert got[name].dtype == tree[name].dtype
        np.testing.assert_array_equal(jax.random.key_data(got[name]), jax.random.key_data(tree[name]))
        draws = [jax.vmap(jax.random.bits)(jnp.reshape(t[name], (-1,))) for t in (got, tree)]
        np.testing.assert_array_equal(*draws)  # the same random numbers
    assert got["half"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(
        np.asarray(got["half"]).view(np.uint16), np.asarray(tree["half"]).view(np.uint16)
    )
    np.testing.assert_array_equal(got["raw_key"], tree["raw_key"])
    with pytest.raises(nn.CheckpointError, match=r"\['half'\] is bfloat16\(6,\), expected float32"):
        checkpoint.restore(path, {**tree, "half": jnp.zeros(6)})


# --- layers of one's own, and fit ------------------------------------------------------------------


def _wrong_width():
    """A layer whose init declares 3 outputs and whose apply gives 4."""
    return nn.make_layer(
        "wrong", lambda key, shape: ((3,), {"w": jnp.ones((shape[-1], 4))}), apply=lambda p, x: x @ p["w"]
    )


def _images():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32)


def _fit(model, input_shape=(4,)):
    """One epoch of fit on 64 random examples of 4 features."""
    x, y = _images()
    return train.fit(
        model,
        nn.losses.softmax_cross_entropy,
        (x, y, x, y),
        opt=train.optimizer("sgd", 0.1),
        key=KEY,
        epochs=1,
        batch_size=16,
        input_shape=input_shape,
        reporting=train.Reporting(progress=False),
    )


def test_a_custom_layer_whose_output_differs_from_its_init_is_refused_where_it_is():
    model = nn.serial(nn.Dense(5), _wrong_width())
    _, params = model.init(KEY, (2,))
    for run in (model.apply, jax.jit(model.apply)):
        with pytest.raises(nn.InputError, match=r"wrong: apply returned \(4, 4\).*declares .*\(batch, 3\)"):
            run(params, jnp.ones((4, 2)))
    with pytest.raises(nn.InputError, match="wrong: apply returned"):  # was "loss became nan" in fit
        _fit(nn.serial(nn.Dense(5), _wrong_width()))


def test_a_custom_apply_that_returns_no_array_is_refused():
    listed = nn.make_layer("listed", lambda key, shape: (shape, ()), apply=lambda p, x: [x])
    with pytest.raises(nn.InputTypeError, match="listed: apply must return an array .*got list"):
        listed.apply((), jnp.ones((2, 3)))


def test_fit_refuses_a_model_without_parameters():
    with pytest.raises(nn.InputError, match="has no parameters"):
        _fit(nn.serial(nn.activation("relu"), nn.Dropout(0.5)))


# --- shapes: serial models, bare ints ---------------------------------------------------------------


def test_nn_jit_compiles_a_serial_model_that_records_no_shape():
    model = nn.serial(nn.Conv2D(4, (3, 3)), nn.activation("relu"), nn.Flatten(), nn.Dense(3))
    assert model.input_shape is None
    _, params = model.init(KEY, (6, 6, 1))
    x, labels = jnp.ones((2, 6, 6, 1)), jnp.array([0, 2])
    grad = nn.value_and_grad(model, nn.losses.softmax_cross_entropy)
    step = nn.jit(grad, model)
    value, grads = step(params, x, labels)
    expected_value, expected = grad(params, x, labels)
    np.testing.assert_allclose(value, expected_value, rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert step(params, x, labels)[0] == value  # the second call reuses the first's program


@pytest.mark.parametrize("where", ["fit", "jit", "from_torch", "to_torch", "summary"])
def test_a_bare_int_as_a_shape_says_which_tuple_to_write(where):
    model = nn.Dense(3)
    _, params = model.init(KEY, (4,))
    calls = {
        "fit": lambda: _fit(model, input_shape=4),
        "jit": lambda: nn.jit(lambda p: p, model, 4),
        "from_torch": lambda: io.from_torch(model, object(), 4),
        "to_torch": lambda: io.to_torch(model, params, None, None, 4),
        "summary": lambda: nn.summary(model, 4),
    }  # fmt: skip
    with pytest.raises(nn.InputError, match=r"got 4; for one number write \(4,\)"):
        calls[where]()


def test_interop_on_a_serial_model_says_to_pass_the_input_shape():
    model = nn.serial(nn.Dense(3))
    _, params = model.init(KEY, (4,))
    with pytest.raises(nn.InputError, match="to_torch: pass input_shape .* records none"):
        io.to_torch(model, params)


# --- language models --------------------------------------------------------------------------------


def test_the_sampler_refuses_ids_outside_the_vocabulary():
    model = models.char_lstm(vocab=7, context=5, d=4, hidden=8)
    _, params = model.init(KEY)
    sample = language.make_sampler(model, 5, 3)
    assert sample(params, jnp.array([1, 2, 6]), KEY).shape == (3,)
    for bad, words in (([1, 7], r"\[0, 7\).*from 1 to 7"), ([-1, 2], "from -1 to 2"), ([1.5], "integer")):
        with pytest.raises(nn.InputError, match=words):
            sample(params, np.array(bad), KEY)


def test_language_training_and_evaluation_refuse_a_text_shorter_than_the_context():
    model = models.char_lstm(vocab=7, context=8, d=4, hidden=8)
    state = train.init_state(model, train.optimizer("adam", 1e-3), KEY)
    loss = nn.losses.sequence_cross_entropy
    short = jnp.arange(8) % 7  # 8 tokens: no window of 8 has a next token
    run = language.lm_steps_function(model, loss, train.optimizer("adam", 1e-3), context=8, batch_size=2)
    with pytest.raises(nn.InputError, match="training text has 8 tokens; a context of 8 needs at least 9"):
        jax.jit(run, static_argnums=2)(state, short, 2)
    evaluate = language.make_lm_evaluate(model, loss, context=8)
    with pytest.raises(nn.InputError, match="evaluation text has 8 tokens"):
        evaluate(state.params, short, state.model_state)
    assert np.isfinite(evaluate(state.params, jnp.arange(9) % 7, state.model_state))


# --- gradient checks and per-example gradients with state and keys ------------------------------------


def test_check_model_checks_batchnorm_in_training_mode_and_dropout_with_a_key(x64):
    model = nn.serial(nn.Dense(5), nn.BatchNorm(), nn.activation("tanh"), nn.Dropout(0.3), nn.Dense(3))
    _, params = model.init(KEY, (4,), dtype=jnp.float64)
    x = jax.random.normal(KEY, (6, 4), jnp.float64)
    labels = jnp.array([0, 1, 2, 0, 1, 2])
    state = model.init_state((4,), dtype=jnp.float64)
    report = gradcheck.check_model(
        model, nn.losses.softmax_cross_entropy, params, x, labels, key=KEY, state=state, train=True
    )
    report.assert_close()
    with pytest.raises(nn.InputError, match="pass state="):
        gradcheck.check_model(model, nn.losses.softmax_cross_entropy, params, x, labels, key=KEY)
    with pytest.raises(nn.InputError, match="needs key="):
        gradcheck.check_model(
            model, nn.losses.softmax_cross_entropy, params, x, labels, state=state, train=True
        )


@pytest.mark.slow  # 7 s: the slow run
def test_per_example_grads_take_a_key_per_example_and_state(x64):
    model = nn.serial(nn.Dense(5), nn.Dropout(0.5), nn.Dense(3))
    _, params = model.init(KEY, (4,), dtype=jnp.float64)
    x = jax.random.normal(KEY, (3, 4), jnp.float64)
    labels = jnp.array([0, 1, 2])
    key = jax.random.PRNGKey(5)
    values, grads = nn.per_example_grads(model, nn.losses.softmax_cross_entropy)(
        params, x, labels, key, train=True
    )
    one = nn.value_and_grad(model, nn.losses.softmax_cross_entropy)
    for n, k in enumerate(jax.random.split(key, 3)):  # example n's own mask, from its own key
        value, expected = one(params, x[n : n + 1], labels[n : n + 1], k, train=True)
        np.testing.assert_allclose(values[n], value, rtol=1e-12)
        for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(expected)):
            np.testing.assert_allclose(a[n], b, rtol=1e-12, atol=1e-15)

    bn, bn_params, bn_state = _bn_model()
    f = nn.per_example_grads(bn, nn.losses.softmax_cross_entropy)
    with pytest.raises(nn.InputError, match="mix the examples"):
        f(bn_params, x.astype(jnp.float32), labels % 2, state=bn_state, train=True)
    values, _ = f(bn_params, x.astype(jnp.float32), labels % 2, state=bn_state, train=False)
    assert values.shape == (3,)


def test_one_example_maps_a_model_over_single_examples():
    model, params, state = _bn_model()
    xs = jax.random.normal(KEY, (5, 4))
    one = nn.one_example(model.apply)
    mapped = jax.vmap(lambda x: one(params, x, state=state))(xs)  # vmap maps keyword arguments too
    np.testing.assert_allclose(mapped[0], model.apply(params, xs, state=state)[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(nn.InputError, match="without its batch axis.*one_example"):
        nn.Dense(3).apply(nn.Dense(3).init(KEY, (4,))[1], xs[0])


@pytest.mark.slow  # 20 s of compilation: the slow run
@pytest.mark.parametrize("causal", [True, False])
def test_reverse_over_reverse_through_blockwise_attention(causal, x64):
    """jax.jacrev of the hand gradient and a reverse-mode Hessian-vector product, through the
    blockwise layer's loops, equal forward-over-reverse through the dense layer."""
    attention = nn.MultiHeadAttention(2, causal=causal, block_size=2)
    blockwise = nn.serial(attention, nn.Flatten(), nn.Dense(3))
    dense = nn.serial(nn.MultiHeadAttention(2, causal=causal), nn.Flatten(), nn.Dense(3))
    _, params = blockwise.init(KEY, (5, 4), dtype=jnp.float64)
    x, labels = jax.random.normal(KEY, (2, 5, 4), jnp.float64), jnp.array([0, 2])

    def grad(p, model):
        return nn.value_and_grad(model, nn.losses.softmax_cross_entropy)(p, x, labels)[1]

    v = jax.tree_util.tree_map(jnp.ones_like, params)

    def along_v(p):
        pairs = zip(jax.tree_util.tree_leaves(grad(p, blockwise)), jax.tree_util.tree_leaves(v))
        return sum(jnp.vdot(a, b) for a, b in pairs)

    reverse = jax.grad(along_v)(params)
    forward = jax.jvp(lambda p: grad(p, dense), (params,), (v,))[1]
    for a, b in zip(jax.tree_util.tree_leaves(reverse), jax.tree_util.tree_leaves(forward)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    jacobian = jax.jacrev(lambda p: grad(p, blockwise)[2]["w"])(params)
    assert jacobian[2]["w"].shape == (20, 3, 20, 3)


# --- spellings of earlier versions -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(renamed.FIT))
def test_fit_names_where_each_removed_keyword_went(name):
    with pytest.raises(
        nn.InputTypeError, match=rf"fit\({name}=\.\.\.\) was removed.*{re.escape(renamed.FIT[name])}"
    ):
        train.fit(nn.mlp([2, 2]), nn.losses.softmax_cross_entropy, (), opt=None, key=KEY, epochs=1,
                  batch_size=1, **{name: None})  # fmt: skip


@pytest.mark.parametrize("builder", ["make_step", "steps_function", "make_epoch", "make_ensemble_epoch"])
def test_step_builders_name_where_grad_mesh_and_augment_went(builder):
    for name in renamed.STEPS:
        with pytest.raises(nn.InputTypeError, match=rf"{builder}\({name}=\.\.\.\) was removed"):
            getattr(train, builder)(nn.mlp([2, 2]), nn.losses.softmax_cross_entropy, None, **{name: None})


def test_moved_names_and_keywords_say_where_they_went():
    for name, place in (("TrainingDiverged", "jaxnn.TrainingDiverged"), ("host_epoch_order", "epoch_order")):
        with pytest.raises(AttributeError, match=rf"jaxnn.train.{name} was removed .*{place}"):
            getattr(train, name)
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        train.nothing  # noqa: B018
    for name in ("build", "BUILDERS"):
        with pytest.raises(AttributeError, match=rf"jaxnn.models.{name} was removed .*jaxnn_lab.zoo"):
            getattr(models, name)
    for module, name, place in (
        (nn.activations, "Row", "jaxnn.activations.ActivationRow"),
        (sys.modules["jaxnn.summary"], "Row", "jaxnn.summary.LayerRow"),
    ):
        with pytest.raises(AttributeError, match=rf"{module.__name__}.{name} was removed .*{place}"):
            getattr(module, name)
    with pytest.raises(nn.InputError, match="'identity'; 'linear' names the classifier"):
        nn.activation("linear")
    with pytest.raises(nn.InputTypeError, match="input_dtype="):
        nn.summary(nn.mlp([2, 2]), dtype=jnp.float32)
    with pytest.raises(nn.InputTypeError, match="mode="):
        language.lm_steps_function(nn.mlp([2, 2]), None, None, 4, 2, grad="manual")


def test_no_docstring_or_page_shows_a_removed_spelling():
    """jaxnn.parallel's docstring showed fit(..., mesh=mesh) long after it was removed."""
    pattern = re.compile(r"\bfit\([^)]*\b(" + "|".join(renamed.FIT) + r")=")
    found = []
    for folder in ("jaxnn", "docs", "experiments", "benchmarks"):
        for base, _, names in os.walk(os.path.join(ROOT, folder)):
            for name in names:
                if name.endswith((".py", ".md")) and name != "changelog.md":
                    path = os.path.join(base, name)
                    text = open(path, encoding="utf-8").read()
                    found += [f"{os.path.relpath(path, ROOT)}: {m.group(0)}" for m in pattern.finditer(text)]
    assert not found, found


def test_the_changelog_lists_every_removed_spelling():
    text = open(os.path.join(ROOT, "docs", "changelog.md"), encoding="utf-8").read()
    table = text[text.index("**Migration from 0.2**") :]
    moved = ["TrainingDiverged", "host_epoch_order", "epoch_function", "dtype=", "layers=", "activations.Row"]
    for name in list(renamed.FIT) + moved + ['activation("linear")', "summary.Row"]:
        assert name in table, name


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
