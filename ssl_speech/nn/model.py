"""The self-supervised model: an encoder followed by a context network.

``SSLModel.forward`` is what the objectives drive during training; ``SSLModel.extract`` turns a
recording of any length, or a batch of them, into frame features of one or several layers for
evaluation and export, in chunks so that memory stays bounded for hours of audio.
``save_pretrained`` / ``from_pretrained`` write and read a slim exported directory
(``pretrained.py``; built only through the allowlist of ``model_config.py``).

Frame convention: a recording of ``S`` samples has ``T = S // hop`` frames; frame ``t`` nominally
covers samples ``[t * hop, (t + 1) * hop)`` (the encoders' ``offset`` is 0) and the trailing
partial frame is dropped. ``forward`` on a window and ``extract`` on the same samples give the
same ``T``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchaudio
from torch import Tensor, nn

from ssl_speech.data.audio import SAMPLE_RATE
from ssl_speech.nn import pretrained


class SSLModel(nn.Module):
    """Encoder ``wav (B, 1, S) -> z (B, T, D)`` and context ``z -> c (B, T, H)``.

    Attributes:
        hop: samples per frame (the encoder's).
        dim: context size H.
        latent_dim: encoder size D.
        frame_step: seconds per frame, ``hop / 16000``.
        sample_rate: 16000, the rate the model reads (``extract`` resamples other rates).
        config: set by ``build_model``, ``load_model`` and ``from_pretrained``: the stored
            config (``encoder`` and ``context`` entries at least); ``save_pretrained`` needs it.

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
        self.sample_rate: int = SAMPLE_RATE

    # ------------------------------------------------------------------------------------------
    # Saving and loading a slim directory (huggingface_hub's PyTorchModelHubMixin layout)
    # ------------------------------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | Path, *,
                        provenance: dict[str, Any] | None = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` to ``save_directory``.

        The model must know its config (``model.config`` with ``encoder`` and ``context``
        entries, as ``build_model`` and ``load_model`` set it). See ``docs/export.md``.
        """
        return pretrained.save_pretrained(self, save_directory, provenance)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *,
                        map_location: str | torch.device = "cpu", revision: str | None = None,
                        cache_dir: str | Path | None = None, local_files_only: bool = False,
                        token: str | bool | None = None,
                        extra_classes: dict[str, type] | None = None,
                        max_parameters: int | None = None) -> SSLModel:
        """Load a directory written by ``save_pretrained`` (or a Hub repo id), in eval mode.

        A local directory is read with no network access. The config builds only the library's
        own model classes and the weights must match the built model (see ``model_config``).
        A repo id needs ``huggingface_hub``.
        """
        return pretrained.from_pretrained(
            pretrained_model_name_or_path, map_location=map_location, revision=revision,
            cache_dir=cache_dir, local_files_only=local_files_only, token=token,
            extra_classes=extra_classes, max_parameters=max_parameters,
        )

    def push_to_hub(self, repo_id: str, *, private: bool | None = None,
                    token: str | None = None, commit_message: str = "Upload ssl_speech model",
                    provenance: dict[str, Any] | None = None) -> str:
        """Save to a temporary directory and upload it to the Hub (needs ``huggingface_hub``)."""
        return pretrained.push_to_hub(self, repo_id, private=private, token=token,
                                      commit_message=commit_message, provenance=provenance)

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
        wav: Tensor | np.ndarray | Sequence[Tensor | np.ndarray],
        layer: str = "context",
        chunk_seconds: float = 10.0,
        overlap_seconds: float = 2.0,
        *,
        sample_rate: int = SAMPLE_RATE,
        layers: str | Sequence[str] | None = None,
        lengths: Tensor | Sequence[int] | None = None,
    ) -> Tensor | dict[str, Tensor]:
        """Features of one recording or a batch, one layer or several from one pass.

        Returns ``(T, F)`` float32 for one recording (``T = S // hop``) or ``(B, T_max, F)`` for
        a batch (frames past a recording's own ``num_frames(length)`` are zero); with
        ``layers`` a dict ``{name: features}`` in the order asked, every layer from the same
        pass. Runs in eval mode (the previous mode is restored), without gradients, on the
        model's device.

        Long recordings are processed in chunks of ``chunk_seconds``:

        - Encoder: each chunk is encoded with enough extra samples on both sides to cover the
          receptive field, so the result equals a single pass up to float error whenever
          ``encoder.frame_local`` is true. Encoders with statistics over the window (instance
          or group norm, utterance-normalised log-mel) see each chunk's statistics instead.
        - Recurrent context: chunks are fed in order with the carried state: the same as one
          pass up to float error.
        - Other contexts (Transformer, identity): each chunk is run with ``overlap_seconds`` of
          extra frames on the left (and, if not causal, on the right), and only the chunk's own
          frames are kept: exact when the recording fits in one chunk or the overlap covers it.
          With several layers asked, the encoder layer is taken from that same pass, so for an
          encoder with window statistics it reflects the chunk with its overlap.

        A batch whose recordings all fit in one chunk runs the context as one padded pass with a
        padding mask (the bidirectional Transformer attends to no padding frame), after encoding
        each recording alone, so every recording's frames equal its own single pass up to float
        error. Longer batches are extracted one recording at a time.

        Args:
            wav: one recording ``(S,)``, ``(1, S)`` or ``(1, 1, S)``; or a batch: a list of
                ``(S_b,)`` recordings, or ``(B, S)`` / ``(B, 1, S)`` with ``lengths``.
            layer: ``"encoder"`` (z), ``"context"`` (c), or ``"context.N"`` (0-based; negative
                counts from the last); ignored when ``layers`` is given.
            chunk_seconds: chunk length (at least one frame).
            overlap_seconds: context overlap for non-recurrent context networks (>= 0).
            sample_rate: the recordings' rate in Hz; other rates than the model's 16 kHz are
                resampled (torchaudio's sinc resampler) before the model sees them.
            layers: ``"all"`` (``encoder``, ``context.0`` ... ``context.{N-1}``) or a list of
                layer names: return a dict of those layers.
            lengths: ``(B,)`` valid samples of each row of a padded ``(B, S)`` batch, at
                ``sample_rate``.
        """
        names = self._requested(layer, layers)
        indices = [self._layer_index(name) for name in names]
        chunk = round(chunk_seconds * SAMPLE_RATE) // self.hop
        if chunk < 1:
            raise ValueError(
                f"chunk_seconds={chunk_seconds} is shorter than one frame of {self.frame_step} s"
            )
        if overlap_seconds < 0:
            raise ValueError(f"overlap_seconds must be >= 0, got {overlap_seconds}")
        overlap = round(overlap_seconds * SAMPLE_RATE) // self.hop
        recordings, batched = _as_recordings(wav, lengths)
        recordings = [_to_model_rate(r, sample_rate) for r in recordings]
        was_training = self.training
        self.eval()
        try:
            if not batched:
                outputs = self._extract_one(recordings[0], indices, chunk, overlap)
            elif max(self.num_frames(r.numel()) for r in recordings) <= chunk:
                outputs = self.padded_layers(recordings, names)
            else:
                outputs = _pad_frames(
                    [self._extract_one(r, indices, chunk, overlap) for r in recordings]
                )
        finally:
            self.train(was_training)
        if layers is None:
            return outputs[0]
        return dict(zip(names, outputs))

    def hidden_layer_names(self) -> list[str]:
        """The distinct layers, input side first: ``encoder``, ``context.0`` ... (``"all"``)."""
        return ["encoder"] + [f"context.{i}" for i in range(self.context.num_layers)]

    def _requested(self, layer: str, layers: str | Sequence[str] | None) -> list[str]:
        if layers is None:
            return [layer]
        if isinstance(layers, str):
            if layers != "all":
                raise ValueError(f"layers must be 'all' or a list of layer names, got {layers!r}")
            return self.hidden_layer_names()
        names = [str(name) for name in layers]
        if not names:
            raise ValueError("layers is empty; give 'all' or at least one layer name")
        return names

    def _extract_one(
        self, signal: Tensor, indices: list[int | None], chunk: int, overlap: int
    ) -> list[Tensor]:
        """Every requested layer ``(T, F)`` of one recording, one chunked pass."""
        total = self.num_frames(signal.shape[0])
        device = self._device()
        outs = [
            torch.empty(total, self.latent_dim if i is None else self.dim, device=device)
            for i in indices
        ]
        bounds = [(start, min(total, start + chunk)) for start in range(0, total, chunk)]
        if all(i is None for i in indices):
            pieces = self._encoder_pieces(signal, bounds, total, device)
        elif getattr(self.context, "recurrent", False):
            pieces = self._recurrent_pieces(signal, bounds, total, device)
        else:
            pieces = self._overlapped_pieces(signal, bounds, total, device, overlap)
        for (start, stop), (z, layers) in zip(bounds, pieces):
            for out, i in zip(outs, indices):
                out[start:stop] = z if i is None else layers[i]
        return outs

    def padded_layers(self, recordings: Sequence[Tensor], names: Sequence[str]) -> list[Tensor]:
        """The layers ``names`` of a batch in one padded pass: ``(B, T_max, F)`` each.

        ``recordings``: 16 kHz ``(S_b,)`` tensors. Each is encoded alone (the encoders'
        convolutions pad every layer with zeros and some norms pool over time, so a padded
        batch would change the last frames), then the context runs once over the padded batch
        with a padding mask. Frames past ``num_frames(S_b)`` are zero. Unlike ``extract``, no
        chunking, and gradients flow when enabled (for fine-tuning); the module's mode is the
        caller's.
        """
        indices = [self._layer_index(name) for name in names]
        device = self._device()
        frames = torch.tensor([self.num_frames(r.numel()) for r in recordings])
        T = int(frames.max())
        if T == 0:
            return [torch.zeros(len(recordings), 0, self.latent_dim if i is None else self.dim,
                                device=device) for i in indices]
        z = torch.nn.utils.rnn.pad_sequence([
            self.encoder(r[: n * self.hop].to(device=device, dtype=torch.float32).view(1, 1, -1))[0]
            if n else torch.zeros(0, self.latent_dim, device=device)
            for r, n in zip(recordings, frames.tolist())
        ], batch_first=True)
        padding = torch.arange(T)[None, :] >= frames[:, None]
        padding = padding.to(device)
        z = z.masked_fill(padding[..., None], 0.0)
        layers = []
        if any(i is not None for i in indices):
            mask = padding if bool(padding.any()) else None
            layers = self.context.forward_layers(z, padding_mask=mask)
        return [
            (z if i is None else layers[i]).masked_fill(padding[..., None], 0.0).float()
            for i in indices
        ]

    def _encoder_pieces(
        self, signal: Tensor, bounds: list[tuple[int, int]], total: int, device: torch.device
    ) -> Iterator[tuple[Tensor, list[Tensor]]]:
        for start, stop in bounds:
            yield self._encode_frames(signal, start, stop, total, device), []

    def _recurrent_pieces(
        self, signal: Tensor, bounds: list[tuple[int, int]], total: int, device: torch.device
    ) -> Iterator[tuple[Tensor, list[Tensor]]]:
        """Chunks fed in order, the recurrent state carried from one to the next."""
        state = None
        for start, stop in bounds:
            z = self._encode_frames(signal, start, stop, total, device)
            layers, state = self.context.forward_layers_with_state(z[None], state)
            yield z, [layer[0] for layer in layers]

    def _overlapped_pieces(
        self,
        signal: Tensor,
        bounds: list[tuple[int, int]],
        total: int,
        device: torch.device,
        overlap: int,
    ) -> Iterator[tuple[Tensor, list[Tensor]]]:
        """Each chunk run with ``overlap`` frames of left (and, if not causal, right) context."""
        right = 0 if self.context.causal else overlap
        for start, stop in bounds:
            lo, hi = max(0, start - overlap), min(total, stop + right)
            z = self._encode_frames(signal, lo, hi, total, device)
            layers = self.context.forward_layers(z[None])
            yield z[start - lo : stop - lo], [layer[0, start - lo : stop - lo] for layer in layers]

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
    wav = _as_float(wav)
    if wav.dim() == 1:
        return wav
    if wav.dim() in (2, 3) and all(size == 1 for size in wav.shape[:-1]):
        return wav.reshape(-1)
    raise ValueError(
        f"extract expects one mono recording of shape (S,), (1, S) or (1, 1, S), got "
        f"{tuple(wav.shape)}; for a batch pass a list of recordings, or (B, S) with lengths="
    )


def _as_float(wav: Tensor | np.ndarray) -> Tensor:
    wav = torch.as_tensor(wav)
    if not wav.is_floating_point():
        raise ValueError(f"extract expects float samples in [-1, 1], got dtype {wav.dtype}")
    return wav


def _as_recordings(
    wav: Tensor | np.ndarray | Sequence[Tensor | np.ndarray],
    lengths: Tensor | Sequence[int] | None,
) -> tuple[list[Tensor], bool]:
    """The recordings ``(S_b,)`` of ``extract``'s input, and whether it was a batch."""
    if isinstance(wav, (list, tuple)):
        if lengths is not None:
            raise ValueError("extract: give lengths= with a padded (B, S) tensor, not a list")
        if not wav:
            raise ValueError("extract: the list of recordings is empty")
        return [_as_signal(w) for w in wav], True
    if lengths is None:
        return [_as_signal(wav)], False
    wav = _as_float(wav)
    if wav.dim() == 3 and wav.shape[1] == 1:
        wav = wav[:, 0]
    if wav.dim() != 2:
        raise ValueError(f"extract: a batch with lengths is (B, S) or (B, 1, S), got "
                         f"{tuple(wav.shape)}")
    lengths = torch.as_tensor(lengths).reshape(-1)
    if lengths.numel() != wav.shape[0] or bool((lengths < 0).any()) or bool(
            (lengths > wav.shape[1]).any()):
        raise ValueError(
            f"extract: lengths must hold {wav.shape[0]} values in [0, {wav.shape[1]}], got "
            f"{lengths.tolist()}"
        )
    return [wav[b, : int(n)] for b, n in enumerate(lengths)], True


def _to_model_rate(signal: Tensor, sample_rate: int) -> Tensor:
    """``signal`` resampled from ``sample_rate`` to the model's 16 kHz."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or (
            sample_rate <= 0):
        raise ValueError(f"extract: sample_rate must be a positive integer (Hz), got "
                         f"{sample_rate!r}")
    if sample_rate == SAMPLE_RATE:
        return signal
    return torchaudio.functional.resample(signal.float(), int(sample_rate), SAMPLE_RATE)


def _pad_frames(per_recording: list[list[Tensor]]) -> list[Tensor]:
    """``[[layer (T_b, F) ...] per recording]`` -> ``[(B, T_max, F) per layer]``, zero-padded."""
    return [
        torch.nn.utils.rnn.pad_sequence([outs[k] for outs in per_recording], batch_first=True)
        for k in range(len(per_recording[0]))
    ]
