"""How the probes are trained: the phone probe's protocols and the speaker probe's settings.

Two phone-probe protocols, each named in every figure it produces:

- ``converged`` (the default): features standardised per dimension with the training frames'
  mean and standard deviation; Adam at 2e-3 on minibatches of 1024 frames; 10 % of the training
  utterances held out, and training stops once their frame accuracy has not risen by 0.1 point
  for 5 epochs (at most 100 epochs), keeping the best epoch. Every feature set is then compared
  at its own convergence, whatever its scale: at a fixed short schedule the log-mel and MFCC
  probes are still learning when it ends, and the gap to a learned model looks larger than it
  is.
- ``cpc_audio``: CPC_audio's linear separability exactly — raw features, Adam at 2e-4, 10
  epochs, no held-out part. Comparable with published CPC_audio figures, not converged on small
  corpora.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from ssl_speech.eval.probe_training import Stopping
from ssl_speech.eval.speaker_probe import POOLINGS

PROTOCOLS = ("converged", "cpc_audio")


@dataclass(frozen=True)
class ProbeProtocol:
    """Phone-probe training settings; the defaults are the ``converged`` protocol.

    Attributes:
        name: the protocol's name in reports (``converged``, ``cpc_audio`` or your own).
        epochs: the epoch limit under the stopping rule, else the fixed number of epochs.
        lr: Adam learning rate.
        batch_size: frames per step.
        standardize: standardise each feature dimension with the training frames' statistics.
        validation_fraction: training utterances held out for the stopping rule; ``None``
            trains exactly ``epochs`` epochs (then ``patience`` is ``None`` too).
        patience, min_delta: stop after ``patience`` epochs without a rise of ``min_delta`` in
            the held-out accuracy.
        hidden: ``None`` for the linear probe, else the width of one ReLU hidden layer.
        seed: initialisation, shuffling, held-out draw and ``max_train_utterances`` draw.
        max_train_utterances: train on a random subset of the train list; ``None`` uses all.
    """

    name: str = "converged"
    epochs: int = 100
    lr: float = 2e-3
    batch_size: int = 1024
    standardize: bool = True
    validation_fraction: float | None = 0.1
    patience: int | None = 5
    min_delta: float = 1e-3
    hidden: int | None = None
    seed: int = 0
    max_train_utterances: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or not self.lr > 0 or self.batch_size < 1:
            raise ValueError(f"ProbeProtocol needs epochs >= 1, lr > 0 and batch_size >= 1, got "
                             f"{self.epochs}, {self.lr}, {self.batch_size}")
        if self.hidden is not None and self.hidden < 1:
            raise ValueError(f"hidden must be None (linear probe) or >= 1, got {self.hidden}")
        if self.max_train_utterances is not None and self.max_train_utterances < 1:
            raise ValueError(f"max_train_utterances must be None or >= 1, got "
                             f"{self.max_train_utterances}")
        if (self.validation_fraction is None) != (self.patience is None):
            raise ValueError("validation_fraction and patience go together: both (stop at "
                             "convergence) or both None (a fixed number of epochs)")
        if self.validation_fraction is not None and not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got "
                             f"{self.validation_fraction}")
        if self.patience is not None:
            Stopping(self.patience, self.min_delta)  # validates them

    @classmethod
    def converged(cls, **changes: Any) -> ProbeProtocol:
        """The default protocol (module docstring), with ``changes``."""
        return cls(**changes)

    @classmethod
    def cpc_audio(cls, **changes: Any) -> ProbeProtocol:
        """CPC_audio's linear separability: raw features, Adam 2e-4, 10 epochs, no stopping."""
        return replace(cls(name="cpc_audio", epochs=10, lr=2e-4, standardize=False,
                           validation_fraction=None, patience=None), **changes)

    @classmethod
    def named(cls, name: str, **changes: Any) -> ProbeProtocol:
        """``converged`` or ``cpc_audio``, with ``changes`` (``None`` values ignored)."""
        if name not in PROTOCOLS:
            raise ValueError(f"unknown probe protocol {name!r}; choose one of {PROTOCOLS}")
        changes = {k: v for k, v in changes.items() if v is not None}
        return getattr(cls, name)(**changes)

    @property
    def stopping(self) -> Stopping | None:
        return None if self.patience is None else Stopping(self.patience, self.min_delta)

    def describe(self) -> str:
        """One line for reports: the name and what it means."""
        probe = "linear" if self.hidden is None else f"one hidden layer of {self.hidden}"
        norm = "standardised" if self.standardize else "raw"
        if self.stopping is None:
            schedule = f"{self.epochs} epochs"
        else:
            schedule = (f"stop after {self.patience} epochs without +{100 * self.min_delta:g} "
                        f"points on {100 * self.validation_fraction:g} % held-out training "
                        f"utterances, at most {self.epochs} epochs")
        return (f"{self.name} ({probe}, {norm} features, Adam {self.lr:g}, batch "
                f"{self.batch_size}, {schedule})")

    def training_arguments(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~ssl_speech.eval.phone_probe.train_phone_probe`."""
        return {"hidden": self.hidden, "epochs": self.epochs, "lr": self.lr,
                "batch_size": self.batch_size, "standardize": self.standardize,
                "seed": self.seed, "validation_fraction": self.validation_fraction,
                "stopping": self.stopping, "protocol": self.name}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SpeakerProtocol:
    """Speaker-probe settings: pooling, held-out fraction of each speaker, Adam, epochs."""

    pooling: str = "mean"
    test_fraction: float = 0.2
    epochs: int = 50
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.epochs < 1 or not self.lr > 0 or self.batch_size < 1:
            raise ValueError(f"SpeakerProtocol needs epochs >= 1, lr > 0 and batch_size >= 1, "
                             f"got {self.epochs}, {self.lr}, {self.batch_size}")


CONVERGED = ProbeProtocol()
"""The default phone-probe protocol."""
CPC_AUDIO = ProbeProtocol.cpc_audio()
"""CPC_audio's linear separability, exactly."""
SPEAKER = SpeakerProtocol()
"""The default speaker-probe settings."""
