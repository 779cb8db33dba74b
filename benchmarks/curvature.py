"""Curvature by hand: each quantity of jaxnn.curvature against one plain gradient, the autodiff way
in JAX (vmap of grad; per-example Jacobians for the GGN's diagonal), and BackPACK on the same model.

    python benchmarks/curvature.py [--batch 128] [--rounds 7] [--out FILE] [--figure PNG]
    python benchmarks/curvature.py --redraw FILE --figure PNG     # the figure of a committed result

The MLP 784-512-512-10 and the small MNIST CNN (16-32 channels, Dense 128), ReLU, softmax
cross-entropy, batch 128 of random images. jaxnn runs in a process of its own that opts in to
`nn.reuse_host_memory()` first (PyTorch's allocator keeps freed memory; XLA's allocations on the
CPU do too after the opt-in), timing in turns its gradient and its quantity, then the autodiff way
(where it fits in memory) in rounds of its own. BackPACK runs in a process of its own, timing
PyTorch's plain backward pass in the same turns. Medians with their spread.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import warnings

QUANTITIES = (
    "batch_grad",
    "batch_l2",
    "sum_grad_squared",
    "variance",
    "diag_ggn_mc",
    "kfac",
    "diag_ggn",
    "kflr",
    "diag_hessian",
)
BACKPACK = {
    "batch_grad": "BatchGrad",
    "batch_l2": "BatchL2Grad",
    "sum_grad_squared": "SumGradSquared",
    "variance": "Variance",
    "diag_ggn_mc": "DiagGGNMC",
    "kfac": "KFAC",
    "diag_ggn": "DiagGGNExact",
    "kflr": "KFLR",
    "diag_hessian": "DiagHessian",
}
AUTODIFF = ("batch_grad", "batch_l2", "sum_grad_squared", "variance", "diag_ggn_mc", "diag_ggn")
"""The quantities the autodiff way computes here (the Hessian's diagonal would need P x P numbers,
and the Kronecker factors have no autodiff form)."""


def jaxnn_model(name):
    import jaxnn as nn  # noqa: PLC0415

    if name == "mlp":
        return nn.mlp([784, 512, 512, 10]), (784,)
    return nn.models.cnn(10, (28, 28, 1), channels=(16, 32)), (28, 28, 1)


def spread_of(values):
    from jaxnn_lab.bench import spread  # noqa: PLC0415

    return spread(values)


def time_once(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def measure_jaxnn(name, batch, rounds):
    import jaxnn as nn  # noqa: PLC0415

    assert nn.reuse_host_memory(), "reuse_host_memory declined"  # first, before any array
    import jax  # noqa: PLC0415

    from jaxnn import curvature as cv  # noqa: PLC0415

    model, shape = jaxnn_model(name)
    loss = nn.losses.softmax_cross_entropy
    _, params = model.init(jax.random.PRNGKey(0), shape)
    x = jax.random.uniform(jax.random.PRNGKey(1), (batch,) + shape)
    y = jax.random.randint(jax.random.PRNGKey(2), (batch,), 0, 10)
    key = jax.random.PRNGKey(3)
    grad = nn.jit(nn.value_and_grad(model, loss), model)

    def runner(f):
        return lambda: jax.block_until_ready(f(params, x, y, key=key))

    result = {"grad": [], "quantities": {}}
    grad_run = lambda: jax.block_until_ready(grad(params, x, y))  # noqa: E731
    grad_run()
    for q in QUANTITIES:
        ways = {"jaxnn": runner(nn.jit(cv.value_and_grad_with(model, loss, q), model))}
        if q in AUTODIFF:
            ways["autodiff"] = runner(nn.jit(cv.value_and_grad_with(model, loss, q, mode="autodiff"), model))
        times = {way: [] for way in ways}
        times["grad"] = []
        for f in ways.values():  # compile and warm up
            f()
        for _ in range(rounds):  # in turns with the gradient
            times["grad"].append(time_once(grad_run))
            times["jaxnn"].append(time_once(ways["jaxnn"]))
        if "autodiff" in ways:  # alone: its memory traffic would slow what runs after it
            times["autodiff"] = [time_once(ways["autodiff"]) for _ in range(max(3, rounds // 2))]
        row = {way: spread_of(t) for way, t in times.items()}
        row["jaxnn_over_grad"] = row["jaxnn"]["median"] / row["grad"]["median"]
        if "autodiff" in row:
            row["autodiff_over_jaxnn"] = row["autodiff"]["median"] / row["jaxnn"]["median"]
        result["quantities"][q] = row
        jaxnn_ms = 1e3 * row["jaxnn"]["median"]
        print(
            f"{name} {q:17s} jaxnn {jaxnn_ms:8.2f} ms = {row['jaxnn_over_grad']:5.2f}x grad"
            + (f"; autodiff {row['autodiff_over_jaxnn']:6.1f}x slower" if "autodiff" in row else ""),
            file=sys.stderr,
            flush=True,
        )
    return result


def torch_model(name):
    import torch  # noqa: PLC0415

    nn = torch.nn
    if name == "mlp":
        return nn.Sequential(
            nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
        )
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )  # fmt: skip


def measure_backpack(name, batch, rounds):
    """In a process of its own: PyTorch's backward pass and BackPACK's, in turns."""
    import backpack  # noqa: PLC0415
    import backpack.extensions as extensions  # noqa: PLC0415
    import torch  # noqa: PLC0415

    warnings.filterwarnings("ignore", message="Full backward hook")  # BackPACK's hooks on inputs
    torch.manual_seed(0)
    model = backpack.extend(torch_model(name))
    loss_fn = backpack.extend(torch.nn.CrossEntropyLoss())
    shape = (batch, 784) if name == "mlp" else (batch, 1, 28, 28)
    x, y = torch.rand(shape), torch.randint(0, 10, (batch,))

    def plain():
        model.zero_grad()
        loss_fn(model(x), y).backward()

    result = {"grad": [], "quantities": {}}
    for q in QUANTITIES:
        extension = getattr(extensions, BACKPACK[q])()

        def extended(extension=extension):
            model.zero_grad()
            with backpack.backpack(extension):
                loss_fn(model(x), y).backward()

        try:
            extended()
        except Exception as e:  # an extension BackPACK does not support for this model
            result["quantities"][q] = {"error": f"{type(e).__name__}: {e}"[:300]}
            continue
        plain()
        times = {"backpack": [], "torch_grad": []}
        for _ in range(rounds):
            times["torch_grad"].append(time_once(plain))
            times["backpack"].append(time_once(extended))
        row = {way: spread_of(t) for way, t in times.items()}
        row["backpack_over_torch_grad"] = row["backpack"]["median"] / row["torch_grad"]["median"]
        result["quantities"][q] = row
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), **result}


def draw(result, path):
    """Each quantity's time on a log axis, jaxnn beside BackPACK and the autodiff way, one panel per
    model, with one jaxnn gradient's time as a dashed line."""
    from jaxnn_lab import plots  # noqa: PLC0415

    plt = plots._plt()
    models = list(result["models"])
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.6), squeeze=False)
    ways = (("jaxnn", "jaxnn.curvature", "tab:blue"), ("backpack", "BackPACK", "tab:orange"))
    ways += (("autodiff", "autodiff in JAX", "tab:gray"),)
    for ax, model in zip(axes[0], models):
        rows = result["models"][model]["quantities"]
        names = list(rows)[::-1]
        for k, (way, label, colour) in enumerate(ways):
            values = []
            for q in names:
                r = rows[q]
                found = r["backpack"].get("backpack") if way == "backpack" else r.get(way)
                values.append(1e3 * found["median"] if found else float("nan"))
            positions = [i + (k - 1) * 0.27 for i in range(len(names))]
            ax.barh(positions, values, height=0.26, color=colour, label=label)
        grad = 1e3 * sum(r["grad"]["median"] for r in rows.values()) / len(rows)
        ax.axvline(grad, color="black", ls="--", lw=1, label=f"one jaxnn gradient ({grad:.1f} ms)")
        ax.set_xscale("log")
        ax.set_yticks(range(len(names)), names, fontsize=9)
        ax.set_xlabel(f"ms per call, batch {result['batch']} (log scale)")
        titles = {"mlp": "MLP 784-512-512-10", "cnn": "CNN 16-32 channels"}
        ax.set_title(titles.get(model, model), fontsize=11)
        ax.grid(axis="x", which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(
        "No autodiff bar: no autodiff form (kflr, kfac) or a P x P Hessian (diag_hessian)", fontsize=10
    )
    return plots._save(fig, path)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--models", nargs="+", default=["mlp", "cnn"], choices=["mlp", "cnn"])
    p.add_argument("--out", default=None)
    p.add_argument("--figure", default=None, help="also draw the result as this PNG")
    p.add_argument(
        "--redraw", default=None, metavar="FILE", help="draw the figure of a result file, run nothing"
    )
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:  # "backpack:mlp", "jaxnn:cnn", ...
        side, name = args.child.split(":")
        measure = measure_backpack if side == "backpack" else measure_jaxnn
        print(json.dumps(measure(name, args.batch, args.rounds)))
        return
    if args.redraw:
        with open(args.redraw) as f:
            print(draw(json.load(f), args.figure or "curvature.png"))
        return
    from jaxnn_lab.bench import machine, write_json  # noqa: PLC0415

    result = {"batch": args.batch, "rounds": args.rounds, "machine": machine(), "models": {}}

    def child(side, name):
        command = [sys.executable, os.path.abspath(__file__), "--child", f"{side}:{name}"]
        command += ["--batch", str(args.batch), "--rounds", str(args.rounds)]
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    for name in args.models:
        backpack_result = child("backpack", name)
        found = child("jaxnn", name)
        for q, row in found["quantities"].items():
            theirs = backpack_result["quantities"][q]
            row["backpack"] = theirs
            if "backpack" in theirs:
                row["backpack_over_jaxnn"] = theirs["backpack"]["median"] / row["jaxnn"]["median"]
                print(f"{name} {q:17s} BackPACK / jaxnn {row['backpack_over_jaxnn']:5.2f}", flush=True)
        result["models"][name] = {"quantities": found["quantities"], "torch": backpack_result["torch"]}
    write_json(args.out, result)
    if args.figure:
        draw(result, args.figure)


if __name__ == "__main__":
    main()
