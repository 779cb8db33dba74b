"""Language models on a token array kept on the device: random training windows drawn inside the
jitted, scanned loop; validation over non-overlapping blocks; jitted sampling.

    steps = lm_steps_function(model, loss, opt, context=64, batch_size=12)
    run = jax.jit(steps, static_argnums=2)
    state, losses = run(state, train_tokens, 100)  # 100 steps, one compiled call
    evaluate = make_lm_evaluate(model, loss, context)
    val_loss = evaluate(state.params, val_tokens, state.model_state)
    sample = make_sampler(model, context, length=500)
    ids = sample(state.params, prompt_ids, key, temperature=0.8)
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .core import Layer, output_shape
from .errors import InputError
from .losses import LossFn
from .renamed import removed_keywords
from .train.evaluate import sum_over_batches
from .train.step import TrainOptions, make_step
from .types import PRNGKey

__all__ = ["random_windows", "lm_steps_function", "make_lm_evaluate", "make_sampler"]


def random_windows(key: PRNGKey, tokens: Any, context: int, batch_size: int) -> tuple[Any, Any]:
    """Training windows at random offsets.

    **Arguments:**

    - `key`: the PRNG key for the offsets.
    - `tokens`: the token ids `(n,)`, on the device.
    - `context`: the window length.
    - `batch_size`: the number of windows.

    **Returns:** `(x, y)`, each `(batch_size, context)`: y is x shifted by one (the next tokens). A
    text shorter than `context + 1` tokens (one window and its next token) raises an InputError.
    """
    check_long_enough(tokens, context, "training")
    starts = jax.random.randint(key, (batch_size,), 0, tokens.shape[0] - context)
    window = tokens[starts[:, None] + jnp.arange(context + 1)]
    return window[:, :-1], window[:, 1:]


def check_long_enough(tokens: Any, context: int, what: str) -> None:
    """Raise InputError unless tokens hold one window of `context` tokens and the token after it.

    **Arguments:** `tokens` the token ids `(n,)`; `context` the window length; `what` the text's use.

    **Returns:** None. Shapes are static, so this also runs under `jit`.
    """
    n = jnp.shape(tokens)[0] if jnp.ndim(tokens) == 1 else None
    if n is None or n < context + 1:
        got = f"{n} tokens" if n is not None else f"an array of shape {jnp.shape(tokens)}"
        raise InputError(
            f"the {what} text has {got}; a context of {context} needs at least {context + 1} (a window "
            "and the token after it): use a longer text or a shorter context"
        )


@removed_keywords(grad="mode=...")
def lm_steps_function(
    model: Layer,
    loss: LossFn | Callable,
    opt: optax.GradientTransformation,
    context: int,
    batch_size: int,
    mode: str = "manual",
) -> Callable[..., Any]:
    """Training steps for a language model, not yet jitted: `train.make_step`'s step on random windows.

    **Arguments:**

    - `model`, `loss`, `opt`: the Layer, the loss (`losses.sequence_cross_entropy`) and the optimiser.
    - `context`, `batch_size`: each step trains on `batch_size` random windows of `context` tokens.
    - `mode`: "manual" or "autodiff".

    **Returns:** `run(state, tokens, steps) -> (state, step_losses)`: `steps` (static) training steps
    in one `lax.scan`, the targets the next tokens. Each step's windows are drawn from the state's
    key and step (as its Dropout masks are, apart from them).
    """
    step = make_step(model, loss, opt, None, TrainOptions(mode=mode))

    def run(state, tokens, steps):
        def body(state, _):
            window_key = jax.random.fold_in(jax.random.fold_in(state.key, state.step), 2)
            x, y = random_windows(window_key, tokens, context, batch_size)
            state, metrics = step(state, x, y)
            return state, metrics.loss

        return jax.lax.scan(body, state, None, length=steps)

    return run


def make_lm_evaluate(
    model: Layer, loss: LossFn | Callable, context: int, batch_size: int = 64
) -> Callable[..., Any]:
    """The mean loss per token over a token array, jitted.

    **Arguments:**

    - `model`, `loss`: the Layer and the loss.
    - `context`: the block length.
    - `batch_size`: blocks per compiled batch.

    **Returns:** `evaluate(params, tokens, model_state) -> mean loss` over every position of the
    non-overlapping `context`-long blocks that cover the tokens (the last, partial block left out).
    """

    def evaluate(params, tokens, model_state):
        check_long_enough(tokens, context, "evaluation")
        blocks = (tokens.shape[0] - 1) // context
        x = tokens[: blocks * context].reshape(blocks, context)
        y = tokens[1 : blocks * context + 1].reshape(blocks, context)
        size = min(batch_size, blocks)  # a text of fewer blocks than a batch: one batch of them all

        def total(xb, yb):
            out, _ = model.apply(params, xb, state=model_state, train=False)
            return loss(out, yb) * xb.shape[0]

        value = sum_over_batches(total, (x, y), size)
        return value / blocks

    return jax.jit(evaluate)


def make_sampler(model: Layer, context: int, length: int) -> Callable[..., Any]:
    """Sampling from a causal language model, jitted: one `lax.scan` over the new tokens.

    **Arguments:**

    - `model`: a causal language model mapping tokens `(batch, time)` to logits `(batch, time, vocab)`
      whose output at position t depends on positions <= t only (every model of `jaxnn.models` is).
    - `context`: the longest window the model reads.
    - `length`: how many tokens to draw.

    **Returns:** `sample(params, prompt, key, temperature=1.0, model_state=None) -> (length,) token ids`,
    each drawn from softmax(logits / temperature) at the window's last position. The window is the
    prompt's last `context` tokens; a shorter prompt's window grows with each token drawn until it
    holds `context`, then slides. `model_state=None` takes the model's initial state
    (`model.init_state`), which serves every model without running statistics.

    The window lives in a buffer of `context` tokens filled from the left: a causal model's output
    at the last filled position is the same whatever fills the rest, so one compiled program serves
    every window length. The prompt is checked on the host first: a prompt that is not a non-empty
    1-D array of integer ids in [0, vocab), vocab the width of the model's output, raises an
    InputError (an id outside it would be read as some other token, or as zeros).
    """
    vocab = output_shape(model, (context,))[-1]

    @jax.jit
    def draw(params, prompt, key, temperature, model_state):
        if model_state is None:
            model_state = model.init_state((context,))
        prompt = prompt[-context:]
        filled = prompt.shape[0]
        buffer = jnp.zeros((context,), prompt.dtype).at[:filled].set(prompt)

        def step(carry, key):
            buffer, filled = carry
            out, _ = model.apply(params, buffer[None], state=model_state, train=False)
            token = jax.random.categorical(key, out[0, filled - 1] / temperature).astype(buffer.dtype)
            slid = jnp.concatenate([buffer[1:], token[None]])
            grown = buffer.at[jnp.minimum(filled, context - 1)].set(token)
            buffer = jnp.where(filled < context, grown, slid)
            return (buffer, jnp.minimum(filled + 1, context)), token

        _, tokens = jax.lax.scan(step, (buffer, jnp.asarray(filled)), jax.random.split(key, length))
        return tokens

    def sample(params, prompt, key, temperature=1.0, model_state=None):
        host = np.asarray(prompt)
        if host.ndim != 1 or host.shape[0] < 1 or not np.issubdtype(host.dtype, np.integer):
            raise InputError(
                "make_sampler: the prompt must be a non-empty 1-D array of integer ids, got "
                f"{host.dtype}{host.shape}"
            )
        if host.min() < 0 or host.max() >= vocab:
            raise InputError(
                f"make_sampler: the prompt's ids must lie in [0, {vocab}) (the model's vocabulary), "
                f"got ids from {host.min()} to {host.max()}"
            )
        return draw(params, jnp.asarray(host), key, temperature, model_state)

    return sample
