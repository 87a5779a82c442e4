"""Regression onto a fixed function of the downstream class: the class-function control of
the pseudo-label study (:mod:`ssl_speech.studies.pseudo_label_study`) as a training target.

A pseudo-label that is a function of the downstream class is the most useful one the utility
estimator can score (:mod:`ssl_speech.eval.utility`); training on it shows what the estimate's
end of the scale is worth on the probe.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ssl_speech.data.batch import Batch
from ssl_speech.objectives.base import Objective, ObjectiveOutput
from ssl_speech.objectives.pseudo_label_regression import PseudoLabelRegression

CLASSES = ("phone", "speaker")


class ClassFunctionRegression(Objective):
    """Regress a fixed function of the downstream class: the class-function control as a target.

    Each frame's target is a standard normal value drawn once per class (seeded by the class
    index and ``seed``), the class being the frame's phone (``batch.phones``) or the window's
    speaker (``batch.speaker``); unlabelled frames (-100) are left out. Loss and metrics are
    those of :class:`PseudoLabelRegression` (a 1-dimensional target), whose head and running
    standardisation it uses.
    """

    def __init__(self, classes: str = "phone", context_dim: int = 256, hidden: int | None = None,
                 loss: str = "mse", momentum: float = 0.01, seed: int = 0,
                 label: str = "noise") -> None:
        super().__init__()
        if classes not in CLASSES:
            raise ValueError(f"ClassFunctionRegression classes must be one of {CLASSES}, got "
                             f"{classes!r} (objective.classes)")
        del label  # the pseudo-label config's key; the target here is the class function
        self.classes, self.seed = classes, seed
        self.regression = PseudoLabelRegression("noise", context_dim, hidden, loss, momentum)

    def class_values(self, labels: Tensor) -> Tensor:
        """The fixed value of each class in ``labels`` (any shape), NaN where it is -100."""
        values = torch.full(labels.shape, float("nan"))
        for c in labels.unique().tolist():
            if c >= 0:
                g = torch.Generator().manual_seed((self.seed * 1_000_003 + int(c)) % (1 << 62))
                values[labels.cpu() == c] = torch.randn(1, generator=g).item()
        return values.to(labels.device)

    def forward(self, model: nn.Module, batch: Batch) -> ObjectiveOutput:
        _, c = model(batch.wav)
        if self.classes == "speaker":
            labels = batch.speaker[:, None].expand(-1, c.shape[1])
        elif batch.phones is None:
            raise ValueError("ClassFunctionRegression(classes='phone') needs frame labels in the "
                             "batch (batch.phones): the training loader must be built with the "
                             "corpus alignments")
        else:
            labels = batch.phones
        if labels.shape[1] != c.shape[1]:
            raise ValueError(f"{labels.shape[1]} label frames but the model gives {c.shape[1]}; "
                             "the class-function control needs a 10 ms encoder (hop 160)")
        return self.regression.compute(c, self.class_values(labels)[..., None].to(c.device))
