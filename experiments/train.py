"""The main job: train a model on MNIST (or another dataset) and write metrics, curves, checkpoint.

    python experiments/train.py [--dataset mnist] [--data-dir DIR] [--model mlp|linear|...]
                                [--epochs N] [--batch-size B] [--seed S] [--grad manual|autodiff]
                                [--out DIR] [--resume | --overwrite] [--checkpoint-every SECONDS]

Every flag left out comes from the recipe of the (model, dataset) pair (experiments/recipes.py, each
row with the accuracy and time it measured): by default the MLP 784-160-160-10 on MNIST, Adam
one-cycle to 8e-3, label smoothing 0.1, batch 256, 3 epochs. Writes into --out (default
results/<run name>/): metrics.json, curves.png and checkpoint.npz.
"""

import argparse
import builtins
import contextlib
import glob
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

import jaxnn as nn
import recipes
from common import (
    DEFAULT_SHIFT,
    IMAGE_MODELS,
    MODEL_OPTIONS,
    add_compile_cache_flag,
    augmentation,
    build_model,
    check_out_file,
    check_out_folder,
    cli,
    out_dir,
    positive,
    run_lock,
    training_loss,
    write_metrics,
)
from jaxnn import data, parallel, plots, train


class Flag(NamedTuple):
    """One command-line option: its argparse settings, the models it applies to, and its limit."""

    name: str
    options: dict
    models: tuple[str, ...] | None = None  # None: every model
    limit: tuple[Callable[[Any], bool], str] | None = None  # (holds for a good value, message for a bad one)


def _for(option: str) -> tuple[str, ...]:
    """The models whose builder takes `option` (experiments/common.py, MODEL_OPTIONS)."""
    return tuple(m for m, names in MODEL_OPTIONS.items() if option in names)


BOOLEAN = argparse.BooleanOptionalAction
FLAGS = [
    Flag("--dataset", dict(default="mnist", help=f"one of {', '.join(data.known_datasets())}")),
    Flag("--data-dir", dict(default=None, help="folder with the IDX files (default: download and cache)")),
    Flag("--model", dict(default="mlp", choices=recipes.MODELS)),
    Flag("--epochs", dict(type=positive(int), default=None)),
    Flag("--batch-size", dict(type=positive(int), default=None)),
    Flag("--lr", dict(type=positive(float), default=None, help="(peak) learning rate")),
    Flag("--optimizer", dict(default=None, choices=train.OPTIMIZERS)),
    Flag("--schedule", dict(default=None, choices=train.SCHEDULES)),
    Flag(
        "--weight-decay",
        dict(type=float, default=None, help="L2 weight decay (SGD family) or AdamW's decoupled decay"),
        limit=(lambda v: v >= 0, "{name} must be >= 0, got {value}"),
    ),
    Flag(
        "--augment",
        dict(
            action=BOOLEAN,
            default=None,
            help="random translations by up to --shift pixels (and left-right flips on fashion_mnist) "
            "inside the jitted step",
        ),
        models=IMAGE_MODELS,
    ),
    Flag(
        "--shift",
        dict(type=int, default=None, metavar="PIXELS", help="with --augment, translate by up to PIXELS"),
        limit=(lambda v: v >= 0, "{name} must be >= 0 pixels, got {value}"),
    ),
    Flag(
        "--erase",
        dict(
            type=float,
            default=0.0,
            metavar="P",
            help="with --augment, erase a random rectangle with probability P",
        ),
        limit=(lambda v: 0 <= v <= 1, "{name} is a probability in [0, 1], got {value}"),
    ),
    Flag(
        "--label-smoothing",
        dict(type=float, default=None, metavar="EPS", help="train against (1 - EPS) one-hot + EPS / classes"),
        limit=(lambda v: 0 <= v < 1, "{name} must lie in [0, 1), got {value}"),
    ),
    Flag(
        "--blocks",
        dict(type=positive(int), default=None, help="residual blocks per ResNet stage"),
        _for("blocks"),
    ),
    Flag("--width", dict(type=positive(int), default=None, help="hidden width"), _for("width")),
    Flag(
        "--activation",
        dict(default=None, help=f"one of {', '.join(nn.activations.names())}"),
        _for("activation"),
        (
            lambda v: v in nn.activations.names(),
            "unknown {name} {value!r}; valid: " + ", ".join(nn.activations.names()),
        ),
    ),
    Flag(
        "--dropout",
        dict(type=float, default=None, help="dropout rate before the CNN's Dense layers"),
        _for("dropout"),
        (lambda v: 0 <= v < 1, "{name} must lie in [0, 1), got {value}"),
    ),
    Flag(
        "--batchnorm",
        dict(action=BOOLEAN, default=None, help="BatchNorm after each convolution"),
        _for("batchnorm"),
    ),
    Flag(
        "--channels",
        dict(
            type=positive(int),
            nargs="+",
            default=None,
            help="the CNN's convolution or the ResNet's stage widths",
        ),
        _for("channels"),
    ),
    Flag("--train-size", dict(type=positive(int), default=None, help="train on the first N examples only")),
    Flag(
        "--precision",
        dict(
            default="float32",
            choices=("float32", "bfloat16", "bf16", "float64"),
            help="bfloat16: matmuls and convolutions in bfloat16 around float32 parameters; float64: "
            "parameters and computation in float64 (for exact comparisons of --grad manual and autodiff)",
        ),
    ),
    Flag("--seed", dict(type=int, default=0)),
    Flag("--grad", dict(default="manual", choices=nn.gradients.MODES, help="hand rules or jax.grad")),
    Flag("--devices", dict(type=positive(int), default=1, help="data parallelism over this many devices")),
    Flag("--coordinator", dict(default=None, metavar="HOST:PORT", help="process 0's address (many hosts)")),
    Flag("--num-processes", dict(type=positive(int), default=1, help="processes in the run (one per host)")),
    Flag("--process-id", dict(type=int, default=0, help="this process's id in [0, --num-processes)")),
    Flag(
        "--join-timeout",
        dict(
            type=positive(float),
            default=300.0,
            metavar="SECONDS",
            help="how long processes wait for each other",
        ),
    ),
    Flag(
        "--local-processes",
        dict(
            type=positive(int), default=None, metavar="N", help="start N processes here as a multi-host run"
        ),
    ),
    Flag("--out", dict(default=None, help="output folder (default results/<run name>)")),
    Flag("--resume", dict(action="store_true", help="continue from --out's checkpoint.npz")),
    Flag("--overwrite", dict(action="store_true", help="start afresh over --out's checkpoint.npz")),
    Flag(
        "--checkpoint-every",
        dict(
            type=float,
            default=60.0,
            metavar="SECONDS",
            help="also checkpoint within an epoch (0: every chunk)",
        ),
        limit=(lambda v: v >= 0, "{name} must be >= 0 seconds, got {value}"),
    ),
    Flag("--no-progress", dict(action="store_true")),
    Flag(
        "--tensorboard",
        dict(
            default=None,
            metavar="DIR",
            help="write TensorBoard scalars (loss, gradient norm, learning rate, ...)",
        ),
    ),
    Flag(
        "--profile",
        dict(default=None, metavar="DIR", help="after training, trace a few steps with jax.profiler"),
    ),
    Flag(
        "--save-weights",
        dict(default=None, metavar="PATH", help="write the parameters as a safetensors file"),
    ),
    Flag(
        "--export",
        dict(default=None, metavar="PATH", help="write a jax.export artifact of the trained model"),
    ),
    Flag("--debug", dict(action="store_true", help="show tracebacks instead of one-line errors")),
]

# checks between flags, in order: (a bad combination, what to say); run after the recipe filled the rest
CHECKS: list[tuple[Callable[[Any], bool], Callable[[Any], str]]] = [
    (lambda a: a.resume and a.overwrite, lambda a: "--resume and --overwrite exclude each other"),
    (
        lambda a: a.num_processes > 1 and not a.coordinator,
        lambda a: "--num-processes > 1 needs --coordinator HOST:PORT (process 0's address)",
    ),
    (
        lambda a: not 0 <= a.process_id < a.num_processes,
        lambda a: f"--process-id must lie in [0, {a.num_processes}), got {a.process_id}",
    ),
    (
        lambda a: a.local_processes and (a.coordinator or a.num_processes > 1),
        lambda a: "--local-processes starts its own processes: leave out --coordinator and --num-processes",
    ),
    (
        lambda a: a.local_processes and a.devices % a.local_processes,
        lambda a: f"--devices {a.devices} does not split evenly over {a.local_processes} processes",
    ),
    (
        lambda a: a.erase and not a.augment,
        lambda a: "--erase needs --augment (random erasing is part of the augmentation)",
    ),
    (
        lambda a: a.shift_given and not a.augment,
        lambda a: "--shift needs --augment (the shifts are part of the augmentation)",
    ),
    (
        lambda a: a.optimizer == "adam" and a.weight_decay,
        lambda a: "--weight-decay with --optimizer adam: use --optimizer adamw (decoupled decay)",
    ),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, epilog=recipes.describe(), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_compile_cache_flag(p)
    for flag in FLAGS:
        p.add_argument(flag.name, **flag.options)
    args = p.parse_args(argv)
    for flag in FLAGS:  # what was given: in its limits, and for this model
        value = getattr(args, flag.name[2:].replace("-", "_"))
        if value is None or value is False:
            continue
        if flag.limit and not flag.limit[0](value):
            p.error(flag.limit[1].format(name=flag.name, value=value))
        if flag.models is not None and args.model not in flag.models:
            where = (
                f"the image models ({', '.join(IMAGE_MODELS)})"
                if flag.models == IMAGE_MODELS
                else ("--model " + " or ".join(flag.models))
            )
            p.error(f"{flag.name} applies to {where}, not {args.model}")
    many = args.num_processes > 1 or args.local_processes
    if not many and args.devices > len(jax.devices()):  # (JAX must not start before a multi-process run)
        p.error(
            f"--devices {args.devices} but {len(jax.devices())} available; on a CPU set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={args.devices}"
        )
    args.shift_given = args.shift is not None
    recipe, args.recipe_dataset = recipes.lookup(args.model, args.dataset)
    for name, value in recipe.settings.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    defaults = dict(width=256, label_smoothing=0.0, shift=DEFAULT_SHIFT, activation="relu", augment=False)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.batchnorm = bool(args.batchnorm)
    for bad, message in CHECKS:
        if bad(args):
            p.error(message(args))
    return args


def launch_local(args, argv):
    """--local-processes N: run this command as N processes of one run on this machine (process 0
    at a free local port is the coordinator), each with --devices / N CPU devices; wait for all."""
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, word in enumerate(argv):
        if word == "--local-processes":
            del argv[i : i + 2]
            break
        if word.startswith("--local-processes="):
            del argv[i]
            break
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    n = args.local_processes
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={args.devices // n}")
    children = []
    for i in range(n):
        command = [sys.executable, os.path.abspath(__file__), *argv, "--coordinator", f"localhost:{port}"]
        command += ["--num-processes", str(n), "--process-id", str(i)]
        children.append(subprocess.Popen(command, env=env))
    stopped = set()
    try:  # wait for all; when one fails, stop the others rather than leave them waiting for it
        while any(child.poll() is None for child in children) and not any(c.poll() for c in children):
            time.sleep(0.2)
    finally:
        for i, child in enumerate(children):
            if child.poll() is None:
                child.terminate()
                stopped.add(i)
    codes = [child.wait() for child in children]
    failed = [f"process {i} exited with status {c}" for i, c in enumerate(codes) if c and i not in stopped]
    if failed:
        raise nn.Error("; ".join(failed) + (" (the others were stopped)" if stopped else ""))


def main(argv=None):
    args = parse_args(argv)
    if args.local_processes:
        return launch_local(args, argv)
    if args.num_processes > 1:
        parallel.start_process(args.coordinator, args.num_processes, args.process_id, args.join_timeout)
        if args.devices > len(jax.devices()):
            raise nn.InputError(
                f"--devices {args.devices} but the {args.num_processes} processes have {len(jax.devices())}"
            )
    print = builtins.print if parallel.is_main_process() else (lambda *a, **k: None)  # process 0 speaks
    if args.precision == "float64":  # before any array is made
        jax.config.update("jax_enable_x64", True)
    model_name = args.model + ("-bn" if args.batchnorm else "") + ("-aug" if args.augment else "")
    model_name += f"-erase{args.erase:g}" if args.erase else ""
    model_name += f"-ls{args.label_smoothing:g}" if args.label_smoothing else ""
    model_name += {"float32": "", "float64": "-f64"}.get(args.precision, "-bf16")
    run_name = f"{args.dataset.replace(':', '_')}-{model_name}-{args.grad}-seed{args.seed}"
    folder = out_dir(args.out, run_name)
    check_extra_outputs(args)
    with run_lock(folder) if parallel.is_main_process() else contextlib.nullcontext():
        return train_into(args, folder, run_name, print)


def check_extra_outputs(args):
    """Every place the run writes besides --out, checked before any data are loaded or steps run."""
    for flag, folder in (("--tensorboard", args.tensorboard), ("--profile", args.profile)):
        if folder:
            check_out_folder(folder, flag)
    for flag, path in (("--save-weights", args.save_weights), ("--export", args.export)):
        if path:
            check_out_file(path, flag)


def train_into(args, folder, run_name, print):
    """The run itself, into folder (locked by main while it runs)."""
    ckpt = os.path.join(folder, "checkpoint.npz")
    if os.path.exists(ckpt) and not (args.resume or args.overwrite):
        raise nn.InputError(
            f"{folder} already holds a checkpoint: pass --resume to continue it or --overwrite "
            "to start afresh (or choose another --out)"
        )
    ds = data.load(args.dataset, data_dir=args.data_dir, dtype="uint8")
    if args.train_size:
        ds = ds._replace(x_train=ds.x_train[: args.train_size], y_train=ds.y_train[: args.train_size])
    if args.batch_size > len(ds.x_train):
        raise nn.InputError(
            f"--batch-size {args.batch_size} is larger than the training set ({len(ds.x_train)})"
        )
    model = build_model(args.model, ds.classes, ds.x_train.shape[1:], args)
    print(nn.summary(model))
    if args.precision in ("bfloat16", "bf16"):
        model = nn.mixed_precision(model, args.precision)
    steps = args.epochs * (len(ds.x_train) // args.batch_size)
    opt = train.optimizer(args.optimizer, args.lr, args.schedule, steps, weight_decay=args.weight_decay)
    options = train.TrainOptions(
        mode=args.grad,
        augment=augmentation(args, args.dataset),
        test_loss=nn.losses.softmax_cross_entropy,
        mesh=parallel.data_mesh(args.devices) if args.devices > 1 else None,
        dtype="float64" if args.precision == "float64" else "float32",
    )
    loss, augment = training_loss(args), options.augment
    print(
        f"{run_name}: {len(ds.x_train)} train / {len(ds.x_test)} test examples, {model.name}, "
        f"{args.optimizer} lr {args.lr} ({args.schedule}), batch {args.batch_size}, {args.epochs} epochs, "
        f"augmentation: {augment.description if augment else 'none'}, loss: {loss.name}, "
        f"on {jax.devices()[0].device_kind} (recipe of {args.model} on {args.recipe_dataset})"
    )
    state, history = train.fit(
        model,
        loss,
        (ds.x_train, ds.y_train, ds.x_test, ds.y_test),
        epochs=args.epochs,
        batch_size=args.batch_size,
        opt=opt,
        key=jax.random.PRNGKey(args.seed),
        options=options,
        checkpointing=train.Checkpointing(ckpt, resume=args.resume, every=args.checkpoint_every),
        reporting=train.Reporting(
            progress=not args.no_progress,
            tensorboard=args.tensorboard,
            learning_rate=train.schedule(args.schedule, args.lr, steps),
        ),
    )
    last = history["epochs"][-1]
    metrics = {
        "test_accuracy": last["test_accuracy"],
        "test_loss": last["test_loss"],
        "train_seconds": history["train_seconds"],
        "compile_seconds": history["compile_seconds"],
        "epochs": args.epochs,
        "config": {k: v for k, v in vars(args).items() if k != "shift_given"},
        "model": model.name,
        "history": history["epochs"],
    }
    if parallel.is_main_process():  # across processes, process 0 alone writes
        write_metrics(folder, metrics)
        plots.training_curves(history, os.path.join(folder, "curves.png"), title=run_name)
        if args.save_weights:
            nn.io.save_safetensors(args.save_weights, state.params, state.model_state)
            print(f"weights -> {args.save_weights} (safetensors)")
        if args.export:
            nn.io.export(model, state.params, state.model_state, model.input_shape, args.export)
            print(f"inference artifact -> {args.export} (runs with jax and flatbuffers, no jaxnn)")
        if args.profile:
            profile_steps(model, loss, opt, state, ds, args, options._replace(mesh=None), args.profile, print)
    print(
        f"test accuracy {last['test_accuracy']:.4f}, training {history['train_seconds']:.2f} s "
        f"(of which compilation {history['compile_seconds']:.2f} s) -> {folder}"
    )
    return metrics


def profile_steps(model, loss, opt, state, ds, args, options, folder, print, steps=5):
    """Trace `steps` steady-state training steps with jax.profiler into folder (after one untraced
    step has compiled them), on a copy of the trained state: the run itself is not changed."""
    step = jax.jit(
        train.make_step(model, loss, opt, model.input_shape, options),
        compiler_options=train.model_compiler_options(model, model.input_shape),
    )
    images, labels = ds.x_train[: args.batch_size], ds.y_train[: args.batch_size]
    copy = jax.tree_util.tree_map(lambda a: a.copy() if hasattr(a, "copy") else a, state)
    copy = jax.block_until_ready(step(copy, images, labels)[0])
    with jax.profiler.trace(folder, create_perfetto_trace=True):
        for _ in range(steps):
            copy, _ = step(copy, images, labels)
        jax.block_until_ready(copy)
    traces = sorted(glob.glob(os.path.join(folder, "**", "perfetto_trace.json.gz"), recursive=True))
    print(
        f"profile of {steps} steps -> {folder}: open it with `tensorboard --logdir {folder}` (the Profile "
        f"tab; pip install tensorboard-plugin-profile), or load {traces[-1] if traces else 'its trace'} "
        "at https://ui.perfetto.dev"
    )


if __name__ == "__main__":
    cli(main)
