"""Linear phone probe: frame classification on frozen features (CPC_audio protocol).

The linear-separability evaluation of Rivière et al., "Unsupervised pretraining transfers well
across languages" (ICASSP 2020), as in CPC_audio: a single linear layer on frozen features,
frame-level cross-entropy against 10 ms phone labels, Adam (lr 2e-4), a fixed number of epochs,
frame accuracy on held-out utterances. ``hidden=H`` gives the one-hidden-layer (ReLU) variant.

What our version changes, and why:

- Features are standardised with the training frames' per-dimension mean and standard deviation
  (a fixed first layer of the probe, so the probe applies to raw features). CPC_audio does not;
  without it the outcome of a fixed, short schedule depends on the feature scale (log-mel values
  around -10, context outputs around 0.1), so two feature sets would not be compared on equal
  terms. ``standardize=False`` restores the original protocol.
- The probe sees shuffled minibatches of frames instead of windows of consecutive frames: a
  frame classifier has no temporal context, so only the minibatch composition changes, and the
  whole epoch is one vectorised gather per step.

Labels follow CPC_audio's format (one integer per 10 ms frame, label ``i`` covering samples
``[160 i, 160 i + 160)`` at 16 kHz). Features at another frame step are matched to them by
:func:`align_features_and_labels` before training; frames labelled ``-100`` and frames whose
label never occurs in the training set are ignored and counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

IGNORE_INDEX = -100
_SHOWN = 5  # utterance ids quoted in an error message


# --------------------------------------------------------------------------------------------
# Frame-step alignment
# --------------------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:g} ms"


def _quote(ids: Sequence[str]) -> str:
    shown = ", ".join(repr(u) for u in ids[:_SHOWN])
    return shown + (f", ... ({len(ids) - _SHOWN} more)" if len(ids) > _SHOWN else "")


def _step_ratio(frame_step: float, label_step: float) -> tuple[int, int]:
    """``(down, up)``: labels are subsampled by ``down`` or repeated ``up`` times (one is 1)."""
    if frame_step <= 0 or label_step <= 0:
        raise ValueError(
            f"frame_step and label_step must be > 0 seconds, got {frame_step} and {label_step}"
        )
    ratio = frame_step / label_step
    for value, as_down in ((ratio, True), (1.0 / ratio, False)):
        k = round(value)
        if k >= 1 and abs(value - k) < 1e-6 * k:
            return (k, 1) if as_down else (1, k)
    raise ValueError(
        f"frame_step {_ms(frame_step)} is not an integer multiple or divisor of the label step "
        f"{_ms(label_step)}; resample the features to a compatible step first"
    )


def _resample_labels(labels: np.ndarray, down: int, up: int) -> np.ndarray:
    # Coarser features: feature frame t spans label frames [down t, down t + down); take the
    # label at the centre of that span (index down t + down // 2, i.e. for 20 ms frames the
    # second 10 ms label, the one starting at the span's midpoint).
    if down > 1:
        return labels[down // 2 :: down]
    if up > 1:  # finer features: every label covers `up` feature frames
        return np.repeat(labels, up)
    return labels


def _diagnose(
    mismatched: list[tuple[str, int, int, int]], frame_step: float, label_step: float
) -> str:
    """A likely cause for count mismatches ``(utt, feature_frames, label_frames, resampled)``."""
    utt, n_feat, n_lab, _ = mismatched[0]
    offsets = sorted({feat - res for _, feat, _, res in mismatched})
    ratios = [lab / feat for _, feat, lab, _ in mismatched if feat > 0]
    implied = label_step * float(np.median(ratios)) if ratios else frame_step
    found = (
        f"features have {n_feat} frames but labels {n_lab} at {_ms(label_step)} (e.g. {utt!r}): "
        f"the features look like {_ms(implied)} frames while frame_step={frame_step:g} was given"
    )
    if abs(implied - frame_step) > 0.1 * frame_step:
        ratio = implied / label_step  # the feature step the counts suggest, in label frames
        for k, step in ((round(ratio), round(ratio) * label_step),
                        (round(1 / ratio), label_step / max(round(1 / ratio), 1))):
            if k >= 1 and abs(implied - step) <= 0.05 * step:
                return f"{found}: pass frame_step={step:g}"
    if len(offsets) == 1:
        return (
            f"off by {offsets[0]:+d} frames (features minus labels) in every affected utterance: "
            "check the encoder's frame offset (padding, receptive field), or raise "
            "tolerance_frames if this is expected"
        )
    if abs(implied - frame_step) > 0.1 * frame_step:
        return f"{found}: check frame_step and the encoder's total stride"
    return (
        f"offsets vary from {offsets[0]:+d} to {offsets[-1]:+d} frames: check that features and "
        "labels come from the same audio (utterance ids, trimming, sample rate)"
    )


def align_features_and_labels(
    features: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    frame_step: float,
    label_step: float = 0.01,
    tolerance_frames: int = 2,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Match per-utterance frame labels to features at ``frame_step``.

    Labels are resampled to the feature step (integer ratios only): for coarser features the
    label at the centre of each feature frame's nominal span is taken (see
    :func:`_resample_labels`), for finer features each label is repeated. Then, per utterance,
    the feature and label counts must agree within ``tolerance_frames``; the longer one is
    trimmed at the end.

    Args:
        features: ``{utt: (T, D)}`` features, ``T`` frames at ``frame_step`` seconds.
        labels: ``{utt: (L,)}`` integer labels, ``L`` frames at ``label_step`` seconds. May hold
            more utterances than ``features`` (an alignment file covers a whole corpus).
        frame_step: seconds per feature frame (0.01 for hop 160, 0.02 for hop 320 at 16 kHz).
        label_step: seconds per label frame (0.01 for CPC_audio alignments).
        tolerance_frames: largest count difference (in feature frames) trimmed silently.

    Returns:
        ``(features, labels)``: dicts over the ids of ``features``, in its order, with
        ``features[u].shape[0] == labels[u].shape[0]``.

    Raises:
        ValueError: a feature utterance without labels, or counts that differ by more than
            ``tolerance_frames`` (the message names the utterances, the counts and the likely
            cause).
    """
    if tolerance_frames < 0:
        raise ValueError(f"tolerance_frames must be >= 0, got {tolerance_frames}")
    down, up = _step_ratio(frame_step, label_step)
    missing = [u for u in features if u not in labels]
    if missing:
        example = next(iter(labels), None)
        raise ValueError(
            f"{len(missing)} of {len(features)} feature utterances have no labels: "
            f"{_quote(missing)}. Label ids look like {example!r}. Restrict the features to "
            "utterances with alignments, or fix the id format (e.g. file stems vs paths)"
        )
    out_features: dict[str, np.ndarray] = {}
    out_labels: dict[str, np.ndarray] = {}
    mismatched: list[tuple[str, int, int, int]] = []
    for utt, feats in features.items():
        feats = np.asarray(feats)
        lab = np.asarray(labels[utt])
        if feats.ndim != 2:
            raise ValueError(f"features of {utt!r} must be (frames, dim), got {feats.shape}")
        if lab.ndim != 1:
            raise ValueError(f"labels of {utt!r} must be (frames,), got {lab.shape}")
        res = _resample_labels(lab, down, up)
        if abs(feats.shape[0] - res.shape[0]) > tolerance_frames:
            mismatched.append((utt, feats.shape[0], lab.shape[0], res.shape[0]))
            continue
        n = min(feats.shape[0], res.shape[0])
        out_features[utt], out_labels[utt] = feats[:n], res[:n]
    if mismatched:
        details = "; ".join(
            f"{u!r}: {f} feature frames at {_ms(frame_step)} vs {lab} label frames at "
            f"{_ms(label_step)}" + (f" ({r} at the feature step)" if r != lab else "")
            for u, f, lab, r in mismatched[:_SHOWN]
        )
        raise ValueError(
            f"frame counts differ by more than tolerance_frames={tolerance_frames} in "
            f"{len(mismatched)} of {len(features)} utterances ({details}). Likely cause: "
            + _diagnose(mismatched, frame_step, label_step)
        )
    return out_features, out_labels


# --------------------------------------------------------------------------------------------
# The probe itself: shared with the speaker probe
# --------------------------------------------------------------------------------------------


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
        var, mean = torch.var_mean(x.float(), dim=0, correction=0)
        return cls(mean, var.sqrt().clamp_min(min_std))


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
    """Train a probe with cross-entropy on shuffled minibatches of rows, Adam, fixed epochs.

    Args:
        x: ``(N, D)`` float inputs (frames or pooled utterances).
        y: ``(N,)`` long targets in ``[0, num_classes)``; ``-100`` rows are ignored.

    Returns:
        The trained probe in eval mode on ``device``, and the mean training loss of each epoch.
        The global RNG is left untouched: initialisation and shuffling use ``seed`` only.
    """
    if epochs < 1 or lr <= 0 or batch_size < 1:
        raise ValueError(
            f"need epochs >= 1, lr > 0 and batch_size >= 1, got {epochs}, {lr}, {batch_size}"
        )
    keep = y != IGNORE_INDEX
    if not bool(keep.all()):  # avoid copying a large feature matrix when nothing is dropped
        x, y = x[keep], y[keep]
    if x.shape[0] == 0:
        raise ValueError("no labelled training rows: every target is -100")
    norm = Standardize.fit(x) if standardize else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_probe(x.shape[1], num_classes, hidden, norm)
    model.to(device).train()
    x, y = x.to(device), y.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    history: list[float] = []
    for _ in tqdm(range(epochs), desc=desc, disable=not progress):
        order = torch.randperm(x.shape[0], generator=generator).to(device)
        total = torch.zeros((), device=device)
        for start in range(0, x.shape[0], batch_size):
            idx = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * idx.shape[0]
        history.append(total.item() / x.shape[0])  # one host sync per epoch
    return model.eval(), history


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 65536) -> Tensor:
    """Argmax class of each row of ``x`` ``(N, D)`` -> ``(N,)`` long on the CPU."""
    device = next(model.parameters()).device
    out = [model(x[i : i + batch_size].to(device)).argmax(-1).cpu()
           for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


# --------------------------------------------------------------------------------------------
# Phone probe
# --------------------------------------------------------------------------------------------


@dataclass
class ProbeResult:
    """Frame accuracy of a phone probe on one held-out set.

    Attributes:
        accuracy: correct / ``num_frames``.
        num_frames: frames scored (labelled with a class seen in training).
        num_ignored: frames not scored: labelled ``-100`` or with a class absent from training.
        per_class: ``{class: accuracy}`` for every class present among the scored frames.
        confusion: ``(num_classes, num_classes)`` counts, rows true class, columns prediction.
        chance: accuracy of always predicting the most frequent training class.
        train_accuracy: frame accuracy on the training frames after training.
        train_frames: labelled training frames.
        epochs: training epochs.
        loss_history: mean training cross-entropy of each epoch.
        unseen_classes: labels of this set that never occur in training (their frames ignored).
    """

    accuracy: float
    num_frames: int
    num_ignored: int
    per_class: dict[int, float]
    confusion: np.ndarray
    chance: float
    train_accuracy: float
    train_frames: int
    epochs: int
    loss_history: list[float] = field(default_factory=list)
    unseen_classes: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, float | int]:
        """Scalars for logs and JSON (no confusion matrix)."""
        return {
            "accuracy": self.accuracy, "num_frames": self.num_frames,
            "num_ignored": self.num_ignored, "chance": self.chance,
            "train_accuracy": self.train_accuracy, "train_frames": self.train_frames,
            "epochs": self.epochs,
        }


def _stack(
    features: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], name: str
) -> tuple[Tensor, Tensor]:
    """Concatenate aligned utterances into ``(N, D)`` float32 and ``(N,)`` long."""
    if not features:
        raise ValueError(f"{name}: no utterances")
    missing = [u for u in features if u not in labels]
    if missing:
        raise ValueError(
            f"{name}: {len(missing)} utterances have features but no labels: {_quote(missing)}"
        )
    bad = [u for u in features if np.shape(features[u])[0] != np.shape(labels[u])[0]]
    if bad:
        u = bad[0]
        raise ValueError(
            f"{name}: {len(bad)} utterances have different feature and label counts (e.g. "
            f"{u!r}: {np.shape(features[u])[0]} vs {np.shape(labels[u])[0]}); pass frame_step "
            "(seconds per feature frame) to align them"
        )
    dims = {np.shape(f)[1] if np.ndim(f) == 2 else None for f in features.values()}
    if len(dims) != 1 or None in dims:
        raise ValueError(f"{name}: features must all be (frames, dim) with one dim, got {dims}")
    lab = np.concatenate([np.asarray(labels[u]) for u in features])
    if lab.size and not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"{name}: labels must be integers, got dtype {lab.dtype}")
    invalid = (lab < 0) & (lab != IGNORE_INDEX)
    if invalid.any():
        raise ValueError(
            f"{name}: labels must be >= 0 or {IGNORE_INDEX} (ignored), found "
            f"{sorted(set(lab[invalid].tolist()))[:_SHOWN]}"
        )
    x = np.concatenate([np.asarray(features[u], dtype=np.float32) for u in features])
    return torch.from_numpy(x), torch.from_numpy(lab.astype(np.int64))


def _score(
    model: nn.Module, x: Tensor, y: Tensor, seen: Tensor, num_classes: int
) -> tuple[np.ndarray, int, list[int]]:
    """Confusion counts over frames whose label is a seen class; ignored count; unseen labels."""
    in_range = (y >= 0) & (y < num_classes)
    valid = in_range.clone()
    valid[in_range] = seen[y[in_range]]
    unseen = sorted(set(y[(y >= 0) & ~valid].tolist()))
    pred = predict(model, x if bool(valid.all()) else x[valid])
    flat = y[valid] * num_classes + pred
    confusion = torch.bincount(flat, minlength=num_classes * num_classes)
    confusion = confusion.reshape(num_classes, num_classes).numpy()
    return confusion, int((~valid).sum()), unseen


def train_phone_probe(
    train_features: Mapping[str, np.ndarray],
    train_labels: Mapping[str, np.ndarray],
    test_sets: Mapping[str, tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]],
    num_classes: int | None = None,
    hidden: int | None = None,
    epochs: int = 10,
    lr: float = 2e-4,
    batch_size: int = 1024,
    standardize: bool = True,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    frame_step: float | None = None,
    label_step: float = 0.01,
    tolerance_frames: int = 2,
) -> dict[str, ProbeResult]:
    """Train a phone probe on frozen features and score it on held-out sets.

    Args:
        train_features: ``{utt: (T, D)}`` features.
        train_labels: ``{utt: (L,)}`` integer frame labels, ``-100`` where unknown. With
            ``frame_step=None`` they must already match the features frame for frame.
        test_sets: ``{name: (features, labels)}`` held-out sets in the same form, e.g.
            ``{"test": ..., "test_other_speakers": ...}``.
        num_classes: size of the label set; default: largest training label + 1.
        hidden: ``None`` for the linear probe, else the width of one ReLU hidden layer.
        epochs, lr, batch_size: Adam on shuffled minibatches of ``batch_size`` frames.
        standardize: standardise features with the training frames' mean and std.
        seed: initialisation and shuffling seed.
        device: where the probe trains (the features are moved there once).
        frame_step, label_step, tolerance_frames: when ``frame_step`` (seconds per feature
            frame) is given, every set first goes through :func:`align_features_and_labels`.

    Returns:
        ``{name: ProbeResult}`` for each test set.
    """
    if frame_step is not None:
        def align(feats: Mapping[str, np.ndarray], labs: Mapping[str, np.ndarray]):
            return align_features_and_labels(feats, labs, frame_step, label_step,
                                             tolerance_frames)
        train_features, train_labels = align(train_features, train_labels)
        test_sets = {name: align(f, lab) for name, (f, lab) in test_sets.items()}
    x, y = _stack(train_features, train_labels, "training set")
    labelled = y[y != IGNORE_INDEX]
    if labelled.numel() == 0:
        raise ValueError("training set: every frame is labelled -100")
    largest = int(labelled.max())
    if num_classes is None:
        num_classes = largest + 1
    elif largest >= num_classes:
        raise ValueError(
            f"training label {largest} is out of range for num_classes={num_classes}; "
            f"pass num_classes >= {largest + 1} (the phone list's size)"
        )
    counts = torch.bincount(labelled, minlength=num_classes)
    seen = counts > 0
    test_data = {name: _stack(f, lab, f"test set {name!r}") for name, (f, lab) in test_sets.items()}
    for name, (xt, _) in test_data.items():
        if xt.shape[1] != x.shape[1]:
            raise ValueError(
                f"test set {name!r} has {xt.shape[1]}-dim features, training {x.shape[1]}-dim"
            )
    model, history = fit_probe(
        x, y, num_classes, hidden=hidden, standardize=standardize, epochs=epochs, lr=lr,
        batch_size=batch_size, seed=seed, device=device, progress=progress, desc="phone probe",
    )
    train_conf, _, _ = _score(model, x, y, seen, num_classes)
    train_acc = float(np.trace(train_conf) / max(train_conf.sum(), 1))
    majority = int(counts.argmax())
    results: dict[str, ProbeResult] = {}
    for name, (xt, yt) in test_data.items():
        confusion, ignored, unseen = _score(model, xt, yt, seen, num_classes)
        totals = confusion.sum(axis=1)
        scored = int(totals.sum())
        results[name] = ProbeResult(
            accuracy=float(np.trace(confusion) / scored) if scored else float("nan"),
            num_frames=scored,
            num_ignored=ignored,
            per_class={int(c): float(confusion[c, c] / totals[c]) for c in np.flatnonzero(totals)},
            confusion=confusion,
            chance=float(totals[majority] / scored) if scored else float("nan"),
            train_accuracy=train_acc,
            train_frames=int(labelled.numel()),
            epochs=epochs,
            loss_history=history,
            unseen_classes=unseen,
        )
    return results
