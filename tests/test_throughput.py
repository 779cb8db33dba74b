"""FLOPs and the matmul ceiling: XLA's counts, the ceiling kept once per machine, and what fit and
summary report with them."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnn as nn
from jaxnn import throughput, train
from jaxnn.summary import step_flops


def test_program_flops_counts_a_matmul_and_a_loop_body_once():
    a = jnp.ones((64, 32), jnp.float32)
    b = jnp.ones((32, 16), jnp.float32)
    matmul = jax.jit(lambda a, b: a @ b).lower(a, b).compile()
    assert throughput.program_flops(matmul) == 2 * 64 * 32 * 16
    assert throughput.program_bytes(matmul) >= 4 * (64 * 32 + 32 * 16 + 64 * 16)

    def scanned(c):  # ten products of (16, 16): XLA counts the body once
        return jax.lax.scan(lambda c, _: (c @ c, None), c, None, length=10)[0]

    square = jnp.ones((16, 16), jnp.float32)
    loop = throughput.program_flops(jax.jit(scanned).lower(square).compile())
    assert loop == pytest.approx(2 * 16**3, abs=8)  # and the loop counter's few


def test_matmul_ceiling_is_measured_once_then_read_from_its_file(tmp_path, monkeypatch):
    path = tmp_path / "cache" / "ceiling.json"
    monkeypatch.setenv("JAXNN_CEILING_FILE", str(path))
    calls = []
    monkeypatch.setattr(throughput, "measure_ceiling", lambda: calls.append(1) or 123.0)
    assert throughput.matmul_ceiling() == 123.0
    assert throughput.matmul_ceiling() == 123.0
    assert len(calls) == 1  # the second came from the file
    assert list(json.loads(path.read_text()).values()) == [123.0]
    assert throughput.matmul_ceiling(refresh=True) == 123.0 and len(calls) == 2
    path.write_text("{not json")  # a file that is not ours: measured, not an error, and kept as it was
    assert throughput.matmul_ceiling() == 123.0 and len(calls) == 3
    assert path.read_text() == "{not json"
    path.write_text("[1, 2]")  # JSON, but not the ceiling's object
    assert throughput.matmul_ceiling() == 123.0 and len(calls) == 4
    assert path.read_text() == "[1, 2]"


def test_an_unwritable_ceiling_file_costs_a_measurement_not_an_error(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("JAXNN_CEILING_FILE", str(blocker / "ceiling.json"))  # its folder is a file
    monkeypatch.setattr(throughput, "measure_ceiling", lambda: 50.0)
    assert throughput.matmul_ceiling() == 50.0


def test_the_real_ceiling_is_a_positive_rate_measured_in_about_a_second():
    rates = throughput.measure_rate(jax.jit(lambda a: a @ a), (jnp.ones((128, 128)),), 2.0 * 128**3, 0.1)
    assert len(rates) >= 5 and min(rates) > 0
    assert throughput.matmul_ceiling() > 0  # the session's own file (conftest)
    assert throughput.measure_ceiling() > 0  # measured now, whatever the file holds


def test_the_ceiling_is_kept_in_jaxnns_cache_folder_unless_a_file_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("JAXNN_CEILING_FILE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert throughput.ceiling_file() == str(tmp_path / "jaxnn" / "matmul_ceiling.json")
    monkeypatch.setenv("JAXNN_CEILING_FILE", str(tmp_path / "mine.json"))
    assert throughput.ceiling_file() == str(tmp_path / "mine.json")


def test_fit_reports_step_flops_gflops_and_the_fraction_of_the_ceiling():
    model = nn.models.cnn(10, (8, 8, 1), channels=(4,), dense=8)
    x = np.random.default_rng(0).uniform(size=(64, 8, 8, 1)).astype(np.float32)
    y = np.arange(64) % 10
    quiet = train.Reporting(progress=False, log=lambda _: None)

    loss, opt = nn.losses.softmax_cross_entropy, train.optimizer("adam", 1e-3)

    def run(reporting):
        data, key = (x, y, x, y), jax.random.PRNGKey(0)
        return train.fit(model, loss, data, opt=opt, key=key, epochs=1, batch_size=16, reporting=reporting)[1]

    history = run(quiet)
    gradient_only = step_flops(model, 16)  # fit's step adds Adam's update and the accuracy
    assert gradient_only <= history["step_flops"] <= 1.2 * gradient_only
    row = history["epochs"][0]
    assert row["gflops"] == pytest.approx(history["step_flops"] * 4 / row["seconds"] / 1e9)
    assert row["fraction_of_ceiling"] == pytest.approx(row["gflops"] / history["matmul_ceiling_gflops"])
    silent = run(quiet._replace(throughput=False))
    assert "step_flops" not in silent and "gflops" not in silent["epochs"][0]


def test_summary_ends_with_the_steps_flops_and_its_least_time_at_the_ceiling():
    model = nn.mlp([6, 5, 3])
    text = nn.summary(model, (6,), batch_size=4)
    flops = step_flops(model, 4, input_shape=(6,))
    assert flops > 2 * 4 * (6 * 5 + 5 * 3)  # at least the forward's products
    assert f"training step at batch 4 (loss and gradient): {flops / 1e9:.3g} GFLOP" in text
    assert "GFLOP/s) at least" in text
    assert "training step" not in nn.summary(model, (6,))
    with pytest.raises(nn.InputError, match="batch_size"):
        nn.summary(model, (6,), batch_size=0)
