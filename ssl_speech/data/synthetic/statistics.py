"""Figures of a generated embedded corpus: durations, speakers, phone frequencies, ABX items."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from ssl_speech.data.synthetic.cache import is_complete
from ssl_speech.data.synthetic.generate import ABX_SPLITS
from ssl_speech.data.synthetic.phonetics import PHONES, SILENCE

__all__ = ["corpus_statistics", "format_statistics"]


def corpus_statistics(root: str | Path) -> dict:
    """Figures of a generated corpus: ``corpus.json`` plus phone frequencies and item counts.

    Returns a JSON-serialisable dict with ``durations_s`` and ``num_utterances`` per split,
    speakers (``abx_speakers``: the ones that hold most of dev and of test), ``num_phones``,
    ``phone_frames`` (frames per phone name, from the alignments),
    ``silence_fraction`` and ``abx_items`` per split.
    """
    root = Path(root)
    if not is_complete(root):
        raise FileNotFoundError(f"{root} is not a complete synthetic corpus (corpus.json or "
                                "files missing); regenerate it with ensure_corpus()")
    meta = json.loads((root / "corpus.json").read_text())
    counts: Counter = Counter()
    with open(root / "alignments.txt") as handle:
        for line in handle:
            counts.update(int(x) for x in line.split()[1:])
    total = sum(counts.values())
    items = {}
    for split in ABX_SPLITS:
        with open(root / "abx" / f"{split}.item") as handle:
            items[split] = sum(1 for line in handle if not line.startswith("#"))
    return {
        "root": str(root),
        "generator_version": meta["generator_version"],
        "seed": meta["seed"],
        "sample_rate": meta["sample_rate"],
        "num_speakers": meta["num_speakers"],
        "heldout_speakers": meta["heldout_speakers"],
        "abx_speakers": meta["abx_speakers"],
        "num_utterances": meta["num_utterances"],
        "durations_s": meta["durations_s"],
        "num_phones": meta["num_phones"],
        "phone_frames": {PHONES[i]: counts.get(i, 0) for i in range(len(PHONES))},
        "silence_fraction": round(counts.get(SILENCE, 0) / max(total, 1), 4),
        "abx_items": items,
        "generation_seconds": meta["generation_seconds"],
    }


def format_statistics(stats: dict) -> str:
    """A human-readable summary of :func:`corpus_statistics`: splits, speakers, phones."""
    lines = [f"synthetic corpus v{stats['generator_version']} seed {stats['seed']} at "
             f"{stats['root']}"]
    for split, seconds in stats["durations_s"].items():
        count = stats["num_utterances"][split]
        lines.append(f"  {split:<22} {count:5d} utterances {seconds / 60:8.2f} min")
    lines.append(f"  speakers: {stats['num_speakers']['train']} training, "
                 f"{stats['num_speakers']['heldout']} held out "
                 f"({', '.join(stats['heldout_speakers'])}); ABX speakers of "
                 + "; ".join(f"{split} {', '.join(ids)}"
                             for split, ids in stats["abx_speakers"].items()))
    frames = stats["phone_frames"]
    total = max(sum(frames.values()), 1)
    ranked = sorted(frames.items(), key=lambda kv: -kv[1])
    share = ", ".join(f"{name} {100 * n / total:.1f}%" for name, n in ranked)
    lines.append(f"  phones: {stats['num_phones']} (silence {100 * stats['silence_fraction']:.1f}%"
                 f" of frames); by frequency: {share}")
    lines.append("  ABX items: " + ", ".join(f"{k} {v}" for k, v in stats["abx_items"].items()))
    return "\n".join(lines)
