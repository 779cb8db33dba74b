"""make_epoch and make_evaluate compiled with the XLA options fit uses (train.model_compiler_options:
on the CPU, YNNPACK's element-wise fusion for programs with convolutions) against XLA's defaults.

    python benchmarks/compile_options.py --data-dir ../shared/data/mnist [--rounds 4] [--out FILE]

For the MNIST CNN at 16-32 and 32-64 channels: a scanned training epoch over the first 12,800
training images (100 steps of 128, Adam) and an evaluation of the 10,000 test images (batches of
1000), both in one process, the two compilations taking turns --rounds times after a warm-up.
Prints and writes medians with [min, max]: ms per training step, ms per evaluation.
"""

import argparse
import time

import jax

import jaxnn as nn
from jaxnn import data, train
from jaxnn_lab.bench import spread, write_json

TRAIN_EXAMPLES, BATCH = 12_800, 128


def build(model, input_shape, options):
    """(epoch, evaluate) jitted as make_epoch / make_evaluate do, with model_compiler_options
    answering `options` ("fit's" or "defaults")."""
    real = train.model_compiler_options
    if options == "defaults":
        train.model_compiler_options = lambda *_: None
    try:
        loss = nn.losses.softmax_cross_entropy
        epoch = train.make_epoch(model, loss, train.optimizer("adam", 1e-3), BATCH, input_shape)
        evaluate = train.make_evaluate(model, loss, input_shape).unchecked
    finally:
        train.model_compiler_options = real
    return epoch, evaluate


def measure(channels, ds, rounds):
    model = nn.models.cnn(10, (28, 28, 1), channels=channels)
    input_shape = model.input_shape
    x, y = jax.device_put(ds.x_train[:TRAIN_EXAMPLES]), jax.device_put(ds.y_train[:TRAIN_EXAMPLES])
    x_test, y_test = jax.device_put(ds.x_test), jax.device_put(ds.y_test)
    kinds = ("fit's", "defaults")
    runs, states, times = {}, {}, {k: {"step_ms": [], "evaluate_ms": []} for k in kinds}
    for kind in kinds:  # compile and warm up
        runs[kind] = build(model, input_shape, kind)
        state = train.init_state(model, train.optimizer("adam", 1e-3), jax.random.PRNGKey(0), input_shape)
        states[kind] = jax.block_until_ready(runs[kind][0](state, x, y))[0]
        jax.block_until_ready(runs[kind][1](states[kind].params, x_test, y_test, None))
    for _ in range(rounds):
        for kind in kinds:
            epoch, evaluate = runs[kind]
            t = time.perf_counter()
            states[kind] = jax.block_until_ready(epoch(states[kind], x, y))[0]
            times[kind]["step_ms"].append((time.perf_counter() - t) / (TRAIN_EXAMPLES // BATCH) * 1e3)
            t = time.perf_counter()
            jax.block_until_ready(evaluate(states[kind].params, x_test, y_test, None))
            times[kind]["evaluate_ms"].append((time.perf_counter() - t) * 1e3)
    return {kind: {k: spread(v) for k, v in t.items()} for kind, t in times.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    ds = data.load("mnist", data_dir=args.data_dir, dtype="uint8")
    result = {"device": jax.devices()[0].device_kind, "jax": jax.__version__, "rounds": args.rounds}
    for channels in ((16, 32), (32, 64)):
        name = f"cnn {channels[0]}-{channels[1]}"
        result[name] = measure(channels, ds, args.rounds)
        for kind, t in result[name].items():
            step, ev = t["step_ms"], t["evaluate_ms"]
            step_text = f"step {step['median']:.2f} ms [{step['min']:.2f}, {step['max']:.2f}]"
            evaluate_text = f"evaluate {ev['median']:.0f} ms [{ev['min']:.0f}, {ev['max']:.0f}]"
            print(f"{name:10s} {kind:9s} {step_text}  {evaluate_text}", flush=True)
    write_json(args.out, result)


if __name__ == "__main__":
    main()
