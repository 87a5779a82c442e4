"""SSLModel: forward, frame counts, and chunked feature extraction of long recordings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_speech.nn.context import (
    GRUContext,
    IdentityContext,
    LSTMContext,
    TransformerContext,
)
from ssl_speech.nn.encoders import CPCEncoder, LogMelEncoder, Wav2Vec2ConvEncoder
from ssl_speech.nn.model import SSLModel


def cpc_lstm(dim: int = 16, num_layers: int = 2) -> SSLModel:
    return SSLModel(CPCEncoder(dim=dim), LSTMContext(dim, dim=dim + 4, num_layers=num_layers))


def transformer_model(causal: bool) -> SSLModel:
    context = TransformerContext(
        16, dim=16, num_layers=3, num_heads=2, ffn_dim=32, causal=causal, positional="rotary"
    )
    return SSLModel(CPCEncoder(dim=16), context)


def one_pass(model: SSLModel, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    with torch.no_grad():
        z = model.encoder(wav.view(1, 1, -1))
        return z[0], [layer[0] for layer in model.context.forward_layers(z)]


def test_forward_shapes_and_attributes():
    model = cpc_lstm()
    z, c = model(torch.randn(4, 1, 20480))
    assert z.shape == (4, 128, 16) and c.shape == (4, 128, 20)
    assert (model.hop, model.latent_dim, model.dim) == (160, 16, 20)
    assert model.frame_step == pytest.approx(0.01)
    assert model.num_frames(20480 + 159) == 128
    w2v = SSLModel(Wav2Vec2ConvEncoder(dim=16, conv_dim=16), IdentityContext(16))
    assert w2v.hop == 320 and w2v.frame_step == pytest.approx(0.02)
    assert w2v(torch.randn(2, 1, 3300))[1].shape == (2, 10, 16)


def test_mismatched_dims_are_rejected():
    with pytest.raises(ValueError, match="context input_dim 32 != encoder dim 16"):
        SSLModel(CPCEncoder(dim=16), LSTMContext(32))


MODELS = {
    "cpc-lstm": lambda: cpc_lstm(),
    "cpc-gru": lambda: SSLModel(CPCEncoder(dim=16), GRUContext(16, dim=8, num_layers=2)),
    "cpc-causal-transformer": lambda: transformer_model(True),
    "cpc-bidirectional-transformer": lambda: transformer_model(False),
    "wav2vec2-group-identity": lambda: SSLModel(
        Wav2Vec2ConvEncoder(dim=16, conv_dim=16, norm="group"), IdentityContext(16)
    ),
    "logmel-utterance-lstm": lambda: SSLModel(
        LogMelEncoder(dim=16, n_mels=20, hidden=16), LSTMContext(16, dim=8)
    ),
}


@pytest.mark.parametrize("name", MODELS)
def test_extract_equals_forward_for_short_input(name):
    """One chunk: every layer equals the training forward pass on the same samples."""
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    wav = torch.randn(16000 + 123)  # not a multiple of the hop
    z, layers = one_pass(model, wav)
    assert z.shape[0] == model.num_frames(wav.numel())
    torch.testing.assert_close(model.extract(wav, "encoder"), z)
    torch.testing.assert_close(model.extract(wav), layers[-1])
    for i in range(model.context.num_layers):
        torch.testing.assert_close(model.extract(wav, f"context.{i}"), layers[i])
        torch.testing.assert_close(
            model.extract(wav, f"context.{i - model.context.num_layers}"), layers[i]
        )


def test_chunked_extraction_equals_one_pass_cpc_lstm_long_input():
    """60 s in 7 s chunks: the encoder overlap and the carried LSTM state make it exact."""
    torch.manual_seed(0)
    model = cpc_lstm().eval()
    wav = torch.randn(60 * 16000 + 97)
    z, layers = one_pass(model, wav)
    assert z.shape[0] == 6000
    torch.testing.assert_close(model.extract(wav, "encoder", chunk_seconds=7.0), z)
    torch.testing.assert_close(model.extract(wav, "context", chunk_seconds=7.0), layers[-1])
    torch.testing.assert_close(model.extract(wav, "context.0", chunk_seconds=7.0), layers[0])


@pytest.mark.parametrize(
    "encoder",
    [
        Wav2Vec2ConvEncoder(dim=16, conv_dim=16, norm="layer"),
        LogMelEncoder(dim=16, n_mels=20, hidden=16, normalize="none"),
        CPCEncoder(dim=16, norm="batch"),
    ],
    ids=["wav2vec2-layer", "logmel", "cpc-batch"],
)
def test_chunked_encoder_extraction_is_exact_for_frame_local_encoders(encoder):
    torch.manual_seed(0)
    model = SSLModel(encoder, GRUContext(16, dim=8)).eval()
    assert encoder.frame_local
    wav = torch.randn(12 * 16000 + 301)
    z, layers = one_pass(model, wav)
    torch.testing.assert_close(model.extract(wav, "encoder", chunk_seconds=1.3), z)
    torch.testing.assert_close(model.extract(wav, chunk_seconds=1.3), layers[-1])


@pytest.mark.parametrize("causal", [True, False])
def test_transformer_chunks_with_full_overlap_equal_one_pass(causal):
    """The overlap bookkeeping is exact when the overlap covers the whole recording."""
    torch.manual_seed(0)
    model = transformer_model(causal).eval()
    wav = torch.randn(5 * 16000 + 55)
    _, layers = one_pass(model, wav)
    out = model.extract(wav, chunk_seconds=0.7, overlap_seconds=6.0)
    torch.testing.assert_close(out, layers[-1])


@pytest.mark.parametrize("causal", [True, False])
def test_transformer_chunks_with_short_overlap_approximate_one_pass(causal):
    torch.manual_seed(0)
    model = transformer_model(causal).eval()
    wav = torch.randn(6 * 16000)
    _, layers = one_pass(model, wav)
    out = model.extract(wav, chunk_seconds=1.0, overlap_seconds=0.5)
    assert out.shape == layers[-1].shape
    # Frames of the first chunk see everything a one pass would (causal), or all but the frames
    # beyond the right overlap (bidirectional); later chunks lose the far left context.
    if causal:
        torch.testing.assert_close(out[:100], layers[-1][:100])
    assert not torch.allclose(out, layers[-1])


def test_extract_accepts_mono_shapes_and_numpy():
    model = cpc_lstm().eval()
    wav = torch.randn(3200)
    ref = model.extract(wav)
    for shaped in (wav[None], wav[None, None], wav.numpy(), wav.double()):
        torch.testing.assert_close(model.extract(shaped), ref)
    assert model.extract(np.zeros(100, dtype=np.float32)).shape == (0, 20)
    assert model.extract(torch.zeros(100), "encoder").shape == (0, 16)
    with pytest.raises(ValueError, match=r"one mono recording .* got \(2, 3200\)"):
        model.extract(torch.randn(2, 3200))
    with pytest.raises(ValueError, match="float samples"):
        model.extract(np.zeros(3200, dtype=np.int16))


def test_extract_output_type_mode_and_arguments():
    model = cpc_lstm()
    model.train()
    out = model.extract(torch.randn(4000))
    assert out.dtype == torch.float32 and out.device == next(model.parameters()).device
    assert not out.requires_grad
    assert model.training  # restored
    with pytest.raises(ValueError, match="chunk_seconds=0.001 is shorter than one frame"):
        model.extract(torch.randn(4000), chunk_seconds=0.001)
    with pytest.raises(ValueError, match="overlap_seconds must be >= 0"):
        model.extract(torch.randn(4000), overlap_seconds=-1.0)


def test_extract_runs_dropout_free_in_eval_mode():
    model = transformer_model(False)
    model.train()
    wav = torch.randn(8000)
    torch.testing.assert_close(model.extract(wav), model.extract(wav))


@pytest.mark.parametrize("layer", ["ctx", "context.2", "context.-3", "context.x", "context.", ""])
def test_bad_layer_names_list_the_choices(layer):
    model = cpc_lstm(num_layers=2)
    with pytest.raises(ValueError, match="choose one of encoder, context, context.0, context.1"):
        model.extract(torch.randn(1600), layer=layer)
    assert model.layer_names() == ["encoder", "context", "context.0", "context.1"]


# --------------------------------------------------------------------------------------------
# Several layers from one pass, batches with lengths, sample rates
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_all_layers_from_one_pass_equal_the_single_layer_calls(name):
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    wav = torch.randn(3 * 16000 + 41)
    layers = model.extract(wav, layers="all", chunk_seconds=1.1, overlap_seconds=5.0)
    assert list(layers) == model.hidden_layer_names()
    for layer, features in layers.items():
        if layer == "encoder" and not model.encoder.frame_local:
            continue  # window statistics: z comes from the context pass's wider window
        torch.testing.assert_close(
            features, model.extract(wav, layer, chunk_seconds=1.1, overlap_seconds=5.0)
        )
    picked = model.extract(wav, layers=["context", "encoder"])
    assert list(picked) == ["context", "encoder"]


def test_one_pass_runs_the_context_once_per_chunk():
    model = transformer_model(False).eval()
    calls = []  # a call of context.forward (the hook) or of forward_layers counts as a pass
    model.context.register_forward_pre_hook(lambda *args: calls.append(1))
    original = model.context.forward_layers

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    model.context.forward_layers = counted
    model.extract(torch.randn(16000), layers="all")
    assert len(calls) == 1


@pytest.mark.parametrize("name", MODELS)
def test_a_padded_batch_equals_each_recording_alone(name):
    """The bidirectional Transformer needs the padding mask; the others must not be hurt."""
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    sizes = [16000, 9000 + 37, 4000 + 3, 100]
    recordings = [torch.randn(n) for n in sizes]
    padded = torch.zeros(len(sizes), max(sizes))
    for b, r in enumerate(recordings):
        padded[b, : r.numel()] = r
    padded[1, 9037:] = 5.0  # garbage in the padding must not matter
    batch = model.extract(padded, layers="all", lengths=torch.tensor(sizes))
    listed = model.extract(recordings, layers="all")
    for layer in model.hidden_layer_names():
        assert batch[layer].shape[:2] == (4, model.num_frames(16000))
        for b, r in enumerate(recordings):
            alone = model.extract(r, layer)
            T = model.num_frames(r.numel())
            torch.testing.assert_close(batch[layer][b, :T], alone, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(listed[layer][b, :T], alone, atol=1e-5, rtol=1e-5)
            assert not batch[layer][b, T:].any()


def test_without_the_mask_the_bidirectional_transformer_would_differ():
    """The test above can fail: padding frames change a bidirectional context's outputs."""
    torch.manual_seed(0)
    model = transformer_model(False).eval()
    wav = torch.randn(8000)
    with torch.no_grad():
        z = model.encoder(wav.view(1, 1, -1))
        padded = torch.cat([z, torch.zeros(1, 30, 16)], dim=1)
        unmasked = model.context(padded)[0, : z.shape[1]]
    assert not torch.allclose(unmasked, model.extract(wav), atol=1e-4)


def test_long_batches_fall_back_to_one_recording_at_a_time():
    torch.manual_seed(0)
    model = transformer_model(False).eval()
    recordings = [torch.randn(3 * 16000), torch.randn(16000 + 5)]
    batch = model.extract(recordings, "context.0", chunk_seconds=1.0, overlap_seconds=3.0)
    for b, r in enumerate(recordings):
        alone = model.extract(r, "context.0", chunk_seconds=1.0, overlap_seconds=3.0)
        torch.testing.assert_close(batch[b, : alone.shape[0]], alone)


def test_other_sample_rates_are_resampled_not_misread():
    torchaudio = pytest.importorskip("torchaudio")
    torch.manual_seed(0)
    model = cpc_lstm().eval()
    wav_44k = torch.randn(44100)
    expected = model.extract(torchaudio.functional.resample(wav_44k, 44100, 16000))
    got = model.extract(wav_44k, sample_rate=44100)
    assert got.shape == (100, 20)
    torch.testing.assert_close(got, expected)
    assert model.extract(wav_44k).shape == (275, 20)  # read as 16 kHz: 2.76 s, wrong
    batch = model.extract(wav_44k[None], sample_rate=44100, lengths=[44100])
    torch.testing.assert_close(batch[0], expected)
    for bad in (0, -16000, 16000.0, "16k", True):
        with pytest.raises(ValueError, match="sample_rate must be a positive integer"):
            model.extract(wav_44k, sample_rate=bad)


def test_batch_arguments_are_checked():
    model = cpc_lstm().eval()
    wav = torch.randn(2, 3200)
    with pytest.raises(ValueError, match=r"lengths must hold 2 values in \[0, 3200\]"):
        model.extract(wav, lengths=[3200])
    with pytest.raises(ValueError, match=r"lengths must hold 2 values"):
        model.extract(wav, lengths=[3200, 4000])
    with pytest.raises(ValueError, match="for a batch pass a list of recordings"):
        model.extract(wav)
    with pytest.raises(ValueError, match="not a list"):
        model.extract([wav[0]], lengths=[3200])
    with pytest.raises(ValueError, match="list of recordings is empty"):
        model.extract([])
    with pytest.raises(ValueError, match="layers must be 'all' or a list"):
        model.extract(wav[0], layers="every")
    with pytest.raises(ValueError, match="unknown layer 'x'"):
        model.extract(wav[0], layers=["x"])
    empty = model.extract(torch.zeros(2, 100), lengths=[100, 50], layers="all")
    assert empty["encoder"].shape == (2, 0, 16) and empty["context.1"].shape == (2, 0, 20)
