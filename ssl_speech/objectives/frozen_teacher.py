"""A frozen teacher: a network loaded once and never trained, giving frame features.

Either an ssl_speech checkpoint (of any objective; its encoder or a context layer) or, with
none given, a log-mel front end. The teacher runs in eval mode, without autograd and in
float32 (so that an argmax over its features does not depend on the training precision).

It is deliberately not an ``nn.Module``: an objective that holds it does not register it, so it
is neither trained, nor copied into every training checkpoint, nor switched to train mode. A
checkpoint teacher is instead recorded by :meth:`FrozenTeacher.record` (path and SHA-256 of
the file) and checked against that record when a run resumes (:meth:`FrozenTeacher.verify`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ssl_speech.nn.encoders import LogMel
from ssl_speech.nn.norms import instance_norm_over_time
from ssl_speech.runs.checkpoint import file_sha256


class FrozenTeacher:
    """Frame features of a fixed network: ``frames(wav, hop, num_frames) -> (B, T, dim)``.

    Args:
        checkpoint: an ssl_speech checkpoint file or run directory (its newest valid
            checkpoint); ``None`` for the log-mel front end.
        layer: which output of a checkpoint's model: ``"context"`` (the last context layer),
            ``"encoder"``, or ``"context.N"`` (0-based; negative counts from the last).
        n_mels, n_fft: the log-mel front end (see :class:`~ssl_speech.nn.encoders.LogMel`),
            used when ``checkpoint`` is ``None``.
        normalize: instance-normalise the features over each window's frames (per channel),
            so that a fixed projection of them does not just follow each channel's offset.

    Attributes:
        hop: samples per teacher frame (160 for log-mel).
        dim: feature size.
        path: the resolved checkpoint file, ``None`` for log-mel.
        sha256: the hash of that file as it was loaded, ``None`` for log-mel.
    """

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        layer: str = "context",
        n_mels: int = 80,
        n_fft: int = 400,
        normalize: bool = True,
    ) -> None:
        self.layer = str(layer)
        self.normalize = bool(normalize)
        self.path: Path | None = None
        self.sha256: str | None = None
        self._layer_index: int | None = None
        if checkpoint in (None, ""):
            self.network: nn.Module = LogMel(n_mels=n_mels, n_fft=n_fft)
            self.hop = self.network.hop
            self.dim = n_mels
        else:
            self.network = self._load(Path(checkpoint).expanduser())
        self.network.requires_grad_(False)
        self.network.eval()
        self.device = torch.device("cpu")

    def _load(self, source: Path) -> nn.Module:
        from ssl_speech.runs.checkpoint import load_model

        if not source.exists():
            raise FileNotFoundError(
                f"frozen teacher checkpoint {source} does not exist (objective.teacher."
                "checkpoint): give an ssl_speech checkpoint file or run directory, or null for "
                "the log-mel teacher"
            )
        model = load_model(source)
        names = model.layer_names()
        num_layers = model.context.num_layers
        if self.layer == "encoder":
            self._layer_index = None
            self.dim = model.latent_dim
        else:
            index = num_layers - 1 if self.layer == "context" else None
            suffix = self.layer.removeprefix("context.")
            if index is None and suffix != self.layer and suffix.lstrip("-").isdigit():
                index = int(suffix)
            if index is None or not -num_layers <= index < num_layers:
                raise ValueError(
                    f"frozen teacher layer {self.layer!r} is not a layer of {source}; choose "
                    f"one of {', '.join(names)}"
                )
            self._layer_index = index % num_layers
            self.dim = model.dim
        self.hop = int(model.hop)
        self.path = Path(model.checkpoint_path).resolve()
        self.sha256 = file_sha256(self.path)
        return model

    @property
    def kind(self) -> str:
        return "log_mel" if self.path is None else "checkpoint"

    def to(self, device: torch.device | str) -> FrozenTeacher:
        """Move the network to ``device`` (a no-op when it is there already)."""
        device = torch.device(device)
        if device != self.device:
            self.network.to(device)
            self.device = device
        return self

    @torch.no_grad()
    def features(self, wav: Tensor) -> Tensor:
        """``wav`` ``(B, 1, S)`` -> features ``(B, S // hop, dim)`` float32 at the teacher's hop."""
        self.to(wav.device)
        with torch.autocast(device_type=wav.device.type, enabled=False):
            wav = wav.float()
            if self.path is None:
                return self.network(wav).float()
            z = self.network.encoder(wav)
            if self._layer_index is None:
                return z.float()
            return self.network.context.forward_layers(z)[self._layer_index].float()

    @torch.no_grad()
    def frames(self, wav: Tensor, hop: int, num_frames: int) -> Tensor:
        """Features at a student's frame rate: ``(B, num_frames, dim)`` float32.

        Student frame ``t`` (hop ``hop`` samples) covers teacher frames ``r·t … r·t + r − 1``
        with ``r = hop / teacher hop``; their features are averaged. Then, with ``normalize``,
        instance normalisation over the ``num_frames`` frames.
        """
        if hop % self.hop:
            raise ValueError(
                f"frozen teacher: the student's hop {hop} samples is not a multiple of the "
                f"teacher's {self.hop}; use a teacher with a hop that divides it"
            )
        ratio = hop // self.hop
        feats = self.features(wav)
        if feats.shape[1] < num_frames * ratio:
            raise ValueError(
                f"frozen teacher gave {feats.shape[1]} frames for {num_frames} student frames "
                f"of {ratio} teacher frames each"
            )
        feats = feats[:, : num_frames * ratio]
        feats = feats.view(feats.shape[0], num_frames, ratio, -1).mean(dim=2)
        return instance_norm_over_time(feats) if self.normalize else feats

    def record(self) -> dict[str, Any]:
        """What identifies this teacher in a training checkpoint (never its weights)."""
        if self.path is None:
            return {"kind": "log_mel", "n_mels": int(self.dim), "normalize": self.normalize}
        return {"kind": "checkpoint", "path": str(self.path), "sha256": self.sha256,
                "layer": self.layer, "normalize": self.normalize}

    def verify(self, record: dict[str, Any]) -> None:
        """Raise if ``record`` (from a checkpoint being resumed) names another teacher.

        A checkpoint teacher must be the same file (resolved path) with the same content: a
        file that was replaced or retrained since would silently change the pseudo-classes.
        """
        mine = self.record()
        if record.get("kind") != mine["kind"]:
            raise ValueError(
                f"the run being resumed was trained with a {record.get('kind')} frozen teacher "
                f"({record.get('path', 'log-mel')}), this config gives a {mine['kind']} one; "
                "set objective.teacher.checkpoint as in the original run"
            )
        if mine["kind"] == "log_mel":
            if record != mine:
                raise ValueError(f"frozen log-mel teacher settings changed since the run "
                                 f"started: recorded {record}, now {mine}")
            return
        recorded = Path(str(record.get("path")))
        if recorded != self.path:
            raise ValueError(
                f"the run being resumed used the frozen teacher {recorded}; this config "
                f"resolves to {self.path}. Set objective.teacher.checkpoint={recorded}"
            )
        # The hash of the bytes loaded into memory at construction (a vanished file already
        # failed there, naming objective.teacher.checkpoint).
        now = str(self.sha256)
        if now != record.get("sha256"):
            raise ValueError(
                f"the frozen teacher {recorded} changed since the run started: SHA-256 "
                f"{str(record.get('sha256'))[:12]}… recorded, {now[:12]}… now. Restore the "
                "original file, or start a new run"
            )
        if record.get("layer") != mine["layer"] or record.get("normalize") != mine["normalize"]:
            raise ValueError(
                f"frozen teacher settings changed since the run started: recorded layer "
                f"{record.get('layer')!r}, normalize {record.get('normalize')}; now "
                f"{mine['layer']!r}, {mine['normalize']}"
            )
