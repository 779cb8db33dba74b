"""Training: the step, determinism, checkpoints and resume, divergence detection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnn as nn
from jaxnn import data, train

LOSS = nn.losses.softmax_cross_entropy


def _blobs():
    ds = data.load("blobs", key=jax.random.PRNGKey(0), n=600, classes=3)
    return ds, (ds.x_train, ds.y_train, ds.x_test, ds.y_test)


def _fit(tmp_path=None, epochs=3, seed=0, grad="manual", lr=0.05, resume=False, name="ckpt.npz"):
    ds, arrays = _blobs()
    model = nn.mlp([2, 16, 3])
    opt = train.optimizer("momentum", lr)
    path = str(tmp_path / name) if tmp_path is not None else None
    return train.fit(
        model,
        LOSS,
        arrays,
        epochs=epochs,
        batch_size=32,
        opt=opt,
        key=jax.random.PRNGKey(seed),
        input_shape=(2,),
        options=train.TrainOptions(mode=grad),
        checkpointing=train.Checkpointing(path, resume=resume),
        reporting=train.Reporting(progress=False),
    )


def test_training_learns_separable_blobs():
    state, history = _fit(epochs=5)
    assert history["epochs"][-1]["test_accuracy"] > 0.95
    assert history["epochs"][-1]["train_loss"] < history["epochs"][0]["train_loss"]
    assert int(state.step) == 5 * (480 // 32)


def test_same_seed_gives_bitwise_identical_params():
    a, _ = _fit(seed=7)
    b, _ = _fit(seed=7)
    c, _ = _fit(seed=8)
    for u, v in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a.params[0]["w"], c.params[0]["w"])


def test_manual_and_autodiff_training_agree():
    a, ha = _fit(grad="manual")
    b, hb = _fit(grad="autodiff")
    np.testing.assert_allclose(ha["step_losses"], hb["step_losses"], rtol=1e-4, atol=1e-6)
    for u, v in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5)


def test_resume_continues_to_the_same_result(tmp_path):
    full, _ = _fit(tmp_path, epochs=4, name="full.npz")
    _fit(tmp_path, epochs=2, name="part.npz")
    resumed, history = _fit(tmp_path, epochs=4, resume=True, name="part.npz")
    assert [e["epoch"] for e in history["epochs"]] == [1, 2, 3, 4]
    for u, v in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(resumed)):
        np.testing.assert_array_equal(u, v)


def test_divergence_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    good, _ = _fit(tmp_path, epochs=1, name="run.npz")
    with pytest.raises(nn.TrainingDiverged, match="loss became"):
        _fit(tmp_path, epochs=3, lr=1e35, resume=True, name="run.npz")
    kept, meta = train.load_checkpoint(str(tmp_path / "run.npz"), like=good)
    assert meta["epoch"] == 1
    for u, v in zip(jax.tree_util.tree_leaves(good), jax.tree_util.tree_leaves(kept)):
        np.testing.assert_array_equal(u, v)


def test_checkpoint_refuses_another_model(tmp_path):
    state, _ = _fit(tmp_path, epochs=1, name="a.npz")
    other = train.init_state(nn.mlp([2, 8, 3]), train.optimizer("momentum", 0.1), jax.random.PRNGKey(0), (2,))
    with pytest.raises(ValueError, match="expected"):
        train.load_checkpoint(str(tmp_path / "a.npz"), like=other)


def test_uint8_images_are_scaled_inside_the_step():
    images = jnp.array([[0, 255], [51, 102]], jnp.uint8)
    np.testing.assert_allclose(train.to_inputs(images, (2,)), [[0, 1], [0.2, 0.4]], rtol=1e-6)


def test_evaluate_counts_a_partial_last_batch():
    model = nn.Dense(2)
    _, params = model.init(jax.random.PRNGKey(0), (2,))
    x = np.random.default_rng(0).normal(size=(7, 2)).astype(np.float32)
    y = np.array([0, 1, 1, 0, 1, 0, 0], np.int32)
    loss, acc = train.make_evaluate(model, LOSS, (2,), batch_size=3)(params, x, y)
    logits = model.apply(params, x)
    np.testing.assert_allclose(loss, LOSS(logits, y), rtol=1e-5)
    np.testing.assert_allclose(acc, np.mean(np.argmax(logits, 1) == y))


def test_evaluate_with_flip_averages_the_softmax_of_each_image_and_its_mirror():
    model = nn.serial(nn.Conv2D(2, (2, 2)), nn.Flatten(), nn.Dense(3))
    _, params = model.init(jax.random.PRNGKey(0), (4, 4, 1))
    x = np.random.default_rng(0).normal(size=(5, 4, 4, 1)).astype(np.float32)
    y = np.array([0, 1, 2, 1, 0], np.int32)
    loss, acc = train.make_evaluate(model, LOSS, (4, 4, 1), batch_size=2, flip=True)(params, x, y)
    p = (jax.nn.softmax(model.apply(params, x)) + jax.nn.softmax(model.apply(params, x[:, :, ::-1]))) / 2
    np.testing.assert_allclose(loss, -np.mean(np.log(p[np.arange(5), y])), rtol=1e-5)
    np.testing.assert_allclose(acc, np.mean(np.argmax(p, 1) == y))
    with pytest.raises(nn.InputError, match="flip=True needs images"):
        train.make_evaluate(nn.Dense(3), LOSS, (2,), flip=True)


@pytest.mark.parametrize("name", train.OPTIMIZERS)
def test_every_optimizer_trains(name):
    ds, arrays = _blobs()
    lr = {"sgd": 0.3, "momentum": 0.05, "nesterov": 0.05}.get(name, 0.01)
    if name == "kfac":  # a constant rate, or (here) the one its quadratic model chooses
        opt = train.optimizer(name, None)
    else:
        opt = train.optimizer(name, lr, "cosine", total_steps=45)
    _, history = train.fit(
        nn.mlp([2, 16, 3]),
        LOSS,
        arrays,
        epochs=3,
        batch_size=32,
        opt=opt,
        key=jax.random.PRNGKey(0),
        input_shape=(2,),
        reporting=train.Reporting(progress=False),
    )
    assert history["epochs"][-1]["test_accuracy"] > 0.9


@pytest.mark.slow  # a long end-to-end run (or a wait for a timeout): the slow pass
def test_main_job_writes_metrics(request, tmp_path):
    """experiments/train.py on a slice of real MNIST if --data-dir is given, else skipped."""
    import json
    import os
    import subprocess
    import sys

    root = request.config.getoption("--data-dir")
    if not root or not os.path.isdir(os.path.join(root, "mnist")):
        pytest.skip("pass --data-dir ../shared/data")
    script = os.path.join(os.path.dirname(__file__), "..", "experiments", "train.py")
    out = tmp_path / "run"
    subprocess.run(
        [
            sys.executable,
            script,
            "--data-dir",
            os.path.join(root, "mnist"),
            "--epochs",
            "1",
            "--model",
            "linear",
            "--out",
            str(out),
            "--no-progress",
        ],
        check=True,
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and 0.85 < metrics["test_accuracy"] <= 1.0
    assert metrics["train_seconds"] > 0 and metrics["config"]["model"] == "linear"
    assert (out / "curves.png").stat().st_size > 1000 and (out / "checkpoint.npz").exists()


def test_ensemble_epoch_trains_each_member_like_a_single_run():
    ds, _ = _blobs()
    model, opt = nn.mlp([2, 16, 3]), train.optimizer("momentum", 0.05)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    states = train.init_ensemble(model, opt, keys, (2,))
    states, metrics = train.make_ensemble_epoch(model, LOSS, opt, 32, (2,))(states, ds.x_train, ds.y_train)
    losses = metrics.loss
    assert losses.shape == (3, 480 // 32)
    single = train.make_epoch(model, LOSS, opt, 32, (2,))
    for i in range(3):
        alone, alone_metrics = single(train.init_state(model, opt, keys[i], (2,)), ds.x_train, ds.y_train)
        alone_losses = alone_metrics.loss
        np.testing.assert_allclose(losses[i], alone_losses, rtol=1e-5, atol=1e-6)
        for u, v in zip(jax.tree_util.tree_leaves(alone.params), jax.tree_util.tree_leaves(states.params)):
            np.testing.assert_allclose(v[i], u, rtol=1e-5, atol=1e-6)


def test_weight_decay_adds_an_l2_term_to_the_sgd_gradient():
    """One SGD step with weight decay wd moves W by -lr (g + wd W); Adam refuses it (use AdamW)."""
    params = {"w": jnp.array([1.0, -2.0])}
    grads = {"w": jnp.array([0.5, 0.5])}
    opt = train.optimizer("sgd", 0.1, weight_decay=0.01)
    updates, _ = opt.update(grads, opt.init(params), params)
    assert jnp.allclose(updates["w"], -0.1 * (grads["w"] + 0.01 * params["w"]))
    with pytest.raises(nn.InputError, match="adamw"):
        train.optimizer("adam", 1e-3, weight_decay=1e-4)


def _lowered_step(model, input_shape):
    opt = train.optimizer("adam", 1e-3)
    step = train.make_step(model, LOSS, opt)
    state = train.init_state(model, opt, jax.random.PRNGKey(0), input_shape)
    x, y = jnp.zeros((4,) + input_shape), jnp.zeros((4,), jnp.int32)
    return jax.jit(step).lower(state, x, y), step, state, x, y


def test_fit_compiles_convolutions_with_ynn_elementwise_fusion_on_the_cpu_only():
    conv = nn.serial(nn.Conv2D(4), nn.activation("relu"), nn.Flatten(), nn.Dense(3))
    lowered_conv = _lowered_step(conv, (6, 6, 1))[0]
    lowered_mlp = _lowered_step(nn.mlp([5, 8, 3]), (5,))[0]
    assert train.compiler_options(lowered_mlp) is None  # no convolution: XLA's defaults
    if jax.default_backend() == "cpu":
        options = train.compiler_options(lowered_conv)
        assert "LIBRARY_FUSION_TYPE_ELTWISE" in options["xla_cpu_experimental_ynn_fusion_type"]
    else:
        assert train.compiler_options(lowered_conv) is None


def test_compile_lowered_falls_back_to_defaults_when_xla_lacks_the_option(monkeypatch):
    if jax.default_backend() != "cpu":
        pytest.skip("the option is CPU-only")
    conv = nn.serial(nn.Conv2D(4), nn.Flatten(), nn.Dense(3))
    lowered, step, state, x, y = _lowered_step(conv, (6, 6, 1))
    monkeypatch.setattr(train.compile, "_CPU_CONV_OPTIONS", {"xla_cpu_no_such_option_for_the_test": "1"})
    compiled, options = train.compile_lowered(lowered)
    assert options is None  # fell back
    expected = jax.jit(step)(state, x, y)
    np.testing.assert_allclose(compiled(state, x, y)[0].params[2]["w"], expected[0].params[2]["w"], rtol=1e-6)


def test_make_epoch_and_make_evaluate_compile_with_the_options_fit_uses():
    """model_compiler_options decides from the model (before any data) what compiler_options decides
    from fit's lowered program; make_epoch and make_evaluate pass it to XLA (an option XLA does not
    know then fails their compile), and it falls back to XLA's defaults where XLA lacks the option."""
    conv = nn.serial(nn.Conv2D(4), nn.activation("relu"), nn.Flatten(), nn.Dense(3))
    assert train.model_compiler_options(nn.mlp([5, 8, 3]), (5,)) is None
    options = train.model_compiler_options(conv, (6, 6, 1))
    assert options == train.known_options(train.compiler_options(_lowered_step(conv, (6, 6, 1))[0]))
    assert (options is not None) == (jax.default_backend() == "cpu")

    x, y = jnp.zeros((8, 6, 6, 1)), jnp.zeros((8,), jnp.int32)
    opt = train.optimizer("sgd", 0.1)
    state = train.init_state(conv, opt, jax.random.PRNGKey(0), (6, 6, 1))
    with pytest.MonkeyPatch.context() as patch:
        for module in (train.step, train.evaluate):  # where make_epoch and make_evaluate look it up
            patch.setattr(
                module, "model_compiler_options", lambda *_: {"xla_no_such_option_for_the_test": "1"}
            )
        for run in (
            lambda: train.make_evaluate(conv, LOSS, (6, 6, 1))(state.params, x, y),
            lambda: train.make_epoch(conv, LOSS, opt, 4, (6, 6, 1))(state, x, y),
        ):
            with pytest.raises(jax.errors.JaxRuntimeError, match="xla_no_such_option_for_the_test"):
                run()
    if jax.default_backend() == "cpu":
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(train.compile, "_CPU_CONV_OPTIONS", {"xla_cpu_no_such_option_for_the_test": "1"})
            assert train.model_compiler_options(conv, (6, 6, 1)) is None


def test_epoch_order_is_a_seeded_permutation_and_advances_the_key():
    """The one epoch order (NumPy, on the host): every kept index once, the same for the same key,
    another for the next epoch; the last n % batch_size examples of the permutation sit the epoch out."""
    model, opt = nn.mlp([2, 3]), train.optimizer("sgd", 0.1)
    state = train.init_state(model, opt, jax.random.PRNGKey(0), (2,))
    after, order = train.epoch_order(state, 100, 32)
    assert order.shape == (3, 32) and order.dtype == np.int32
    assert len(np.unique(order)) == 96 and order.min() >= 0 and order.max() < 100
    np.testing.assert_array_equal(train.epoch_order(state, 100, 32)[1], order)
    assert not np.array_equal(np.asarray(after.key), np.asarray(state.key))
    assert not np.array_equal(train.epoch_order(after, 100, 32)[1], order)


def test_fit_and_make_epoch_train_in_the_same_order():
    """One key, one order: an epoch of make_epoch and an epoch of fit give the same parameters."""
    ds, arrays = _blobs()
    model, opt = nn.mlp([2, 8, 3]), train.optimizer("sgd", 0.1)
    key = jax.random.PRNGKey(3)
    fitted, _ = train.fit(
        model,
        LOSS,
        arrays,
        epochs=1,
        batch_size=32,
        opt=opt,
        key=key,
        input_shape=(2,),
        reporting=train.Reporting(progress=False),
    )
    epoch = train.make_epoch(model, LOSS, opt, 32, (2,))
    stepped, _ = epoch(train.init_state(model, opt, key, (2,)), ds.x_train, ds.y_train)
    for a, b in zip(jax.tree_util.tree_leaves(fitted.params), jax.tree_util.tree_leaves(stepped.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_all_finite_finds_one_nan_among_the_parameters():
    params = {"a": jnp.ones((3, 2)), "b": [jnp.zeros(4), jnp.array([1.0, jnp.nan])]}
    assert train.all_finite({"a": params["a"], "b": [params["b"][0]]})
    assert not train.all_finite(params)
    assert not train.all_finite({"w": jnp.array([jnp.inf])})


def test_a_run_that_learned_nothing_ends_with_a_warning():
    """Inputs that carry no information: the net can only learn the majority class, and fit says so
    (no NaN, so no TrainingDiverged); a run that learns gets no warning."""
    ds, arrays = _blobs()
    blank = (np.zeros_like(arrays[0]), arrays[1], arrays[2], arrays[3])
    model, opt = nn.mlp([2, 8, 3]), train.optimizer("sgd", 0.1)
    said = []
    kwargs = dict(
        epochs=2,
        batch_size=32,
        opt=opt,
        key=jax.random.PRNGKey(0),
        input_shape=(2,),
        reporting=train.Reporting(progress=False, log=said.append),
    )
    _, history = train.fit(model, LOSS, blank, **kwargs)
    assert history["learned_nothing"] and "the model learned nothing" in said[-1]
    said.clear()
    _, history = train.fit(model, LOSS, arrays, **kwargs)
    assert "learned_nothing" not in history and not said


def test_fit_writes_tensorboard_scalars_that_tensorboard_reads(tmp_path):
    pytest.importorskip("tensorboardX")
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    ds, arrays = _blobs()
    schedule = train.schedule("cosine", 0.05, 3 * (480 // 32))
    train.fit(
        nn.mlp([2, 16, 3]),
        LOSS,
        arrays,
        opt=train.optimizer("momentum", 0.05, "cosine", 3 * (480 // 32)),
        key=jax.random.PRNGKey(0),
        epochs=3,
        batch_size=32,
        input_shape=(2,),
        reporting=train.Reporting(progress=False, tensorboard=str(tmp_path), learning_rate=schedule),
    )
    events = event_accumulator.EventAccumulator(str(tmp_path))
    events.Reload()
    assert set(events.Tags()["scalars"]) == set(train.tensorboard.TAGS)
    steps = 3 * (480 // 32)
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == list(range(steps)) and all(np.isfinite(e.value) for e in losses)
    assert all(e.value > 0 for e in events.Scalars("train/grad_norm"))
    rates = [e.value for e in events.Scalars("train/learning_rate")]
    np.testing.assert_allclose(rates, [float(schedule(s)) for s in range(steps)], rtol=1e-6)
    accuracies = events.Scalars("test/accuracy")
    assert [e.step for e in accuracies] == [15, 30, 45] and accuracies[-1].value > 0.9


def test_fit_trains_on_float_targets_of_the_outputs_shape():
    """An autoencoder's targets are its inputs: fit takes float targets of the output's shape,
    reports the loss (accuracy is NaN: no classes), and refuses targets of another shape."""
    rng = np.random.default_rng(0)
    x = rng.random((256, 16)).astype(np.float32)
    model = nn.models.for_inputs(nn.serial(nn.Dense(4), nn.activation("tanh"), nn.Dense(16)), (16,))
    fit = dict(opt=train.optimizer("adam", 1e-2), key=jax.random.PRNGKey(0), batch_size=32)
    _, history = train.fit(model, nn.losses.mean_squared_error, (x, x, x[:64], x[:64]), epochs=3, **fit)
    rows = history["epochs"]
    assert rows[-1]["train_loss"] < 0.5 * rows[0]["train_loss"]
    assert np.isnan(rows[-1]["train_accuracy"]) and np.isnan(rows[-1]["test_accuracy"])
    assert np.isfinite(rows[-1]["test_loss"]) and "learned_nothing" not in history
    with pytest.raises(
        nn.DataError, match=r"targets of shape \(8,\) per example do not match the model's output \(16,\)"
    ):
        train.fit(model, nn.losses.mean_squared_error, (x, x[:, :8], x, x), epochs=1, **fit)
    with pytest.raises(nn.DataError, match=r"labels must be integers of shape \(n,\), or float targets"):
        train.fit(
            model,
            nn.losses.mean_squared_error,
            (x, x.astype(np.float16).view(np.int16), x, x),
            epochs=1,
            **fit,
        )


def test_in_chunks_covers_the_span_in_whole_chunks_then_the_rest():
    spans = []

    def call(state, begin, end):
        spans.append((begin, end))
        return state + (end - begin), None

    ends = [(end, state) for end, state, _ in train.in_chunks(call, 0, 3, 13, 4)]
    assert spans == [(3, 7), (7, 11), (11, 13)] and ends == [(7, 4), (11, 8), (13, 10)]
    assert list(train.in_chunks(call, 0, 5, 5, 4)) == []
