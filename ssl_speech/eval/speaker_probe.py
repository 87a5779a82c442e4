"""Speaker probe: linear speaker classification on pooled utterance features.

How much speaker identity the features carry, the counterpart of the phone probe (useful to
see whether an utterance-level objective such as MGF's turns features into speaker features).
Each utterance's ``(T, D)`` features are pooled to one vector (mean over time by default; the
last frame, which summarises a causal context network's input; or mean and standard deviation
concatenated); a linear classifier (standardised inputs, cross-entropy, Adam, fixed epochs) is
trained on some utterances of each speaker and scored on held-out utterances of the same
speakers (:func:`held_out_utterance_split` makes that split).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from ssl_speech.eval.probe_training import fit_probe, predict

POOLINGS = ("mean", "last", "mean_std")


def pool_features(features: np.ndarray, pooling: str = "mean") -> np.ndarray:
    """``(T, D)`` -> ``(D,)`` (``"mean"``, ``"last"``) or ``(2 D,)`` (``"mean_std"``) float32."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"features must be (frames, dim) with at least one frame, got {x.shape}")
    if pooling == "last":
        return x[-1].copy()
    mean = x.mean(axis=0)
    if pooling == "mean":
        return mean
    return np.concatenate([mean, x.std(axis=0)])


@dataclass
class SpeakerProbeResult:
    """Utterance-level speaker accuracy on one held-out set.

    Attributes:
        accuracy: correct / ``num_utterances``.
        chance: accuracy of always predicting the most frequent training speaker (1 / number of
            speakers when the set is balanced).
        num_utterances: scored utterances.
        num_speakers: speakers in the training set (the classifier's classes).
        train_accuracy: accuracy on the training utterances after training.
        epochs: training epochs.
    """

    accuracy: float
    chance: float
    num_utterances: int
    num_speakers: int
    train_accuracy: float
    epochs: int


def held_out_utterance_split(
    speakers: Mapping[str, Hashable], test_fraction: float = 0.2, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Split utterances into training and held-out ones, per speaker.

    Each speaker with at least two utterances gives ``max(1, round(test_fraction * n))`` of its
    ``n`` utterances (at most ``n - 1``) to the held-out list; a speaker with one utterance stays
    in training only. Deterministic for a given ``seed`` and set of ids.

    Args:
        speakers: ``{utt: speaker}``.

    Returns:
        ``(train_ids, test_ids)``, each sorted.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    by_speaker: dict[Hashable, list[str]] = {}
    for utt in sorted(speakers):
        by_speaker.setdefault(speakers[utt], []).append(utt)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for spk in sorted(by_speaker, key=str):
        utts = by_speaker[spk]
        order = rng.permutation(len(utts))
        n_test = min(max(1, round(test_fraction * len(utts))), len(utts) - 1)
        test += [utts[i] for i in order[:n_test]]
        train += [utts[i] for i in order[n_test:]]
    return sorted(train), sorted(test)


def _pool_set(
    features: Mapping[str, np.ndarray], speakers: Mapping[str, Hashable], pooling: str, name: str
) -> tuple[np.ndarray, list[Hashable]]:
    if not features:
        raise ValueError(f"{name}: no utterances")
    missing = [u for u in features if u not in speakers]
    if missing:
        raise ValueError(
            f"{name}: {len(missing)} utterances have no speaker: {missing[:5]}; pass a speaker "
            "for every utterance"
        )
    pooled = np.stack([pool_features(features[u], pooling) for u in features])
    return pooled, [speakers[u] for u in features]


def train_speaker_probe(
    train_features: Mapping[str, np.ndarray],
    train_speakers: Mapping[str, Hashable],
    test_sets: Mapping[str, tuple[Mapping[str, np.ndarray], Mapping[str, Hashable]]],
    pooling: str = "mean",
    epochs: int = 50,
    lr: float = 1e-3,
    batch_size: int = 64,
    standardize: bool = True,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, SpeakerProbeResult]:
    """Train a linear speaker classifier on pooled features and score held-out utterances.

    Args:
        train_features: ``{utt: (T, D)}`` frame features of the training utterances.
        train_speakers: ``{utt: speaker}`` (any hashable speaker id).
        test_sets: ``{name: (features, speakers)}`` held-out utterances of the same speakers.
        pooling: ``"mean"``, ``"last"`` or ``"mean_std"`` (see :func:`pool_features`).
        epochs, lr, batch_size: Adam on shuffled minibatches of utterances.
        standardize: standardise pooled features with the training mean and std.

    Returns:
        ``{name: SpeakerProbeResult}``.

    Raises:
        ValueError: a test speaker absent from training, fewer than two training speakers.
    """
    x, spk = _pool_set(train_features, train_speakers, pooling, "training set")
    classes = sorted(set(spk), key=str)
    if len(classes) < 2:
        raise ValueError(f"training set: need at least 2 speakers, got {classes}")
    index = {s: i for i, s in enumerate(classes)}
    y = np.array([index[s] for s in spk], dtype=np.int64)
    tests = {}
    for name, (feats, speakers) in test_sets.items():
        xt, st = _pool_set(feats, speakers, pooling, f"test set {name!r}")
        absent = sorted({s for s in st if s not in index}, key=str)
        if absent:
            raise ValueError(
                f"test set {name!r}: {len(absent)} speakers never occur in training: "
                f"{absent[:5]}; the speaker probe scores held-out utterances of training "
                "speakers (see held_out_utterance_split)"
            )
        if xt.shape[1] != x.shape[1]:
            raise ValueError(
                f"test set {name!r} has {xt.shape[1]}-dim pooled features, training {x.shape[1]}"
            )
        tests[name] = (xt, np.array([index[s] for s in st], dtype=np.int64))
    model, _ = fit_probe(
        torch.from_numpy(x), torch.from_numpy(y), len(classes), standardize=standardize,
        epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, device=device,
        progress=progress, desc="speaker probe",
    )
    train_acc = float((predict(model, torch.from_numpy(x)).numpy() == y).mean())
    majority = int(np.bincount(y).argmax())
    return {
        name: SpeakerProbeResult(
            accuracy=float((predict(model, torch.from_numpy(xt)).numpy() == yt).mean()),
            chance=float((yt == majority).mean()),
            num_utterances=int(yt.shape[0]),
            num_speakers=len(classes),
            train_accuracy=train_acc,
            epochs=epochs,
        )
        for name, (xt, yt) in tests.items()
    }
