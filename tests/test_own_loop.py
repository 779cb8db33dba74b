"""A user's own jitted loop: nn.jit compiles with the model's options and computes the same step;
`import jaxnn` changes nothing in the process, and a script that opts in to reuse_host_memory() first
thing has each call of a compiled program reuse the memory the previous call freed."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxnn as nn
from jaxnn import hostmem, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the MNIST CNN's value_and_grad at batch 128 (about 70 MiB of temporaries per call); prints the
# median of the minor page faults of its calls after two warm-up calls
FAULTS_PER_CALL = textwrap.dedent(
    """
    import os, resource, statistics
    import jaxnn as nn
    if os.environ.get("OPT_IN"):
        assert nn.reuse_host_memory()  # first thing, before JAX's first array
    import jax, jax.numpy as jnp
    model = nn.models.cnn(10, (28, 28, 1))
    _, params = model.init(jax.random.PRNGKey(0))
    f = nn.jit(nn.value_and_grad(model, nn.losses.softmax_cross_entropy), model)
    x, y = jnp.ones((128, 28, 28, 1)), jnp.arange(128) % 10
    faults = []
    for _ in range(12):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        jax.block_until_ready(f(params, x, y))
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(statistics.median(faults[2:]))
    """
)


def _faults_per_call(**env):
    out = subprocess.run(
        [sys.executable, "-c", FAULTS_PER_CALL],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=dict(os.environ, JAX_PLATFORMS="cpu", **env),
        timeout=300,
    )
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # two fresh processes compiling the CNN (10 s)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_a_script_that_opts_in_lets_each_call_reuse_the_memory_the_last_one_freed():
    """Without the setting each call maps its ~70 MiB of temporaries afresh (one page fault per
    4 KiB page); with reuse_host_memory() first thing, a typical call finds its pages already there
    (now and then one still faults them in again, hence the median)."""
    released = _faults_per_call()
    kept = _faults_per_call(OPT_IN="1")
    assert released > 10_000, released
    assert kept < released / 20, (kept, released)


def test_reuse_host_memory_declines_once_jax_runs_or_when_asked(monkeypatch):
    jax.block_until_ready(jnp.ones(2))  # JAX's backend (and its threads) started
    assert hostmem.reuse_host_memory() is False
    monkeypatch.setenv("JAXNN_HOST_MEMORY", "release")
    assert hostmem.reuse_host_memory() is False


IMPORT_PROBE = """
import ctypes
calls = []
class Recording(ctypes.CDLL):
    def __getattr__(self, name):
        if name == "mallopt":
            calls.append(name)
        return super().__getattr__(name)
ctypes.CDLL = Recording
import jaxnn, jaxnn.train, jaxnn.io
import jax, jax.numpy as jnp
model = jaxnn.Dense(2)
params = model.init(jax.random.PRNGKey(0), (3,))[1]
jaxnn.jit(lambda p, x: model.apply(p, x), model, (3,))(params, jnp.ones((1, 3)))
print("mallopt calls:", len(calls))
"""


def test_importing_jaxnn_or_compiling_a_step_changes_nothing_in_the_process():
    """No allocator setting on import or in nn.jit (a user's PyTorch in the same process keeps
    glibc's defaults): reuse_host_memory() is the script's own choice."""
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("mallopt calls: 0"), out.stdout + out.stderr


def test_nn_jit_is_the_same_step_compiled_with_the_models_options():
    model = nn.models.cnn(10, (8, 8, 1), channels=(4,), dense=8)
    opt = optax.adam(1e-3)
    loss_and_grads = nn.value_and_grad(model, nn.losses.softmax_cross_entropy)

    def step(params, opt_state, x, y):
        loss, grads = loss_and_grads(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    _, params = model.init(jax.random.PRNGKey(0))
    x = jax.random.uniform(jax.random.PRNGKey(1), (16, 8, 8, 1))
    y = jnp.arange(16) % 10
    ours = nn.jit(step, model)(params, opt.init(params), x, y)
    plain = jax.jit(step)(params, opt.init(params), x, y)
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(plain)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert train.model_compiler_options(nn.mlp([4, 3]), (4,)) is None  # no convolution
    with pytest.raises(nn.InputTypeError, match="per_call"):
        train.model_compiler_options(model, (8, 8, 1), per_call=True)
