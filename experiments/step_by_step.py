"""Lecture: "the training of a simple ANN step by step". One gradient-descent iteration of a tiny
network (3 inputs -> 2 logistic units -> 2 classes), printed number by number: forward values,
the loss, every gradient from the hand rules beside jax.grad's, and the updated weights.

    python experiments/step_by_step.py [--lr 0.5] [--out DIR]
    python experiments/step_by_step.py --diagram docs/figures/backprop_network.png

--diagram draws the 2-2-2 network of the classic worked example (tutorial 3) with its weights, and
how jaxnn's Dense lays them out, instead of running the iteration.

Runs in float64 so the two gradient columns can be compared digit by digit.
"""

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

import jaxnn as nn
from jaxnn_lab import plots
from jaxnn_lab.cli import add_compile_cache_flag, cli, out_dir, write_metrics, write_text


def show(name, value, out):
    text = np.array2string(np.asarray(value), precision=6, suppress_small=False, floatmode="fixed")
    line = f"{name} =\n{text}" if "\n" in text or np.ndim(value) > 1 else f"{name} = {text}"
    print(line)
    out.append(line)


def draw_worked_example(path):
    """The 2-2-2 network of "a step by step backpropagation example", every weight labelled."""
    names = {("i1", "h1"): "w1", ("i2", "h1"): "w2", ("i1", "h2"): "w3", ("i2", "h2"): "w4",
             ("h1", "o1"): "w5", ("h2", "o1"): "w6", ("h1", "o2"): "w7", ("h2", "o2"): "w8"}  # fmt: skip
    values = [0.15, 0.2, 0.25, 0.3, 0.4, 0.45, 0.5, 0.55]  # w1 ... w8
    weights = {edge: f"{name} = {values[int(name[1]) - 1]:.2f}" for edge, name in names.items()}
    note = "jaxnn's Dense holds w[j, k], input j to unit k:  W1 = [[w1, w3], [w2, w4]],  "
    note += "W2 = [[w5, w7], [w6, w8]]"
    biases = ["b1 = 0.35 (each hidden unit)", "b2 = 0.60 (each output)"]
    return plots.network_diagram([["i1", "i2"], ["h1", "h2"], ["o1", "o2"]], weights, biases, path, note)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_compile_cache_flag(p)
    p.add_argument("--lr", type=float, default=0.5)
    p.add_argument("--out", default=None)
    p.add_argument("--diagram", default=None, metavar="PNG", help="draw the worked example's network")
    args = p.parse_args()
    if args.diagram:
        return print(draw_worked_example(args.diagram))
    folder = out_dir(args.out, "step_by_step")
    lines = []
    with jax.enable_x64(True):
        model = nn.serial(nn.Dense(2), nn.activation("logistic"), nn.Dense(2))
        _, params = model.init(jax.random.PRNGKey(0), (3,), dtype=jnp.float64)
        x = jnp.array([[0.5, -1.0, 2.0], [1.5, 0.2, -0.3]])
        labels = jnp.array([1, 0])
        loss = nn.losses.softmax_cross_entropy
        print("== the data ==")
        show("x (2 examples, 3 features)", x, lines)
        show("labels", labels, lines)
        print("\n== the weights ==")
        show("W1", params[0]["w"], lines), show("b1", params[0]["b"], lines)
        show("W2", params[2]["w"], lines), show("b2", params[2]["b"], lines)
        print("\n== forward ==")
        h_pre = x @ params[0]["w"] + params[0]["b"]
        show("z1 = x W1 + b1", h_pre, lines)
        h = jax.nn.sigmoid(h_pre)
        show("h = logistic(z1)", h, lines)
        logits, residuals = model.forward(params, x)
        show("out = h W2 + b2", logits, lines)
        show("softmax(out)", jax.nn.softmax(logits), lines)
        value, loss_res = loss.forward(logits, labels)
        show("loss = mean(-log softmax(out)[label])", value, lines)
        print("\n== backward: hand rules | jax.grad ==")
        dout = loss.backward(loss_res, 1.0)
        show("dL/dout = (softmax(out) - onehot) / N", dout, lines)
        grads, _ = model.backward(residuals, dout)
        auto = jax.grad(lambda p: loss(model.apply(p, x), labels))(params)
        errors = {}
        for i, name in ((0, "1"), (2, "2")):
            for leaf in ("w", "b"):
                show(f"dL/d{leaf.upper() if leaf == 'w' else leaf}{name} (hand)", grads[i][leaf], lines)
                show(f"dL/d{leaf.upper() if leaf == 'w' else leaf}{name} (jax.grad)", auto[i][leaf], lines)
                errors[f"{leaf}{name}"] = float(
                    np.max(np.abs(np.asarray(grads[i][leaf]) - np.asarray(auto[i][leaf])))
                )
        print("\n== update: W <- W - lr dL/dW ==")
        new = jax.tree_util.tree_map(lambda w, g: w - args.lr * g, params, grads)
        show("W1'", new[0]["w"], lines), show("b1'", new[0]["b"], lines)
        show("W2'", new[2]["w"], lines), show("b2'", new[2]["b"], lines)
        new_value = loss(model.apply(new, x), labels)
        show("loss after the step", new_value, lines)
    write_text(os.path.join(folder, "step_by_step.txt"), "\n".join(lines) + "\n")
    write_metrics(
        folder,
        {
            "loss_before": float(value),
            "loss_after": float(new_value),
            "lr": args.lr,
            "max_abs_difference_hand_vs_jax_grad": errors,
        },
    )
    print(f"\nlargest |hand - jax.grad| per parameter: {errors}\n-> {folder}")


if __name__ == "__main__":
    cli(main)
