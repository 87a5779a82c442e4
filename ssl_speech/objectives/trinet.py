"""TriNet: a masked student, an EMA teacher and a frozen teacher (three branches).

TriNet (Cao et al., "TriNet: stabilizing self-supervised learning from complete or slow
collapse", ICASSP 2023, arXiv 2301.00656) adds a frozen teacher to a data2vec-style
student/EMA-teacher pair (Baevski et al., 2022): the frozen branch gives targets that cannot
drift with the student, and the paper reports that it stabilises and speeds up pre-training
against complete (informational) and slow (dimensional) collapse. Our version:

- **Student**: the model itself. ``z = encoder(wav)`` ``(B, T, D)``; spans of ``z`` are masked
  with a learned vector (:class:`~ssl_speech.nn.masking.SpanMasker`, as MGF); the context
  network's ``forward_layers`` gives every layer; the penultimate and the last are used.
- **EMA teacher** (:class:`~ssl_speech.objectives.ema.EMATeacher`): a copy of the student's
  context network, ``θ ← τθ + (1 − τ)θ_student`` after every optimizer update
  (:meth:`TriNet.update_teacher`, called through the trainer's ``after_optimizer_step`` hook),
  ``τ`` from a schedule object (linear 0.999 → 0.9999 over 30k updates by default). It sees the
  unmasked ``z`` (no gradient); the target is the mean of its ``top_k`` layer outputs just
  below the final one (the final layer excluded), each instance-normalised over time.
  The encoder is shared, not copied (as data2vec shares its feature encoder).
- **Frozen teacher** (:class:`~ssl_speech.objectives.frozen_teacher.FrozenTeacher`): an
  ssl_speech checkpoint of any objective, or a log-mel front end; never updated. Its frame
  features are averaged to the student's frame rate and instance-normalised. With
  ``frozen_target="classes"`` (the default) they go through a fixed random projection to
  ``num_classes`` directions (a buffer, unit rows, seeded) and an argmax: one pseudo-class per
  frame. With ``"features"`` the student regresses the feature vectors themselves (the
  paper's "pseudo target vectors"). The log-mel teacher is a BEST-RQ-style fallback (a random
  projection quantiser of log-mel, Chiu et al. 2022), so that the objective runs with nothing
  trained; the paper's teacher is a network, and a trained checkpoint is the recommended one.
- **Losses**: ``λ_r L_reg + λ_c L_frozen``. ``L_reg``: a linear map of the student's
  penultimate layer regresses the EMA target on masked frames, squared error summed over the
  ``H`` channels and scaled by ``1/√H`` (smooth-L1 with ``smooth_l1_beta`` instead), mean over
  masked frames. ``L_frozen``: a linear map of the student's last layer, onto the
  pseudo-classes by cross-entropy (metric ``loss/class``) or onto the teacher's features with
  ``L_reg``'s error (metric ``loss/frozen``), on all frames (``frozen_frames="all"``, the
  default) or on the masked ones only (``"masked"``; on the visible frames the teacher's
  target is nearly a function of the student's own input, so that part is easy).

A branch whose weight is 0 is not built (no head, no teacher, no work): ``class_weight=0`` is
the EMA-only (data2vec-like) variant; it leaves the student's last context layer without a
gradient (the regression reads the penultimate), so under DDP it needs
``trainer.find_unused_parameters=true`` and its useful features are ``context.-2``.

Checkpoints carry the EMA teacher, the heads, the mask vector and the projection (the
objective's ``state_dict``); the frozen teacher is recorded by path and SHA-256 in
:meth:`TriNet.extra_state` and verified on resume, never copied.

Collapse watch: :meth:`TriNet.diagnostic_features` hands the trainer the last batch's
predictions, targets, student layers and class assignments (``ssl_speech.train.diagnostics``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_speech.data.batch import Batch
from ssl_speech.nn.masking import SpanMasker
from ssl_speech.nn.norms import instance_norm_over_time
from ssl_speech.objectives.base import Objective, ObjectiveOutput, scalar
from ssl_speech.objectives.ema import EMATeacher, LinearMomentumSchedule
from ssl_speech.objectives.frozen_teacher import FrozenTeacher

# What the student learns from the frozen teacher: its pseudo-classes or its feature vectors.
FROZEN_TARGETS = ("classes", "features")
# Which frames the frozen branch's loss covers.
FROZEN_FRAMES = ("all", "masked")


def layer_average_target(layers: list[Tensor], top_k: int) -> Tensor:
    """Mean of the ``top_k`` layers below the last, each instance-normalised over time.

    ``layers``: ``L`` tensors ``(B, T, H)`` (a context network's ``forward_layers``), ``L >
    top_k``. Returns ``(B, T, H)`` float32.
    """
    if not 1 <= top_k < len(layers):
        raise ValueError(
            f"the target averages top_k={top_k} layers below the final one; the network has "
            f"{len(layers)} layers, so top_k must be in [1, {len(layers) - 1}]"
        )
    chosen = layers[-1 - top_k : -1]
    return torch.stack([instance_norm_over_time(x) for x in chosen]).mean(dim=0)


def masked_regression_loss(
    prediction: Tensor, target: Tensor, mask: Tensor, smooth_l1_beta: float | None = None
) -> Tensor:
    """Mean over masked frames of ``Σ_c ℓ(prediction − target) / √H``.

    ``ℓ`` is the squared error, or smooth-L1 with ``smooth_l1_beta`` when it is set (> 0).
    ``prediction``, ``target``: ``(B, T, H)``; ``mask``: ``(B, T)`` bool. Computed on every frame
    and weighted by the mask (no data-dependent shapes, so no host sync); 0 with the graph
    intact when nothing is masked.
    """
    prediction, target = prediction.float(), target.float()
    if smooth_l1_beta:
        per = F.smooth_l1_loss(prediction, target, reduction="none", beta=smooth_l1_beta)
    else:
        per = (prediction - target).square()
    per_frame = per.sum(dim=-1) / math.sqrt(prediction.shape[-1])
    weight = mask.to(per_frame.dtype)
    return (per_frame * weight).sum() / weight.sum().clamp_min(1.0)


class TriNet(Objective):
    """Student, EMA teacher and frozen teacher (see the module docstring).

    Args:
        context: a context network of the student's architecture (``model.context`` or one
            built from the same config); the EMA teacher keeps a copy and takes the student's
            weights at the first step. Required when ``regression_weight > 0``.
        teacher: the frozen teacher; ``None`` builds the log-mel one. Unused when
            ``class_weight == 0``.
        dim: latent size D of the encoder output (the mask vector's size).
        context_dim: context size H; default ``dim``.
        regression_weight: λ_r of the EMA-target regression (>= 0; 0 removes the EMA branch).
        class_weight: λ_c of the frozen branch's loss (>= 0; 0 removes the frozen branch).
        top_k: EMA-teacher layers averaged into the target (the final layer excluded).
        smooth_l1_beta: ``None`` or 0 for squared error, else smooth-L1 with this β.
        momentum: the EMA momentum schedule (default ``LinearMomentumSchedule()``: 0.999 →
            0.9999 over 30k updates).
        frozen_target: ``"classes"`` (cross-entropy onto the frozen teacher's pseudo-classes)
            or ``"features"`` (regression of its frame features, the paper's "pseudo target
            vectors": a linear map of the student's last layer, the same error as the EMA
            regression).
        frozen_frames: ``"all"`` frames or only the ``"masked"`` ones in the frozen loss.
        num_classes: C, pseudo-classes of the frozen teacher (>= 2; ``"classes"`` only).
        projection_seed: seed of the fixed random projection.
        mask_prob, mask_span, min_unmasked, min_spans: span masking
            (:class:`~ssl_speech.nn.masking.SpanMasker`).

    ``forward(model, batch)`` returns the loss with metrics ``loss/regression``,
    ``loss/class`` (unweighted), ``acc/class`` (the student's pseudo-class accuracy, also
    ``acc``), ``mask/fraction`` and ``teacher/momentum`` (the last update's τ, kept across a
    resume; ``τ(0)`` before the first update).
    """

    def __init__(
        self,
        context: nn.Module | None = None,
        teacher: FrozenTeacher | None = None,
        dim: int = 256,
        context_dim: int | None = None,
        regression_weight: float = 1.0,
        class_weight: float = 1.0,
        top_k: int = 3,
        smooth_l1_beta: float | None = None,
        momentum: LinearMomentumSchedule | None = None,
        frozen_target: str = "classes",
        frozen_frames: str = "all",
        num_classes: int = 32,
        projection_seed: int = 0,
        mask_prob: float = 0.065,
        mask_span: int = 10,
        min_unmasked: int = 10,
        min_spans: int = 1,
    ) -> None:
        super().__init__()
        for name, value in (("regression_weight", regression_weight),
                            ("class_weight", class_weight)):
            if value < 0:
                raise ValueError(f"TriNet {name} must be >= 0 (0 removes the branch), got {value}")
        if regression_weight == 0 and class_weight == 0:
            raise ValueError("TriNet: regression_weight and class_weight are both 0; enable at "
                             "least one branch")
        if dim < 1:
            raise ValueError(f"TriNet dim must be >= 1, got {dim}")
        if top_k < 1:
            raise ValueError(f"TriNet top_k must be >= 1, got {top_k}")
        if num_classes < 2:
            raise ValueError(f"TriNet num_classes must be >= 2, got {num_classes}")
        if frozen_target not in FROZEN_TARGETS:
            raise ValueError(f"TriNet frozen_target must be one of {FROZEN_TARGETS}, got "
                             f"{frozen_target!r}")
        if frozen_frames not in FROZEN_FRAMES:
            raise ValueError(f"TriNet frozen_frames must be one of {FROZEN_FRAMES}, got "
                             f"{frozen_frames!r}")
        if smooth_l1_beta is not None and smooth_l1_beta < 0:
            raise ValueError(f"TriNet smooth_l1_beta must be >= 0 or null, got {smooth_l1_beta}")
        if regression_weight > 0 and mask_prob <= 0:
            raise ValueError(f"TriNet mask_prob must be > 0 for the regression, got {mask_prob}")
        self.dim = dim
        self.context_dim = dim if context_dim is None else context_dim
        self.regression_weight = float(regression_weight)
        self.class_weight = float(class_weight)
        self.top_k = top_k
        self.smooth_l1_beta = smooth_l1_beta
        self.num_classes = num_classes
        self.frozen_target = frozen_target
        self.frozen_frames = frozen_frames
        self.momentum = momentum if momentum is not None else LinearMomentumSchedule()
        self.masker = SpanMasker(dim, mask_prob, mask_span, min_unmasked, min_spans)
        H = self.context_dim
        self.ema: EMATeacher | None = None
        self.regression_head: nn.Linear | None = None
        if regression_weight > 0:
            if context is None:
                raise ValueError("TriNet: the EMA branch (regression_weight > 0) needs context, "
                                 "a network of the student's context architecture")
            if getattr(context, "dim", H) != H:
                raise ValueError(f"TriNet: context dim {context.dim} != context_dim {H}")
            self.ema = EMATeacher(context)
            self.regression_head = nn.Linear(H, H)
        # A plain attribute, not a submodule: never trained nor copied into checkpoints.
        self.teacher: FrozenTeacher | None = None
        self.class_head: nn.Linear | None = None
        self.feature_head: nn.Linear | None = None
        if class_weight > 0:
            self.teacher = teacher if teacher is not None else FrozenTeacher()
        if self.teacher is not None and frozen_target == "features":
            self.feature_head = nn.Linear(H, self.teacher.dim)
        elif self.teacher is not None:
            generator = torch.Generator().manual_seed(projection_seed)
            projection = torch.randn(num_classes, self.teacher.dim, generator=generator)
            # Unit rows: no class wins the argmax just by a larger norm.
            self.register_buffer("projection", projection / projection.norm(dim=1, keepdim=True))
            self.class_head = nn.Linear(H, num_classes)
        self.last_momentum = self.momentum(0)
        self._last: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ teachers
    def update_teacher(self, student: nn.Module, step: int) -> float:
        """Move the EMA teacher towards ``student`` (the model's context) with ``τ(step)``.

        ``step``: optimizer updates done, this one included. Returns τ.
        """
        if self.ema is None:
            raise RuntimeError("TriNet.update_teacher: the EMA branch is off "
                               "(regression_weight=0)")
        if not self.ema.initialized:
            self.ema.copy_from(student)
        self.last_momentum = self.momentum(step)
        self.ema.update(student, self.last_momentum)
        return self.last_momentum

    def after_optimizer_step(self, model: nn.Module, step: int) -> None:
        """The trainer's post-update hook: the EMA update."""
        if self.ema is not None:
            self.update_teacher(model.context, step)

    def ema_target(self, z: Tensor) -> Tensor:
        """The EMA teacher's target for unmasked latents ``z`` ``(B, T, D)``: ``(B, T, H)``."""
        if self.ema is None:
            raise RuntimeError("TriNet.ema_target: the EMA branch is off (regression_weight=0)")
        return layer_average_target(self.ema.forward_layers(z.detach()), self.top_k)

    @torch.no_grad()
    def pseudo_classes(self, wav: Tensor, hop: int, num_frames: int) -> Tensor:
        """The frozen teacher's class per student frame: ``(B, num_frames)`` long."""
        if self.teacher is None:
            raise RuntimeError("TriNet.pseudo_classes: the frozen branch is off (class_weight=0)")
        features = self.teacher.frames(wav, hop, num_frames)  # (B, T, F) float32
        return (features @ self.projection.float().T).argmax(dim=-1)

    # ------------------------------------------------------------------ state
    def extra_state(self) -> dict:
        """The frozen teacher's record (path and hash, or the log-mel settings) and the last
        EMA update's momentum (so a resumed run logs the τ an uninterrupted one would)."""
        state: dict = {}
        if self.ema is not None:
            state["momentum"] = float(self.last_momentum)
        if self.teacher is not None:
            state["frozen_teacher"] = self.teacher.record()
        return state

    def load_extra_state(self, state: dict) -> None:
        """Restore the last momentum; check that a resumed run's frozen teacher is the one
        this objective loaded."""
        if self.ema is not None and "momentum" in state:
            self.last_momentum = float(state["momentum"])
        record = state.get("frozen_teacher")
        if self.teacher is None:
            if record is not None:
                raise ValueError(f"the run being resumed has a frozen teacher ({record}); this "
                                 "config has none (class_weight=0)")
            return
        if record is None:
            raise ValueError("the run being resumed records no frozen teacher; this config has "
                             "one (class_weight > 0)")
        self.teacher.verify(record)

    # ------------------------------------------------------------------ loss
    def _check(self, model: nn.Module, z: Tensor) -> None:
        context = model.context
        layers = int(getattr(context, "num_layers", 1))
        need = 2 if self.ema is not None else 1
        if self.ema is not None:
            need = max(need, self.top_k + 1)
        if layers < need:
            raise ValueError(
                f"TriNet needs a context network of at least {need} layers (its penultimate "
                f"layer, and top_k={self.top_k} teacher layers below the final one); "
                f"{type(context).__name__} has {layers}: use context=bitransformer or lower "
                "objective.top_k"
            )
        if z.shape[-1] != self.dim or context.dim != self.context_dim:
            raise ValueError(
                f"TriNet expects z (..., {self.dim}) and a context of dim {self.context_dim}, "
                f"got {tuple(z.shape)} and {context.dim}; set dim and context_dim"
            )
        frames = self.masker.span + self.masker.min_unmasked
        if z.shape[1] < frames:
            hop = int(model.encoder.hop)
            raise ValueError(
                f"TriNet: windows of {z.shape[1]} frames are too short for the masking (span "
                f"{self.masker.span} + min_unmasked {self.masker.min_unmasked} frames): use "
                f"data.window >= {frames * hop}"
            )

    def forward(self, model: nn.Module, batch: Batch) -> ObjectiveOutput:
        wav = batch.wav
        z = model.encoder(wav)  # (B, T, D)
        self._check(model, z)
        if self.ema is not None and not self.ema.initialized:
            self.ema.copy_from(model.context)
        masked = self.masker(z)
        layers = model.context.forward_layers(masked.x)  # L × (B, T, H)
        loss = z.new_zeros((), dtype=torch.float32)
        metrics: dict[str, Tensor] = {"mask/fraction": masked.mask.float().mean()}
        last: dict[str, Tensor] = {"mask": masked.mask}
        if len(layers) > 1:
            last["penultimate"] = layers[-2].detach()
        if self.ema is not None:
            target = self.ema_target(z)
            prediction = self.regression_head(layers[-2])
            regression = masked_regression_loss(prediction, target, masked.mask,
                                                self.smooth_l1_beta)
            loss = loss + self.regression_weight * regression
            metrics["loss/regression"] = regression
            metrics["teacher/momentum"] = scalar(self.last_momentum, like=loss)
            last.update(prediction=prediction.detach(), target=target)
        if self.teacher is not None:
            frozen, frozen_metrics, frozen_last = self._frozen_branch(
                wav, int(model.encoder.hop), layers[-1], masked.mask)
            loss = loss + self.class_weight * frozen
            metrics.update(frozen_metrics)
            last.update(frozen_last)
        self._last = last
        return ObjectiveOutput(loss, metrics)

    def _frozen_branch(
        self, wav: Tensor, hop: int, top: Tensor, mask: Tensor
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """The frozen branch's loss on the student's last layer ``top (B, T, H)``, its metrics
        and what the collapse watch keeps; ``mask (B, T)`` the masked frames."""
        frames = mask if self.frozen_frames == "masked" else None
        if self.feature_head is not None:
            target = self.teacher.frames(wav, hop, top.shape[1])  # (B, T, F) float32
            prediction = self.feature_head(top)
            weight = frames if frames is not None else torch.ones_like(mask)
            regression = masked_regression_loss(prediction, target, weight, self.smooth_l1_beta)
            keep = {"last": top.detach(), "frozen_prediction": prediction.detach(),
                    "frozen_target": target, "frozen_mask": weight}
            return regression, {"loss/frozen": regression}, keep
        classes = self.pseudo_classes(wav, hop, top.shape[1])  # (B, T)
        logits = self.class_head(top)  # (B, T, C)
        if frames is None:
            cross_entropy = F.cross_entropy(logits.flatten(0, 1).float(), classes.flatten())
            accuracy = (logits.detach().argmax(dim=-1) == classes).float().mean()
        else:  # weighted by the mask: no data-dependent shapes, no host sync
            weight = frames.flatten().float()
            count = weight.sum().clamp_min(1.0)
            per_frame = F.cross_entropy(logits.flatten(0, 1).float(), classes.flatten(),
                                        reduction="none")
            cross_entropy = (per_frame * weight).sum() / count
            hits = (logits.detach().argmax(dim=-1) == classes).flatten().float()
            accuracy = (hits * weight).sum() / count
        metrics = {"loss/class": cross_entropy, "acc/class": accuracy, "acc": accuracy}
        return cross_entropy, metrics, {"last": top.detach(), "classes": classes,
                                        "logits": logits.detach()}

    def diagnostic_features(self) -> dict[str, Tensor]:
        """The last batch's frames for the collapse watch (``ssl_speech.train.diagnostics``).

        ``predictions`` and ``targets`` ``(N, H)`` (masked frames), ``penultimate`` and
        ``last`` student layers ``(B·T, H)``, ``pseudo_classes`` and ``predicted_classes``
        ``(B·T,)`` (or, with ``frozen_target="features"``, ``frozen_predictions`` and
        ``frozen_targets`` ``(N, F)`` on the frames the branch trains on); only the active
        branches' entries. Empty before the first forward.
        """
        last = self._last
        if not last:
            return {}
        out = {}
        if "penultimate" in last:
            out["penultimate"] = last["penultimate"].flatten(0, 1)
        if "prediction" in last:
            mask = last["mask"]
            out["predictions"] = last["prediction"][mask]
            out["targets"] = last["target"][mask]
        if "classes" in last:
            out["last"] = last["last"].flatten(0, 1)
            out["pseudo_classes"] = last["classes"].flatten()
            out["predicted_classes"] = last["logits"].argmax(dim=-1).flatten()
        if "frozen_prediction" in last:
            out["last"] = last["last"].flatten(0, 1)
            chosen = last["frozen_mask"]
            out["frozen_predictions"] = last["frozen_prediction"][chosen]
            out["frozen_targets"] = last["frozen_target"][chosen]
        return out
