#!/usr/bin/env bash
# One prepared run on an accelerator machine (the device tool): benchmark suite + the main jobs.
# Needs the MNIST folders under .data/ (copied from ../shared/data, carried along). Results: $OUT.
export PYTHONPATH=$PWD:$PWD/experiments PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-results/gpu}; mkdir -p "$OUT" /tmp/runs
exec > >(tee "$OUT/log.txt") 2>&1
nvidia-smi -L; python3 -c "import jax, optax; print(jax.__version__, jax.devices())"
T=${T:-1}
timeout $((150*T)) python3 benchmarks/run.py --out /tmp/runs/bench --batch-sizes 32 128 1024 8192 \
    --steps 20 --repeats 3 --compile-batches 1024
cp /tmp/runs/bench/bench.json /tmp/runs/bench/throughput.png "$OUT/" 2>/dev/null
timeout $((60*T)) python3 benchmarks/mnist_speed.py --data-dir .data/mnist --out "$OUT/mnist_speed.json"
for run in "mlp --data-dir .data/mnist" "cnn --data-dir .data/mnist" "cnn --epochs 10 --dataset fashion_mnist --data-dir .data/fashion_mnist" \
           "lstm --data-dir .data/mnist" "gru --data-dir .data/mnist" "rnn --data-dir .data/mnist"; do
    set -- $run
    name=$(echo "$run" | tr -c 'a-z0-9' '_')
    timeout $((60*T)) python3 experiments/train.py --model $run --out /tmp/runs/$name --no-progress
done
python3 - "$OUT/runs.json" <<'PY'
import glob, json, sys
runs = {}
for path in sorted(glob.glob("/tmp/runs/*/metrics.json")):
    m = json.load(open(path))
    runs[path.split("/")[-2]] = {k: m.get(k) for k in ("test_accuracy", "train_seconds", "epochs", "config", "history", "machine")}
json.dump(runs, open(sys.argv[1], "w"), indent=2)
for k, v in runs.items():
    print(k, v["test_accuracy"], v["train_seconds"], [round(e["seconds"], 4) for e in v["history"]])
PY
