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


def _run_benchmark(script, *options):
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", script), *options]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_long_context_benchmarks_smoke(tmp_path):
    """long_attention.py and remat.py at a tiny length: every implementation measured, with ratios."""
    _run_benchmark(
        "long_attention.py",
        "--times",
        "128",
        "--block",
        "32",
        "--rounds",
        "1",
        "--fits-cap",
        "256",
        "--out",
        str(tmp_path / "attention.json"),
        "--figure",
        str(tmp_path / "attention.png"),
    )
    assert (tmp_path / "attention.png").stat().st_size > 10_000
    attention = json.loads((tmp_path / "attention.json").read_text())
    assert {r["impl"] for r in attention["rows"]} == set(attention["fits"]) and len(attention["rows"]) == 4
    assert all(r["temp_bytes"] > 0 and r["seconds"]["median"] > 0 for r in attention["rows"])
    _run_benchmark(
        "remat.py", "--times", "128", "--layers", "1", "--rounds", "1", "--out", str(tmp_path / "remat.json")
    )
    remat = json.loads((tmp_path / "remat.json").read_text())
    hand = [r for r in remat["rows"] if r["variant"] == "hand rules"]
    assert len(remat["rows"]) == 8 and all(r["temp_over_hand_rules"] == 1.0 for r in hand)


@pytest.mark.slow
def test_own_loop_benchmark_smoke(tmp_path):
    pytest.importorskip("torch")
    _run_benchmark(
        "own_loop.py",
        "--rounds",
        "1",
        "--steps",
        "2",
        "--repeats",
        "1",
        "--mlp-rounds",
        "1",
        "--out",
        str(tmp_path / "own_loop.json"),
    )
    result = json.loads((tmp_path / "own_loop.json").read_text())
    assert result["cnn_adam_step"]["torch eager"]["speed_over_torch_eager"] == 1.0
    assert all(r["seconds_per_step"]["median"] > 0 for r in result["cnn_adam_step"].values())
    assert result["mlp_value_and_grad"]["jaxnn_speed_over_plain_jax"] > 0
