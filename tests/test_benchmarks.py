"""The benchmark suite runs end to end (a tiny configuration) and writes its JSON and plot."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")


@pytest.mark.slow
def test_benchmark_suite_smoke(tmp_path):
    cmd = [
        sys.executable,
        os.path.join(ROOT, "benchmarks", "run.py"),
        "--out",
        str(tmp_path),
        "--models",
        "mlp",
        "--batch-sizes",
        "8",
        "--steps",
        "1",
        "--repeats",
        "1",
        "--impls",
        "jaxnn-manual",
        "jax-optax",
        "torch-eager",
        "no-such-impl",
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    result = json.loads((tmp_path / "bench.json").read_text())
    rows = {r["impl"]: r for r in result["rows"]}
    assert rows["jaxnn-manual"]["samples_per_s"] > 0 and rows["jax-optax"]["samples_per_s"] > 0
    assert rows["jaxnn-manual"]["temp_bytes"] is not None and "error" in rows["no-such-impl"]
    # PyTorch (timed in a process of its own) where installed, else an error row saying why
    assert rows["torch-eager"].get("samples_per_s", 0) > 0 or "error" in rows["torch-eager"]
    assert rows["jax-optax"]["ms_per_step_spread"]["min"] <= rows["jax-optax"]["ms_per_step"]
    assert result["machine"]["jax"] and result["matmul_gflops"]["float32"] > 0
    assert (tmp_path / "throughput.png").stat().st_size > 1000


def test_tables_are_printed_from_the_committed_results():
    """benchmarks/tables.py regenerates the benchmark pages' tables from the committed JSON."""
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "tables.py"), "--print"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    results = os.path.join(ROOT, "benchmarks", "results", "cpu")
    speed = json.load(open(os.path.join(results, "mnist_speed.json")))
    assert f"| {speed['speedup_over_reference']:.1f}x |" in out
    step = json.load(open(os.path.join(results, "cnn_step.json")))
    assert f"| {step['rows']['jaxnn']['samples_per_s']:,.0f} |" in out
    assert "## jaxnn, plain JAX and PyTorch" in out and "## Runs" in out
