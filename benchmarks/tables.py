"""The benchmark pages of the docs, generated from the committed raw results: every table of
docs/benchmarks/ is rebuilt here from its JSON, so that no number on those pages is typed by hand.

    python benchmarks/tables.py                 # write docs/benchmarks/*.md (the generated pages)
    python benchmarks/tables.py --check         # exit 1 if a page differs from what its JSON gives
    python benchmarks/tables.py --print         # print the pages instead

Each section names its raw file, the date that file was committed and the machine it records;
medians come with [min, max] where the JSON holds repeats. The method is written once, in
docs/benchmarks/method.md (hand-written, like the index).
"""

import argparse
import glob
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def markdown(header, rows):
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def spread_text(spread, digits=0, scale=1.0):
    """A spread {"median", "min", "max"} as 'median [min, max]', each times `scale`."""
    median, low, high = (scale * spread[k] for k in ("median", "min", "max"))
    return f"{median:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def ms(spread):
    """A spread of seconds as 'median [min, max]' in milliseconds."""
    return spread_text(spread, 1, 1e3)


def seconds(spread):
    return spread_text(spread, 2)


def suite(result):
    """benchmarks/run.py's bench.json: samples/s (thousands) per model and batch, one column per
    implementation, each the median of its repeats."""
    impls = list(dict.fromkeys(r["impl"] for r in result["rows"] if "samples_per_s" in r))
    cells = defaultdict(dict)
    for r in result["rows"]:
        if "samples_per_s" in r:
            cells[(r["model"].upper(), r["batch"], r.get("dtype", "float32"))][r["impl"]] = r
    rows = []
    for (model, batch, dtype), found in cells.items():
        name = f"{model}, {batch}" + ("" if dtype == "float32" else f", {dtype}")
        rows.append(
            [name] + [f"{found[i]['samples_per_s'] / 1e3:.1f} k" if i in found else "" for i in impls]
        )
    return markdown(["model, batch"] + impls, rows)


def cnn_step(result):
    rows = []
    for impl, r in result["rows"].items():
        lone = r.get("lone_step", {}).get("samples_per_s")
        rows.append(
            [
                impl,
                f"{r['samples_per_s']:,.0f}",
                ms(r["seconds_per_step"]),
                f"{lone:,.0f}" if lone else "",
                f"{100 * r['fraction_of_matmul']:.0f}%",
            ]
        )
    header = ["implementation", "samples/s", "ms/step [min, max]", "samples/s, one jitted call per step"]
    return markdown(header + ["of matmul"], rows)


def mnist_speed(result):
    def accuracies(runs):
        return ", ".join(f"{100 * r['test_accuracy']:.2f}%" for r in runs)

    ref, jx = result["reference"], result["jaxnn"]
    rows = [
        [f"reference, {len(ref['runs'])} runs", accuracies(ref["runs"]), seconds(ref["train_seconds"]), "1"],
        [
            f"jaxnn {result['model']} ({result['precision']}), {len(jx['runs'])} runs, seeds "
            + ", ".join(str(seed) for seed in sorted({r["seed"] for r in jx["runs"]})),
            accuracies(jx["runs"]),
            seconds(jx["train_seconds"]),
            f"{result['speedup_over_reference']:.1f}x",
        ],
    ]
    return markdown(["run", "test accuracy", "train s, median [min, max]", "speed vs reference"], rows)


def compile_cache(result):
    rows = []
    for name, r in result["commands"].items():
        cold, warm = r["cold"], r["warm"]
        rows.append(
            [
                name,
                seconds(cold["compile_seconds"]),
                seconds(warm["compile_seconds"]),
                f"{r['compile_ratio_warm_over_cold']:.2f}",
                f"{cold['train_seconds']['median']:.2f} -> {warm['train_seconds']['median']:.2f}",
            ]
        )
    header = ["command", "compile s, cold", "compile s, warm", "warm / cold", "train s, cold -> warm"]
    return markdown(header, rows)


def epoch_order(line):
    """Which epoch order a recipe-search run had: fit's NumPy order (lines noted so) or XLA's."""
    return "NumPy" if "NumPy" in line.get("note", "") else "XLA"


def recipe_search(lines):
    """benchmarks/recipe_search.py's lines: one row per recipe and epoch order (its settings as
    columns), the accuracies of its seeds, the lowest, and the median train s (compilation
    included)."""
    runs = defaultdict(list)
    for line in lines:
        runs[json.dumps(line["cfg"], sort_keys=True), epoch_order(line)].append(line)
    keys = list(dict.fromkeys(k for key, _ in runs for k in json.loads(key)))
    rows = []
    for (key, order), found in runs.items():
        cfg = json.loads(key)
        settings = [
            ", ".join(map(str, v)) if isinstance(v, list) else v for v in (cfg.get(k, "") for k in keys)
        ] + [order]
        accuracies = [r["acc"] for r in found]
        rows.append(
            settings
            + [
                ", ".join(f"{100 * a:.2f}%" for a in accuracies),
                f"{100 * min(accuracies):.2f}%",
                f"{np.median([r['secs'] for r in found]):.1f}",
            ]
        )
    return markdown(keys + ["epoch order", "seeds", "lowest", "train s (median)"], rows)


def resnet(folders):
    rows = []
    for folder in folders:
        m = json.load(open(os.path.join(folder, "metrics.json")))
        epochs = [e["seconds"] for e in m["history"]]
        cfg = m["config"]
        # m["model"] reads "resnet([32, 64, 128], 2 blocks per stage)"
        channels, blocks = m["model"].removeprefix("resnet(").split("], ")
        evaluation = os.path.join(folder, "evaluation.json")  # experiments/evaluate.py --flip, if run
        flip = (
            json.load(open(evaluation)).get("test_accuracy_flip_averaged")
            if os.path.exists(evaluation)
            else None
        )
        rows.append(
            [
                f"{cfg['dataset']}, {m['epochs']}",
                channels + "]",
                blocks.split(" ")[0],
                f"{cfg['weight_decay']:g}",
                f"{cfg.get('erase', 0):g}",  # runs from before random erasing had none
                f"{cfg.get('label_smoothing', 0):g}",  # likewise for label smoothing
                f"{100 * m['test_accuracy']:.2f}%",
                "-" if flip is None else f"{100 * flip:.2f}%",
                f"{m['train_seconds']:.0f} (epochs {min(epochs):.0f}-{max(epochs):.0f} s, "
                f"median {np.median(epochs):.0f})",
                os.path.relpath(folder),
            ]
        )
    return markdown(
        [
            "dataset, epochs",
            "channels",
            "blocks per stage",
            "L2",
            "erase",
            "label smoothing",
            "test accuracy",
            "flip-averaged",
            "train s (compilation incl.)",
            "raw results",
        ],
        rows,
    )


def backward_speed(result):
    """benchmarks/backward_speed.py: ms per value_and_grad inside a lax.scan, per formulation."""
    rows = []
    for model, r in result["models"].items():
        for impl, ms_ in r["ms_per_value_and_grad"].items():
            low, high = r["ms_min_max"][impl]
            rows.append(
                [model, impl, f"{ms_:.1f} [{low:.1f}, {high:.1f}]", f"{r['temp_bytes'][impl] / 2**20:.1f}"]
            )
    return markdown(["model", "gradient", "ms per step [min, max]", "compiled temp MiB"], rows)


def layer_backward(result):
    rows = []
    for layer, r in result["layers"].items():
        rows.append(
            [
                layer,
                f"{r['ms']['manual']:.3f}",
                f"{r['ms']['autodiff']:.3f}",
                f"{r['ratio_manual_over_autodiff']:.2f}",
                f"{r['temp_bytes']['manual'] / 2**20:.2f} / {r['temp_bytes']['autodiff'] / 2**20:.2f}",
            ]
        )
    header = ["layer", "hand rule ms", "jax.grad ms", "hand / jax.grad", "temp MiB, hand / jax.grad"]
    return markdown(header, rows)


def compile_options(result):
    rows = []
    for net, r in result.items():
        if not isinstance(r, dict) or "fit's" not in r:
            continue
        for which in ("fit's", "defaults"):
            rows.append([net, which, ms_plain(r[which]["step_ms"]), ms_plain(r[which]["evaluate_ms"])])
    return markdown(["CNN", "XLA options", "scanned step ms", "evaluation of 10k ms"], rows)


def ms_plain(spread):
    return spread_text(spread, 1)


def cnn_variants(result):
    rows = [[name, ms_plain(r)] for name, r in result["ms_per_step"].items()]
    return markdown(["variant", "ms per step [min, max]"], rows)


def bf16_mlp(result):
    rows = [[k, f"{v:.1f}"] for k, v in result["kernels_ms"].items()]
    table = markdown(["kernel", "ms"], rows)
    rows = [
        [cfg, seconds(r["float32"]), seconds(r["bfloat16"]), f"{r['float32_over_bfloat16']:.2f}"]
        for cfg, r in result["configs"].items()
    ]
    return (
        table + "\n\n" + markdown(["MLP", "float32 s/epoch", "bfloat16 s/epoch", "float32 / bfloat16"], rows)
    )


def bf16_block(result):
    p = result["ms_per_pass"]
    rows = [["float32", ms_plain(p["float32"])], ["bfloat16", ms_plain(p["bfloat16"])]]
    return markdown(["precision", "ms per forward + backward [min, max]"], rows) + (
        f"\n\nfloat32 / bfloat16 time: {result['float32_over_bfloat16']:.2f}"
    )


def char_lm_speed(result):
    ref = result["reference"]
    rows = [
        [
            f"PyTorch eager ({ref['torch']}, {ref['threads']} threads)",
            ref["steps"],
            f"{ref['val_loss']:.3f}",
            f"{ref['train_seconds']:.1f}",
            "1",
        ]
    ]
    for name, r in result["jaxnn"].items():
        rows.append(
            [
                f"jaxnn {name}",
                r["steps"],
                f"{r['val_loss']:.3f}",
                f"{r['train_seconds']:.1f}",
                f"{r['time_ratio_over_reference']:.2f}",
            ]
        )
    return markdown(
        ["implementation", "steps", "validation loss (nats/char)", "train s", "time / PyTorch's"], rows
    )


def own_loop(result):
    """benchmarks/own_loop.py: the CNN's Adam step as a user's loop, one jitted call per step, each
    loop in processes of its own; then the MLP's jitted value_and_grad against plain JAX's."""
    rows = [
        [
            impl,
            ms(r["seconds_per_step"]),
            f"{r['faults_per_step']['median']:,.0f}",
            f"{r['speed_over_torch_eager']:.2f}"
            + (
                f" [{spread_text(r['speed_over_torch_eager_per_round'], 2)}]"
                if "speed_over_torch_eager_per_round" in r
                else ""
            ),
        ]
        for impl, r in result["cnn_adam_step"].items()
    ]
    mlp = result["mlp_value_and_grad"]
    per_round = "speed_over_torch_eager_per_round" in next(iter(result["cnn_adam_step"].values()))
    table = markdown(
        [
            "CNN Adam step, batch 128",
            "ms per step [min, max]",
            "page faults per step",
            "speed over torch eager" + (" (all timings) [per round: median, min, max]" if per_round else ""),
        ],
        rows,
    )
    mlp_rows = [[name, spread_text(s, 3, 1e3)] for name, s in mlp["seconds"].items()]
    same = result.get("cnn_nn_jit_over_torch_both_after_reuse_host_memory")
    if same is not None:
        table += (
            f"\n\nAt equal allocator settings (both scripts calling `nn.reuse_host_memory()` first), "
            f"jaxnn's `nn.jit` step runs at {same:.2f}x PyTorch eager's speed"
        )
        rounds = result.get("cnn_nn_jit_over_torch_both_after_reuse_host_memory_per_round")
        table += f" (per round: {spread_text(rounds, 2)})." if rounds else "."
    return (
        table
        + "\n\n"
        + markdown(
            ["MLP 784-512-512-10 value_and_grad, batch 128, jitted", "ms per call [min, max]"], mlp_rows
        )
        + f"\n\njaxnn's speed over plain JAX's: {mlp['jaxnn_speed_over_plain_jax']:.3f}"
    )


def long_attention(result):
    """benchmarks/long_attention.py: compiled temporary memory and time of one forward plus backward
    per implementation and length, then the longest length each fits in."""
    rows = []
    for r in result["rows"]:
        timed = "seconds" in r
        rows.append(
            [
                f"{r['time']:,}",
                r["impl"],
                f"{r['temp_bytes'] / 2**20:,.1f}",
                f"{r['temp_over_jax_grad']:.3f}",
                ms(r["seconds"]) if timed else "not timed (over the time limit's memory)",
                f"{r['time_over_jax_grad']:.2f}" if "time_over_jax_grad" in r else "",
            ]
        )
    header = ["T", "implementation", "temp MiB", "of jax.grad's", "ms [min, max]", "of jax.grad's time"]
    fits = []
    for impl, f in result["fits"].items():
        over = f["first_over"]
        needs = "" if over is None else f"T {over['time']:,} needs {over['bytes'] / 2**30:.1f} GiB"
        fits.append([impl, f"{f['longest']:,}" + ("" if over else " (the longest tried)"), needs])
    limit = next(iter(result["fits"].values()))["limit_gib"]
    return (
        markdown(header, rows)
        + f"\n\nThe longest T whose compiled memory (temporary plus arguments) fits in {limit:g} GiB, "
        "doubling from the table's longest:\n\n"
        + markdown(["implementation", f"longest T in {limit:g} GiB", "the next doubling"], fits)
    )


def remat(result):
    """benchmarks/remat.py: a stack of transformer blocks, with and without recomputation."""
    rows = [
        [
            f"{r['time']:,}",
            r["attention"],
            r["variant"],
            f"{r['temp_bytes'] / 2**20:,.1f}",
            f"{r['temp_over_hand_rules']:.2f}",
            ms(r["seconds"]),
            f"{r['time_over_hand_rules']:.2f}",
        ]
        for r in result["rows"]
    ]
    header = [
        "T",
        "attention",
        "gradients by",
        "temp MiB",
        "memory / hand rules'",
        "ms [min, max]",
        "time / hand rules'",
    ]
    return markdown(header, rows)


def char_lm_context(folders):
    """experiments/char_lm.py runs at one time budget and one token count per step, context varied."""
    runs = [json.load(open(os.path.join(folder, "metrics.json"))) | {"folder": folder} for folder in folders]
    rows = []
    for m in sorted(runs, key=lambda m: m["config"]["context"]):
        cfg = m["config"]
        rows.append(
            [
                f"{cfg['context']:,}",
                cfg["batch_size"],
                cfg.get("block_size") or "dense",
                "yes" if cfg.get("remat") else "no",
                f"{m['steps']:,}",
                f"{m['train_seconds']:.0f}",
                f"{m['val_loss']:.3f}",
                os.path.relpath(m["folder"]),
            ]
        )
    header = ["context", "batch", "attention block", "remat", "steps", "train s", "val loss", "raw results"]
    return markdown(header, rows)


def gradcheck_report(text):
    rows = []
    for line in text.splitlines():
        if "vs jax.grad" not in line:
            continue
        name, rest = line.split("vs jax.grad")
        auto, fd = rest.split("vs finite differences")
        rows.append([name.strip(), auto.strip(), fd.strip()])
    return markdown(["op", "worst relative error vs jax.grad", "vs finite differences"], rows)


def recipes_table(_):
    from jaxnn_lab import recipes

    rows = []
    for (model, dataset), row in recipes.RECIPES.items():
        accuracy, secs, _ = recipes.measured(row)
        settings = ", ".join(
            f"{k} {','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in row.settings.items()
        )
        rows.append([model, dataset, f"{100 * accuracy:.2f}%", f"{secs:,.1f}", settings, f"`{row.source}`"])
    return markdown(["model", "dataset", "test accuracy", "train s", "settings", "raw result"], rows)


def experiment(metrics):
    """One experiments/*.py metrics.json: its headline numbers as a two-column table."""
    keep = []
    for key, value in metrics.items():
        if key in ("config", "history", "machine") or isinstance(value, (dict, list)):
            continue
        keep.append([key, f"{value:.4g}" if isinstance(value, float) else str(value)])
    if "results" in metrics:  # several runs in one file
        for name, r in metrics["results"].items():
            if isinstance(r, dict):
                shown = {k: v for k, v in r.items() if isinstance(v, (int, float, str)) and k != "checkpoint"}
                if isinstance(shown.get("message"), str):  # the run's own folder is not the reader's
                    message = shown["message"]
                    shown["message"] = re.sub(r"checkpoint is \S+\.npz", "checkpoint is kept", message)
                keep.append(
                    [
                        name,
                        ", ".join(
                            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()
                        ),
                    ]
                )
    return markdown(["", "value"], keep)


def edge_of_stability(metrics):
    """experiments/edge_of_stability.py: per learning rate, the sharpness against 2 / eta, and the
    figure."""
    rows = [
        [
            f"{r['eta']:g}",
            f"{r['two_over_eta']:.1f}",
            f"{r['sharpness_start']:.1f}",
            f"{r['sharpness_peak']:.1f}",
            f"{r['sharpness_last_fifth_mean']:.1f}",
            f"{r['loss_start']:.3f} -> {r['loss_end']:.3f}",
            str(r["loss_rises"]),
        ]
        for r in metrics["results"].values()
    ]
    header = ["eta", "2 / eta", "sharpness at the start", "peak", "mean, last fifth of the run", "loss"]
    table = markdown(header + ["steps whose loss rose"], rows)
    return "![loss and sharpness per learning rate](../results/edge_of_stability/sharpness.png)\n\n" + table


def curvature(result):
    """benchmarks/curvature.py: each quantity of jaxnn.curvature against one gradient, the autodiff
    way (in turns, in one process) and BackPACK (its own process, against PyTorch's gradient)."""
    names = {"mlp": "MLP 784-512-512-10", "cnn": "CNN 16-32 channels, Dense 128"}
    tables = []
    for model, found in result["models"].items():
        rows = []
        for q, r in found["quantities"].items():
            theirs = r["backpack"]
            if "autodiff" in r:
                autodiff = f"{ms(r['autodiff'])} ({r['autodiff_over_jaxnn']:.1f}x)"
            else:  # the Kronecker factors have no autodiff form; the Hessian would hold P x P numbers
                autodiff = "no autodiff form" if q in ("kflr", "kfac") else "P x P Hessian: not run"
            backpack = (
                f"{ms(theirs['backpack'])} ({theirs['backpack_over_torch_grad']:.2f}x its gradient)"
                if "backpack" in theirs
                else "unsupported"
            )
            rows.append(
                [
                    f"`{q}`",
                    ms(r["jaxnn"]),
                    f"{r['jaxnn_over_grad']:.2f}x",
                    autodiff,
                    backpack,
                    f"{r['backpack_over_jaxnn']:.2f}x" if "backpack_over_jaxnn" in r else "",
                ]
            )
        header = [
            "quantity",
            "jaxnn ms [min, max]",
            "jaxnn / one gradient",
            "autodiff ms (/ jaxnn)",
            "BackPACK ms",
            "BackPACK / jaxnn",
        ]
        tables.append(f"**{names.get(model, model)}**, batch {result['batch']}\n\n" + markdown(header, rows))
    figure = "![Each quantity's time: jaxnn, BackPACK, the autodiff way](../figures/curvature.png)"
    return "\n\n".join([figure, *tables])


def second_order(result):
    """benchmarks/second_order.py: the deep autoencoder under Adam, SGD with momentum (each the best
    of a sweep), jaxnn's K-FAC and kfac-jax, for the same wall-clock budget."""
    runs, best = result["runs"], result["best"]
    rows = []
    for name, run in runs.items():
        if any(name.startswith(f"{sweep} ") for sweep in result["sweeps"]) and name not in best.values():
            continue
        per_step = run["seconds_per_step"]
        rows.append(
            [
                name,
                f"{run['steps']:,}",
                f"{1e3 * per_step:,.0f}" if per_step else "",
                f"{run['final_loss']:.1f}",
                f"{run['squared_error']:.2f}",
                f"jax {run['jax']}" + (f", kfac-jax {run['kfac_jax']}" if "kfac_jax" in run else ""),
            ]
        )
    header = [
        "optimizer",
        "steps",
        "ms per step (median)",
        "final loss",
        "squared error per image",
        "versions",
    ]
    what = {
        "adam": "Adam's learning rate",
        "momentum": "SGD's learning rate",
        "kfac": "K-FAC's initial damping",
    }
    sweeps = "; ".join(
        f"{what[name]}: " + ", ".join(f"{v:g} -> {runs[f'{name} {v:g}']['final_loss']:.1f}" for v in values)
        for name, values in result["sweeps"].items()
    )
    ratios = result["ratios"]
    lines = [
        "![Training loss against time and against steps](../figures/second_order.png)",
        "",
        markdown(header, rows),
        "",
        f"The sweeps (setting -> final loss): {sweeps}.",
        "",
    ]
    reach = ratios.get("kfac_time_to_adam_final_over_adam_time")
    adam, kfac = runs[best["adam"]], runs[best["kfac"]]
    steps_to = next((r[0] for r in kfac["rows"] if r[2] <= adam["final_loss"]), None)
    cost = kfac["seconds_per_step"] / adam["seconds_per_step"]
    lines.append(
        "- jaxnn's K-FAC reaches Adam's final loss in "
        + (f"**{reach:.2f}x** Adam's time" if reach is not None else "no time within the budget")
        + f": in {steps_to} steps where Adam took {adam['steps']}, each step costing {cost:.1f}x Adam's. "
        "What bounds it: the step's cost (the extended sweep with the Kronecker factors, about two "
        "gradients; the quadratic model's two forward-mode passes; the factors' inverses every 5 "
        "steps). After about a minute both K-FACs flatten at the floor of this loss on these images "
        "(the cross-entropy of grey-level targets is not 0), so the time to Adam's final loss is the "
        "measure, not the final loss."
    )
    if "step_cost_over_kfac_jax" in ratios:
        gap, cost = ratios["loss_gap_to_kfac_jax_at_equal_steps"], ratios["step_cost_over_kfac_jax"]
        ours, theirs = runs["kfac, on kfac-jax's jax"]["rows"], runs["kfac-jax"]["rows"]
        pairs = list(zip(ours, theirs))
        close = sum(abs(a[2] - b[2]) <= 0.1 * b[2] for a, b in pairs)
        lines.append(
            f"- Against kfac-jax on the same jax version: each step costs **{cost:.2f}x** "
            f"kfac-jax's; at equal steps the losses differ by {100 * gap['median']:.1f}% (median; "
            f"{100 * gap['max']:.1f}% at most), within 10% at {close} of {len(pairs)} steps: the others "
            "fall in the steep descent, where one optimizer is a few steps ahead of the other."
        )
    return "\n".join(lines)


def roofline(result):
    """benchmarks/roofline.py: four training steps' GFLOP/s and intensity against the matmul ceiling
    and the memory bandwidth, measured in the same process."""
    rows = [
        [
            name,
            f"{s['flops_per_step'] / 1e9:.2f}",
            f"{s['bytes_per_step'] / 1e6:.0f}",
            f"{s['intensity_flops_per_byte']:.1f}",
            ms(s["seconds_per_step"]),
            spread_text(s["gflops"]),
            spread_text(s["fraction_of_ceiling"], 2),
        ]
        for name, s in result["steps"].items()
    ]
    header = ["step", "GFLOP per step", "MB moved per step", "FLOPs per byte", "ms per step",
              "GFLOP/s", "fraction of the matmul ceiling"]  # fmt: skip
    ceiling, bandwidth = result["matmul_ceiling_gflops"], result["bandwidth_gb_per_s"]
    lines = [
        "![Four training steps on the roofline: GFLOP/s against FLOPs per byte](../figures/roofline.png)",
        "",
        f"Matmul ceiling {spread_text(ceiling)} GFLOP/s; memory bandwidth {spread_text(bandwidth, 1)} GB/s "
        f"(medians over {result['config']['rounds']} rounds, [min, max]); the ridge, where a step "
        f"stops being bound by memory, is at {ceiling['median'] / bandwidth['median']:.1f} FLOPs per byte.",
        "",
        markdown(header, rows),
    ]
    if "before" in result:
        lines += ["", "Before (the same script on the commit before the change of compiler options):", ""]
        lines += [
            markdown(
                ["step", "GFLOP/s before", "fraction before", "GFLOP/s after", "fraction after"],
                [
                    [name, spread_text(b["gflops"]), spread_text(b["fraction_of_ceiling"], 2),
                     spread_text(a["gflops"]), spread_text(a["fraction_of_ceiling"], 2)]
                    for (name, b), a in zip(result["before"]["steps"].items(), result["steps"].values())
                ],
            )
        ]  # fmt: skip
    return "\n".join(lines)


def step_profile(result):
    """benchmarks/step_profile.py: the compiled step's operations, each with its time, FLOPs and bytes."""
    step = result["step_seconds"]["median"]
    rate = result["step_flops"] / step / 1e9
    rows = [
        [f"`{r['op']}`", r["source"] or "-", f"{r['ms']:.2f}", f"{r['flops'] / 1e6:,.0f}",
         f"{r['bytes'] / 1e6:.1f}", f"{r['gflops']:.0f}", f"{r['gb_per_s']:.1f}"]
        for r in result["ops"][:20]
    ]  # fmt: skip
    heavy = [r for r in result["ops"] if r["gflops"] >= 10]  # convolutions and dots
    light = [r for r in result["ops"] if r["gflops"] < 10]
    arithmetic_ms = sum(r["ms"] for r in heavy)
    arithmetic_rate = sum(r["flops"] for r in heavy) / arithmetic_ms / 1e6
    moving_ms, moving_mb = sum(r["ms"] for r in light), sum(r["bytes"] for r in light) / 1e6
    by_source = [
        [source or "-", f"{e['ms']:.2f}", f"{e['flops'] / 1e6:,.0f}", f"{e['bytes'] / 1e6:.1f}", e["ops"]]
        for source, e in list(result["by_source"].items())[:12]
    ]
    return "\n".join(
        [
            f"The {result['model']} step (compiled by `nn.jit`, host memory reused): "
            f"{ms(result['step_seconds'])} ms, "
            f"{result['step_flops'] / 1e9:.2f} GFLOP, {rate:.0f} GFLOP/s, "
            f"{rate / result['matmul_ceiling_gflops']:.2f} of this process's matmul ceiling "
            f"({result['matmul_ceiling_gflops']:.0f} GFLOP/s). The operations' times add to "
            f"{result['ops_ms_total']:.1f} ms: the two threads run independent operations side by side.",
            "",
            f"Operations doing arithmetic (convolutions and dots, {arithmetic_ms:.1f} ms) run at "
            f"{arithmetic_rate:.0f} GFLOP/s together; the element-wise passes and copies between them (ReLU, "
            f"pooling, the taps' views, padding; {moving_ms:.1f} ms) move {moving_mb:.0f} MB at "
            f"{moving_mb / moving_ms:.1f} GB/s and do almost no arithmetic.",
            "",
            "The 20 slowest operations (median over the profiled calls):",
            "",
            markdown(["operation", "made by", "ms", "MFLOP", "MB moved", "GFLOP/s", "GB/s"], rows),
            "",
            "By the line of code that made them:",
            "",
            markdown(["source", "ms", "MFLOP", "MB moved", "operations"], by_source),
        ]
    )


def conv_weight_grad(result):
    """benchmarks/conv_weight_grad.py: the CNN's second convolution's weight gradient, seven exact
    formulations, inside a scan and as one call."""
    forms = result["formulations"]
    rows = [
        [
            name,
            ms(r["scan"]["seconds"]),
            spread_text(r["scan"]["gflops"]),
            ms(r["call"]["seconds"]),
            spread_text(r["call"]["gflops"]),
        ]
        for name, r in forms.items()
    ]
    ceiling = result["matmul_ceiling_gflops"]
    matmuls = [r for name, r in forms.items() if not name.startswith("convolution")]
    scan_rates = [r["scan"]["gflops"]["median"] for r in matmuls]
    swapped = next(r for name, r in forms.items() if "swapped" in name)
    return "\n".join(
        [
            f"{result['config']['flops'] / 1e9:.2f} GFLOP per gradient; matmul ceiling "
            f"{spread_text(ceiling)} GFLOP/s in the same rounds. Every matmul formulation runs at "
            f"{min(scan_rates):.0f}-{max(scan_rates):.0f} GFLOP/s inside a scan "
            f"({min(scan_rates) / ceiling['median']:.2f}-{max(scan_rates) / ceiling['median']:.2f} of the "
            "ceiling): XLA's CPU kernels for these shapes (a 64x32 or 64x288 result summed over 25,088 "
            "products) are the bound, not the formulation. XLA's own convolution does better as one call "
            f"({swapped['call']['gflops']['median']:.0f} GFLOP/s) and far worse inside a scan "
            f"({swapped['scan']['gflops']['median']:.0f} GFLOP/s), where `fit` runs it: Conv2D keeps the "
            "taps on the CPU.",
            "",
            markdown(
                ["formulation", "ms in a scan", "GFLOP/s in a scan", "ms as one call", "GFLOP/s as one call"],
                rows,
            ),
        ]
    )


class Section(NamedTuple):
    title: str
    source: str  # relative to the repository root: a file, or a glob of folders (ResNet runs)
    render: Callable
    command: str = ""  # how to reproduce it
    figures: tuple = ()  # (path under docs/, what it shows), drawn after the table


class Page(NamedTuple):
    slug: str
    title: str
    intro: str
    sections: tuple


R = "benchmarks/results/cpu/"
PAGES = (
    Page(
        "time-to-accuracy",
        "Time to accuracy",
        "How long a default recipe takes to its accuracy, against a reference measured in the same run: "
        "a plain JAX + optax MLP (784-512-512-10, Adam 1e-3, batch 128, 10 epochs). Each run is a fresh "
        "process, compilation included (a cold start unless said), data loading excluded.",
        (
            Section(
                "The main job (MLP)",
                R + "mnist_speed.json",
                "mnist_speed",
                "python benchmarks/mnist_speed.py --data-dir DIR --out FILE",
            ),
            Section(
                "The main job, both sides with a warm compile cache",
                R + "mnist_speed_warm.json",
                "mnist_speed",
                "python benchmarks/mnist_speed.py --data-dir DIR --warm --out FILE",
            ),
            Section(
                "The main job in bfloat16",
                R + "mnist_speed_bf16.json",
                "mnist_speed",
                "python benchmarks/mnist_speed.py --data-dir DIR --precision bf16 --out FILE",
            ),
            Section(
                "The CNN, to 99.3%",
                R + "mnist_speed_cnn.json",
                "mnist_speed",
                "python benchmarks/mnist_speed.py --data-dir DIR --model cnn --out FILE",
            ),
        ),
    ),
    Page(
        "training-step",
        "Training step",
        "Samples per second of one training step (forward, backward, Adam update), jaxnn with its hand rules "
        "and with jax.grad, against plain JAX + optax, Flax and PyTorch (eager and torch.compile), each "
        "timed "
        "alternately; PyTorch in a process of its own.",
        (
            Section("The step suite", R + "bench.json", "suite", "python benchmarks/run.py --out DIR"),
            Section(
                "bfloat16 kernels and MLP epochs",
                R + "bf16_mlp.json",
                "bf16_mlp",
                "python benchmarks/bf16_mlp.py --out FILE",
            ),
            Section(
                "bfloat16 transformer block",
                R + "bf16_block.json",
                "bf16_block",
                "python benchmarks/bf16_block.py --out FILE",
            ),
            Section(
                "Character-level language model against PyTorch",
                R + "char_lm_speed.json",
                "char_lm_speed",
                "python benchmarks/char_lm_speed.py --data-dir DIR --out FILE",
            ),
        ),
    ),
    Page(
        "cnn-step",
        "CNN step",
        "The small MNIST CNN (conv 3x3x32, ReLU, max pool, conv 3x3x64, ReLU, max pool, Dense 128, Dense 10) "
        "at batch 128: its training step inside a lax.scan (as fit runs it) and as one jitted call per step.",
        (
            Section(
                "jaxnn, plain JAX and PyTorch",
                R + "cnn_step.json",
                "cnn_step",
                "python benchmarks/cnn_step.py --out FILE",
            ),
            Section(
                "Your own loop, one jitted call per step",
                R + "own_loop.json",
                "own_loop",
                "python benchmarks/own_loop.py --out FILE",
            ),
            Section(
                "Variants of jaxnn's CNN step",
                R + "cnn_variants.json",
                "cnn_variants",
                "python benchmarks/cnn_variants.py --out FILE",
            ),
            Section(
                "fit's XLA options against XLA's defaults",
                R + "compile_options.json",
                "compile_options",
                "python benchmarks/compile_options.py --data-dir DIR --out FILE",
            ),
        ),
    ),
    Page(
        "backward",
        "Hand rules against jax.grad",
        "The hand-derived backward passes against jax.grad of the same forward: their exactness "
        "(float64, every op "
        "of the gradient table at three shapes) and their speed and memory.",
        (
            Section(
                "Exactness",
                R + "gradcheck_report.txt",
                "gradcheck_report",
                "python benchmarks/gradcheck_report.py --out FILE",
            ),
            Section(
                "Whole models, batch 128, inside a lax.scan",
                R + "backward_speed.json",
                "backward_speed",
                "python benchmarks/backward_speed.py --out FILE",
            ),
            Section(
                "Sequence layers",
                R + "layer_backward.json",
                "layer_backward",
                "python benchmarks/layer_backward.py --out FILE",
            ),
        ),
    ),
    Page(
        "curvature",
        "Curvature",
        "jaxnn.curvature's extended backward pass: each quantity's time against one plain gradient "
        "(jaxnn's own, nn.jit-compiled, measured in the same turns), against the autodiff way in JAX "
        "(vmap of grad for the first-order quantities, per-example Jacobians for the GGN's diagonal) "
        "and against BackPACK 1.7 on the same architecture in PyTorch (a process of its own). "
        "ReLU networks, softmax cross-entropy, random images; the jaxnn process opts in to "
        "nn.reuse_host_memory() first, as PyTorch's allocator keeps freed memory by default. "
        "What bounds the quantities that cost more than 1.5 gradients: batch_grad writes one "
        "gradient per example, N times the parameters (343 MB for the MLP at batch 128); for a "
        "convolution every first-order quantity starts from each example's weight gradient, one "
        "small matmul per example over its positions, where the gradient is one large one; the "
        "exact GGN carries one column per class (10 here) through every layer, and K-FAC adds the "
        "input factor A, a matmul of the inputs with themselves.",
        (
            Section(
                "Batch 128",
                R + "curvature.json",
                "curvature",
                "python benchmarks/curvature.py --out FILE --figure docs/figures/curvature.png",
            ),
        ),
    ),
    Page(
        "roofline",
        "Roofline",
        "How close each training step runs to what this machine's arithmetic allows: its FLOPs (XLA's count "
        "of the compiled step) per second against the matmul ceiling (a jitted 1024x1024 float32 matmul) "
        "and its FLOPs per byte against the memory bandwidth (a jitted in-place scale-and-add of 256 MiB), "
        "all "
        "measured in one process, taking turns. `fit` reports the same fraction on its progress bar and in "
        "its history; `nn.summary(model, batch_size=...)` gives a step's FLOPs and its least time at the "
        "ceiling. Then where the CNN step's time goes, operation by operation.",
        (
            Section(
                "Training steps on the roofline",
                R + "roofline.json",
                "roofline",
                "python benchmarks/roofline.py --rounds 5 --out FILE --figure docs/figures/roofline.png",
            ),
            Section(
                "Where the CNN step's time goes",
                R + "step_profile_cnn.json",
                "step_profile",
                "python benchmarks/step_profile.py --model cnn --out FILE",
            ),
            Section(
                "Time to 99.3% on MNIST (--model cnn), before the change of compiler options",
                R + "mnist_speed_cnn_options_before.json",
                "mnist_speed",
                "python benchmarks/mnist_speed.py --data-dir DIR --model cnn --out FILE (at commit a03f580)",
            ),
            Section(
                "Time to 99.3% on MNIST (--model cnn), after it, run right after",
                R + "mnist_speed_cnn_options_after.json",
                "mnist_speed",
                "python benchmarks/mnist_speed.py --data-dir DIR --model cnn --out FILE",
            ),
            Section(
                "The costliest piece: the second convolution's weight gradient",
                R + "conv_weight_grad.json",
                "conv_weight_grad",
                "python benchmarks/conv_weight_grad.py --out FILE",
            ),
        ),
    ),
    Page(
        "second-order",
        "Second order in use: K-FAC",
        "The deep autoencoder of Hinton & Salakhutdinov (2006), Martens (2010) and Martens & Grosse (2015): "
        "MNIST, 784-1000-500-250-30 and the mirrored decoder, tanh, sigmoid cross-entropy summed over the "
        "pixels (kfac-jax's examples/autoencoder_mnist), trained full-batch from the same initial "
        "parameters by Adam and SGD with momentum (each the best of a committed sweep of its learning "
        "rate), by jaxnn's K-FAC (jaxnn.curvature.kfac, the best of a sweep of its initial damping, "
        "kfac-jax's example settings otherwise) and by kfac-jax at that damping, each for the same "
        "wall-clock budget in a process of its own. This 2-core CPU trains on a subset of the images; "
        "the full size (60,000 images, thousands of steps) is what the papers report and what a GPU "
        "is for. kfac-jax 0.0.8 does not run on jax 0.10, "
        "so it runs in an environment of its own (jax 0.6.2), where jaxnn's K-FAC runs again for the "
        "per-step comparison. Martens (2010) reports the squared reconstruction error per image after "
        "training on all 60,000 images to convergence; the squared errors here, after a short budget on "
        "a subset, are not comparable with that table.",
        (
            Section(
                "2,000 images, 120 seconds each",
                R + "second_order.json",
                "second_order",
                "python benchmarks/second_order.py --data-dir DIR --kfac-jax-python PATH --out FILE "
                "--figure docs/figures/second_order.png",
            ),
        ),
    ),
    Page(
        "long-context",
        "Long contexts",
        "Attention at long contexts: the blockwise hand rule (an online softmax, nn.MultiHeadAttention's "
        "block_size) against the dense hand rule, jax.grad and jax.nn.dot_product_attention; recomputation "
        "(nn.remat) against jax.checkpoint; and what a longer context buys a character-level model at "
        "equal training time.",
        (
            Section(
                "One causal attention layer (d 64, 4 heads, batch 1, float32, block 512)",
                R + "long_attention.json",
                "long_attention",
                "python benchmarks/long_attention.py --out FILE",
            ),
            Section(
                "Four transformer blocks (d 128, 4 heads, batch 1, float32), with and without recomputation",
                R + "remat.json",
                "remat",
                "python benchmarks/remat.py --out FILE",
            ),
            Section(
                "Context length at equal training time (Tiny Shakespeare, 1,024 tokens per step)",
                "docs/results/char_lm/context_*",
                "char_lm_context",
                "python experiments/char_lm.py --data-dir DIR --seconds 240 --context C --batch-size 1024/C "
                "[--block-size 256 --remat]",
                tuple(
                    (
                        f"results/char_lm/context_{c}/loss_curve.png",
                        f"context {c}: the training loss, a point per chunk",
                    )
                    for c in (64, 256, 1024)
                ),
            ),
        ),
    ),
    Page(
        "compile-cache",
        "Warm starts",
        "The persistent compilation cache: a second run of the same command loads its compiled programs.",
        (
            Section(
                "Cold and warm runs",
                R + "compile_cache.json",
                "compile_cache",
                "python benchmarks/compile_cache.py --data-dir DIR --out FILE",
            ),
        ),
    ),
    Page(
        "recipe-search",
        "Recipe searches",
        "The searches behind the default recipes: each recipe on three seeds, its lowest accuracy the "
        "one that "
        "counts. Older lines followed XLA's epoch order, newer ones fit's NumPy order (marked).",
        (
            Section(
                "MLP (time to 98%)",
                R + "mlp_recipe_search.jsonl",
                "recipe_search",
                "python benchmarks/recipe_search.py --model mlp --data-dir DIR",
            ),
            Section(
                "CNN (time to 99.3%)",
                R + "cnn_recipe_search.jsonl",
                "recipe_search",
                "python benchmarks/recipe_search.py --model cnn --data-dir DIR",
            ),
        ),
    ),
    Page(
        "resnet",
        "ResNet",
        "The small ResNet (BatchNorm, projection shortcuts, global average pooling, augmentation) on "
        "MNIST and "
        "Fashion-MNIST, and the variants tried for Fashion-MNIST's 94.5%. Flip-averaged: "
        "experiments/evaluate.py "
        "--flip. These runs predate fit's NumPy epoch order.",
        (
            Section(
                "Runs",
                "docs/results/resnet/*",
                "resnet",
                "python experiments/train.py --model resnet [--dataset D]",
                (
                    (
                        "figures/resnet_fashion_mnist_curves.png",
                        "the 30-epoch Fashion-MNIST run with augmentation: training loss and accuracies",
                    ),
                ),
            ),
        ),
    ),
    Page(
        "recipes",
        "Recipes",
        "The default recipe of each (model, dataset): experiments/train.py fills every flag left out "
        "from this "
        "table (jaxnn_lab/recipes.py), which reads each row's numbers from the run it cites.",
        (
            Section(
                "The table",
                "jaxnn_lab/recipes.py",
                "recipes_table",
                "python experiments/train.py --model M --dataset D",
                (
                    (
                        "figures/main_job_curves.png",
                        "the main job (the MLP on MNIST, 3 epochs): training loss and accuracies",
                    ),
                ),
            ),
        ),
    ),
    Page(
        "experiments",
        "Experiments",
        "The lecture's experiments: one script per question, each writing metrics.json and figures into "
        "--out.",
        tuple(
            Section(
                title,
                f"docs/results/{folder}/metrics.json",
                "experiment",
                f"python experiments/{script} --data-dir DIR",
                figures,
            )
            for title, folder, script, figures in (
                (
                    "The linear classifier (plain SGD, 10 epochs)",
                    "linear_classifier",
                    "linear_classifier.py",
                    (("figures/linear_weights.png", "each class's mean digit above its row of W"),),
                ),
                (
                    "Gradient descent at several learning rates",
                    "gradient_descent",
                    "gradient_descent.py",
                    (("figures/gd_loss_curves.png", "the training loss at each learning rate"),),
                ),
                (
                    "Manual against autodiff (float32)",
                    "manual_vs_autodiff",
                    "manual_vs_autodiff.py",
                    (
                        (
                            "figures/manual_vs_autodiff.png",
                            "one seed trained by the hand rules and by jax.grad: the losses agree to "
                            "float32's rounding until the two runs' rounding differences grow into different "
                            "trajectories",
                        ),
                    ),
                ),
                (
                    "BatchNorm in the CNN",
                    "batchnorm",
                    "batchnorm.py",
                    (("figures/batchnorm_curves.png", "the CNN with and without BatchNorm"),),
                ),
                (
                    "The convolutional autoencoder",
                    "autoencoder",
                    "autoencoder.py",
                    (
                        (
                            "results/autoencoder/reconstructions.png",
                            "test digits (top) and their reconstructions",
                        ),
                    ),
                ),
                (
                    "Character-level transformer",
                    "char_lm/transformer",
                    "char_lm.py",
                    (("results/char_lm/transformer/loss_curve.png", "the training loss, a point per chunk"),),
                ),
                (
                    "Character-level LSTM",
                    "char_lm/lstm",
                    "char_lm.py --model lstm",
                    (("results/char_lm/lstm/loss_curve.png", "the training loss, a point per chunk"),),
                ),
            )
        )
        + (
            Section(
                "The edge of stability: sharpness under full-batch gradient descent",
                "docs/results/edge_of_stability/metrics.json",
                "edge_of_stability",
                "python experiments/edge_of_stability.py --data-dir DIR --etas 0.01 0.015 0.02 --steps 3000",
            ),
        ),
    ),
)

RENDERERS = {
    name: fn
    for name, fn in dict(globals()).items()
    if callable(fn) and name in {s.render for p in PAGES for s in p.sections}
}


def committed(path):
    """The date (YYYY-MM-DD) of the last commit of path, or 'not committed'."""
    try:
        out = subprocess.run(
            ["git", "log", "-1", "--format=%cs", "--", path],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = ""
    return out or "not committed"


def machine(found):
    """What a result says of the machine that measured it."""
    if isinstance(found, dict):
        m = found.get("machine")
        if isinstance(m, dict):
            device = m.get("device") or m.get("cpu") or m.get("device_kind", "?")
            return f"{device}, {m.get('cpus', '?')} CPUs, jax {m.get('jax', '?')}"
        if "device" in found:
            return f"{found['device']}, jax {found.get('jax', '?')}" + (
                f", {found['cpus']} CPUs" if "cpus" in found else ""
            )
    return "this project's 2-core CPU (see the method)"


def load(source):
    path = os.path.join(ROOT, source)
    if "*" in source:
        return sorted(os.path.dirname(p) for p in glob.glob(os.path.join(path, "metrics.json")))
    if source.endswith(".py"):
        return source
    with open(path) as f:
        if source.endswith(".jsonl"):
            return [json.loads(line) for line in f if line.strip()]
        if source.endswith(".txt"):
            return f.read()
        return json.load(f)


def render(page):
    lines = [
        f"# {page.title}",
        "",
        "<!-- generated by benchmarks/tables.py from the raw results; do not edit -->",
        "",
    ]
    lines += [page.intro, "", "How these numbers are taken: [the method](method.md).", ""]
    for section in page.sections:
        found = load(section.source)
        source = section.source[:-2] if section.source.endswith("/*") else section.source
        lines += [f"## {section.title}", ""]
        lines += [f"Raw result: `{source}`, committed {committed(source)}; measured on {machine(found)}."]
        if section.command:
            lines += ["", f"Reproduce: `{section.command}`"]
        lines += ["", RENDERERS[section.render](found), ""]
        for figure, caption in section.figures:
            lines += [f"![{caption}](../{figure})", "", f"*{caption}*", ""]
    return "\n".join(lines).rstrip() + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks"), help="where the pages go")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--check", action="store_true", help="compare the pages with their JSON; exit 1 if stale"
    )
    mode.add_argument("--print", action="store_true", help="print the pages")
    args = p.parse_args()
    stale = []
    for page in PAGES:
        text = render(page)
        path = os.path.join(args.out, f"{page.slug}.md")
        if args.print:
            print(text)
        elif args.check:
            current = open(path).read() if os.path.exists(path) else ""
            if current != text:
                stale.append(path)
        else:
            from jaxnn.files import write_text  # noqa: PLC0415

            write_text(path, text)
    if stale:
        sys.exit("stale benchmark pages (run python benchmarks/tables.py): " + ", ".join(stale))


if __name__ == "__main__":
    main()
