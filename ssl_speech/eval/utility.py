"""Pseudo-label utility: how useful a pretext target is for a downstream task, without training.

Zaiem, Parcollet and Essid, "Conditional independence for pretext task selection in
self-supervised speech representation learning" (Interspeech 2021), and "Pretext tasks
selection for multitask self-supervised speech representation learning" (their section 3):
a pseudo-label ``Z`` computed from the input ``X`` helps a downstream task with label ``Y``
when ``X`` and ``Z`` are nearly independent given ``Y``, i.e. when ``Z`` carries little about
``X`` beyond ``Y``. The estimate is the Hilbert-Schmidt independence criterion (HSIC) of ``X``
and ``Z`` within each class ``y``, averaged over classes (uniformly, and weighted by the
classes' segment counts). Lower means more useful.

For each class ``y`` (a phone: segments are the runs of that phone in the alignments; a
speaker: chunks or whole utterances), ``K`` is a cosine kernel between the segments' log-mel
frames resampled to a fixed number of points, ``L`` an RBF kernel between the segments' means
of ``Z``, and ``HSIC_y = tr(K H L H) / (n - 1)^2`` (:mod:`ssl_speech.eval.utility_hsic`).

Two settings (:class:`EstimatorSetting`): :data:`REFERENCE` computes the kernels and the
centring as the authors' code does (Gaussian down-sampling of raw log-mel,
:mod:`ssl_speech.eval.utility_reference`; ``exp(-dz^2 / (2 * 0.05))`` on frame-z-scored segment
means; ``H = I - 11^T / n^2``); :data:`OURS` changes them. Every difference and its reason is
listed in docs/pseudo_label_utility.md ("What our version changes"), with the two controls
every ranking carries (white ``noise`` and a ``class_function``), the degenerate direction of
the estimate (a target that carries nothing at all scores near "most useful") and how to read
the number.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from ssl_speech.data.audio import read_audio
from ssl_speech.data.corpus import Utterance
from ssl_speech.eval.utility_hsic import UtilityEstimate, conditional_dependence
from ssl_speech.eval.utility_reference import reference_downsample_segments
from ssl_speech.eval.utility_segments import (
    Segments,
    downsample_segments,
    phone_segments,
    segment_means,
    speaker_segments,
)
from ssl_speech.signal.baseline_features import log_mel_features
from ssl_speech.signal.pseudo_labels import check_names, extract_pseudo_labels

TASKS = ("phone", "speaker")
NOISE_CONTROL = "noise"  # a registered pseudo-label: white noise independent of the audio
CLASS_CONTROL = "class_function"  # a function of the downstream class (scored here only)


@dataclass(frozen=True)
class EstimatorSetting:
    """How the estimate is computed; :data:`OURS` and :data:`REFERENCE` are the two settings.

    Attributes:
        name: ``"ours"`` or ``"reference"`` (or a name of one's own).
        downsampling: ``"ours"`` (:func:`downsample_segments`, on log-mel bands standardised
            over the data set when ``standardize_inputs``) or ``"reference"``
            (:func:`reference_downsample_segments`, raw log-mel).
        phone_points, speaker_points: points per resampled segment for each task.
        standardize_inputs: standardise the log-mel bands first (ours only).
        target_scaling: ``"segments"``: z-score the segment means of ``Z`` (ours);
            ``"frames"``: z-score ``Z``'s frames over the data set, then take segment means
            (the reference's order).
        variance, per_dimension: the RBF kernel on ``Z`` (:func:`rbf_kernel`).
        centring: ``"textbook"`` or ``"reference"`` (:func:`centre_kernel`).
        phone_max_per_class, speaker_max_per_class: cap on the segments scored per class.
        speaker_chunk_frames: speaker segments: chunks of this many frames, or ``None`` for
            whole utterances.
        min_class_size: classes with fewer usable segments are skipped.
    """

    name: str
    downsampling: str = "ours"
    phone_points: int = 10
    speaker_points: int = 10
    standardize_inputs: bool = True
    target_scaling: str = "segments"
    variance: float | str = 1.0
    per_dimension: bool = True
    centring: str = "textbook"
    phone_max_per_class: int = 500
    speaker_max_per_class: int = 500
    speaker_chunk_frames: int | None = 200
    min_class_size: int = 4

    def __post_init__(self) -> None:
        if self.downsampling not in ("ours", "reference"):
            raise ValueError(f"downsampling must be 'ours' or 'reference', got "
                             f"{self.downsampling!r}")
        if self.target_scaling not in ("segments", "frames"):
            raise ValueError(f"target_scaling must be 'segments' or 'frames', got "
                             f"{self.target_scaling!r}")
        if self.speaker_chunk_frames is not None and self.speaker_chunk_frames < 1:
            raise ValueError(f"speaker_chunk_frames must be None or >= 1, got "
                             f"{self.speaker_chunk_frames}")


OURS = EstimatorSetting("ours")
REFERENCE = EstimatorSetting(
    "reference", downsampling="reference", phone_points=10, speaker_points=30,
    standardize_inputs=False, target_scaling="frames", variance=0.05, per_dimension=False,
    centring="reference", phone_max_per_class=300, speaker_max_per_class=1000,
    speaker_chunk_frames=None,
)
SETTINGS = {s.name: s for s in (OURS, REFERENCE)}


def estimator_setting(setting: str | EstimatorSetting) -> EstimatorSetting:
    """The named setting (``"ours"`` or ``"reference"``), or ``setting`` itself."""
    if isinstance(setting, EstimatorSetting):
        return setting
    if setting not in SETTINGS:
        raise ValueError(f"unknown estimator setting {setting!r}; choose from {sorted(SETTINGS)}")
    return SETTINGS[setting]


# --------------------------------------------------------------------------------------------
# Features of a corpus, segments of a task
# --------------------------------------------------------------------------------------------


@dataclass
class CorpusSignals:
    """Per utterance: log-mel frames ``(T, 40)`` and each pseudo-label's frames ``(T,)`` or
    ``(T, D)`` (``labels[name][utt]``), 10 ms frames; and each utterance's speaker name."""

    log_mel: dict[str, np.ndarray]
    labels: dict[str, dict[str, np.ndarray]]
    speakers: dict[str, str]


def extract_corpus_signals(utterances: Sequence[Utterance], candidates: Sequence[str],
                           read: Callable[[Utterance], np.ndarray] | None = None,
                           progress: bool = False) -> CorpusSignals:
    """Log-mel and the candidates' pseudo-labels of every utterance (``read``: ``utterance ->
    (S,) float32`` at 16 kHz, default: read its file)."""
    candidates = check_names(candidates)
    read = read or (lambda u: read_audio(u.path))
    features = CorpusSignals({}, {name: {} for name in candidates}, {})
    for utt in tqdm(utterances, desc="pseudo-labels", disable=not progress):
        wav = read(utt)
        features.log_mel[utt.id] = log_mel_features(wav)
        features.speakers[utt.id] = utt.speaker
        for name, value in extract_pseudo_labels(candidates, wav).items():
            features.labels[name][utt.id] = value.cpu().numpy()
    return features


def _trimmed(labels: np.ndarray, frames: int, utt: str, tolerance: int = 2) -> np.ndarray:
    if abs(labels.shape[0] - frames) > tolerance:
        raise ValueError(
            f"{utt!r}: {labels.shape[0]} label frames but {frames} feature frames (10 ms); the "
            "alignments do not belong to this audio"
        )
    return labels[:frames]


def task_segments(features: CorpusSignals, task: str,
                  alignments: Mapping[str, np.ndarray] | None = None,
                  speakers: Mapping[str, int] | None = None,
                  chunk_frames: int | None = 200) -> Segments:
    """The segments of ``task``: runs of one phone (``alignments`` needed), or chunks of
    ``chunk_frames`` frames (whole utterances with ``None``) of one speaker (``speakers``:
    ``{utt: index}``, default: the utterances' speaker names in sorted order)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    frames = {u: f.shape[0] for u, f in features.log_mel.items()}
    if task == "phone":
        if alignments is None:
            raise ValueError("task='phone' needs alignments (frame labels per utterance)")
        missing = [u for u in frames if u not in alignments]
        if missing:
            raise KeyError(f"{len(missing)} utterances have no alignment, e.g. {missing[:3]}")
        return phone_segments({u: _trimmed(np.asarray(alignments[u]), frames[u], u)
                               for u in frames})
    names = sorted(set(features.speakers.values()))
    index = speakers or {u: names.index(s) for u, s in features.speakers.items()}
    return speaker_segments(frames, index, chunk_frames)


# --------------------------------------------------------------------------------------------
# Targets and controls
# --------------------------------------------------------------------------------------------


def frame_standardized(values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each dimension z-scored with the mean and standard deviation of its finite frames over
    all utterances (the reference's normalisation of its frame-level descriptors)."""
    rows = np.concatenate([np.asarray(v, dtype=np.float64).reshape(len(v), -1)
                           for v in values.values()])
    mean, std = np.nanmean(rows, axis=0), np.nanstd(rows, axis=0)
    std = np.where(std > 0, std, 1.0)
    return {u: ((np.asarray(v, dtype=np.float64).reshape(len(v), -1) - mean) / std)
            .reshape(np.shape(v)).astype(np.float32) for u, v in values.items()}


def class_function_targets(labels: np.ndarray, seed: int = 0) -> Tensor:
    """The class-function control: ``(S,)`` labels to ``(S, 1)`` targets that are a fixed
    standard normal draw per class (seeded by the class and ``seed``), so ``Z`` is a function
    of ``Y`` and carries nothing about ``X`` beyond it."""
    classes = np.unique(labels)
    values = {int(c): torch.randn(1, generator=torch.Generator().manual_seed(
        (seed * 1_000_003 + int(c)) % (1 << 62))).item() for c in classes}
    return torch.tensor([[values[int(c)]] for c in labels], dtype=torch.float32)


def estimate_utilities(
    features: CorpusSignals,
    segments: Segments,
    task: str,
    setting: str | EstimatorSetting = "ours",
    controls: bool = True,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> list[UtilityEstimate]:
    """Every pseudo-label of ``features`` scored on ``segments`` with ``setting``, plus (with
    ``controls``) the class-function control; sorted by ``uniform``, most useful first."""
    s = estimator_setting(setting)
    points = s.phone_points if task == "phone" else s.speaker_points
    if s.downsampling == "ours":
        inputs = downsample_segments(features.log_mel, segments, points,
                                     standardize=s.standardize_inputs)
    else:
        inputs = reference_downsample_segments(features.log_mel, segments, points)
    keys = torch.from_numpy(segments.keys(seed))
    labels = torch.from_numpy(segments.label)
    cap = s.phone_max_per_class if task == "phone" else s.speaker_max_per_class

    def score(name: str, targets: Tensor, standardize: bool) -> UtilityEstimate:
        return conditional_dependence(
            inputs, targets, labels, keys, name=name, max_per_class=cap,
            min_class_size=s.min_class_size, variance=s.variance,
            per_dimension=s.per_dimension, standardize_targets=standardize,
            centring=s.centring, seed=seed, device=device)

    by_frames = s.target_scaling == "frames"
    results = [
        score(name, segment_means(frame_standardized(values) if by_frames else values,
                                  segments), not by_frames)
        for name, values in features.labels.items()
    ]
    if controls:
        results.append(score(CLASS_CONTROL, class_function_targets(segments.label, seed), True))
    return sorted(results, key=lambda r: (np.isnan(r.uniform), r.uniform))


def rank_pseudo_labels(
    utterances: Sequence[Utterance],
    candidates: Sequence[str],
    task: str = "phone",
    alignments: Mapping[str, np.ndarray] | None = None,
    speakers: Mapping[str, int] | None = None,
    setting: str | EstimatorSetting = "ours",
    controls: bool = True,
    chunk_frames: int | None | str = "setting",
    num_points: int | None = None,
    max_per_class: int | None = None,
    min_class_size: int | None = None,
    variance: float | str | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    read: Callable[[Utterance], np.ndarray] | None = None,
    progress: bool = False,
) -> list[UtilityEstimate]:
    """Estimate every candidate's utility for ``task`` on ``utterances``, best first.

    Args:
        utterances: the audio (``Utterance`` s of a corpus).
        candidates: pseudo-label names (see :mod:`ssl_speech.signal.pseudo_labels`).
        task: ``"phone"`` (classes from ``alignments``, segments = runs of one phone) or
            ``"speaker"`` (classes from ``speakers`` or the utterances' speaker names).
        setting: ``"ours"``, ``"reference"`` or an :class:`EstimatorSetting`.
        controls: add the two controls, the ``noise`` pseudo-label and the class function
            (``class_function``), so the table shows where the scale's ends lie.
        chunk_frames, num_points, max_per_class, min_class_size, variance: override the
            setting's values (``chunk_frames=None``: whole utterances).
        read: ``utterance -> (S,) float32 waveform`` (default: read the file at 16 kHz).

    Returns:
        One :class:`UtilityEstimate` per candidate (and control), sorted by ``uniform``.
    """
    s = estimator_setting(setting)
    overrides = {"variance": variance, "min_class_size": min_class_size}
    if num_points is not None:
        overrides.update(phone_points=num_points, speaker_points=num_points)
    if max_per_class is not None:
        overrides.update(phone_max_per_class=max_per_class, speaker_max_per_class=max_per_class)
    s = replace(s, **{k: v for k, v in overrides.items() if v is not None})
    if chunk_frames != "setting":
        s = replace(s, speaker_chunk_frames=chunk_frames)
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task == "phone" and alignments is None:
        raise ValueError("task='phone' needs alignments (frame labels per utterance)")
    names = check_names(candidates)
    if controls and NOISE_CONTROL not in names:
        names.append(NOISE_CONTROL)
    features = extract_corpus_signals(utterances, names, read, progress)
    segments = task_segments(features, task, alignments, speakers, s.speaker_chunk_frames)
    return estimate_utilities(features, segments, task, s, controls, seed, device)
