"""Pseudo-label regression: predict a frame-level signal descriptor from the context.

The pretext task of the pseudo-label selection papers (Zaiem, Parcollet and Essid, Interspeech
2021, section 4; after PASE's workers, Pascual et al. 2019): a small head on the context output
regresses a descriptor ``Z`` of the input computed on the fly (F0, voicing, energy, spectral
shape, MFCCs …, see :mod:`ssl_speech.signal.pseudo_labels`), at the encoder's frame rate. Here it
serves to check the utility estimate of :mod:`ssl_speech.eval.utility`: each candidate ``Z``
pretrains the same model for the same budget, and a phone probe tells which one helped.

What our version does: ``Z`` is extracted from ``batch.wav`` inside the objective (no
pre-computed targets on disk), standardised per dimension with running statistics kept as
buffers (so they are checkpointed; updated in training mode only: the cumulative mean and
variance of the frames seen, then an exponential average once ``1 / updates`` falls below
``momentum``), and frames where ``Z`` is undefined (NaN, e.g. F0 of unvoiced frames) are left
out of the loss.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ssl_speech.data.batch import Batch
from ssl_speech.objectives.base import Objective, ObjectiveOutput, scalar
from ssl_speech.signal.pseudo_labels import PSEUDO_LABELS, extract_pseudo_label

LOSSES = ("mse", "l1")


class PseudoLabelRegression(Objective):
    """Regress a z-scored frame-level pseudo-label from the context output.

    Args:
        label: the pseudo-label's registered name (``f0``, ``voicing``, ``rms``, ``mfcc`` …).
        context_dim: context size H of c.
        hidden: ``None`` for a linear head, else the width of one ReLU hidden layer.
        loss: ``"mse"`` (squared error) or ``"l1"`` (absolute error), in standard deviations of
            ``Z``, averaged over the defined frames and dimensions.
        momentum: floor of the running statistics' update weight (see the module docstring).

    ``forward(model, batch)`` runs ``_, c = model(batch.wav)`` (c ``(B, T, H)``, ``T = S //
    model.hop``), computes ``Z`` ``(B, T, D)`` from ``batch.wav`` at the same hop, and returns
    the loss with metrics ``loss/regression``, ``r2`` (1 − mean squared error of the
    standardised prediction: the share of ``Z``'s variance explained, 0 for predicting its
    mean) and ``defined`` (share of frames where ``Z`` is defined).
    """

    def __init__(
        self,
        label: str = "f0",
        context_dim: int = 256,
        hidden: int | None = None,
        loss: str = "mse",
        momentum: float = 0.01,
    ) -> None:
        super().__init__()
        if label not in PSEUDO_LABELS:
            raise ValueError(
                f"PseudoLabelRegression label {label!r} is unknown; choose one of "
                f"{sorted(PSEUDO_LABELS)} (e.g. objective.label=f0)"
            )
        if not PSEUDO_LABELS[label].available:
            raise ImportError(f"pseudo-label {label!r} needs the optional package "
                              f"{PSEUDO_LABELS[label].requires!r}; install it or pick another")
        if context_dim < 1:
            raise ValueError(f"PseudoLabelRegression context_dim must be >= 1, got {context_dim}")
        if hidden is not None and hidden < 1:
            raise ValueError(f"hidden must be None (linear head) or >= 1 units, got {hidden}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must lie in (0, 1], got {momentum}")
        self.label = label
        self.dims = PSEUDO_LABELS[label].dims
        self.context_dim = context_dim
        self.loss_kind = loss
        self.momentum = momentum
        if hidden is None:
            self.head: nn.Module = nn.Linear(context_dim, self.dims)
        else:
            self.head = nn.Sequential(nn.Linear(context_dim, hidden), nn.ReLU(),
                                      nn.Linear(hidden, self.dims))
        self.register_buffer("target_mean", torch.zeros(self.dims))
        self.register_buffer("target_var", torch.ones(self.dims))
        self.register_buffer("updates", torch.zeros(self.dims, dtype=torch.long))

    @torch.no_grad()
    def targets(self, wav: Tensor, hop: int) -> Tensor:
        """``Z`` ``(B, T, D)`` of ``wav`` ``(B, 1, S)``, NaN where undefined (unstandardised)."""
        # Signal processing in float32 even under mixed precision (log-mel's matmul would
        # otherwise run in bf16 and blur the targets).
        with torch.autocast(wav.device.type, enabled=False):
            z = extract_pseudo_label(self.label, wav.float(), hop)
        return z[..., None] if z.dim() == 2 else z

    @torch.no_grad()
    def _update_statistics(self, z: Tensor, defined: Tensor) -> None:
        count = defined.sum(dim=(0, 1))  # (D,)
        seen = count > 0
        if not bool(seen.any()):
            return
        zeros = torch.zeros_like(z)
        mean = torch.where(defined, z, zeros).sum(dim=(0, 1)) / count.clamp_min(1)
        centred = torch.where(defined, z - mean, zeros)
        var = centred.pow(2).sum(dim=(0, 1)) / count.clamp_min(1)
        self.updates += seen.long()
        weight = torch.maximum(1.0 / self.updates.clamp_min(1).float(),
                               torch.full_like(mean, self.momentum))
        weight = torch.where(seen, weight, torch.zeros_like(weight))
        # Variance of the mixture of the old and the new distribution (stable first updates).
        delta = mean - self.target_mean
        new_var = (1 - weight) * self.target_var + weight * var + weight * (1 - weight) * delta**2
        self.target_mean += weight * delta
        self.target_var.copy_(new_var.clamp_min(1e-8))

    def forward(self, model: nn.Module, batch: Batch) -> ObjectiveOutput:
        _, c = model(batch.wav)
        hop = int(getattr(model, "hop", 160))
        z = self.targets(batch.wav, hop).to(c.device)
        if z.shape[:2] != c.shape[:2]:
            raise ValueError(
                f"pseudo-label {self.label!r} has {z.shape[1]} frames at hop {hop} but the model "
                f"gives {c.shape[1]}; the encoder's frames must be S // hop"
            )
        return self.compute(c, z)

    def compute(self, c: Tensor, z: Tensor) -> ObjectiveOutput:
        """Loss and metrics from the context ``c`` ``(B, T, H)`` and raw targets ``z``
        ``(B, T, D)`` (NaN where undefined)."""
        if c.dim() != 3 or c.shape[-1] != self.context_dim:
            raise ValueError(f"context must be (B, T, {self.context_dim}), got {tuple(c.shape)}")
        defined = z.isfinite()
        if self.training:
            self._update_statistics(z, defined)
        target = (z - self.target_mean) / self.target_var.sqrt()
        target = torch.where(defined, target, torch.zeros_like(target))
        prediction = self.head(c).float()
        error = prediction - target
        error = error.pow(2) if self.loss_kind == "mse" else error.abs()
        weight = defined.float()
        count = weight.sum()
        loss = (error * weight).sum() / count.clamp_min(1.0)
        with torch.no_grad():
            # Targets are in standard deviations of Z (running statistics, not the batch's:
            # a batch holds one speaker, whose F0 varies far less than the corpus's).
            squared = ((prediction - target).pow(2) * weight).sum() / count.clamp_min(1.0)
        metrics = {
            "loss/regression": loss.detach(),
            "r2": 1.0 - squared if bool(count > 0) else scalar(float("nan"), like=c),
            "defined": count / weight.numel(),
        }
        return ObjectiveOutput(loss=loss, metrics=metrics)
