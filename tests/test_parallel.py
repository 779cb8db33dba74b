"""Data parallelism over 8 host devices (XLA_FLAGS=--xla_force_host_platform_device_count=8).
JAX reads the flag at start-up, so the checks run in a fresh Python process."""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    import jaxnn as nn
    from jaxnn import data, parallel, train
    assert jax.device_count() == 8, jax.devices()
    model = nn.mlp([2, 32, 3])
    loss = nn.losses.softmax_cross_entropy
    opt = train.optimizer("adam", 1e-2)
    mesh = parallel.data_mesh(8)
    state = train.init_state(model, opt, jax.random.PRNGKey(0), (2,))
    x = jax.random.normal(jax.random.PRNGKey(1), (64, 2))
    y = jax.random.randint(jax.random.PRNGKey(2), (64,), 0, 3)

    # 1. the sharded step equals the single-device step to float32 rounding, and really is sharded
    single = jax.jit(train.make_step(model, loss, opt))(state, x, y)
    sharded_fn = jax.jit(train.make_step(model, loss, opt, options=train.TrainOptions(mesh=mesh)))
    sharded = sharded_fn(*(parallel.replicate(a, mesh) for a in (state, x, y)))
    for a, b in zip(jax.tree_util.tree_leaves(single), jax.tree_util.tree_leaves(sharded)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=1e-6)
    hlo = sharded_fn.lower(parallel.replicate(state, mesh), x, y).compile().as_text()
    assert "all-reduce" in hlo, "no all-reduce: the batch was not split"
    assert len(sharded[0].params[0]["w"].sharding.device_set) == 8

    # 2. a run over 8 devices reaches the accuracy of the single-device run
    ds = data.load("spirals", key=jax.random.PRNGKey(0), n=1200)
    arrays = (ds.x_train, ds.y_train, ds.x_test, ds.y_test)
    accs = []
    for m in (None, mesh):
        opt = train.optimizer("adam", 1e-2, "cosine", 60 * (960 // 64))
        _, h = train.fit(nn.mlp([2, 64, 64, 3], activation="tanh"), loss, arrays, epochs=60, batch_size=64,
                         opt=opt, key=jax.random.PRNGKey(0), input_shape=(2,),
                         options=train.TrainOptions(mesh=m),
                         reporting=train.Reporting(progress=False, eval_every_epoch=False))
        accs.append(h["epochs"][-1]["test_accuracy"])
    print("accuracies", accs)
    assert accs[1] >= 0.99 and abs(accs[0] - accs[1]) <= 0.01, accs
    print("OK")
""")


@pytest.mark.slow
def test_data_parallel_over_8_host_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "OK" in out.stdout, out.stdout + out.stderr


def test_too_many_devices_is_a_clear_error():
    import pytest

    from jaxnn import parallel

    with pytest.raises(ValueError, match="xla_force_host_platform_device_count"):
        parallel.data_mesh(10_000)


@pytest.mark.slow
def test_two_processes_of_four_devices_equal_one_process_of_eight(tmp_path):
    """experiments/train.py --local-processes 2 (jax.distributed, gloo collectives) ends with the
    parameters of the one-process run over 8 host devices, to float32 rounding; process 0 alone
    reports and writes."""
    import numpy as np

    script = os.path.join(os.path.dirname(__file__), "..", "experiments", "train.py")
    common = ["--dataset", "spirals", "--epochs", "3", "--batch-size", "64", "--optimizer", "momentum"]
    common += ["--lr", "0.05", "--schedule", "constant", "--devices", "8", "--no-progress"]
    runs = {
        "one": ([], dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")),
        "two": (["--local-processes", "2"], dict(os.environ)),
    }
    for name, (extra, env) in runs.items():
        out = subprocess.run(
            [sys.executable, script, *common, *extra, "--out", str(tmp_path / name)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        assert out.stdout.count("test accuracy") == 1, out.stdout
    one, two = (np.load(tmp_path / name / "checkpoint.npz") for name in runs)
    arrays = [k for k in one.files if k != "__meta__"]
    assert sorted(arrays) == sorted(k for k in two.files if k != "__meta__") and len(arrays) > 5
    for k in arrays:
        if one[k].dtype.kind == "f":
            np.testing.assert_allclose(two[k], one[k], rtol=1e-5, atol=1e-6, err_msg=k)
        else:  # step counter, keys, the epoch's batch order
            np.testing.assert_array_equal(two[k], one[k], err_msg=k)
