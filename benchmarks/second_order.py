"""The deep autoencoder (Hinton & Salakhutdinov 2006; Martens 2010; Martens & Grosse 2015) trained by
Adam, SGD with momentum, jaxnn's K-FAC (`jaxnn.curvature.kfac`) and kfac-jax, each for the same
wall-clock budget on the same data from the same initial parameters.

    python benchmarks/second_order.py --data-dir ../shared/data/mnist [--examples 2000]
        [--seconds 60] [--kfac-jax-python PATH] [--out FILE] [--figure PNG]
    python benchmarks/second_order.py --redraw FILE --figure PNG     # the figure of a committed result

The model and loss of kfac-jax's examples/autoencoder_mnist: 784-1000-500-250-30-250-500-1000-784,
tanh after every layer but the 30-unit code and the output, sigmoid cross-entropy summed over the
pixels and averaged over the images (jaxnn's `binary_cross_entropy`), no weight decay. Training is
full-batch (deterministic) on the first N training images, as that example trains on all 60,000;
at N = 2,000 one step fits this 2-core CPU's budget. Each run is a process of its own, one after
the other; the first step (compilation) is not timed. Adam and SGD with momentum are tuned by the
small sweep given in SWEEPS (committed with the result). Both K-FACs choose their own learning
rate and momentum (the quadratic model) and adapt their damping, with kfac-jax's example settings
(moving average 0.95, inverses every 5 steps, damping adapted every 5); jaxnn's is tuned by a
sweep of the initial damping (the example's 150 among them), and kfac-jax runs with the best.

kfac-jax runs in its own interpreter (`--kfac-jax-python`), in an environment where it imports:
kfac-jax 0.0.8 does not run on jax 0.10 (its graph matcher unpacks `get_bind_params`, whose result
changed). That environment also runs jaxnn's K-FAC once more, so that the per-step cost is compared
on one jax version. One way to make it (jaxnn itself comes from this checkout, by PYTHONPATH):

    python -m venv /tmp/kfac-jax && /tmp/kfac-jax/bin/pip install kfac-jax==0.0.8 jax==0.6.2 \
        jaxlib==0.6.2 tqdm
    python benchmarks/second_order.py ... --kfac-jax-python /tmp/kfac-jax/bin/python
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

KFAC_OTHER_JAX = "kfac, on kfac-jax's jax"
SIZES = (784, 1000, 500, 250, 30, 250, 500, 1000, 784)
SWEEPS = {"adam": (3e-4, 1e-3, 3e-3), "momentum": (0.001, 0.003, 0.01, 0.03), "kfac": (1.0, 10.0, 150.0)}
"""Adam's and SGD's learning rates; K-FAC's initial damping (it chooses its own rate)."""
KFAC = dict(
    damping=150.0, ema=0.95, inverse_every=5, adapt_damping_every=5, min_damping=1e-5, max_damping=1000.0
)


def images(data_dir, n):
    from jaxnn import data  # noqa: PLC0415

    ds = data.load("mnist", data_dir, dtype="uint8")
    return (ds.x_train[:n].reshape(n, 784) / 255.0).astype(np.float32)


def autoencoder():
    import jaxnn as nn  # noqa: PLC0415

    layers = []
    for i, width in enumerate(SIZES[1:]):
        layers.append(nn.Dense(width))
        if i not in (3, len(SIZES) - 2):  # no tanh after the code layer (30 units) and the output
            layers.append(nn.activation("tanh"))
    return nn.serial(*layers)


def squared_error(model, params, x):
    """Martens (2010)'s measure: the squared error per image, sum over pixels of (sigmoid(z) - x)^2."""
    import jax  # noqa: PLC0415

    out = jax.nn.sigmoid(model.apply(params, x))
    return float(((out - x) ** 2).sum(1).mean())


def train_for(step, state, x, seconds, max_steps):
    """Run `state, loss = step(state)` for `seconds` after one untimed (compiling) step; returns the
    state and the rows (step, seconds, loss)."""
    import jax  # noqa: PLC0415

    state, loss = step(state)
    rows = [(1, 0.0, float(loss))]
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds and len(rows) < max_steps:
        state, loss = step(state)
        loss = float(jax.block_until_ready(loss))
        rows.append((len(rows) + 1, time.perf_counter() - t0, loss))
        if not np.isfinite(loss):
            break
    return state, rows


def run_jaxnn(name, lr, x, seconds, max_steps):
    import jax  # noqa: PLC0415

    import jaxnn as nn  # noqa: PLC0415
    from jaxnn import curvature as cv  # noqa: PLC0415
    from jaxnn import train  # noqa: PLC0415

    model, loss = autoencoder(), nn.losses.binary_cross_entropy
    if name == "kfac":  # lr is the initial damping here
        opt = cv.kfac(None, **{**KFAC, "damping": lr})
    else:
        opt = train.optimizer(name, lr, momentum=0.9)
    _, params = model.init(jax.random.PRNGKey(0), (784,))  # the initial parameters of every run
    state = train.init_state(model, opt, jax.random.PRNGKey(0), (784,))
    state = state._replace(params=params, opt_state=opt.init(params))
    step_fn = jax.jit(train.make_step(model, loss, opt, None), donate_argnums=0)
    xs = jax.device_put(x)

    def step(s):
        s, metrics = step_fn(s, xs, xs)
        return s, metrics.loss

    state, rows = train_for(step, state, xs, seconds, max_steps)
    return {"rows": rows, "squared_error": squared_error(model, state.params, xs), "jax": jax.__version__}


def run_kfac_jax(damping, x, seconds, max_steps):
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import kfac_jax  # noqa: PLC0415

    model = autoencoder()
    _, params = model.init(jax.random.PRNGKey(0), (784,))  # jaxnn's initial parameters
    dense = [p for p in params if p != ()]

    def apply(ps, batch):
        h = batch
        for i, p in enumerate(ps):
            h = h @ p["w"] + p["b"]
            if i not in (3, len(ps) - 1):
                h = jnp.tanh(h)
        return h

    def loss_fn(ps, batch):
        logits = apply(ps, batch)
        kfac_jax.register_sigmoid_cross_entropy_loss(logits, batch)
        return jnp.sum(jnp.logaddexp(logits, 0) - batch * logits) / batch.shape[0]

    kw = {k: KFAC[k] for k in ("min_damping", "max_damping")}
    opt = kfac_jax.Optimizer(
        value_and_grad_func=jax.value_and_grad(loss_fn),
        l2_reg=0.0,
        use_adaptive_learning_rate=True,
        use_adaptive_momentum=True,
        use_adaptive_damping=True,
        initial_damping=damping,
        curvature_ema=KFAC["ema"],
        inverse_update_period=KFAC["inverse_every"],
        damping_adaptation_interval=KFAC["adapt_damping_every"],
        damping_adaptation_decay=0.95,
        num_burnin_steps=0,
        multi_device=False,
        **kw,
    )
    xs = jax.device_put(x)
    key = jax.random.PRNGKey(1)
    opt_state = opt.init(dense, key, xs)
    count = [0]

    def step(s):
        ps, st = s
        ps, st, stats = opt.step(ps, st, key, batch=xs, global_step_int=count[0])
        count[0] += 1
        return (ps, st), stats["loss"]

    (final, _), rows = train_for(step, (dense, opt_state), xs, seconds, max_steps)
    out = jax.nn.sigmoid(apply(final, xs))
    error = float(((out - xs) ** 2).sum(1).mean())
    return {"rows": rows, "squared_error": error, "jax": jax.__version__, "kfac_jax": kfac_jax.__version__}


def child(python, spec, args):
    command = [python, os.path.abspath(__file__), "--child", spec, "--data-dir", args.data_dir]
    command += [
        "--examples",
        str(args.examples),
        "--seconds",
        str(args.seconds),
        "--max-steps",
        str(args.max_steps),
    ]
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(result):
    """Each run's final loss and per-step time, the tuned baselines, and the goal's ratios."""
    runs = result["runs"]
    for run in runs.values():
        rows = run["rows"]
        run["final_loss"] = rows[-1][2]
        run["steps"] = len(rows)
        times = np.diff([r[1] for r in rows])
        run["seconds_per_step"] = float(np.median(times)) if len(times) else None
    best = {}
    for name in SWEEPS:
        tried = {k: v for k, v in runs.items() if k.startswith(f"{name} ") and np.isfinite(v["final_loss"])}
        best[name] = min(tried, key=lambda k: tried[k]["final_loss"]) if tried else None
    result["best"] = best
    adam, kfac = runs.get(best["adam"] or ""), runs.get(best["kfac"] or "")
    ratios = {}
    if adam and kfac:  # the time jaxnn's K-FAC needs to reach Adam's final loss
        reached = [r[1] for r in kfac["rows"] if r[2] <= adam["final_loss"]]
        ratios["kfac_time_to_adam_final_over_adam_time"] = (
            (reached[0] / adam["rows"][-1][1]) if reached else None
        )
    theirs, ours = runs.get("kfac-jax"), runs.get(KFAC_OTHER_JAX)
    if theirs and ours:
        n = min(len(theirs["rows"]), len(ours["rows"]))
        gaps = [abs(a[2] - b[2]) / b[2] for a, b in zip(ours["rows"][:n], theirs["rows"][:n])]
        ratios["loss_gap_to_kfac_jax_at_equal_steps"] = {
            "median": float(np.median(gaps)),
            "max": float(max(gaps)),
        }
        ratios["step_cost_over_kfac_jax"] = ours["seconds_per_step"] / theirs["seconds_per_step"]
    result["ratios"] = ratios
    return result


def is_swept(name):
    """Whether a run is one of a sweep's ("adam 0.001", "kfac 150", ...)."""
    return any(name.startswith(f"{sweep} ") for sweep in SWEEPS)


def legend(name, result):
    """A run's label for a reader: the optimizer and its setting."""
    kind, _, value = name.partition(" ")
    if kind == "adam":
        return f"Adam, lr {value}"
    if kind == "momentum":
        return f"SGD with momentum 0.9, lr {value}"
    if kind == "kfac":
        return f"jaxnn's K-FAC, initial damping {value}"
    if name == "kfac-jax":
        return f"kfac-jax, initial damping {result.get('kfac_jax_damping', '?'):g} (jax 0.6.2)"
    return f"jaxnn's K-FAC, initial damping {result.get('kfac_jax_damping', '?'):g} (jax 0.6.2)"


def draw(result, path):
    from jaxnn_lab import plots  # noqa: PLC0415

    plt = plots._plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for name, run in result["runs"].items():
        if is_swept(name) and name not in result["best"].values():
            continue
        rows = np.asarray(run["rows"])
        axes[0].plot(rows[:, 1], rows[:, 2], label=legend(name, result))
        axes[1].plot(rows[:, 0], rows[:, 2], label=legend(name, result))
    for ax, xlabel in zip(axes, ("seconds (after the first, compiling step)", "step")):
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("training loss (sigmoid cross-entropy per image)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"deep autoencoder, full batch of {result['examples']} MNIST images (each sweep's best)")
    return plots._save(fig, path)


def report(label, run):
    rows = run["rows"]
    print(f"{label:28s} loss {rows[-1][2]:9.3f} after {len(rows)} steps, {rows[-1][1]:.0f} s", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.path.join("..", "shared", "data", "mnist"))
    p.add_argument("--examples", type=int, default=2000)
    p.add_argument("--seconds", type=float, default=60.0, help="each run's training budget")
    p.add_argument("--max-steps", type=int, default=100000)
    p.add_argument("--kfac-jax-python", default=None, help="an interpreter where kfac_jax imports")
    p.add_argument("--out", default=None)
    p.add_argument("--figure", default=None)
    p.add_argument("--redraw", default=None, metavar="FILE")
    p.add_argument(
        "--keep",
        default=None,
        metavar="FILE",
        help="keep the runs of this earlier result (same data and budget)",
    )
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.redraw:
        with open(args.redraw) as f:
            print(draw(json.load(f), args.figure or "second_order.png"))
        return
    if args.child:  # "jaxnn:adam:0.001", "jaxnn:kfac:150" (the initial damping), "kfac-jax:150"
        x = images(args.data_dir, args.examples)
        if args.child.startswith("kfac-jax:"):
            found = run_kfac_jax(float(args.child.split(":")[1]), x, args.seconds, args.max_steps)
        else:
            _, name, lr = args.child.split(":")
            found = run_jaxnn(name, float(lr), x, args.seconds, args.max_steps)
        print(json.dumps(found))
        return
    from jaxnn_lab.bench import machine, write_json  # noqa: PLC0415

    result = {"examples": args.examples, "seconds": args.seconds, "sweeps": SWEEPS, "kfac": KFAC}
    result.update(machine=machine(), runs={})
    if args.keep:  # runs measured before with the same settings (a sweep widened afterwards)
        with open(args.keep) as f:
            earlier = json.load(f)
        if (earlier["examples"], earlier["seconds"]) != (args.examples, args.seconds):
            sys.exit(f"error: {args.keep} was measured on other data or for another budget")
        result["runs"] = earlier["runs"]
        result["kept"] = {"from": earlier.get("machine", {}), "runs": sorted(earlier["runs"])}
    specs = [(f"{name} {lr:g}", f"jaxnn:{name}:{lr}") for name, rates in SWEEPS.items() for lr in rates]
    for label, spec in specs:
        if label not in result["runs"]:
            result["runs"][label] = child(sys.executable, spec, args)
            write_json(args.out, result)  # each run as it ends: a later failure keeps the earlier ones
        report(label, result["runs"][label])
    if args.kfac_jax_python:  # at the best initial damping of jaxnn's sweep, both on kfac-jax's jax
        damping = min(SWEEPS["kfac"], key=lambda d: result["runs"][f"kfac {d:g}"]["rows"][-1][2])
        result["kfac_jax_damping"] = damping
        for label, spec in (("kfac-jax", f"kfac-jax:{damping}"), (KFAC_OTHER_JAX, f"jaxnn:kfac:{damping}")):
            if label not in result["runs"]:
                result["runs"][label] = child(args.kfac_jax_python, spec, args)
                write_json(args.out, result)
            report(label, result["runs"][label])
    summarise(result)
    print(json.dumps(result["ratios"], indent=1), flush=True)
    write_json(args.out, result)
    if args.figure:
        draw(result, args.figure)


if __name__ == "__main__":
    main()
