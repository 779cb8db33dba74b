"""A researcher's own training loop, one `jax.jit` call per step, against PyTorch eager and plain JAX.

    python benchmarks/own_loop.py [--rounds 3] [--steps 20] [--repeats 5] [--out FILE]

The CNN (conv 3x3x32, ReLU, max pool, conv 3x3x64, ReLU, max pool, Dense 128, ReLU, Dense 10),
Adam 1e-3, batch 128, random data; each measurement in a fresh process (PyTorch's and XLA's
threads slow each other in one), the implementations taking turns, --rounds times:

- "torch eager": PyTorch's Python loop, glibc's defaults;
- "torch eager after reuse_host_memory()": the same with the opt-in below (PyTorch's CPU allocator
  gains from it too: the comparison at equal settings);
- "plain JAX, jax.jit": jax.value_and_grad of a hand-written forward, optax, `jax.jit(step)`;
- "jaxnn, jax.jit": `nn.value_and_grad` and optax in `jax.jit(step)`, glibc's defaults (importing
  jaxnn changes nothing);
- "jaxnn, jax.jit with fit's options": `compiler_options=train.model_compiler_options(model, shape)`,
  the options fit compiles its scan of whole epochs with;
- "jaxnn, nn.jit": `nn.jit(step, model)`, the options for a program called once per step;
- "jaxnn, nn.jit after reuse_host_memory()": the script opts in first thing
  (`nn.reuse_host_memory()`: one malloc arena, freed memory kept for the next call), then nn.jit.
Each process times --repeats runs of --steps calls after its warm-up; reported are ms per step
(median of every timing, with min and max), minor page faults per step, and each loop's speed over
PyTorch eager's. Then the MLP (784-512-512-10, batch 128): the jitted `nn.value_and_grad` against a
jitted plain `jax.value_and_grad`, taking turns in one process (--mlp-rounds rounds of 50 calls).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CNN_IMPLS = {
    "torch eager": {},
    "torch eager after reuse_host_memory()": {},
    "plain JAX, jax.jit": {},
    "jaxnn, jax.jit": {},
    "jaxnn, jax.jit with fit's options": {},
    "jaxnn, nn.jit": {},
    "jaxnn, nn.jit after reuse_host_memory()": {},
}
BATCH = 128


def jaxnn_step(nn, optax, jitted_by):
    """The loop as a user writes it (docs/tutorials/cnn.md): value_and_grad, then optax."""
    model, opt = nn.models.cnn(10, (28, 28, 1)), optax.adam(1e-3)
    loss_and_grads = nn.value_and_grad(model, nn.losses.softmax_cross_entropy)

    def step(params, opt_state, x, y):
        loss, grads = loss_and_grads(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return model, opt, jitted_by(step, model)


def child(impl, steps, repeats):
    """In the fresh process: build, warm up, time; returns seconds per step and faults per step."""
    if impl.endswith("after reuse_host_memory()"):  # first thing, before any array
        import jaxnn as nn  # noqa: PLC0415

        assert nn.reuse_host_memory(), "reuse_host_memory declined"
    if impl.startswith("torch eager"):
        from run import prepare_torch  # noqa: PLC0415

        run, _, _ = prepare_torch("cnn", BATCH, compiled=False)
    else:
        import jax  # noqa: PLC0415
        import optax  # noqa: PLC0415

        import jaxnn as nn  # noqa: PLC0415

        key = jax.random.PRNGKey(0)
        x = jax.random.uniform(key, (BATCH, 28, 28, 1))
        y = jax.random.randint(key, (BATCH,), 0, 10)
        if impl == "plain JAX, jax.jit":
            from run import plain_jax_impl  # noqa: PLC0415

            step, state, _ = plain_jax_impl("cnn")(BATCH, key, jax.numpy.float32)
            jitted = jax.jit(step)
        else:
            by = {
                "jaxnn, nn.jit": nn.jit,
                "jaxnn, nn.jit after reuse_host_memory()": nn.jit,
                "jaxnn, jax.jit with fit's options": lambda step, model: jax.jit(
                    step, compiler_options=nn.train.model_compiler_options(model, model.input_shape)
                ),
            }.get(impl, lambda step, model: jax.jit(step))
            model, opt, jitted_step = jaxnn_step(nn, optax, by)
            _, params = model.init(key)
            state = (params, opt.init(params))

            def jitted(state, x, y):
                params, opt_state, loss = jitted_step(*state, x, y)
                return (params, opt_state), loss

        from jaxnn_lab.bench import step_runner  # noqa: PLC0415  (after the opt-in above)

        run = step_runner(jitted, state, x, y)
        run(2)
    seconds, faults = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        run(steps)
        seconds.append((time.perf_counter() - t0) / steps)
        faults.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps)
    return {"seconds_per_step": seconds, "faults_per_step": faults}


def in_own_process(impl, args):
    env = dict(os.environ, **CNN_IMPLS[impl])
    command = [sys.executable, __file__, "--child", impl, "--steps", str(args.steps)]
    done = subprocess.run(
        command + ["--repeats", str(args.repeats)], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode:
        raise SystemExit(f"error: {impl}: {done.stderr.strip().splitlines()[-1:]}")
    time.sleep(1.0)  # let the machine settle after each process's threads
    return json.loads(done.stdout.strip().splitlines()[-1])


def mlp_value_and_grad(rounds):
    """ms per call of the jitted value_and_grad: jaxnn's hand rules and plain JAX, taking turns."""
    import jax  # noqa: PLC0415
    import optax  # noqa: PLC0415

    import jaxnn as nn  # noqa: PLC0415

    model = nn.mlp([784, 512, 512, 10], activation="relu")
    _, params = model.init(jax.random.PRNGKey(0), (784,))
    x = jax.random.normal(jax.random.PRNGKey(1), (BATCH, 784))
    y = jax.random.randint(jax.random.PRNGKey(2), (BATCH,), 0, 10)

    def predict(params, x):
        for layer in params[:-1:2]:
            x = jax.nn.relu(x @ layer["w"] + layer["b"])
        return x @ params[-1]["w"] + params[-1]["b"]

    def plain_loss(params, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(predict(params, x), y).mean()

    functions = {
        "plain JAX": jax.jit(jax.value_and_grad(plain_loss)),
        "jaxnn": jax.jit(nn.value_and_grad(model, nn.losses.softmax_cross_entropy)),
    }
    seconds = {name: [] for name in functions}
    for f in functions.values():
        jax.block_until_ready(f(params, x, y))
    for _ in range(rounds):
        for name, f in functions.items():
            t0 = time.perf_counter()
            for _ in range(50):
                out = f(params, x, y)
            jax.block_until_ready(out)
            seconds[name].append((time.perf_counter() - t0) / 50)
    return seconds


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="processes per CNN loop, taking turns")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5, help="timings per process")
    p.add_argument("--mlp-rounds", type=int, default=30)
    p.add_argument("--out", default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.repeats)))
        return
    import numpy as np  # noqa: PLC0415

    from jaxnn_lab.bench import (  # noqa: PLC0415
        machine,  # noqa: PLC0415
        spread,
        write_json,
    )

    found = {impl: {"seconds_per_step": [], "faults_per_step": []} for impl in CNN_IMPLS}
    per_round = {impl: [] for impl in CNN_IMPLS}  # each process's median seconds per step
    for _ in range(args.rounds):
        for impl in CNN_IMPLS:
            for k, v in in_own_process(impl, args).items():
                found[impl][k] += v
            per_round[impl].append(float(np.median(found[impl]["seconds_per_step"][-args.repeats :])))
    torch_median = spread(found["torch eager"]["seconds_per_step"])["median"]
    cnn = {}
    for impl, r in found.items():
        s = spread(r["seconds_per_step"])
        round_ratios = np.array(per_round["torch eager"]) / np.array(per_round[impl])
        cnn[impl] = {
            "seconds_per_step": s,
            "faults_per_step": spread(r["faults_per_step"]),
            "speed_over_torch_eager": torch_median / s["median"],
            "speed_over_torch_eager_per_round": spread(round_ratios),  # each round's two processes
        }
        print(
            f"CNN  {impl:40s} {1e3 * s['median']:6.1f} ms/step [{1e3 * s['min']:.1f}, {1e3 * s['max']:.1f}]"
            f"  {cnn[impl]['faults_per_step']['median']:7.0f} faults/step"
            f"  {cnn[impl]['speed_over_torch_eager']:.2f}x torch eager",
            flush=True,
        )
    same_setting = (
        cnn["torch eager after reuse_host_memory()"]["seconds_per_step"]["median"]
        / cnn["jaxnn, nn.jit after reuse_host_memory()"]["seconds_per_step"]["median"]
    )
    same_per_round = spread(
        np.array(per_round["torch eager after reuse_host_memory()"])
        / np.array(per_round["jaxnn, nn.jit after reuse_host_memory()"])
    )
    print(
        f"CNN  nn.jit over torch eager, both after reuse_host_memory(): {same_setting:.2f}x "
        f"(per round {same_per_round['median']:.2f} "
        f"[{same_per_round['min']:.2f}, {same_per_round['max']:.2f}])",
        flush=True,
    )
    mlp = {name: spread(s) for name, s in mlp_value_and_grad(args.mlp_rounds).items()}
    mlp_ratio = mlp["plain JAX"]["median"] / mlp["jaxnn"]["median"]
    for name, s in mlp.items():
        print(f"MLP  {name:10s} {1e3 * s['median']:.3f} ms [{1e3 * s['min']:.3f}, {1e3 * s['max']:.3f}]")
    print(f"MLP  jaxnn's speed over plain JAX's: {mlp_ratio:.3f}")
    result = {
        "machine": machine(),
        "config": {"batch": BATCH, "steps": args.steps, "repeats": args.repeats, "rounds": args.rounds},
        "cnn_adam_step": cnn,
        "cnn_nn_jit_over_torch_both_after_reuse_host_memory": same_setting,
        "cnn_nn_jit_over_torch_both_after_reuse_host_memory_per_round": same_per_round,
        "mlp_value_and_grad": {"seconds": mlp, "jaxnn_speed_over_plain_jax": mlp_ratio},
    }
    write_json(args.out, result)


if __name__ == "__main__":
    main()
