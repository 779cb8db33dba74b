#!/usr/bin/env bash
# Second accelerator run: CNN recipe search, hand-vs-autodiff backward speed, per-example
# gradients, vmapped ensembles. Needs .data/ (MNIST, Fashion-MNIST) carried along. Results: $OUT.
export PYTHONPATH=$PWD:$PWD/experiments PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-results/gpu_checks}; mkdir -p "$OUT" /tmp/runs2
exec > >(tee "$OUT/log.txt") 2>&1
nvidia-smi -L
timeout 60 python3 benchmarks/backward_speed.py --rounds 5 --out "$OUT/backward_speed.json"
timeout 60 python3 benchmarks/per_example.py --out "$OUT/per_example.json"
timeout 90 python3 experiments/ensemble.py --data-dir .data/mnist --out /tmp/runs2/ensemble
cp /tmp/runs2/ensemble/metrics.json "$OUT/ensemble.json"
for run in "--dropout 0.3" "--dropout 0.3 --epochs 10" "--epochs 10" "--dropout 0.3 --seed 1" \
           "--dropout 0.3 --epochs 10 --seed 1" "--dropout 0.3 --dataset fashion_mnist --epochs 10 --data-dir .data/fashion_mnist"; do
    name=$(echo "$run" | tr -c 'a-z0-9' '_')
    dd="--data-dir .data/mnist"; case "$run" in *fashion*) dd="";; esac
    timeout 60 python3 experiments/train.py --model cnn $dd $run --out /tmp/runs2/cnn$name --no-progress | tail -1
done
python3 - "$OUT/cnn_runs.json" <<'PY'
import glob, json, sys
runs = {p.split("/")[-2]: {k: json.load(open(p)).get(k) for k in ("test_accuracy", "train_seconds", "config")}
        for p in sorted(glob.glob("/tmp/runs2/cnn*/metrics.json"))}
json.dump(runs, open(sys.argv[1], "w"), indent=2)
for k, v in runs.items(): print(k, v["test_accuracy"], round(v["train_seconds"], 2))
PY
