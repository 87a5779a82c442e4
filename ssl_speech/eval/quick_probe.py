"""The quick phone probe printed at the end of training: learned vs untrained vs log-mel.

A trained model is only worth something if its frozen features beat the same architecture at
random initialisation (a strong baseline for frame-level probes) and plain log-mel features,
under the same linear probe on the same utterances.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from ssl_speech.data.audio import read_audio
from ssl_speech.data.corpus import Corpus
from ssl_speech.eval.baseline_features import log_mel_features
from ssl_speech.eval.features import extract_corpus_features
from ssl_speech.eval.phone_probe import train_phone_probe


def _pick(corpus: Corpus, count: int, seed: int) -> list:
    utterances = list(corpus)
    if count >= len(utterances):
        return utterances
    order = np.random.default_rng(seed).permutation(len(utterances))[:count]
    return [utterances[i] for i in sorted(order)]


def _labels_for(utterances: list, alignments: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    missing = [u.id for u in utterances if u.id not in alignments]
    if missing:
        raise KeyError(f"{len(missing)} utterances have no alignment (e.g. {missing[:3]})")
    return {u.id: alignments[u.id] for u in utterances}


def _log_mel(utterances: list) -> dict[str, np.ndarray]:
    return {u.id: log_mel_features(read_audio(u.path)) for u in utterances}


def compare_with_baselines(
    trained: torch.nn.Module,
    untrained: torch.nn.Module,
    train_corpus: Corpus,
    test_corpus: Corpus,
    alignments: dict[str, np.ndarray],
    layer: str = "context",
    train_utterances: int = 300,
    test_utterances: int = 150,
    epochs: int = 20,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """Probe accuracy (held-out frames) of the three feature sets; prints a table and JSON."""
    train = _pick(train_corpus, train_utterances, seed)
    test = _pick(test_corpus, test_utterances, seed + 1)
    train_labels, test_labels = _labels_for(train, alignments), _labels_for(test, alignments)
    device = next(trained.parameters()).device
    untrained = untrained.to(device)
    frame_step = float(trained.hop) / 16000
    sources = {
        "trained": lambda utts: extract_corpus_features(trained, utts, layer, progress=progress),
        "untrained": lambda utts: extract_corpus_features(untrained, utts, layer,
                                                          progress=progress),
        "log-mel": _log_mel,
    }
    steps = {"trained": frame_step, "untrained": frame_step, "log-mel": 0.01}
    figures: dict[str, float] = {}
    for name, features_of in sources.items():
        results = train_phone_probe(
            features_of(train), train_labels,
            {"dev": (features_of(test), test_labels)},
            frame_step=steps[name], epochs=epochs, lr=lr, seed=seed, device=device,
        )
        figures[name] = results["dev"].accuracy
    print("\nlinear phone probe, frame accuracy on held-out utterances "
          f"({len(train)} train / {len(test)} test utterances, layer {layer}):", file=sys.stderr)
    for name, accuracy in figures.items():
        print(f"  {name:<10} {100 * accuracy:6.2f} %", file=sys.stderr)
    verdict = figures["trained"] > max(figures["untrained"], figures["log-mel"])
    print(f"  trained beats both baselines: {'yes' if verdict else 'NO'}", file=sys.stderr)
    summary = {"probe_trained": figures["trained"], "probe_untrained": figures["untrained"],
               "probe_logmel": figures["log-mel"]}
    print(json.dumps({k: round(v, 4) for k, v in summary.items()}))
    return summary
