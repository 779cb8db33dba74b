"""Print the README's measured tables from the committed raw results, so that each table can be
regenerated and checked against its JSON.

    python benchmarks/tables.py [--results benchmarks/results/cpu] [--runs docs/results]

Tables whose file is missing are skipped with a note. Medians with [min, max] where the JSON holds
repeats.
"""

import argparse
import glob
import json
import os
from collections import defaultdict

import numpy as np


def markdown(header, rows):
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def ms(spread):
    """A spread of seconds as 'median [min, max]' in milliseconds."""
    return f"{1e3 * spread['median']:.1f} [{1e3 * spread['min']:.1f}, {1e3 * spread['max']:.1f}]"


def seconds(spread):
    return f"{spread['median']:.2f} [{spread['min']:.2f}, {spread['max']:.2f}]"


def suite(result):
    """benchmarks/run.py's bench.json: samples/s (thousands) per model and batch, one column per
    implementation, each the median of its repeats."""
    impls = list(dict.fromkeys(r["impl"] for r in result["rows"] if "samples_per_s" in r))
    cells = defaultdict(dict)
    for r in result["rows"]:
        if "samples_per_s" in r:
            cells[(r["model"].upper(), r["batch"], r.get("dtype", "float32"))][r["impl"]] = r
    rows = []
    for (model, batch, dtype), found in cells.items():
        name = f"{model}, {batch}" + ("" if dtype == "float32" else f", {dtype}")
        rows.append(
            [name] + [f"{found[i]['samples_per_s'] / 1e3:.1f} k" if i in found else "" for i in impls]
        )
    return markdown(["model, batch"] + impls, rows)


def cnn_step(result):
    rows = []
    for impl, r in result["rows"].items():
        lone = r.get("lone_step", {}).get("samples_per_s")
        rows.append(
            [
                impl,
                f"{r['samples_per_s']:,.0f}",
                ms(r["seconds_per_step"]),
                f"{lone:,.0f}" if lone else "",
                f"{100 * r['fraction_of_matmul']:.0f}%",
            ]
        )
    header = ["implementation", "samples/s", "ms/step [min, max]", "samples/s, one jitted call per step"]
    return markdown(header + ["of matmul"], rows)


def mnist_speed(result):
    def accuracies(runs):
        return ", ".join(f"{100 * r['test_accuracy']:.2f}%" for r in runs)

    ref, jx = result["reference"], result["jaxnn"]
    rows = [
        [f"reference, {len(ref['runs'])} runs", accuracies(ref["runs"]), seconds(ref["train_seconds"]), "1"],
        [
            f"jaxnn {result['model']} ({result['precision']}), seeds "
            + ", ".join(str(r["seed"]) for r in jx["runs"]),
            accuracies(jx["runs"]),
            seconds(jx["train_seconds"]),
            f"{result['speedup_over_reference']:.1f}x",
        ],
    ]
    return markdown(["run", "test accuracy", "train s, median [min, max]", "speed vs reference"], rows)


def compile_cache(result):
    rows = []
    for name, r in result["commands"].items():
        cold, warm = r["cold"], r["warm"]
        rows.append(
            [
                name,
                seconds(cold["compile_seconds"]),
                seconds(warm["compile_seconds"]),
                f"{r['compile_ratio_warm_over_cold']:.2f}",
                f"{cold['train_seconds']['median']:.2f} -> {warm['train_seconds']['median']:.2f}",
            ]
        )
    header = ["command", "compile s, cold", "compile s, warm", "warm / cold", "train s, cold -> warm"]
    return markdown(header, rows)


def epoch_order(line):
    """Which epoch order a recipe-search run had: fit's NumPy order (lines noted so) or XLA's."""
    return "NumPy" if "NumPy" in line.get("note", "") else "XLA"


def recipe_search(lines):
    """benchmarks/recipe_search.py's lines: one row per recipe and epoch order (its settings as
    columns), the accuracies of its seeds, the lowest, and the median train s (compilation
    included)."""
    runs = defaultdict(list)
    for line in lines:
        runs[json.dumps(line["cfg"], sort_keys=True), epoch_order(line)].append(line)
    keys = list(dict.fromkeys(k for key, _ in runs for k in json.loads(key)))
    rows = []
    for (key, order), found in runs.items():
        cfg = json.loads(key)
        settings = [
            ", ".join(map(str, v)) if isinstance(v, list) else v for v in (cfg.get(k, "") for k in keys)
        ] + [order]
        accuracies = [r["acc"] for r in found]
        rows.append(
            settings
            + [
                ", ".join(f"{100 * a:.2f}%" for a in accuracies),
                f"{100 * min(accuracies):.2f}%",
                f"{np.median([r['secs'] for r in found]):.1f}",
            ]
        )
    return markdown(keys + ["epoch order", "seeds", "lowest", "train s (median)"], rows)


def resnet(folders):
    rows = []
    for folder in folders:
        m = json.load(open(os.path.join(folder, "metrics.json")))
        epochs = [e["seconds"] for e in m["history"]]
        cfg = m["config"]
        # m["model"] reads "resnet([32, 64, 128], 2 blocks per stage)"
        channels, blocks = m["model"].removeprefix("resnet(").split("], ")
        evaluation = os.path.join(folder, "evaluation.json")  # experiments/evaluate.py --flip, if run
        flip = (
            json.load(open(evaluation)).get("test_accuracy_flip_averaged")
            if os.path.exists(evaluation)
            else None
        )
        rows.append(
            [
                f"{cfg['dataset']}, {m['epochs']}",
                channels + "]",
                blocks.split(" ")[0],
                f"{cfg['weight_decay']:g}",
                f"{cfg.get('erase', 0):g}",  # runs from before random erasing had none
                f"{cfg.get('label_smoothing', 0):g}",  # likewise for label smoothing
                f"{100 * m['test_accuracy']:.2f}%",
                "-" if flip is None else f"{100 * flip:.2f}%",
                f"{m['train_seconds']:.0f} (epochs {min(epochs):.0f}-{max(epochs):.0f} s, "
                f"median {np.median(epochs):.0f})",
                os.path.relpath(folder),
            ]
        )
    return markdown(
        [
            "dataset, epochs",
            "channels",
            "blocks per stage",
            "L2",
            "erase",
            "label smoothing",
            "test accuracy",
            "flip-averaged",
            "train s (compilation incl.)",
            "raw results",
        ],
        rows,
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    p.add_argument("--results", default=os.path.join(here, "results", "cpu"))
    p.add_argument("--runs", default=os.path.join(here, "..", "docs", "results"))
    args = p.parse_args()

    def read(name):
        path = os.path.join(args.results, name)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return (
                [json.loads(line) for line in f if line.strip()] if name.endswith(".jsonl") else json.load(f)
            )

    tables = [
        ("training-step suite (benchmarks/run.py)", suite, "bench.json"),
        ("CNN step against PyTorch (benchmarks/cnn_step.py)", cnn_step, "cnn_step.json"),
        ("time to accuracy (benchmarks/mnist_speed.py)", mnist_speed, "mnist_speed.json"),
        ("same, both sides warm (--warm)", mnist_speed, "mnist_speed_warm.json"),
        ("same, bfloat16", mnist_speed, "mnist_speed_bf16.json"),
        ("CNN time to 99.3% (--model cnn)", mnist_speed, "mnist_speed_cnn.json"),
        ("warm starts (benchmarks/compile_cache.py)", compile_cache, "compile_cache.json"),
        (
            "MLP recipe search (benchmarks/recipe_search.py --model mlp)",
            recipe_search,
            "mlp_recipe_search.jsonl",
        ),
        (
            "CNN recipe search (benchmarks/recipe_search.py --model cnn)",
            recipe_search,
            "cnn_recipe_search.jsonl",
        ),
    ]
    for title, make, name in tables:
        found = read(name)
        print(f"## {title}: {name}\n")
        print(make(found) if found else f"({name} not found in {args.results})", end="\n\n")
    folders = sorted(
        os.path.dirname(p) for p in glob.glob(os.path.join(args.runs, "resnet", "*", "metrics.json"))
    )
    print(f"## ResNet runs: {os.path.relpath(os.path.join(args.runs, 'resnet'))}\n")
    print(resnet(folders) if folders else "(none found)")


if __name__ == "__main__":
    main()
