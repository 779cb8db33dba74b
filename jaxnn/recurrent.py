"""Recurrent layers over `lax.scan`, with backpropagation through time written by hand as a
reverse `lax.scan`. x: (batch, time, features) -> (batch, time, hidden); zero initial state, or pass one:
`layer.apply(params, x, initial_state=h0)` (LSTM: `(h0, c0)`), each (batch, hidden). The hand
backward treats a given initial state as a constant (it returns no gradient for it).

The input projection x_t wx of every step is one large matmul before the scan, and the weight
gradients are one large matmul after the backward scan: only the h-recurrence is sequential.
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .activations import activation_row
from .core import Layer, make_layer
from .errors import InputError

__all__ = ["RNN", "LSTM", "GRU", "LastStep", "Cell", "recurrent"]


def _check_sequence(name, x, features):
    if jnp.ndim(x) != 3:
        raise InputError(
            f"{name}: expected a sequence of shape (batch, time, {features}), got {jnp.shape(x)}"
        )
    if x.shape[1] == 0:
        raise InputError(f"{name}: got a sequence of length 0 (shape {jnp.shape(x)})")
    if x.shape[2] != features:
        raise InputError(f"{name}: expected {features} features per step, got shape {jnp.shape(x)}")


def _recurrent_init(name, hidden, gates, forget_bias=0.0):
    def init(key, input_shape, dtype=jnp.float32):
        if len(input_shape) != 2:
            raise InputError(
                f"{name}: expected one example of shape (time, features), got {tuple(input_shape)}"
            )
        if input_shape[0] == 0:
            raise InputError(f"{name}: sequences of length 0 have nothing to read")
        n_in = input_shape[1]
        kx, kh = jax.random.split(key)
        scale = 1 / math.sqrt(hidden)
        params = {
            "wx": jax.random.uniform(kx, (n_in, gates * hidden), dtype, -scale, scale),
            "wh": jax.random.uniform(kh, (hidden, gates * hidden), dtype, -scale, scale),
            "b": jnp.zeros((gates * hidden,), dtype),
        }
        if forget_bias:  # LSTM: forget-gate bias 1, remember by default (Jozefowicz et al. 2015)
            params["b"] = params["b"].at[hidden : 2 * hidden].set(forget_bias)
        return (input_shape[0], hidden), params

    return init


def _initial(name, x, hidden, given, parts):
    """The zero state, or the given one checked: parts arrays of shape (batch, hidden)."""
    zeros = jnp.zeros((x.shape[0], hidden), x.dtype)
    if given is None:
        return zeros if parts == 1 else (zeros,) * parts
    arrays = (given,) if parts == 1 else tuple(given)
    if len(arrays) != parts or any(jnp.shape(a) != zeros.shape for a in arrays):
        raise InputError(
            f"{name}: initial_state must be {parts} array(s) of shape {zeros.shape}, got "
            f"{[jnp.shape(a) for a in arrays]}"
        )
    return given


def _time_major(a):
    return jnp.swapaxes(a, 0, 1)


def _weight_grads(x, h_prev, dz, wx, dz_h=None):
    """Given dz (time, batch, gates*h) of the input path z_t = x_t wx + b and dz_h of the recurrent
    path h_{t-1} wh (the same dz where both are summed before the gates, as in RNN and LSTM):
    the gradients of wx, wh, b and x."""
    dz_h = dz if dz_h is None else dz_h  # None: the same dz
    dwx = jnp.einsum("tbi,tbg->ig", x, dz)
    dwh = jnp.einsum("tbh,tbg->hg", h_prev, dz_h)
    dx = jnp.einsum("tbg,ig->tbi", dz, wx)
    return {"wx": dwx, "wh": dwh, "b": jnp.sum(dz, axis=(0, 1))}, _time_major(dx)


class Cell(NamedTuple):
    """One step of a recurrent cell and its hand-derived reverse, for the shared scans of `recurrent`.

    - `step(wh, carry, zx_t) -> (carry, (h_prev, h_t, saved_t))`, with zx_t = x_t wx + b, carry
      the state (h, or (h, c) for LSTM) and saved_t what `back` needs;
    - `back(wh, dcarry, dy_t, h_prev, h_t, saved_t) -> (dcarry for step t-1, (dz_t, du_t))`, with
      dz_t the gradient of zx_t and du_t that of h_{t-1} wh (None where it is dz_t).
    """

    kind: str  # "RNN", "LSTM" or "GRU": the layer's `config["kind"]`
    gates: int  # columns of wx and wh per hidden unit
    carried: int  # arrays in the carried state
    step: Callable
    back: Callable
    forget_bias: float = 0.0
    activation: str | None = None  # the RNN's row of the activation table


class RecurrentResiduals(NamedTuple):
    xs: Any  # inputs, time-major (time, batch, features)
    h_prev: Any  # h_{t-1} for every step (time, batch, hidden)
    hs: Any  # h_t for every step
    saved: Any  # the cell's own per-step values
    wx: Any
    wh: Any


def recurrent(cell: Cell, hidden: int) -> Layer:
    """A recurrent Layer from a Cell: the forward scan over time and the backward scan in reverse
    (BPTT), both shared by every cell.

    **Arguments:**

    - `cell`: the step and its hand-derived reverse.
    - `hidden`: the state's width h.

    **Returns:** a Layer with params `{"wx": (n_in, gates h), "wh": (h, gates h), "b": (gates h,)}`.
    The input projection x_t wx + b of all steps is one matmul before the scan; the weight gradients
    are one matmul each after the reverse scan.
    """
    name = cell.kind if cell.activation in (None, "tanh") else f"{cell.kind}[{cell.activation}]"

    def forward(params, x, initial_state=None):
        wx, wh, b = params["wx"], params["wh"], params["b"]
        if jnp.shape(wh) != (hidden, cell.gates * hidden):
            raise InputError(
                f"{name}({hidden}): params wh {jnp.shape(wh)} are not those of this layer "
                f"(wh: {(hidden, cell.gates * hidden)})"
            )
        _check_sequence(name, x, wx.shape[0])
        xs = _time_major(x)
        carry = _initial(name, x, wh.shape[0], initial_state, cell.carried)
        _, (h_prev, hs, saved) = jax.lax.scan(lambda c, zx_t: cell.step(wh, c, zx_t), carry, xs @ wx + b)
        return _time_major(hs), RecurrentResiduals(xs, h_prev, hs, saved, wx, wh)

    def backward(residuals, dy):
        xs, h_prev, hs, saved, wx, wh = residuals
        zeros = jnp.zeros_like(hs[0])
        dcarry = zeros if cell.carried == 1 else (zeros,) * cell.carried

        def step(d, inputs):
            return cell.back(wh, d, *inputs)

        _, (dz, du) = jax.lax.scan(step, dcarry, (_time_major(dy), h_prev, hs, saved), reverse=True)
        return _weight_grads(xs, h_prev, dz, wx, dz_h=du)

    init = _recurrent_init(name, hidden, cell.gates, cell.forget_bias)
    config = {"kind": cell.kind, "hidden": hidden, "activation": cell.activation}
    return make_layer(f"{name}({hidden})", init, forward, backward, config=config)


def _rnn_cell(activation: str, options: dict) -> Cell:
    """The Elman cell h_t = f(z_t), z_t = x_t wx + h_{t-1} wh + b, for a row f of the activation table.

    Reverse step: dz_t = dh_t f'(z_t) (the row's derivative, given z_t and h_t = f(z_t)), and dz_t wh^T
    goes to step t-1."""
    row = activation_row(activation, options, where="RNN")

    def step(wh, h, zx_t):
        z = zx_t + h @ wh
        h_new = row.f(z, **options)
        return h_new, (h, h_new, z)

    def back(wh, dh_next, dy_t, h_prev, h_t, z):
        dz = (dy_t + dh_next) * row.df(z, h_t, **options)
        return dz @ wh.T, (dz, None)

    return Cell("RNN", 1, 1, step, back, activation=activation)


def RNN(hidden: int, activation: str = "tanh", **options: float) -> Layer:
    r"""Elman RNN: h_t = f(x_t wx + h_{t-1} wh + b), f a row of the activation table (tanh by default).

    **Arguments:**

    - `hidden`: the state's width h.
    - `activation`: a name from `activations.names()` that has no learnable parameters (not
      "prelu" or "softmax").
    - `**options`: the row's options (e.g. `alpha` for "elu").

    **Returns:** a Layer with params `{"wx": (n_in, h), "wh": (h, h), "b": (h,)}` mapping x
    `(batch, time, n_in)` to `(batch, time, h)`.

    Backpropagation through time, with $dh_t = dy_t$ plus the gradient arriving from step t+1,
    and $z_t$ the pre-activation:

    $$
    \begin{gathered}
    dz_t = dh_t \odot f'(z_t), \qquad \text{to step } t-1\text{: } dz_t\, w_h^\top \\
    dw_x \mathrel{+}= x_t^\top dz_t, \qquad dw_h \mathrel{+}= h_{t-1}^\top dz_t
    \end{gathered}
    $$

    For tanh, $f'(z_t) = 1 - h_t^2$.
    """
    return recurrent(_rnn_cell(activation, options), hidden)


def _lstm_step(wh, carry, zx_t):
    h, c = carry
    n = h.shape[-1]
    z = zx_t + h @ wh
    i, f, o = (jax.nn.sigmoid(z[:, k * n : (k + 1) * n]) for k in (0, 1, 3))
    g = jnp.tanh(z[:, 2 * n : 3 * n])
    c_new = f * c + i * g
    tc = jnp.tanh(c_new)
    h_new = o * tc
    return (h_new, c_new), (h, h_new, (c, i, f, g, o, tc))


def _lstm_back(wh, dcarry, dy_t, h_prev, h_t, saved):
    dh_next, dc_next = dcarry
    c_prev, i, f, g, o, tc = saved
    dh = dy_t + dh_next
    do = dh * tc
    dc = dc_next + dh * o * (1 - tc * tc)
    dz = jnp.concatenate(
        [dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g), do * o * (1 - o)], axis=-1
    )
    return (dz @ wh.T, dc * f), (dz, None)


def LSTM(hidden: int) -> Layer:
    r"""LSTM, gates in the order input, forget, cell candidate, output.

    **Arguments:**

    - `hidden`: the state's width h.

    **Returns:** a Layer with params `{"wx": (n_in, 4h), "wh": (h, 4h), "b": (4h,)}` (the forget gate's
    bias starts at 1) mapping x `(batch, time, n_in)` to `(batch, time, h)`, from a zero state or
    `apply(..., initial_state=(h0, c0))`. With $z_t = x_t w_x + h_{t-1} w_h + b = [z_i\ z_f\ z_g\ z_o]$
    and $\sigma$ the logistic:

    $$
    \begin{gathered}
    i = \sigma(z_i), \quad f = \sigma(z_f), \quad g = \tanh(z_g), \quad o = \sigma(z_o) \\
    c_t = f c_{t-1} + i g, \qquad h_t = o \tanh(c_t)
    \end{gathered}
    $$

    Backpropagation through time, with $dh = dy_t$ plus $dh$ from step t+1, and $dc$ from step t+1:

    $$
    \begin{aligned}
    do &= dh \tanh(c_t), \qquad dc \leftarrow dc + dh\, o\, (1 - \tanh^2 c_t) \\
    di &= dc\, g, \qquad dg = dc\, i, \qquad df = dc\, c_{t-1} \\
    dz &= [\,di\, i(1-i),\ df\, f(1-f),\ dg\, (1-g^2),\ do\, o(1-o)\,]
    \end{aligned}
    $$

    and to step t-1 go $dc\, f$ and $dz\, w_h^\top$.
    """
    return recurrent(Cell("LSTM", 4, 2, _lstm_step, _lstm_back, forget_bias=1.0), hidden)


def _gru_step(wh, h, a):
    n = h.shape[-1]
    u = h @ wh
    r = jax.nn.sigmoid(a[:, :n] + u[:, :n])
    z = jax.nn.sigmoid(a[:, n : 2 * n] + u[:, n : 2 * n])
    cand = jnp.tanh(a[:, 2 * n :] + r * u[:, 2 * n :])
    h_new = (1 - z) * cand + z * h
    return h_new, (h, h_new, (r, z, cand, u[:, 2 * n :]))


def _gru_back(wh, dh_next, dy_t, h_prev, h_t, saved):
    r, z, cand, un = saved
    dh = dy_t + dh_next
    da_n = dh * (1 - z) * (1 - cand * cand)
    da_z = dh * (h_prev - cand) * z * (1 - z)
    da_r = da_n * un * r * (1 - r)
    du = jnp.concatenate([da_r, da_z, da_n * r], axis=-1)
    da = jnp.concatenate([da_r, da_z, da_n], axis=-1)
    return du @ wh.T + dh * z, (da, du)


def GRU(hidden: int) -> Layer:
    r"""GRU, gates in the order reset, update, candidate.

    **Arguments:**

    - `hidden`: the state's width h.

    **Returns:** a Layer with params `{"wx": (n_in, 3h), "wh": (h, 3h), "b": (3h,)}` mapping x
    `(batch, time, n_in)` to `(batch, time, h)`. With $a = x_t w_x + b$, $u = h_{t-1} w_h$ and
    $\sigma$ the logistic:

    $$
    \begin{gathered}
    r = \sigma(a_r + u_r), \quad z = \sigma(a_z + u_z), \quad n = \tanh(a_n + r u_n) \\
    h_t = (1 - z)\, n + z\, h_{t-1}
    \end{gathered}
    $$

    Backpropagation through time, with $dh = dy_t$ plus $dh$ from step t+1:

    $$
    \begin{aligned}
    dn &= dh\, (1 - z), \qquad dz = dh\, (h_{t-1} - n), \qquad dh_{t-1} \mathrel{+}= dh\, z \\
    da_n &= dn\, (1 - n^2), \qquad du_n = da_n\, r, \qquad dr = da_n\, u_n \\
    da_r &= du_r = dr\, r (1 - r), \qquad da_z = du_z = dz\, z (1 - z)
    \end{aligned}
    $$

    and to step t-1 also $[du_r\ du_z\ du_n]\, w_h^\top$; $dw_x$ comes from $da$, $dw_h$ from $du$.
    """
    return recurrent(Cell("GRU", 3, 1, _gru_step, _gru_back), hidden)


def LastStep() -> Layer:
    """The last step's output, for sequence classification: (batch, time, features) -> (batch, features).

    **Returns:** a Layer without params. Backward puts dy at the last step and zeros elsewhere.
    """

    def init(key, input_shape, dtype=jnp.float32):
        return tuple(input_shape[1:]), ()

    def forward(params, x):
        if jnp.ndim(x) != 3:
            raise InputError(f"LastStep: expected (batch, time, features), got {jnp.shape(x)}")
        return x[:, -1], x.shape

    def backward(shape, dy):
        return (), jnp.zeros(shape, dy.dtype).at[:, -1].set(dy)

    return make_layer("LastStep", init, forward, backward, config={"kind": "LastStep"})
