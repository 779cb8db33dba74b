"""The PyTorch eager reference for experiments/char_lm.py: a character-level GPT in the well-known
small-CPU recipe (nanoGPT's shakespeare_char on a CPU: 4 layers, 4 heads, 128 features, context 64,
batch 12, AdamW lr 1e-3, 2000 steps, no dropout), written plainly here. Run it in a process of its
own (PyTorch's and XLA's thread pools slow each other in one process).

    python benchmarks/char_gpt_torch.py --data-dir ../shared/data/tinyshakespeare [--steps 2000] [--out FILE]

Prints and writes JSON: train_seconds (the training loop only), val_loss (nats per character over
every position of the non-overlapping 64-long blocks of the validation text, as char_lm.py).
"""

import argparse
import json
import math
import os
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from jaxnn.data import load_text  # the same tokens and split as the jaxnn run


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.heads = heads

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab, context, d=128, heads=4, layers=4):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(context, d)
        self.blocks = nn.Sequential(*[Block(d, heads) for _ in range(layers)])
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, vocab)

    def forward(self, x):
        h = self.tok(x) + self.pos(torch.arange(x.shape[1]))
        return self.head(self.ln(self.blocks(h)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.path.join("..", "shared", "data", "tinyshakespeare"))
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    text = load_text(args.data_dir)
    train, val = torch.from_numpy(text.train.astype(np.int64)), torch.from_numpy(text.val.astype(np.int64))
    context, batch = 64, 12
    model = GPT(len(text.vocab), context)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    start = time.perf_counter()
    for _ in range(args.steps):
        starts = torch.randint(len(train) - context, (batch,))
        window = train[starts[:, None] + torch.arange(context + 1)]
        logits = model(window[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), window[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    train_seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        blocks = (len(val) - 1) // context
        x, y = (
            val[: blocks * context].view(blocks, context),
            val[1 : blocks * context + 1].view(blocks, context),
        )
        total = sum(
            F.cross_entropy(
                model(x[i : i + 64]).reshape(-1, len(text.vocab)), y[i : i + 64].reshape(-1), reduction="sum"
            ).item()
            for i in range(0, blocks, 64)
        )
    val_loss = total / (blocks * context)
    result = {
        "implementation": "pytorch eager",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "train_seconds": train_seconds,
        "val_loss": val_loss,
        "bits_per_char": val_loss / math.log(2),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        from jaxnn.files import write_text

        write_text(args.out, json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
