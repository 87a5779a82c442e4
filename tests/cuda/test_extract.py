"""``SSLModel.extract`` on the device equals the CPU: every layer, chunked, with the recurrent
state carried (LSTM) and with overlapping chunks (Transformer)."""

from __future__ import annotations

import pytest
import torch

from ssl_speech.nn.context import LSTMContext, TransformerContext
from ssl_speech.nn.encoders import CPCEncoder, LogMelEncoder
from ssl_speech.nn.model import SSLModel

pytestmark = pytest.mark.cuda


def recurrent_model() -> SSLModel:
    return SSLModel(CPCEncoder(dim=32), LSTMContext(32, dim=32, num_layers=2))


def transformer_model() -> SSLModel:
    return SSLModel(LogMelEncoder(dim=32, n_mels=20, hidden=32),
                    TransformerContext(32, dim=32, num_layers=2, num_heads=2, ffn_dim=64,
                                       dropout=0.0))


@pytest.mark.parametrize("build", [recurrent_model, transformer_model])
def test_extract_on_the_device_equals_the_cpu(build, device, no_tf32):
    torch.manual_seed(0)
    cpu_model = build().eval()
    device_model = build().to(device).eval()
    device_model.load_state_dict(cpu_model.state_dict())
    wav = 0.1 * torch.randn(40000, generator=torch.Generator().manual_seed(1))  # 2.5 s
    for layer in ("encoder", "context", "context.0"):
        # 1 s chunks: three forward passes, the state or the overlap carried across them.
        expected = cpu_model.extract(wav, layer=layer, chunk_seconds=1.0, overlap_seconds=0.5)
        got = device_model.extract(wav, layer=layer, chunk_seconds=1.0, overlap_seconds=0.5)
        assert got.device.type == device.type
        assert got.shape == expected.shape == (250, 32)
        torch.testing.assert_close(got.cpu(), expected, rtol=1e-4, atol=1e-5, msg=layer)
