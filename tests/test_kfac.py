"""K-FAC (jaxnn.curvature.kfac) on problems whose answer is known: one undamped step with exact
factors on linear least squares is Newton's step; the damped step is the explicit Kronecker solve;
the moving averages, the refreshes and the Levenberg-Marquardt damping do what they say; `fit`
trains with it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnn as nn
from jaxnn import curvature as cv
from jaxnn import train

MSE = nn.losses.mean_squared_error
SCE = nn.losses.softmax_cross_entropy


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _least_squares(n=40, d=5, o=3, seed=0):
    """A linear model and centred inputs: the GGN is the Hessian, and kron(A, G) is exactly it."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    x -= x.mean(0)  # centred: no cross terms between the kernel and the bias
    y = x @ rng.normal(size=(d, o)) + rng.normal(size=(n, o))
    model = nn.Dense(o)
    _, params = model.init(jax.random.PRNGKey(1), (d,), dtype=jnp.float64)
    return model, params, jnp.asarray(x), jnp.asarray(y)


def _exact(model, loss, params, x, y):
    """(value, grads, update kwargs) with the exact factors (kflr) and the exact diagonal."""
    f = jax.jit(cv.value_and_grad_with(model, loss, ("kflr", "diag_ggn")))
    value, grads, extra = f(params, x, y)
    inner = cv.ggn_inner_products(model, loss)

    def loss_at(p):
        return loss(model.apply(p, x), y)

    kwargs = dict(kfac=extra["kflr"], diag_ggn_mc=extra["diag_ggn"], value=value, loss_at=loss_at)
    return value, grads, {**kwargs, "ggn": lambda vectors: inner(params, x, y, vectors)}


def _update(opt, grads, state, params, kwargs):
    """opt.update, compiled (the curvature kwargs hold functions: closed over, not passed)."""
    return jax.jit(lambda g, s, p: opt.update(g, s, p, **kwargs))(grads, state, params)


def _solution(x, y):
    design = np.hstack([np.asarray(x), np.ones((len(x), 1))])
    coef = np.linalg.lstsq(design, np.asarray(y), rcond=None)[0]
    return coef[:-1], coef[-1]


@pytest.mark.parametrize("learning_rate", [1.0, None], ids=["given", "quadratic-model"])
def test_one_undamped_step_with_exact_factors_is_the_newton_step(learning_rate):
    model, params, x, y = _least_squares()
    opt = cv.kfac(learning_rate, 0.0, damping=0.0, adapt_damping_every=None)
    _, grads, kwargs = _exact(model, MSE, params, x, y)
    updates, _ = _update(opt, grads, opt.init(params), params, kwargs)
    new = jax.tree_util.tree_map(lambda p, u: p + u, params, updates)
    w, b = _solution(x, y)
    np.testing.assert_allclose(new["w"], w, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(new["b"], b, rtol=1e-9, atol=1e-10)
    _, after = nn.value_and_grad(model, MSE)(new, x, y)
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(after)) < 1e-10


def _conv_prelu():
    model = nn.serial(nn.Conv2D(3, (3, 3)), nn.prelu(), nn.Flatten(), nn.Dense(4))
    x = jax.random.normal(jax.random.PRNGKey(2), (6, 6, 6, 2), jnp.float64)
    _, params = model.init(jax.random.PRNGKey(3), (6, 6, 2), dtype=jnp.float64)
    return model, params, x, jnp.arange(6) % 4


def test_the_damped_step_is_the_explicit_kronecker_solve_and_the_diagonal_elsewhere():
    model, params, x, y = _conv_prelu()
    lam = 0.3
    opt = cv.kfac(1.0, 0.0, damping=lam, adapt_damping_every=None)
    _, grads, kwargs = _exact(model, SCE, params, x, y)
    updates, _ = _update(opt, grads, opt.init(params), params, kwargs)
    for i in (0, 3):  # Conv2D and Dense: (A~ + pi sqrt(lam) I) kron (G + sqrt(lam) / pi I)
        a, g = kwargs["kfac"][i]["A"], kwargs["kfac"][i]["G"]
        augmented = np.block([[a, np.zeros((len(a), 1))], [np.zeros((1, len(a))), np.ones((1, 1))]])
        pi = np.sqrt((np.trace(augmented) / len(augmented)) / (np.trace(g) / len(g)))
        eye_a, eye_g = np.eye(len(augmented)), np.eye(len(g))
        damped = np.kron(augmented + pi * np.sqrt(lam) * eye_a, g + np.sqrt(lam) / pi * eye_g)
        # the kernel's rows (K, O) then the bias as the row of the constant input: kron(A~, G)'s order
        dwb = np.concatenate([np.asarray(grads[i]["w"]).reshape(-1), np.asarray(grads[i]["b"])])
        want = -np.linalg.solve(damped, dwb)
        np.testing.assert_allclose(updates[i]["w"].reshape(-1), want[: -len(g)], rtol=1e-8)
        np.testing.assert_allclose(updates[i]["b"], want[-len(g) :], rtol=1e-8)
    diag = kwargs["diag_ggn_mc"][1]["alpha"]  # PReLU has no factors: its damped diagonal
    np.testing.assert_allclose(updates[1]["alpha"], -grads[1]["alpha"] / (diag + lam), rtol=1e-10)


def test_moving_averages_and_refreshes():
    model, params, x, y = _conv_prelu()
    halves = [(x[:3], y[:3]), (x[3:], y[3:])]
    for every in (1, 5):
        opt = cv.kfac(0.1, 0.0, ema=0.75, inverse_every=every, adapt_damping_every=None)
        state, seen = opt.init(params), []
        for xs, ys in halves:
            _, grads, kwargs = _exact(model, SCE, params, xs, ys)
            seen.append(kwargs["kfac"])
            _, state = _update(opt, grads, state, params, kwargs)
        for i in (0, 3):
            want = 0.75 * seen[0][i]["A"] + 0.25 * seen[1][i]["A"]
            np.testing.assert_allclose(state.factors[i]["A"], want, rtol=1e-12)
            refreshed = want if every == 1 else seen[0][i]["A"]  # inverted at step 0 only, when every = 5
            g = 0.75 * seen[0][i]["G"] + 0.25 * seen[1][i]["G"] if every == 1 else seen[0][i]["G"]
            pi = np.sqrt(((np.trace(refreshed) + 1) / (len(refreshed) + 1)) / (np.trace(g) / len(g)))
            damped = refreshed + pi * np.sqrt(float(state.damping)) * np.eye(len(refreshed))
            np.testing.assert_allclose(state.inverses[i]["A"], np.linalg.inv(damped), rtol=1e-8)


def test_levenberg_marquardt_damping():
    model, params, x, y = _least_squares()
    _, grads, kwargs = _exact(model, MSE, params, x, y)
    omega = 19 / 20
    # a quadratic loss and exact factors: the model predicts the loss exactly (rho = 1), lambda shrinks
    opt = cv.kfac(None, damping=0.5, adapt_damping_every=1)
    _, state = _update(opt, grads, opt.init(params), params, kwargs)
    assert float(state.rho) == pytest.approx(1.0, abs=1e-9)
    assert float(state.damping) == pytest.approx(0.5 * omega, rel=1e-6)
    # five times Newton's step overshoots: the model says uphill, lambda grows
    opt = cv.kfac(5.0, 0.0, damping=1e-6, adapt_damping_every=1)
    _, state = _update(opt, grads, opt.init(params), params, kwargs)
    assert float(state.damping) == pytest.approx(1e-6 / omega, rel=1e-6)
    # adapted every 3 steps: unchanged after one
    opt = cv.kfac(None, damping=0.5, adapt_damping_every=3)
    _, state = _update(opt, grads, opt.init(params), params, kwargs)
    assert float(state.damping) == pytest.approx(0.5)


def test_fit_trains_with_kfac_and_beats_tuned_sgd_per_step():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 2
    labels = rng.integers(0, 3, 600)
    images = (centres[labels] + rng.normal(size=(600, 8))).astype(np.float32)
    data = (images[:480], labels[:480], images[480:], labels[480:])
    model = nn.mlp([8, 16, 3], activation="tanh")
    losses = {}
    for name, lr in (("kfac", None), ("sgd", 0.5)):  # SGD near its best rate here
        kw = dict(epochs=2, batch_size=48, input_shape=(8,), reporting=train.Reporting(progress=False))
        with jax.enable_x64(False):
            state, history = train.fit(
                model, SCE, data, opt=train.optimizer(name, lr), key=jax.random.PRNGKey(0), **kw
            )
        losses[name] = history["epochs"][-1]["train_loss"]
        assert np.all(np.isfinite(history["step_losses"]))
    assert history["epochs"][-1]["test_accuracy"] > 0.5
    assert losses["kfac"] < 0.5 * losses["sgd"], losses


def test_ggn_inner_products_are_those_of_the_ggn_vector_product():
    model, params, x, y = _conv_prelu()
    keys = jax.random.split(jax.random.PRNGKey(4), 3)
    leaves, tree = jax.tree_util.tree_flatten(params)
    vs = [tree.unflatten([jax.random.normal(k, p.shape, p.dtype) for p in leaves]) for k in keys]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *vs)
    found = cv.ggn_inner_products(model, SCE)(params, x, y, stacked)
    gvp = cv.ggn_vector_product(model, SCE)

    def dot(a, b):
        return sum(
            float(jnp.vdot(p, q)) for p, q in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
        )

    want = [[dot(u, gvp(params, x, y, v)) for v in vs] for u in vs]
    np.testing.assert_allclose(found, np.asarray(want), rtol=1e-10)


def test_refusals():
    with pytest.raises(nn.InputError, match="momentum"):
        cv.kfac(0.1, momentum=1.5)
    with pytest.raises(nn.InputError, match="constant learning rate"):
        train.optimizer("kfac", 0.1, "cosine", total_steps=10)
    with pytest.raises(nn.InputError, match="needs a learning rate"):
        train.optimizer("adam", None)
    model, params, x, y = _conv_prelu()
    with pytest.raises(nn.InputError, match="mode='manual'"):
        train.make_step(model, SCE, cv.kfac(), None, train.TrainOptions(mode="autodiff"))
    opt = cv.kfac(0.1, 0.0, adapt_damping_every=None)
    other = nn.serial(nn.Flatten(), nn.Dense(4), nn.prelu(), nn.Dense(4))  # factors at 1 and 3, not 0 and 3
    _, other_params = other.init(jax.random.PRNGKey(0), (6, 6, 2), dtype=jnp.float64)
    _, grads, kwargs = _exact(other, SCE, other_params, x, y)
    with pytest.raises(nn.InputError, match="do not match"):
        opt.update(grads, opt.init(params), other_params, **kwargs)
