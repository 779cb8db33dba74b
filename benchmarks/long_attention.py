"""Attention at long contexts: memory and time of one forward plus backward, four ways.

    python benchmarks/long_attention.py [--times 256,...,16384] [--block 512] [--rounds 5] [--out FILE]
                                        [--figure PNG]
    python benchmarks/long_attention.py --from FILE --figure PNG     # the figure of a committed result

The layer is causal self-attention with its projections (d 64, 4 heads, batch 1, float32), and
each implementation computes the gradients of its parameters and input for a random dy:

- "blockwise hand rule": `nn.MultiHeadAttention(4, causal=True, block_size=--block)`'s forward and
  hand backward (jaxnn.blockwise: an online softmax, residuals o and a log-sum-exp per row);
- "dense hand rule": `nn.MultiHeadAttention(4, causal=True)`'s, which keeps every head's weights;
- "jax.grad, plain attention": jax.vjp of the same function written in plain JAX (jax.nn.softmax);
- "jax.nn.dot_product_attention": jax.vjp of the same with JAX's fused attention (XLA's on a CPU).

Memory is XLA's compiled temporary memory (`compiled.memory_analysis().temp_size_in_bytes`), read
without running; an implementation is timed at a length only where it needs at most --time-limit-gib,
so the benchmark never swaps. Times: the median of --rounds runs with [min, max], the
implementations taking turns. Beyond the timed lengths, the memory analysis goes on doubling the
length to find where each implementation's temporary plus argument memory passes --fits-gib (24).
--figure draws memory and time against the length, one line per implementation.
"""

import argparse
import functools
import json
import math

import jax
import jax.numpy as jnp

import jaxnn as nn
from jaxnn_lab import plots
from jaxnn_lab.bench import machine, spread, time_in_turns, write_json

D, HEADS, BATCH = 64, 4, 1


def plain_attention(core):
    """y = attention(x) with the layer's params, in plain JAX; core(q, k, v) on (batch, time, heads, f)."""

    def apply(params, x):
        b, t, d = x.shape
        q, k, v = ((x @ params[f"w{n}"] + params[f"b{n}"]).reshape(b, t, HEADS, d // HEADS) for n in "qkv")
        return core(q, k, v).reshape(b, t, d) @ params["wo"] + params["bo"]

    return apply


def softmax_core(q, k, v):
    s = jnp.einsum("bthf,buhf->bhtu", q, k) / math.sqrt(q.shape[-1])
    t = q.shape[1]
    s = jnp.where(jnp.tril(jnp.ones((t, t), bool)), s, -jnp.inf)
    return jnp.einsum("bhtu,buhf->bthf", jax.nn.softmax(s, axis=-1), v)


def fused_core(q, k, v):
    return jax.nn.dot_product_attention(q, k, v, is_causal=True)


def implementations(block):
    def by_hand(layer):
        def grads(params, x, dy):
            _, residuals = layer.forward(params, x)
            return layer.backward(residuals, dy)

        return grads

    def by_autodiff(apply):
        def grads(params, x, dy):
            return jax.vjp(apply, params, x)[1](dy)

        return grads

    return {
        "blockwise hand rule": by_hand(nn.MultiHeadAttention(HEADS, causal=True, block_size=block)),
        "dense hand rule": by_hand(nn.MultiHeadAttention(HEADS, causal=True)),
        "jax.grad, plain attention": by_autodiff(plain_attention(softmax_core)),
        "jax.nn.dot_product_attention": by_autodiff(plain_attention(fused_core)),
    }


def inputs(time_):
    _, params = nn.MultiHeadAttention(HEADS).init(jax.random.PRNGKey(0), (time_, D))
    x = jax.random.normal(jax.random.PRNGKey(1), (BATCH, time_, D))
    dy = jax.random.normal(jax.random.PRNGKey(2), (BATCH, time_, D))
    return params, x, dy


def memory(fn, params, x, dy):
    """(compiled, temporary bytes, argument + output bytes), compiled for these shapes, not run."""
    compiled = jax.jit(fn).lower(params, x, dy).compile()
    m = compiled.memory_analysis()
    return compiled, m.temp_size_in_bytes, m.argument_size_in_bytes + m.output_size_in_bytes


def largest_that_fits(fn, start, limit_bytes, cap):
    """The longest power-of-two length >= start whose compiled memory stays within limit_bytes (up
    to cap), and the bytes at the first length that does not fit (None if none up to cap)."""
    time_, fits = start, None
    while time_ <= cap:
        shapes = jax.eval_shape(functools.partial(inputs, time_))
        _, temp, io = memory(fn, *shapes)
        if temp + io > limit_bytes:
            return fits, {"time": time_, "bytes": temp + io}
        fits, time_ = time_, 2 * time_
    return fits, None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--times", default="256,512,1024,2048,4096,8192,16384")
    p.add_argument("--block", type=int, default=512)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--time-limit-gib", type=float, default=10.0, help="time a run only below this memory")
    p.add_argument("--fits-gib", type=float, default=24.0)
    p.add_argument("--fits-cap", type=int, default=1 << 20, help="longest length the fit search tries")
    p.add_argument("--out", default=None)
    p.add_argument("--figure", default=None, help="draw memory and time against T into this PNG")
    p.add_argument(
        "--from", dest="source", default=None, help="draw --figure from this result, measure nothing"
    )
    args = p.parse_args()
    if args.source:
        with open(args.source) as f:
            figure(json.load(f), args.figure)
        return
    impls = implementations(args.block)
    result = {
        "machine": machine(),
        "config": {
            "d": D,
            "heads": HEADS,
            "batch": BATCH,
            "causal": True,
            "dtype": "float32",
            "block": args.block,
        },
        "rows": [],
    }
    for time_ in (int(t) for t in args.times.split(",")):
        params, x, dy = inputs(time_)
        compiled, rows = {}, {}
        for name, fn in impls.items():
            c, temp, io = memory(fn, params, x, dy)
            rows[name] = {"impl": name, "time": time_, "temp_bytes": temp, "io_bytes": io}
            if temp + io <= args.time_limit_gib * 2**30:
                jax.block_until_ready(c(params, x, dy))  # warm up
                compiled[name] = c
        seconds = time_in_turns(compiled, (params, x, dy), args.rounds)
        plain = rows["jax.grad, plain attention"]
        for name, row in rows.items():
            row["temp_over_jax_grad"] = row["temp_bytes"] / plain["temp_bytes"]
            if seconds.get(name):
                row["seconds"] = spread(seconds[name])
        for name, row in rows.items():
            if "seconds" in row and "seconds" in plain:
                row["time_over_jax_grad"] = row["seconds"]["median"] / plain["seconds"]["median"]
            shown = f"{1e3 * row['seconds']['median']:9.1f} ms" if "seconds" in row else "  not timed"
            print(
                f"T {time_:6d}  {name:30s} temp {row['temp_bytes'] / 2**20:10.1f} MiB "
                f"({row['temp_over_jax_grad']:.3f} of jax.grad's)  {shown}"
                + (
                    f"  ({row['time_over_jax_grad']:.2f}x jax.grad's time)"
                    if "time_over_jax_grad" in row
                    else ""
                ),
                flush=True,
            )
            result["rows"].append(row)
    start = max(int(t) for t in args.times.split(","))
    result["fits"] = {}
    for name, fn in impls.items():
        fits, first_over = largest_that_fits(fn, start, args.fits_gib * 2**30, args.fits_cap)
        result["fits"][name] = {"limit_gib": args.fits_gib, "longest": fits, "first_over": first_over}
        if first_over is None:
            print(f"{name:30s} fits in {args.fits_gib:g} GiB at every T tried, up to {fits}", flush=True)
        else:
            need = first_over["bytes"] / 2**30
            print(
                f"{name:30s} fits in {args.fits_gib:g} GiB up to T {fits}; "
                f"T {first_over['time']} needs {need:.1f} GiB"
            )
    write_json(args.out, result)
    if args.figure:
        figure(result, args.figure)


STYLES = {  # jax.grad's memory equals dot_product_attention's: a hollow, larger marker keeps both visible
    "blockwise hand rule": {"marker": "o", "ls": "-"},
    "dense hand rule": {"marker": "s", "ls": "-"},
    "jax.grad, plain attention": {"marker": "o", "ls": "--", "ms": 11, "mfc": "none", "mew": 1.8},
    "jax.nn.dot_product_attention": {"marker": "^", "ls": ":"},
}


def figure(result, path):
    """Two panels against the length T (log-log): temporary memory, with the memory limit, where
    each implementation first passes it and how far the blockwise layer was found to fit, and the
    time of one forward plus backward."""
    plt = plots._plt()
    fig, (memory_ax, time_ax) = plt.subplots(1, 2, figsize=(12, 4.6))
    for impl, fits in result["fits"].items():
        rows = [r for r in result["rows"] if r["impl"] == impl]
        style = {"ms": 6, **STYLES.get(impl, {"marker": "o", "ls": "-"})}
        xs, ys = [r["time"] for r in rows], [r["temp_bytes"] / 2**30 for r in rows]
        (line,) = memory_ax.plot(xs, ys, label=impl, **style)
        if fits["first_over"]:
            over = fits["first_over"]
            memory_ax.plot([over["time"]], [over["bytes"] / 2**30], "x", color=line.get_color(), ms=10, mew=2)
        elif fits["longest"] > xs[-1]:  # measured up to xs[-1]; the fit search went further
            memory_ax.annotate(
                "", (fits["longest"], ys[-1]), xytext=(xs[-1], ys[-1]),
                arrowprops={"arrowstyle": "->", "ls": ":", "color": line.get_color()},
            )  # fmt: skip
            memory_ax.annotate(
                f"fits at every T tried,\nup to {fits['longest']:,}", (fits["longest"], ys[-1]),
                xytext=(-4, 8), textcoords="offset points", ha="right", fontsize=9, color=line.get_color(),
            )  # fmt: skip
        timed = [r for r in rows if "seconds" in r]
        time_ax.plot([r["time"] for r in timed], [r["seconds"]["median"] for r in timed], label=impl, **style)
    limit = next(iter(result["fits"].values()))["limit_gib"]
    memory_ax.axhline(limit, color="grey", lw=0.8, ls="--")
    memory_ax.annotate(
        f"{limit:g} GiB (x: the first T that does not fit)",
        (0.02, limit),
        xycoords=("axes fraction", "data"),
        xytext=(0, 4),
        textcoords="offset points",
        fontsize=9,
        color="grey",
    )
    for ax, ylabel in ((memory_ax, "compiled temporary memory (GiB)"), (time_ax, "forward + backward (s)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context length T", fontsize=11)
        ax.set_ylabel(ylabel, fontsize=11)
    longest = max(fits["longest"] for fits in result["fits"].values())
    shortest = min(r["time"] for r in result["rows"])
    memory_ax.set_xlim(shortest / 1.5, longest * 1.6)  # out to where the fit search went
    memory_ax.set_xticks([2**k for k in range(shortest.bit_length() - 1, longest.bit_length(), 2)])
    time_ax.legend(fontsize=10)
    c = result["config"]
    fig.suptitle(f"causal attention, d {c['d']}, {c['heads']} heads, batch {c['batch']}, block {c['block']}")
    return plots._save(fig, path)


if __name__ == "__main__":
    main()
