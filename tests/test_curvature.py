"""One table drives the curvature checks: every model of MODELS with every loss of LOSSES, each
quantity of the extended backward pass (jaxnn.curvature) in float64 against autodiff written out
here: `jax.vmap` of `jax.grad` for each example's gradient, the explicit GGN J^T H_L J from
`jax.jacobian` and `jax.hessian`, and `jax.hessian` of the mean loss. Then the Kronecker factors
against the GGN's blocks, the Monte-Carlo estimates against the exact ones, and the errors.

A new layer with a curvature rule needs a model here that holds it; a comparison with BackPACK
on PyTorch models brought in with `io.from_torch` runs with the slow tests.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import jaxnn as nn
from jaxnn import curvature as cv

TOL = 1e-10  # relative to each leaf's largest entry: float64 rounding is ~1e-15
BATCH = 5
CLASSES = 3


def _with_bn_state(model, shape):
    """A BatchNorm model with running statistics away from 0 and 1 (evaluation mode)."""
    state = model.init_state(shape, dtype=jnp.float64)
    return jax.tree_util.tree_map(
        lambda a: a + 0.5 + 0.25 * jnp.cos(jnp.arange(a.size).reshape(a.shape)), state
    )


# name -> (model, one example's input shape)
MODELS = {
    "mlp tanh": (nn.mlp([4, 5, CLASSES], activation="tanh"), (4,)),
    "mlp elu, softplus": (
        nn.serial(
            nn.Dense(5), nn.activation("elu", alpha=0.7), nn.Dense(4), nn.activation("softplus"), nn.Dense(3)
        ),
        (4,),
    ),
    "mlp logistic, arctan": (
        nn.serial(nn.Dense(4), nn.activation("logistic"), nn.Dense(4), nn.activation("arctan"), nn.Dense(3)),
        (3,),
    ),
    "mlp gelu, silu, identity": (
        nn.serial(
            nn.Dense(4),
            nn.activation("gelu"),
            nn.Dense(4),
            nn.activation("silu"),
            nn.activation("identity"),
            nn.Dense(3),
        ),
        (3,),
    ),
    "mlp relu, leaky_relu, binary_step": (
        nn.serial(
            nn.Dense(4),
            nn.activation("relu"),
            nn.Dense(4),
            nn.activation("leaky_relu", negative_slope=0.2),
            nn.Dense(4),
            nn.activation("binary_step"),
            nn.Dense(3),
        ),
        (3,),
    ),
    "cnn: conv, relu, max pool, strided VALID conv, tanh": (
        nn.serial(
            nn.Conv2D(3, (3, 3)),
            nn.activation("relu"),
            nn.MaxPool(),
            nn.Conv2D(2, (2, 2), stride=2, padding="VALID"),
            nn.activation("tanh"),
            nn.Flatten(),
            nn.Dense(3),
        ),
        (6, 7, 2),
    ),
    "cnn: stride-2 SAME conv, prelu, avg pool": (
        nn.serial(nn.Conv2D(2, (3, 3), stride=2), nn.prelu(), nn.AvgPool(), nn.Flatten(), nn.Dense(3)),
        (6, 6, 1),
    ),
    "cnn with BatchNorm (evaluation) and Dropout (off)": (
        nn.serial(
            nn.Conv2D(2, (3, 3)),
            nn.BatchNorm(),
            nn.activation("softplus"),
            nn.Dropout(0.3),
            nn.Flatten(),
            nn.Dense(3),
        ),
        (4, 4, 1),
    ),
    "nested serial": (nn.serial(nn.serial(nn.Dense(4), nn.activation("tanh")), nn.Dense(3)), (3,)),
    "Dense on sequences": (nn.serial(nn.Dense(3), nn.activation("tanh"), nn.Flatten(), nn.Dense(3)), (4, 2)),
    "a layer of the user's own (autodiff)": (
        nn.serial(
            nn.make_layer(
                "scaled tanh",
                lambda key, shape, dtype=jnp.float32: (shape, {"a": jnp.full(shape[-1:], 1.5, dtype)}),
                apply=lambda p, x: jnp.tanh(p["a"] * x),
            ),
            nn.Dense(3),
        ),
        (4,),
    ),
}


def _targets(loss_name, key):
    if loss_name == "softmax_cross_entropy":
        return jax.random.randint(key, (BATCH,), 0, CLASSES)
    if loss_name == "mean_squared_error":
        return jax.random.normal(key, (BATCH, CLASSES), jnp.float64)
    return jax.random.uniform(key, (BATCH, CLASSES), jnp.float64)


LOSSES = ("softmax_cross_entropy", "mean_squared_error", "binary_cross_entropy")


def _case(model_name, loss_name, seed=0):
    model, shape = MODELS[model_name]
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    _, params = model.init(k1, shape, dtype=jnp.float64)
    x = jax.random.normal(k2, (BATCH,) + shape, jnp.float64)
    state = _with_bn_state(model, shape) if model.stateful else None
    return model, getattr(nn.losses, loss_name), params, x, _targets(loss_name, k3), state


def _explicit(model, loss, params, x, y, state):
    """(GGN, Hessian, unravel) of the mean loss over the flattened parameters, from jax.jacobian
    and jax.hessian: nothing of jaxnn's backward passes is used."""
    flat, unravel = ravel_pytree(params)

    @jax.jit
    def matrices(flat, x, y, state):
        def outputs(f):
            out = model.apply(unravel(f), x, state=state, train=False)
            return out if state is None else out[0]

        out = outputs(flat)
        jacobian = jax.jacobian(outputs)(flat).reshape(out.size, -1)
        loss_hessian = jax.hessian(lambda z: loss(z.reshape(out.shape), y))(out.reshape(-1))
        hessian = jax.hessian(lambda f: loss(outputs(f), y))(flat)
        return jacobian.T @ loss_hessian @ jacobian, hessian

    return *matrices(flat, x, y, state), unravel


def _per_example(model, loss, params, x, y, state):
    """g_n = grad of (1/N) l_n, by jax.vmap of jax.grad."""

    def one_of(p, x1, y1):
        out = model.apply(p, x1[None], state=state, train=False)
        return loss(out if state is None else out[0], y1[None]) / x.shape[0]

    return jax.jit(jax.vmap(jax.grad(one_of), in_axes=(None, 0, 0)))(params, x, y)


def _close(got, want, what):
    got_leaves, want_leaves = jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want), what
    for g, w in zip(got_leaves, want_leaves):
        assert g.shape == w.shape, (what, g.shape, w.shape)
        scale = float(jnp.max(jnp.abs(w))) or 1.0
        error = float(jnp.max(jnp.abs(g - w))) / scale
        assert error <= TOL, f"{what}: relative error {error:.2e}"


FIRST_ORDER = ("batch_grad", "batch_l2", "sum_grad_squared", "variance")
EXACT = FIRST_ORDER + ("diag_ggn", "diag_hessian", "kflr")
OWN = "a layer of the user's own (autodiff)"  # no second derivative: no diag_hessian


# the default run checks an MLP and a CNN, each with another loss; the slow run every pair
DEFAULT = {
    ("mlp tanh", "softmax_cross_entropy"),
    ("cnn: stride-2 SAME conv, prelu, avg pool", "binary_cross_entropy"),
}
SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "model_name, loss_name",
    [(m, n) if (m, n) in DEFAULT else pytest.param(m, n, marks=SLOW) for m in sorted(MODELS) for n in LOSSES],
)
def test_each_quantity_matches_autodiff(model_name, loss_name, x64):
    model, loss, params, x, y, state = _case(model_name, loss_name)
    names = tuple(n for n in EXACT if model_name != OWN or n != "diag_hessian")
    f = jax.jit(cv.value_and_grad_with(model, loss, names))
    value, grads, extra = f(params, x, y, state=state)
    want_value, want_grads = nn.value_and_grad(model, loss)(params, x, y, state=state, train=False)
    _close(value, want_value, "value")
    _close(grads, want_grads, "grads")

    batch = _per_example(model, loss, params, x, y, state)
    n = x.shape[0]
    _close(extra["batch_grad"], batch, "batch_grad")
    _close(
        extra["batch_l2"],
        jax.tree_util.tree_map(lambda g: jnp.sum(g**2, tuple(range(1, g.ndim))), batch),
        "l2",
    )
    squares = jax.tree_util.tree_map(lambda g: jnp.sum(g**2, 0), batch)
    _close(extra["sum_grad_squared"], squares, "sum_grad_squared")
    variance = jax.tree_util.tree_map(lambda sq, g: sq / n - (g.sum(0) / n) ** 2, squares, batch)
    _close(extra["variance"], variance, "variance")

    ggn, hessian, unravel = _explicit(model, loss, params, x, y, state)
    _close(extra["diag_ggn"], unravel(jnp.diag(ggn)), "diag_ggn")
    if "diag_hessian" in names:
        _close(extra["diag_hessian"], unravel(jnp.diag(hessian)), "diag_hessian")
    else:
        with pytest.raises(nn.InputError, match="second derivative"):
            cv.value_and_grad_with(model, loss, "diag_hessian")

    v = jax.tree_util.tree_map(lambda p: jnp.cos(jnp.arange(p.size, dtype=p.dtype)).reshape(p.shape), params)
    flat_v, _ = ravel_pytree(v)
    gvp, hvp = jax.jit(cv.ggn_vector_product(model, loss)), jax.jit(cv.hessian_vector_product(model, loss))
    _close(gvp(params, x, y, v, state=state), unravel(ggn @ flat_v), "G v")
    _close(hvp(params, x, y, v, state=state), unravel(hessian @ flat_v), "H v")


SOFTMAX_ONLY_BY_DEFAULT = [n if n == "softmax_cross_entropy" else pytest.param(n, marks=SLOW) for n in LOSSES]


@SLOW
@pytest.mark.parametrize("loss_name", LOSSES)
def test_the_autodiff_mode_gives_the_same_numbers(loss_name, x64):
    model, loss, params, x, y, state = _case("cnn: conv, relu, max pool, strided VALID conv, tanh", loss_name)
    names = FIRST_ORDER + ("diag_ggn", "diag_ggn_mc", "diag_hessian")
    key = jax.random.PRNGKey(3)
    _, _, manual = jax.jit(cv.value_and_grad_with(model, loss, names))(params, x, y, key=key)
    _, _, autodiff = jax.jit(cv.value_and_grad_with(model, loss, names, mode="autodiff"))(
        params, x, y, key=key
    )
    for name in names:  # the Monte-Carlo estimate too: both draw the same labels from the key
        _close(manual[name], autodiff[name], name)


def _ggn_block(ggn, unravel, params, path, leaf):
    """The GGN's block of params[path][leaf], in its row-major layout."""
    index = unravel(jnp.arange(ggn.shape[0]))
    for i in path:
        index = index[i]
    ids = np.asarray(index[leaf]).reshape(-1)
    return ggn[np.ix_(ids, ids)]


@pytest.mark.parametrize("loss_name", SOFTMAX_ONLY_BY_DEFAULT)
def test_for_one_example_kron_a_g_is_the_ggn_block_of_a_dense_layer(loss_name, x64):
    model, loss, params, x, y, state = _case("mlp tanh", loss_name)
    x, y = x[:1], y[:1]
    _, _, extra = jax.jit(cv.value_and_grad_with(model, loss, "kflr"))(params, x, y)
    ggn, _, unravel = _explicit(model, loss, params, x, y, state)
    assert extra["kflr"][1] is None  # the activation
    for i in (0, 2):
        factors = extra["kflr"][i]
        _close(jnp.kron(factors["A"], factors["G"]), _ggn_block(ggn, unravel, params, (i,), "w"), f"W of {i}")
        _close(factors["G_b"], _ggn_block(ggn, unravel, params, (i,), "b"), f"b of {i}")


def test_convolution_factors_follow_their_definitions(x64):
    """A = (1/N) sum_n sum_t a_nt a_nt^T over (kh, kw, c_in) patches, and G_b is exactly the GGN's
    block of the bias (positions summed before the outer product)."""
    model, loss, params, x, y, state = _case(
        "cnn: stride-2 SAME conv, prelu, avg pool", "softmax_cross_entropy"
    )
    _, _, extra = jax.jit(cv.value_and_grad_with(model, loss, "kflr"))(params, x, y)
    patches = jax.lax.conv_general_dilated_patches(
        x, (3, 3), (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )  # features ordered (c_in, kh, kw): put them in jaxnn's (kh, kw, c_in) order
    patches = patches.reshape(patches.shape[:3] + (1, 3, 3)).transpose(0, 1, 2, 4, 5, 3).reshape(-1, 9)
    _close(extra["kflr"][0]["A"], patches.T @ patches / x.shape[0], "A")
    ggn, _, unravel = _explicit(model, loss, params, x, y, state)
    _close(extra["kflr"][0]["G_b"], _ggn_block(ggn, unravel, params, (0,), "b"), "G_b")
    _close(extra["kflr"][4]["G_b"], _ggn_block(ggn, unravel, params, (4,), "b"), "G_b of the Dense layer")
    assert extra["kflr"][1] is None  # PReLU has parameters but no Kronecker factors


@pytest.mark.parametrize("loss_name", SOFTMAX_ONLY_BY_DEFAULT)
def test_monte_carlo_estimates_converge_to_the_exact_ones(loss_name, x64):
    model, loss, params, x, y, state = _case("mlp tanh", loss_name)
    exact = jax.jit(cv.value_and_grad_with(model, loss, ("diag_ggn", "kflr")))(params, x, y)[2]
    f = cv.value_and_grad_with(model, loss, ("diag_ggn_mc", "kfac"))
    draws = jax.jit(jax.vmap(lambda k: f(params, x, y, key=k)[2]))(
        jax.random.split(jax.random.PRNGKey(0), 20_000)
    )

    def error(samples):
        mean = jax.tree_util.tree_map(lambda a: a[:samples].mean(0), draws)
        pairs = [(mean["diag_ggn_mc"], exact["diag_ggn"]), (mean["kfac"][0]["G"], exact["kflr"][0]["G"])]
        return max(
            float(jnp.max(jnp.abs(g - w)) / jnp.max(jnp.abs(w)))
            for got, want in pairs
            for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want))
        )

    few, many = error(200), error(20_000)
    assert many < 0.05 and many < few / 3, (few, many)  # the error shrinks as 1/sqrt(samples)
    _close(draws["kfac"][0]["A"][0], exact["kflr"][0]["A"], "kfac's A is exact")


def test_rules_say_how_each_layer_is_handled():
    loss = nn.losses.mean_squared_error
    f = cv.value_and_grad_with(MODELS["a layer of the user's own (autodiff)"][0], loss, "diag_ggn")
    assert f.rules == ("autodiff", "hand")
    g = cv.value_and_grad_with(MODELS["cnn: stride-2 SAME conv, prelu, avg pool"][0], loss, "diag_ggn")
    assert g.rules == ("hand", "vmap", None, None, "hand")


def test_dropout_in_training_mode_keeps_each_examples_gradient(x64):
    model = nn.serial(nn.Dense(6), nn.activation("tanh"), nn.Dropout(0.5), nn.Dense(3))
    _, params = model.init(jax.random.PRNGKey(0), (4,), dtype=jnp.float64)
    x = jax.random.normal(jax.random.PRNGKey(1), (BATCH, 4), jnp.float64)
    y = jnp.arange(BATCH) % 3
    key = jax.random.PRNGKey(2)
    value, grads, extra = cv.value_and_grad_with(model, nn.losses.softmax_cross_entropy, "batch_grad")(
        params, x, y, key=key, train=True
    )
    want_value, want_grads = nn.value_and_grad(model, nn.losses.softmax_cross_entropy)(
        params, x, y, key, train=True
    )
    _close(value, want_value, "value")
    _close(jax.tree_util.tree_map(lambda g: g.sum(0), extra["batch_grad"]), want_grads, "sum of batch_grad")


def test_a_stateful_model_returns_its_state_with_the_value(x64):
    model, loss, params, x, y, state = _case(
        "cnn with BatchNorm (evaluation) and Dropout (off)", "mean_squared_error"
    )
    (value, new_state), _, _ = cv.value_and_grad_with(model, loss, "batch_l2")(params, x, y, state=state)
    _close(new_state, state, "state")
    with pytest.raises(nn.InputError, match="batch statistics in training mode"):
        cv.value_and_grad_with(model, loss, "batch_l2")(params, x, y, state=state, train=True)


@pytest.mark.parametrize(
    "model, loss, which, words",
    [
        (nn.serial(nn.LSTM(3), nn.LastStep()), nn.losses.softmax_cross_entropy, "diag_ggn", "LSTM"),
        (nn.Residual(nn.Dense(3)), nn.losses.mean_squared_error, "batch_grad", "Residual"),
        (nn.mlp([3, 2]), nn.losses.sequence_cross_entropy, "diag_ggn", "sequence_cross_entropy"),
        (nn.mlp([3, 2]), nn.losses.softmax_cross_entropy, "diag_gnn", "unknown quantity"),
        (nn.mlp([3, 2]), nn.losses.softmax_cross_entropy, (), "unknown quantity"),
    ],
)
def test_what_has_no_rule_is_named(model, loss, which, words):
    with pytest.raises(nn.InputError, match=words):
        cv.value_and_grad_with(model, loss, which)


def test_a_sampled_quantity_needs_a_key():
    model = nn.mlp([3, 2])
    _, params = model.init(jax.random.PRNGKey(0), (3,))
    f = cv.value_and_grad_with(model, nn.losses.softmax_cross_entropy, "kfac")
    with pytest.raises(nn.InputError, match="pass key="):
        f(params, jnp.ones((2, 3)), jnp.array([0, 1]))


def test_the_hessian_of_a_wide_smooth_activation_is_refused_before_it_fills_memory():
    model = nn.serial(nn.Dense(4096), nn.activation("tanh"), nn.Dense(2))
    _, params = model.init(jax.random.PRNGKey(0), (3,))
    f = cv.value_and_grad_with(model, nn.losses.softmax_cross_entropy, "diag_hessian")
    with pytest.raises(nn.InputError, match="4096 units"):
        jax.eval_shape(lambda p: f(p, jnp.ones((32, 3)), jnp.zeros(32, jnp.int32)), params)


def test_every_table_row_has_its_second_derivative(x64):
    from jaxnn.activations import PIECEWISE_LINEAR, TABLE

    x = jnp.linspace(-3, 3, 25) + 0.05  # away from the kinks
    for name, row in TABLE.items():
        f = lambda t, row=row: row.f(t, **row.options)  # noqa: E731
        want = jax.vmap(jax.grad(jax.grad(f)))(x)
        _close(row.d2f(x, f(x), **row.options), want, name)
        if name in PIECEWISE_LINEAR:
            assert not np.any(want)


def _backpack_case(loss_name):
    """A PyTorch model in float64, BackPACK's quantities on a batch, and the same model in jaxnn
    (io.from_torch). torch's Linear keeps (out, in) and Conv2d (out, in, kh, kw): every quantity of
    a parameter's shape is put into a copy of the module as its weights and converted by
    io.from_torch, the one conversion the weights take."""
    import copy

    torch = pytest.importorskip("torch")
    backpack = pytest.importorskip("backpack")
    from backpack import extensions

    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Tanh(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(18, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3),
    ).double()  # fmt: skip
    model = nn.serial(
        nn.Conv2D(2, (3, 3)), nn.activation("tanh"), nn.MaxPool(), nn.Flatten(),
        nn.Dense(4), nn.activation("tanh"), nn.Dense(3),
    )  # fmt: skip
    x = torch.randn(5, 1, 6, 6, dtype=torch.float64)
    if loss_name == "softmax_cross_entropy":
        y, loss_fn, scale = torch.tensor([0, 2, 1, 1, 0]), torch.nn.CrossEntropyLoss(), 1.0
    else:  # torch's mean divides by N D, jaxnn's by N: jaxnn's loss is D times torch's
        y, loss_fn, scale = torch.randn(5, 3, dtype=torch.float64), torch.nn.MSELoss(), 3.0
    extended, loss_fn = backpack.extend(copy.deepcopy(module)), backpack.extend(loss_fn)
    names = ("BatchGrad", "BatchL2Grad", "SumGradSquared", "Variance", "DiagGGNExact", "DiagHessian", "KFLR")
    with backpack.backpack(*(getattr(extensions, n)() for n in names)):
        loss_fn(extended(x), y).backward()

    def as_params(attribute, power):
        holder = copy.deepcopy(module)
        with torch.no_grad():
            for mine, theirs in zip(holder.parameters(), extended.parameters()):
                mine.copy_(getattr(theirs, attribute) * scale**power)
        return nn.io.from_torch(model, holder, (6, 6, 1), check=False)[0]

    def per_example(n):
        holder = copy.deepcopy(module)
        with torch.no_grad():
            for mine, theirs in zip(holder.parameters(), extended.parameters()):
                mine.copy_(theirs.grad_batch[n] * scale)
        return nn.io.from_torch(model, holder, (6, 6, 1), check=False)[0]

    theirs = {
        "batch_grad": jax.tree_util.tree_map(lambda *g: jnp.stack(g), *[per_example(n) for n in range(5)]),
        "sum_grad_squared": as_params("sum_grad_squared", 2),
        "variance": as_params("variance", 2),
        "diag_ggn": as_params("diag_ggn_exact", 1),
        "diag_hessian": as_params("diag_h", 1),
        # [G, A] for a weight, [G] for a bias: G scales with the loss, A (the inputs') does not
        "kflr": [
            [jnp.asarray(f.numpy()) * (scale if i == 0 else 1.0) for i, f in enumerate(p.kflr)]
            for p in extended.parameters()
        ],
    }
    params, _ = nn.io.from_torch(model, module, (6, 6, 1))
    y_jax = jnp.asarray(y.numpy())
    return (
        model,
        getattr(nn.losses, loss_name),
        params,
        jnp.asarray(x.permute(0, 2, 3, 1).numpy()),
        y_jax,
        theirs,
    )


@pytest.mark.slow
@pytest.mark.parametrize("loss_name", ["softmax_cross_entropy", "mean_squared_error"])
def test_the_quantities_are_backpacks_on_a_model_from_pytorch(loss_name, x64):
    model, loss, params, x, y, theirs = _backpack_case(loss_name)
    names = ("batch_grad", "sum_grad_squared", "variance", "diag_ggn", "diag_hessian", "kflr")
    _, _, mine = cv.value_and_grad_with(model, loss, names)(params, x, y)
    for name in names[:-1]:
        _close(mine[name], theirs[name], name)
    # Kronecker factors: BackPACK's are [G, A] for a weight (bias: [G]); the Linear after a Linear
    # reads its inputs in one order in both, and a convolution with one input channel too
    conv_g, conv_a = theirs["kflr"][0]
    _close(mine["kflr"][0]["G"], conv_g, "G of the convolution")
    _close(mine["kflr"][0]["A"], conv_a, "A of the convolution")
    last_g, last_a = theirs["kflr"][4]
    _close(mine["kflr"][6]["G"], last_g, "G of the last Dense layer")
    _close(mine["kflr"][6]["A"], last_a, "A of the last Dense layer")


def test_sharpness_is_the_largest_eigenvalue_of_the_hessian(x64):
    """Lanczos on the hand Hessian-vector products against jnp.linalg.eigvalsh of the whole Hessian."""
    model, loss, params, x, y, state = _case("mlp tanh", "mean_squared_error")
    _, hessian, _ = _explicit(model, loss, params, x, y, state)
    want = jnp.linalg.eigvalsh(hessian)[-1]
    value, vector = jax.jit(cv.sharpness(model, loss, steps=20))(params, x, y, jax.random.PRNGKey(1))
    assert abs(float(value - want)) <= 1e-9 * abs(float(want)), (float(value), float(want))
    flat, _ = ravel_pytree(vector)
    np.testing.assert_allclose(float(jnp.linalg.norm(flat)), 1.0, rtol=1e-9)
    np.testing.assert_allclose(hessian @ flat, want * flat, atol=1e-7 * abs(float(want)))
