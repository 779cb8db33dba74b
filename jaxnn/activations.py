r"""The activation table: each row holds f and its hand-derived derivatives f' and f'', side by side.

| name | $f(x)$ | $f'(x)$ |
| --- | --- | --- |
| identity | $x$ | $1$ |
| binary_step | $1$ if $x \ge 0$, else $0$ | $0$ (at 0 too) |
| logistic | $\sigma(x) = 1 / (1 + e^{-x})$ | $f(x)\,(1 - f(x))$ |
| tanh | $2 / (1 + e^{-2x}) - 1$ | $1 - f(x)^2$ |
| arctan | $\tan^{-1} x$ | $1 / (x^2 + 1)$ |
| relu | $x$ if $x \ge 0$, else $0$ | $1$ if $x \ge 0$, else $0$ |
| leaky_relu | $x$ if $x \ge 0$, else $s\,x$ | $1$ if $x \ge 0$, else $s$ |
| prelu | $x$ if $x \ge 0$, else $\alpha x$ | $1$ if $x \ge 0$, else $\alpha$ |
| elu | $x$ if $x \ge 0$, else $\alpha\,(e^x - 1)$ | $1$ if $x \ge 0$, else $f(x) + \alpha$ |
| softplus | $\log(1 + e^x)$ | $\sigma(x)$ |
| gelu | $x\,\Phi(x)$ | $\Phi(x) + x\,\phi(x)$ |
| silu | $x\,\sigma(x)$ | $\sigma(x)\,(1 + x\,(1 - \sigma(x)))$ |

$\Phi$ and $\phi$ are the normal distribution's cdf and pdf; PReLU's slope $\alpha$ is learned,
with $\partial f / \partial \alpha = \min(x, 0)$. Softmax is a layer of its own.

Rows follow the classic table of activation functions; at a kink, ReLU, PReLU and ELU take the
x >= 0 branch (derivative 1) and binary step's derivative is 0 everywhere. `df(x, y)` receives both
the input x and the output y = f(x), so a derivative written in terms of f (logistic, tanh, ELU)
reads exactly as in the table; so does `d2f(x, y)`, the second derivative, which the curvature
sweep (`jaxnn.curvature`) needs for the Hessian. Piecewise-linear rows have f'' = 0 (at a kink
the one-sided value, 0 too).

Every row is finite in value and derivative for |x| up to 1e4 in float32: softplus uses logaddexp,
ELU takes expm1 of min(x, 0) so the untaken branch never overflows (the "double where" fix).

    layer = activation("elu", alpha=1.0)    # a Layer with params ()
    layer = activation("prelu", alpha=0.25) # params {"alpha": ()}, learned
"""

import math
from collections.abc import Callable, Collection
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import erf

from .core import Layer, make_layer
from .errors import InputError, InputTypeError
from .renamed import removed_attribute

__all__ = [
    "ActivationRow",
    "TABLE",
    "PIECEWISE_LINEAR",
    "ALIASES",
    "NAMES",
    "names",
    "activation",
    "activation_row",
    "prelu",
    "softmax",
]


class ActivationRow(NamedTuple):
    """A row of the table: `f(x, **options)`, its derivatives `df(x, y, **options)` and
    `d2f(x, y, **options)` given y = f(x), and the row's options with their defaults."""

    f: Callable  # f(x, **opts)
    df: Callable  # f'(x, y, **opts), with y = f(x)
    d2f: Callable  # f''(x, y, **opts), with y = f(x)
    options: dict  # option name -> default


def _logistic(x):
    return jax.nn.sigmoid(x)  # lax.logistic: stable for any x


def _phi_cdf(x):
    return 0.5 * (1.0 + erf(x / math.sqrt(2.0)))


def _phi_pdf(x):
    return jnp.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _zero(x, y, **options):
    return jnp.zeros_like(x)


TABLE = {
    # identity: f(x) = x;  f'(x) = 1;  f''(x) = 0
    "identity": ActivationRow(lambda x: x, lambda x, y: jnp.ones_like(x), _zero, {}),
    # binary step: f(x) = 1 if x >= 0 else 0;  f'(x) = 0 (the table's "?" at 0 is taken as 0);  f'' = 0
    "binary_step": ActivationRow(
        lambda x: (x >= 0).astype(x.dtype), lambda x, y: jnp.zeros_like(x), _zero, {}
    ),
    # logistic: f(x) = 1 / (1 + e^-x);  f'(x) = f(x) (1 - f(x));  f''(x) = f'(x) (1 - 2 f(x))
    "logistic": ActivationRow(
        _logistic, lambda x, y: y * (1 - y), lambda x, y: y * (1 - y) * (1 - 2 * y), {}
    ),
    # tanh: f(x) = 2 / (1 + e^-2x) - 1;  f'(x) = 1 - f(x)^2;  f''(x) = -2 f(x) (1 - f(x)^2)
    "tanh": ActivationRow(jnp.tanh, lambda x, y: 1 - y * y, lambda x, y: -2 * y * (1 - y * y), {}),
    # arctan: f(x) = tan^-1(x);  f'(x) = 1 / (x^2 + 1);  f''(x) = -2x / (x^2 + 1)^2
    "arctan": ActivationRow(
        jnp.arctan, lambda x, y: 1 / (x * x + 1), lambda x, y: -2 * x / (x * x + 1) ** 2, {}
    ),
    # ReLU: f(x) = x if x >= 0 else 0;  f'(x) = 1 if x >= 0 else 0;  f''(x) = 0
    # (written where(x < 0, 0, x) so that a NaN input stays NaN: training then stops on it)
    "relu": ActivationRow(lambda x: jnp.where(x < 0, 0, x), lambda x, y: (x >= 0).astype(x.dtype), _zero, {}),
    # leaky ReLU: f(x) = x if x >= 0 else s x;  f'(x) = 1 if x >= 0 else s;  f''(x) = 0
    "leaky_relu": ActivationRow(
        lambda x, negative_slope: jnp.where(x >= 0, x, negative_slope * x),
        lambda x, y, negative_slope: jnp.where(x >= 0, 1, negative_slope).astype(x.dtype),
        _zero,
        {"negative_slope": 0.01},
    ),
    # ELU: f(x) = x if x >= 0 else alpha (e^x - 1);  f'(x) = 1 if x >= 0 else f(x) + alpha;
    #      f''(x) = 0 if x >= 0 else f(x) + alpha (= alpha e^x)
    "elu": ActivationRow(
        lambda x, alpha: jnp.where(x >= 0, x, alpha * jnp.expm1(jnp.minimum(x, 0))),
        lambda x, y, alpha: jnp.where(x >= 0, 1, y + alpha).astype(x.dtype),
        lambda x, y, alpha: jnp.where(x >= 0, 0, y + alpha).astype(x.dtype),
        {"alpha": 1.0},
    ),
    # SoftPlus: f(x) = log(1 + e^x) = logaddexp(x, 0);  f'(x) = s(x) = 1 / (1 + e^-x);
    #           f''(x) = s(x) (1 - s(x))
    "softplus": ActivationRow(
        lambda x: jnp.logaddexp(x, 0),
        lambda x, y: _logistic(x),
        lambda x, y: _logistic(x) * (1 - _logistic(x)),
        {},
    ),
    # GELU (exact): f(x) = x Phi(x);  f'(x) = Phi(x) + x phi(x);  f''(x) = phi(x) (2 - x^2)
    # (Phi/phi the normal cdf/pdf, and phi'(x) = -x phi(x))
    "gelu": ActivationRow(
        lambda x: x * _phi_cdf(x),
        lambda x, y: _phi_cdf(x) + x * _phi_pdf(x),
        lambda x, y: _phi_pdf(x) * (2 - x * x),
        {},
    ),
    # SiLU / swish: f(x) = x s(x), s the logistic;  f'(x) = s(x) (1 + x (1 - s(x)));
    #               f''(x) = s(x) (1 - s(x)) (2 + x (1 - 2 s(x)))
    "silu": ActivationRow(
        lambda x: x * _logistic(x),
        lambda x, y: _logistic(x) * (1 + x * (1 - _logistic(x))),
        lambda x, y: _logistic(x) * (1 - _logistic(x)) * (2 + x * (1 - 2 * _logistic(x))),
        {},
    ),
}
"""The activation table: name -> ActivationRow(f, df, d2f, options), each derivative beside its function."""
PIECEWISE_LINEAR = ("identity", "binary_step", "relu", "leaky_relu")
"""The rows whose f'' is 0 everywhere: the Hessian gains nothing from them beyond the GGN."""
ALIASES = {"sigmoid": "logistic", "swish": "silu", "step": "binary_step"}
"""Other names of rows of the table."""
NAMES = tuple(TABLE) + ("prelu", "softmax")
"""Every activation `activation` builds: the table's rows, and prelu and softmax (layers of their own)."""


def names() -> tuple[str, ...]:
    """**Returns:** every name `activation` accepts, aliases included."""
    return NAMES + tuple(ALIASES)


def _table_key(name: Any, where: str, valid: Collection[str]) -> str:
    """`name` as the table spells it (aliases resolved, any case), or an error listing the names
    that `valid` holds."""
    if not isinstance(name, str):
        raise InputTypeError(f"{where}: activation name must be a string, got {type(name).__name__}")
    key = ALIASES.get(name.lower(), name.lower())
    if key not in valid:
        listed = ", ".join(n for n in names() if ALIASES.get(n, n) in valid)
        hint = ""
        if key == "linear":  # Keras's name for the identity; here models.linear is a classifier
            hint = " (f(x) = x is 'identity'; 'linear' names the classifier, models.linear)"
        raise InputError(f"{where}: unknown or unsupported activation {name!r}{hint}; valid names: {listed}")
    return key


def activation_row(name: str, options: dict, where: str = "activation") -> ActivationRow:
    """The table's row for `name` (aliases resolved), its options checked against the row's.

    **Arguments:**

    - `name`: a name of the table (not "prelu" or "softmax", which are layers of their own).
    - `options`: option values given by the caller; the row's defaults fill the rest in place.
    - `where`: the caller's name, for the error messages.

    **Returns:** the ActivationRow (f, df, d2f, options).
    """
    key = _table_key(name, where, TABLE)
    row = TABLE[key]
    unknown = set(options) - set(row.options)
    if unknown:
        valid = ", ".join(row.options) or "none"
        raise InputTypeError(
            f"{where}: activation {key!r} got unknown option(s) {sorted(unknown)}; valid: {valid}"
        )
    for option, default in row.options.items():
        options.setdefault(option, default)
    return row


def activation(name: str, **options: Any) -> Layer:
    """An element-wise activation layer from the table (or prelu / softmax).

    **Arguments:**

    - `name`: one of `names()`: "identity", "binary_step", "logistic", "tanh", "arctan", "relu",
      "leaky_relu", "elu", "softplus", "gelu", "silu", "prelu", "softmax", or an alias.
    - `**options`: the row's options, e.g. `alpha` for "elu", `negative_slope` for "leaky_relu",
      the initial `alpha` for "prelu", `axis` for "softmax".

    **Returns:** a Layer with params `()` (PReLU: `{"alpha": ()}`) whose backward is dy f'(x), f' the
    row's hand-derived derivative.
    """
    key = _table_key(name, "activation", NAMES)
    if key == "prelu":
        return prelu(**options)
    if key == "softmax":
        return softmax(**options)
    opts = dict(options)
    row = activation_row(key, opts)

    def init(key_, input_shape, dtype=jnp.float32):
        return tuple(input_shape), ()

    def forward(params, x):
        y = row.f(x, **opts)
        return y, (x, y)

    def backward(residuals, dy):
        x, y = residuals
        return (), dy * row.df(x, y, **opts)

    return make_layer(key, init, forward, backward, config={"kind": "activation", "name": key, **opts})


def prelu(alpha: float = 0.25) -> Layer:
    """PReLU: f(x) = x if x >= 0 else alpha x, with alpha learnable.

    **Arguments:**

    - `alpha`: the slope's initial value.

    **Returns:** a Layer with params `{"alpha": ()}`.

    df/dx = 1 if x >= 0 else alpha;   df/dalpha = 0 if x >= 0 else x.
    """

    def init(key, input_shape, dtype=jnp.float32):
        return tuple(input_shape), {"alpha": jnp.asarray(alpha, dtype)}

    def forward(params, x):
        a = params["alpha"]
        return jnp.where(x >= 0, x, a * x), (x, a)

    def backward(residuals, dy):
        x, a = residuals
        negative = x < 0
        dalpha = jnp.sum(jnp.where(negative, dy * x, 0)).astype(jnp.result_type(a))
        dx = jnp.where(negative, a * dy, dy)
        return {"alpha": dalpha}, dx

    return make_layer("prelu", init, forward, backward, config={"kind": "prelu", "alpha": alpha})


def softmax(axis: int = -1) -> Layer:
    """Softmax as a layer: y_i = e^{x_i} / sum_j e^{x_j} (the max subtracted first).

    **Arguments:**

    - `axis`: the axis the probabilities sum to 1 over.

    **Returns:** a Layer without params. Backward:

    dx_i = y_i (dy_i - sum_j dy_j y_j)   (the softmax Jacobian diag(y) - y y^T applied to dy).
    """

    def init(key, input_shape, dtype=jnp.float32):
        return tuple(input_shape), ()

    def forward(params, x):
        z = x - jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
        e = jnp.exp(z)
        y = e / jnp.sum(e, axis=axis, keepdims=True)
        return y, y

    def backward(y, dy):
        return (), y * (dy - jnp.sum(dy * y, axis=axis, keepdims=True))

    return make_layer("softmax", init, forward, backward, config={"kind": "softmax", "axis": axis})


def __getattr__(name: str):
    """Names earlier versions had here: an error that says where they went."""
    raise removed_attribute(__name__, name, {"Row": "jaxnn.activations.ActivationRow"})
