"""The CPC encoder's frames-major fast path equals the plain ``(B, C, T)`` network it replaces."""

from __future__ import annotations

import pytest
import torch

from ssl_speech.nn.encoders import CPCEncoder
from ssl_speech.nn.norms import ChannelNorm


def plain(encoder: CPCEncoder, wav: torch.Tensor) -> torch.Tensor:
    """The reference: the stock modules of ``encoder.net`` in the ``(B, C, T)`` layout."""
    samples = wav.shape[-1] // encoder.hop * encoder.hop
    return encoder.net(wav[..., :samples]).transpose(1, 2)


def perturb(encoder: CPCEncoder) -> None:
    """Norms start at identity and biases at small values; make a swapped one show."""
    with torch.no_grad():
        for module in encoder.net:
            if isinstance(module, ChannelNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_()


@pytest.mark.parametrize("norm", ["channel", "none"])
@pytest.mark.parametrize("in_channels", [1, 2])
@pytest.mark.parametrize("samples", [160, 1600, 3217])
def test_fast_path_equals_plain_network(norm: str, in_channels: int, samples: int) -> None:
    torch.manual_seed(0)
    encoder = CPCEncoder(dim=16, norm=norm, in_channels=in_channels)
    perturb(encoder)
    wav = torch.randn(3, in_channels, samples, requires_grad=True)
    fast = encoder(wav)
    reference = plain(encoder, wav)
    assert fast.shape == reference.shape == (3, samples // 160, 16)
    assert fast.is_contiguous()
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-4)

    weights = torch.randn_like(reference)  # a loss whose gradient differs per element
    inputs = [wav, *encoder.parameters()]
    grads = torch.autograd.grad((fast * weights).sum(), inputs)
    want = torch.autograd.grad((reference * weights).sum(), inputs)
    for got, expected in zip(grads, want, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_fast_path_under_bf16_autocast_keeps_float32_norms() -> None:
    torch.manual_seed(0)
    encoder = CPCEncoder(dim=16)
    perturb(encoder)
    wav = torch.randn(2, 1, 1600)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = encoder(wav)
        reference = plain(encoder, wav)
    # The last norm's float32 output reaches z on both paths.
    assert fast.dtype == reference.dtype == torch.float32
    torch.testing.assert_close(fast, reference, atol=0.05, rtol=0.05)


def test_time_norms_keep_the_plain_path() -> None:
    torch.manual_seed(0)
    for norm in ("batch", "instance"):
        encoder = CPCEncoder(dim=16, norm=norm)
        wav = torch.randn(3, 1, 1600)
        torch.testing.assert_close(encoder(wav), plain(encoder, wav), atol=0, rtol=0)


def test_channel_norm_on_the_last_axis_equals_its_channels_first_form() -> None:
    torch.manual_seed(0)
    norm = ChannelNorm(8)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.normal_()
    x = torch.randn(2, 8, 5) * 3 + 1
    torch.testing.assert_close(norm.normalize_last(x.transpose(1, 2)).transpose(1, 2), norm(x))
