"""The main job: train a model on MNIST (or another dataset) and write metrics, curves, checkpoint.

    python experiments/train.py [--dataset mnist] [--data-dir DIR] [--model mlp|linear|...]
                                [--epochs N] [--batch-size B] [--seed S] [--grad manual|autodiff]
                                [--out DIR] [--resume | --overwrite] [--checkpoint-every SECONDS]

Defaults: the MLP 784-160-160-10 (ReLU), Adam with a one-cycle schedule peaking at 8e-3,
label smoothing 0.1, batch 256, 3 epochs: the recipe chosen by measurement (README, "Speed"); each
--model has its own recipe (experiments/common.py, MODELS). Writes into --out (default
results/<run name>/): metrics.json, curves.png and checkpoint.npz.
"""

import argparse
import builtins
import os
import socket
import subprocess
import sys
import time

import jax

import jaxnn as nn
from common import (
    DEFAULT_SHIFT,
    IMAGE_MODELS,
    MODEL_OPTIONS,
    MODELS,
    add_compile_cache_flag,
    augmentation,
    build_model,
    cli,
    out_dir,
    positive,
    training_loss,
    write_metrics,
)
from jaxnn import data, parallel, plots, train


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_compile_cache_flag(p)
    p.add_argument("--dataset", default="mnist", help=f"one of {', '.join(data.known_datasets())}")
    p.add_argument("--data-dir", default=None, help="folder with the IDX files (default: download and cache)")
    p.add_argument("--model", default="mlp", choices=sorted(MODELS))
    p.add_argument("--epochs", type=positive(int), default=None)
    p.add_argument("--batch-size", type=positive(int), default=None)
    p.add_argument("--lr", type=positive(float), default=None, help="(peak) learning rate")
    p.add_argument("--optimizer", default=None, choices=train.OPTIMIZERS)
    p.add_argument("--schedule", default=None, choices=train.SCHEDULES)
    p.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        help="L2 weight decay (SGD family) or AdamW's decoupled decay (default: the recipe's)",
    )
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random translations by up to --shift pixels (and left-right flips on fashion_mnist) "
        "inside the jitted step; images models only (default: the recipe's, on for cnn and resnet)",
    )
    p.add_argument(
        "--shift",
        type=int,
        default=None,
        metavar="PIXELS",
        help="with --augment, translate each training image by up to PIXELS (default: the recipe's, "
        "1 for cnn, else 2)",
    )
    p.add_argument(
        "--erase",
        type=float,
        default=0.0,
        metavar="P",
        help="with --augment, also erase a random rectangle of each training image with probability P "
        "(random erasing; default 0)",
    )
    p.add_argument(
        "--label-smoothing",
        type=float,
        default=None,
        metavar="EPS",
        help="train against targets (1 - EPS) one-hot + EPS / classes (test loss: plain cross-entropy; "
        "default: the recipe's, 0.1 for the MLP, else 0)",
    )
    p.add_argument("--blocks", type=positive(int), default=None, help="residual blocks per ResNet stage")
    p.add_argument("--width", type=positive(int), default=None, help="hidden width of the MLP")
    p.add_argument("--activation", default="relu", help=f"one of {', '.join(nn.activations.names())}")
    p.add_argument(
        "--dropout", type=float, default=None, help="dropout rate in [0, 1) before the CNN's Dense layers"
    )
    p.add_argument(
        "--batchnorm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="BatchNorm after each of the CNN's convolutions (default: the recipe's)",
    )
    p.add_argument(
        "--channels",
        type=positive(int),
        nargs="+",
        default=None,
        help="the CNN's convolution widths, or the ResNet's stage widths (default: the recipe's)",
    )
    p.add_argument(
        "--train-size",
        type=positive(int),
        default=None,
        help="train on the first N examples only (smoke runs)",
    )
    p.add_argument(
        "--precision",
        default="float32",
        choices=("float32", "bfloat16", "bf16"),
        help="compute dtype of matmuls and convolutions; parameters, optimizer and loss stay float32",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grad", default="manual", choices=nn.gradients.MODES)
    p.add_argument(
        "--devices",
        type=positive(int),
        default=1,
        help="data parallelism over this many devices (all processes')",
    )
    p.add_argument(
        "--coordinator", default=None, metavar="HOST:PORT", help="process 0's address (many hosts)"
    )
    p.add_argument(
        "--num-processes", type=positive(int), default=1, help="processes in the run (one per host)"
    )
    p.add_argument("--process-id", type=int, default=0, help="this process's id in [0, --num-processes)")
    p.add_argument(
        "--join-timeout",
        type=positive(float),
        default=300.0,
        metavar="SECONDS",
        help="how long the processes wait for each other to start (default 300)",
    )
    p.add_argument(
        "--local-processes",
        type=positive(int),
        default=None,
        metavar="N",
        help="start N processes on this machine, --devices/N CPU devices each, as a multi-host run (testing)",
    )
    p.add_argument("--out", default=None, help="output folder (default results/<run name>)")
    p.add_argument("--resume", action="store_true", help="continue from --out's checkpoint.npz")
    p.add_argument("--overwrite", action="store_true", help="start afresh over --out's checkpoint.npz")
    p.add_argument(
        "--checkpoint-every",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="also checkpoint within an epoch after this many seconds (default 60; 0: every chunk)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    args = p.parse_args(argv)
    if args.batchnorm and "batchnorm" not in MODEL_OPTIONS[args.model]:
        p.error(f"--batchnorm applies to --model cnn, not {args.model}")
    if args.channels and "channels" not in MODEL_OPTIONS[args.model]:
        p.error(f"--channels applies to --model cnn or resnet, not {args.model}")
    if args.augment and args.model not in IMAGE_MODELS:
        p.error(f"--augment applies to the image models ({', '.join(IMAGE_MODELS)}), not {args.model}")
    if args.label_smoothing is not None and not 0 <= args.label_smoothing < 1:
        p.error(f"--label-smoothing must lie in [0, 1), got {args.label_smoothing}")
    if args.blocks and "blocks" not in MODEL_OPTIONS[args.model]:
        p.error(f"--blocks applies to --model resnet, not {args.model}")
    if args.shift is not None and args.shift < 0:
        p.error(f"--shift must be >= 0 pixels, got {args.shift}")
    if not 0 <= args.erase <= 1:
        p.error(f"--erase is a probability in [0, 1], got {args.erase}")
    if args.weight_decay is not None and not args.weight_decay >= 0:
        p.error(f"--weight-decay must be >= 0, got {args.weight_decay}")
    if args.dropout is not None and not 0 <= args.dropout < 1:
        p.error(f"--dropout must lie in [0, 1), got {args.dropout}")
    if args.activation not in nn.activations.names():
        p.error(f"unknown --activation {args.activation!r}; valid: {', '.join(nn.activations.names())}")
    if not args.checkpoint_every >= 0:
        p.error(f"--checkpoint-every must be >= 0 seconds, got {args.checkpoint_every}")
    if args.resume and args.overwrite:
        p.error("--resume and --overwrite exclude each other")
    if args.num_processes > 1 and not args.coordinator:
        p.error("--num-processes > 1 needs --coordinator HOST:PORT (process 0's address)")
    if not 0 <= args.process_id < args.num_processes:
        p.error(f"--process-id must lie in [0, {args.num_processes}), got {args.process_id}")
    if args.local_processes and (args.coordinator or args.num_processes > 1):
        p.error("--local-processes starts its own processes: leave out --coordinator and --num-processes")
    if args.local_processes and args.devices % args.local_processes:
        p.error(f"--devices {args.devices} does not split evenly over {args.local_processes} processes")
    many = args.num_processes > 1 or args.local_processes
    if not many and args.devices > len(jax.devices()):  # (JAX must not start before a multi-process run)
        p.error(
            f"--devices {args.devices} but {len(jax.devices())} available; on a CPU set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={args.devices}"
        )
    shift_given = args.shift is not None
    recipe = MODELS[args.model]
    for name, value in recipe.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    if args.width is None:
        args.width = 256
    if args.label_smoothing is None:
        args.label_smoothing = 0.0
    if args.shift is None:
        args.shift = DEFAULT_SHIFT
    args.batchnorm = bool(args.batchnorm)
    if args.erase and not args.augment:
        p.error("--erase needs --augment (random erasing is part of the augmentation)")
    if shift_given and not args.augment:
        p.error("--shift needs --augment (the shifts are part of the augmentation)")
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
    model_name = args.model + ("-bn" if args.batchnorm else "") + ("-aug" if args.augment else "")
    model_name += f"-erase{args.erase:g}" if args.erase else ""
    model_name += f"-ls{args.label_smoothing:g}" if args.label_smoothing else ""
    model_name += "" if args.precision == "float32" else "-bf16"
    run_name = f"{args.dataset.replace(':', '_')}-{model_name}-{args.grad}-seed{args.seed}"
    folder = out_dir(args.out, run_name)
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
    model, input_shape = build_model(args.model, ds.classes, ds.x_train.shape[1:], args)
    print(nn.summary(model, input_shape))
    model = nn.mixed_precision(model, args.precision)
    steps = args.epochs * (len(ds.x_train) // args.batch_size)
    if args.optimizer == "adam" and args.weight_decay:
        raise nn.InputError("--weight-decay with --optimizer adam: use --optimizer adamw (decoupled decay)")
    opt = train.optimizer(args.optimizer, args.lr, args.schedule, steps, weight_decay=args.weight_decay)
    loss, augment = training_loss(args), augmentation(args, args.dataset)
    print(
        f"{run_name}: {len(ds.x_train)} train / {len(ds.x_test)} test examples, {model.name}, "
        f"{args.optimizer} lr {args.lr} ({args.schedule}), batch {args.batch_size}, {args.epochs} epochs, "
        f"augmentation: {augment.description if augment else 'none'}, loss: {loss.name}, "
        f"on {jax.devices()[0].device_kind}"
    )
    state, history = train.fit(
        model,
        loss,
        (ds.x_train, ds.y_train, ds.x_test, ds.y_test),
        epochs=args.epochs,
        batch_size=args.batch_size,
        opt=opt,
        key=jax.random.PRNGKey(args.seed),
        input_shape=input_shape,
        grad=args.grad,
        checkpoint_path=ckpt,
        resume=args.resume,
        progress=not args.no_progress,
        mesh=parallel.data_mesh(args.devices) if args.devices > 1 else None,
        checkpoint_every=args.checkpoint_every,
        augment=augment,
        test_loss=nn.losses.softmax_cross_entropy,
    )
    last = history["epochs"][-1]
    metrics = {
        "test_accuracy": last["test_accuracy"],
        "test_loss": last["test_loss"],
        "train_seconds": history["train_seconds"],
        "compile_seconds": history["compile_seconds"],
        "epochs": args.epochs,
        "config": {k: v for k, v in vars(args).items()},
        "model": model.name,
        "history": history["epochs"],
    }
    if parallel.is_main_process():  # across processes, process 0 alone writes
        write_metrics(folder, metrics)
        plots.training_curves(history, os.path.join(folder, "curves.png"), title=run_name)
    print(
        f"test accuracy {last['test_accuracy']:.4f}, training {history['train_seconds']:.2f} s "
        f"(of which compilation {history['compile_seconds']:.2f} s) -> {folder}"
    )
    return metrics


if __name__ == "__main__":
    cli(main)
