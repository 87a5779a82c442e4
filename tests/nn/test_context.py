"""Context networks: shapes, causality, any-length positions, layers, streaming state."""

from __future__ import annotations

import copy

import pytest
import torch

from ssl_speech.nn.context import (
    BidirectionalTransformerContext,
    CausalTransformerContext,
    GRUContext,
    IdentityContext,
    LSTMContext,
    RecurrentContext,
    TransformerContext,
)
from ssl_speech.nn.positional import RotaryEmbedding

D, H = 12, 16


def transformer(causal: bool, positional: str, **kwargs) -> TransformerContext:
    return TransformerContext(
        D,
        dim=H,
        num_layers=2,
        num_heads=2,
        ffn_dim=32,
        dropout=0.0,
        causal=causal,
        positional=positional,
        conv_pos_kernel=9,
        conv_pos_groups=4,
        **kwargs,
    )


CAUSAL = {
    "lstm": lambda: LSTMContext(D, dim=H, num_layers=2),
    "gru": lambda: GRUContext(D, dim=H, num_layers=2),
    "transformer-rotary": lambda: transformer(True, "rotary"),
    "transformer-sinusoidal": lambda: transformer(True, "sinusoidal"),
    "transformer-conv": lambda: transformer(True, "conv"),
    "identity": lambda: IdentityContext(D),
}
BIDIRECTIONAL = {
    "transformer-rotary": lambda: transformer(False, "rotary"),
    "transformer-sinusoidal": lambda: transformer(False, "sinusoidal"),
    "transformer-conv": lambda: transformer(False, "conv"),
}
ALL = {
    **{f"causal-{k}": v for k, v in CAUSAL.items()},
    **{f"bi-{k}": v for k, v in BIDIRECTIONAL.items()},
}


@pytest.mark.parametrize("name", ALL)
def test_shapes_and_attributes(name):
    context = ALL[name]().eval()
    for T in (0, 1, 7):
        c = context(torch.randn(3, T, D))
        assert c.shape == (3, T, context.dim)
    assert context.input_dim == D
    assert context.dim == (D if name.endswith("identity") else H)
    assert context.causal == name.startswith("causal")
    assert context.recurrent == (name in ("causal-lstm", "causal-gru"))


@pytest.mark.parametrize("name", CAUSAL)
def test_causal_outputs_ignore_future_frames(name):
    torch.manual_seed(0)
    context = CAUSAL[name]().eval()
    z = torch.randn(2, 20, D)
    changed = z.clone()
    changed[:, 12:] = torch.randn(2, 8, D)
    c, c_changed = context(z), context(changed)
    torch.testing.assert_close(c[:, :12], c_changed[:, :12])
    assert not torch.allclose(c[:, 12:], c_changed[:, 12:])


@pytest.mark.parametrize("name", BIDIRECTIONAL)
def test_bidirectional_outputs_see_future_frames(name):
    torch.manual_seed(0)
    context = BIDIRECTIONAL[name]().eval()
    z = torch.randn(2, 20, D)
    changed = z.clone()
    changed[:, 12:] = torch.randn(2, 8, D)
    assert not torch.allclose(context(z)[:, :12], context(changed)[:, :12])


@pytest.mark.parametrize("positional", TransformerContext.POSITIONAL)
@pytest.mark.parametrize("causal", [True, False])
def test_positional_encodings_work_for_any_length(positional, causal):
    context = TransformerContext(
        8,
        dim=8,
        num_layers=1,
        num_heads=2,
        ffn_dim=16,
        causal=causal,
        positional=positional,
        conv_pos_groups=4,
    ).eval()
    with torch.no_grad():
        for T in (3, 5000):
            c = context(torch.randn(1, T, 8))
            assert c.shape == (1, T, 8) and torch.isfinite(c).all()


def test_rotary_scores_depend_on_relative_position_only():
    torch.manual_seed(0)
    rotary = RotaryEmbedding(8)
    cos, sin = rotary.angles(40, torch.device("cpu"))
    q = RotaryEmbedding.rotate(torch.randn(1, 1, 1, 8).expand(1, 1, 40, 8), cos, sin)[0, 0]
    k = RotaryEmbedding.rotate(torch.randn(1, 1, 1, 8).expand(1, 1, 40, 8), cos, sin)[0, 0]
    torch.testing.assert_close(q[3] @ k[1], q[35] @ k[33])
    torch.testing.assert_close(q[1] @ k[3], q[30] @ k[32])
    assert not torch.allclose(q[3] @ k[1], q[3] @ k[2])


@pytest.mark.parametrize("name", ALL)
def test_forward_layers_returns_every_layer_and_ends_with_forward(name):
    context = ALL[name]().eval()
    z = torch.randn(2, 9, D)
    layers = context.forward_layers(z)
    assert len(layers) == context.num_layers
    assert all(layer.shape == (2, 9, context.dim) for layer in layers)
    torch.testing.assert_close(layers[-1], context(z))
    if context.num_layers > 1:
        assert not torch.allclose(layers[0], layers[-1])


@pytest.mark.parametrize("cls", [LSTMContext, GRUContext])
def test_chunked_state_equals_one_pass(cls):
    torch.manual_seed(0)
    context = cls(D, dim=H, num_layers=3).eval()
    z = torch.randn(2, 50, D)
    full = context.forward_layers(z)
    state, pieces = None, []
    for start, stop in [(0, 7), (7, 7), (7, 30), (30, 31), (31, 50)]:
        layers, state = context.forward_layers_with_state(z[:, start:stop], state)
        pieces.append(layers)
    for i in range(3):
        torch.testing.assert_close(torch.cat([p[i] for p in pieces], dim=1), full[i])
    c, _ = context.forward_with_state(z[:, :10])
    torch.testing.assert_close(c, full[-1][:, :10])
    with pytest.raises(ValueError, match="state has 1 layers, this network 3"):
        context.forward_with_state(z, state[:1])


@pytest.mark.parametrize("name", ALL)
def test_padding_mask_leaves_valid_frames_as_without_padding(name):
    torch.manual_seed(0)
    context = ALL[name]().eval()
    z = torch.randn(2, 12, D)
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[1, 8:] = True
    padded = z.clone()
    padded[1, 8:] = 100.0  # garbage in padding frames
    c = context(padded, mask)
    torch.testing.assert_close(c[0], context(z[:1])[0])
    torch.testing.assert_close(c[1, :8], context(z[1:, :8])[0])
    assert torch.isfinite(c).all()
    with pytest.raises(ValueError, match="padding_mask must be bool of shape"):
        context(z, mask[:, :5])


def test_transformer_input_projection_and_training_mode():
    context = TransformerContext(D, dim=H, num_layers=2, num_heads=4, ffn_dim=32, dropout=0.1)
    assert isinstance(context.proj, torch.nn.Linear)
    assert isinstance(TransformerContext(H, dim=H, num_heads=4).proj, torch.nn.Identity)
    c = context.train()(torch.randn(2, 9, D))
    c.square().mean().backward()
    assert all(p.grad is not None for p in context.parameters())


def test_transformer_runs_under_bf16_autocast():
    context = transformer(False, "conv")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        c = context(torch.randn(2, 30, D))
    assert torch.isfinite(c.float()).all()
    c.float().sum().backward()
    assert context.proj.weight.grad is not None


def test_transformer_validation_names_the_problem():
    with pytest.raises(ValueError, match="unknown positional 'alibi'; choose one of rotary"):
        TransformerContext(8, positional="alibi")
    with pytest.raises(ValueError, match="dim 10 must be a positive multiple of num_heads 4"):
        TransformerContext(8, dim=10, num_heads=4)
    with pytest.raises(ValueError, match="rotary needs an even head size"):
        TransformerContext(8, dim=12, num_heads=4)
    with pytest.raises(ValueError, match="expects z of shape"):
        TransformerContext(8, dim=8, num_heads=2)(torch.randn(2, 5, 9))
    with pytest.raises(ValueError, match="unknown cell 'rnn'"):
        RecurrentContext(8, cell="rnn")


def test_convenience_transformers_fix_causality():
    assert CausalTransformerContext(8, dim=8, num_heads=2).causal
    assert not BidirectionalTransformerContext(8, dim=8, num_heads=2).causal
    with pytest.raises(ValueError, match="always causal"):
        CausalTransformerContext(8, causal=False)


def test_identity_context_is_parameter_free():
    context = IdentityContext(D)
    z = torch.randn(2, 5, D)
    assert context(z) is z
    assert context.forward_layers(z) == [z]
    assert list(context.parameters()) == []
    assert context.causal and context.num_layers == 1 and context.dim == D
    assert IdentityContext(D, dim=D).dim == D
    with pytest.raises(ValueError, match="dim 8 must equal input_dim 12"):
        IdentityContext(D, dim=8)


def test_copy_and_state_dict_round_trip():
    """A teacher made by deepcopy (or rebuilt from a checkpoint) computes the same function."""
    context = transformer(False, "conv").eval()
    z = torch.randn(2, 10, D)
    teacher = copy.deepcopy(context)
    torch.testing.assert_close(teacher(z), context(z))
    with torch.no_grad():
        next(teacher.parameters()).add_(1.0)
    assert not torch.allclose(teacher(z), context(z))
    rebuilt = transformer(False, "conv").eval()
    rebuilt.load_state_dict(context.state_dict())
    torch.testing.assert_close(rebuilt(z), context(z))
