#!/usr/bin/env bash
# The accelerator checks in one run (about 8 minutes on one GPU, each step capped by its own
# timeout so that one slow step cannot take the others' time). Needs the MNIST folder under
# .data/mnist (copied from ../shared/data, carried along). Results: $OUT, 8 files at most:
#   log.txt; suite/bench.json and suite/throughput.png: the suite in float32 and bfloat16 (the bf16
#   gap to plain JAX); cnn_step.json: the CNN step, jaxnn against plain JAX (the GPU conv path,
#   compared with the previous accelerator run's); mnist_speed.json, mnist_speed_cnn.json:
#   time to accuracy against the reference; compile_cache.json: warm against cold compilation;
#   bf16_mlp.json: scanned MLP epochs per precision (core.matmul's float32 accumulation).
# PyTorch is left out: the bench extra installs its CPU build.
export PYTHONPATH=$PWD:$PWD/experiments:$PWD/benchmarks PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-results/gpu}; mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
nvidia-smi -L; python3 -c "import jax; print(jax.__version__, jax.devices())"
step() { echo "== $*"; "$@" || echo "== failed or timed out ($?): $*"; }
step timeout 180 python3 benchmarks/run.py --out "$OUT/suite" --batch-sizes 128 1024 8192 --steps 10 \
    --repeats 3 --impls jaxnn-manual jaxnn-autodiff jax-optax flax --dtypes float32 bfloat16
step timeout 90 python3 benchmarks/cnn_step.py --rounds 2 --impls jaxnn jax-optax jaxnn-bf16 \
    --out "$OUT/cnn_step.json"
step timeout 60 python3 benchmarks/mnist_speed.py --data-dir .data/mnist --seeds 0 1 2 --repeats 3 \
    --out "$OUT/mnist_speed.json"
step timeout 60 python3 benchmarks/mnist_speed.py --model cnn --data-dir .data/mnist --seeds 0 1 2 \
    --repeats 3 --out "$OUT/mnist_speed_cnn.json"
step timeout 90 python3 benchmarks/compile_cache.py --data-dir .data/mnist --repeats 2 \
    --out "$OUT/compile_cache.json"
step timeout 45 python3 benchmarks/bf16_mlp.py --data-dir .data/mnist --repeats 3 --out "$OUT/bf16_mlp.json"
ls -la "$OUT" "$OUT/suite"
