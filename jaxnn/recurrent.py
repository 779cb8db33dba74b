"""Recurrent layers over `lax.scan`, with backpropagation through time written by hand as a
reverse `lax.scan`. x: (batch, time, features) -> (batch, time, hidden); zero initial state, or pass one:
`layer.apply(params, x, initial_state=h0)` (LSTM: `(h0, c0)`), each (batch, hidden). The hand
backward treats a given initial state as a constant (it returns no gradient for it).

The input projection x_t wx of every step is one large matmul before the scan, and the weight
gradients are one large matmul after the backward scan: only the h-recurrence is sequential.
"""
import math

import jax
import jax.numpy as jnp

from .core import make_layer


def _check_sequence(name, x, features):
    if jnp.ndim(x) != 3:
        raise ValueError(f"{name}: expected a sequence of shape (batch, time, {features}), got {jnp.shape(x)}")
    if x.shape[1] == 0:
        raise ValueError(f"{name}: got a sequence of length 0 (shape {jnp.shape(x)})")
    if x.shape[2] != features:
        raise ValueError(f"{name}: expected {features} features per step, got shape {jnp.shape(x)}")


def _recurrent_init(name, hidden, gates):
    def init(key, input_shape, dtype=jnp.float32):
        if len(input_shape) != 2:
            raise ValueError(f"{name}: expected one example of shape (time, features), got {tuple(input_shape)}")
        if input_shape[0] == 0:
            raise ValueError(f"{name}: sequences of length 0 have nothing to read")
        n_in = input_shape[1]
        kx, kh = jax.random.split(key)
        scale = 1 / math.sqrt(hidden)
        params = {
            "wx": jax.random.uniform(kx, (n_in, gates * hidden), dtype, -scale, scale),
            "wh": jax.random.uniform(kh, (hidden, gates * hidden), dtype, -scale, scale),
            "b": jnp.zeros((gates * hidden,), dtype),
        }
        if name == "LSTM":  # forget-gate bias 1: remember by default (Jozefowicz et al. 2015)
            params["b"] = params["b"].at[hidden : 2 * hidden].set(1.0)
        return (input_shape[0], hidden), params

    return init


def _initial(name, x, hidden, given, parts):
    """The zero state, or the given one checked: parts arrays of shape (batch, hidden)."""
    zeros = jnp.zeros((x.shape[0], hidden), x.dtype)
    if given is None:
        return zeros if parts == 1 else (zeros,) * parts
    arrays = (given,) if parts == 1 else tuple(given)
    if len(arrays) != parts or any(jnp.shape(a) != zeros.shape for a in arrays):
        raise ValueError(f"{name}: initial_state must be {parts} array(s) of shape {zeros.shape}, got "
                         f"{[jnp.shape(a) for a in arrays]}")
    return given


def _time_major(a):
    return jnp.swapaxes(a, 0, 1)


def _weight_grads(x, h_prev, dz, wx, dz_h=None):
    """Given dz (time, batch, gates*h) of the input path z_t = x_t wx + b and dz_h of the recurrent
    path h_{t-1} wh (the same dz where both are summed before the gates, as in RNN and LSTM):
    the gradients of wx, wh, b and x."""
    dz_h = dz if dz_h is None else dz_h
    dwx = jnp.einsum("tbi,tbg->ig", x, dz)
    dwh = jnp.einsum("tbh,tbg->hg", h_prev, dz_h)
    dx = jnp.einsum("tbg,ig->tbi", dz, wx)
    return {"wx": dwx, "wh": dwh, "b": jnp.sum(dz, axis=(0, 1))}, _time_major(dx)


def RNN(hidden, activation="tanh"):
    """Elman RNN: h_t = tanh(x_t wx + h_{t-1} wh + b).  params {"wx": (n_in, h), "wh": (h, h), "b": (h,)}.

    BPTT, with dh_t = dy_t + (gradient arriving from step t+1):
        dz_t = dh_t (1 - h_t^2);   to step t-1: dz_t wh^T;   dwx += x_t^T dz_t;   dwh += h_{t-1}^T dz_t
    """
    if activation != "tanh":
        raise ValueError(f"RNN: only activation='tanh' is implemented, got {activation!r}")

    def forward(params, x, initial_state=None):
        wx, wh, b = params["wx"], params["wh"], params["b"]
        _check_sequence("RNN", x, wx.shape[0])
        xs = _time_major(x)
        zx = xs @ wx + b

        def step(h, zx_t):
            h_new = jnp.tanh(zx_t + h @ wh)
            return h_new, (h, h_new)

        h0 = _initial("RNN", x, wh.shape[0], initial_state, 1)
        _, (h_prev, hs) = jax.lax.scan(step, h0, zx)
        return _time_major(hs), (xs, h_prev, hs, wx, wh)

    def backward(residuals, dy):
        xs, h_prev, hs, wx, wh = residuals

        def step(dh_next, inputs):
            dy_t, h_t = inputs
            dz = (dy_t + dh_next) * (1 - h_t * h_t)
            return dz @ wh.T, dz

        _, dz = jax.lax.scan(step, jnp.zeros_like(hs[0]), (_time_major(dy), hs), reverse=True)
        return _weight_grads(xs, h_prev, dz, wx)

    return make_layer(f"RNN({hidden})", _recurrent_init("RNN", hidden, 1), forward, backward)


def LSTM(hidden):
    """LSTM, gates in the order input, forget, cell candidate, output.
    params {"wx": (n_in, 4h), "wh": (h, 4h), "b": (4h,)};  z_t = x_t wx + h_{t-1} wh + b = [z_i z_f z_g z_o]

        i = s(z_i)  f = s(z_f)  g = tanh(z_g)  o = s(z_o)    (s: logistic)
        c_t = f c_{t-1} + i g        h_t = o tanh(c_t)

    BPTT, with dh = dy_t + dh from step t+1 and dc from step t+1:
        do = dh tanh(c_t)            dc <- dc + dh o (1 - tanh(c_t)^2)
        di = dc g   dg = dc i   df = dc c_{t-1}        to step t-1: dc f and dz wh^T
        dz = [di i(1-i), df f(1-f), dg (1-g^2), do o(1-o)]
    """

    def forward(params, x, initial_state=None):
        wx, wh, b = params["wx"], params["wh"], params["b"]
        _check_sequence("LSTM", x, wx.shape[0])
        n = wh.shape[0]
        xs = _time_major(x)
        zx = xs @ wx + b

        def step(carry, zx_t):
            h, c = carry
            z = zx_t + h @ wh
            i, f, o = (jax.nn.sigmoid(z[:, k * n : (k + 1) * n]) for k in (0, 1, 3))
            g = jnp.tanh(z[:, 2 * n : 3 * n])
            c_new = f * c + i * g
            tc = jnp.tanh(c_new)
            h_new = o * tc
            return (h_new, c_new), (h, c, i, f, g, o, tc, h_new)

        _, saved = jax.lax.scan(step, tuple(_initial("LSTM", x, n, initial_state, 2)), zx)
        return _time_major(saved[-1]), (xs, saved[:-1], wx, wh)

    def backward(residuals, dy):
        xs, (h_prev, c_prev, i, f, g, o, tc), wx, wh = residuals

        def step(carry, inputs):
            dh_next, dc_next = carry
            dy_t, c_prev_t, i_t, f_t, g_t, o_t, tc_t = inputs
            dh = dy_t + dh_next
            do = dh * tc_t
            dc = dc_next + dh * o_t * (1 - tc_t * tc_t)
            dz = jnp.concatenate([
                dc * g_t * i_t * (1 - i_t),
                dc * c_prev_t * f_t * (1 - f_t),
                dc * i_t * (1 - g_t * g_t),
                do * o_t * (1 - o_t),
            ], axis=-1)
            return (dz @ wh.T, dc * f_t), dz

        zeros = jnp.zeros_like(tc[0])
        _, dz = jax.lax.scan(step, (zeros, zeros), (_time_major(dy), c_prev, i, f, g, o, tc), reverse=True)
        return _weight_grads(xs, h_prev, dz, wx)

    return make_layer(f"LSTM({hidden})", _recurrent_init("LSTM", hidden, 4), forward, backward)


def GRU(hidden):
    """GRU, gates in the order reset, update, candidate.
    params {"wx": (n_in, 3h), "wh": (h, 3h), "b": (3h,)};  a = x_t wx + b,  u = h_{t-1} wh

        r = s(a_r + u_r)   z = s(a_z + u_z)   n = tanh(a_n + r u_n)
        h_t = (1 - z) n + z h_{t-1}

    BPTT, with dh = dy_t + dh from step t+1:
        dn = dh (1 - z)   dz = dh (h_{t-1} - n)   dh_{t-1} gets dh z
        da_n = dn (1 - n^2)   du_n = da_n r   dr = da_n u_n
        da_r = du_r = dr r(1-r)   da_z = du_z = dz z(1-z)
        to step t-1 also: [du_r du_z du_n] wh^T;  dwx from da, dwh from du
    """

    def forward(params, x, initial_state=None):
        wx, wh, b = params["wx"], params["wh"], params["b"]
        _check_sequence("GRU", x, wx.shape[0])
        n = wh.shape[0]
        xs = _time_major(x)
        ax = xs @ wx + b

        def step(h, a):
            u = h @ wh
            r = jax.nn.sigmoid(a[:, :n] + u[:, :n])
            z = jax.nn.sigmoid(a[:, n : 2 * n] + u[:, n : 2 * n])
            cand = jnp.tanh(a[:, 2 * n :] + r * u[:, 2 * n :])
            h_new = (1 - z) * cand + z * h
            return h_new, (h, r, z, cand, u[:, 2 * n :], h_new)

        _, saved = jax.lax.scan(step, _initial("GRU", x, n, initial_state, 1), ax)
        return _time_major(saved[-1]), (xs, saved[:-1], wx, wh)

    def backward(residuals, dy):
        xs, (h_prev, r, z, cand, un), wx, wh = residuals

        def step(dh_next, inputs):
            dy_t, h_t, r_t, z_t, n_t, un_t = inputs
            dh = dy_t + dh_next
            da_n = dh * (1 - z_t) * (1 - n_t * n_t)
            da_z = dh * (h_t - n_t) * z_t * (1 - z_t)
            da_r = da_n * un_t * r_t * (1 - r_t)
            du = jnp.concatenate([da_r, da_z, da_n * r_t], axis=-1)
            da = jnp.concatenate([da_r, da_z, da_n], axis=-1)
            return du @ wh.T + dh * z_t, (da, du)

        _, (da, du) = jax.lax.scan(step, jnp.zeros_like(cand[0]), (_time_major(dy), h_prev, r, z, cand, un),
                                   reverse=True)
        return _weight_grads(xs, h_prev, da, wx, dz_h=du)

    return make_layer(f"GRU({hidden})", _recurrent_init("GRU", hidden, 3), forward, backward)


def LastStep():
    """(batch, time, features) -> (batch, features): the last step's output, for sequence
    classification. Backward puts dy at the last step and zeros elsewhere. Params: ()."""

    def init(key, input_shape, dtype=jnp.float32):
        return tuple(input_shape[1:]), ()

    def forward(params, x):
        if jnp.ndim(x) != 3:
            raise ValueError(f"LastStep: expected (batch, time, features), got {jnp.shape(x)}")
        return x[:, -1], x.shape

    def backward(shape, dy):
        return (), jnp.zeros(shape, dy.dtype).at[:, -1].set(dy)

    return make_layer("LastStep", init, forward, backward)
