"""Convolutions, NHWC: Conv2D, its 1-D case Conv1D, and ConvTranspose2D, each with its hand backward.

Every framework's "convolution" is a cross-correlation; so is this one. The backward rules are
written as convolutions or as one matmul per kernel tap (see Conv2D), whichever XLA runs faster.
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .core import Layer, make_layer
from .errors import InputError
from .layers import lecun_normal
from .types import Array
from .windows import check_image, check_image_shape, pair, taps

__all__ = ["Conv2D", "Conv1D", "ConvTranspose2D"]

_CONV_DIMS = ("NHWC", "HWIO", "NHWC")


class ConvResiduals(NamedTuple):
    x: Any  # the input (batch, H, W, c_in)
    w: Any  # the kernel (kh, kw, c_in, features)


_AUTO = {True: ("taps", "conv"), False: ("conv", "conv")}
"""backward="auto": (how dw is formed, how dx is formed), on the CPU (True) and elsewhere."""


def Conv2D(
    features: int,
    kernel_size: int | tuple[int, int] = (3, 3),
    stride: int | tuple[int, int] = (1, 1),
    padding: str = "SAME",
    w_init: Callable[..., Array] = lecun_normal,
    backward: str = "auto",
) -> Layer:
    r"""2-D convolution (cross-correlation, as in every framework), NHWC.

    **Arguments:**

    - `features`: output channels.
    - `kernel_size`: `(kh, kw)`, or one int for both.
    - `stride`: `(sh, sw)`, or one int for both.
    - `padding`: "SAME" (output size ceil(H / s)) or "VALID" (only windows inside the image).
    - `w_init(key, shape, dtype) -> w`: the kernel's initialisation (default `lecun_normal`); b starts at 0.
    - `backward`: which exact formulation of the backward sums to run: "conv", "taps" or "auto" (below).

    **Returns:** a Layer with params `{"w": (kh, kw, c_in, features), "b": (features,)}` mapping
    x `(batch, H, W, c_in)` to `(batch, P, Q, features)`.

    With x padded by (lo, hi) and stride s:

    $$
    y_{n,p,q,o} = \sum_{i,j,c} x_{n,\, sp+i,\, sq+j,\, c}\, w_{i,j,c,o} + b_o
    $$

    Backward, with dy of shape (batch, P, Q, features):

    $$
    \begin{aligned}
    \frac{\partial L}{\partial b_o} &= \sum_{n,p,q} dy_{n,p,q,o} \\
    \frac{\partial L}{\partial w_{i,j,c,o}} &= \sum_{n,p,q} x_{n,\, sp+i,\, sq+j,\, c}\; dy_{n,p,q,o} \\
    \frac{\partial L}{\partial x_{n,\, sp+i,\, sq+j,\, c}} &\mathrel{+}= \sum_o dy_{n,p,q,o}\, w_{i,j,c,o}
    \qquad \text{(then the padding is dropped)}
    \end{aligned}
    $$

    Exact formulations of these sums, chosen by `backward`:

    - "conv": as convolutions. dw is x correlated with dy dilated by s (batch and feature axes
      swapped so that the sum runs over n); dx is the transposed convolution: dy dilated by s,
      correlated with w flipped in space and its in and out channels swapped, written as an
      ordinary forward convolution (kernel laid out (kh, kw, features, c_in)).
    - "taps": one matmul per kernel tap (i, j) on the strided view x[:, i::s, j::s]: kh kw matmuls,
      no loop over pixels; dx adds each tap's $dy\, w_{i,j}^\top$ into its view of the padded dx
      (a fori_loop for stride 1, one view in memory at a time). With few input channels
      (kh kw c_in <= 32, a first layer) dw is one matmul of the patches (all taps' views side by
      side) instead.
    - "auto" (default): on the CPU dw as in "taps", dx as in "conv"; "conv" elsewhere. XLA's CPU
      backend runs the swapped-axes convolution of "conv"'s dw slowly inside a `lax.scan` (the
      whole-epoch loop), while dx's forward convolution runs at full speed (the roofline page
      measures seven formulations of dw).
    """
    kernel_size, stride = pair(kernel_size, "kernel_size"), pair(stride, "stride")
    if padding not in ("SAME", "VALID"):
        raise InputError(f"Conv2D: padding must be 'SAME' or 'VALID', got {padding!r}")
    if backward not in ("auto", "conv", "taps"):
        raise InputError(f"Conv2D: backward must be 'auto', 'conv' or 'taps', got {backward!r}")

    def pads(spatial):
        return jax.lax.padtype_to_pads(spatial, kernel_size, stride, padding)

    def init(key, input_shape, dtype=jnp.float32):
        check_image_shape("Conv2D", input_shape)
        h, w, c = input_shape
        (lo_h, hi_h), (lo_w, hi_w) = pads((h, w))
        out_h = (h + lo_h + hi_h - kernel_size[0]) // stride[0] + 1
        out_w = (w + lo_w + hi_w - kernel_size[1]) // stride[1] + 1
        if out_h < 1 or out_w < 1:
            raise InputError(
                f"Conv2D: input {h}x{w} is smaller than the kernel {kernel_size} with {padding} padding"
            )
        weights = w_init(key, kernel_size + (c, features), dtype)
        return (out_h, out_w, features), {"w": weights, "b": jnp.zeros((features,), dtype)}

    def forward(params, x):
        w = params["w"]
        if jnp.ndim(w) != 4 or w.shape[:2] != kernel_size or w.shape[3] != features:
            raise InputError(
                f"Conv2D({features}): params w {jnp.shape(w)} are not those of this layer "
                f"(w: {kernel_size + ('c_in', features)})"
            )
        check_image("Conv2D", x, w.shape[2])
        y = jax.lax.conv_general_dilated(x, w, stride, pads(x.shape[1:3]), dimension_numbers=_CONV_DIMS)
        return y + params["b"], ConvResiduals(x, w)

    def trimmed_pads(x):
        """The padding, its high side trimmed of rows and columns no window reaches."""
        (lo_h, hi_h), (lo_w, hi_w) = pads(x.shape[1:3])
        hi_h -= (x.shape[1] + lo_h + hi_h - kernel_size[0]) % stride[0]
        hi_w -= (x.shape[2] + lo_w + hi_w - kernel_size[1]) % stride[1]
        return (lo_h, hi_h), (lo_w, hi_w)

    def padded(x):
        """x with its padding: (batch, H + lo + hi, W + lo + hi, c_in)."""
        return jnp.pad(x, ((0, 0), *pads(x.shape[1:3]), (0, 0)))

    def weight_grad_conv(x, dy):
        """dw as x correlated with dy dilated by the stride, batch and feature axes swapped."""
        return jax.lax.conv_general_dilated(
            x, dy, (1, 1), trimmed_pads(x), rhs_dilation=stride, dimension_numbers=("CHWN", "IHWO", "HWNC")
        )

    def weight_gradtaps(x, dy):
        """dw[i, j] = view_ij^T dy, one matmul per kernel tap (i, j), the view_ij = x_pad[:, i::s, j::s]
        cut to dy's size. Each is computed as (dy^T view_ij)^T: dy^T is then one transpose shared by
        every tap, where view_ij^T dy made XLA transpose each of the kh*kw views."""
        x_pad = padded(x)
        dw = [
            jnp.einsum("npqo,npqc->oc", dy, view)
            for _, _, view in taps(x_pad, kernel_size, stride, dy.shape[1:3])
        ]
        return jnp.stack(dw).transpose(0, 2, 1).reshape(kernel_size + (x.shape[3], dy.shape[3]))

    def weight_grad_patches(x, dy):
        """dw as one matmul: the patches (the kh*kw strided views of x_pad side by side along the
        channels, (N P Q, kh kw c_in)) transposed times dy (N P Q, features). For few input
        channels (a first layer) this reads dy once instead of once per tap."""
        x_pad = padded(x)
        views = [view for _, _, view in taps(x_pad, kernel_size, stride, dy.shape[1:3])]
        patches = jnp.concatenate(views, axis=-1).reshape(-1, len(views) * x.shape[3])
        dw = jnp.einsum("mk,mo->ko", patches, dy.reshape(-1, dy.shape[3]))
        return dw.reshape(kernel_size + (x.shape[3], dy.shape[3]))

    def input_grad_loop(x, w, dy):
        """dx as input_grad_taps for stride 1, one tap at a time in a fori_loop (a slice update)."""
        (lo_h, hi_h), (lo_w, hi_w) = pads(x.shape[1:3])
        kw = kernel_size[1]
        dx_pad = jnp.zeros(
            (x.shape[0], x.shape[1] + lo_h + hi_h, x.shape[2] + lo_w + hi_w, x.shape[3]), x.dtype
        )

        def tap(t, dx_pad):
            i, j = t // kw, t % kw
            start = (0, i, j, 0)
            part = jax.lax.dynamic_slice(dx_pad, start, dy.shape[:3] + (x.shape[3],))
            return jax.lax.dynamic_update_slice(
                dx_pad, part + jnp.einsum("npqo,co->npqc", dy, w[i, j]), start
            )

        dx_pad = jax.lax.fori_loop(0, kernel_size[0] * kw, tap, dx_pad)
        return dx_pad[:, lo_h : lo_h + x.shape[1], lo_w : lo_w + x.shape[2]]

    def input_grad_conv(x, w, dy):
        """dx as the transposed convolution: dy dilated by the stride, correlated with w flipped
        in space, input and output channels swapped."""
        dilated = [(o - 1) * s + 1 for o, s in zip(dy.shape[1:3], stride)]
        dx_pads = []
        for size, k, (lo, _), d in zip(x.shape[1:3], kernel_size, trimmed_pads(x), dilated):
            first = k - 1 - lo
            dx_pads.append((first, size - 1 + k - d - first))
        w_t = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)  # (kh, kw, features, c_in): a forward kernel
        return jax.lax.conv_general_dilated(
            dy, w_t, (1, 1), dx_pads, lhs_dilation=stride, dimension_numbers=_CONV_DIMS
        )

    def input_gradtaps(x, w, dy):
        """dx: each tap's dy w[i, j]^T added into its strided view of the padded dx."""
        if stride == (1, 1):
            return input_grad_loop(x, w, dy)
        (lo_h, hi_h), (lo_w, hi_w) = pads(x.shape[1:3])
        dx_pad = jnp.zeros(
            (x.shape[0], x.shape[1] + lo_h + hi_h, x.shape[2] + lo_w + hi_w, x.shape[3]), x.dtype
        )
        for (i, j), index, _ in taps(dx_pad, kernel_size, stride, dy.shape[1:3]):
            dx_pad = dx_pad.at[index].add(jnp.einsum("npqo,co->npqc", dy, w[i, j]))
        return dx_pad[:, lo_h : lo_h + x.shape[1], lo_w : lo_w + x.shape[2]]

    def backward_rule(residuals, dy):
        x, w = residuals
        # "auto" on the CPU takes dw from the taps and dx from the convolution
        dw_by, dx_by = (backward, backward) if backward != "auto" else _AUTO[jax.default_backend() == "cpu"]
        if dw_by == "conv":
            dw = weight_grad_conv(x, dy)
        else:
            few_inputs = x.shape[3] * kernel_size[0] * kernel_size[1] <= _PATCH_LIMIT
            dw = weight_grad_patches(x, dy) if few_inputs else weight_gradtaps(x, dy)
        dx = input_gradtaps(x, w, dy) if dx_by == "taps" else input_grad_conv(x, w, dy)
        return {"w": dw, "b": jnp.sum(dy, axis=(0, 1, 2))}, dx

    name = f"Conv2D({features}, {kernel_size}, {stride}, {padding})"
    config = {
        "kind": "Conv2D",
        "features": features,
        "kernel_size": kernel_size,
        "stride": stride,
        "padding": padding,
    }
    return make_layer(name, init, forward, backward_rule, config=config)


# patches of at most this many numbers (kh kw c_in) make Conv2D's CPU weight gradient one matmul
_PATCH_LIMIT = 32


def Conv1D(
    features: int,
    kernel_size: int,
    stride: int = 1,
    padding: str = "SAME",
    w_init: Callable[..., Array] = lecun_normal,
    backward: str = "auto",
) -> Layer:
    r"""1-D convolution over time.

    **Arguments:**

    - `features`: output channels.
    - `kernel_size`, `stride`: ints.
    - `padding`, `w_init`, `backward`: as for `Conv2D`.

    **Returns:** a Layer with params `{"w": (k, c_in, features), "b": (features,)}` mapping x
    `(batch, time, c_in)` to `(batch, time', features)`, with x padded as `padding` says:

    $$
    y_{n,t,o} = \sum_{i,c} x_{n,\, s t + i,\, c}\; w_{i,c,o} + b_o
    $$

    It is Conv2D on (batch, 1, time, c_in) with a (1, k) kernel, so forward and hand backward are
    Conv2D's (see there), with the height axis of size 1 added and removed.
    """
    if not isinstance(kernel_size, int) or not isinstance(stride, int):
        raise InputError(f"Conv1D: kernel_size and stride must be ints, got {kernel_size!r}, {stride!r}")
    inner = Conv2D(features, (1, kernel_size), (1, stride), padding, w_init, backward)

    def init(key, input_shape, dtype=jnp.float32):
        if len(input_shape) != 2:
            raise InputError(
                f"Conv1D: expected one example of shape (time, channels), got {tuple(input_shape)}"
            )
        (_, t, f), params = inner.init(key, (1,) + tuple(input_shape), dtype)
        return (t, f), {"w": params["w"][0], "b": params["b"]}

    def forward(params, x):
        if jnp.ndim(x) != 3:
            raise InputError(f"Conv1D: expected (batch, time, channels), got {jnp.shape(x)}")
        y, residuals = inner.forward({"w": params["w"][None], "b": params["b"]}, x[:, None])
        return y[:, 0], residuals

    def backward_rule(residuals, dy):
        grads, dx = inner.backward(residuals, dy[:, None])
        return {"w": grads["w"][0], "b": grads["b"]}, dx[:, 0]

    name = f"Conv1D({features}, {kernel_size}, {stride}, {padding})"
    config = {
        "kind": "Conv1D",
        "features": features,
        "kernel_size": kernel_size,
        "stride": stride,
        "padding": padding,
    }
    return make_layer(name, init, forward, backward_rule, config=config)


def ConvTranspose2D(
    features: int,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] = (1, 1),
    padding: str = "VALID",
    w_init: Callable[..., Array] | None = None,
) -> Layer:
    r"""Transposed convolution (the adjoint of a strided Conv2D: it spreads each input pixel over a
    kernel-sized patch of the output), NHWC.

    **Arguments:**

    - `features`: output channels.
    - `kernel_size`, `stride`: `(kh, kw)` and `(sh, sw)`, or one int for both.
    - `padding`: "VALID" (the only one implemented).
    - `w_init(key, shape, dtype) -> w`: the kernel's initialisation. Default: N(0, 1 / fan_in) with
      fan_in = c_in kh kw / (sh sw), the number of inputs that reach one output on average.

    **Returns:** a Layer with params `{"w": (kh, kw, c_in, features), "b": (features,)}` mapping x
    `(batch, H, W, c_in)` to `(batch, (H - 1) sh + kh, (W - 1) sw + kw, features)`:

    $$
    y_{n,\, si+a,\, sj+b,\, o} \mathrel{+}= \sum_c x_{n,i,j,c}\, w_{a,b,c,o} \qquad (+\, b_o)
    $$

    Backward, with dy of shape (batch, (H - 1) s + kh, (W - 1) s + kw, features):

    $$
    \begin{aligned}
    \frac{\partial L}{\partial x_{n,i,j,c}} &= \sum_{a,b,o} dy_{n,\, si+a,\, sj+b,\, o}\, w_{a,b,c,o} \\
    \frac{\partial L}{\partial w_{a,b}} &= x^\top dy_{:,\, a::s,\, b::s} \\
    \frac{\partial L}{\partial b} &= \textstyle\sum dy
    \end{aligned}
    $$

    dx is a strided convolution of dy with w, in and out channels swapped; dw is one matmul per
    kernel tap, over x's H W positions. The forward is the convolution of x dilated by s, padded
    by k - 1, with w flipped in space.
    """
    kernel_size, stride = pair(kernel_size, "kernel_size"), pair(stride, "stride")
    if padding != "VALID":
        raise InputError(f"ConvTranspose2D: only padding='VALID' is implemented, got {padding!r}")

    def default_init(key, shape, dtype=jnp.float32):
        fan_in = shape[2] * math.prod(kernel_size) / math.prod(stride)  # inputs reaching one output
        return jax.random.normal(key, shape, dtype) / math.sqrt(fan_in)

    make_w = w_init or default_init

    def init(key, input_shape, dtype=jnp.float32):
        check_image_shape("ConvTranspose2D", input_shape)
        h, w, c = input_shape
        out = ((h - 1) * stride[0] + kernel_size[0], (w - 1) * stride[1] + kernel_size[1], features)
        return out, {"w": make_w(key, kernel_size + (c, features), dtype), "b": jnp.zeros((features,), dtype)}

    def forward(params, x):
        w = params["w"]
        if jnp.ndim(w) != 4 or w.shape[:2] != kernel_size or w.shape[3] != features:
            raise InputError(
                f"ConvTranspose2D({features}): params w {jnp.shape(w)} are not those of this layer"
            )
        check_image("ConvTranspose2D", x, w.shape[2])
        pads = [(k - 1, k - 1) for k in kernel_size]
        y = jax.lax.conv_general_dilated(
            x, jnp.flip(w, (0, 1)), (1, 1), pads, lhs_dilation=stride, dimension_numbers=_CONV_DIMS
        )
        return y + params["b"], ConvResiduals(x, w)

    def backward(residuals, dy):
        x, w = residuals
        dx = jax.lax.conv_general_dilated(dy, w, stride, "VALID", dimension_numbers=("NHWC", "HWOI", "NHWC"))
        # dw[a, b] = x^T view_ab, view_ab = dy[:, a::s, b::s] cut to x's H x W: the taps of dy
        views = taps(dy, kernel_size, stride, x.shape[1:3])
        dw = jnp.stack([jnp.einsum("nijc,nijo->co", x, view) for _, _, view in views])
        dw = dw.reshape(kernel_size + dw.shape[1:])
        return {"w": dw, "b": jnp.sum(dy, axis=(0, 1, 2))}, dx

    config = {"kind": "ConvTranspose2D", "features": features, "kernel_size": kernel_size, "stride": stride}
    return make_layer(
        f"ConvTranspose2D({features}, {kernel_size}, {stride})", init, forward, backward, config=config
    )
