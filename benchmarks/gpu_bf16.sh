#!/usr/bin/env bash
# Fourth accelerator run: the suite at large batches in float32 and bfloat16, implementations
# timed alternately. Results: $OUT/bench.json and throughput.png.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-results/gpu_bf16}; mkdir -p "$OUT"
nvidia-smi -L
timeout 200 python3 benchmarks/run.py --out "$OUT" --batch-sizes 1024 8192 --steps 10 --repeats 3 \
    --impls jaxnn-manual jaxnn-autodiff jax-optax flax torch-eager 2>&1 | grep -v Warning | cut -c1-400
