"""Ensembles by vmap: K MLPs (different seeds and learning rates) trained at once in one compiled
step on MNIST, each model's accuracy and the ensemble's (mean of the K softmax outputs), and the
time against training the K models one after another (both compiled ahead of time, so the
times compare training alone; compile times are reported beside them).

    python experiments/ensemble.py --data-dir ../shared/data/mnist [--k 8] [--epochs 4] [--out DIR]
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxnn as nn
from jaxnn import data, train
from jaxnn_lab.cli import cli, out_dir, parser, write_metrics


def main():
    p = parser(__doc__, epochs=4)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--width", type=int, default=256)
    args = p.parse_args()
    folder = out_dir(args.out, "ensemble")
    ds = data.load("mnist", data_dir=args.data_dir, dtype="uint8")
    images, labels = jax.device_put(ds.x_train), jax.device_put(ds.y_train)
    model = nn.mlp([784, args.width, args.width, 10])
    loss = nn.losses.softmax_cross_entropy
    lrs = np.geomspace(1e-3, 4e-3, args.k).astype(np.float32)  # one peak learning rate per member
    steps = args.epochs * (len(images) // 128)
    keys = jax.random.split(jax.random.PRNGKey(args.seed), args.k)
    # Adam with a one-cycle schedule (peak 1) times each member's own peak rate, held in the state
    sched = optax.cosine_onecycle_schedule(steps, 1.0)
    scheduled = optax.chain(
        optax.scale_by_adam(),
        optax.inject_hyperparams(optax.scale)(step_size=-1.0),
        optax.scale_by_schedule(sched),
    )

    # --- K models in one compiled step ---
    states = train.init_ensemble(model, scheduled, keys, (784,))
    states = states._replace(opt_state=_set_rates(states.opt_state, -lrs))
    t0 = time.perf_counter()
    ensemble_epoch = (
        train.make_ensemble_epoch(model, loss, scheduled, 128, (784,)).lower(states, images, labels).compile()
    )
    vmapped_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.epochs):
        states, metrics = ensemble_epoch(states, images, labels)
        losses = metrics.loss
    jax.block_until_ready(losses)
    vmapped_seconds = time.perf_counter() - t0

    # --- the same K models one after another ---
    fresh = train.init_ensemble(model, scheduled, keys, (784,))
    members = [jax.tree_util.tree_map(lambda a, i=i: a[i], fresh) for i in range(args.k)]
    members = [m._replace(opt_state=_set_rates(m.opt_state, -lr)) for m, lr in zip(members, lrs)]
    t0 = time.perf_counter()
    single_epoch = (
        train.make_epoch(model, loss, scheduled, 128, (784,)).lower(members[0], images, labels).compile()
    )
    separate_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    separate = []
    for state in members:
        for _ in range(args.epochs):
            state, metrics = single_epoch(state, images, labels)
            losses = metrics.loss
        separate.append(state)
    jax.block_until_ready(losses)
    separate_seconds = time.perf_counter() - t0

    x_test = jnp.asarray(ds.x_test.reshape(-1, 784), jnp.float32) / 255
    logits = jax.vmap(model.apply, in_axes=(0, None))(states.params, x_test)  # (K, n, 10)
    each = np.asarray(jnp.mean(jnp.argmax(logits, -1) == ds.y_test, axis=1))
    probs = jnp.mean(jax.nn.softmax(logits, -1), axis=0)
    ensemble_acc = float(jnp.mean(jnp.argmax(probs, -1) == ds.y_test))
    # the separate runs do the same arithmetic in another order: after thousands of float32 Adam
    # steps the weights differ, so compare what matters, each member's accuracy both ways
    separate_acc = [
        float(jnp.mean(jnp.argmax(model.apply(s.params, x_test), -1) == ds.y_test)) for s in separate
    ]
    result = {
        "members": [
            {"peak_lr": float(lr), "test_accuracy": float(a), "test_accuracy_trained_separately": b}
            for lr, a, b in zip(lrs, each, separate_acc)
        ],
        "ensemble_test_accuracy": ensemble_acc,
        "vmapped_seconds": vmapped_seconds,
        "separate_seconds": separate_seconds,
        "speedup_vmapped_vs_separate": separate_seconds / vmapped_seconds,
        "compile_seconds": {"vmapped": vmapped_compile, "separate": separate_compile},
        "config": vars(args),
    }
    write_metrics(folder, result)
    for m in result["members"]:
        print(
            f"peak lr {m['peak_lr']:.4f}: test accuracy {m['test_accuracy']:.4f} "
            f"(trained separately: {m['test_accuracy_trained_separately']:.4f})"
        )
    print(
        f"ensemble of {args.k}: {ensemble_acc:.4f}; "
        f"training (compiled beforehand) vmapped {vmapped_seconds:.2f} s "
        f"vs separate {separate_seconds:.2f} s ({result['speedup_vmapped_vs_separate']:.2f}x); compile "
        f"{vmapped_compile:.2f} s vs {separate_compile:.2f} s -> {folder}"
    )


def _set_rates(opt_state, rates):
    """Put each member's (negative) step size into the inject_hyperparams state."""
    adam_state, scale_state, schedule_state = opt_state
    hyper = dict(scale_state.hyperparams)
    hyper["step_size"] = jnp.asarray(rates, jnp.float32).reshape(jnp.shape(hyper["step_size"]))
    return (adam_state, scale_state._replace(hyperparams=hyper), schedule_state)


if __name__ == "__main__":
    cli(main)
