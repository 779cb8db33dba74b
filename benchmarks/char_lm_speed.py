"""jaxnn's character-level language models against the PyTorch eager reference GPT, each in a
process of its own, one after the other on the same machine; prints the time ratios.

    python benchmarks/char_lm_speed.py --data-dir ../shared/data/tinyshakespeare [--out FILE]
                                       [--models transformer lstm]

Goals (issue 9): the transformer reaches validation loss <= 1.88 in at most half the reference's
training time; the LSTM reaches <= 2.0 in no more than the reference's time.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

from jaxnn_lab.bench import write_json

HERE = os.path.dirname(os.path.abspath(__file__))
GOALS = {"transformer": (1.88, 0.5), "lstm": (2.0, 1.0)}  # (val loss at most, time ratio at most)


def run(command):
    out = subprocess.run([sys.executable, *command], capture_output=True, text=True, check=True)
    return out.stdout


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.path.join("..", "shared", "data", "tinyshakespeare"))
    p.add_argument("--models", nargs="+", default=["transformer", "lstm"], choices=sorted(GOALS))
    p.add_argument("--out", default=None)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run(
            [
                os.path.join(HERE, "char_gpt_torch.py"),
                "--data-dir",
                args.data_dir,
                "--out",
                f"{tmp}/torch.json",
            ]
        )
        result = {"reference": json.load(open(f"{tmp}/torch.json")), "jaxnn": {}}
        for model in args.models:
            out = f"{tmp}/{model}"
            run(
                [
                    os.path.join(HERE, "..", "experiments", "char_lm.py"),
                    "--model",
                    model,
                    "--data-dir",
                    args.data_dir,
                    "--out",
                    out,
                ]
            )
            metrics = json.load(open(f"{out}/metrics.json"))
            ratio = metrics["train_seconds"] / result["reference"]["train_seconds"]
            loss_goal, ratio_goal = GOALS[model]
            result["jaxnn"][model] = {
                **{
                    k: metrics[k]
                    for k in ("val_loss", "bits_per_char", "train_seconds", "compile_seconds", "steps")
                },
                "time_ratio_over_reference": ratio,
                "goal": f"val_loss <= {loss_goal} and ratio <= {ratio_goal}",
                "met": metrics["val_loss"] <= loss_goal and ratio <= ratio_goal,
            }
    print(json.dumps(result, indent=2))
    write_json(args.out, result)


if __name__ == "__main__":
    main()
