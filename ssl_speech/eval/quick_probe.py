"""The quick phone probe printed at the end of training: learned vs untrained vs log-mel.

A trained model is only worth something if its frozen features beat the same architecture at
random initialisation (a strong baseline for frame-level probes) and plain log-mel features,
under the same linear probe on the same utterances. This is the evaluation suite's phone probe
(:func:`ssl_speech.eval.evaluation.compare_phone_probes`) with a faster setting than the
CPC_audio protocol: a subset of the utterances and a higher learning rate (see
:func:`compare_with_baselines`); ``scripts/evaluate.py`` gives the full figures.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable

import numpy as np
import torch

from ssl_speech.data.corpus import Corpus, Utterance
from ssl_speech.eval.evaluation import ProbeProtocol, check_labels, compare_phone_probes
from ssl_speech.eval.features import baseline_features_of, model_features, read_many


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
    """Probe accuracy (held-out utterances) of the three feature sets; prints a table and JSON.

    Args:
        trained, untrained: the model after training and the same architecture at its initial
            weights.
        train_corpus, test_corpus: where the probe's training and held-out utterances are drawn.
        alignments: CPC_audio-format frame labels of both.
        train_utterances, test_utterances: how many are drawn (seeded).
        epochs, lr: the probe's schedule (Adam, batches of 1024 frames).
    """
    train = pick_utterances(train_corpus, train_utterances, seed)
    test = pick_utterances(test_corpus, test_utterances, seed + 1)
    device = next(trained.parameters()).device
    untrained = untrained.to(device)
    both = train + test
    sources = {
        "trained": model_features(trained, both, layer),
        "untrained": model_features(untrained, both, layer),
        "log-mel": baseline_features_of(both, "log_mel"),
    }
    results = compare_phone_probes(
        sources, alignments, [u.id for u in train], {"dev": [u.id for u in test]},
        ProbeProtocol(epochs=epochs, lr=lr, seed=seed), device=device, progress=progress,
    )
    figures = {name: by_set["dev"].accuracy for name, by_set in results.items()}
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
