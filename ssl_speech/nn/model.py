"""The self-supervised model: an encoder followed by a context network.

``SSLModel.forward`` is what the objectives drive during training; ``SSLModel.extract`` turns a
recording of any length into frame features for evaluation and export, in chunks so that memory
stays bounded for hours of audio.

Frame convention: a recording of ``S`` samples has ``T = S // hop`` frames; frame ``t`` nominally
covers samples ``[t * hop, (t + 1) * hop)`` (the encoders' ``offset`` is 0) and the trailing
partial frame is dropped. ``forward`` on a window and ``extract`` on the same samples give the
same ``T``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor, nn

from ssl_speech.data.audio import SAMPLE_RATE


class SSLModel(nn.Module):
    """Encoder ``wav (B, 1, S) -> z (B, T, D)`` and context ``z -> c (B, T, H)``.

    Attributes:
        hop: samples per frame (the encoder's).
        dim: context size H.
        latent_dim: encoder size D.
        frame_step: seconds per frame, ``hop / 16000``.

    Args:
        encoder: an encoder (see ``ssl_speech.nn.encoders``).
        context: a context network whose ``input_dim`` equals ``encoder.dim``.
    """

    def __init__(self, encoder: nn.Module, context: nn.Module) -> None:
        super().__init__()
        if context.input_dim != encoder.dim:
            raise ValueError(
                f"SSLModel: context input_dim {context.input_dim} != encoder dim {encoder.dim}; "
                "set the context's input_dim to the encoder's dim"
            )
        self.encoder = encoder
        self.context = context
        self.hop: int = encoder.hop
        self.dim: int = context.dim
        self.latent_dim: int = encoder.dim
        self.frame_step: float = encoder.hop / SAMPLE_RATE

    def num_frames(self, num_samples: int) -> int:
        """Frames for ``num_samples`` samples: ``num_samples // hop``."""
        return self.encoder.num_frames(num_samples)

    def forward(self, wav: Tensor) -> tuple[Tensor, Tensor]:
        """``wav``: ``(B, 1, S)`` -> ``(z (B, T, D), c (B, T, H))`` with ``T = S // hop``."""
        z = self.encoder(wav)
        return z, self.context(z)

    def layer_names(self) -> list[str]:
        """Valid ``layer`` values for ``extract`` (negative ``context.N`` are valid too)."""
        return ["encoder", "context"] + [f"context.{i}" for i in range(self.context.num_layers)]

    def _layer_index(self, layer: str) -> int | None:
        """``None`` for the encoder, else the 0-based context layer index."""
        num_layers = self.context.num_layers
        if layer == "encoder":
            return None
        if layer == "context":
            return num_layers - 1
        prefix = "context."
        if layer.startswith(prefix) and layer[len(prefix) :].lstrip("-").isdigit():
            index = int(layer[len(prefix) :])
            if -num_layers <= index < num_layers:
                return index % num_layers
        raise ValueError(
            f"unknown layer {layer!r}; choose one of {', '.join(self.layer_names())} "
            f"(or context.-1 ... context.-{num_layers} counting from the last)"
        )

    def _device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    @torch.no_grad()
    def extract(
        self,
        wav: Tensor | np.ndarray,
        layer: str = "context",
        chunk_seconds: float = 10.0,
        overlap_seconds: float = 2.0,
    ) -> Tensor:
        """Features ``(T, F)`` float32, ``T = S // hop``, of one recording of any length.

        The recording is processed in chunks of ``chunk_seconds``; the output is written into
        one preallocated tensor on the model's device, and the waveform is moved there one
        chunk at a time. The model runs in eval mode (its previous mode is restored) without
        gradients.

        - Encoder: each chunk is encoded with enough extra samples on both sides to cover the
          receptive field, so the result equals a single pass up to float error whenever
          ``encoder.frame_local`` is true. Encoders with statistics over the window (instance
          or group norm, utterance-normalised log-mel) see each chunk's statistics instead:
          an approximation.
        - Recurrent context: chunks are fed in order with the carried state: the same as one
          pass up to float error.
        - Other contexts (Transformer, identity): each chunk is run with ``overlap_seconds`` of
          extra frames on the left (and, if not causal, on the right), and only the chunk's own
          frames are kept. For a Transformer this approximates one pass (attention beyond the
          overlap is cut); it is exact when the recording fits in one chunk or the overlap
          covers the whole recording.

        Args:
            wav: ``(S,)``, ``(1, S)`` or ``(1, 1, S)`` samples at 16 kHz.
            layer: ``"encoder"`` (z, F = D), ``"context"`` (c, F = H), or ``"context.N"``: the
                N-th context layer's output (0-based; negative counts from the last).
            chunk_seconds: chunk length (at least one frame).
            overlap_seconds: context overlap for non-recurrent context networks (>= 0).
        """
        signal = _as_signal(wav)
        index = self._layer_index(layer)
        chunk = round(chunk_seconds * SAMPLE_RATE) // self.hop
        if chunk < 1:
            raise ValueError(
                f"chunk_seconds={chunk_seconds} is shorter than one frame of {self.frame_step} s"
            )
        if overlap_seconds < 0:
            raise ValueError(f"overlap_seconds must be >= 0, got {overlap_seconds}")
        overlap = round(overlap_seconds * SAMPLE_RATE) // self.hop
        total = self.num_frames(signal.shape[0])
        device = self._device()
        out = torch.empty(total, self.latent_dim if index is None else self.dim, device=device)
        bounds = [(start, min(total, start + chunk)) for start in range(0, total, chunk)]
        was_training = self.training
        self.eval()
        try:
            if index is None:
                pieces = self._encoder_pieces(signal, bounds, total, device)
            elif getattr(self.context, "recurrent", False):
                pieces = self._recurrent_pieces(signal, bounds, total, device, index)
            else:
                pieces = self._overlapped_pieces(signal, bounds, total, device, index, overlap)
            for (start, stop), features in zip(bounds, pieces):
                out[start:stop] = features
        finally:
            self.train(was_training)
        return out

    def _encoder_pieces(
        self, signal: Tensor, bounds: list[tuple[int, int]], total: int, device: torch.device
    ) -> Iterator[Tensor]:
        for start, stop in bounds:
            yield self._encode_frames(signal, start, stop, total, device)

    def _recurrent_pieces(
        self,
        signal: Tensor,
        bounds: list[tuple[int, int]],
        total: int,
        device: torch.device,
        index: int,
    ) -> Iterator[Tensor]:
        """Chunks fed in order, the recurrent state carried from one to the next."""
        state = None
        for start, stop in bounds:
            z = self._encode_frames(signal, start, stop, total, device)
            layers, state = self.context.forward_layers_with_state(z[None], state)
            yield layers[index][0]

    def _overlapped_pieces(
        self,
        signal: Tensor,
        bounds: list[tuple[int, int]],
        total: int,
        device: torch.device,
        index: int,
        overlap: int,
    ) -> Iterator[Tensor]:
        """Each chunk run with ``overlap`` frames of left (and, if not causal, right) context."""
        right = 0 if self.context.causal else overlap
        for start, stop in bounds:
            lo, hi = max(0, start - overlap), min(total, stop + right)
            z = self._encode_frames(signal, lo, hi, total, device)
            yield self.context.forward_layers(z[None])[index][0, start - lo : stop - lo]

    def _encode_frames(
        self, signal: Tensor, start: int, stop: int, total: int, device: torch.device
    ) -> Tensor:
        """Encoder frames ``[start, stop)`` of ``signal`` (``total`` frames): ``(stop - start, D)``.

        The encoder sees ``margin`` extra frames of samples on each side (clipped to the
        recording), so no kept frame reads the zero padding at the chunk's edges.
        """
        margin = -(-self.encoder.receptive_field // self.hop) + 1
        lo, hi = max(0, start - margin), min(total, stop + margin)
        x = signal[lo * self.hop : hi * self.hop].to(device=device, dtype=torch.float32)
        z = self.encoder(x.view(1, 1, -1))[0]
        return z[start - lo : stop - lo]


def _as_signal(wav: Tensor | np.ndarray) -> Tensor:
    """``(S,)``, ``(1, S)`` or ``(1, 1, S)`` -> ``(S,)``; raises on anything else."""
    wav = torch.as_tensor(wav)
    if not wav.is_floating_point():
        raise ValueError(f"extract expects float samples in [-1, 1], got dtype {wav.dtype}")
    if wav.dim() == 1:
        return wav
    if wav.dim() in (2, 3) and all(size == 1 for size in wav.shape[:-1]):
        return wav.reshape(-1)
    raise ValueError(
        f"extract expects one mono recording of shape (S,), (1, S) or (1, 1, S), got "
        f"{tuple(wav.shape)}"
    )
