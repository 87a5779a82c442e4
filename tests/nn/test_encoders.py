"""Encoders: frame counts, geometry (receptive field and alignment), norms, precision."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ssl_speech.nn.encoders import (
    CPCEncoder,
    LogMel,
    LogMelEncoder,
    Wav2Vec2ConvEncoder,
    conv_stack_geometry,
)
from ssl_speech.nn.norms import ChannelNorm, TimeInstanceNorm, make_norm


def small_encoders():
    return [
        CPCEncoder(dim=16),
        Wav2Vec2ConvEncoder(dim=12, conv_dim=16),
        LogMelEncoder(dim=12, n_mels=20, hidden=16),
    ]


@pytest.mark.parametrize("encoder", small_encoders(), ids=lambda e: type(e).__name__)
def test_frame_count_is_samples_floor_divided_by_hop(encoder):
    hop = encoder.hop
    lengths = [0, hop - 1, hop, hop + 1, 2 * hop - 1, 7 * hop, 7 * hop + hop // 2, 20480, 20479]
    for num_samples in lengths:
        z = encoder(torch.randn(2, 1, num_samples))
        assert z.shape == (2, num_samples // hop, encoder.dim), num_samples
        assert encoder.num_frames(num_samples) == num_samples // hop
    assert encoder.offset == 0


def test_hops_and_receptive_fields():
    assert (CPCEncoder().hop, CPCEncoder().receptive_field) == (160, 465)
    assert (Wav2Vec2ConvEncoder().hop, Wav2Vec2ConvEncoder().receptive_field) == (320, 400)
    assert (LogMelEncoder().hop, LogMelEncoder().receptive_field) == (160, 400 + 2 * 2 * 160)
    assert conv_stack_geometry(CPCEncoder.LAYERS) == (160, 465, 153)


@pytest.mark.parametrize(
    "encoder, first, stop",
    [
        (CPCEncoder(dim=16), -153, 312),
        (CPCEncoder(dim=16, norm="none"), -153, 312),
        (Wav2Vec2ConvEncoder(dim=12, conv_dim=16, norm="layer"), -40, 360),
        # The periodic Hann window gives the window's first sample a weight of exactly 0.
        (LogMelEncoder(dim=12, n_mels=20, hidden=16, normalize="none"), -439, 600),
    ],
    ids=["cpc", "cpc-none", "wav2vec2-layer", "logmel"],
)
def test_receptive_field_is_centred_on_the_nominal_span(encoder, first, stop):
    """Frame t depends on exactly the samples documented, centred on [t hop, (t+1) hop)."""
    torch.manual_seed(0)
    hop, t = encoder.hop, 10
    wav = torch.randn(1, 1, 30 * hop, requires_grad=True)
    z = encoder(wav)
    (z[0, t] * torch.randn(encoder.dim)).sum().backward()
    support = wav.grad[0, 0].nonzero()[:, 0]
    assert support.min().item() == t * hop + first
    assert support.max().item() == t * hop + stop - 1
    centre = (t * hop + first + t * hop + stop - 1) / 2
    span_centre = encoder.offset + t * hop + (hop - 1) / 2
    assert abs(centre - span_centre) <= 1.0
    assert stop - first <= encoder.receptive_field


def test_samples_after_the_last_full_frame_are_ignored():
    for encoder in small_encoders():
        hop = encoder.hop
        wav = torch.randn(1, 1, 5 * hop + hop - 1)
        other = wav.clone()
        other[..., 5 * hop :] = torch.randn(hop - 1)
        torch.testing.assert_close(encoder(wav), encoder(other))


@pytest.mark.parametrize("norm", CPCEncoder.NORMS)
def test_cpc_norm_options_run_and_train(norm):
    encoder = CPCEncoder(dim=16, norm=norm)
    assert encoder(torch.randn(3, 1, 160)).shape == (3, 1, 16)
    z = encoder(torch.randn(3, 1, 1600))
    assert z.shape == (3, 10, 16) and torch.isfinite(z).all()
    z.square().mean().backward()
    assert all(p.grad is not None for p in encoder.parameters())


@pytest.mark.parametrize("norm", Wav2Vec2ConvEncoder.NORMS)
def test_wav2vec2_norm_options_and_projection(norm):
    encoder = Wav2Vec2ConvEncoder(dim=24, conv_dim=16, norm=norm, dropout=0.1)
    assert encoder(torch.randn(2, 1, 320)).shape == (2, 1, 24)
    z = encoder(torch.randn(2, 1, 3200))
    assert z.shape == (2, 10, 24) and torch.isfinite(z).all()
    assert isinstance(encoder.proj, torch.nn.Linear)
    assert isinstance(Wav2Vec2ConvEncoder(dim=16, conv_dim=16).proj, torch.nn.Identity)
    norms = [m for m in encoder.modules() if isinstance(m, (ChannelNorm, TimeInstanceNorm))]
    # one output layer norm, plus one per conv layer ("layer"), the first only ("group"), none.
    assert len(norms) == 1 + {"layer": 7, "group": 1, "none": 0}[norm]


@pytest.mark.parametrize("norm", LogMelEncoder.NORMS)
def test_logmel_norm_options_run(norm):
    encoder = LogMelEncoder(dim=12, n_mels=20, hidden=16, num_layers=3, kernel_size=5, norm=norm)
    assert encoder(torch.randn(2, 1, 160)).shape == (2, 1, 12)
    z = encoder(torch.randn(2, 1, 1600))
    assert z.shape == (2, 10, 12) and torch.isfinite(z).all()


@pytest.mark.parametrize(
    "build, bad",
    [
        (lambda: CPCEncoder(norm="layr"), "layr"),
        (lambda: Wav2Vec2ConvEncoder(norm="batch"), "batch"),
        (lambda: LogMelEncoder(norm="group"), "group"),
        (lambda: make_norm("weight", 8), "weight"),
    ],
)
def test_bad_norm_name_names_value_and_choices(build, bad):
    with pytest.raises(ValueError, match=rf"'{bad}'.*choose one of .*none"):
        build()


def test_constructor_validation():
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        LogMelEncoder(kernel_size=4)
    with pytest.raises(ValueError, match="n_fft must be >= the hop"):
        LogMel(n_fft=128)
    with pytest.raises(ValueError, match="normalize 'global'"):
        LogMel(normalize="global")
    with pytest.raises(ValueError, match="dropout"):
        Wav2Vec2ConvEncoder(dropout=1.5)
    with pytest.raises(ValueError, match=r"expects a waveform \(batch, 1, samples\)"):
        CPCEncoder(dim=8)(torch.randn(2, 1600))


def test_channel_norm_matches_definition():
    x = torch.randn(2, 8, 5) * 3 + 1
    norm = ChannelNorm(8)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.normal_()
    expected = (x - x.mean(1, keepdim=True)) / torch.sqrt(x.var(1, keepdim=True) + 1e-5)
    torch.testing.assert_close(norm(x), expected * norm.weight[:, None] + norm.bias[:, None])
    layer = make_norm("layer", 8)
    torch.testing.assert_close(layer(x), F.layer_norm(x.transpose(1, 2), (8,)).transpose(1, 2))


def test_instance_norm_statistics_are_float32_under_autocast():
    # A mean of 3 with a spread of 0.01: bfloat16 statistics (8-bit mantissa) would be off by
    # a large fraction of the spread, and a bfloat16 output by ~1e-2.
    torch.manual_seed(0)
    x = (torch.randn(2, 4, 3000) * 0.01 + 3.0).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = TimeInstanceNorm(4)(x)
    assert y.dtype == torch.float32
    x64 = x.double()
    expected = (x64 - x64.mean(-1, keepdim=True)) / torch.sqrt(
        x64.var(-1, unbiased=False, keepdim=True) + 1e-5
    )
    assert (y.double() - expected).abs().max() < 1e-3


def test_instance_norm_inside_encoder_runs_in_float32_under_autocast():
    encoder = CPCEncoder(dim=16, norm="instance")
    dtypes = []

    def record(module, args, out):
        dtypes.append((args[0].dtype, out.dtype))

    for module in encoder.modules():
        if isinstance(module, TimeInstanceNorm):
            module.register_forward_hook(record)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = encoder(torch.randn(2, 1, 3200))
    assert z.shape == (2, 20, 16)
    assert len(dtypes) == 5
    # The convolutions run in bfloat16; the norm takes their output and returns float32.
    assert all(out == torch.float32 for _, out in dtypes)
    assert any(inp == torch.bfloat16 for inp, _ in dtypes)


def test_log_mel_is_float32_under_autocast_and_frame_aligned():
    """A 10 ms tone burst in label frame k gives its largest energy in frame k."""
    encoder = LogMelEncoder(dim=12, n_mels=40, hidden=16, normalize="none")
    k, hop = 7, 160
    wav = torch.zeros(1, 1, 20 * hop)
    n = torch.arange(hop)
    wav[0, 0, k * hop : (k + 1) * hop] = torch.sin(2 * math.pi * 1000 * n / 16000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats = encoder.log_mel(wav)
    assert feats.shape == (1, 20, 40) and feats.dtype == torch.float32
    torch.testing.assert_close(feats, encoder.log_mel(wav))
    assert feats.exp().sum(-1)[0].argmax().item() == k


def test_log_mel_utterance_normalisation():
    feats = LogMel(n_mels=20, normalize="utterance")(torch.randn(2, 1, 16000))
    assert feats.shape == (2, 100, 20)
    torch.testing.assert_close(feats.mean(1), torch.zeros(2, 20), atol=1e-4, rtol=0)
    torch.testing.assert_close(feats.std(1, unbiased=False), torch.ones(2, 20), atol=1e-3, rtol=0)


def test_frame_local_flags():
    assert CPCEncoder(norm="channel").frame_local and CPCEncoder(norm="batch").frame_local
    assert not CPCEncoder(norm="instance").frame_local
    assert not Wav2Vec2ConvEncoder(norm="group").frame_local
    assert Wav2Vec2ConvEncoder(norm="layer").frame_local
    assert not LogMelEncoder(normalize="utterance").frame_local
    assert LogMelEncoder(normalize="none").frame_local
