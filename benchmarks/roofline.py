"""The roofline of jaxnn's training steps on this machine: each step's GFLOP/s and arithmetic intensity,
against the machine's matmul ceiling and memory bandwidth measured in the same process.

    python benchmarks/roofline.py [--rounds 5] [--out benchmarks/results/cpu/roofline.json]
                                  [--figure docs/figures/roofline.png] [--redraw]

Four training steps, each the loss and hand gradient (`nn.value_and_grad`) and Adam, as `fit` runs
them: a jitted `lax.scan` of --steps steps compiled with the model's XLA options
(`train.model_compiler_options`), random data:

- mlp: 784-1000-1000-10, ReLU, batch 1024;
- cnn: the MNIST CNN (conv 3x3x32, ReLU, max pool, conv 3x3x64, ReLU, max pool, Dense 128, ReLU,
  Dense 10), batch 128;
- char transformer: the character-level GPT of experiments/char_lm.py (65 tokens, context 64, width
  128, 4 heads, 4 blocks), batch 12;
- resnet block: one ResNet basic block at 32 channels on 28x28x32 inputs (two 3x3 convolutions with
  BatchNorm, trained on batch statistics), global average pooling, Dense 10, batch 128.

FLOPs and bytes per step are XLA's counts of the compiled program (the scan's body, one step;
`jaxnn.throughput`); intensity is their ratio. Each round measures the matmul ceiling (a jitted
1024x1024 float32 matmul, as `jaxnn.throughput.matmul_ceiling`), the memory bandwidth (a jitted
in-place scale-and-add of a 256 MiB float32 array: 8 bytes per element read and written), then
times every step; a step's fraction of the ceiling is taken within its round. Reported: medians
with min and max over the rounds. --redraw draws the figure again from --out.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS_PER_CALL = 10


def workloads():
    """{name: (model, loss, x, labels)}: each model with its loss and random data of its step's shape."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    import jaxnn as nn  # noqa: PLC0415
    from jaxnn.models import residual_block  # noqa: PLC0415

    key, ce = jax.random.PRNGKey(1), nn.losses.softmax_cross_entropy
    block = nn.models.for_inputs(
        nn.serial(residual_block(32), nn.GlobalAvgPool(), nn.Dense(10)), (28, 28, 32), "resnet block"
    )
    return {
        "mlp": (
            nn.models.for_inputs(nn.mlp([784, 1000, 1000, 10]), (784,)),
            ce,
            jax.random.normal(key, (1024, 784)),
            jnp.arange(1024) % 10,
        ),
        "cnn": (
            nn.models.cnn(10, (28, 28, 1)),
            ce,
            jax.random.normal(key, (128, 28, 28, 1)),
            jnp.arange(128) % 10,
        ),
        "char transformer": (
            nn.models.char_transformer(65, 64, 128, 4, 4),
            nn.losses.sequence_cross_entropy,
            jax.random.randint(key, (12, 64), 0, 65),
            jax.random.randint(key, (12, 64), 0, 65),
        ),
        "resnet block": (block, ce, jax.random.normal(key, (128, 28, 28, 32)), jnp.arange(128) % 10),
    }


def adam_step(model, loss, x, labels):
    """One Adam step on the fixed batch, as fit takes it (with BatchNorm: on the batch's statistics):
    returns (step(carry) -> (carry, loss), the first carry (params, opt_state, model_state))."""
    import jax  # noqa: PLC0415
    import optax  # noqa: PLC0415

    import jaxnn as nn  # noqa: PLC0415

    shape = model.input_shape
    _, params = model.init(jax.random.PRNGKey(0), shape)
    model_state = model.init_state(shape)
    opt = optax.adam(1e-3)
    grad = nn.value_and_grad(model, loss)
    with_state = bool(jax.tree_util.tree_leaves(model_state))

    def step(carry):
        params, opt_state, model_state = carry
        if with_state:
            (value, model_state), grads = grad(params, x, labels, state=model_state, train=True)
        else:
            value, grads = grad(params, x, labels)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, model_state), value

    return step, (params, opt.init(params), model_state)


def compiled_steps(model, loss, x, labels):
    """A jitted scan of STEPS_PER_CALL Adam steps, compiled with fit's options; returns
    (run(), flops per step, bytes per step)."""
    import jax  # noqa: PLC0415

    from jaxnn import throughput  # noqa: PLC0415
    from jaxnn.train.compile import compile_lowered  # noqa: PLC0415

    step, carry = adam_step(model, loss, x, labels)

    def many(carry):
        return jax.lax.scan(lambda c, _: step(c), carry, None, length=STEPS_PER_CALL)

    compiled, _ = compile_lowered(jax.jit(many, donate_argnums=0).lower(carry))  # fit's options
    holder = {"carry": compiled(carry)[0]}  # warm up

    def run():
        holder["carry"], losses = compiled(holder["carry"])
        jax.block_until_ready(losses)

    return run, throughput.program_flops(compiled), throughput.program_bytes(compiled)


def bandwidth_rate(elements=64 * 2**20, calls=5):
    """GB/s of a jitted in-place x * a + b over `elements` float32 (8 bytes moved per element)."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    scale = jax.jit(lambda x: x * 0.5 + 1.0, donate_argnums=0)
    x = scale(jnp.zeros((elements,), jnp.float32))
    jax.block_until_ready(x)
    rates = []
    for _ in range(calls):
        t0 = time.perf_counter()
        x = scale(x)
        jax.block_until_ready(x)
        rates.append(8.0 * elements / (time.perf_counter() - t0) / 1e9)
    return float(np.median(rates))


def measure(rounds):
    import numpy as np  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    from jaxnn import throughput  # noqa: PLC0415
    from jaxnn_lab.bench import machine, spread  # noqa: PLC0415

    steps = {}
    for name, workload in tqdm(workloads().items(), desc="compiling", leave=False):
        steps[name] = compiled_steps(*workload)
    per_round = {"ceiling": [], "bandwidth": [], **{name: [] for name in steps}}
    for _ in tqdm(range(rounds), desc="rounds"):
        per_round["ceiling"].append(throughput.measure_ceiling())
        per_round["bandwidth"].append(bandwidth_rate())
        for name, (run, _, _) in steps.items():
            seconds = []
            for _ in range(3):
                t0 = time.perf_counter()
                run()
                seconds.append((time.perf_counter() - t0) / STEPS_PER_CALL)
            per_round[name].append(float(np.median(seconds)))
    result = {
        "machine": machine(),
        "config": {"rounds": rounds, "steps_per_call": STEPS_PER_CALL},
        "matmul_ceiling_gflops": spread(per_round["ceiling"]),
        "bandwidth_gb_per_s": spread(per_round["bandwidth"]),
        "steps": {},
    }
    ceilings = np.array(per_round["ceiling"])
    for name, (_, flops, moved) in steps.items():
        seconds = np.array(per_round[name])
        gflops = flops / seconds / 1e9
        result["steps"][name] = {
            "flops_per_step": flops,
            "bytes_per_step": moved,
            "intensity_flops_per_byte": flops / moved,
            "seconds_per_step": spread(seconds),
            "gflops": spread(gflops),
            "fraction_of_ceiling": spread(gflops / ceilings),
        }
    return result


def draw(result, path):
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    ceiling = result["matmul_ceiling_gflops"]["median"]
    bandwidth = result["bandwidth_gb_per_s"]["median"]
    steps = result["steps"]
    intensities = [s["intensity_flops_per_byte"] for s in steps.values()]
    low, high = min(intensities + [ceiling / bandwidth]) / 4, max(intensities + [ceiling / bandwidth]) * 4
    grid = np.geomspace(low, high, 200)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(grid, np.minimum(ceiling, bandwidth * grid), color="black", lw=1.5)
    ridge = ceiling / bandwidth
    ax.text(ridge * 1.2, ceiling * 1.05, f"matmul ceiling {ceiling:.0f} GFLOP/s", va="bottom")
    x0 = ridge / 2  # the label to the right of the memory slope, below it
    ax.text(x0 * 1.15, bandwidth * x0 / 1.5, f"memory bandwidth {bandwidth:.0f} GB/s", va="top")
    for (name, s), colour in zip(steps.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        g = s["gflops"]
        ax.errorbar(
            s["intensity_flops_per_byte"],
            g["median"],
            yerr=[[g["median"] - g["min"]], [g["max"] - g["median"]]],
            fmt="o",
            color=colour,
            capsize=3,
            label=f"{name}: {g['median']:.0f} GFLOP/s, {s['fraction_of_ceiling']['median']:.0%} of matmul",
        )
    rates = [s["gflops"]["min"] for s in steps.values()]
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(min(rates + [bandwidth * low]) / 1.3, ceiling * 1.6)
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.set_xlabel("arithmetic intensity (FLOPs per byte, XLA's counts)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title("Training steps on the roofline (Adam, as fit runs them)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default=os.path.join(HERE, "results", "cpu", "roofline.json"))
    p.add_argument("--figure", default=os.path.join(HERE, "..", "docs", "figures", "roofline.png"))
    p.add_argument("--redraw", action="store_true", help="draw the figure again from --out")
    args = p.parse_args()
    if args.rounds < 1:
        sys.exit("error: --rounds must be at least 1")
    import json  # noqa: PLC0415

    from jaxnn_lab.bench import write_json  # noqa: PLC0415

    if args.redraw:
        try:
            with open(args.out) as f:
                result = json.load(f)
        except (OSError, ValueError) as e:
            sys.exit(f"error: cannot read {args.out}: {e}")
    else:
        result = measure(args.rounds)
        write_json(args.out, result)
    draw(result, args.figure)
    for name, s in result["steps"].items():
        g, frac = s["gflops"], s["fraction_of_ceiling"]
        print(
            f"{name:17s} {s['flops_per_step'] / 1e9:7.3f} GFLOP/step"
            f"  intensity {s['intensity_flops_per_byte']:6.1f}"
            f"  {g['median']:6.1f} GFLOP/s [{g['min']:.1f}, {g['max']:.1f}]"
            f"  {frac['median']:.2f} of the ceiling [{frac['min']:.2f}, {frac['max']:.2f}]"
        )
    print(
        f"matmul ceiling {result['matmul_ceiling_gflops']['median']:.0f} GFLOP/s, "
        f"bandwidth {result['bandwidth_gb_per_s']['median']:.1f} GB/s"
    )


if __name__ == "__main__":
    main()
