"""The phone probe printed at the end of training: learned vs untrained vs the best baseline.

A trained model is only worth something if its frozen features beat the same architecture at
random initialisation (a strong baseline for frame-level probes) and plain spectral features
(log-mel and MFCC; the stronger of the two is the comparison), under the same linear probe on
the same utterances. This is :func:`ssl_speech.eval.probing.probe` on a subset of the
utterances, every feature set probed to convergence (the ``converged`` protocol of
:mod:`ssl_speech.eval.protocols`, ``epochs`` as its limit); ``evaluate`` gives the full
figures.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable

import numpy as np
import torch

from ssl_speech.data.corpus import Corpus, Utterance
from ssl_speech.eval.features import baseline_features_of, model_features, read_many
from ssl_speech.eval.probing import ProbeSplit, best_baseline, check_labels, probe
from ssl_speech.eval.protocols import ProbeProtocol

NAMES = {"log_mel": "log-mel", "mfcc": "MFCC"}


def pick_utterances(utterances: Iterable[Utterance], count: int, seed: int) -> list[Utterance]:
    """``count`` utterances drawn without replacement (seeded), in corpus order; all if fewer."""
    utterances = list(utterances)
    if count >= len(utterances):
        return utterances
    order = np.random.default_rng(seed).permutation(len(utterances))[:count]
    return [utterances[i] for i in sorted(order)]


def labels_for(utterances: list[Utterance], alignments: dict[str, np.ndarray],
               ) -> dict[str, np.ndarray]:
    """The frame labels of ``utterances`` (all must have some)."""
    ids = [u.id for u in utterances]
    check_labels(alignments, ids, "probe's utterances")
    return {u: alignments[u] for u in ids}


def log_mel_of(utterances: list[Utterance]) -> dict[str, np.ndarray]:
    """Log-mel features of ``utterances`` in memory."""
    return read_many(baseline_features_of(utterances, "log_mel"), [u.id for u in utterances])


def quick_split(train_corpus: Corpus, test_corpus: Corpus,
                alignments: dict[str, np.ndarray] | None, train_utterances: int,
                test_utterances: int, seed: int) -> tuple[ProbeSplit, list[Utterance]]:
    """The quick probe's utterances (seeded draws), and all of them for computing features.

    ``alignments=None`` gives a split without labels (for the speaker probe alone).
    """
    train = pick_utterances(train_corpus, train_utterances, seed)
    test = pick_utterances(test_corpus, test_utterances, seed + 1)
    labels = labels_for(train + test, alignments) if alignments is not None else {}
    split = ProbeSplit(labels, [u.id for u in train], {"dev": [u.id for u in test]},
                       speakers={u.id: u.speaker for u in train})
    return split, train + test


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
    """Probe accuracy (held-out utterances) of the four feature sets; prints a table and JSON.

    Args:
        trained, untrained: the model after training and the same architecture at its initial
            weights.
        train_corpus, test_corpus: where the probe's training and held-out utterances are drawn.
        alignments: CPC_audio-format frame labels of both.
        train_utterances, test_utterances: how many are drawn (seeded).
        epochs, lr: the probe's epoch limit and learning rate (converged protocol: it stops
            earlier once the held-out part of the training utterances plateaus).

    Returns:
        ``probe_trained``, ``probe_untrained``, ``probe_logmel``, ``probe_mfcc``,
        ``probe_best_baseline`` (the better of log-mel and MFCC) and ``probe_converged``
        (1.0 when every probe stopped on its plateau, else 0.0).
    """
    split, both = quick_split(train_corpus, test_corpus, alignments, train_utterances,
                              test_utterances, seed)
    device = next(trained.parameters()).device
    sources = {
        "trained": model_features(trained, both, layer),
        "untrained": model_features(untrained.to(device), both, layer),
        "log_mel": baseline_features_of(both, "log_mel"),
        "mfcc": baseline_features_of(both, "mfcc"),
    }
    protocol = ProbeProtocol.converged(epochs=epochs, lr=lr, seed=seed)
    outcomes = probe(sources, split, protocol, device=device, progress=progress,
                     in_memory=True)
    results = {name: outcome.phone["dev"] for name, outcome in outcomes.items()}
    figures = {name: result.accuracy for name, result in results.items()}
    best_name, best = best_baseline(figures)
    print(f"\nlinear phone probe, frame accuracy on held-out utterances ({len(split.train_ids)}"
          f" train / {len(split.test_sets['dev'])} test utterances, layer {layer}; "
          f"{protocol.describe()}):", file=sys.stderr)
    for name, result in results.items():
        state = (f"converged at epoch {result.best_epoch}" if result.converged
                 else f"NOT converged in {result.epochs} epochs")
        print(f"  {NAMES.get(name, name):<10} {100 * result.accuracy:6.2f} %   (train "
              f"{100 * result.train_accuracy:.1f} %, {state})", file=sys.stderr)
    verdict = figures["trained"] > max(figures["untrained"], best)
    print(f"  trained - best baseline ({NAMES[best_name]}): "
          f"{100 * (figures['trained'] - best):+.2f} points; beats the untrained model and "
          f"both baselines: {'yes' if verdict else 'NO'}", file=sys.stderr)
    converged = all(r.converged for r in results.values())
    if not converged:
        print(f"  some probes had not converged after {epochs} epochs: raise probe.epochs",
              file=sys.stderr)
    summary = {"probe_trained": figures["trained"], "probe_untrained": figures["untrained"],
               "probe_logmel": figures["log_mel"], "probe_mfcc": figures["mfcc"],
               "probe_best_baseline": best, "probe_converged": float(converged)}
    print(json.dumps({k: round(v, 4) for k, v in summary.items()}))
    return summary
