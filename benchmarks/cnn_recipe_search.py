"""The CNN recipes tried for time to 99.3% on MNIST (issue 10), three seeds each, one JSON line per run.

    python benchmarks/cnn_recipe_search.py --data-dir ../shared/data/mnist > results.jsonl

Each run: models.cnn with the given channels (Dense 128, no Dropout, optional BatchNorm), Adam with
a one-cycle schedule, batch 128, `train.fit` without per-epoch evaluation; train_seconds includes
compilation. The raw lines behind the README's table are benchmarks/results/cpu/cnn_recipe_search.jsonl.
"""

import argparse
import json

import jax

import jaxnn as nn
from jaxnn import data, train

RECIPES = [
    dict(channels=(32, 64), epochs=2, batch=128, lr=3e-3),
    dict(channels=(32, 64), epochs=2, batch=128, lr=3e-3, bn=True),
    dict(channels=(16, 32), epochs=3, batch=128, lr=3e-3, bn=True),
    dict(channels=(16, 32), epochs=3, batch=128, lr=3e-3),
]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args()
    ds = data.load("mnist", data_dir=args.data_dir, dtype="uint8")
    for cfg in RECIPES:
        for seed in args.seeds:
            model, shape = nn.models.cnn(
                10, (28, 28, 1), batchnorm=cfg.get("bn", False), channels=cfg["channels"]
            )
            opt = train.optimizer("adam", cfg["lr"], "onecycle", cfg["epochs"] * (60000 // cfg["batch"]))
            _, history = train.fit(
                model,
                nn.losses.softmax_cross_entropy,
                (ds.x_train, ds.y_train, ds.x_test, ds.y_test),
                epochs=cfg["epochs"],
                batch_size=cfg["batch"],
                opt=opt,
                key=jax.random.PRNGKey(seed),
                input_shape=shape,
                progress=False,
                eval_every_epoch=False,
            )
            row = dict(cfg=cfg, seed=seed, acc=round(history["epochs"][-1]["test_accuracy"], 4))
            row.update(secs=round(history["train_seconds"], 1), compile=round(history["compile_seconds"], 2))
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
