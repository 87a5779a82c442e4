"""The predictive core shared by CPC, aligned CPC and RPC.

The three objectives share everything but their loss: from the causal context ``c`` a set of
prediction heads emits K predictions per anchor frame; each prediction is scored, ``s(p, z) =
scale · p·z``, against the next W latents of its own sequence (the *window*: CPC's positives are
its diagonal, aligned CPC scores every pair) and against N negatives drawn once per anchor and
shared by all predictions. :class:`PredictiveCore` owns that part: the heads
(:func:`~ssl_speech.nn.heads.make_heads`), the constructor validation, the anchor count, the
negative draw (:mod:`ssl_speech.objectives.negatives`, optionally from the latents of every DDP
rank) and the scores (:mod:`ssl_speech.objectives.scores`). Each objective composes one core and
keeps only its loss; its constructor forwards the options below to the core, so the objectives'
configs share these keys and their meaning.

Options (keyword arguments of every predictive objective, with these defaults):

- ``num_negatives`` (128): negatives N per anchor, shared by all predictions.
- ``head`` (``"linear"``): prediction heads, ``"linear"`` or ``"transformer"`` (one causal
  Transformer layer per prediction, CPC_audio's default).
- ``head_heads`` (8), ``head_ffn_dim`` (2048), ``dropout`` (0.0): attention heads, feed-forward
  size and dropout of the Transformer heads.
- ``negatives`` (``"batch"``): ``"batch"`` or ``"sequence"`` (see the negatives module).
- ``exclude_positive`` (False): never draw an anchor's window ``t+1 … t+horizon`` as its
  negatives.
- ``score_scale`` (``"1/sqrt(dim)"``): multiplies ``p·z``: a number, ``"1/dim"`` (CPC_audio's
  fixed temperature, slower to start) or ``"1/sqrt(dim)"``.
- ``score_method`` (``"dense"``): ``"dense"`` or ``"gather"`` (see the scores module).
- ``negatives_across_ranks`` (False): under DDP, draw batch-mode negatives from the latents of
  every rank (see the negatives module for the trade-off).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ssl_speech.data.batch import Batch
from ssl_speech.nn.heads import make_heads
from ssl_speech.objectives.negatives import check_mode, negative_pool, sample_negative_indices
from ssl_speech.objectives.scores import (
    check_features,
    check_method,
    count_anchors,
    resolve_score_scale,
    window_and_negative_scores,
)


def check_count(owner: str, name: str, value: int) -> int:
    """Validate an objective's count argument (``>= 1``) and return it."""
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner} {name} must be >= 1, got {value!r} (an integer)")
    return value


class PredictiveCore(nn.Module):
    """Heads, negatives and scores of a predictive objective.

    Args:
        owner: the objective's name, for error messages.
        dim: latent size D of the encoder output z.
        context_dim: context size H of c; ``None`` for ``dim``.
        num_predictions: predictions K per anchor (one head each).
        horizon: future frames each anchor needs (K for CPC and RPC, M for aligned CPC); the
            anchors are frames ``0 … T−horizon−1`` and ``exclude_positive`` removes this window.
        num_negatives, head, head_heads, head_ffn_dim, negatives, exclude_positive,
        score_scale, dropout, score_method, negatives_across_ranks: the shared options
            (module docstring).
    """

    def __init__(
        self,
        owner: str,
        dim: int,
        context_dim: int | None,
        num_predictions: int,
        horizon: int,
        num_negatives: int = 128,
        head: str = "linear",
        head_heads: int = 8,
        head_ffn_dim: int = 2048,
        negatives: str = "batch",
        exclude_positive: bool = False,
        score_scale: float | str | None = "1/sqrt(dim)",
        dropout: float = 0.0,
        score_method: str = "dense",
        negatives_across_ranks: bool = False,
    ) -> None:
        super().__init__()
        self.owner = owner
        self.dim = check_count(owner, "dim", dim)
        self.context_dim = dim if context_dim is None else check_count(owner, "context_dim",
                                                                       context_dim)
        self.num_predictions = check_count(owner, "num_predictions", num_predictions)
        self.horizon = check_count(owner, "horizon", horizon)
        self.num_negatives = check_count(owner, "num_negatives", num_negatives)
        self.negatives = check_mode(negatives)
        self.exclude_positive = bool(exclude_positive)
        self.score_scale = resolve_score_scale(score_scale, dim)
        self.score_method = check_method(score_method)
        self.negatives_across_ranks = bool(negatives_across_ranks)
        self.heads: nn.Module = make_heads(
            head, self.context_dim, dim, num_predictions, head_heads, head_ffn_dim, dropout
        )

    def encode(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
        """``z, c = model(batch.wav)``, validated, with the window long enough for an anchor
        (else the error names the window in samples, the model's hop and the fix)."""
        z, c = model(batch.wav)
        self.count_anchors(z, c, batch.wav.shape[-1], model.hop)
        return z, c

    def count_anchors(
        self, z: Tensor, c: Tensor, num_samples: int | None = None, hop: int | None = None
    ) -> int:
        """Validate ``z (B, T, D)`` and ``c (B, T, H)`` and return the anchors ``T − horizon``.

        ``num_samples`` (the window in samples) and ``hop`` (the encoder's samples per frame)
        only word the error when the window is too short.
        """
        check_features(z, c, self.dim, self.context_dim, self.owner)
        return count_anchors(z.shape[1], self.horizon, num_samples, hop)

    def sample_negatives(
        self, z: Tensor, num_anchors: int, pool_sequences: int | None = None, offset: int = 0
    ) -> Tensor:
        """Negative indices ``(B, A, N)`` for anchors ``0 … A−1``, into ``z.reshape(B·T, D)``
        or into a pool of ``pool_sequences`` sequences where ``z`` starts at ``offset``."""
        B, T = z.shape[:2]
        return sample_negative_indices(
            B,
            T,
            self.num_negatives,
            num_anchors,
            self.negatives,
            exclude_positive=self.exclude_positive,
            num_steps=self.horizon,
            device=z.device,
            pool_sequences=pool_sequences,
            sequence_offset=offset,
        )

    def scores(
        self,
        z: Tensor,
        c: Tensor,
        width: int,
        negative_index: Tensor | None = None,
        extra_predictions: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Scores of the predictions of anchors ``0 … A−1`` (``A = T − horizon``).

        Args:
            z: ``(B, T, D)`` latents (validated by :meth:`count_anchors`).
            c: ``(B, T, H)`` causal context.
            width: W future frames scored per anchor (``W <= horizon``).
            negative_index: ``(B, A, N)`` negatives to use instead of a fresh draw.
            extra_predictions: ``(B, A, E, D)`` predictions placed before the heads' K (aligned
                CPC's self-loop), or ``None``.

        Returns:
            ``window (B, A, E+K, W)`` with ``window[..., k, w] = s(p_{t,k}, z_{t+w+1})`` and
            ``negative (B, A, E+K, N)``, both float32.
        """
        A = z.shape[1] - self.horizon
        pool, offset = negative_pool(z, self.negatives_across_ranks)
        if negative_index is None:
            negative_index = self.sample_negatives(z, A, pool.shape[0], offset)
        # The heads are causal, so predicting from c[:, :A] equals heads(c)[:, :A].
        predictions = self.heads(c[:, :A])  # (B, A, K, D)
        if extra_predictions is not None:
            predictions = torch.cat([extra_predictions.to(predictions.dtype), predictions], 2)
        return window_and_negative_scores(
            predictions, z, negative_index, width, self.score_scale, self.score_method, pool
        )


def load_heads_of_older_checkpoints(
    state_dict: dict[str, Any], prefix: str, *args: Any
) -> None:
    """A load-state-dict pre-hook for an objective that keeps its core as ``core``.

    Checkpoints written before the core existed hold the heads as ``heads.*`` of the objective;
    this renames them ``core.heads.*`` so they still load.
    """
    old = prefix + "heads."
    for key in [k for k in state_dict if k.startswith(old)]:
        state_dict[prefix + "core.heads." + key[len(old):]] = state_dict.pop(key)
