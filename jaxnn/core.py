"""The Layer: four pure functions, and `serial`, the chain rule in a few lines.

A layer is a NamedTuple of functions, in the style of stax's (init_fun, apply_fun) pairs,
plus a hand-derived backward pass in the shape of `jax.custom_vjp`'s fwd/bwd pair:

    out_shape, params = layer.init(key, input_shape)  # input_shape: ONE example, no batch axis
    y = layer.apply(params, x)                        # x: (batch, *input_shape)
    y, residuals = layer.forward(params, x)           # same y + what backward needs
    dparams, dx = layer.backward(residuals, dy)       # dparams has the structure of params

State (BatchNorm's running statistics: what a layer updates but does not train) is an explicit
pytree, passed in and returned, never mutated:

    state = layer.init_state(input_shape)             # () without state; serial: one entry per layer
    y, new_state = layer.apply(params, x, state=state, train=True)
    y, residuals, new_state = layer.forward(params, x, state=state, train=True)

`train=True` switches on every training behaviour (batch statistics, Dropout, which then needs
`key=`); `train=False` is evaluation; without `train`, BatchNorm evaluates and Dropout is on
exactly when it is given a key. `serial` splits the key among its layers.

Write your own layer with `make_layer(name, init, forward, backward)`; `core` knows nothing of
training or datasets.
"""

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .errors import InputError, InputTypeError

LOW_PRECISION = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def matmul(a, b):
    """a @ b, as jnp.matmul: a (..., m, k), b (k, n) -> (..., m, n). Inputs in bfloat16 or float16
    are multiplied with float32 accumulation and the product is returned in their dtype: more
    accurate, and on the CPU XLA then calls YNNPACK's bfloat16 GEMM (a 2048x2048 product 18.3 ms
    against 41.9 ms in float32 on an AVX-512 BF16 machine), where a bfloat16 x bfloat16 ->
    bfloat16 product took 47.5 ms (benchmarks/bf16_mlp.py). Other dtypes: plain a @ b."""
    dtype = jnp.result_type(a, b)
    if dtype not in LOW_PRECISION:
        return a @ b
    return jnp.matmul(a, b, preferred_element_type=jnp.float32).astype(dtype)


def no_state(input_shape, dtype=jnp.float32):
    """The state of a layer without state: the empty pytree ()."""
    return ()


class Layer(NamedTuple):
    """A layer or a whole model: init / apply / forward / backward (+ init_state), all pure."""

    init: Callable[..., Any]
    apply: Callable[..., Any]
    forward: Callable[..., Any]
    backward: Callable[..., Any]
    name: str = "layer"
    stochastic: bool = False  # does forward use a PRNG key (Dropout)? Others skip the key splitting.
    init_state: Callable[..., Any] = no_state  # init_state(input_shape, dtype=float32) -> state pytree
    stateful: bool = False  # must apply/forward be given state=? (True for BatchNorm and models holding one)
    layers: tuple = ()  # the layers a composite (serial) is made of, for summaries

    def __repr__(self):
        return f"Layer({self.name})"


def make_layer(name, init, forward, backward, init_state=None, stateful=None):
    """Build a Layer from `init`, `forward` and `backward`; `apply` is `forward` without residuals.

    **Arguments:**
    - init(key, input_shape, dtype=jnp.float32) -> (output_shape, params); shapes of ONE example.
    - forward(params, x) -> (y, residuals). It may also name `key` (a PRNG key or None), `train`
      (True, False or None) and other keyword options; it sees only the ones it names.
    - backward(residuals, dy) -> (dparams, dx), dparams shaped like params.
    - init_state(input_shape, dtype=jnp.float32) -> state: give it for a layer with state; forward then takes
      `state` and returns (y, residuals, new_state).
    - stateful: must callers pass state? Default: whether init_state is given. (`serial` threads
      state through its layers but needs it only if one of them does.)

    Example, y = 2x:

        double = make_layer("double", lambda key, shape, dtype=jnp.float32: (shape, ()),
                            lambda params, x: (2 * x, None), lambda residuals, dy: ((), 2 * dy))
    """
    accepts = inspect.signature(forward).parameters
    takes_key, takes_train = "key" in accepts, "train" in accepts
    threads_state = init_state is not None
    stateful = threads_state if stateful is None else stateful

    def forward_(params, x, key=None, state=None, train=None, **options):
        if state is None and stateful:
            raise InputError(
                f"{name} has state (running statistics): pass state=model.init_state(input_shape) "
                "(one example's shape); apply then returns (y, new_state)"
            )
        if takes_key:
            options["key"] = key
        if takes_train:
            options["train"] = train
        if threads_state:
            y, residuals, new_state = forward(params, x, state=state, **options)
        else:
            (y, residuals), new_state = forward(params, x, **options), ()
        return (y, residuals) if state is None else (y, residuals, new_state)

    def apply(params, x, key=None, state=None, train=None, **options):
        out = forward_(params, x, key=key, state=state, train=train, **options)
        return out[0] if state is None else (out[0], out[2])

    return Layer(
        init,
        apply,
        forward_,
        backward,
        name,
        stochastic=takes_key,
        init_state=init_state or no_state,
        stateful=stateful,
    )


def call_forward(layer, params, x, key, state, train):
    """layer.forward as a triple (y, residuals, new_state) whether or not state is given (None)."""
    if state is None:
        y, residuals = layer.forward(params, x, key=key, train=train)
        return y, residuals, None
    return layer.forward(params, x, key=key, state=state, train=train)


def output_shape(layer, input_shape):
    """The shape of one example after `layer`, found by tracing init (no arrays are made)."""
    found = []

    def init(key):
        out_shape, params = layer.init(key, tuple(input_shape))
        found.append(tuple(out_shape))
        return params

    jax.eval_shape(init, jax.random.PRNGKey(0))
    return found[0]


def split_key(key, n):
    """n keys from key, or n Nones when there is no key (evaluation mode)."""
    return [None] * n if key is None else list(jax.random.split(key, n))


def check_batch(name, x, input_shape):
    """Raise a clear error unless x has shape (batch, *input_shape).

    Shapes are static under `jit`, so this check also runs inside compiled code.
    """
    x_shape = tuple(jnp.shape(x))
    expected = "(batch, " + ", ".join(str(d) for d in input_shape) + ")"
    if len(x_shape) != len(input_shape) + 1 or x_shape[1:] != tuple(input_shape):
        raise InputError(f"{name}: expected input of shape {expected}, got {x_shape}")


def serial(*layers):
    """Compose layers: y = f_n(...f_2(f_1(x))).

    params: a tuple, one entry per layer (() for a layer without params); state likewise.
    backward is the chain rule run in reverse: each layer turns dL/dy into dL/dx,
    which is the dL/dy of the layer before it.
    """
    if not layers:
        raise InputError("serial() needs at least one layer")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise InputTypeError(f"serial: argument {i} is a {type(layer).__name__}, expected a jaxnn Layer")
    n = len(layers)
    name = "serial(" + ", ".join(layer.name for layer in layers) + ")"

    def init(key, input_shape, dtype=jnp.float32):
        all_params = []
        for layer, layer_key in zip(layers, jax.random.split(key, n)):
            input_shape, params = layer.init(layer_key, input_shape, dtype=dtype)
            all_params.append(params)
        return input_shape, tuple(all_params)

    def init_state(input_shape, dtype=jnp.float32):
        states = []
        for layer in layers:
            states.append(layer.init_state(tuple(input_shape), dtype=dtype))
            input_shape = output_shape(layer, input_shape)
        return tuple(states)

    stochastic = any(layer.stochastic for layer in layers)

    def forward(params, x, key=None, state=None, train=None):
        _check_tuple("params", params, n)
        if state is not None:
            _check_tuple("state", state, n)
        states = [None] * n if state is None else state
        keys = split_key(key if stochastic else None, n)
        residuals, new_states = [], []
        for layer, p, k, s in zip(layers, params, keys, states):
            x, r, s = call_forward(layer, p, x, k, s, train)
            residuals.append(r)
            new_states.append(s)
        return x, tuple(residuals), tuple(new_states)

    def backward(residuals, dy):
        grads = [None] * n
        for i in reversed(range(n)):
            grads[i], dy = layers[i].backward(residuals[i], dy)
        return tuple(grads), dy

    layer = make_layer(
        name, init, forward, backward, init_state, stateful=any(layer.stateful for layer in layers)
    )
    return layer._replace(stochastic=stochastic, layers=tuple(layers))


def _check_tuple(what, tree, n):
    if not isinstance(tree, (tuple, list)) or len(tree) != n:
        got = f"a {type(tree).__name__}" + (f" of length {len(tree)}" if hasattr(tree, "__len__") else "")
        raise InputError(f"serial: expected {what} as a tuple of {n} entries (one per layer), got {got}")


def Residual(inner, shortcut=None):
    """y = x + f(x) for a Layer f whose output has the input's shape. params (and state): f's.

    Backward adds the two paths: dL/dx = dy (the identity path) + f.backward(dy)'s dx.

    With a `shortcut` Layer g (a ResNet's 1x1 strided projection where f changes the shape):
    y = g(x) + f(x); params and state are pairs (f's, g's); dL/dx = g.backward(dy)'s dx + f's.
    """
    if not isinstance(inner, Layer) or not (shortcut is None or isinstance(shortcut, Layer)):
        bad = shortcut if isinstance(inner, Layer) else inner
        raise InputTypeError(f"Residual: expected a jaxnn Layer, got {type(bad).__name__}")
    if shortcut is not None:
        return _projected_residual(inner, shortcut)

    def init(key, input_shape, dtype=jnp.float32):
        out_shape, params = inner.init(key, input_shape, dtype=dtype)
        if tuple(out_shape) != tuple(input_shape):
            raise InputError(
                f"Residual: {inner.name} maps {tuple(input_shape)} to {tuple(out_shape)}; "
                "y = x + f(x) needs the same shape (or pass a shortcut= layer)"
            )
        return tuple(input_shape), params

    def forward(params, x, key=None, state=None, train=None):
        y, residuals, new_state = call_forward(inner, params, x, key, state, train)
        return x + y, residuals, new_state

    def backward(residuals, dy):
        dparams, dx = inner.backward(residuals, dy)
        return dparams, dy + dx

    layer = make_layer(
        f"Residual({inner.name})", init, forward, backward, inner.init_state, stateful=inner.stateful
    )
    return layer._replace(stochastic=inner.stochastic)


def _projected_residual(inner, shortcut):
    """Residual(inner, shortcut): y = shortcut(x) + inner(x), both paths' params and state as pairs."""

    def init(key, input_shape, dtype=jnp.float32):
        inner_key, shortcut_key = jax.random.split(key)
        out_shape, inner_params = inner.init(inner_key, input_shape, dtype=dtype)
        short_shape, shortcut_params = shortcut.init(shortcut_key, input_shape, dtype=dtype)
        if tuple(out_shape) != tuple(short_shape):
            raise InputError(
                f"Residual: {inner.name} maps {tuple(input_shape)} to {tuple(out_shape)} but the "
                f"shortcut {shortcut.name} to {tuple(short_shape)}; their sum needs one shape"
            )
        return tuple(out_shape), (inner_params, shortcut_params)

    def init_state(input_shape, dtype=jnp.float32):
        return (inner.init_state(input_shape, dtype=dtype), shortcut.init_state(input_shape, dtype=dtype))

    stochastic = inner.stochastic or shortcut.stochastic

    def forward(params, x, key=None, state=None, train=None):
        _check_tuple("params", params, 2)
        if state is not None:
            _check_tuple("state", state, 2)
        inner_state, shortcut_state = (None, None) if state is None else state
        inner_key, shortcut_key = split_key(key if stochastic else None, 2)
        y, inner_res, inner_state = call_forward(inner, params[0], x, inner_key, inner_state, train)
        z, short_res, shortcut_state = call_forward(
            shortcut, params[1], x, shortcut_key, shortcut_state, train
        )
        return y + z, (inner_res, short_res), (inner_state, shortcut_state)

    def backward(residuals, dy):
        dinner, dx_inner = inner.backward(residuals[0], dy)
        dshortcut, dx_shortcut = shortcut.backward(residuals[1], dy)
        return (dinner, dshortcut), dx_inner + dx_shortcut

    layer = make_layer(
        f"Residual({inner.name}, shortcut={shortcut.name})",
        init,
        forward,
        backward,
        init_state,
        stateful=inner.stateful or shortcut.stateful,
    )
    return layer._replace(stochastic=stochastic)


def check_params(model, params, input_shape):
    """Raise InputError unless params have the tree structure and shapes that model.init gives
    for input_shape (found by tracing init: no arrays are made): catches the parameters of a
    differently sized model, or of another model, before they are trained or applied."""
    expected = jax.eval_shape(lambda key: model.init(key, tuple(input_shape))[1], jax.random.PRNGKey(0))
    want, want_tree = jax.tree_util.tree_flatten_with_path(expected)
    got, got_tree = jax.tree_util.tree_flatten_with_path(params)
    if want_tree != got_tree:
        raise InputError(
            f"{model.name}: params have another structure than the model's ({len(got)} arrays, expected "
            f"{len(want)}): are they another model's?"
        )
    for (path, w), (_, g) in zip(want, got):
        if tuple(jnp.shape(g)) != tuple(w.shape):
            raise InputError(
                f"{model.name}: params{jax.tree_util.keystr(path)} has shape {tuple(jnp.shape(g))}, "
                f"the model needs {tuple(w.shape)} for inputs of shape {tuple(input_shape)}"
            )
