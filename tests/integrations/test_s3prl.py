"""The s3prl upstream over an exported model: the contract, and s3prl's own Featurizer."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from ssl_speech.integrations.s3prl import UpstreamExpert, ssl_speech_local
from ssl_speech.nn.model_config import build_model
from ssl_speech.runs.export import export_model

ENCODER = {"_target_": "ssl_speech.nn.encoders.CPCEncoder", "dim": 16}
BITRANSFORMER = {"_target_": "ssl_speech.nn.context.BidirectionalTransformerContext",
                 "input_dim": 16, "dim": 16, "num_layers": 3, "num_heads": 2, "ffn_dim": 32}
LSTM = {"_target_": "ssl_speech.nn.context.LSTMContext", "input_dim": 16, "dim": 8,
        "num_layers": 2}


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model({"encoder": ENCODER, "context": BITRANSFORMER}, "test")


@pytest.fixture
def exported(model, tmp_path):
    pytest.importorskip("safetensors")
    return export_model(model, tmp_path / "exported")


def waves() -> list[torch.Tensor]:
    torch.manual_seed(1)
    return [torch.randn(16000), torch.randn(11000 + 33), torch.randn(4000)]


def test_forward_follows_the_upstream_contract(model):
    expert = ssl_speech_local(model)
    wavs = waves()
    out = expert(wavs)
    hidden = out["hidden_states"]
    assert expert.layer_names == ["encoder", "context.0", "context.1", "context.2"]
    assert len(hidden) == 4 and all(h.shape == (3, 100, 16) for h in hidden)
    assert out["last_hidden_state"] is hidden[-1]
    assert expert.get_downsample_rates("hidden_states") == 160
    model = expert.model
    for b, wav in enumerate(wavs):  # padding handled: each equals the recording alone
        alone = model.extract(wav, layers=expert.layer_names)
        T = model.num_frames(wav.numel())
        for name, h in zip(expert.layer_names, hidden):
            torch.testing.assert_close(h[b, :T], alone[name], atol=1e-5, rtol=1e-5)
            assert not h[b, T:].any()


def test_layers_of_another_size_than_the_context_stay_out_of_hidden_states():
    expert = UpstreamExpert(build_model({"encoder": ENCODER, "context": LSTM}, "test"))
    out = expert(waves())
    assert expert.layer_names == ["context.0", "context.1"]
    assert [h.shape for h in out["hidden_states"]] == [(3, 100, 8)] * 2
    assert out["encoder"].shape == (3, 100, 16)


def test_gradients_flow_for_fine_tuning(model):
    expert = UpstreamExpert(model).train()
    loss = sum(h.square().mean() for h in expert(waves())["hidden_states"])
    loss.backward()
    grads = [p.grad for p in expert.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_bad_input_is_named(model):
    expert = UpstreamExpert(model)
    with pytest.raises(ValueError, match="non-empty list"):
        expert(torch.randn(2, 16000))
    with pytest.raises(ValueError, match=r"waveform 1 has shape \(1, 16000\)"):
        expert([torch.randn(16000), torch.randn(1, 16000)])


def test_an_exported_directory_gives_the_same_hidden_states(model, exported):
    wavs = waves()
    expected = UpstreamExpert(model)(wavs)["hidden_states"]
    got = UpstreamExpert(str(exported))(wavs)["hidden_states"]
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


def test_s3prl_featurizer_accepts_the_expert(exported):
    interfaces = pytest.importorskip("s3prl.upstream.interfaces")
    expert = UpstreamExpert(exported)
    featurizer = interfaces.Featurizer(expert, upstream_device="cpu")
    assert featurizer.layer_num == 4 and featurizer.output_dim == 16
    assert featurizer.downsample_rate == 160
    wavs = waves()
    features = featurizer(wavs, expert(wavs))
    assert [f.shape for f in features] == [(100, 16), (69, 16), (25, 16)]


def test_s3prl_upstream_wrapper_runs_the_registered_expert(exported, monkeypatch):
    """s3prl's own S3PRLUpstream (the entry SUPERB recipes use) over the registered entry.

    s3prl 0.4.18's hub imports every bundled upstream, and one of them calls
    ``torchaudio.set_audio_backend``, gone from torchaudio 2.x; so the hub registry that
    S3PRLUpstream looks names up in is replaced by a module holding only our entry.
    """
    s3prl = pytest.importorskip("s3prl")
    registry = types.ModuleType("s3prl.hub")
    registry.ssl_speech_local = ssl_speech_local
    monkeypatch.setitem(sys.modules, "s3prl.hub", registry)
    monkeypatch.setattr(s3prl, "hub", registry, raising=False)
    for name in [m for m in sys.modules if m.startswith("s3prl.nn")]:
        monkeypatch.delitem(sys.modules, name)
    from s3prl.nn.upstream import S3PRLUpstream

    upstream = S3PRLUpstream("ssl_speech_local", path_or_url=str(exported)).eval()
    assert upstream.num_layers == 4 and upstream.hidden_sizes == [16] * 4
    assert upstream.downsample_rates == [160] * 4
    wavs = waves()
    padded = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    lengths = torch.tensor([w.numel() for w in wavs])
    with torch.no_grad():
        hidden, hidden_lengths = upstream(padded, lengths)
    assert [h.shape for h in hidden] == [(3, 100, 16)] * 4
    assert hidden_lengths[0].tolist() == [100, 69, 25]
    alone = upstream.upstream.model.extract(wavs[1], layers=["context.2"])["context.2"]
    torch.testing.assert_close(hidden[3][1, :68], alone, atol=1e-5, rtol=1e-5)
