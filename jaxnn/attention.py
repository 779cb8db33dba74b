"""Layers for sequences of tokens: Embedding and MultiHeadAttention, each backward written by hand.

emb = Embedding(vocab, d)              # integer tokens (batch, time) -> (batch, time, d)
att = MultiHeadAttention(heads, causal=True)   # (batch, time, d) -> (batch, time, d)
"""

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import blockwise
from .core import Layer, is_traced, make_layer, matmul
from .errors import InputError

__all__ = ["Embedding", "MultiHeadAttention", "PositionalEmbedding"]


def Embedding(vocab: int, features: int, scale: float = 1.0) -> Layer:
    """A table lookup: y[..., :] = table[x[...]] for integer x of shape (batch, ...).

    **Arguments:**

    - `vocab`: the number of token ids (rows of the table).
    - `features`: the width of each row.
    - `scale`: the rows are drawn from N(0, scale^2).

    **Returns:** a Layer with params `{"table": (vocab, features)}` mapping integer x `(batch, ...)`
    to `(batch, ..., features)`.

    Backward: dL/dtable[v] = sum of dy over every position where x == v (rows of repeated indices
    add up: a scatter-add); x is integer and gets no gradient (None). An index outside [0, vocab)
    is refused outside jit; under jit it looks up a row of NaN, so training stops on it.
    """
    if not all(isinstance(v, int) and v > 0 for v in (vocab, features)):
        raise InputError(f"Embedding: vocab and features must be positive ints, got {vocab!r}, {features!r}")

    def init(key, input_shape, dtype=jnp.float32):
        return tuple(input_shape) + (features,), {
            "table": scale * jax.random.normal(key, (vocab, features), dtype)
        }

    def forward(params, x):
        if not jnp.issubdtype(jnp.result_type(x), jnp.integer):
            raise InputError(f"Embedding: expected integer token ids, got dtype {jnp.result_type(x)}")
        if not is_traced(x) and jnp.size(x):  # a concrete array: checked on the host (also inside a trace)
            low, high = int(np.min(np.asarray(x))), int(np.max(np.asarray(x)))
            if low < 0 or high >= vocab:
                raise InputError(f"Embedding: token ids must lie in [0, {vocab}), got {low} to {high}")
        table = params["table"]
        return jnp.take(table, x, axis=0, mode="fill", fill_value=jnp.nan), (x, table.shape)

    def backward(residuals, dy):
        x, shape = residuals
        dtable = jnp.zeros(shape, dy.dtype).at[x.reshape(-1)].add(dy.reshape(-1, shape[1]))
        return {"table": dtable}, None

    config = {"kind": "Embedding", "vocab": vocab, "features": features}
    return make_layer(f"Embedding({vocab}, {features})", init, forward, backward, config=config)


class AttentionResiduals(NamedTuple):
    x: Any  # the input (batch, time, d)
    q: Any  # queries, keys and values split into heads: (batch, heads, time, d / heads)
    k: Any
    v: Any
    a: Any  # dense: the attention weights softmax(q k^T / sqrt(d / heads)) (batch, heads, time, time);
    #         blockwise: each query row's log-sum-exp of its scores (batch, heads, time)
    o: Any  # the heads' outputs a v, concatenated: (batch, time, d)
    params: Any


def MultiHeadAttention(heads: int, causal: bool = False, block_size: int | None = None) -> Layer:
    r"""Multi-head self-attention.

    **Arguments:**

    - `heads`: the number of heads; d must be divisible by it, each head reading h = d / heads features.
    - `causal`: if True, position t attends only to positions t' <= t (a language model's mask).
    - `block_size`: None computes and keeps the (time x time) weights of every head (fastest for short
      sequences); an int computes attention block by block with `jaxnn.blockwise` (FlashAttention-2's
      algorithm): the same function, keeping only a log-sum-exp per query row, so memory grows as
      time, not time^2 (the choice for long contexts).

    **Returns:** a Layer with params `{"wq", "wk", "wv", "wo": (d, d); "bq", "bk", "bv", "bo": (d,)}`
    mapping x `(batch, time, d)` to `(batch, time, d)`:

    $$
    \begin{aligned}
    q &= x w_q + b_q, \quad k = x w_k + b_k, \quad v = x w_v + b_v \\
    s &= q k^\top / \sqrt{h}, \quad a = \operatorname{softmax}_{t'}(s) \\
    o &= a v, \quad y = o w_o + b_o
    \end{aligned}
    $$

    per head, head j using features [j h, (j + 1) h) of q, k and v, with $s_{t t'} = -\infty$ for
    $t' > t$ when causal; o is the heads concatenated.

    Backward, with dy of shape (batch, time, d), the weights' gradients summed over batch and time:

    $$
    \begin{aligned}
    dw_o &= o^\top dy, \quad db_o = \textstyle\sum dy, \quad do = dy\, w_o^\top \\
    da &= do\, v^\top, \quad dv = a^\top do \\
    ds_{t t'} &= a_{t t'} \big(da_{t t'} - \textstyle\sum_{t''} da_{t t''}\, a_{t t''}\big) \\
    dq &= ds\, k / \sqrt{h}, \quad dk = ds^\top q / \sqrt{h} \\
    dw_* &= x^\top d_*, \quad db_* = \textstyle\sum d_* \qquad (* = q, k, v) \\
    dx &= dq\, w_q^\top + dk\, w_k^\top + dv\, w_v^\top
    \end{aligned}
    $$

    with do split into heads and the heads' dq, dk, dv merged back; ds is the softmax's backward,
    row by row (0 where masked).

    $db_k = 0$ exactly: adding one vector to every key shifts each row of scores by a constant,
    which the softmax ignores (the rows of ds sum to 0). With `block_size`, the middle lines (from
    $o = a v$ back to dq, dk, dv) are `jaxnn.blockwise`'s, which recompute a block by block from q,
    k and the log-sum-exp (derived there).
    """
    if not isinstance(heads, int) or heads < 1:
        raise InputError(f"MultiHeadAttention: heads must be a positive int, got {heads!r}")
    if block_size is not None and (not isinstance(block_size, int) or block_size < 1):
        raise InputError(f"MultiHeadAttention: block_size must be None or a positive int, got {block_size!r}")

    def init(key, input_shape, dtype=jnp.float32):
        if len(input_shape) != 2 or input_shape[1] % heads:
            raise InputError(
                f"MultiHeadAttention: expected (time, d) with d divisible by {heads} heads, "
                f"got {tuple(input_shape)}"
            )
        d = input_shape[1]
        keys = jax.random.split(key, 4)
        params = {f"w{n}": jax.random.normal(k, (d, d), dtype) / math.sqrt(d) for n, k in zip("qkvo", keys)}
        params.update({f"b{n}": jnp.zeros((d,), dtype) for n in "qkvo"})
        return tuple(input_shape), params

    def split(t):  # (batch, time, d) -> (batch, heads, time, h)
        b, n, d = t.shape
        return t.reshape(b, n, heads, d // heads).transpose(0, 2, 1, 3)

    def merge(t):  # (batch, heads, time, h) -> (batch, time, d)
        b, _, n, h = t.shape
        return t.transpose(0, 2, 1, 3).reshape(b, n, heads * h)

    def forward(params, x):
        if jnp.ndim(x) != 3 or x.shape[2] != params["wq"].shape[0]:
            raise InputError(
                f"MultiHeadAttention: expected (batch, time, {params['wq'].shape[0]}), got {jnp.shape(x)}"
            )
        # the projections through core.matmul: bfloat16 inputs are multiplied with float32 accumulation
        q, k, v = (split(matmul(x, params[f"w{n}"]) + params[f"b{n}"]) for n in "qkv")
        if block_size is None:
            a = weights(q, k)
            o = jnp.einsum("bhtu,bhuf->bhtf", a, v)
        else:
            o, a = blockwise.attend(q, k, v, causal, block_size)  # a: the log-sum-exp of each row
        o = merge(o)
        return matmul(o, params["wo"]) + params["bo"], AttentionResiduals(x, q, k, v, a, o, params)

    def weights(q, k):  # softmax(q k^T / sqrt(h)), masked when causal: (batch, heads, time, time)
        s = jnp.einsum("bhtf,bhuf->bhtu", q, k) / math.sqrt(q.shape[-1])
        if causal:
            n = q.shape[2]
            s = jnp.where(jnp.tril(jnp.ones((n, n), bool)), s, -jnp.inf)
        # a shift that softmax ignores: its gradient sums to 0 however jax.grad splits a tied max
        s = s - jnp.max(s, axis=-1, keepdims=True)
        a = jnp.exp(s)
        return a / jnp.sum(a, axis=-1, keepdims=True)

    def core_backward(q, k, v, a, o, do):  # from do = dL/do back to dq, dk, dv (all split into heads)
        if block_size is not None:
            return blockwise.attend_backward(q, k, v, split(o), a, do, causal, block_size)
        root = math.sqrt(q.shape[-1])
        da = jnp.einsum("bhtf,bhuf->bhtu", do, v)
        dv = jnp.einsum("bhtu,bhtf->bhuf", a, do)
        ds = a * (da - jnp.sum(da * a, axis=-1, keepdims=True))
        return jnp.einsum("bhtu,bhuf->bhtf", ds, k) / root, jnp.einsum("bhtu,bhtf->bhuf", ds, q) / root, dv

    def backward(residuals, dy):
        x, q, k, v, a, o, params = residuals
        dq, dk, dv = core_backward(q, k, v, a, o, split(matmul(dy, params["wo"].T)))
        grads = {"wo": jnp.einsum("btd,bte->de", o, dy), "bo": jnp.sum(dy, axis=(0, 1))}
        dx = 0
        for name, d in zip("qkv", (dq, dk, dv)):
            d = merge(d)
            grads[f"w{name}"] = jnp.einsum("btd,bte->de", x, d)
            grads[f"b{name}"] = jnp.zeros_like(params["bk"]) if name == "k" else jnp.sum(d, axis=(0, 1))
            dx = dx + matmul(d, params[f"w{name}"].T)
        return grads, dx

    options = (", causal" if causal else "") + (f", block_size={block_size}" if block_size else "")
    name = f"MultiHeadAttention({heads}{options})"
    config = {"kind": "MultiHeadAttention", "heads": heads, "causal": causal, "block_size": block_size}
    return make_layer(name, init, forward, backward, config=config)


def PositionalEmbedding(max_len: int, scale: float = 0.02) -> Layer:
    """A learned position embedding added to a sequence: y[:, t] = x[:, t] + table[t].

    **Arguments:**

    - `max_len`: the longest sequence it accepts.
    - `scale`: the rows are drawn from N(0, scale^2).

    **Returns:** a Layer with params `{"table": (max_len, d)}` for x `(batch, time <= max_len, d)`.

    Backward: dL/dx = dy;  dL/dtable[t] = sum over the batch of dy[:, t] (rows past time get 0).
    """
    if not isinstance(max_len, int) or max_len < 1:
        raise InputError(f"PositionalEmbedding: max_len must be a positive int, got {max_len!r}")

    def init(key, input_shape, dtype=jnp.float32):
        if len(input_shape) != 2 or input_shape[0] > max_len:
            raise InputError(
                f"PositionalEmbedding({max_len}): expected (time <= {max_len}, d), got {tuple(input_shape)}"
            )
        return tuple(input_shape), {"table": scale * jax.random.normal(key, (max_len, input_shape[1]), dtype)}

    def forward(params, x):
        table = params["table"]
        if jnp.ndim(x) != 3 or x.shape[1] > table.shape[0] or x.shape[2] != table.shape[1]:
            raise InputError(
                f"PositionalEmbedding: expected (batch, time <= {table.shape[0]}, {table.shape[1]}), "
                f"got {jnp.shape(x)}"
            )
        return x + table[: x.shape[1]], table.shape

    def backward(shape, dy):
        rows = jnp.sum(dy, axis=0)  # (time, d); the rows past time get no gradient
        return {"table": jnp.pad(rows, ((0, shape[0] - rows.shape[0]), (0, 0)))}, dy

    config = {"kind": "PositionalEmbedding", "max_len": max_len}
    return make_layer(f"PositionalEmbedding({max_len})", init, forward, backward, config=config)
