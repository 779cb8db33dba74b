"""The main job's flags (experiments/train.py): one table, each flag with the models it applies to
and its limit, and the checks that need several flags at once."""

import argparse
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

import jaxnn as nn
from jaxnn import data, train

from . import recipes
from .cli import add_compile_cache_flag, check_out_file, check_out_folder, positive
from .zoo import DEFAULT_SHIFT, IMAGE_MODELS, MODEL_OPTIONS


class Flag(NamedTuple):
    """One command-line option: its argparse settings, the models it applies to, and its limit."""

    name: str
    options: dict
    models: tuple[str, ...] | None = None  # None: every model
    limit: tuple[Callable[[Any], bool], str] | None = None  # (holds for a good value, message for a bad one)


def _for(option: str) -> tuple[str, ...]:
    """The models whose builder takes `option` (zoo.MODEL_OPTIONS)."""
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
    (  # the library's own rule, checked before anything runs
        lambda a: train.weight_decay_refusal(a.optimizer, a.weight_decay) is not None,
        lambda a: f"--weight-decay: {train.weight_decay_refusal(a.optimizer, a.weight_decay)}",
    ),
]


class _WithRecipes(argparse.ArgumentParser):
    """--help ends with the recipe table, read from its measured files only when help is asked for."""

    def format_help(self):
        return super().format_help() + "\n" + recipes.describe() + "\n"


def parse_args(argv=None, description=None):
    """The main job's command line, checked: each flag in its limits and for its model, then every
    flag left out filled from the (model, dataset) recipe and the defaults."""
    p = _WithRecipes(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
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


def check_extra_outputs(args):
    """Every place the run writes besides --out, checked before any data are loaded or steps run."""
    for flag, folder in (("--tensorboard", args.tensorboard), ("--profile", args.profile)):
        if folder:
            check_out_folder(folder, flag)
    for flag, path in (("--save-weights", args.save_weights), ("--export", args.export)):
        if path:
            check_out_file(path, flag)
