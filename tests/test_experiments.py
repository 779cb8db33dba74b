"""The experiment scripts run end to end and write what they promise (small settings)."""

import json
import os
import subprocess
import sys

HERE = os.path.join(os.path.dirname(__file__), "..", "experiments")


def _run(script, *args, timeout=300):
    return subprocess.run(
        [sys.executable, os.path.join(HERE, script), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_step_by_step_prints_every_number(tmp_path):
    out = _run("step_by_step.py", "--out", str(tmp_path))
    assert "dL/dW1 (hand)" in out.stdout and "dL/dW1 (jax.grad)" in out.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["loss_after"] < metrics["loss_before"]
    assert max(metrics["max_abs_difference_hand_vs_jax_grad"].values()) < 1e-12
    assert (tmp_path / "step_by_step.txt").exists()


def test_simple_vs_complex_draws_boundaries(tmp_path):
    _run("simple_vs_complex.py", "--epochs", "20", "--out", str(tmp_path))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    results = metrics["results"]
    assert results["blobs/linear"]["test_accuracy"] > 0.95  # the simple set: a line suffices
    assert results["spirals/linear"]["test_accuracy"] < 0.8  # the complex set: it does not
    for name in ("boundaries_linear.png", "boundaries_mlp.png"):
        assert (tmp_path / name).stat().st_size > 1000
