"""The CNN's costliest piece, its second convolution's weight gradient, in seven exact formulations,
inside a `lax.scan` (as `fit` trains) and as one jitted call.

    python benchmarks/conv_weight_grad.py [--rounds 5] [--out benchmarks/results/cpu/conv_weight_grad.json]

dw[i, j, c, o] = sum_{n,p,q} x_pad[n, p + i, q + j, c] dy[n, p, q, o] for the MNIST CNN's second
convolution (x: 128x14x14x32, dy: 128x14x14x64, a 3x3 kernel, SAME): 0.92 GFLOP. Formulations:
"taps" (Conv2D's CPU default: one matmul per kernel tap on its view of x), "taps by rows" (one
matmul per kernel row, its three views side by side), "patches" (the nine views side by side, one
matmul), "patches, batch split in 8" (eight matmuls, summed), "taps, batch split in 4", and two
convolutions: "swapped axes" (x correlated with dy, batch and feature axes swapped: Conv2D's
backward="conv") and "explicit transposes" (the same with x and dy transposed to NHWC first). Each
is compiled with fit's XLA options; the script opts in to `nn.reuse_host_memory()` so that a call's
page faults do not count. Reported: ms per gradient (median, min, max over --rounds rounds, each
the median of 5 calls) and GFLOP/s, beside a 1024x1024 matmul's rate measured in the same rounds.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
N, H, C, F = 128, 14, 32, 64
FLOPS = 2 * N * H * H * 9 * C * F
IN_SCAN = 5  # gradients per call of the scanned program


def formulations():
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    def views(x):
        x_pad = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        return [x_pad[:, i : i + H, j : j + H] for i in range(3) for j in range(3)]

    def taps(x, dy):
        dw = jnp.stack([jnp.einsum("npqo,npqc->oc", dy, v) for v in views(x)])
        return dw.transpose(0, 2, 1).reshape(3, 3, C, F)  # every formulation returns (kh, kw, c, o)

    def taps_by_rows(x, dy):
        v = views(x)
        rows = [jnp.concatenate(v[3 * i : 3 * i + 3], -1) for i in range(3)]
        dw = jnp.stack([jnp.einsum("npqo,npqc->oc", dy, r) for r in rows])
        return dw.reshape(3, F, 3, C).transpose(0, 2, 3, 1)

    def patches(x, dy):
        dw = jnp.einsum("mo,mk->ok", dy.reshape(-1, F), jnp.concatenate(views(x), -1).reshape(-1, 9 * C))
        return dw.reshape(F, 9, C).transpose(1, 2, 0).reshape(3, 3, C, F)

    def patches_split(x, dy, s=8):
        p = jnp.concatenate(views(x), -1).reshape(s, -1, 9 * C)
        dw = jnp.einsum("smo,smk->sok", dy.reshape(s, -1, F), p).sum(0)
        return dw.reshape(F, 9, C).transpose(1, 2, 0).reshape(3, 3, C, F)

    def taps_split(x, dy, s=4):
        d = dy.reshape(s, N // s, H, H, F)
        dw = jnp.stack(
            [jnp.einsum("snpqo,snpqc->soc", d, v.reshape(s, N // s, H, H, C)).sum(0) for v in views(x)]
        )
        return dw.transpose(0, 2, 1).reshape(3, 3, C, F)

    def swapped(x, dy):
        dims = ("CHWN", "IHWO", "HWNC")
        return jax.lax.conv_general_dilated(x, dy, (1, 1), [(1, 1), (1, 1)], dimension_numbers=dims)

    def explicit(x, dy):
        dims = ("NHWC", "HWIO", "NHWC")
        xt, dyt = x.transpose(3, 1, 2, 0), dy.transpose(1, 2, 0, 3)
        dw = jax.lax.conv_general_dilated(xt, dyt, (1, 1), [(1, 1), (1, 1)], dimension_numbers=dims)
        return dw.transpose(1, 2, 0, 3)

    return {
        "taps (Conv2D's CPU default)": taps,
        "taps by rows": taps_by_rows,
        "patches": patches,
        "patches, batch split in 8": patches_split,
        "taps, batch split in 4": taps_split,
        "convolution, swapped axes (backward='conv')": swapped,
        "convolution, explicit transposes": explicit,
    }


def programs(f, x, dy):
    """(scanned, once): f's gradient IN_SCAN times inside a lax.scan, and once, both jitted with
    fit's options and warm."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    from jaxnn.train.compile import compile_lowered  # noqa: PLC0415

    def scanned(x, dy):
        def body(zero, _):  # the carry (0) enters x, so XLA cannot hoist the gradient out of the loop
            return zero + 0.0 * f(x + zero, dy).sum(), None

        return jax.lax.scan(body, jnp.zeros(()), None, length=IN_SCAN)[0]

    out = []
    for fn in (scanned, f):
        compiled, _ = compile_lowered(jax.jit(fn).lower(x, dy))
        jax.block_until_ready(compiled(x, dy))
        out.append(compiled)
    return out


def median_seconds(fn, args, per_call):
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    seconds = []
    for _ in range(5):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        seconds.append((time.perf_counter() - t0) / per_call)
    return float(np.median(seconds))


def measure(rounds):
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    from jaxnn import throughput  # noqa: PLC0415
    from jaxnn_lab.bench import machine, spread  # noqa: PLC0415

    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    x, dy = jax.random.normal(k1, (N, H, H, C)), jax.random.normal(k2, (N, H, H, F))
    forms = formulations()
    reference = forms["taps (Conv2D's CPU default)"](x, dy)
    compiled = {}
    for name, f in tqdm(forms.items(), desc="compiling", leave=False):
        assert np.allclose(f(x, dy), reference, rtol=1e-4, atol=1e-2), name  # the same gradient
        compiled[name] = programs(f, x, dy)
    times = {name: {"scan": [], "call": []} for name in forms}
    ceilings = []
    for _ in tqdm(range(rounds), desc="rounds"):
        ceilings.append(throughput.measure_ceiling())
        for name, (scanned, once) in compiled.items():
            times[name]["scan"].append(median_seconds(scanned, (x, dy), IN_SCAN))
            times[name]["call"].append(median_seconds(once, (x, dy), 1))
    result = {
        "machine": machine(),
        "config": {"rounds": rounds, "shape": {"x": [N, H, H, C], "dy": [N, H, H, F]}, "flops": FLOPS},
        "matmul_ceiling_gflops": spread(ceilings),
        "formulations": {},
    }
    for name, t in times.items():
        result["formulations"][name] = {
            mode: {"seconds": spread(t[mode]), "gflops": spread(FLOPS / np.array(t[mode]) / 1e9)}
            for mode in ("scan", "call")
        }
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default=os.path.join(HERE, "results", "cpu", "conv_weight_grad.json"))
    args = p.parse_args()
    if args.rounds < 1:
        sys.exit("error: --rounds must be at least 1")
    import jaxnn as nn  # noqa: PLC0415

    nn.reuse_host_memory()  # first thing: a call's page faults out of the comparison
    from jaxnn_lab.bench import write_json  # noqa: PLC0415

    result = measure(args.rounds)
    write_json(args.out, result)
    print(f"matmul ceiling {result['matmul_ceiling_gflops']['median']:.0f} GFLOP/s")
    for name, r in result["formulations"].items():
        print(
            f"{name:45s} scan {1e3 * r['scan']['seconds']['median']:7.2f} ms "
            f"({r['scan']['gflops']['median']:5.0f} GFLOP/s)   "
            f"call {1e3 * r['call']['seconds']['median']:7.2f} ms "
            f"({r['call']['gflops']['median']:5.0f} GFLOP/s)"
        )


if __name__ == "__main__":
    main()
