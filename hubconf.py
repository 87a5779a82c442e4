"""torch.hub entry points: build an ssl_speech model from a local exported directory or checkpoint.

    model = torch.hub.load("/path/to/ssl_speech", "model", "/path/to/exported", source="local")
    feats = model.extract(wav, sample_rate=16000, layers="all")

Loading goes through ``ssl_speech.load_model``: the stored config may build only the library's
own encoders and contexts, and nothing it names is run (see docs/safety.md).
"""

from __future__ import annotations

dependencies = ["torch", "torchaudio", "numpy", "safetensors"]


def model(path: str, map_location: str = "cpu"):
    """An ``SSLModel`` in eval mode from an exported directory, checkpoint file or run directory.

    Args:
        path: what ``ssl_speech.load_model`` accepts.
        map_location: device for the weights.
    """
    from ssl_speech.runs.checkpoint import load_model

    return load_model(path, map_location=map_location)


def s3prl_upstream(path: str):
    """The s3prl upstream expert over the model at ``path`` (see docs/export.md)."""
    from ssl_speech.integrations.s3prl import UpstreamExpert

    return UpstreamExpert(path)
