"""The small MNIST CNN's training step on this machine, each implementation in a process of its own.

    python benchmarks/cnn_step.py [--batch 128] [--rounds 3] [--out benchmarks/results/cpu/cnn_step.json]

The CNN (conv 3x3x32, ReLU, max pool, conv 3x3x64, ReLU, max pool, Dense 128, ReLU, Dense 10), Adam
1e-3, random data, as benchmarks/run.py builds it, for: jaxnn (hand backward, the default), plain
JAX + optax (jax.grad), PyTorch eager (and, with --impls, jaxnn-bf16: the jaxnn step on
nn.mixed_precision(model, "bfloat16")). PyTorch's and XLA's thread pools slow each other in one
process, so every measurement starts a fresh process; the implementations take turns, --rounds
times, each process timing --repeats runs of --steps steps after its warm-up. Reported: seconds
per step (median over every timing, with min and max), samples/s, GFLOP/s (25 MFLOP per example)
as a fraction of a 2048x2048 float32 matmul's rate measured the same way, and the ratios of
jaxnn's throughput to each peer's. The headline times are of training as it runs: JAX steps
inside a jitted lax.scan of --steps steps (jaxnn's fit scans whole epochs; the plain JAX
reference scans too), PyTorch's Python loop; `lone_step` gives the JAX steps jitted one call per
step as well (XLA's CPU backend compiles convolutions differently in the two). The ratios take
jaxnn as it trains (scanned) over each peer in the faster of its two modes.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
IMPLS = ("jaxnn", "jax-optax", "torch-eager", "jaxnn-bf16")
DEFAULT_IMPLS = IMPLS[:3]


def scanned(step, state, x, y, steps, as_fit):
    """run(n) for a JAX step: `steps` steps in one jitted lax.scan, as fit trains (n: ignored);
    as_fit: compiled with the XLA options of jaxnn's fit (run.compile_step)."""
    import jax  # noqa: PLC0415

    from run import compile_step  # noqa: PLC0415

    def many(state):
        return jax.lax.scan(lambda s, _: (step(s, x, y)[0], None), state, None, length=steps)[0]

    compiled = compile_step(jax.jit(many, donate_argnums=0).lower(state), as_fit)
    holder = {"state": compiled(state)}  # compile and warm up
    jax.block_until_ready(holder["state"])

    def run(n):
        holder["state"] = compiled(holder["state"])
        jax.block_until_ready(holder["state"])

    return run


def child(impl, batch, steps, repeats):
    """Runs in the fresh process: build, warm up, time; prints one JSON line. JAX steps are timed
    both inside a scan of `steps` steps (how jaxnn and a scanned plain-JAX loop train) and as one
    jitted call per step; PyTorch eager as its Python loop."""
    if impl == "matmul":
        from run import matmul_peak  # noqa: PLC0415

        return {"gflops": [matmul_peak() for _ in range(repeats)]}
    from run import jaxnn_impl, plain_jax_impl, prepare_jax_step, prepare_torch, timeit  # noqa: PLC0415

    if impl == "torch-eager":
        run, compile_s, _ = prepare_torch("cnn", batch, compiled=False)
        loop = [timeit(run, steps, 1) for _ in range(repeats)]
        return {"compile_s": compile_s, "seconds_per_step": loop, "lone_seconds_per_step": loop}
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    key = jax.random.PRNGKey(0)
    if impl == "jaxnn-bf16":  # jaxnn_impl's step on nn.mixed_precision(model, "bfloat16")
        import optax  # noqa: PLC0415

        import jaxnn as nn  # noqa: PLC0415
        from jaxnn import train  # noqa: PLC0415

        model = nn.mixed_precision(nn.models.cnn(10, (28, 28, 1)), "bfloat16")
        shape, opt = model.input_shape, optax.adam(1e-3)
        step = train.make_step(model, nn.losses.softmax_cross_entropy, opt)
        state = train.init_state(model, opt, key)
    else:
        make = plain_jax_impl("cnn") if impl == "jax-optax" else jaxnn_impl("cnn", "manual")
        step, state, shape = make(batch, key, jnp.float32)
    x = jax.random.uniform(key, (batch,) + shape)
    y = jax.random.randint(key, (batch,), 0, 10)
    as_fit = impl != "jax-optax"  # jaxnn's rows compile as its fit does; plain JAX as users write it
    in_scan = scanned(step, jax.tree_util.tree_map(jnp.copy, state), x, y, steps, as_fit)  # both donate
    lone, compile_s, _ = prepare_jax_step(step, state, x, y, as_fit)
    return {
        "compile_s": compile_s,
        "seconds_per_step": [timeit(in_scan, 1, 1) / steps for _ in range(repeats)],
        "lone_seconds_per_step": [timeit(lone, steps, 1) for _ in range(repeats)],
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5, help="timings per process")
    p.add_argument("--rounds", type=int, default=3, help="processes per implementation, taking turns")
    p.add_argument("--impls", nargs="+", default=list(DEFAULT_IMPLS), choices=IMPLS)
    p.add_argument("--out", default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.batch, args.steps, args.repeats)))
        return
    from jaxnn_lab.bench import (  # noqa: PLC0415
        machine,  # noqa: PLC0415
        spread,
        write_json,
    )
    from run import step_flops  # noqa: PLC0415

    def measure(impl):
        command = [sys.executable, __file__, "--child", impl, "--batch", str(args.batch)]
        command += ["--steps", str(args.steps), "--repeats", str(args.repeats)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        time.sleep(1.0)  # let the machine settle between processes
        return json.loads(done.stdout.strip().splitlines()[-1])

    times, compiles, peaks = {impl: [] for impl in args.impls}, {impl: [] for impl in args.impls}, []
    lone = {impl: [] for impl in args.impls}
    for round_ in range(args.rounds):
        peaks += measure("matmul")["gflops"]
        turn = args.impls[round_ % len(args.impls) :] + args.impls[: round_ % len(args.impls)]
        for impl in turn:
            found = measure(impl)
            times[impl] += found["seconds_per_step"]
            lone[impl] += found["lone_seconds_per_step"]
            compiles[impl].append(found["compile_s"])
            print(
                f"round {round_ + 1}: {impl} {np.median(found['seconds_per_step']) * 1e3:.1f} ms/step",
                flush=True,
            )
    peak = float(np.median(peaks))
    flops = step_flops("cnn", args.batch)
    rows = {}
    for impl in args.impls:
        seconds = spread(times[impl])
        rows[impl] = {
            "seconds_per_step": seconds,
            "samples_per_s": args.batch / seconds["median"],
            "gflops": flops / seconds["median"] / 1e9,
            "fraction_of_matmul": flops / seconds["median"] / 1e9 / peak,
            "compile_s": spread(compiles[impl]),
            "lone_step": {
                "seconds_per_step": spread(lone[impl]),
                "samples_per_s": args.batch / float(np.median(lone[impl])),
            },
        }
    result = {
        "machine": machine(),
        "batch": args.batch,
        "flops_per_step": flops,
        "matmul_gflops": spread(peaks),
        "rows": rows,
        "config": vars(args),
    }
    if "jaxnn" in rows:  # jaxnn as fit trains (scanned) over each peer in its faster mode
        for peer, row in rows.items():
            if peer != "jaxnn":
                best = max(row["samples_per_s"], row["lone_step"]["samples_per_s"])
                result[f"jaxnn_speed_over_{peer}"] = rows["jaxnn"]["samples_per_s"] / best
    for impl, row in rows.items():
        s = row["seconds_per_step"]
        print(
            f"{impl:12s} {row['samples_per_s']:7.0f} samples/s  {s['median'] * 1e3:6.1f} ms/step "
            f"[{s['min'] * 1e3:.1f}, {s['max'] * 1e3:.1f}]  {row['fraction_of_matmul']:.0%} of matmul; "
            f"one jitted call per step: {row['lone_step']['samples_per_s']:.0f} samples/s"
        )
    print({k: round(v, 3) for k, v in result.items() if k.startswith("jaxnn_speed")})
    write_json(args.out, result)


if __name__ == "__main__":
    main()
