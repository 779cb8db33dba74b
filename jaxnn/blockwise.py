"""Attention block by block: the softmax(q k^T / sqrt(f)) v of every head without its (time x time)
weights in memory, forward and backward written by hand (FlashAttention-2's algorithm).

o, lse = attend(q, k, v, causal=True, block=256)             # q, k, v: (batch, heads, time, f)
dq, dk, dv = attend_backward(q, k, v, o, lse, do, causal=True, block=256)

Dense attention stores a = softmax(s), s = q k^T / sqrt(f), for its backward: batch x heads x
time^2 numbers, which at long contexts outgrow the rest of the model. Here the keys are cut into blocks of
`block` positions and each query block meets them one at a time.

Forward, for one query row (the online softmax). Keep a running maximum m, a running sum l and a
running output acc; for each key block j with scores s_j = q k_j^T / sqrt(f):

    m' = max(m, max s_j)          l' = l e^(m - m') + sum e^(s_j - m')
    acc' = acc e^(m - m') + e^(s_j - m') v_j

(l is `total` in the code). After the last block, o = acc / l
= sum_t' e^(s_t' - m) v_t' / sum_t' e^(s_t' - m), the softmax's output exactly (the factor e^(m - m')
rescales what was summed under the old maximum). The residuals are o and the row's log-sum-exp
lse = m + log l: time numbers per head instead of time^2.

Backward, with do = dL/do. The weights come back from the residual: a_t' = e^(s_t' - lse) exactly,
one block at a time. From o = a v and the softmax's backward,

    dv = a^T do        da = do v^T        ds = a (da - sum_t' da_t' a_t')
    dq = ds k / sqrt(f)                    dk = ds^T q / sqrt(f)

and the row sum needs no pass over the keys: sum_t' da_t' a_t' = sum_t' (do . v_t') a_t' = do . o,
one number per query row (delta) computed from the residual o. So the backward visits each
(query block, key block) pair once: it recomputes s and a, adds a^T do to dv and ds^T q to dk of its
key block, and ds k to dq of its query block.

Causal attention (t' <= t) skips every pair whose key block lies wholly after its query block:
about half of them. A time that is not a multiple of `block` is padded with keys that are masked
out and queries whose rows are dropped.
"""

import math

import jax
import jax.numpy as jnp

from .errors import InputError

__all__ = ["attend", "attend_backward"]


def _blocks(t, block, count):
    """(batch, heads, time, ...) -> (count, batch, heads, block, ...), time padded with zeros to
    count * block. The block index leads, so that a loop picks block i with t[i]."""
    pad = count * block - t.shape[2]
    t = jnp.pad(t, [(0, 0), (0, 0), (0, pad)] + [(0, 0)] * (t.ndim - 3))
    return jnp.moveaxis(t.reshape(t.shape[:2] + (count, block) + t.shape[3:]), 2, 0)


def _unblock(t, time):
    """The inverse of _blocks: (count, batch, heads, block, ...) -> (batch, heads, time, ...)."""
    t = jnp.moveaxis(t, 0, 2)
    return t.reshape(t.shape[:2] + (-1,) + t.shape[4:])[:, :, :time]


def _scores(qi, kj, i, j, block, time, causal):
    """s = qi kj^T (q already divided by sqrt(f)) for query block i and key block j, -inf where a
    key is padding or, when causal, lies after its query."""
    s = jnp.einsum("bhtf,bhuf->bhtu", qi, kj)
    rows = i * block + jnp.arange(block)[:, None]
    cols = j * block + jnp.arange(block)[None, :]
    allowed = cols < time
    if causal:
        allowed = allowed & (cols <= rows)
    return jnp.where(allowed, s, -jnp.inf)


def _check(q, block):
    if jnp.ndim(q) != 4:
        raise InputError(f"attend: expected q, k, v of shape (batch, heads, time, f), got {jnp.shape(q)}")
    if not isinstance(block, int) or block < 1:
        raise InputError(f"attend: block must be a positive int, got {block!r}")


def attend(q, k, v, causal: bool, block: int):
    """softmax(q k^T / sqrt(f)) v, block by block.

    **Arguments:**

    - `q`, `k`, `v`: `(batch, heads, time, f)`.
    - `causal`: if True, query t sees keys t' <= t only.
    - `block`: positions per block (the memory is O(block^2) per head, not O(time^2)).

    **Returns:** `(o, lse)`: the output `(batch, heads, time, f)` and each row's log-sum-exp of its
    scores `(batch, heads, time)`, the residuals of `attend_backward`.
    """
    _check(q, block)
    time, f = q.shape[2], q.shape[3]
    block = min(block, time)  # one block of the whole sequence, not a padded one
    count = -(-time // block)
    qb, kb, vb = (_blocks(t, block, count) for t in (q / math.sqrt(f), k, v))
    zero = jnp.zeros((), q.dtype)

    def query_block(i):
        qi = qb[i]

        def update(j, carry):
            m, total, acc = carry
            s = _scores(qi, kb[j], i, j, block, time, causal)
            m_new = jnp.maximum(m, jnp.max(s, axis=-1))
            p = jnp.exp(s - m_new[..., None])
            rescale = jnp.exp(m - m_new)
            acc = acc * rescale[..., None] + jnp.einsum("bhtu,bhuf->bhtf", p, vb[j])
            return m_new, total * rescale + jnp.sum(p, axis=-1), acc

        start = (jnp.full(qi.shape[:-1], -jnp.inf, q.dtype), jnp.zeros(qi.shape[:-1], q.dtype), zero * qi)

        def step(j, carry):  # causal: key blocks after block i hold no key a query of block i may see
            return (
                jax.lax.cond(j <= i, update, lambda _, same: same, j, carry) if causal else update(j, carry)
            )

        # a loop of fixed length (skipping by cond, not by a shorter loop): jax.grad can differentiate it
        m, total, acc = jax.lax.fori_loop(0, count, step, start)
        return acc / total[..., None], m + jnp.log(total)

    o, lse = jax.lax.map(query_block, jnp.arange(count))
    return _unblock(o, time), _unblock(lse, time)


def attend_backward(q, k, v, o, lse, do, causal: bool, block: int):
    """The gradients of `attend`'s o with respect to q, k and v, block by block.

    **Arguments:**

    - `q`, `k`, `v`: attend's inputs `(batch, heads, time, f)`.
    - `o`, `lse`: attend's outputs.
    - `do`: dL/do `(batch, heads, time, f)`.
    - `causal`, `block`: as given to attend.

    **Returns:** `(dq, dk, dv)`, each `(batch, heads, time, f)`.
    """
    _check(q, block)
    time, f = q.shape[2], q.shape[3]
    root = math.sqrt(f)
    block = min(block, time)
    count = -(-time // block)
    delta = jnp.sum(do * o, axis=-1)  # sum_t' da_t' a_t' = do . o, per query row
    # padded query rows have do = 0 (and delta = 0): they add nothing; their lse of 0 keeps e^(s - lse) finite
    qb, kb, vb, dob = (_blocks(t, block, count) for t in (q / root, k, v, do))
    lseb, deltab = _blocks(lse, block, count), _blocks(delta, block, count)

    def key_block(dq, j):
        kj, vj = kb[j], vb[j]

        def step(i, carry):
            dk, dv, dq = carry
            a = jnp.exp(_scores(qb[i], kj, i, j, block, time, causal) - lseb[i][..., None])
            dv = dv + jnp.einsum("bhtu,bhtf->bhuf", a, dob[i])
            da = jnp.einsum("bhtf,bhuf->bhtu", dob[i], vj)
            ds = a * (da - deltab[i][..., None])
            dk = dk + jnp.einsum("bhtu,bhtf->bhuf", ds, qb[i])  # qb holds q / sqrt(f) already
            dq = dq.at[i].add(jnp.einsum("bhtu,bhuf->bhtf", ds, kj) / root)
            return dk, dv, dq

        def visit(i, carry):  # causal: query blocks before block j see none of its keys
            return jax.lax.cond(i >= j, step, lambda _, same: same, i, carry) if causal else step(i, carry)

        # a loop of fixed length, as in attend: a loop from j would be a while loop, which reverse mode
        # cannot differentiate (jax.jacrev of the hand gradient, a reverse-over-reverse Hessian product)
        dk, dv, dq = jax.lax.fori_loop(0, count, visit, (jnp.zeros_like(kj), jnp.zeros_like(vj), dq))
        return dq, (dk, dv)

    dq, (dk, dv) = jax.lax.scan(key_block, jnp.zeros_like(qb), jnp.arange(count))
    return _unblock(dq, time), _unblock(dk, time), _unblock(dv, time)
