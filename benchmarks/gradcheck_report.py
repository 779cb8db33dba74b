"""The largest relative errors of every hand rule in the test suite's gradient table, in float64:
vs jax.grad and vs central finite differences, over a few random shapes per op.

    python benchmarks/gradcheck_report.py [--seeds 3] [--out FILE]
"""

import argparse
import json

import jax

from jaxnn import gradcheck
from jaxnn_lab import gradient_table as table  # the one table the tests use


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    rows = {}
    with jax.enable_x64(True):
        for name in sorted(table.LAYERS):
            worst = [0.0, 0.0]
            for seed in range(args.seeds):
                layer, params, x = table.build(name, (2 + seed,), 2 + seed, seed, away_from_kinks=True)
                r = gradcheck.check_layer(
                    layer, params, x, key=jax.random.fold_in(jax.random.PRNGKey(seed), 1)
                )
                worst = [max(worst[0], r.max_vs_autodiff), max(worst[1], r.max_vs_finite_diff)]
            rows[name] = worst
        for name in sorted(table.LOSSES):
            worst = [0.0, 0.0]
            for seed in range(args.seeds):
                loss, pred, target = table.LOSSES[name](3 + seed, 4 + seed, jax.random.PRNGKey(seed))
                r = gradcheck.check_loss(loss, pred, target)
                worst = [max(worst[0], r.max_vs_autodiff), max(worst[1], r.max_vs_finite_diff)]
            rows["loss: " + name] = worst
    for name, (a, f) in rows.items():
        print(f"{name:45s} vs jax.grad {a:9.2e}   vs finite differences {f:9.2e}")
    summary = {
        "max_vs_autodiff": max(a for a, _ in rows.values()),
        "max_vs_finite_diff": max(f for _, f in rows.values()),
        "rows": rows,
    }
    print(
        f"largest: vs jax.grad {summary['max_vs_autodiff']:.2e}, vs finite differences "
        f"{summary['max_vs_finite_diff']:.2e} ({len(rows)} ops)"
    )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
