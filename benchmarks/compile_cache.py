"""Warm starts: compile_seconds of a run of experiments/train.py with an empty persistent compile
cache (cold) and of the identical run after it (warm), in processes of their own.

    python benchmarks/compile_cache.py --data-dir ../shared/data/mnist [--repeats 3]
                                       [--out benchmarks/results/cpu/compile_cache.json] [-- TRAIN OPTIONS]

Each repeat starts from a new empty cache folder ($JAXNN_COMPILE_CACHE). Reported per command:
compile_seconds and train_seconds (from metrics.json), cold and warm, medians with min-max, the
ratio warm / cold of the medians (goal <= 0.3) and the number of cache entries written.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

from jaxnn_lab.bench import spread, write_json

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
COMMANDS = {
    "main job (MLP, default recipe)": [],
    "cnn, 1 epoch": ["--model", "cnn", "--epochs", "1"],
}


def run(options, cache, out):
    command = [sys.executable, os.path.join(ROOT, "experiments", "train.py"), *options]
    command += ["--out", out, "--overwrite", "--no-progress"]
    env = dict(os.environ, JAXNN_COMPILE_CACHE=cache)
    subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    return metrics["compile_seconds"], metrics["train_seconds"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="the MNIST folder")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    result = {"repeats": args.repeats, "commands": {}}
    for name, options in COMMANDS.items():
        rows = {"cold": [], "warm": [], "entries": []}
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                cache, out = os.path.join(tmp, "cache"), os.path.join(tmp, "run")
                rows["cold"].append(run(["--data-dir", args.data_dir, *options], cache, out))
                rows["entries"].append(len(os.listdir(cache)))
                rows["warm"].append(run(["--data-dir", args.data_dir, *options], cache, out))
        entry = {}
        for kind in ("cold", "warm"):
            entry[kind] = {
                "compile_seconds": spread([c for c, _ in rows[kind]]),
                "train_seconds": spread([t for _, t in rows[kind]]),
            }
        entry["cache_entries"] = rows["entries"]
        entry["compile_ratio_warm_over_cold"] = (
            entry["warm"]["compile_seconds"]["median"] / entry["cold"]["compile_seconds"]["median"]
        )
        entry["options"] = options
        result["commands"][name] = entry
        cold, warm = entry["cold"], entry["warm"]
        compile_s = (cold["compile_seconds"]["median"], warm["compile_seconds"]["median"])
        train_s = (cold["train_seconds"]["median"], warm["train_seconds"]["median"])
        ratio = entry["compile_ratio_warm_over_cold"]
        text = f"{name}: compile cold {compile_s[0]:.2f} s, warm {compile_s[1]:.2f} s (ratio {ratio:.2f})"
        print(f"{text}; train {train_s[0]:.2f} -> {train_s[1]:.2f} s", flush=True)
    write_json(args.out, result)


if __name__ == "__main__":
    main()
