"""MGF: a multi-granular objective, one target and loss per time scale.

The MGF paper gives the principle only: speech is hierarchical, so the smallest scale gets a
generative target, the phoneme scale a masked contrastive one and the utterance scale a
discriminative one. It publishes no recipe; the one below is ours, and every weight, scale and
temperature is a constructor argument (``configs/objective/mgf.yaml``).

One pass: ``z = encoder(wav)`` ``(B, T, D)``; spans of ``z`` are masked with a learned vector
(:class:`~ssl_speech.nn.masking.SpanMasker`: start probability 0.065 in the config, spans of
10 frames);
``c = context(z_masked)`` ``(B, T, H)``, a bidirectional Transformer by default. Then:

- Frame scale, generative (λ_f): a small MLP maps ``c`` on each masked frame to the log-mel
  frame of the input there; L1 over masked frames and mel bins. The target is
  :class:`~ssl_speech.nn.encoders.LogMel` of the waveform (utterance-normalised, 10 ms, the
  encoders' frame alignment); for an encoder with a coarser hop (wav2vec 2.0: 320 samples) the
  ``hop / 160`` log-mel frames under each encoder frame are averaged. The target is always
  computed from the waveform, never from the learned representation, so it cannot collapse;
  with the log-mel encoder it is that encoder's own input, which the masking hides from the
  context.
- Phoneme scale, masked contrastive (λ_p): ``c`` mean-pooled over each masked span (10 frames,
  100 ms) and mapped linearly to D must pick the same span mean-pooled from the unmasked ``z``
  (no gradient through it) among the spans of the whole batch: InfoNCE with cosine similarity
  and temperature τ_p. With ``phone_target_norm="instance"`` (the config's choice) ``z`` is
  standardised per channel over the window's frames before the pooling: ``z`` leaves the
  encoder through a ReLU, and without the centring every span shares one large mean direction
  and the cosine similarities crowd near 1. Spans of one sequence may overlap; a span that
  overlaps the query's span shares frames with its positive, so it is left out of that
  query's negatives.
- Utterance scale, discriminative (λ_u): two disjoint crops of ``c`` per window
  (``utt_crop`` frames each, at least ``utt_gap`` frames apart, random positions),
  mean-pooled, through a projection MLP; NT-Xent (SimCLR) over the ``2B`` views with
  temperature τ_u. The crops are pooled from the masked pass: the masking is their
  augmentation and no second context pass is paid for. Windows of the same utterance in one
  batch are not each other's negatives (``Batch.utt``).

Loss ``λ_f L_frame + λ_p L_phone + λ_u L_utt``. A scale whose λ is 0 has no head (no
parameters, so DDP sees no unused ones) and does no work; the masking and the single context
pass are shared by all scales, so an ablation changes only the losses.

Sampler: keep batches from one speaker (``data.sampler=samespeaker``, the default). The
utterance-scale negatives then share the speaker, so speaker identity does not help NT-Xent:
it has to tell windows apart by what they say and where they were recorded. With ``uniform``
batches speaker identity would solve most of it and pull the features toward speaker features
(compare the phone and speaker probes). The "utterance" here is the training window (128
frames by default), so the crops are shorter than it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_speech.data.batch import Batch
from ssl_speech.nn.encoders import LogMel
from ssl_speech.nn.masking import SpanMask, SpanMasker
from ssl_speech.nn.norms import instance_norm_over_time
from ssl_speech.objectives.base import Objective, ObjectiveOutput
from ssl_speech.objectives.nt_xent import cosine_info_nce, nt_xent

LOG_MEL_HOP = 160  # samples per log-mel frame (10 ms)
PHONE_TARGET_NORMS = ("none", "center", "instance")


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Module:
    """``Linear`` when ``hidden == 0``, else ``Linear -> GELU -> Linear``."""
    if hidden == 0:
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))


def disjoint_crops(
    batch: int,
    length: int,
    crop: int,
    gap: int,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Start frames ``(B, 2)`` of two crops of ``crop`` frames, at least ``gap`` frames apart.

    The slack ``T − 2·crop − gap`` is split at two uniform points into the space before the
    first crop, the extra gap and the space after the second, so crop 0 always comes first.
    """
    slack = length - 2 * crop - gap
    if slack < 0:
        raise ValueError(
            f"two crops of {crop} frames {gap} frames apart need {2 * crop + gap} frames, the "
            f"sequence has {length}"
        )
    cuts = torch.randint(0, slack + 1, (batch, 2), device=device, generator=generator)
    cuts = cuts.sort(dim=1).values
    return torch.stack([cuts[:, 0], cuts[:, 1] + crop + gap], dim=1)


def pool_crops(features: Tensor, starts: Tensor, crop: int) -> Tensor:
    """Mean of ``features`` ``(B, T, C)`` over ``[start, start + crop)``: ``(B, K, C)``.

    ``starts``: ``(B, K)`` start frames.
    """
    B, K = starts.shape
    C = features.shape[-1]
    index = starts[..., None] + torch.arange(crop, device=starts.device)  # (B, K, crop)
    frames = features.gather(1, index.reshape(B, K * crop, 1).expand(-1, -1, C))
    return frames.view(B, K, crop, C).mean(dim=2)


class MGF(Objective):
    """Multi-granular masked objective (see the module docstring).

    Args:
        dim: latent size D of the encoder output z.
        context_dim: context size H of c; default ``dim``.
        frame_weight, phone_weight, utt_weight: λ_f, λ_p, λ_u (>= 0, not all 0); 0 removes the
            scale's head and work.
        mask_prob: probability that a frame starts a masked span.
        mask_span: span length in frames (also the phoneme-scale pooling unit).
        min_unmasked: frames of every window that stay visible.
        min_spans: masked spans per window at least (>= 1 keeps the frame and phoneme scales
            defined on every window).
        n_mels, n_fft: the log-mel target (see :class:`~ssl_speech.nn.encoders.LogMel`).
        frame_hidden: hidden size of the reconstruction MLP (0: linear).
        phone_temperature: τ_p of the span InfoNCE.
        phone_target_norm: what the span targets are pooled from: ``"none"`` (``z`` as it is),
            ``"center"`` (``z`` minus its mean over the window's frames) or ``"instance"``
            (each channel standardised over the window's frames).
        utt_crop: frames per utterance-scale crop.
        utt_gap: least frames between the two crops.
        utt_hidden: hidden size of the projection MLP (0: linear).
        utt_proj_dim: output size of the projection.
        utt_temperature: τ_u of NT-Xent.

    ``forward(model, batch)`` drives ``model.encoder`` and ``model.context`` itself and returns
    the loss with metrics ``loss/{frame,phone,utt}`` (unweighted), ``acc/phone``, ``acc/utt``,
    ``frame/r2`` (1 − MSE / mean square of the target, on masked frames), ``mask/fraction``,
    ``mask/spans`` (per window), and ``acc``: the phoneme-scale accuracy, or the utterance
    scale's when λ_p = 0 (only the active scales are logged).
    """

    def __init__(
        self,
        dim: int = 256,
        context_dim: int | None = None,
        frame_weight: float = 1.0,
        phone_weight: float = 1.0,
        utt_weight: float = 0.1,
        mask_prob: float = 0.065,
        mask_span: int = 10,
        min_unmasked: int = 10,
        min_spans: int = 1,
        n_mels: int = 80,
        n_fft: int = 400,
        frame_hidden: int = 256,
        phone_temperature: float = 0.1,
        phone_target_norm: str = "instance",
        utt_crop: int = 48,
        utt_gap: int = 8,
        utt_hidden: int = 256,
        utt_proj_dim: int = 128,
        utt_temperature: float = 0.1,
    ) -> None:
        super().__init__()
        weights = {"frame_weight": frame_weight, "phone_weight": phone_weight,
                   "utt_weight": utt_weight}
        for name, value in weights.items():
            if value < 0:
                raise ValueError(f"MGF {name} must be >= 0 (0 disables the scale), got {value}")
        if not any(value > 0 for value in weights.values()):
            raise ValueError("MGF: frame_weight, phone_weight and utt_weight are all 0; "
                             "enable at least one scale")
        for name, value in (("dim", dim), ("utt_crop", utt_crop), ("utt_proj_dim", utt_proj_dim)):
            if value < 1:
                raise ValueError(f"MGF {name} must be >= 1, got {value}")
        for name, value in (("frame_hidden", frame_hidden), ("utt_hidden", utt_hidden),
                            ("utt_gap", utt_gap)):
            if value < 0:
                raise ValueError(f"MGF {name} must be >= 0, got {value}")
        for name, value in (("phone_temperature", phone_temperature),
                            ("utt_temperature", utt_temperature)):
            if value <= 0:
                raise ValueError(f"MGF {name} must be > 0, got {value}")
        if phone_target_norm not in PHONE_TARGET_NORMS:
            raise ValueError(
                f"MGF phone_target_norm must be one of {', '.join(PHONE_TARGET_NORMS)}, "
                f"got {phone_target_norm!r}"
            )
        if mask_prob <= 0 and (frame_weight > 0 or phone_weight > 0):
            raise ValueError(f"MGF mask_prob must be > 0 for the masked scales, got {mask_prob}")
        self.dim = dim
        self.context_dim = dim if context_dim is None else context_dim
        self.frame_weight = float(frame_weight)
        self.phone_weight = float(phone_weight)
        self.utt_weight = float(utt_weight)
        self.phone_temperature = float(phone_temperature)
        self.utt_temperature = float(utt_temperature)
        self.phone_target_norm = phone_target_norm
        self.utt_crop = utt_crop
        self.utt_gap = utt_gap
        self.masker = SpanMasker(dim, mask_prob, mask_span, min_unmasked, min_spans)
        H = self.context_dim
        # Disabled scales get no modules at all (None), not unused parameters.
        self.log_mel = LogMel(n_mels, n_fft) if frame_weight > 0 else None
        self.frame_head = _mlp(H, frame_hidden, n_mels) if frame_weight > 0 else None
        self.phone_head = nn.Linear(H, dim) if phone_weight > 0 else None
        self.utt_head = _mlp(H, utt_hidden, utt_proj_dim) if utt_weight > 0 else None

    def min_frames(self) -> int:
        """Frames a window needs for every active scale."""
        need = 1
        if self.frame_head is not None or self.phone_head is not None:
            need = self.masker.span + self.masker.min_unmasked
        if self.utt_head is not None:
            need = max(need, 2 * self.utt_crop + self.utt_gap)
        return need

    def forward(self, model: nn.Module, batch: Batch) -> ObjectiveOutput:
        wav = batch.wav
        z = model.encoder(wav)  # (B, T, D)
        hop = int(model.encoder.hop)
        if z.shape[1] < self.min_frames():
            raise ValueError(
                f"MGF: a window of {wav.shape[-1]} samples gives {z.shape[1]} frames of hop "
                f"{hop}; the masking (span + min_unmasked) and the two utterance crops "
                f"(2 crop + gap) need {self.min_frames()} frames: use data.window >= "
                f"{self.min_frames() * hop}"
            )
        masked = self.masker(z)
        c = model.context(masked.x)  # (B, T, H)
        log_mel = self.frame_targets(wav, hop, z.shape[1]) if self.log_mel is not None else None
        return self.compute(z, c, masked, log_mel, groups=_utterance_groups(batch, z.device))

    def frame_targets(self, wav: Tensor, hop: int, num_frames: int) -> Tensor:
        """Log-mel of ``wav`` ``(B, 1, S)`` at the encoder's rate: ``(B, T, n_mels)`` float32."""
        if self.log_mel is None:
            raise RuntimeError("MGF.frame_targets: the frame scale is disabled (frame_weight=0)")
        if hop % LOG_MEL_HOP:
            raise ValueError(
                f"MGF: the frame-scale target is log-mel at {LOG_MEL_HOP} samples per frame; "
                f"the encoder hop {hop} is not a multiple of it (set frame_weight=0 or use an "
                "encoder with hop 160 or 320)"
            )
        ratio = hop // LOG_MEL_HOP
        mel = self.log_mel(wav)[:, : num_frames * ratio]  # (B, ratio·T, n_mels)
        # Encoder frame t covers log-mel frames ratio·t … ratio·t + ratio − 1.
        return mel.view(mel.shape[0], num_frames, ratio, -1).mean(dim=2)

    def compute(
        self,
        z: Tensor,
        c: Tensor,
        masked: SpanMask,
        log_mel: Tensor | None = None,
        groups: Tensor | None = None,
    ) -> ObjectiveOutput:
        """The loss and metrics from one masked pass.

        Args:
            z: ``(B, T, D)`` unmasked encoder output.
            c: ``(B, T, H)`` context of the masked sequence ``masked.x``.
            masked: the masking that produced ``c``.
            log_mel: ``(B, T, n_mels)`` frame targets; required when λ_f > 0.
            groups: optional ``(B,)`` utterance ids for the utterance scale.
        """
        if z.dim() != 3 or c.shape[:2] != z.shape[:2] or masked.mask.shape != z.shape[:2]:
            raise ValueError(
                f"MGF: z {tuple(z.shape)}, c {tuple(c.shape)} and mask "
                f"{tuple(masked.mask.shape)} must share (batch, frames)"
            )
        if z.shape[-1] != self.dim or c.shape[-1] != self.context_dim:
            raise ValueError(
                f"MGF: expects z (..., {self.dim}) and c (..., {self.context_dim}), got "
                f"{tuple(z.shape)} and {tuple(c.shape)}; set dim and context_dim"
            )
        loss = c.new_zeros((), dtype=torch.float32)
        metrics: dict[str, Tensor] = {
            "mask/fraction": masked.mask.float().mean(),
            "mask/spans": masked.valid.sum(dim=1).float().mean(),
        }
        if self.frame_head is not None:
            if log_mel is None:
                raise ValueError("MGF.compute: the frame scale (frame_weight > 0) needs log_mel")
            frame_loss, r2 = self._frame_loss(c, masked.mask, log_mel)
            loss = loss + self.frame_weight * frame_loss
            metrics.update({"loss/frame": frame_loss, "frame/r2": r2})
        if self.phone_head is not None:
            phone_loss, phone_acc = self._phone_loss(z, c, masked)
            loss = loss + self.phone_weight * phone_loss
            metrics.update({"loss/phone": phone_loss, "acc/phone": phone_acc})
        if self.utt_head is not None:
            utt_loss, utt_acc = self._utt_loss(c, groups)
            loss = loss + self.utt_weight * utt_loss
            metrics.update({"loss/utt": utt_loss, "acc/utt": utt_acc})
        for name in ("acc/phone", "acc/utt"):  # the progress bar's "acc"
            if name in metrics:
                metrics["acc"] = metrics[name]
                break
        return ObjectiveOutput(loss, metrics)

    def _frame_loss(self, c: Tensor, mask: Tensor, log_mel: Tensor) -> tuple[Tensor, Tensor]:
        if log_mel.shape[:2] != mask.shape:
            raise ValueError(
                f"MGF: log_mel {tuple(log_mel.shape)} must cover the {tuple(mask.shape)} frames"
            )
        if not mask.any():  # keeps the graph (and DDP) whole when nothing was masked
            return c.sum() * 0.0, c.new_zeros(())
        prediction = self.frame_head(c[mask]).float()  # (N, n_mels): masked frames only
        target = log_mel[mask].float()
        loss = (prediction - target).abs().mean()
        with torch.no_grad():
            r2 = 1.0 - F.mse_loss(prediction, target) / target.square().mean().clamp_min(1e-8)
        return loss, r2

    def _phone_loss(self, z: Tensor, c: Tensor, masked: SpanMask) -> tuple[Tensor, Tensor]:
        valid = masked.valid
        if not valid.any():
            return c.sum() * 0.0, c.new_zeros(())
        queries = self.phone_head(masked.pool(c)[valid])  # (M, D)
        keys = masked.pool(self._phone_targets(z.detach()))[valid]  # (M, D), no gradient
        row = torch.arange(valid.shape[0], device=valid.device)[:, None].expand_as(valid)[valid]
        start = masked.starts[valid]
        overlapping = (row[:, None] == row[None, :]) & (
            (start[:, None] - start[None, :]).abs() < masked.span
        )
        overlapping.fill_diagonal_(False)
        targets = torch.arange(len(start), device=start.device)
        return cosine_info_nce(queries, keys, targets, self.phone_temperature, overlapping)

    def _phone_targets(self, z: Tensor) -> Tensor:
        """``z`` ``(B, T, D)`` normalised over time as ``phone_target_norm`` says."""
        if self.phone_target_norm == "none":
            return z
        if self.phone_target_norm == "center":
            return z - z.mean(dim=1, keepdim=True)
        return instance_norm_over_time(z)

    def _utt_loss(self, c: Tensor, groups: Tensor | None) -> tuple[Tensor, Tensor]:
        B, T, _ = c.shape
        starts = disjoint_crops(B, T, self.utt_crop, self.utt_gap, device=c.device)
        views = self.utt_head(pool_crops(c, starts, self.utt_crop))  # (B, 2, P)
        return nt_xent(views[:, 0], views[:, 1], self.utt_temperature, groups)


def _utterance_groups(batch: Batch, device: torch.device) -> Tensor | None:
    """``(B,)`` ids, equal for windows of the same utterance, or ``None`` without ``utt``."""
    if batch.utt is None:
        return None
    index: dict[str, int] = {}
    ids = [index.setdefault(utt, len(index)) for utt in batch.utt]
    return torch.tensor(ids, dtype=torch.long, device=device)
