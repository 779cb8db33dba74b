"""The Layer: four pure functions, and `serial`, the chain rule in a few lines.

A layer is a NamedTuple of functions, in the style of stax's (init_fun, apply_fun) pairs, plus a
backward pass in the shape of `jax.custom_vjp`'s fwd/bwd pair:

    out_shape, params = layer.init(key, input_shape)  # input_shape: ONE example
    y = layer.apply(params, x)                        # x: (batch, *input_shape)
    y, residuals = layer.forward(params, x)           # y + what backward needs
    dparams, dx = layer.backward(residuals, dy)       # dparams shaped as params

State (BatchNorm's running statistics: what a layer updates but does not train) is an explicit
pytree, passed in and returned, never mutated:

    state = layer.init_state(input_shape)  # (): none; serial: one per layer
    y, new_state = layer.apply(params, x, state=state, train=True)
    y, residuals, new_state = layer.forward(params, x, state=state, train=True)

`train=True` switches on every training behaviour (batch statistics, Dropout, which then needs
`key=`); `train=False` is evaluation; without `train`, BatchNorm evaluates and Dropout is on
exactly when it is given a key. `serial` splits the key among its layers.

Every built-in layer's backward is derived by hand. A layer of your own needs none: give
`make_layer` its `apply` and the backward comes from `jax.vjp`; `layer.rule` says which it has
("hand", "autodiff", or "mixed" for a composite of both). `core` knows nothing of training or datasets.
"""

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer

from .errors import InputError, InputTypeError
from .types import ApplyFn, Array, BackwardFn, DTypeLike, ForwardFn, InitFn, Params, PRNGKey, Shape, State

__all__ = [
    "Layer",
    "make_layer",
    "function_layer",
    "one_example",
    "serial",
    "Residual",
    "output_shape",
    "init_shapes",
    "check_params",
    "matmul",
    "no_state",
    "RULES",
    "Chain",
]

LOW_PRECISION = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
RULES = ("hand", "autodiff", "mixed")
"""How a Layer's backward is made (Layer.rule)."""


def matmul(a: Array, b: Array) -> Array:
    """`a @ b` (as `jnp.matmul`), with float32 accumulation for low-precision inputs.

    **Arguments:**

    - `a`: `(..., m, k)`.
    - `b`: `(k, n)`.

    **Returns:** `(..., m, n)` in the inputs' dtype. Inputs in bfloat16 or float16 are multiplied with
    float32 accumulation (more accurate, and the path XLA's CPU backend has a fast bfloat16 kernel for);
    other dtypes are a plain `a @ b`.
    """
    dtype = jnp.result_type(a, b)
    if dtype not in LOW_PRECISION:
        return a @ b
    return jnp.matmul(a, b, preferred_element_type=jnp.float32).astype(dtype)


def is_traced(x: Any) -> bool:
    """Whether x is a tracer (inside jit, grad or vmap), whose values cannot be checked on the host."""
    return isinstance(x, Tracer)


def no_state(input_shape: Shape, dtype: DTypeLike = jnp.float32) -> State:
    """The `init_state` of a layer without state.

    **Arguments:** `input_shape` and `dtype`, as every `init_state` takes them (unused).

    **Returns:** the empty pytree `()`.
    """
    return ()


class Chain(tuple):
    """A composite's parts that run one after another, each reading the output of the one before
    (`serial`'s). A plain tuple of parts reads the composite's own input (`Residual`, wrappers)."""


class Layer(NamedTuple):
    """A layer or a whole model: `init` / `apply` / `forward` / `backward` (+ `init_state`), all pure.

    **Fields:**

    - `init(key, input_shape, dtype=float32) -> (output_shape, params)`: shapes of ONE example.
    - `apply(params, x, key=None, state=None, train=None) -> y`, or `(y, new_state)` given `state=`.
    - `forward(params, x, ...) -> (y, residuals)`, or `(y, residuals, new_state)` given `state=`.
    - `backward(residuals, dy) -> (dparams, dx)`: `dparams` has the structure of `params`.
    - `name`: what `summary` and error messages call the layer.
    - `stochastic`: whether forward draws random numbers (Dropout): callers then pass `key=`.
    - `init_state(input_shape, dtype=float32) -> state`: `()` for a layer without state.
    - `stateful`: whether `apply` / `forward` must be given `state=`.
    - `input_shape`: the shape of one example the model was built for (every builder of
      `jaxnn.models` sets it), or None.
    - `rule`: how `backward` is made: "hand" (derived by hand, proven in the gradient table),
      "autodiff" (`jax.vjp` of `apply`), or "mixed" (a composite holding both).
    - `config`: what the layer is: a dict with its constructor's name under "kind" and the options
      it was built with (`{"kind": "Conv2D", "features": 32, "kernel_size": (3, 3), ...}`), or None.
    - `parts`: a composite's layers, each with the index path of its entry in the composite's
      params (and state): `((layer, (0,)), (layer, (1,)), ...)` for `serial`, `((f, ()),)` for
      `Residual(f)`; () for a leaf. A `Chain` for parts that run in turn (`serial`), a tuple for
      parts that read the same input. `jaxnn.io` and `jaxnn.curvature` walk them.

    And, derived from `parts`: `layers`, the layers a `serial` model runs in turn (one row each in
    `summary`), else ().
    """

    init: InitFn
    apply: ApplyFn
    forward: ForwardFn
    backward: BackwardFn
    name: str = "layer"
    stochastic: bool = False
    init_state: Callable[..., State] = no_state
    stateful: bool = False
    input_shape: Shape | None = None
    rule: str = "hand"
    config: dict | None = None
    parts: tuple = ()

    @property
    def layers(self) -> tuple["Layer", ...]:
        """The layers a `serial` model runs in turn, else ()."""
        return tuple(layer for layer, _ in self.parts) if isinstance(self.parts, Chain) else ()

    def __repr__(self) -> str:
        return f"Layer({self.name})"


def _accepts(fn: Callable, name: str) -> bool:
    """Whether fn takes a parameter called `name` (or any keyword, **kwargs)."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # some builtins have no signature: they take no options
        return False
    return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def example_shape(name: str, input_shape: Any) -> Shape:
    """`input_shape` as a tuple of ints (the shape of one example), or an InputError that says so."""

    def is_size(d):
        return hasattr(d, "__index__") and not isinstance(d, bool) and int(d) >= 0

    if isinstance(input_shape, (list, tuple)) and all(is_size(d) for d in input_shape):
        return tuple(int(d) for d in input_shape)
    hint = f"; for one number write ({input_shape},)" if isinstance(input_shape, int) else ""
    raise InputError(
        f"{name}: input_shape must be the shape of ONE example as a tuple of ints, e.g. (784,) or "
        f"(28, 28, 1), got {input_shape!r}{hint}"
    )


def model_input_shape(model: "Layer", input_shape: Any, where: str) -> Shape:
    """The shape of one example a call works on: `input_shape` if given, else the one the model
    records (`model.input_shape`), checked as `example_shape` checks it.

    **Arguments:** `model` the Layer; `input_shape` a shape or None; `where` the caller, for messages.

    **Returns:** the shape as a tuple of ints. Neither given nor recorded (a model built with
    `serial`) raises an InputError that says to pass it.
    """
    shape = model.input_shape if input_shape is None else input_shape
    if shape is None:
        raise InputError(
            f"{where}: pass input_shape (the shape of one example, e.g. (784,) or (28, 28, 1)); "
            f"{model.name} records none (models built with serial do not; jaxnn.models' builders do)"
        )
    return example_shape(where, shape)


def _describe(tree: Any) -> str:
    if isinstance(tree, dict):
        return f"a dict with keys {sorted(map(str, tree))}"
    if isinstance(tree, (tuple, list)):
        return f"a {type(tree).__name__} of {len(tree)} entries" if tree else "() (no parameters)"
    return f"a {type(tree).__name__}"


def _params_mismatch(name: str, init: InitFn, params: Params, x: Any, dtype: DTypeLike) -> InputError | None:
    """An InputError naming the expected parameters when `params` has another structure than the
    ones `init` makes for inputs like `x`; None when they match (or cannot be found)."""
    try:
        expected = jax.eval_shape(lambda k: init(k, tuple(jnp.shape(x))[1:], dtype)[1], jax.random.PRNGKey(0))
    except Exception:  # init refuses this x: the original error says more
        return None
    if jax.tree_util.tree_structure(expected) == jax.tree_util.tree_structure(params):
        return None
    return InputError(f"{name}: params are {_describe(params)}, this layer's are {_describe(expected)}")


def make_layer(
    name: str,
    init: InitFn,
    forward: ForwardFn | None = None,
    backward: BackwardFn | None = None,
    *,
    apply: ApplyFn | None = None,
    init_state: Callable[..., State] | None = None,
    stateful: bool | None = None,
    config: dict | None = None,
) -> Layer:
    """Build a Layer from a hand rule (`forward` and `backward`) or from `apply` alone (autodiff).

    **Arguments:**

    - `name`: what summaries and errors call it.
    - `init(key, input_shape, dtype=jnp.float32) -> (output_shape, params)`: shapes of ONE example
      (`dtype` may be left out of its signature).
    - `forward(params, x) -> (y, residuals)`: the hand rule's forward. It may also name `key` (a PRNG
      key or None) and `train` (True, False or None); it is given only the ones it names.
    - `backward(residuals, dy) -> (dparams, dx)`: the hand rule's backward, `dparams` shaped like params.
    - `apply`: instead of `forward` and `backward`, a function `f(params, x) -> y` (also naming `key`
      / `train` if it uses them). The backward is then `jax.vjp`'s of `f` and the layer's `rule` is
      "autodiff". If `f` names `state`, it returns `(y, new_state)` as built-in layers do; the state is
      held constant in the backward, as in every hand rule.
    - `init_state(input_shape, dtype=jnp.float32) -> state`: for a layer with state; a hand rule's
      `forward` then takes `state` and returns `(y, residuals, new_state)`.
    - `stateful`: must callers pass state? Default: whether the layer keeps state. (`serial` threads
      state through its layers but needs it only if one of them does.)
    - `config`: what the layer is, for interop (see `Layer.config`).

    **Returns:** the Layer.

    Example: y = 2x by hand, and y = x sin(w) without a hand rule:

        double = make_layer(
            "double",
            lambda key, shape: (shape, ()),
            lambda params, x: (2 * x, None),
            lambda residuals, dy: ((), 2 * dy),
        )
        wave = make_layer(
            "wave",
            lambda key, shape: (shape, {"w": jnp.zeros(shape[-1:])}),
            apply=lambda params, x: x * jnp.sin(params["w"]),
        )
    """
    if not callable(init):
        raise InputTypeError(f"make_layer({name!r}): init must be a function, got {type(init).__name__}")
    if apply is not None and (forward is not None or backward is not None):
        raise InputError(
            f"make_layer({name!r}): give forward and backward (a hand rule) or apply (autodiff), not both"
        )
    if apply is None and (forward is None or backward is None):
        raise InputError(
            f"make_layer({name!r}): a hand rule needs both forward and backward; for a layer without "
            "one, pass apply=f (f(params, x) -> y) and the backward comes from jax.vjp"
        )
    user_fn = apply if apply is not None else forward
    if not callable(user_fn) or not (apply is not None or callable(backward)):
        raise InputTypeError(f"make_layer({name!r}): forward, backward and apply must be functions")
    takes_key, takes_train = _accepts(user_fn, "key"), _accepts(user_fn, "train")
    threads_state = init_state is not None or (apply is not None and _accepts(apply, "state"))
    stateful = init_state is not None if stateful is None else stateful
    rule = "hand"
    if apply is not None:
        checked = _checked_output(name, apply, init, _accepts(apply, "state"))
        forward, backward = _vjp_rule(checked, _accepts(apply, "state"), threads_state)
        rule = "autodiff"
    assert forward is not None and backward is not None
    init_takes_dtype = _accepts(init, "dtype")

    def init_(key: PRNGKey, input_shape: Shape, dtype: DTypeLike = jnp.float32) -> tuple[Shape, Params]:
        shape = example_shape(f"{name}.init", input_shape)
        out_shape, params = init(key, shape, dtype=dtype) if init_takes_dtype else init(key, shape)
        return tuple(out_shape), params

    def forward_(params, x, key=None, state=None, train=None, **options) -> Any:
        if state is None and stateful:
            raise InputError(
                f"{name} has state (running statistics): pass state=model.init_state(input_shape) "
                "(one example's shape); apply then returns (y, new_state)"
            )
        if takes_key:
            options["key"] = key
        if takes_train:
            options["train"] = train
        try:
            if threads_state:
                y, residuals, new_state = forward(params, x, state=state, **options)
            else:
                (y, residuals), new_state = forward(params, x, **options), ()
        except (KeyError, TypeError, IndexError) as e:  # params of another layer? say which ones it wants
            mismatch = _params_mismatch(name, init_, params, x, jnp.result_type(float))
            if mismatch is not None:
                raise mismatch from e
            raise
        return (y, residuals) if state is None else (y, residuals, new_state)

    def apply_(params, x, key=None, state=None, train=None, **options):
        out = forward_(params, x, key=key, state=state, train=train, **options)
        return out[0] if state is None else (out[0], out[2])

    return Layer(
        init_,
        apply_,
        forward_,
        backward,
        name,
        stochastic=takes_key,
        init_state=init_state or no_state,
        stateful=stateful,
        rule=rule,
        config=config,
    )


def _checked_output(name: str, f: ApplyFn, init: InitFn, returns_state: bool) -> ApplyFn:
    """f, raising a clear error when what it returns is not an array of the shape `init` declares
    for its input: a wrong shape would otherwise surface far away (a loss of NaN, a broadcast error
    in the next layer), and a non-array deep inside JAX. Shapes are static, so under `jit` this runs
    once, at tracing."""
    declared: dict = {}  # one example's input shape -> the output shape init declares for it

    def expected(input_shape):
        if input_shape not in declared:
            try:
                declared[input_shape] = _trace_init(init, input_shape)[0]
            except Exception:  # init refuses this shape: nothing to compare with (apply's error says more)
                declared[input_shape] = None
        return declared[input_shape]

    def checked(params, x, **options):
        out = f(params, x, **options)
        y = out[0] if returns_state and isinstance(out, tuple) else out
        if not isinstance(y, (jax.Array, np.ndarray)):
            raise InputTypeError(
                f"{name}: apply must return an array (y{', new_state' if returns_state else ''}), "
                f"got {type(y).__name__}"
            )
        want = expected(tuple(jnp.shape(x))[1:])
        if want is not None and tuple(y.shape[1:]) != want:
            raise InputError(
                f"{name}: apply returned {tuple(y.shape)} for an input of shape {tuple(jnp.shape(x))}, "
                f"but its init declares outputs of shape (batch, {', '.join(map(str, want))}); make the "
                "two agree (the next layer and the loss are built for init's shape)"
            )
        return out

    return checked


def _vjp_rule(f: ApplyFn, takes_state: bool, threads_state: bool) -> tuple[ForwardFn, BackwardFn]:
    """(forward, backward) of a layer from its function f alone: forward runs `jax.vjp` of f and keeps
    the pullback as the residuals, backward applies it to dy. Integer inputs (token ids) are held
    fixed and get dx = None, as in the built-in Embedding. threads_state: the layer passes state in
    and expects (y, residuals, new_state) back, also when f itself takes none (the state passes)."""

    def forward(params, x, **options) -> Any:
        state = options.pop("state", None)
        if takes_state:
            options["state"] = state
        differentiable = jnp.issubdtype(jnp.result_type(x), jnp.inexact)
        args = (params, x) if differentiable else (params,)

        def g(p, inputs=x):
            return f(p, inputs, **options)

        if takes_state:
            y, pullback, new_state = jax.vjp(g, *args, has_aux=True)
            return y, pullback, new_state
        y, pullback = jax.vjp(g, *args)
        return (y, pullback, state) if threads_state else (y, pullback)

    def backward(pullback, dy):
        grads = pullback(dy)
        return (grads[0], None) if len(grads) == 1 else tuple(grads)

    return forward, backward


def function_layer(f: Callable[[Array], Array], name: str | None = None) -> Layer:
    """A parameter-free Layer from a plain function `f(x) -> y` of a batch (e.g. `jnp.tanh`, or
    `lambda x: x.reshape(x.shape[0], -1)`); its backward is `jax.vjp`'s. `serial` calls this for
    every plain function among its layers.

    **Arguments:**

    - `f`: maps a batch `(batch, *input_shape)` to a batch `(batch, *output_shape)`.
    - `name`: defaults to f's `__name__`.

    **Returns:** a Layer with params `()`, its output shape found by tracing f on one example.
    """
    if not callable(f):
        raise InputTypeError(f"function_layer: expected a function, got {type(f).__name__}")
    given: str = name or getattr(f, "__name__", "function")
    name = "function" if given == "<lambda>" else given

    def init(key, input_shape, dtype=jnp.float32):
        out = jax.eval_shape(f, jax.ShapeDtypeStruct((1,) + tuple(input_shape), dtype))
        if not hasattr(out, "shape") or out.shape[:1] != (1,):
            raise InputError(
                f"{name}: a function in serial must map a batch to a batch (keep the first axis); "
                f"one example of shape {tuple(input_shape)} came out as {getattr(out, 'shape', out)}"
            )
        return tuple(out.shape[1:]), ()

    return make_layer(name, init, apply=lambda params, x: f(x))


def as_layer(obj: Any, where: str = "serial") -> Layer:
    """A Layer as it is; a plain function as `function_layer(obj)`; anything else an InputTypeError."""
    if isinstance(obj, Layer):
        return obj
    if callable(obj):
        return function_layer(cast(Callable[[Array], Array], obj))
    raise InputTypeError(f"{where}: expected a jaxnn Layer or a function, got {type(obj).__name__}")


def combined_rule(layers: tuple[Layer, ...]) -> str:
    """The rule of a composite: its layers' common rule, or "mixed"."""
    rules = {layer.rule for layer in layers}
    return rules.pop() if len(rules) == 1 else "mixed"


def call_forward(layer: Layer, params: Params, x: Any, key: PRNGKey | None, state: State | None, train):
    """layer.forward as a triple (y, residuals, new_state) whether or not state is given (None)."""
    if state is None:
        y, residuals = layer.forward(params, x, key=key, train=train)
        return y, residuals, None
    return layer.forward(params, x, key=key, state=state, train=train)


def init_shapes(layer: Layer, input_shape: Shape, dtype: DTypeLike | None = None) -> tuple[Shape, Params]:
    """What `layer.init` makes for inputs of `input_shape`, found by tracing it (no arrays are made).

    **Arguments:**

    - `layer`: any Layer.
    - `input_shape`: the shape of one input example.
    - `dtype`: the parameters' dtype (None: init's default).

    **Returns:** `(output_shape, params)`, params a pytree of `jax.ShapeDtypeStruct`s.
    """
    return _trace_init(layer.init, input_shape, **({} if dtype is None else {"dtype": dtype}))


def state_shapes(layer: Layer, input_shape: Shape) -> State:
    """The shapes of a layer's state for inputs of `input_shape`, traced (nothing allocated).

    **Arguments:** `layer` a Layer; `input_shape` the shape of one example.

    **Returns:** the state's pytree of `jax.ShapeDtypeStruct`s (`()` for a layer without state).
    """
    return jax.eval_shape(lambda: layer.init_state(tuple(input_shape)))


def _trace_init(init: Callable, input_shape: Shape, **options: Any) -> tuple[Shape, Params]:
    """(output shape, parameter shapes) of an init function, traced by `jax.eval_shape`."""
    found = []

    def run(key):
        out_shape, params = init(key, tuple(input_shape), **options)
        found.append(tuple(out_shape))
        return params

    params = jax.eval_shape(run, jax.random.PRNGKey(0))
    return found[0], params


def output_shape(layer: Layer, input_shape: Shape) -> Shape:
    """The shape of one example after `layer`, found by tracing init (no arrays are made).

    **Arguments:**

    - `layer`: any Layer.
    - `input_shape`: the shape of one input example.

    **Returns:** the shape of one output example.
    """
    return init_shapes(layer, input_shape)[0]


def split_key(key: PRNGKey | None, n: int) -> list:
    """n keys from key, or n Nones when there is no key (evaluation mode)."""
    return [None] * n if key is None else list(jax.random.split(key, n))


def check_batch(name: str, x: Any, input_shape: Shape) -> None:
    """Raise a clear error unless x has shape (batch, *input_shape).

    Shapes are static under `jit`, so this check also runs inside compiled code.
    """
    x_shape = tuple(jnp.shape(x))
    expected = "(batch, " + ", ".join(str(d) for d in input_shape) + ")"
    if len(x_shape) != len(input_shape) + 1 or x_shape[1:] != tuple(input_shape):
        hint = (
            "; that is one example without its batch axis: write x[None], or map over single "
            "examples with jax.vmap(nn.one_example(model.apply), in_axes=(None, 0))"
            if x_shape == tuple(input_shape)
            else ""
        )
        raise InputError(f"{name}: expected input of shape {expected}, got {x_shape}{hint}")


def one_example(apply: Callable[..., Any]) -> Callable[..., Any]:
    """A Layer's `apply` (or `forward`) as a function of ONE example, without a batch axis: the axis
    is added on the way in and taken off the output on the way out. Layers work on batches; this is
    the adapter for `jax.vmap` over single examples (ensembles, per-example maps, samplers).

    **Arguments:**

    - `apply`: `apply(params, x, ...)` of a batch `x: (batch, *input_shape)`, e.g. `model.apply`.

    **Returns:** `f(params, x, ...)` for `x: input_shape`, returning `y: output_shape` (or
    `(y, new_state)` when given `state=`, the state as apply returns it). Example:
    `jax.vmap(nn.one_example(model.apply), in_axes=(None, 0))(params, xs)` equals
    `model.apply(params, xs)`. `jax.vmap` maps keyword arguments too: close over a shared `state=`
    (`jax.vmap(lambda x: f(params, x, state=state))(xs)`).
    """

    def f(params, x, *args, **kwargs):
        out = apply(params, jnp.asarray(x)[None], *args, **kwargs)
        if isinstance(out, tuple):
            return (out[0][0],) + tuple(out[1:])
        return out[0]

    return f


def serial(*layers: Layer | Callable[[Array], Array]) -> Layer:
    """Compose layers: y = f_n(...f_2(f_1(x))).

    **Arguments:**

    - `*layers`: Layers, or plain parameter-free functions of a batch (`jnp.tanh`,
      `lambda x: x.reshape(x.shape[0], -1)`), which become layers whose backward is `jax.vjp`'s.

    **Returns:** a Layer whose params (and state) are a tuple, one entry per layer (`()` for a layer
    without params). Its backward is the chain rule run in reverse: each layer turns dL/dy into
    dL/dx, which is the dL/dy of the layer before it. Its `rule` is "hand" when every layer's is.
    """
    if not layers:
        raise InputError("serial() needs at least one layer")
    layers = tuple(as_layer(layer, f"serial: argument {i}") for i, layer in enumerate(layers))
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
        name, init, forward, backward, init_state=init_state, stateful=any(layer.stateful for layer in layers)
    )
    parts = Chain((sub, (i,)) for i, sub in enumerate(layers))
    return layer._replace(stochastic=stochastic, rule=combined_rule(layers), parts=parts)


def _check_tuple(what: str, tree: Any, n: int) -> None:
    if not isinstance(tree, (tuple, list)) or len(tree) != n:
        got = f"a {type(tree).__name__}" + (f" of length {len(tree)}" if hasattr(tree, "__len__") else "")
        raise InputError(f"serial: expected {what} as a tuple of {n} entries (one per layer), got {got}")


def Residual(inner: Layer, shortcut: Layer | None = None) -> Layer:
    """y = x + f(x) for a Layer f whose output has the input's shape; or y = g(x) + f(x).

    **Arguments:**

    - `inner`: the Layer f (its output shape must equal its input shape when there is no shortcut).
    - `shortcut`: a Layer g for the other path (a ResNet's 1x1 strided projection where f changes
      the shape), or None for the identity.

    **Returns:** a Layer. Its params (and state) are f's; with a shortcut, pairs (f's, g's).

    Backward adds the two paths: dL/dx = dy (the identity path) + f.backward(dy)'s dx; with a
    shortcut, g.backward(dy)'s dx + f's.
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
        f"Residual({inner.name})",
        init,
        forward,
        backward,
        init_state=inner.init_state,
        stateful=inner.stateful,
    )
    return layer._replace(stochastic=inner.stochastic, rule=inner.rule, parts=((inner, ()),))


def wrapper_layer(layer: Layer, name: str, forward: Callable, backward: Callable) -> Layer:
    """A Layer with `layer`'s parameters, state, init and input shape (and its rule, as `parts`
    shows it inside), computed by `forward` and `backward` around it: mixed precision, remat.

    **Arguments:** `layer` the wrapped Layer; `name` the wrapper's; `forward(params, x, key=None,
    state=None, train=None) -> (y, residuals, new_state)` and `backward(residuals, dy) -> (dparams,
    dx)`, which call the layer's own.

    **Returns:** the wrapping Layer.
    """
    made = make_layer(
        name, layer.init, forward, backward, init_state=layer.init_state, stateful=layer.stateful
    )
    return made._replace(
        init=layer.init,  # with the default shape a built model has
        stochastic=layer.stochastic,
        rule=layer.rule,
        input_shape=layer.input_shape,
        parts=((layer, ()),),
    )


def _projected_residual(inner: Layer, shortcut: Layer) -> Layer:
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
        init_state=init_state,
        stateful=inner.stateful or shortcut.stateful,
    )
    return layer._replace(
        stochastic=stochastic, rule=combined_rule((inner, shortcut)), parts=((inner, (0,)), (shortcut, (1,)))
    )


def check_params(model: Layer, params: Params, input_shape: Shape) -> None:
    """Raise InputError unless `params` fit `model` for inputs of `input_shape`.

    **Arguments:**

    - `model`: the Layer.
    - `params`: parameters to check (e.g. loaded from a file).
    - `input_shape`: the shape of one input example.

    **Returns:** None. The expected tree structure and shapes come from tracing `model.init` (no
    arrays are made): this catches the parameters of a differently sized model, or of another
    model, before they are trained or applied.
    """
    expected = init_shapes(model, input_shape)[1]
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
