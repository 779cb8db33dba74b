"""Language models on a token array kept on the device: random training windows drawn inside the
jitted, scanned loop; validation over non-overlapping blocks; jitted sampling.

    run = jax.jit(lm_steps_function(model, loss, opt, context=64, batch_size=12), static_argnums=2)
    state, losses = run(state, train_tokens, 100)            # 100 steps in one compiled call
    val_loss = make_lm_evaluate(model, loss, context)(state.params, val_tokens, state.model_state)
    ids = make_sampler(model, context, length=500)(state.params, prompt_ids, key, temperature=0.8)
"""

import jax
import jax.numpy as jnp
import optax

from .gradients import value_and_grad


def random_windows(key, tokens, context, batch_size):
    """x, y: (batch_size, context) windows of tokens at random offsets, y shifted by one (next tokens)."""
    starts = jax.random.randint(key, (batch_size,), 0, tokens.shape[0] - context)
    window = tokens[starts[:, None] + jnp.arange(context + 1)]
    return window[:, :-1], window[:, 1:]


def lm_steps_function(model, loss, opt, context, batch_size, grad="manual"):
    """run(state, tokens, steps) -> (state, step_losses): `steps` (static) training steps in one
    `lax.scan`, each on batch_size random windows of `context` tokens, the targets the next tokens."""
    f = value_and_grad(model, loss, grad)

    def step(state, tokens):
        key = jax.random.fold_in(state.key, state.step)
        window_key, dropout_key = jax.random.split(key)
        x, y = random_windows(window_key, tokens, context, batch_size)
        (value, model_state), grads = f(
            state.params, x, y, dropout_key if model.stochastic else None, state=state.model_state, train=True
        )
        updates, opt_state = opt.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state._replace(
            params=params, opt_state=opt_state, step=state.step + 1, model_state=model_state
        ), value

    def run(state, tokens, steps):
        return jax.lax.scan(lambda s, _: step(s, tokens), state, None, length=steps)

    return run


def make_lm_evaluate(model, loss, context, batch_size=64):
    """evaluate(params, tokens, model_state) -> mean loss per token over every position of the
    non-overlapping `context`-long blocks that cover the tokens (the last, partial block left out)."""

    def evaluate(params, tokens, model_state):
        blocks = (tokens.shape[0] - 1) // context
        x = tokens[: blocks * context].reshape(blocks, context)
        y = tokens[1 : blocks * context + 1].reshape(blocks, context)
        whole = blocks // batch_size

        def total(xb, yb):
            out, _ = model.apply(params, xb, state=model_state, train=False)
            return loss(out, yb) * xb.shape[0]

        def body(acc, i):
            sl = jax.lax.dynamic_slice_in_dim
            return acc + total(sl(x, i * batch_size, batch_size), sl(y, i * batch_size, batch_size)), None

        value, _ = jax.lax.scan(body, 0.0, jnp.arange(whole))
        if blocks % batch_size:
            value = value + total(x[whole * batch_size :], y[whole * batch_size :])
        return value / blocks

    return jax.jit(evaluate)


def make_sampler(model, context, length):
    """sample(params, prompt, key, temperature=1.0, model_state=()) -> `length` new token ids, each
    drawn from softmax(logits / temperature) of the last position, the model reading the last
    `context` tokens (prompt: `context` ids). Jitted: one `lax.scan` over the new tokens."""

    def sample(params, prompt, key, temperature=1.0, model_state=()):
        def step(carry, key):
            window = carry
            out, _ = model.apply(params, window[None], state=model_state, train=False)
            token = jax.random.categorical(key, out[0, -1] / temperature)
            return jnp.concatenate([window[1:], token[None].astype(window.dtype)]), token

        _, tokens = jax.lax.scan(step, prompt[-context:], jax.random.split(key, length))
        return tokens

    return jax.jit(sample)
