"""Linear phone probe: frame classification on frozen features.

The linear-separability evaluation of Rivière et al., "Unsupervised pretraining transfers well
across languages" (ICASSP 2020), as in CPC_audio: a single linear layer on frozen features,
frame-level cross-entropy against 10 ms phone labels, Adam (lr 2e-4), a fixed number of epochs,
frame accuracy on held-out utterances. ``hidden=H`` gives the one-hidden-layer (ReLU) variant.

What our version changes, and why (the protocols themselves: :mod:`ssl_speech.eval.protocols`):

- Features are standardised with the training frames' per-dimension mean and standard deviation
  (a fixed first layer of the probe, so the probe applies to raw features). CPC_audio does not;
  without it the outcome of a fixed, short schedule depends on the feature scale (log-mel values
  around -10, context outputs around 0.1), so two feature sets would not be compared on equal
  terms. ``standardize=False`` restores the original protocol.
- Optionally a part of the training utterances is held out and training stops once their
  accuracy plateaus (``validation_fraction``, ``stopping``), so every feature set is measured
  at convergence.
- The probe sees shuffled minibatches of frames instead of windows of consecutive frames: a
  frame classifier has no temporal context, so only the minibatch composition changes. The
  frames are gathered per minibatch from memory or from a memory-mapped frame store
  (``frame_store``), with the same result; held-out sets are scored one utterance at a time.

Labels follow CPC_audio's format (one integer per 10 ms frame, label ``i`` covering samples
``[160 i, 160 i + 160)`` at 16 kHz). Features at another frame step are matched to them by
:func:`align_features_and_labels` before training; frames labelled ``-100`` and frames whose
label never occurs in the training set are ignored and counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from ssl_speech.eval.frame_store import DTYPES, FrameTable, stack_frames, write_frame_store
from ssl_speech.eval.messages import SHOWN, quote_ids
from ssl_speech.eval.probe_training import (
    IGNORE_INDEX,
    FitHistory,
    Stopping,
    fit_table,
    predict_rows,
)

# --------------------------------------------------------------------------------------------
# Frame-step alignment
# --------------------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:g} ms"


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


def _align_one(utt: str, feats: np.ndarray, lab: np.ndarray, down: int, up: int,
               tolerance_frames: int, mismatched: list[tuple[str, int, int, int]],
               ) -> tuple[np.ndarray, np.ndarray] | None:
    """One utterance's features and labels trimmed to one count, or ``None`` (recorded in
    ``mismatched``) when the counts differ by more than ``tolerance_frames``."""
    feats, lab = np.asarray(feats), np.asarray(lab)
    if feats.ndim != 2:
        raise ValueError(f"features of {utt!r} must be (frames, dim), got {feats.shape}")
    if lab.ndim != 1:
        raise ValueError(f"labels of {utt!r} must be (frames,), got {lab.shape}")
    res = _resample_labels(lab, down, up)
    if abs(feats.shape[0] - res.shape[0]) > tolerance_frames:
        mismatched.append((utt, feats.shape[0], lab.shape[0], res.shape[0]))
        return None
    n = min(feats.shape[0], res.shape[0])
    return feats[:n], res[:n]


def _mismatch_message(mismatched: list[tuple[str, int, int, int]], total: int,
                      frame_step: float, label_step: float, tolerance_frames: int) -> str:
    details = "; ".join(
        f"{u!r}: {f} feature frames at {_ms(frame_step)} vs {lab} label frames at "
        f"{_ms(label_step)}" + (f" ({r} at the feature step)" if r != lab else "")
        for u, f, lab, r in mismatched[:SHOWN]
    )
    return (f"frame counts differ by more than tolerance_frames={tolerance_frames} in "
            f"{len(mismatched)} of {total} utterances ({details}). Likely cause: "
            + _diagnose(mismatched, frame_step, label_step))


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
            f"{quote_ids(missing)}. Label ids look like {example!r}. Restrict the features to "
            "utterances with alignments, or fix the id format (e.g. file stems vs paths)"
        )
    out_features: dict[str, np.ndarray] = {}
    out_labels: dict[str, np.ndarray] = {}
    mismatched: list[tuple[str, int, int, int]] = []
    for utt, feats in features.items():
        pair = _align_one(utt, feats, labels[utt], down, up, tolerance_frames, mismatched)
        if pair is not None:
            out_features[utt], out_labels[utt] = pair
    if mismatched:
        raise ValueError(_mismatch_message(mismatched, len(features), frame_step, label_step,
                                           tolerance_frames))
    return out_features, out_labels


# --------------------------------------------------------------------------------------------
# Phone probe
# --------------------------------------------------------------------------------------------


Frames = tuple[str, np.ndarray, np.ndarray]  # (utt, (T, D) features, (T,) labels)


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
        train_accuracy: frame accuracy on the frames the probe was fitted on.
        train_frames: labelled training frames (fitted and held out).
        epochs: training epochs run.
        loss_history: mean training cross-entropy of each epoch.
        unseen_classes: labels of this set that never occur in training (their frames ignored).
        validation_accuracy: best accuracy on the held-out part of the training split (``None``
            for a fixed schedule).
        converged: the stopping rule fired before the epoch limit.
        best_epoch: the epoch whose weights were kept.
        protocol: the protocol's name (``converged``, ``cpc_audio``, ...), for reports.
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
    validation_accuracy: float | None = None
    converged: bool = False
    best_epoch: int = 0
    protocol: str = ""

    def summary(self) -> dict[str, float | int | bool | str | None]:
        """Scalars for logs and JSON (no confusion matrix)."""
        return {
            "accuracy": self.accuracy, "num_frames": self.num_frames,
            "num_ignored": self.num_ignored, "chance": self.chance,
            "train_accuracy": self.train_accuracy, "train_frames": self.train_frames,
            "epochs": self.epochs, "validation_accuracy": self.validation_accuracy,
            "converged": self.converged, "best_epoch": self.best_epoch,
            "protocol": self.protocol,
        }


def _checked(name: str, utterances: Iterable[Frames]) -> Iterator[Frames]:
    """Pass ``(utt, features, labels)`` triples on, checking labels and one feature dim."""
    dim = None
    for utt, feats, lab in utterances:
        if feats.ndim != 2 or (dim is not None and feats.shape[1] != dim):
            raise ValueError(f"{name}: features must all be (frames, dim) with one dim; "
                             f"{utt!r} has {feats.shape} after {dim}-dim ones")
        dim = feats.shape[1]
        if lab.size and not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(f"{name}: labels must be integers, got dtype {lab.dtype}")
        invalid = (lab < 0) & (lab != IGNORE_INDEX)
        if invalid.any():
            raise ValueError(f"{name}: labels must be >= 0 or {IGNORE_INDEX} (ignored), found "
                             f"{sorted(set(lab[invalid].tolist()))[:SHOWN]}")
        yield utt, feats, lab


class _Aligned:
    """``(utt, features, labels)`` of ``features``' utterances, aligned one at a time.

    Iterating reads each utterance once (a lazy mapping stays lazy); count mismatches are
    collected over the whole pass and raised at its end, with the likely cause.
    """

    def __init__(self, name: str, features: Mapping[str, np.ndarray],
                 labels: Mapping[str, np.ndarray], frame_step: float | None,
                 label_step: float, tolerance_frames: int) -> None:
        if not features:
            raise ValueError(f"{name}: no utterances")
        missing = [u for u in features if u not in labels]
        if missing:
            example = next(iter(labels), None)
            raise ValueError(
                f"{name}: {len(missing)} of {len(features)} utterances have features but no "
                f"labels: {quote_ids(missing)}. Label ids look like {example!r}: restrict the "
                "features to utterances with alignments, or fix the id format")
        if tolerance_frames < 0:
            raise ValueError(f"tolerance_frames must be >= 0, got {tolerance_frames}")
        self.name, self.features, self.labels = name, features, labels
        self.frame_step, self.label_step = frame_step, label_step
        self.tolerance_frames = tolerance_frames
        self.steps = (1, 1) if frame_step is None else _step_ratio(frame_step, label_step)

    def __iter__(self) -> Iterator[Frames]:
        mismatched: list[tuple[str, int, int, int]] = []
        tolerance = 0 if self.frame_step is None else self.tolerance_frames
        for utt in self.features:
            pair = _align_one(utt, self.features[utt], self.labels[utt], *self.steps,
                              tolerance, mismatched)
            if pair is not None:
                yield utt, pair[0], pair[1]
        if mismatched and self.frame_step is None:
            u, f, lab, _ = mismatched[0]
            raise ValueError(f"{self.name}: {len(mismatched)} utterances have different feature "
                             f"and label counts (e.g. {u!r}: {f} vs {lab}); pass frame_step "
                             "(seconds per feature frame) to align them")
        if mismatched:
            raise ValueError(_mismatch_message(mismatched, len(self.features), self.frame_step,
                                               self.label_step, self.tolerance_frames))


def _split_validation(table: FrameTable, fraction: float | None, seed: int,
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    """Labelled rows to fit on and rows of held-out training utterances (``None`` without)."""
    labelled = table.labels != IGNORE_INDEX
    if fraction is None:
        return np.flatnonzero(labelled), None
    ids = list(table.utterances)
    if len(ids) < 2:
        raise ValueError("holding out part of the training split needs at least 2 training "
                         "utterances; use a fixed schedule (validation_fraction=None)")
    count = min(len(ids) - 1, max(1, round(fraction * len(ids))))
    held = np.random.default_rng(seed).permutation(len(ids))[:count]
    mask = np.zeros(len(table), dtype=bool)
    for i in held:
        start, stop = table.utterances[ids[i]]
        mask[start:stop] = True
    return np.flatnonzero(labelled & ~mask), np.flatnonzero(labelled & mask)


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
    validation_fraction: float | None = None,
    stopping: Stopping | None = None,
    frame_store: str | None = None,
    store_dtype: str = "float32",
    protocol: str = "",
) -> dict[str, ProbeResult]:
    """Train a phone probe on frozen features and score it on held-out sets.

    Args:
        train_features: ``{utt: (T, D)}`` features (read once, utterance by utterance).
        train_labels: ``{utt: (L,)}`` integer frame labels, ``-100`` where unknown. With
            ``frame_step=None`` they must already match the features frame for frame.
        test_sets: ``{name: (features, labels)}`` held-out sets in the same form, e.g.
            ``{"test": ..., "heldout_speakers": ...}``; scored one utterance at a time.
        num_classes: size of the label set; default: largest training label + 1.
        hidden: ``None`` for the linear probe, else the width of one ReLU hidden layer.
        epochs, lr, batch_size: Adam on shuffled minibatches of ``batch_size`` frames;
            ``epochs`` is the limit under a stopping rule.
        standardize: standardise features with the fitted frames' mean and std.
        seed: initialisation, shuffling and held-out draw.
        device: where the probe trains (one minibatch is moved there at a time).
        frame_step, label_step, tolerance_frames: when ``frame_step`` (seconds per feature
            frame) is given, every utterance is first aligned by the rules of
            :func:`align_features_and_labels`.
        validation_fraction, stopping: hold out this fraction of the training utterances and
            stop on their accuracy (:class:`~ssl_speech.eval.probe_training.Stopping`); both
            or neither.
        frame_store: a directory: the training frames are written there
            (:func:`~ssl_speech.eval.frame_store.write_frame_store`) and read back through a
            memory map, so memory holds a minibatch and the index, not the corpus. ``None``
            holds them in memory. The same seed gives the same probe either way.
        store_dtype: ``float32`` or ``float16`` rows (in memory or in the store).
        protocol: a name copied into the results.

    Returns:
        ``{name: ProbeResult}`` for each test set.
    """
    if (validation_fraction is None) != (stopping is None):
        raise ValueError("validation_fraction and stopping go together: give both (stop at "
                         "convergence) or neither (a fixed number of epochs)")
    if validation_fraction is not None and not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    if store_dtype not in DTYPES:
        raise ValueError(f"store_dtype must be one of {DTYPES}, got {store_dtype!r}")

    def aligned(name: str, feats, labs) -> _Aligned:
        return _Aligned(name, feats, labs, frame_step, label_step, tolerance_frames)

    tests = {name: aligned(f"test set {name!r}", f, lab) for name, (f, lab) in test_sets.items()}
    train = _checked("training set", aligned("training set", train_features, train_labels))
    table = (stack_frames(train, store_dtype) if frame_store is None
             else write_frame_store(train, frame_store, store_dtype))
    fit_index, validation_index = _split_validation(table, validation_fraction, seed)
    labelled = table.labels[table.labels != IGNORE_INDEX]
    if labelled.size == 0:
        raise ValueError("training set: every frame is labelled -100")
    largest = int(labelled.max())
    if num_classes is None:
        num_classes = largest + 1
    elif largest >= num_classes:
        raise ValueError(
            f"training label {largest} is out of range for num_classes={num_classes}; "
            f"pass num_classes >= {largest + 1} (the phone list's size)"
        )
    counts = np.bincount(table.labels[fit_index], minlength=num_classes)
    seen = counts > 0
    model, history = fit_table(
        table, num_classes, fit_index, validation_index=validation_index, stopping=stopping,
        hidden=hidden, standardize=standardize, epochs=epochs, lr=lr, batch_size=batch_size,
        seed=seed, device=device, progress=progress, desc="phone probe",
    )
    train_pred = predict_rows(model, table, fit_index)
    train_acc = float((train_pred == table.labels[fit_index]).mean())
    majority = int(counts.argmax())
    results: dict[str, ProbeResult] = {}
    for name, utterances in tests.items():
        confusion, ignored, unseen = _score(model, _checked(f"test set {name!r}", utterances),
                                            seen, num_classes, table.dim)
        results[name] = _result(confusion, ignored, unseen, majority, train_acc,
                                int(labelled.size), history, protocol)
    return results


@torch.no_grad()
def _score(model: torch.nn.Module, utterances: Iterable[Frames], seen: np.ndarray,
           num_classes: int, dim: int) -> tuple[np.ndarray, int, list[int]]:
    """Confusion counts over frames whose label is a seen class; ignored count; unseen labels."""
    device = next(model.parameters()).device
    confusion = np.zeros(num_classes * num_classes, dtype=np.int64)
    ignored, unseen = 0, set()
    for utt, feats, y in utterances:
        if feats.shape[1] != dim:
            raise ValueError(f"{utt!r} has {feats.shape[1]}-dim features, training {dim}-dim")
        in_range = (y >= 0) & (y < num_classes)
        valid = in_range.copy()
        valid[in_range] = seen[y[in_range]]
        unseen.update(y[(y >= 0) & ~valid].tolist())
        ignored += int((~valid).sum())
        if valid.any():
            x = torch.from_numpy(np.asarray(feats[valid], dtype=np.float32)).to(device)
            pred = model(x).argmax(-1).cpu().numpy()
            confusion += np.bincount(y[valid] * num_classes + pred,
                                     minlength=num_classes * num_classes)
    return confusion.reshape(num_classes, num_classes), ignored, sorted(unseen)


def _result(confusion: np.ndarray, ignored: int, unseen: list[int], majority: int,
            train_acc: float, train_frames: int, history: FitHistory, protocol: str,
            ) -> ProbeResult:
    totals = confusion.sum(axis=1)
    scored = int(totals.sum())
    return ProbeResult(
        accuracy=float(np.trace(confusion) / scored) if scored else float("nan"),
        num_frames=scored,
        num_ignored=ignored,
        per_class={int(c): float(confusion[c, c] / totals[c]) for c in np.flatnonzero(totals)},
        confusion=confusion,
        chance=float(totals[majority] / scored) if scored else float("nan"),
        train_accuracy=train_acc,
        train_frames=train_frames,
        epochs=history.epochs,
        loss_history=list(history.loss),
        unseen_classes=unseen,
        validation_accuracy=(history.validation[history.best_epoch - 1] if history.validation
                             else None),
        converged=history.converged,
        best_epoch=history.best_epoch,
        protocol=protocol,
    )
