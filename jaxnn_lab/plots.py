"""Figures the experiments write (matplotlib, no display needed). Each function saves a PNG
atomically and returns its path.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.ticker import MaxNLocator

from jaxnn.files import atomic_path

__all__ = [
    "training_curves",
    "image_grid",
    "templates",
    "decision_boundaries",
    "curves",
    "agreement",
    "function_table",
    "compare_runs",
    "network_diagram",
]


def _plt():  # matplotlib loads (and picks its headless backend) on the first figure only
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path, tight_layout=True):
    """Write the figure atomically (a kill mid-write keeps the previous figure), then close it."""
    try:
        if tight_layout:
            fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches=None if tight_layout else "tight")
    finally:
        _plt().close(fig)
    return path


def training_curves(history: dict, path: str, title: str = "") -> str:
    """A run's per-step training loss (left) and per-epoch train/test accuracy (right).

    **Arguments:**

    - `history`: what `train.fit` returned.
    - `path`: the PNG to write.
    - `title`: the figure's title.

    **Returns:** path.
    """
    plt = _plt()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    losses = np.asarray(history["step_losses"])
    ax_loss.plot(np.arange(1, len(losses) + 1), losses, lw=0.6, alpha=0.5, label="per step")
    if len(losses) > 50:
        k = max(1, len(losses) // 100)
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax_loss.plot(np.arange(k, len(losses) + 1), smooth, lw=1.5, label=f"mean of {k}")
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss")
    ax_loss.legend()
    epochs = history["epochs"]
    ax_acc.plot([e["epoch"] for e in epochs], [e["train_accuracy"] for e in epochs], "o-", label="train")
    tested = [e for e in epochs if "test_accuracy" in e]
    ax_acc.plot([e["epoch"] for e in tested], [e["test_accuracy"] for e in tested], "s-", label="test")
    ax_acc.set_xlabel("epoch")
    ax_acc.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax_acc.set_ylabel("accuracy")
    ax_acc.legend()
    fig.suptitle(title)
    return _save(fig, path)


def image_grid(
    images: Any,
    path: str,
    titles: Sequence[str] | None = None,
    cmap: str = "gray",
    cols: int = 5,
    symmetric: bool = False,
    title: str = "",
    colorbar: str = "",
) -> str:
    """A stack of 2-D arrays as a grid of images (e.g. the ten rows of a linear classifier's W as 28x28).

    **Arguments:**

    - `images`: `(n, H, W)`.
    - `path`: the PNG to write.
    - `titles`: one per image.
    - `cmap`: the matplotlib colour map.
    - `cols`: images per row.
    - `symmetric`: a colour scale symmetric about 0 (for signed weights).
    - `title`: the figure's title.
    - `colorbar`: with a label, one colour scale for every image and a bar that reads it (the
      images then compare with each other); without, each image is scaled on its own.

    **Returns:** path.
    """
    plt = _plt()
    images = np.asarray(images)
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(1.6 * cols + (1.0 if colorbar else 0), 1.75 * rows), squeeze=False
    )
    top = float(np.abs(images).max() or 1.0) if symmetric else float(images.max())
    scale = {"vmin": -top if symmetric else float(images.min()), "vmax": top} if colorbar else {}
    shown = None
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            kw = dict(scale)
            if symmetric and not colorbar:
                m = np.abs(images[i]).max() or 1.0
                kw = {"vmin": -m, "vmax": m}
            shown = ax.imshow(images[i], cmap=cmap, **kw)
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=11)
    if colorbar and shown is not None:
        fig.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.8, label=colorbar)
    fig.suptitle(title, fontsize=13)
    return _save(fig, path, tight_layout=not colorbar)  # tight_layout cannot place a shared bar


def decision_boundaries(panels: Sequence[tuple], path: str, resolution: int = 200) -> str:
    """Decision regions of classifiers in the plane, side by side.

    **Arguments:**

    - `panels`: `(title, predict, x, y)` each: `predict(points (n, 2)) -> labels`, the data x `(n, 2)`
      and labels y `(n,)` drawn on top, each class in one colour (its region shaded in it).
    - `path`: the PNG to write.
    - `resolution`: grid points per axis.

    **Returns:** path.
    """
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    for ax, (title, predict, x, y) in zip(axes.flat, panels):
        lo, hi = x.min(0) - 0.3, x.max(0) + 0.3
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution))
        grid = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
        z = np.asarray(predict(grid)).reshape(gx.shape)
        classes = int(max(z.max(), np.max(y))) + 1
        colours = [plt.get_cmap("tab10")(c) for c in range(classes)]  # class c: one colour, region and points
        ax.contourf(gx, gy, z, levels=np.arange(classes + 1) - 0.5, colors=colours, alpha=0.25)
        for c in range(classes):
            ax.scatter(
                *x[y == c].T, s=9, color=colours[c], edgecolors="white", linewidths=0.3, label=f"class {c}"
            )
        ax.legend(loc="upper right", fontsize=8, markerscale=1.5, framealpha=0.8)
        ax.set_title(title, fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path)


def curves(
    series: dict,
    path: str,
    xlabel: str = "step",
    ylabel: str = "loss",
    logy: bool = True,
    title: str = "",
    diverged_above: float | None = None,
) -> str:
    """Lines on one axis.

    **Arguments:**

    - `series`: label -> 1-D values (a NaN or inf stops the line where it starts).
    - `path`: the PNG to write.
    - `xlabel`, `ylabel`, `title`: the labels.
    - `logy`: a logarithmic y axis.
    - `diverged_above`: if given, the y axis ends there, and a series that passes it (or turns
      NaN/inf) stops at that step with an x at the top and a note naming the step it passed and the
      step it turned NaN, if it did, so that diverging runs do not flatten the others. Steps count
      from 0, as `fit`'s messages count them; a series of a few points is drawn with markers.

    **Returns:** path.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    diverged = 0
    for label, values in series.items():
        values = np.asarray(values, dtype=float)
        over = values > diverged_above if diverged_above is not None else np.zeros(len(values), bool)
        bad = ~np.isfinite(values) | over
        end = int(np.argmax(bad)) if bad.any() else len(values)
        style = {"marker": "o", "ms": 4} if end < 10 else {}
        (line,) = ax.plot(np.arange(end), values[:end], lw=1.0, label=label, **style)
        if diverged_above is not None and end < len(values):
            diverged += 1
            ax.plot([end], [diverged_above], "x", color=line.get_color(), ms=9, mew=2, clip_on=False)
            nan = ~np.isfinite(values)
            note = f"{label}: loss above {diverged_above:g} at step {end}"
            if nan.any():
                note += f", NaN at step {int(np.argmax(nan))}"
            ax.annotate(  # each note a line lower than the last, so that notes never overlap
                note,
                (end, diverged_above),
                xytext=(6, -4 - 11 * diverged),
                textcoords="offset points",
                fontsize=8,
                color=line.get_color(),
            )
    if logy:
        ax.set_yscale("log")
    if diverged_above is not None:
        ax.set_ylim(top=diverged_above)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, pad=10)
    ax.legend(fontsize=8, loc="lower left")
    return _save(fig, path)


def templates(means: Any, weights: Any, path: str, titles: Sequence[str], title: str = "") -> str:
    """Each class's mean image above the linear classifier's template for it (a row of W as an image).

    **Arguments:**

    - `means`: `(classes, H, W)`, each class's mean training image.
    - `weights`: `(classes, H, W)`, the rows of W.
    - `path`: the PNG to write.
    - `titles`: one per class.
    - `title`: the figure's title.

    **Returns:** path. The templates share one colour scale, symmetric about 0 (red raises the class's
    score, blue lowers it) and clipped at the 99th percentile of |W|, so that a few large weights do
    not wash out the rest; the bar beside the templates reads it.
    """
    plt = _plt()
    means, weights = np.asarray(means), np.asarray(weights)
    n, cols = len(means), 5
    blocks = -(-n // cols)  # each block: a row of mean digits above their templates
    scale = float(np.percentile(np.abs(weights), 99)) or 1.0
    ratios = [1.0] * cols + [0.07]  # the last column holds the colour bar, so every image keeps one size
    fig, axes = plt.subplots(
        2 * blocks, cols + 1, figsize=(1.7 * cols + 1.2, 3.7 * blocks), gridspec_kw={"width_ratios": ratios}
    )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for i in range(n):
        top, bottom = axes[2 * (i // cols), i % cols], axes[2 * (i // cols) + 1, i % cols]
        top.imshow(means[i], cmap="gray")
        top.set_title(str(titles[i]), fontsize=12)
        shown = bottom.imshow(weights[i], cmap="bwr", vmin=-scale, vmax=scale)
    for block in range(blocks):
        axes[2 * block, 0].set_ylabel("mean digit", fontsize=11)
        axes[2 * block + 1, 0].set_ylabel("template (W)", fontsize=11)
        axes[2 * block, cols].axis("off")
        bar = fig.colorbar(shown, cax=axes[2 * block + 1, cols])
        bar.set_label("weight", fontsize=10)
    fig.suptitle(title, fontsize=13)
    return _save(fig, path)


def agreement(a: Any, b: Any, path: str, labels: tuple[str, str], title: str = "") -> str:
    """Two runs that should agree: their per-step values overlaid (left) and their relative
    difference per step (right, logarithmic), so that agreement reads as a number, not as a hidden line.

    **Arguments:**

    - `a`, `b`: 1-D values of the two runs (e.g. each step's training loss).
    - `path`: the PNG to write.
    - `labels`: the two runs' names.
    - `title`: the figure's title.

    **Returns:** path. A difference of exactly 0 is drawn at the bottom of the axis.
    """
    plt = _plt()
    a, b = np.asarray(a, float), np.asarray(b, float)
    steps = np.arange(1, len(a) + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(steps, a, lw=1.0, label=labels[0])
    left.plot(steps, b, "--", lw=1.0, label=labels[1])
    left.set_yscale("log")
    left.set_xlabel("step")
    left.set_ylabel("training loss")
    left.legend(fontsize=8)
    diff = np.abs(a - b) / np.maximum(np.abs(b), np.finfo(float).tiny)
    floor = 1e-17
    right.plot(steps, np.maximum(diff, floor), ".", ms=2)
    right.set_yscale("log")
    right.set_ylim(bottom=floor / 2)
    right.axhline(np.finfo(np.float32).eps, color="gray", lw=0.6, ls=":")
    right.annotate(
        "float32 rounding (eps)", (steps[-1], np.finfo(np.float32).eps), ha="right", va="bottom", fontsize=8
    )
    right.set_xlabel("step")
    right.set_ylabel("|difference| / loss")
    fig.suptitle(title)
    return _save(fig, path)


def function_table(rows: Sequence[tuple], path: str, x: Any = None, zoom: dict | None = None) -> str:
    """Functions and their derivatives, one panel each (the activation table). A jump is drawn as
    one: no vertical line, a filled dot at the value the function takes there and an open one at
    the limit from the left (so a kink's convention, such as f'(0) = 1 for ReLU, shows).

    **Arguments:**

    - `rows`: `(name, f values, f' values)` each, sampled at x.
    - `path`: the PNG to write.
    - `x`: the sample points (default 401 points on [-4, 4]).
    - `zoom`: name -> `((x0, x1), (y0, y1))`, a window shown enlarged inside that panel (a slope
      too small to see at the panel's scale).

    **Returns:** path.
    """
    plt = _plt()
    x = np.linspace(-4, 4, 401) if x is None else x
    cols = 4
    n_rows = -(-len(rows) // cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(3.2 * cols, 2.6 * n_rows), squeeze=False)
    for ax, (name, f, df) in zip(axes.flat, rows):
        for target in [ax] + ([_inset(ax, *zoom[name])] if zoom and name in zoom else []):
            _draw_with_jumps(target, x, np.asarray(f), "-", "tab:blue", "f(x)", lw=1.6)
            _draw_with_jumps(target, x, np.asarray(df), "--", "tab:orange", "f'(x)", lw=2.0)
            target.axhline(0, color="k", lw=0.4)
            target.axvline(0, color="k", lw=0.4)
        if not np.any(df):
            ax.text(0.04, 0.6, "f'(x) = 0 everywhere", transform=ax.transAxes, color="tab:orange", fontsize=9)
        ax.set_title(name, fontsize=10)
    for ax in list(axes.flat)[len(rows) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    return _save(fig, path)


def _draw_with_jumps(ax, x, y, style, color, label, lw):
    """y against x, broken where it jumps (a change above 0.2 between neighbours) and dotted there."""
    jumps = np.where(np.abs(np.diff(y)) > 0.2)[0]
    ax.plot(np.insert(x, jumps + 1, np.nan), np.insert(y.astype(float), jumps + 1, np.nan), style,
            color=color, lw=lw, label=label)  # fmt: skip
    for j in jumps:
        ax.plot(x[j + 1], y[j + 1], "o", color=color, ms=5, zorder=5)
        ax.plot(x[j + 1], y[j], "o", color=color, mfc="white", ms=5, zorder=5)


def _inset(ax, xlim, ylim):
    inner = ax.inset_axes((0.24, 0.5, 0.36, 0.4))
    inner.set_xlim(*xlim)
    inner.set_ylim(*ylim)
    inner.tick_params(labelsize=7)
    inner.set_title(f"{xlim[0]:g} < x < {xlim[1]:g}, enlarged", fontsize=7, pad=2)
    return inner


def compare_runs(panels: dict, path: str, title: str = "") -> str:
    """Training curves of several runs side by side: one column per panel (e.g. a dataset), the
    per-epoch test accuracy on top and the smoothed per-step training loss below.

    **Arguments:**

    - `panels`: {panel title: {run label: history from train.fit}}.
    - `path`: the PNG to write.
    - `title`: the figure's title.

    **Returns:** path.
    """
    plt = _plt()
    fig, axes = plt.subplots(2, len(panels), figsize=(5 * len(panels), 7), squeeze=False)
    for col, (panel, runs) in enumerate(panels.items()):
        ax_acc, ax_loss = axes[0, col], axes[1, col]
        for label, history in runs.items():
            epochs = [e for e in history["epochs"] if "test_accuracy" in e]
            ax_acc.plot(
                [e["epoch"] for e in epochs], [100 * e["test_accuracy"] for e in epochs], "o-", label=label
            )
            losses = np.asarray(history["step_losses"])
            k = max(1, len(losses) // 100)
            smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
            ax_loss.plot(np.arange(k, len(losses) + 1), smooth, lw=1.2, label=label)
        ax_acc.set_title(panel)
        ax_acc.set_xlabel("epoch")
        ax_acc.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_acc.set_ylabel("test accuracy (%)")
        ax_acc.legend()
        ax_loss.set_yscale("log")
        ax_loss.set_xlabel("step")
        ax_loss.set_ylabel(f"training loss (mean of {k} steps)")
        ax_loss.legend()
    fig.suptitle(title)
    return _save(fig, path)


def network_diagram(
    layers: Sequence[Sequence[str]], weights: dict, biases: Sequence[str], path: str, note: str = ""
) -> str:
    """A small fully connected net as a picture: one column of units per layer, every edge labelled.

    **Arguments:**

    - `layers`: the units' names, a list per layer from input to output (e.g. `[["i1", "i2"], ...]`).
    - `weights`: `(from unit, to unit) -> label` for each edge.
    - `biases`: one label per layer after the first (the bias each of its units adds).
    - `path`: the PNG to write; `note`: a line under the picture.

    **Returns:** path.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    place = {}
    for col, units in enumerate(layers):
        for row, name in enumerate(units):
            place[name] = (2.2 * col, (len(units) - 1) / 2 - row * 1.6)
    for (a, b), label in weights.items():
        (x0, y0), (x1, y1) = place[a], place[b]
        ax.annotate("", (x1 - 0.28, y1 + (y0 - y1) * 0.28 / 2.2), (x0 + 0.28, y0),
                    arrowprops={"arrowstyle": "->", "color": "0.45", "lw": 1.2})  # fmt: skip
        t, lift = (0.5, 0.1) if y1 == y0 else (0.27, 0.0)  # crossing edges: labelled apart, near the source
        ax.text(x0 + (x1 - x0) * t, y0 + (y1 - y0) * t + lift, label, ha="center",
                va="bottom" if lift else "center", fontsize=10, color="tab:blue",
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0})  # fmt: skip
    for name, (x, y) in place.items():
        ax.add_patch(plt.Circle((x, y), 0.28, facecolor="white", edgecolor="black", lw=1.5, zorder=3))
        ax.text(x, y, name, ha="center", va="center", fontsize=12, zorder=4)
    for col, label in enumerate(biases, start=1):
        lowest = min(place[name][1] for name in layers[col])
        ax.text(2.2 * col, lowest - 0.62, label, ha="center", va="top", fontsize=10, color="tab:red")
    if note:
        ax.text(2.2, min(y for _, y in place.values()) - 1.05, note, ha="center", va="top", fontsize=9.5)
    ax.set_xlim(-0.6, 2.2 * (len(layers) - 1) + 0.6)
    ax.set_ylim(min(y for _, y in place.values()) - 1.5, max(y for _, y in place.values()) + 0.5)
    ax.set_aspect("equal")
    ax.axis("off")
    return _save(fig, path)
