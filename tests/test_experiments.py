"""The experiment scripts run end to end and write what they promise (small settings)."""

import json
import os
import subprocess
import sys

import pytest

from jaxnn_lab import recipes

HERE = os.path.join(os.path.dirname(__file__), "..", "experiments")


def _run(script, *args, timeout=300):
    return subprocess.run(
        [sys.executable, os.path.join(HERE, script), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow  # a long end-to-end run (or a wait for a timeout): the slow pass
def test_step_by_step_prints_every_number(tmp_path):
    out = _run("step_by_step.py", "--out", str(tmp_path))
    assert "dL/dW1 (hand)" in out.stdout and "dL/dW1 (jax.grad)" in out.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["loss_after"] < metrics["loss_before"]
    assert max(metrics["max_abs_difference_hand_vs_jax_grad"].values()) < 1e-12
    assert (tmp_path / "step_by_step.txt").exists()


def test_step_by_step_draws_the_worked_examples_network(tmp_path):
    _run("step_by_step.py", "--diagram", str(tmp_path / "net.png"))
    assert (tmp_path / "net.png").stat().st_size > 10_000


@pytest.mark.slow
def test_simple_vs_complex_draws_boundaries(tmp_path):
    _run("simple_vs_complex.py", "--epochs", "20", "--out", str(tmp_path))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    results = metrics["results"]
    assert results["blobs/linear"]["test_accuracy"] > 0.95  # the simple set: a line suffices
    assert results["spirals/linear"]["test_accuracy"] < 0.8  # the complex set: it does not
    for name in ("boundaries_linear.png", "boundaries_mlp.png"):
        assert (tmp_path / name).stat().st_size > 1000


@pytest.mark.slow
def test_batchnorm_experiment_compares_both_cnns(data_root, tmp_path):
    options = ["--datasets", "mnist", "--epochs", "1", "--train-size", "1024", "--out", str(tmp_path)]
    _run("batchnorm.py", "--data-dir", data_root, *options)
    results = json.loads((tmp_path / "metrics.json").read_text())["results"]
    assert set(results) == {"mnist/CNN", "mnist/CNN + BatchNorm"}
    assert all(0.5 < r["test_accuracy"] <= 1 for r in results.values())
    assert "BatchNorm" in results["mnist/CNN + BatchNorm"]["model"]
    assert (tmp_path / "curves.png").stat().st_size > 1000


@pytest.mark.slow
def test_char_lm_writes_metrics_samples_and_curve(data_root, tmp_path):
    options = ["--steps", "20", "--chunk", "10", "--sample-length", "40", "--out", str(tmp_path)]
    _run("char_lm.py", "--data-dir", f"{data_root}/tinyshakespeare", "--model", "transformer", *options)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["steps"] == 20 and 1.5 < metrics["val_loss"] < 4.5
    assert abs(metrics["bits_per_char"] - metrics["val_loss"] / 0.6931471805599453) < 1e-9
    assert metrics["train_seconds"] >= metrics["compile_seconds"] > 0
    assert len((tmp_path / "samples.txt").read_text().split("|||")[1].strip("\n")) >= 30
    assert (tmp_path / "loss_curve.png").stat().st_size > 1000


@pytest.mark.slow
def test_char_lm_long_context_options_and_a_time_budget(data_root, tmp_path):
    """--block-size and --remat build the blockwise, recomputed model; --seconds sets the step count
    from a measured chunk (whole chunks, at least one)."""
    options = ["--context", "128", "--batch-size", "2", "--block-size", "32", "--remat", "--seconds", "1"]
    options += ["--chunk", "10", "--sample-length", "20", "--out", str(tmp_path)]
    _run("char_lm.py", "--data-dir", f"{data_root}/tinyshakespeare", *options)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "remat(TransformerBlock" in metrics["model"] and metrics["config"]["block_size"] == 32
    assert metrics["steps"] >= 10 and metrics["steps"] % 10 == 0 and 1.5 < metrics["val_loss"] < 4.5
    with pytest.raises(subprocess.CalledProcessError) as refused:
        _run("char_lm.py", "--data-dir", f"{data_root}/tinyshakespeare", "--steps", "5", "--seconds", "1")
    assert "not both" in refused.value.stderr


@pytest.mark.slow
def test_autoencoder_reconstructs(data_root, tmp_path):
    # two epochs: after one, the error depends on the initial draw (0.010-0.033 per pixel over
    # init keys), after two it is 0.009-0.014 (seeds 0, 1, 2)
    _run("autoencoder.py", "--data-dir", f"{data_root}/mnist", "--epochs", "2", "--out", str(tmp_path))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test_mse_per_pixel"] < 0.03  # an image of its mean pixel alone scores about 0.09
    assert (tmp_path / "reconstructions.png").stat().st_size > 1000


@pytest.mark.slow
def test_resnet_trains_with_augmentation(data_root, tmp_path):
    """--model resnet (BatchNorm, projection shortcuts, global average pooling) with its recipe's
    on-device augmentation (and random erasing), two short epochs on a slice of Fashion-MNIST: the
    loss falls."""
    options = ["--dataset", "fashion_mnist", "--data-dir", f"{data_root}/fashion_mnist", "--model", "resnet"]
    options += [
        "--epochs",
        "2",
        "--train-size",
        "2048",
        "--erase",
        "0.5",
        "--label-smoothing",
        "0.1",
        "--no-progress",
        "--out",
        str(tmp_path),
    ]
    result = _run("train.py", *options)
    assert "augmentation: shift 2, flip, erase 0.5" in result.stdout and "GlobalAvgPool" in result.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    fashion = recipes.RECIPES["resnet", "fashion_mnist"].settings  # Fashion-MNIST's own recipe row
    assert (
        metrics["config"]["augment"] is True and metrics["config"]["weight_decay"] == fashion["weight_decay"]
    )
    assert metrics["config"]["blocks"] == fashion["blocks"] == 2
    assert metrics["config"]["erase"] == 0.5 and "loss: smoothed_cross_entropy(0.1)" in result.stdout
    first, last = metrics["history"]
    assert last["train_loss"] < first["train_loss"] and last["train_accuracy"] > 0.4
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_loss"] == metrics["test_loss"]  # not NaN
    # evaluate.py restores the run from its folder: its one-view accuracy is train.py's (to one
    # image of 10,000: a near-tie may fall the other way outside the scan)
    out = _run("evaluate.py", str(tmp_path), "--flip").stdout
    evaluation = json.loads((tmp_path / "evaluation.json").read_text())
    assert abs(evaluation["test_accuracy"] - metrics["test_accuracy"]) <= 1e-4, (evaluation, metrics)
    # trained with label smoothing, both report the plain cross-entropy on the test set
    assert abs(evaluation["test_loss"] - metrics["test_loss"]) <= 1e-4 * metrics["test_loss"]
    assert 0.0 <= evaluation["test_accuracy_flip_averaged"] <= 1.0 and "flip_averaged" in out


@pytest.mark.slow
def test_compile_cache_is_written_unless_switched_off(data_root, tmp_path):
    """The experiment scripts keep their compiled programs in $JAXNN_COMPILE_CACHE (loaded by the
    next identical run); --no-compile-cache writes nothing there."""
    options = ["--data-dir", f"{data_root}/mnist", "--model", "linear", "--epochs", "1"]
    options += ["--train-size", "1024", "--no-progress", "--overwrite"]
    env = dict(os.environ, JAXNN_COMPILE_CACHE=str(tmp_path / "cache"))
    script = os.path.join(HERE, "train.py")
    off = [sys.executable, script, *options, "--out", str(tmp_path / "off"), "--no-compile-cache"]
    subprocess.run(off, check=True, capture_output=True, env=env, timeout=300)
    assert not (tmp_path / "cache").exists()
    on = [sys.executable, script, *options, "--out", str(tmp_path / "on")]
    subprocess.run(on, check=True, capture_output=True, env=env, timeout=300)
    assert len(list((tmp_path / "cache").iterdir())) >= 3  # the training chunk, evaluation, permutation, ...


@pytest.mark.slow
def test_train_in_bfloat16_from_the_command_line(data_root, tmp_path):
    options = [
        "--data-dir",
        f"{data_root}/mnist",
        "--epochs",
        "1",
        "--train-size",
        "2048",
        "--precision",
        "bf16",
    ]
    _run("train.py", *options, "--no-progress", "--out", str(tmp_path))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["model"].startswith("mixed_precision(") and metrics["model"].endswith("bfloat16)")
    assert 0.8 < metrics["test_accuracy"] <= 1.0  # 16 steps of the MLP


@pytest.mark.slow
def test_train_py_writes_weights_an_artifact_tensorboard_logs_and_a_profile(data_root, tmp_path):
    """--save-weights, --export, --tensorboard and --profile on a short run; each file reads back."""
    import safetensors.numpy

    out = tmp_path / "run"
    options = ["--data-dir", f"{data_root}/mnist", "--epochs", "1", "--train-size", "2048", "--width", "32"]
    options += ["--out", str(out), "--no-progress", "--tensorboard", str(tmp_path / "tb")]
    options += ["--profile", str(tmp_path / "profile"), "--save-weights", str(tmp_path / "w.safetensors")]
    options += ["--export", str(tmp_path / "model.jaxexport")]
    result = _run("train.py", *options)
    assert "ui.perfetto.dev" in result.stdout
    weights = safetensors.numpy.load_file(tmp_path / "w.safetensors")
    assert sorted(weights) == ["0.b", "0.w", "2.b", "2.w", "4.b", "4.w"] and weights["0.w"].shape == (784, 32)
    assert (tmp_path / "model.jaxexport").stat().st_size > 1000
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert list((tmp_path / "profile").glob("plugins/profile/*/*.xplane.pb"))
    assert list((tmp_path / "profile").glob("plugins/profile/*/perfetto_trace.json.gz"))


def test_every_script_imports():
    """Each script of experiments/ and benchmarks/ loads (its imports resolve, nothing runs): a
    module that moved is caught here, not by the next person who runs the script."""
    scripts = sorted(
        os.path.join(folder, name)
        for folder in (HERE, os.path.join(HERE, "..", "benchmarks"))
        for name in os.listdir(folder)
        if name.endswith(".py")
    )
    code = "import runpy, sys\nfor path in sys.argv[1:]:\n    runpy.run_path(path, run_name='loaded')\n"
    subprocess.run(
        [sys.executable, "-c", code, *scripts], check=True, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_edge_of_stability_tracks_the_sharpness(data_root, tmp_path):
    options = ["--examples", "200", "--etas", "0.005", "--steps", "40", "--every", "20", "--lanczos", "8"]
    _run(
        "edge_of_stability.py",
        "--data-dir",
        f"{data_root}/mnist",
        *options,
        "--no-progress",
        "--out",
        str(tmp_path),
    )
    run = json.loads((tmp_path / "metrics.json").read_text())["results"]["0.005"]
    assert len(run["losses"]) == 40 and [t for t, _ in run["sharpness"]] == [0, 20, 40]
    assert all(s > 0 for _, s in run["sharpness"]) and run["two_over_eta"] == 400
    assert (tmp_path / "sharpness.png").stat().st_size > 1000
