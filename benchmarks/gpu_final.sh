#!/usr/bin/env bash
# Third accelerator run: ensembles compiled ahead of time, and the main jobs with compilation
# reported apart (train_seconds includes it; compile_seconds is its share). Needs .data/ carried.
export PYTHONPATH=$PWD:$PWD/experiments PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-results/gpu_final}; mkdir -p "$OUT" /tmp/runs3
exec > >(tee "$OUT/log.txt") 2>&1
nvidia-smi -L
timeout 90 python3 experiments/ensemble.py --data-dir .data/mnist --out /tmp/runs3/ensemble | tail -1
cp /tmp/runs3/ensemble/metrics.json "$OUT/ensemble.json"
for run in "mlp" "mlp --batch-size 256 --lr 4e-3" "mlp --batch-size 512 --lr 6e-3 --epochs 6" "cnn" "cnn --epochs 4" "lstm"; do
    name=$(echo "$run" | tr -c 'a-z0-9' '_')
    timeout 60 python3 experiments/train.py --data-dir .data/mnist --model $run --out /tmp/runs3/$name --no-progress | tail -1
done
python3 - "$OUT/runs.json" <<'PY'
import glob, json, sys
runs = {}
for p in sorted(glob.glob("/tmp/runs3/*/metrics.json")):
    m = json.load(open(p))
    if "history" not in m: continue
    runs[p.split("/")[-2]] = {"test_accuracy": m["test_accuracy"], "train_seconds": m["train_seconds"],
        "compile_seconds": m.get("compile_seconds"), "epoch_seconds": [e["seconds"] for e in m["history"]],
        "config": m["config"]}
json.dump(runs, open(sys.argv[1], "w"), indent=2)
for k, v in runs.items():
    print(k, round(v["test_accuracy"], 4), "train", round(v["train_seconds"], 3), "compile", round(v["compile_seconds"], 3),
          "epochs", [round(s, 4) for s in v["epoch_seconds"]])
PY
