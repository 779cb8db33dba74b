"""The main job: train a model on MNIST (or another dataset) and write metrics, curves, checkpoint.

    python experiments/train.py [--dataset mnist] [--data-dir DIR] [--model mlp|linear|...]
                                [--epochs N] [--batch-size B] [--seed S] [--grad manual|autodiff]
                                [--out DIR] [--resume | --overwrite] [--checkpoint-every SECONDS]

Every flag left out comes from the recipe of the (model, dataset) pair (jaxnn_lab/recipes.py, each
row with the accuracy and time it measured): by default the MLP 784-160-160-10 on MNIST, Adam
one-cycle to 8e-3, label smoothing 0.1, batch 256, 3 epochs. Writes into --out (default
results/<run name>/): metrics.json, curves.png and checkpoint.npz.
"""

import builtins
import contextlib
import glob
import os

import jax

import jaxnn as nn
from jaxnn import data, parallel, train
from jaxnn_lab import plots
from jaxnn_lab.cli import cli, out_dir, run_lock, write_metrics
from jaxnn_lab.flags import check_extra_outputs, parse_args
from jaxnn_lab.launcher import launch_local, start_process
from jaxnn_lab.zoo import augmentation, build_model, run_summary, training_loss


def main(argv=None):
    args = parse_args(argv, __doc__)
    if args.local_processes:
        return launch_local(__file__, args, argv)
    if args.num_processes > 1:
        start_process(args.coordinator, args.num_processes, args.process_id, args.join_timeout)
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
        **run_summary(history, "test_loss", "compile_seconds"),
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
