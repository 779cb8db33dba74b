"""The command line's models and how the experiments train them: --model NAME -> a jaxnn.models
builder and the flags it takes, the loss and augmentation a run's flags ask for, and the
experiments' shared `fit` call."""

import functools

import jax

import jaxnn as nn

BATCH = 128
"""The experiments' batch size."""


def fit_mnist(ds, model, args, schedule=("adam", 3e-3, "onecycle"), weight_decay=None, **fit_options):
    """train.fit with softmax cross-entropy on a loaded data set `ds`, args.epochs epochs of BATCH
    examples from args.seed; the optimiser (name, learning rate, schedule) runs its schedule over the
    run's steps. fit_options go to fit (reporting=, options=, input_shape=, checkpointing=)."""
    name, learning_rate, kind = schedule
    steps = args.epochs * (len(ds.x_train) // BATCH)
    return nn.train.fit(
        model,
        nn.losses.softmax_cross_entropy,
        (ds.x_train, ds.y_train, ds.x_test, ds.y_test),
        epochs=args.epochs,
        batch_size=BATCH,
        opt=nn.train.optimizer(name, learning_rate, kind, steps, weight_decay=weight_decay),
        key=jax.random.PRNGKey(args.seed),
        **fit_options,
    )


# the CNN's earlier default (32-64 channels, Dropout 0.3, 10 epochs: 99.46% on MNIST), which
# batchnorm.py keeps so that the numbers from it stay reproducible
CNN_10_EPOCHS = dict(epochs=10, batch_size=128, optimizer="adam", lr=3e-3, schedule="onecycle", dropout=0.3)

# datasets whose labels survive a left-right mirror (clothes do; digits do not)
FLIP_KEEPS_LABEL = ("fashion_mnist",)

# which command-line options each model of the zoo takes
MODELS = {
    "linear": (nn.models.linear, ()),
    "mlp": (nn.models.image_mlp, ("width", "activation")),
    "cnn": (nn.models.cnn, ("dropout", "batchnorm", "channels")),
    "lstm": (functools.partial(nn.models.recurrent_reader, "lstm"), ("width",)),
    "gru": (functools.partial(nn.models.recurrent_reader, "gru"), ("width",)),
    "rnn": (functools.partial(nn.models.recurrent_reader, "rnn"), ("width",)),
    "resnet": (nn.models.resnet, ("channels", "blocks")),
}
"""The command line's models: --model NAME -> (the jaxnn.models builder, taking (classes,
image_shape, **options), and the flags that become its options)."""
MODEL_OPTIONS = {name: options for name, (_, options) in MODELS.items()}

# the models that read images (batch, H, W, C), so that --augment applies
IMAGE_MODELS = ("cnn", "resnet")
DEFAULT_SHIFT = nn.augment.DEFAULT_SHIFT  # --augment's translation, unless the recipe says otherwise


def training_loss(args):
    """Softmax cross-entropy, against label-smoothed targets when args.label_smoothing > 0."""
    if getattr(args, "label_smoothing", 0):
        return nn.losses.smoothed_cross_entropy(args.label_smoothing)
    return nn.losses.softmax_cross_entropy


def augmentation(args, dataset):
    """The run's augmentation inside the step (None unless args.augment): random shifts of up to
    args.shift pixels (default DEFAULT_SHIFT), mirrors where they keep the label, random erasing
    (args.erase)."""
    if not getattr(args, "augment", False):
        return None
    flip = dataset in FLIP_KEEPS_LABEL
    return nn.augment.augmentation(
        shift=getattr(args, "shift", DEFAULT_SHIFT), flip=flip, erase=getattr(args, "erase", 0.0)
    )


def build_model(name, classes, image_shape, args):
    """The command line's model `name` (MODELS: a Layer; model.input_shape is one example's shape),
    with the options args holds for it."""
    if name not in MODELS:
        raise nn.InputError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    builder, names = MODELS[name]
    options = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    if "channels" in options:
        options["channels"] = tuple(options["channels"])
    return builder(classes, tuple(image_shape), **options)


def run_summary(history, *keys):
    """What an experiment records of a `fit` run: the last epoch's test accuracy and the training
    seconds, then each of `keys` taken from the last epoch (e.g. "train_loss") or from the history
    (e.g. "compile_seconds", "epochs" for every epoch's record)."""
    last = history["epochs"][-1]
    summary = {"test_accuracy": last["test_accuracy"], "train_seconds": history["train_seconds"]}
    for key in keys:
        summary[key] = last[key] if key in last else history[key]
    return summary
