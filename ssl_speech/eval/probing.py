"""The probes of frozen features, run one way for every caller: :func:`probe`.

``probe(sources, split, protocol)`` trains the phone probe (and, given a speaker protocol, the
speaker probe) on each named feature set, on the same utterances under the same protocol, and
returns each set's results. The end-of-training probe, ``evaluate``, ``phone-probe``, the
compare studies and the pseudo-label study all go through it, so a figure means the same
wherever it is printed. :func:`best_baseline` picks the stronger spectral baseline (log-mel or
MFCC), the one a learned model is compared with.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ssl_speech.eval.features import (
    BASELINE_KINDS,
    ComputedFeatures,
    FeatureDir,
    check_present,
    read_many,
)
from ssl_speech.eval.messages import quote_ids
from ssl_speech.eval.phone_probe import ProbeResult, train_phone_probe
from ssl_speech.eval.protocols import CONVERGED, SPEAKER, ProbeProtocol, SpeakerProtocol
from ssl_speech.eval.speaker_probe import (
    SpeakerProbeResult,
    held_out_utterance_split,
    pool_features,
    train_speaker_probe,
)

Features = FeatureDir | ComputedFeatures


@dataclass
class ProbeSplit:
    """What the probes train and score on.

    Attributes:
        labels: ``utt -> (L,)`` phone indices at 10 ms (CPC_audio format).
        train_ids: the probes' training utterances.
        test_sets: ``{name: ids}`` held-out utterances (``test``, ``heldout_speakers``, ...).
        num_classes: size of the phone list (default: largest training label + 1).
        speakers: ``utt -> speaker`` of the training utterances, for the speaker probe.
    """

    labels: Mapping[str, np.ndarray]
    train_ids: list[str]
    test_sets: dict[str, list[str]]
    num_classes: int | None = None
    speakers: Mapping[str, str] | None = None


@dataclass
class ProbeOutcome:
    """One feature set's results: phone probe per held-out set, speaker probe if run."""

    phone: dict[str, ProbeResult] = field(default_factory=dict)
    speaker: SpeakerProbeResult | None = None


class _Restricted(Mapping[str, np.ndarray]):
    """The ``ids`` of a feature mapping, read lazily (after checking that all are there)."""

    def __init__(self, features: Mapping[str, np.ndarray], ids: Sequence[str], what: str):
        self.ids = list(dict.fromkeys(ids))
        check_present(features, self.ids, what)
        self.features = features

    def __getitem__(self, utt: str) -> np.ndarray:
        return self.features[utt]

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)


def check_labels(labels: Mapping[str, np.ndarray], ids: Sequence[str], what: str) -> None:
    """Raise if some of ``ids`` have no labels (count and examples in the message)."""
    missing = [u for u in ids if u not in labels]
    if missing:
        example = next(iter(labels), None)
        raise ValueError(f"{len(missing)} of {len(ids)} utterances of the {what} have no "
                         f"labels in the alignment file: {quote_ids(missing)} (its ids look "
                         f"like {example!r}); use the alignments and lists of the same corpus")


def _subsample(ids: list[str], count: int | None, seed: int) -> list[str]:
    if count is None or count >= len(ids):
        return ids
    keep = np.random.default_rng(seed).permutation(len(ids))[:count]
    return [ids[i] for i in sorted(keep)]


def probe_phones(
    features: Mapping[str, np.ndarray],
    frame_step: float,
    split: ProbeSplit,
    protocol: ProbeProtocol = CONVERGED,
    device: str | torch.device = "cpu",
    progress: bool = False,
    frame_store: str | Path | None = None,
    store_dtype: str = "float32",
) -> dict[str, ProbeResult]:
    """Train the phone probe on ``split.train_ids`` and score each held-out list.

    Args:
        features: ``utt -> (T, D)`` at ``frame_step`` seconds per frame, read lazily.
        frame_store: stream the training frames through a memory-mapped store in this
            directory (memory: a minibatch and the index) instead of holding them.
        store_dtype: ``float32`` or ``float16`` training rows.

    Raises:
        ValueError: ids without labels or without features, or frame counts that do not match
            the labels at ``frame_step`` (each message counts and names the utterances).
    """
    train_ids = _subsample(list(split.train_ids), protocol.max_train_utterances, protocol.seed)
    check_labels(split.labels, train_ids, "train list")
    for name, ids in split.test_sets.items():
        check_labels(split.labels, ids, f"{name} list")
    train = _Restricted(features, train_ids, "train list")
    tests = {name: (_Restricted(features, ids, f"{name} list"), split.labels)
             for name, ids in split.test_sets.items()}
    return train_phone_probe(
        train, split.labels, tests, num_classes=split.num_classes, device=device,
        progress=progress, frame_step=frame_step,
        frame_store=str(frame_store) if frame_store is not None else None,
        store_dtype=store_dtype, **protocol.training_arguments(),
    )


def probe_speakers(
    features: Mapping[str, np.ndarray],
    speakers: Mapping[str, str],
    protocol: SpeakerProtocol = SPEAKER,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> SpeakerProbeResult:
    """Speaker accuracy on held-out utterances of the training speakers.

    ``speakers`` (``utt -> speaker``, usually the train list's) are split per speaker by
    :func:`~ssl_speech.eval.speaker_probe.held_out_utterance_split`; each utterance is pooled
    as it is read, so only one vector per utterance is kept.
    """
    train_ids, test_ids = held_out_utterance_split(dict(speakers), protocol.test_fraction,
                                                   protocol.seed)
    if not test_ids:
        raise ValueError("speaker probe: no speaker of the list has two utterances, so none can "
                         "be held out")
    features = _Restricted(features, list(speakers), "speaker probe")
    pooled = {}
    for utt in tqdm(features, desc="speaker probe features", disable=not progress, leave=False):
        # pooled here, then given as one-frame utterances that "mean" pooling leaves unchanged
        pooled[utt] = pool_features(features[utt], protocol.pooling)[None]
    results = train_speaker_probe(
        {u: pooled[u] for u in train_ids}, speakers,
        {"test": ({u: pooled[u] for u in test_ids}, speakers)},
        pooling="mean", epochs=protocol.epochs, lr=protocol.lr, batch_size=protocol.batch_size,
        seed=protocol.seed, device=device,
    )
    return results["test"]


def probe(
    sources: Mapping[str, Features],
    split: ProbeSplit,
    protocol: ProbeProtocol = CONVERGED,
    speaker_protocol: SpeakerProtocol | None = None,
    phone: bool = True,
    device: str | torch.device = "cpu",
    progress: bool = False,
    frame_store: str | Path | None = None,
    store_dtype: str = "float32",
    in_memory: bool = False,
) -> dict[str, ProbeOutcome]:
    """The probes of each named feature set, same utterances, same protocols.

    Args:
        sources: ``{name: features}`` (a feature directory, a model's or a baseline's computed
            features); each has ``frame_step``.
        split: utterances, labels and speakers (:class:`ProbeSplit`).
        protocol: the phone probe's (``phone=False`` skips it).
        speaker_protocol: run the speaker probe on ``split.speakers`` with it (``None``: not).
        frame_store: stream each set's training frames through ``<frame_store>/<name>``.
        in_memory: read each set's utterances once and keep them (computed features are then
            computed once for both probes); for small splits.
    """
    if speaker_protocol is not None and not split.speakers:
        raise ValueError("the speaker probe needs the training utterances' speakers "
                         "(ProbeSplit.speakers)")
    outcomes = {}
    for name, features in sources.items():
        frame_step = features.frame_step
        if in_memory:
            ids = [*split.train_ids, *[u for ids in split.test_sets.values() for u in ids]]
            features = read_many(features, ids, name)
        outcome = ProbeOutcome()
        if phone:
            store = Path(frame_store) / name if frame_store is not None else None
            outcome.phone = probe_phones(features, frame_step, split, protocol, device,
                                         progress, store, store_dtype)
        if speaker_protocol is not None:
            outcome.speaker = probe_speakers(features, split.speakers, speaker_protocol, device,
                                             progress)
        outcomes[name] = outcome
    return outcomes


def best_baseline(accuracies: Mapping[str, float], baselines: Sequence[str] = BASELINE_KINDS,
                  ) -> tuple[str, float] | None:
    """``(name, accuracy)`` of the best of ``baselines`` among ``accuracies``, if any."""
    present = [(name, accuracies[name]) for name in baselines
               if name in accuracies and accuracies[name] == accuracies[name]]  # not NaN
    return max(present, key=lambda item: item[1]) if present else None
