"""The recipes tried for time to accuracy on MNIST (issue 10), three seeds each, one JSON line per run.

    python benchmarks/recipe_search.py --model cnn|mlp --data-dir ../shared/data/mnist > results.jsonl

cnn (time to 99.3%): models.cnn with the given channels (Dense `dense`, 128 unless given; no
Dropout; optional BatchNorm); mlp (>= 98.0% on every seed at 8x the reference's speed): MLP
784-width-width-10.
Adam (or the recipe's `opt`) with a one-cycle schedule to the peak lr (AdamW when the recipe
has a weight decay `wd`),
optionally label smoothing `smooth` and random shifts of up to `shift` pixels (jaxnn.augment);
`train.fit` without per-epoch evaluation;
train_seconds includes compilation. The raw lines behind the README's tables are
benchmarks/results/cpu/{cnn,mlp}_recipe_search.jsonl.
"""

import argparse
import json

import jaxnn as nn
from jaxnn import data, train
from jaxnn_lab.bench import fit_quietly

RECIPES = {
    "cnn": [
        dict(channels=(32, 64), epochs=2, batch=128, lr=3e-3),
        dict(channels=(32, 64), epochs=2, batch=128, lr=3e-3, bn=True),
        dict(channels=(16, 32), epochs=3, batch=128, lr=3e-3, bn=True),
        dict(channels=(16, 32), epochs=3, batch=128, lr=3e-3),
        dict(channels=(16, 32), epochs=3, batch=128, lr=6e-3, bn=True),
        dict(channels=(16, 32), epochs=3, batch=128, lr=6e-3),
        dict(channels=(16, 32), epochs=3, batch=256, lr=6e-3),
        dict(channels=(16, 32), epochs=3, batch=256, lr=8e-3, bn=True),
        dict(channels=(24, 48), epochs=2, batch=128, lr=4e-3),
        dict(channels=(16, 32), epochs=3, batch=128, lr=8e-3),
        dict(channels=(16, 32), epochs=3, batch=128, lr=1e-2),
        dict(channels=(16, 32), epochs=3, batch=128, lr=5e-3),
        dict(channels=(16, 32), epochs=3, batch=128, lr=7e-3),
        dict(channels=(20, 40), epochs=3, batch=128, lr=6e-3),
        dict(channels=(16, 32), epochs=3, batch=96, lr=5e-3),
        dict(channels=(16, 32), epochs=4, batch=256, lr=8e-3),
        dict(channels=(16, 32), epochs=4, batch=128, lr=6e-3),
        dict(channels=(24, 48), epochs=3, batch=128, lr=6e-3),
        dict(channels=(16, 32), epochs=4, batch=192, lr=8e-3),
        dict(channels=(16, 32), epochs=3, batch=128, lr=6e-3, dense=256),
        dict(channels=(16, 48), epochs=3, batch=128, lr=6e-3),
        dict(channels=(24, 32), epochs=3, batch=128, lr=6e-3),
        dict(channels=(16, 32), epochs=3, batch=128, lr=6e-3, smooth=0.1),
        dict(channels=(16, 32), epochs=3, batch=128, lr=6e-3, wd=1e-4),
        dict(channels=(16, 32), epochs=3, batch=128, lr=6e-3, shift=1),
        dict(channels=(16, 32), epochs=3, batch=128, lr=6e-3, shift=1, smooth=0.1),
        dict(channels=(16, 32), epochs=3, batch=128, lr=6e-3, shift=1, dense=256),
        dict(channels=(16, 32), epochs=3, batch=128, lr=6e-3, shift=2),
    ],
    "mlp": [dict(width=256, epochs=3, batch=256, lr=lr) for lr in (3e-3, 5e-3, 6e-3)]
    + [dict(width=256, epochs=3, batch=512, lr=lr) for lr in (8e-3, 1.2e-2)]
    + [dict(width=192, epochs=3, batch=256, lr=6e-3)]
    + [dict(width=256, epochs=2, batch=256, lr=lr) for lr in (6e-3, 8e-3)]
    + [dict(width=384, epochs=2, batch=256, lr=6e-3), dict(width=512, epochs=2, batch=256, lr=5e-3)]
    + [dict(width=256, epochs=2, batch=128, lr=4e-3)]
    + [dict(width=w, epochs=3, batch=256, lr=lr) for w, lr in ((160, 6e-3), (160, 8e-3), (128, 8e-3))]
    + [dict(width=w, epochs=3, batch=256, lr=lr, smooth=0.1) for w, lr in ((192, 6e-3), (160, 8e-3))]
    + [
        dict(width=128, epochs=3, batch=256, lr=8e-3, smooth=0.1),
        dict(width=256, epochs=2, batch=256, lr=6e-3, smooth=0.1),
    ]
    + [dict(width=160, epochs=3, batch=256, lr=8e-3, smooth=0.2)]
    + [dict(width=w, epochs=2, batch=256, lr=lr, smooth=0.1) for w, lr in ((192, 8e-3), (160, 1e-2))]
    + [dict(width=192, epochs=3, batch=256, lr=lr, smooth=0.1, opt="nesterov") for lr in (0.1, 0.2, 0.4, 0.6)]
    + [dict(width=160, epochs=3, batch=256, lr=lr, smooth=0.1, opt="nesterov") for lr in (0.4, 0.6, 0.8)]
    + [dict(width=128, epochs=3, batch=256, lr=0.6, smooth=0.1, opt="nesterov")]
    + [dict(width=160, epochs=3, batch=256, lr=0.6, opt="nesterov")]
    + [dict(width=w, epochs=2, batch=256, lr=0.6, smooth=0.1, opt="nesterov") for w in (192, 256)]
    + [dict(width=160, epochs=3, batch=512, lr=lr, smooth=0.1) for lr in (8e-3, 1.2e-2, 1.6e-2)],
}


def build(name, cfg):
    if name == "mlp":
        return nn.mlp([784, cfg["width"], cfg["width"], 10])
    return nn.models.cnn(
        10, (28, 28, 1), batchnorm=cfg.get("bn", False), channels=cfg["channels"], dense=cfg.get("dense", 128)
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--model", default="cnn", choices=sorted(RECIPES))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--recipes", type=int, nargs="+", default=None, help="which (0-based) of the model's list")
    args = p.parse_args()
    recipes = RECIPES[args.model]
    if args.recipes is not None:
        if not all(0 <= i < len(recipes) for i in args.recipes):
            p.error(f"--recipes: {args.model} has recipes 0..{len(recipes) - 1}")
        recipes = [recipes[i] for i in args.recipes]
    ds = data.load("mnist", data_dir=args.data_dir, dtype="uint8")
    for cfg in recipes:
        for seed in args.seeds:
            model = build(args.model, cfg)
            total = cfg["epochs"] * (len(ds.x_train) // cfg["batch"])
            name = cfg.get("opt", "adamw" if "wd" in cfg else "adam")
            opt = train.optimizer(name, cfg["lr"], "onecycle", total, weight_decay=cfg.get("wd"))
            loss = nn.losses.smoothed_cross_entropy(cfg["smooth"]) if "smooth" in cfg else None
            augment = nn.augment.augmentation(shift=cfg["shift"]) if "shift" in cfg else None
            history = fit_quietly(model, ds, cfg["epochs"], cfg["batch"], opt, seed, loss, augment)
            row = dict(cfg=cfg, seed=seed, acc=round(history["epochs"][-1]["test_accuracy"], 4))
            row.update(secs=round(history["train_seconds"], 1), compile=round(history["compile_seconds"], 2))
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
