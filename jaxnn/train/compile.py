"""XLA compiler options for the programs that run a model: which to give, and whether this XLA knows them.

step = nn.jit(step, model)      # jax.jit(step, compiler_options=model_compiler_options(model, shape))
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..core import Layer, model_input_shape
from ..renamed import removed_keywords
from ..types import Shape

# XLA's CPU default hands single dots, single convolutions and reductions to YNNPACK. A convolution
# that YNNPACK runs alone (INDIVIDUAL_CONVOLUTION) runs on one core; fused with an element-wise
# neighbour (ELTWISE: the bias add, a ReLU) it runs on every core, and one with no such neighbour
# (the input gradient's transposed convolution) runs faster on XLA's own multi-threaded kernel.
# So: dots alone, reductions, and element-wise fusions, no lone convolutions: the faster set both
# for a step called once per call and for a scan of steps (the CNN step's benchmark page).
_CPU_CONV_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": ",".join(
        f"LIBRARY_FUSION_TYPE_{kind}" for kind in ("INDIVIDUAL_DOT", "REDUCE", "ELTWISE")
    )
}


@removed_keywords(per_call="compiler_options(lowered) (steps called once and scans now compile alike)")
def compiler_options(lowered: Any) -> dict | None:
    """The one decision of this module: XLA options for compiling a lowered program here.

    **Arguments:** `lowered` a `jax.jit(f).lower(...)` program (a step called once per call, or a
    scan of many steps: both compile alike).

    **Returns:** on the CPU, for a program with a convolution, YNNPACK's fusions, where this XLA
    knows them; else None (XLA's defaults).
    """
    if jax.default_backend() != "cpu" or "convolution" not in lowered.as_text():
        return None
    return known_options(dict(_CPU_CONV_OPTIONS))


def known_options(options: dict | None) -> dict | None:
    """The options if this XLA compiles with them (they are experimental: an XLA that no longer knows
    one refuses to compile with it).

    **Arguments:** `options` XLA options, or None.

    **Returns:** the options, or None (XLA's defaults). Checked once per process.
    """
    if not options:
        return None
    return options if _compiles_with(tuple(sorted(options.items()))) else None


@functools.cache
def _compiles_with(option_items: tuple) -> bool:
    try:
        jax.jit(lambda x: x + 1, compiler_options=dict(option_items)).lower(np.float32(0)).compile()
    except jax.errors.JaxRuntimeError:
        return False
    return True


def compile_lowered(lowered: Any) -> tuple[Any, dict | None]:
    """Compile a lowered program with `compiler_options`, where this XLA knows them.

    **Arguments:** `lowered` a `jax.jit(f).lower(...)` program.

    **Returns:** `(compiled, options)`, options None where XLA's defaults were used.
    """
    options = compiler_options(lowered)
    return lowered.compile(options), options


@removed_keywords(per_call="model_compiler_options(model, shape) (steps called once and scans compile alike)")
def model_compiler_options(model: Layer, input_shape: Shape) -> dict | None:
    """`compiler_options` for the programs that run a model, decided before any data are seen.

    **Arguments:** `model` a Layer; `input_shape` the shape of one example.

    **Returns:** `compiler_options` of the model's init and forward pass on one example (lowered,
    not run or compiled). For jitting a function of the model:
    `jax.jit(f, compiler_options=model_compiler_options(model, (28, 28, 1)))`, as make_epoch and
    make_evaluate do.
    """
    input_shape = tuple(input_shape)

    def forward(key):
        _, params = model.init(key, input_shape)
        x = jnp.zeros((1,) + input_shape, jnp.float32)  # the params init gives: float32
        return model.apply(params, x, state=model.init_state(input_shape), train=False)

    return compiler_options(jax.jit(forward).lower(jax.random.PRNGKey(0)))


def jit(fun: Callable, model: Layer, input_shape: Shape | None = None, **jit_kwargs: Any) -> Callable:
    """`jax.jit(fun)` compiled as `fit` compiles its programs: with the model's XLA options.

    **Arguments:**

    - `fun`: the function to compile, e.g. a training step built on `nn.value_and_grad(model, ...)`.
    - `model`: the Layer that `fun` runs; its programs get `model_compiler_options(model, shape)`
      (on the CPU, YNNPACK's fusions when the model has convolutions; else XLA's defaults).
    - `input_shape`: one example's shape (default: `model.input_shape`). A model that records none
      (built with `serial`) needs none either: the options are then decided from the program that
      the first call lowers, as `compile_lowered` decides them.
    - `jit_kwargs`: passed on to `jax.jit` (`donate_argnums`, `static_argnums`, ...).

    **Returns:** the jitted function, one compiled program per input signature as with `jax.jit`,
    compiled with the options `fit` compiles its scans with. Each call allocates its temporaries
    afresh unless the script opted in to `nn.reuse_host_memory()` first thing (`jaxnn.hostmem`).
    """
    if input_shape is None and model.input_shape is None:
        return _jit_on_first_call(fun, jit_kwargs)
    shape = model_input_shape(model, input_shape, "jit")
    options = model_compiler_options(model, shape)
    return jax.jit(fun, compiler_options=options, **jit_kwargs)


def _jit_on_first_call(fun: Callable, jit_kwargs: dict) -> Callable:
    """`jax.jit(fun)` whose compiler options come from the program the first call lowers."""
    compiled: list[Callable] = []  # the jitted function, once the first call has chosen its options

    @functools.wraps(fun)
    def call(*args, **kwargs):
        if not compiled:
            options = compiler_options(jax.jit(fun, **jit_kwargs).lower(*args, **kwargs))
            compiled.append(jax.jit(fun, compiler_options=options, **jit_kwargs))
        return compiled[0](*args, **kwargs)

    return call
