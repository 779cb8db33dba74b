"""Weights in and out: random PyTorch modules of every kind jaxnn can hold give, imported with
jaxnn.io.from_torch, the same outputs as the jaxnn model (float64, <= 1e-9) and the same gradients
of inputs and parameters from jaxnn's hand rules as from PyTorch's autograd; to_torch brings them
back exactly; safetensors files and jax.export artifacts round-trip."""

import copy
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnn as nn
from jaxnn import io

torch = pytest.importorskip("torch")

KEY = jax.random.PRNGKey(0)


def _images(x):  # jaxnn NHWC -> PyTorch NCHW
    return x.permute(0, 3, 1, 2)


def _from_images(y):
    return y.permute(0, 2, 3, 1)


def _seq(x):  # jaxnn (batch, time, C) -> PyTorch's Conv1d (batch, C, time)
    return x.permute(0, 2, 1)


class Recurrent(torch.nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.cell = cell

    def forward(self, x):
        return self.cell(x)[0]


class Attention(torch.nn.Module):
    def __init__(self, d, heads, causal):
        super().__init__()
        self.att, self.causal = torch.nn.MultiheadAttention(d, heads, batch_first=True), causal

    def forward(self, x):
        t = x.shape[1]
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1) if self.causal else None
        return self.att(x, x, x, attn_mask=mask, need_weights=False)[0]


class Functional(torch.nn.Module):
    """Two Linear layers with a tanh between them that no module holds."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def _zero_b_hn(gru):
    with torch.no_grad():
        gru.bias_hh_l0[2 * gru.hidden_size :] = 0
    return gru


# name -> (jaxnn model, PyTorch module, one example's shape (jaxnn layout), input to torch, output from torch)
CASES = {
    "MLP (Linear)": (
        lambda: nn.mlp([6, 5, 3], activation="tanh"),
        lambda: torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)),
        (6,),
        None,
        None,
    ),
    "CNN: Conv2d SAME, MaxPool, Flatten then Linear (rows reordered)": (
        lambda: nn.serial(
            nn.Conv2D(4, (3, 3)), nn.activation("relu"), nn.MaxPool(), nn.Flatten(), nn.Dense(3)
        ),
        lambda: torch.nn.Sequential(
            torch.nn.Conv2d(2, 4, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Flatten(),
            torch.nn.Linear(4 * 3 * 3, 3),
        ),
        (6, 6, 2),
        _images,
        None,
    ),
    "Conv2d stride 2 VALID": (
        lambda: nn.Conv2D(3, (3, 2), stride=2, padding="VALID"),
        lambda: torch.nn.Conv2d(2, 3, (3, 2), stride=2),
        (7, 6, 2),
        _images,
        _from_images,
    ),
    "ConvTranspose2d stride 2": (
        lambda: nn.ConvTranspose2D(3, 2, 2),
        lambda: torch.nn.ConvTranspose2d(2, 3, 2, stride=2),
        (4, 5, 2),
        _images,
        _from_images,
    ),
    "Conv1d SAME": (
        lambda: nn.Conv1D(4, 3),
        lambda: torch.nn.Conv1d(2, 4, 3, padding=1),
        (7, 2),
        _seq,
        _seq,
    ),
    "BatchNorm2d (evaluation, running statistics as state)": (
        lambda: nn.serial(nn.Conv2D(3, (1, 1)), nn.BatchNorm(momentum=0.9, eps=1e-5)),
        lambda: torch.nn.Sequential(
            torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3, eps=1e-5, momentum=0.1)
        ),
        (4, 4, 2),
        _images,
        _from_images,
    ),
    "LayerNorm": (
        lambda: nn.serial(nn.Dense(6), nn.LayerNorm()),
        lambda: torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.LayerNorm(6)),
        (4,),
        None,
        None,
    ),
    "GroupNorm": (
        lambda: nn.GroupNorm(2),
        lambda: torch.nn.GroupNorm(2, 4),
        (3, 3, 4),
        _images,
        _from_images,
    ),
    "Embedding": (
        lambda: nn.serial(nn.Embedding(7, 4), nn.Dense(2)),
        lambda: torch.nn.Sequential(torch.nn.Embedding(7, 4), torch.nn.Linear(4, 2)),
        (5,),
        None,
        None,
    ),
    "LSTM": (
        lambda: nn.serial(nn.LSTM(4), nn.LastStep(), nn.Dense(2)),
        lambda: torch.nn.ModuleList(
            [Recurrent(torch.nn.LSTM(3, 4, batch_first=True)), torch.nn.Linear(4, 2)]
        ),
        (6, 3),
        None,
        None,
    ),
    "GRU (b_hn = 0)": (
        lambda: nn.GRU(4),
        lambda: Recurrent(_zero_b_hn(torch.nn.GRU(3, 4, batch_first=True))),
        (6, 3),
        None,
        None,
    ),
    "RNN (tanh)": (
        lambda: nn.RNN(4),
        lambda: Recurrent(torch.nn.RNN(3, 4, batch_first=True)),
        (6, 3),
        None,
        None,
    ),
    "MultiheadAttention": (
        lambda: nn.MultiHeadAttention(2),
        lambda: Attention(4, 2, causal=False),
        (5, 4),
        None,
        None,
    ),
    "MultiheadAttention, causal": (
        lambda: nn.MultiHeadAttention(2, causal=True),
        lambda: Attention(4, 2, causal=True),
        (5, 4),
        None,
        None,
    ),
    "MultiheadAttention, causal, blockwise": (
        lambda: nn.MultiHeadAttention(2, causal=True, block_size=2),
        lambda: Attention(4, 2, causal=True),
        (5, 4),
        None,
        None,
    ),
    "TransformerEncoderLayer (batch_first, norm_first, GELU)": (
        lambda: nn.models.transformer_block(4, 2, causal=False),
        lambda: torch.nn.TransformerEncoderLayer(
            4, 2, dim_feedforward=16, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        ),
        (5, 4),
        None,
        None,
    ),
    "PReLU": (
        lambda: nn.serial(nn.Dense(3), nn.prelu()),
        lambda: torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.PReLU()),
        (4,),
        None,
        None,
    ),
}


def _run_torch(module, x, to_torch):
    if isinstance(module, torch.nn.ModuleList):  # the LSTM case: the recurrent layer, the last step, Linear
        return module[1](module[0](x)[:, -1])
    return module(to_torch(x) if to_torch else x)


def _setup(name):
    build_model, build_module, shape, to_t, from_t = CASES[name]
    torch.manual_seed(0)
    module = build_module().double()
    for buffer_name, buffer in module.named_buffers():  # BatchNorm: running statistics away from 0 and 1
        if "running" in buffer_name:
            with torch.no_grad():
                buffer.copy_(
                    torch.rand_like(buffer) + 0.5 if "var" in buffer_name else torch.randn_like(buffer)
                )
    module.eval()
    model = build_model()
    integer = name == "Embedding"
    x = torch.randint(0, 7, (3, *shape)) if integer else torch.randn(3, *shape, dtype=torch.float64)
    return model, module, shape, x, to_t, from_t, integer


@pytest.mark.parametrize(
    "name",  # the blockwise layer is the dense one's function (tests/test_sequence_layers.py): slow run
    [pytest.param(n, marks=pytest.mark.slow) if "blockwise" in n else n for n in sorted(CASES)],
)
def test_imported_modules_compute_what_pytorch_computes(name, x64):
    model, module, shape, x, to_t, from_t, integer = _setup(name)
    params, state = io.from_torch(model, module, shape)
    x.requires_grad_(not integer)
    y_torch = _run_torch(module, x, to_t)
    y_torch = from_t(y_torch) if from_t else y_torch
    xj = jnp.asarray(x.detach().numpy())
    has_state = bool(jax.tree_util.tree_leaves(state))
    y, residuals = (
        model.forward(params, xj, state=state, train=False)[:2] if has_state else model.forward(params, xj)
    )
    np.testing.assert_allclose(np.asarray(y), y_torch.detach().numpy(), rtol=1e-9, atol=1e-12)

    # gradients: the hand rules against PyTorch's autograd, for the same cotangent
    g = torch.randn_like(y_torch)
    (y_torch * g).sum().backward()
    dparams, dx = model.backward(residuals, jnp.asarray(g.numpy()))
    if not integer:
        np.testing.assert_allclose(np.asarray(dx), x.grad.numpy(), rtol=1e-9, atol=1e-12)
    grads_module = copy.deepcopy(module)
    with torch.no_grad():
        for (pname, p), q in zip(module.named_parameters(), grads_module.parameters()):
            # the recurrent layers' biases are summed on import: compare with bias_ih's gradient alone
            q.copy_(torch.zeros_like(p) if "bias_hh" in pname else p.grad)
    expected, _ = io.from_torch(model, grads_module, shape)
    for a, b in zip(jax.tree_util.tree_leaves(dparams), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_to_torch_round_trips_exactly(name, x64):
    model, module, shape, x, to_t, from_t, integer = _setup(name)
    params, state = io.from_torch(model, module, shape)
    fresh = copy.deepcopy(module)
    for p in fresh.parameters():
        torch.nn.init.zeros_(p)
    fresh.load_state_dict(io.to_torch(model, params, state, module=module, input_shape=shape), strict=True)
    again, again_state = io.from_torch(model, fresh, shape)
    for a, b in zip(
        jax.tree_util.tree_leaves((params, state)), jax.tree_util.tree_leaves((again, again_state))
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    y = _run_torch(fresh, x, to_t)
    np.testing.assert_allclose(
        y.detach().numpy(), _run_torch(module, x, to_t).detach().numpy(), rtol=1e-12, atol=1e-12
    )


def test_to_torch_without_a_module_names_a_sequential():
    model = nn.mlp([4, 3, 2])
    _, params = model.init(KEY)
    state_dict = io.to_torch(model, params)
    assert sorted(state_dict) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    seq = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    seq.load_state_dict(state_dict)
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(
        seq(torch.from_numpy(x)).detach().numpy(), model.apply(params, x), rtol=1e-5, atol=1e-6
    )


MISMATCHES = {
    "another kind": (
        nn.serial(nn.Dense(3)),
        torch.nn.Sequential(torch.nn.Conv1d(2, 3, 1)),
        (2,),
        r"layer \[0\] Dense\(3\) does not match PyTorch's 0 \(Conv1d\)",
    ),
    "a missing layer": (
        nn.mlp([4, 3, 2]),
        torch.nn.Sequential(torch.nn.Linear(4, 3)),
        (4,),
        r"layer \[2\] Dense\(2\) has no PyTorch module",
    ),
    "an extra layer": (
        nn.Dense(3),
        torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 3)),
        (4,),
        r"PyTorch's 1 \(Linear\) has no layer to match",
    ),
    "another size": (nn.Dense(3), torch.nn.Linear(5, 3), (4,), r"weight \(3, 5\), the layer needs \(3, 4\)"),
    "another stride": (
        nn.Conv2D(2, (3, 3)),
        torch.nn.Conv2d(1, 2, 3, padding=1, stride=2),
        (6, 6, 1),
        "stride",
    ),
    "another padding": (nn.Conv2D(2, (3, 3)), torch.nn.Conv2d(1, 2, 3), (6, 6, 1), r"padding \(0, 0\)"),
    "a GRU with a hidden bias jaxnn cannot hold": (
        nn.GRU(4),
        Recurrent(torch.nn.GRU(3, 4, batch_first=True)),
        (5, 3),
        "b_hn",
    ),
    "another eps": (nn.LayerNorm(), torch.nn.LayerNorm(4, eps=1e-3), (4,), "eps"),
    "another activation": (
        nn.mlp([4, 3, 2], activation="relu"),
        torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2)),
        (4,),
        r"after layer \[0\] Dense\(3\), PyTorch computes \['tanh\(\)'\] .* computes \['relu\(\)'\]",
    ),
    "GELU for ReLU": (
        nn.mlp([4, 3, 2], activation="relu"),
        torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.GELU(), torch.nn.Linear(3, 2)),
        (4,),
        r"\['gelu\(\)'\]",
    ),
    "another pooling": (
        nn.serial(nn.Conv2D(2, (3, 3)), nn.activation("relu"), nn.MaxPool(), nn.Flatten(), nn.Dense(2)),
        torch.nn.Sequential(
            torch.nn.Conv2d(1, 2, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.AvgPool2d(2),
            torch.nn.Flatten(),
            torch.nn.Linear(18, 2),
        ),
        (6, 6, 1),
        r"AvgPool\(window=\(2, 2\).* computes \['relu\(\)', 'MaxPool",
    ),
    "an activation in a functional forward": (
        nn.mlp([4, 3, 2], activation="relu"),
        Functional(),
        (4,),
        "outputs differ from PyTorch's by up to",
    ),
    "another BatchNorm momentum": (
        nn.serial(nn.Dense(3), nn.BatchNorm(momentum=0.5)),
        torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3)),
        (4,),
        r"momentum 0.1 .* needs BatchNorm\(momentum=0.9\), it has 0.5",
    ),
    "a post-norm transformer layer": (
        nn.models.transformer_block(4, 2, causal=False),
        torch.nn.TransformerEncoderLayer(4, 2, 16, dropout=0.0, activation="gelu", batch_first=True),
        (5, 4),
        "norm_first=False",
    ),
    "a ReLU transformer layer": (
        nn.models.transformer_block(4, 2, causal=False),
        torch.nn.TransformerEncoderLayer(4, 2, 16, dropout=0.0, batch_first=True, norm_first=True),
        (5, 4),
        "activation relu",
    ),
}


@pytest.mark.parametrize("name", sorted(MISMATCHES))
def test_a_mismatch_names_the_first_layer_that_differs(name):
    model, module, shape, message = MISMATCHES[name]
    with pytest.raises(nn.InputError, match=message):
        io.from_torch(model, module, shape)


# --- safetensors ------------------------------------------------------------------------------------


def _bn_cnn():
    model = nn.serial(nn.Conv2D(3, (3, 3)), nn.BatchNorm(), nn.activation("relu"), nn.Flatten(), nn.Dense(2))
    _, params = model.init(KEY, (4, 4, 1))
    state = jax.tree_util.tree_map(lambda a: a + 0.5, model.init_state((4, 4, 1)))
    return model, params, state


def test_a_float64_module_imports_into_float32_without_x64():
    """Without jax_enable_x64 the weights arrive in float32: the output check allows float32 rounding."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
    params, _ = io.from_torch(nn.mlp([6, 5, 3], activation="tanh"), module, (6,))
    assert params[0]["w"].dtype == jnp.float32


def test_matching_modules_pass_every_check_including_a_functional_forward():
    """The checks refuse differences, not styles: the same function written with torch.nn.functional,
    a ReLU module reused, or an activation registered out of order is accepted."""

    class Styled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.relu = torch.nn.ReLU()  # registered first, called twice
            self.a, self.b, self.c = torch.nn.Linear(4, 3), torch.nn.Linear(3, 3), torch.nn.Linear(3, 2)

        def forward(self, x):
            return self.c(self.relu(self.b(torch.relu(self.relu(self.a(x))))))

    model, module = nn.mlp([4, 3, 3, 2], activation="relu"), Styled()
    params, _ = io.from_torch(model, module, (4,))
    x = torch.randn(5, 4)
    np.testing.assert_allclose(model.apply(params, x.numpy()), module(x).detach(), rtol=1e-5, atol=1e-6)
    causal = nn.models.transformer_block(4, 2, causal=True)
    layer = torch.nn.TransformerEncoderLayer(4, 2, 16, 0.0, "gelu", batch_first=True, norm_first=True)
    io.from_torch(causal, layer, (5, 4))  # called with the causal mask, as the block computes


def test_safetensors_files_are_real_and_named_by_their_paths(tmp_path):
    import safetensors.numpy

    model, params, state = _bn_cnn()
    path = str(tmp_path / "model.safetensors")
    io.save_safetensors(path, params, state)
    tensors = safetensors.numpy.load_file(path)
    assert sorted(tensors) == ["0.b", "0.w", "1.bias", "1.mean", "1.scale", "1.var", "4.b", "4.w"]
    np.testing.assert_array_equal(tensors["0.w"], params[0]["w"])
    got, got_state = io.load_safetensors(path, params, state)
    for a, b in zip(jax.tree_util.tree_leaves((params, state)), jax.tree_util.tree_leaves((got, got_state))):
        np.testing.assert_array_equal(a, b)


def test_safetensors_refuses_another_model_and_foreign_files_and_keeps_the_old_file(tmp_path):
    model, params, state = _bn_cnn()
    path = tmp_path / "model.safetensors"
    io.save_safetensors(str(path), params, state)
    before = path.read_bytes()
    other = nn.serial(nn.Conv2D(5, (3, 3)), nn.BatchNorm(), nn.activation("relu"), nn.Flatten(), nn.Dense(2))
    _, other_params = other.init(KEY, (4, 4, 1))
    with pytest.raises(nn.CheckpointError, match=r"'0.b' is float32\(3,\), the model needs float32\(5,\)"):
        io.load_safetensors(str(path), other_params)
    with pytest.raises(nn.CheckpointError, match="has no parameter '2.b'"):
        io.load_safetensors(str(path), nn.mlp([4, 3, 2]).init(KEY)[1])
    (tmp_path / "text.safetensors").write_text("not a safetensors file")
    with pytest.raises(nn.CheckpointError, match="not a readable safetensors file"):
        io.load_safetensors(str(tmp_path / "text.safetensors"), params)
    with pytest.raises(nn.InputError, match="dtype"):  # a failed write leaves the previous file whole
        io.save_safetensors(str(path), {"w": np.array(["a"])})
    assert path.read_bytes() == before


# --- jax.export ---------------------------------------------------------------------------------------


def test_exported_models_run_with_jax_alone_for_any_batch(tmp_path):
    model, params, state = _bn_cnn()
    path = str(tmp_path / "model.jaxexport")
    io.export(model, params, state, (4, 4, 1), path)
    x = np.random.default_rng(0).standard_normal((7, 4, 4, 1)).astype(np.float32)
    expected = np.asarray(model.apply(params, x, state=state, train=False)[0])
    np.save(tmp_path / "x.npy", x)
    child = f"""
import sys, jax, numpy as np
run = jax.export.deserialize(bytearray(open({path!r}, "rb").read()))
x = np.load({str(tmp_path / "x.npy")!r})
np.save({str(tmp_path / "y.npy")!r}, np.asarray(run.call(x)))
print(np.asarray(run.call(x[:2])).shape, "jaxnn" in sys.modules)
"""
    out = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["(2,", "2)", "False"]  # another batch size; no jaxnn in that process
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-6)
    assert '"jax":' in open(path + ".json").read()
