"""Training-step throughput, side by side: jaxnn manual, jaxnn autodiff, plain JAX + optax, Flax,
PyTorch eager and torch.compile (the peers only where installed: pip install -e '.[bench]').

    python benchmarks/run.py --out DIR [--models mlp cnn] [--batch-sizes 32 128 1024 8192] [--steps 20]

Same model, optimizer (Adam 1e-3) and random data for every implementation. Per (model, batch,
implementation): samples/s (median of --repeats timings of --steps steps, with their min and
max; the JAX implementations timed alternately in this process so that machine noise hits all
alike, each PyTorch one in a fresh process of its own, since PyTorch's and XLA's thread pools
slow each other down in one process), compile time, peak
temporary memory (JAX: compiled.memory_analysis()), and the step's GFLOP/s as a fraction of a large
matmul measured in the same run. Writes DIR/bench.json and DIR/throughput.png.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxnn as nn
from jaxnn import train
from jaxnn_lab.bench import machine, spread, step_runner, write_json

MLP_SIZES = [784, 512, 512, 10]


def jaxnn_model(name):
    if name == "mlp":
        return nn.mlp(MLP_SIZES)
    return nn.models.cnn(10, (28, 28, 1))


def step_flops(name, batch):
    """Multiply-adds x 2 x 3 (forward, and backward's two products) per example."""
    if name == "mlp":
        macs = sum(a * b for a, b in zip(MLP_SIZES[:-1], MLP_SIZES[1:]))
    else:
        macs = 28 * 28 * 9 * 1 * 32 + 14 * 14 * 9 * 32 * 64 + 7 * 7 * 64 * 128 + 128 * 10
    return 6.0 * macs * batch


def timeit(run, steps, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(steps)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) / steps


def compile_step(lowered, as_fit):
    """as_fit: with the XLA options jaxnn's fit compiles with (train.compiler_options); else plain."""
    return train.compile_lowered(lowered)[0] if as_fit else lowered.compile()


def prepare_jax_step(step, state, x, y, as_fit=False):
    """step(state, x, y) -> (state, aux), jitted here; returns (run(n), compile s, temp bytes).
    as_fit: compiled as jaxnn's fit compiles (see compile_step)."""
    jitted = jax.jit(step, donate_argnums=0)
    t0 = time.perf_counter()
    compiled = compile_step(jitted.lower(state, x, y), as_fit)
    compile_s = time.perf_counter() - t0
    memory = compiled.memory_analysis()
    temp = int(memory.temp_size_in_bytes) if memory is not None else None
    run = step_runner(compiled, state, x, y)
    run(2)
    return run, compile_s, temp


def jaxnn_impl(name, grad):
    def make(batch, key, dtype):
        model = jaxnn_model(name)
        shape, opt = model.input_shape, optax.adam(1e-3)
        state = train.init_state(model, opt, key, dtype=dtype)
        step = train.make_step(
            model, nn.losses.softmax_cross_entropy, opt, options=train.TrainOptions(mode=grad)
        )
        return step, state, shape

    return make


def plain_jax_impl(name):
    """The reference: plain JAX + optax, jax.value_and_grad of a hand-written forward."""

    def make(batch, key, dtype):
        model = jaxnn_model(name)
        shape = model.input_shape
        _, params = model.init(key, shape, dtype=dtype)
        opt = optax.adam(1e-3)

        def predict(params, x):
            if name == "mlp":
                for layer in params[:-1:2]:
                    x = jax.nn.relu(x @ layer["w"] + layer["b"])
                return x @ params[-1]["w"] + params[-1]["b"]
            for conv in (params[0], params[3]):
                x = (
                    jax.lax.conv_general_dilated(
                        x, conv["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
                    )
                    + conv["b"]
                )
                x = jax.lax.reduce_window(
                    jax.nn.relu(x), -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"
                )
            x = jax.nn.relu(x.reshape(x.shape[0], -1) @ params[7]["w"] + params[7]["b"])
            return x @ params[9]["w"] + params[9]["b"]

        def step(state, x, y):
            params, opt_state = state
            loss, grads = jax.value_and_grad(
                lambda p: optax.softmax_cross_entropy_with_integer_labels(predict(p, x), y).mean()
            )(params)
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        return step, (params, opt.init(params)), shape

    return make


def flax_impl(name):
    import flax.linen as fnn

    class MLP(fnn.Module):
        dtype: object = jnp.float32

        @fnn.compact
        def __call__(self, x):
            kw = {"dtype": self.dtype, "param_dtype": self.dtype}
            for width in MLP_SIZES[1:-1]:
                x = fnn.relu(fnn.Dense(width, **kw)(x))
            return fnn.Dense(10, **kw)(x)

    class CNN(fnn.Module):
        dtype: object = jnp.float32

        @fnn.compact
        def __call__(self, x):
            kw = {"dtype": self.dtype, "param_dtype": self.dtype}
            for features in (32, 64):
                x = fnn.max_pool(fnn.relu(fnn.Conv(features, (3, 3), **kw)(x)), (2, 2), (2, 2))
            x = fnn.relu(fnn.Dense(128, **kw)(x.reshape(x.shape[0], -1)))
            return fnn.Dense(10, **kw)(x)

    def make(batch, key, dtype):
        module = MLP(dtype) if name == "mlp" else CNN(dtype)
        shape = (784,) if name == "mlp" else (28, 28, 1)
        params = module.init(key, jnp.zeros((1,) + shape, dtype))
        opt = optax.adam(1e-3)

        def step(state, x, y):
            params, opt_state = state
            loss, grads = jax.value_and_grad(
                lambda p: optax.softmax_cross_entropy_with_integer_labels(module.apply(p, x), y).mean()
            )(params)
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        return step, (params, opt.init(params)), shape

    return make


def prepare_torch(name, batch, compiled, dtype="float32"):
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "mlp":
        model = torch.nn.Sequential(
            torch.nn.Linear(784, 512),
            torch.nn.ReLU(),
            torch.nn.Linear(512, 512),
            torch.nn.ReLU(),
            torch.nn.Linear(512, 10),
        )
        x = torch.rand(batch, 784, device=device)
    else:
        model = torch.nn.Sequential(
            torch.nn.Conv2d(1, 32, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, 64, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Flatten(),
            torch.nn.Linear(64 * 7 * 7, 128),
            torch.nn.ReLU(),
            torch.nn.Linear(128, 10),
        )
        x = torch.rand(batch, 1, 28, 28, device=device)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    model = model.to(device=device, dtype=torch_dtype)
    x = x.to(torch_dtype)
    y = torch.randint(0, 10, (batch,), device=device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    if compiled:
        step = torch.compile(step)
    t0 = time.perf_counter()
    step()
    if device == "cuda":
        torch.cuda.synchronize()
    compile_s = time.perf_counter() - t0

    def run(n):
        for _ in range(n):
            step()
        if device == "cuda":
            torch.cuda.synchronize()

    run(2)
    return run, compile_s, None


def torch_in_own_process(model, batch, impl, dtype, steps, repeats):
    """Time PyTorch's step in a fresh process (this script with --torch-child); returns
    {"compile_s", "seconds_per_step": [one per repeat]}."""
    command = [sys.executable, os.path.abspath(__file__), "--torch-child", model, str(batch), impl, dtype]
    command += ["--steps", str(steps), "--repeats", str(repeats)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed")
    time.sleep(1.0)  # let the machine settle after PyTorch's threads
    return json.loads(done.stdout.strip().splitlines()[-1])


def torch_child(model, batch, impl, dtype, steps, repeats):
    run, compile_s, _ = prepare_torch(model, int(batch), impl == "torch-compile", dtype)
    seconds = [timeit(run, steps, 1) for _ in range(repeats)]
    print(json.dumps({"compile_s": compile_s, "seconds_per_step": seconds}))


def matmul_peak(dtype=jnp.float32):
    n = 4096 if jax.default_backend() != "cpu" else 2048
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
    f = jax.jit(lambda a: a @ a)
    jax.block_until_ready(f(a))
    reps = 20 if jax.default_backend() != "cpu" else 3
    t0 = time.perf_counter()
    for _ in range(reps):
        out = f(a)
    jax.block_until_ready(out)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/bench")
    p.add_argument("--models", nargs="+", default=["mlp", "cnn"])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 1024, 8192])
    p.add_argument(
        "--impls",
        nargs="+",
        default=["jaxnn-manual", "jaxnn-autodiff", "jax-optax", "flax", "torch-eager", "torch-compile"],
    )
    p.add_argument(
        "--dtypes",
        nargs="+",
        default=None,
        choices=["float32", "bfloat16"],
        help="default: float32, plus bfloat16 on an accelerator",
    )
    p.add_argument(
        "--compile-batches",
        type=int,
        nargs="*",
        default=None,
        help="batch sizes for torch-compile (default: all; its compilation is slow)",
    )
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--torch-child", nargs=4, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.torch_child:
        return torch_child(*args.torch_child, args.steps, args.repeats)
    os.makedirs(args.out, exist_ok=True)
    if args.dtypes is None:
        args.dtypes = ["float32"] + (["bfloat16"] if jax.default_backend() != "cpu" else [])
    peaks = {d: matmul_peak(jnp.dtype(d)) for d in args.dtypes}
    result = {"machine": machine(), "matmul_gflops": peaks, "rows": [], "config": vars(args)}
    print(json.dumps(result["machine"]), "matmul peak GFLOP/s", json.dumps(peaks), flush=True)
    for model in args.models:
        makers = {
            "jaxnn-manual": jaxnn_impl(model, "manual"),
            "jaxnn-autodiff": jaxnn_impl(model, "autodiff"),
            "jax-optax": plain_jax_impl(model),
        }
        for dtype, batch in [(d, b) for d in args.dtypes for b in args.batch_sizes]:
            key = jax.random.PRNGKey(0)
            rows, times, runners = [], {}, {}
            # The JAX implementations share this process and are timed alternately. PyTorch runs
            # in a process of its own (each peer alone): its CPU threads spin on after each call
            # and slow whatever runs next, and XLA's threads slow it in turn.
            for impl in args.impls:
                skip = args.compile_batches is not None and batch not in args.compile_batches
                if impl == "torch-compile" and skip:
                    continue
                row = {"model": model, "batch": batch, "impl": impl, "dtype": dtype}
                rows.append(row)
                try:
                    if impl.startswith("torch"):
                        found = torch_in_own_process(model, batch, impl, dtype, args.steps, args.repeats)
                        row["compile_s"], row["temp_bytes"] = found["compile_s"], None
                        times[impl] = found["seconds_per_step"]
                        continue
                    make = flax_impl(model) if impl == "flax" else makers[impl]
                    step, state, shape = make(batch, key, jnp.dtype(dtype))
                    x = jax.random.uniform(key, (batch,) + shape).astype(dtype)
                    y = jax.random.randint(key, (batch,), 0, 10)
                    as_fit = impl.startswith("jaxnn")  # compiled as fit compiles; peers as written
                    runners[impl], row["compile_s"], row["temp_bytes"] = prepare_jax_step(
                        step, state, x, y, as_fit
                    )
                except Exception as e:  # a peer not installed, or failing on this machine: say so
                    row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
            order = list(runners)
            for round_ in range(args.repeats):  # the order rotates each round
                for impl in order[round_ % max(1, len(order)) :] + order[: round_ % max(1, len(order))]:
                    times.setdefault(impl, []).append(timeit(runners[impl], args.steps, 1))
            for row in rows:
                if row["impl"] in times:
                    sec = float(np.median(times[row["impl"]]))
                    gflops = step_flops(model, batch) / sec / 1e9
                    row.update(
                        samples_per_s=batch / sec,
                        ms_per_step=1e3 * sec,
                        ms_per_step_spread={k: 1e3 * v for k, v in spread(times[row["impl"]]).items()},
                        gflops=gflops,
                        fraction_of_matmul_peak=gflops / peaks[dtype],
                    )
                result["rows"].append(row)
                print(json.dumps(row), flush=True)
    write_json(os.path.join(args.out, "bench.json"), result)
    plot(result, os.path.join(args.out, "throughput.png"))
    print(f"-> {args.out}")


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in result["rows"]})
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    for ax, model in zip(axes.flat, models):
        for impl, dtype in dict.fromkeys((r["impl"], r.get("dtype", "float32")) for r in result["rows"]):
            rows = [
                r
                for r in result["rows"]
                if r["model"] == model
                and r["impl"] == impl
                and r.get("dtype", "float32") == dtype
                and "samples_per_s" in r
            ]
            if rows:
                style = "o-" if dtype == "float32" else "s--"
                ax.plot(
                    [r["batch"] for r in rows],
                    [r["samples_per_s"] for r in rows],
                    style,
                    label=f"{impl} {dtype}",
                )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel("training samples / s")
        ax.set_title(f"{model} on {result['machine']['device_kind']}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
