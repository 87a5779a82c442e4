"""An s3prl upstream over any exported ssl_speech model: the path to SUPERB.

s3prl (https://github.com/s3prl/s3prl) evaluates a speech encoder through an *upstream expert*:
an ``nn.Module`` built from a checkpoint path whose ``forward(wavs)`` takes a list of 16 kHz
waveforms ``(S_b,)`` and returns ``{"hidden_states": [(B, T, F), ...]}``, all of one shape so
that a downstream task can learn a weighted sum of them, and whose
``get_downsample_rates(key)`` gives samples per frame. :class:`UpstreamExpert` is that, over a
directory written by ``ssl_speech.export_model`` (or anything ``ssl_speech.load_model`` reads).

``hidden_states`` are the context layers ``context.0 ... context.{N-1}``, preceded by the
encoder output when it has the same size as the context (``layer_names`` lists them); the
encoder output is also returned as ``"encoder"``. Recordings of different lengths are padded,
the context runs with a padding mask, and each recording's frames equal those it gets alone.

Nothing here imports s3prl: register the expert in an s3prl checkout as ``docs/export.md``
shows.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from ssl_speech.nn.model import SSLModel
from ssl_speech.runs.checkpoint import load_model


class UpstreamExpert(nn.Module):
    """s3prl's upstream interface over an ssl_speech model.

    Args:
        ckpt: an exported directory, checkpoint file or run directory (loaded safely), or an
            ``SSLModel``.
        model_config: accepted for s3prl's signature (``-g``); unused, the directory describes
            the model.
    """

    def __init__(self, ckpt: str | Path | SSLModel, model_config: str | None = None,
                 **kwargs) -> None:
        super().__init__()
        self.model = ckpt if isinstance(ckpt, SSLModel) else load_model(ckpt)
        self.model.eval()
        context_layers = [f"context.{i}" for i in range(self.model.context.num_layers)]
        same_size = self.model.latent_dim == self.model.dim
        self.layer_names: list[str] = (["encoder"] if same_size else []) + context_layers
        self.name = "[ssl_speech UpstreamExpert]"

    def get_downsample_rates(self, key: str) -> int:
        """Samples per frame of every output (16 kHz input): the model's hop."""
        return int(self.model.hop)

    def forward(self, wavs: list[Tensor]) -> dict[str, Tensor | list[Tensor]]:
        """``wavs``: list of ``(S_b,)`` 16 kHz float tensors.

        Returns ``hidden_states`` (list of ``(B, T_max, H)``, T_max = max_b S_b // hop, zero
        past each recording's frames), ``last_hidden_state`` and ``encoder`` ``(B, T_max, D)``.
        """
        if not isinstance(wavs, (list, tuple)) or not wavs:
            raise ValueError("UpstreamExpert.forward expects a non-empty list of (S,) waveforms")
        flat = []
        for i, wav in enumerate(wavs):
            if wav.dim() != 1:
                raise ValueError(f"waveform {i} has shape {tuple(wav.shape)}; expected (S,) "
                                 "mono samples at 16 kHz")
            flat.append(wav)
        names = ["encoder"] + [n for n in self.layer_names if n != "encoder"]
        outputs = dict(zip(names, self.model.padded_layers(flat, names)))
        hidden = [outputs[name] for name in self.layer_names]
        return {"hidden_states": hidden, "last_hidden_state": hidden[-1],
                "encoder": outputs["encoder"]}


def ssl_speech_local(ckpt: str | Path | SSLModel, *args, **kwargs) -> UpstreamExpert:
    """An s3prl hub entry: ``-u ssl_speech_local -k <exported dir>``."""
    return UpstreamExpert(ckpt, *args, **kwargs)

