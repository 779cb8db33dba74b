"""Layers with parameters or shape changes: Dense, Flatten, mlp.

Each forward is followed by its hand-derived backward.
"""
import math

import jax
import jax.numpy as jnp

from .activations import activation
from .core import Layer, check_batch, make_layer, serial


def lecun_normal(key, shape, dtype=jnp.float32):
    """Weights ~ N(0, 1 / fan_in), fan_in = product of all but the last axis."""
    fan_in = math.prod(shape[:-1])
    return jax.random.normal(key, shape, dtype) / math.sqrt(fan_in)


def Dense(features, w_init=lecun_normal):
    """Fully connected: y = x @ w + b (the lecture's F(W, x, b) = Wx + b, rows as examples).

    params {"w": (n_in, features), "b": (features,)};  x: (batch, n_in) -> y: (batch, features).

    Backward, with dy = dL/dy of shape (batch, features):
        dL/dw = x^T dy        dL/db = sum over the batch of dy        dL/dx = dy w^T
    """
    if not isinstance(features, int) or features < 1:
        raise ValueError(f"Dense: features must be a positive int, got {features!r}")

    def init(key, input_shape, dtype=jnp.float32):
        if len(input_shape) != 1:
            raise ValueError(
                f"Dense: expected one example of shape (n_in,), got input_shape {tuple(input_shape)}; "
                "put Flatten() before Dense for images"
            )
        w = w_init(key, (input_shape[0], features), dtype)
        return (features,), {"w": w, "b": jnp.zeros((features,), dtype)}

    def forward(params, x):
        w, b = params["w"], params["b"]
        check_batch("Dense", x, w.shape[:1])
        return x @ w + b, (x, w)

    def backward(residuals, dy):
        x, w = residuals
        return {"w": x.T @ dy, "b": jnp.sum(dy, axis=0)}, dy @ w.T

    return make_layer(f"Dense({features})", init, forward, backward)


def Flatten():
    """(batch, d1, d2, ...) -> (batch, d1 * d2 * ...). Backward reshapes dy back. Params: ()."""

    def init(key, input_shape, dtype=jnp.float32):
        return (math.prod(input_shape),), ()

    def forward(params, x):
        if jnp.ndim(x) < 1:
            raise ValueError(f"Flatten: expected input with a batch axis, got shape {jnp.shape(x)}")
        return jnp.reshape(x, (x.shape[0], -1)), x.shape

    def backward(shape, dy):
        return (), jnp.reshape(dy, shape)

    return make_layer("Flatten", init, forward, backward)


def mlp(sizes, activation="relu", **options):
    """A feed-forward net: Dense/activation pairs, no activation after the last Dense.

    sizes include the input width: mlp([784, 512, 512, 10]) maps (batch, 784) -> (batch, 10).
    `activation` is a name from the table (with `options`) or a Layer.
    """
    sizes = list(sizes)
    if len(sizes) < 2 or not all(isinstance(s, int) and s > 0 for s in sizes):
        raise ValueError(f"mlp: sizes must be at least two positive ints (input width first), got {sizes}")
    layers = []
    for width in sizes[1:-1]:
        layers += [Dense(width), _activation_layer(activation, options)]
    layers.append(Dense(sizes[-1]))
    model = serial(*layers)

    def init(key, input_shape=(sizes[0],), dtype=jnp.float32):
        if tuple(input_shape) != (sizes[0],):
            raise ValueError(f"mlp: built for inputs of shape ({sizes[0]},), got input_shape {tuple(input_shape)}")
        return model.init(key, input_shape, dtype=dtype)

    return model._replace(init=init, name=f"mlp({sizes}, {getattr(activation, 'name', activation)})")


def _activation_layer(act, options):
    return act if isinstance(act, Layer) else activation(act, **options)


# --- convolution and pooling (NHWC) ------------------------------------------------------------------

_CONV_DIMS = ("NHWC", "HWIO", "NHWC")


def _pair(v, what):
    v = (v, v) if isinstance(v, int) else tuple(v)
    if len(v) != 2 or not all(isinstance(i, int) and i > 0 for i in v):
        raise ValueError(f"{what} must be a positive int or a pair of them, got {v!r}")
    return v


def _check_image(name, x, channels=None):
    if jnp.ndim(x) != 4:
        raise ValueError(f"{name}: expected images of shape (batch, H, W, C), got {jnp.shape(x)}")
    if channels is not None and x.shape[-1] != channels:
        raise ValueError(f"{name}: expected {channels} input channels, got {x.shape[-1]} (shape {jnp.shape(x)})")


def Conv2D(features, kernel_size=(3, 3), stride=(1, 1), padding="SAME", w_init=lecun_normal, backward="auto"):
    """2-D convolution (cross-correlation, as in every framework), NHWC.

    params {"w": (kh, kw, c_in, features), "b": (features,)}; x: (batch, H, W, c_in).
    With x padded by (lo, hi) and stride s:   y[n, p, q, o] = sum_{i, j, c} x[n, s p + i, s q + j, c] w[i, j, c, o] + b[o]

    Backward (dy: (batch, P, Q, features)):
      dL/db = sum_{n,p,q} dy
      dL/dw[i, j, c, o] = sum_{n,p,q} x[n, s p + i, s q + j, c] dy[n, p, q, o]
      dL/dx[n, s p + i, s q + j, c] += sum_o dy[n, p, q, o] w[i, j, c, o]     (then drop the padding)

    Two exact formulations of these sums, chosen by `backward`:
      "conv": as convolutions: dw is x correlated with dy dilated by s (batch and feature axes
              swapped so the sum runs over n); dx is the transposed convolution (dy dilated by s,
              correlated with w flipped in space, in/out channels swapped). Best on accelerators.
      "taps": one matmul per kernel tap (i, j) on the strided view x[:, i::s, j::s]: kh*kw matmuls,
              no loop over pixels. XLA's CPU backend runs the swapped-axes convolution of "conv"
              about 50x slower inside a `lax.scan` (our whole-epoch loop); these matmuls do not suffer.
      "auto" (default): "taps" on the CPU, "conv" elsewhere.
    """
    kernel_size, stride = _pair(kernel_size, "kernel_size"), _pair(stride, "stride")
    if padding not in ("SAME", "VALID"):
        raise ValueError(f"Conv2D: padding must be 'SAME' or 'VALID', got {padding!r}")
    if backward not in ("auto", "conv", "taps"):
        raise ValueError(f"Conv2D: backward must be 'auto', 'conv' or 'taps', got {backward!r}")

    def pads(spatial):
        return jax.lax.padtype_to_pads(spatial, kernel_size, stride, padding)

    def init(key, input_shape, dtype=jnp.float32):
        if len(input_shape) != 3:
            raise ValueError(f"Conv2D: expected one example of shape (H, W, C), got input_shape {tuple(input_shape)}")
        h, w, c = input_shape
        (lo_h, hi_h), (lo_w, hi_w) = pads((h, w))
        out_h = (h + lo_h + hi_h - kernel_size[0]) // stride[0] + 1
        out_w = (w + lo_w + hi_w - kernel_size[1]) // stride[1] + 1
        if out_h < 1 or out_w < 1:
            raise ValueError(f"Conv2D: input {h}x{w} is smaller than the kernel {kernel_size} with {padding} padding")
        weights = w_init(key, kernel_size + (c, features), dtype)
        return (out_h, out_w, features), {"w": weights, "b": jnp.zeros((features,), dtype)}

    def forward(params, x):
        w = params["w"]
        _check_image("Conv2D", x, w.shape[2])
        y = jax.lax.conv_general_dilated(x, w, stride, pads(x.shape[1:3]), dimension_numbers=_CONV_DIMS)
        return y + params["b"], (x, w)

    def backward_conv(x, w, dy):
        (lo_h, hi_h), (lo_w, hi_w) = pads(x.shape[1:3])
        # trim the high padding so that the weight gradient comes out exactly kernel-sized
        hi_h -= (x.shape[1] + lo_h + hi_h - kernel_size[0]) % stride[0]
        hi_w -= (x.shape[2] + lo_w + hi_w - kernel_size[1]) % stride[1]
        dw = jax.lax.conv_general_dilated(
            x, dy, (1, 1), ((lo_h, hi_h), (lo_w, hi_w)), rhs_dilation=stride,
            dimension_numbers=("CHWN", "IHWO", "HWNC"),
        )
        dilated = [(o - 1) * s + 1 for o, s in zip(dy.shape[1:3], stride)]
        dx_pads = []
        for size, k, lo, d in zip(x.shape[1:3], kernel_size, (lo_h, lo_w), dilated):
            first = k - 1 - lo
            dx_pads.append((first, size - 1 + k - d - first))
        dx = jax.lax.conv_general_dilated(
            dy, jnp.flip(w, (0, 1)), (1, 1), dx_pads, lhs_dilation=stride,
            dimension_numbers=("NHWC", "HWOI", "NHWC"),
        )
        return dw, dx

    def backward_taps(x, w, dy):
        (lo_h, hi_h), (lo_w, hi_w) = pads(x.shape[1:3])
        x_pad = jnp.pad(x, ((0, 0), (lo_h, hi_h), (lo_w, hi_w), (0, 0)))
        dx_pad = jnp.zeros_like(x_pad)
        dw = [[None] * kernel_size[1] for _ in range(kernel_size[0])]
        for (i, j), index, view in _taps(x_pad, kernel_size, stride, dy.shape[1:3]):
            dw[i][j] = jnp.einsum("npqc,npqo->co", view, dy)
            dx_pad = dx_pad.at[index].add(jnp.einsum("npqo,co->npqc", dy, w[i, j]))
        dx = dx_pad[:, lo_h : lo_h + x.shape[1], lo_w : lo_w + x.shape[2]]
        return jnp.stack([jnp.stack(row) for row in dw]), dx

    def backward_rule(residuals, dy):
        x, w = residuals
        use_taps = backward == "taps" or (backward == "auto" and jax.default_backend() == "cpu")
        dw, dx = (backward_taps if use_taps else backward_conv)(x, w, dy)
        return {"w": dw, "b": jnp.sum(dy, axis=(0, 1, 2))}, dx

    name = f"Conv2D({features}, {kernel_size}, {stride}, {padding})"
    return make_layer(name, init, forward, backward_rule)


def _taps(x, window, stride, out_size):
    """For each window offset (i, j): ((i, j), index, x[index]) with x[index] the strided view
    x[:, i::s, j::s] cut to the output size out_size = (P, Q)."""
    for i in range(window[0]):
        for j in range(window[1]):
            index = (slice(None), slice(i, i + stride[0] * (out_size[0] - 1) + 1, stride[0]),
                     slice(j, j + stride[1] * (out_size[1] - 1) + 1, stride[1]))
            yield (i, j), index, x[index]


def _windows(x, window, stride):
    """Pooling windows as taps: (index, view) per window offset (VALID: the output size follows)."""
    out_size = ((x.shape[1] - window[0]) // stride[0] + 1, (x.shape[2] - window[1]) // stride[1] + 1)
    for _, index, view in _taps(x, window, stride, out_size):
        yield index, view


def _pool(kind, window, stride):
    window = _pair(window, "window")
    stride = window if stride is None else _pair(stride, "stride")
    name = f"{kind}({window}, {stride})"

    def init(key, input_shape, dtype=jnp.float32):
        if len(input_shape) != 3:
            raise ValueError(f"{kind}: expected one example of shape (H, W, C), got input_shape {tuple(input_shape)}")
        h, w, c = input_shape
        if h < window[0] or w < window[1]:
            raise ValueError(f"{kind}: input {h}x{w} is smaller than the window {window}")
        return ((h - window[0]) // stride[0] + 1, (w - window[1]) // stride[1] + 1, c), ()

    def forward(params, x):
        _check_image(kind, x)
        views = [view for _, view in _windows(x, window, stride)]
        if kind == "MaxPool":
            y = views[0]
            for view in views[1:]:
                y = jnp.maximum(y, view)
        else:
            y = sum(views) / len(views)
        return y, (x, y)

    def backward_tiled(x, y, dy):
        """Windows that tile the input (stride == window): one reshape puts each window on its own
        axes, and dx is formed in one pass, without a scatter per window offset."""
        (kh, kw), (n, oh, ow, c) = window, y.shape
        tiles = x[:, : oh * kh, : ow * kw].reshape(n, oh, kh, ow, kw, c)
        if kind == "MaxPool":  # the first maximum of each window takes dy (XLA fuses this loop)
            taken = jnp.zeros(y.shape, bool)
            rows = []
            for i in range(kh):
                row = []
                for j in range(kw):
                    route = (tiles[:, :, i, :, j] == y) & ~taken
                    taken = taken | route
                    row.append(jnp.where(route, dy, 0))
                rows.append(jnp.stack(row, axis=3))  # (n, oh, ow, kw, c)
            d_tiles = jnp.stack(rows, axis=2)  # (n, oh, kh, ow, kw, c)
        else:
            d_tiles = jnp.broadcast_to(dy[:, :, None, :, None] / (kh * kw), tiles.shape)
        dx = d_tiles.reshape(n, oh * kh, ow * kw, c)
        if dx.shape != x.shape:  # rows or columns the windows did not reach get no gradient
            dx = jnp.pad(dx, ((0, 0), (0, x.shape[1] - oh * kh), (0, x.shape[2] - ow * kw), (0, 0)))
        return dx

    def backward(residuals, dy):
        x, y = residuals
        if stride == window:
            return (), backward_tiled(x, y, dy)
        dx = jnp.zeros_like(x)
        taken = jnp.zeros(y.shape, bool)
        for index, view in _windows(x, window, stride):
            if kind == "MaxPool":  # the gradient goes to the (first) maximum of each window
                route = (view == y) & ~taken
                taken = taken | route
                dx = dx.at[index].add(jnp.where(route, dy, 0))
            else:  # every input of a window gets an equal share
                dx = dx.at[index].add(dy / (window[0] * window[1]))
        return (), dx

    return make_layer(name, init, forward, backward)


def MaxPool(window=(2, 2), stride=None):
    """Max pooling (VALID), NHWC. y = max over each window; dL/dx = dy at the window's maximum
    (the first one if tied), 0 elsewhere; overlapping windows add up. Params: ().
    Windows that tile the input (stride == window, the default) take a reshape; overlapping ones
    a pass per window offset."""
    return _pool("MaxPool", window, stride)


def AvgPool(window=(2, 2), stride=None):
    """Average pooling (VALID), NHWC. y = mean over each window; dL/dx = dy / (kh kw) to every
    input of the window; overlapping windows add up. Params: ()."""
    return _pool("AvgPool", window, stride)


# --- regularisation and normalisation ------------------------------------------------------------------

def Dropout(rate):
    """Inverted dropout: with a key, y = x * m / (1 - rate), m ~ Bernoulli(1 - rate) per element;
    without a key (evaluation), y = x. Backward: dx = dy * m / (1 - rate). Params: ()."""
    if not 0 <= rate < 1:
        raise ValueError(f"Dropout: rate must be in [0, 1), got {rate}")

    def init(key, input_shape, dtype=jnp.float32):
        return tuple(input_shape), ()

    def forward(params, x, key=None):
        if key is None or rate == 0:
            return x, None
        scale = jax.random.bernoulli(key, 1 - rate, x.shape).astype(x.dtype) / (1 - rate)
        return x * scale, scale

    def backward(scale, dy):
        return (), dy if scale is None else dy * scale

    return make_layer(f"Dropout({rate})", init, forward, backward)


def LayerNorm(eps=1e-5):
    """Layer normalisation over the last axis, with a learned scale g and bias b.
    params {"scale": (d,), "bias": (d,)}.

        mu, var = mean and variance of x over the last axis;  xhat = (x - mu) / sqrt(var + eps)
        y = g xhat + b

    Backward, with the means over the last axis (d entries):
        dL/dg = sum over the other axes of dy xhat        dL/db = sum of dy
        dxhat = dy g
        dL/dx = (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) / sqrt(var + eps)
    """

    def init(key, input_shape, dtype=jnp.float32):
        d = input_shape[-1]
        return tuple(input_shape), {"scale": jnp.ones((d,), dtype), "bias": jnp.zeros((d,), dtype)}

    def forward(params, x):
        if x.shape[-1] != params["scale"].shape[0]:
            raise ValueError(f"LayerNorm: expected {params['scale'].shape[0]} features on the last axis, got {x.shape}")
        mu = jnp.mean(x, axis=-1, keepdims=True)
        centred = x - mu
        inv_std = jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True) + eps)
        xhat = centred * inv_std
        return xhat * params["scale"] + params["bias"], (xhat, inv_std, params["scale"])

    def backward(residuals, dy):
        xhat, inv_std, scale = residuals
        axes = tuple(range(dy.ndim - 1))
        dxhat = dy * scale
        dx = inv_std * (dxhat - jnp.mean(dxhat, -1, keepdims=True) - xhat * jnp.mean(dxhat * xhat, -1, keepdims=True))
        return {"scale": jnp.sum(dy * xhat, axis=axes), "bias": jnp.sum(dy, axis=axes)}, dx

    return make_layer("LayerNorm", init, forward, backward)
