"""Training a probe on frozen features: standardisation, the classifier, the stopping rule.

Shared by the phone probe (rows are frames) and the speaker probe (rows are pooled
utterances). Rows come from a :class:`~ssl_speech.eval.frame_store.FrameTable`, gathered one
shuffled minibatch at a time, so the same loop trains from memory or from a memory-mapped
store with the same result.

Two ways to stop:

- a fixed number of epochs (CPC_audio's protocol: 10 epochs of Adam at 2e-4);
- at convergence: rows of held-out utterances of the training split are scored after every
  epoch, and training stops once their accuracy has not improved by ``min_delta`` for
  ``patience`` epochs (or at ``epochs``); the weights of the best epoch are kept. Together with
  the per-dimension standardisation this makes the outcome independent of the features' scale
  and offset, so feature sets are compared each at its best.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from ssl_speech.eval.frame_store import ArrayFrames, FrameTable, row_moments

IGNORE_INDEX = -100


class Standardize(nn.Module):
    """Fixed per-dimension affine map ``(x - mean) / std``: ``(N, D) -> (N, D)``."""

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("std", std.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    @classmethod
    def fit(cls, x: Tensor, min_std: float = 1e-5) -> Standardize:
        """From the rows of ``x`` ``(N, D)``; constant dimensions get ``min_std``."""
        table = ArrayFrames(x.detach().cpu().numpy(), np.zeros(x.shape[0], dtype=np.int64))
        return cls.of_rows(table, np.arange(x.shape[0]), min_std)

    @classmethod
    def of_rows(cls, table: FrameTable, index: np.ndarray, min_std: float = 1e-5,
                ) -> Standardize:
        """From the rows ``index`` of ``table``; constant dimensions get ``min_std``."""
        mean, std = row_moments(table, index)
        return cls(torch.from_numpy(mean).float(),
                   torch.from_numpy(std).float().clamp_min(min_std))


def build_probe(
    dim: int, num_classes: int, hidden: int | None = None, standardize: Standardize | None = None
) -> nn.Sequential:
    """``(N, dim) -> (N, num_classes)`` logits: [standardise], linear or linear-ReLU-linear."""
    if dim < 1 or num_classes < 2:
        raise ValueError(f"need dim >= 1 and num_classes >= 2, got {dim} and {num_classes}")
    if hidden is not None and hidden < 1:
        raise ValueError(f"hidden must be None (linear probe) or >= 1 units, got {hidden}")
    layers: list[nn.Module] = [] if standardize is None else [standardize]
    if hidden is None:
        layers.append(nn.Linear(dim, num_classes))
    else:
        layers += [nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)]
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class Stopping:
    """Stop when the held-out accuracy has not risen by ``min_delta`` for ``patience`` epochs."""

    patience: int = 5
    min_delta: float = 1e-3

    def __post_init__(self) -> None:
        if self.patience < 1 or self.min_delta < 0:
            raise ValueError(f"Stopping needs patience >= 1 and min_delta >= 0, got "
                             f"{self.patience} and {self.min_delta}")


@dataclass
class FitHistory:
    """What training did: per-epoch loss (and held-out accuracy), where it stopped.

    Attributes:
        loss: mean training cross-entropy of each epoch.
        validation: held-out accuracy after each epoch (empty without a held-out part).
        epochs: epochs run.
        best_epoch: 1-based epoch whose weights were kept (the last one without held-out part).
        converged: the stopping rule fired before the epoch limit (``False`` for a fixed
            schedule, whose convergence is not checked).
    """

    loss: list[float] = field(default_factory=list)
    validation: list[float] = field(default_factory=list)
    epochs: int = 0
    best_epoch: int = 0
    converged: bool = False


@torch.no_grad()
def _accuracy(model: nn.Module, table: FrameTable, index: np.ndarray, device: torch.device,
              batch_size: int = 65536) -> float:
    correct = 0
    for start in range(0, len(index), batch_size):
        idx = index[start : start + batch_size]
        logits = model(torch.from_numpy(table.rows(idx)).to(device))
        target = torch.from_numpy(table.labels[idx]).to(device)
        correct += int((logits.argmax(-1) == target).sum())
    return correct / max(len(index), 1)


def fit_table(
    table: FrameTable,
    num_classes: int,
    train_index: np.ndarray,
    *,
    validation_index: np.ndarray | None = None,
    stopping: Stopping | None = None,
    hidden: int | None = None,
    standardize: bool = True,
    epochs: int = 10,
    lr: float = 2e-4,
    batch_size: int = 1024,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    desc: str = "probe",
) -> tuple[nn.Sequential, FitHistory]:
    """Train a probe on rows ``train_index`` of ``table``; cross-entropy, Adam, shuffled rows.

    Args:
        table: rows and labels (every label of ``train_index`` in ``[0, num_classes)``).
        train_index: ``(N,)`` rows to train on; the standardisation is taken from them.
        validation_index, stopping: held-out rows and the rule that stops on their accuracy;
            without them the probe trains exactly ``epochs`` epochs.
        epochs: the epoch limit (the fixed count without a stopping rule).

    Returns:
        The probe in eval mode on ``device`` (the best epoch's weights under a stopping rule)
        and its :class:`FitHistory`. The global RNG is left untouched: initialisation and
        shuffling use ``seed`` only.
    """
    if epochs < 1 or not lr > 0 or batch_size < 1:
        raise ValueError(
            f"need epochs >= 1, lr > 0 and batch_size >= 1, got {epochs}, {lr}, {batch_size}"
        )
    if len(train_index) == 0:
        raise ValueError("no labelled training rows: every target is -100")
    if (stopping is None) != (validation_index is None or len(validation_index) == 0):
        raise ValueError("a stopping rule needs held-out rows, and held-out rows a stopping rule")
    device = torch.device(device)
    norm = Standardize.of_rows(table, train_index) if standardize else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_probe(table.dim, num_classes, hidden, norm)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    history = FitHistory()
    best_state, best = None, -1.0
    # 32-bit row numbers where they fit: the shuffled order is the largest per-frame array
    train_index = np.asarray(train_index, dtype=np.int32 if len(table) < 2**31 else np.int64)
    for epoch in tqdm(range(1, epochs + 1), desc=desc, disable=not progress):
        # the same permutation as int64 would give, at half the memory
        perm = torch.randperm(len(train_index), generator=generator, dtype=torch.int32)
        order = train_index[perm.numpy()]
        del perm
        total = torch.zeros((), device=device)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            x = torch.from_numpy(table.rows(idx)).to(device)
            y = torch.from_numpy(table.labels[idx]).to(device)
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(idx)
        history.loss.append(total.item() / len(order))  # one host sync per epoch
        history.epochs = epoch
        if stopping is None:
            continue
        model.eval()
        accuracy = _accuracy(model, table, validation_index, device)
        model.train()
        history.validation.append(accuracy)
        if accuracy > best + stopping.min_delta or best_state is None:
            best, history.best_epoch = max(best, accuracy), epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - history.best_epoch >= stopping.patience:
            history.converged = True
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        history.best_epoch = history.epochs
    return model.eval(), history


def fit_probe(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    *,
    hidden: int | None = None,
    standardize: bool = True,
    epochs: int = 10,
    lr: float = 2e-4,
    batch_size: int = 1024,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    desc: str = "probe",
) -> tuple[nn.Sequential, list[float]]:
    """:func:`fit_table` for rows in memory, a fixed number of epochs.

    Args:
        x: ``(N, D)`` float inputs (frames or pooled utterances).
        y: ``(N,)`` long targets in ``[0, num_classes)``; ``-100`` rows are ignored.

    Returns:
        The trained probe and the mean training loss of each epoch.
    """
    table = ArrayFrames(x.detach().cpu().numpy(), y.detach().cpu().numpy())
    keep = np.flatnonzero(table.labels != IGNORE_INDEX)
    model, history = fit_table(table, num_classes, keep, hidden=hidden, standardize=standardize,
                               epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                               device=device, progress=progress, desc=desc)
    return model, history.loss


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 65536) -> Tensor:
    """Argmax class of each row of ``x`` ``(N, D)`` -> ``(N,)`` long on the CPU."""
    device = next(model.parameters()).device
    out = [model(x[i : i + batch_size].to(device)).argmax(-1).cpu()
           for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


@torch.no_grad()
def predict_rows(model: nn.Module, table: FrameTable, index: np.ndarray,
                 batch_size: int = 65536) -> np.ndarray:
    """Argmax class of rows ``index`` of ``table`` -> ``(len(index),)`` int64."""
    device = next(model.parameters()).device
    out = [model(torch.from_numpy(table.rows(index[i : i + batch_size])).to(device))
           .argmax(-1).cpu().numpy() for i in range(0, len(index), batch_size)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
