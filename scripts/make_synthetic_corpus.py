"""Generate (or reuse) the embedded synthetic speech corpus and print its statistics.

    python scripts/make_synthetic_corpus.py [--out DIR] [--seed N] [--hours H] [--workers W]

Without ``--out`` the corpus lives in the cache (``$SSL_SPEECH_CACHE`` or
``~/.cache/ssl_speech``). The last line printed is the statistics as one JSON object.
"""

from __future__ import annotations

import argparse
import json

from ssl_speech.data.synthetic import (
    SyntheticCorpusSpec,
    corpus_statistics,
    ensure_corpus,
    ensure_corpus_at,
    format_statistics,
)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="corpus root; reused if it holds the same corpus")
    parser.add_argument("--cache-dir", help="cache directory when --out is not given")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--speakers", type=int, default=24)
    parser.add_argument("--heldout-speakers", type=int, default=4)
    parser.add_argument("--workers", type=int, default=None, help="default: usable CPUs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    spec = SyntheticCorpusSpec(seed=args.seed, hours=args.hours, num_speakers=args.speakers,
                               num_heldout_speakers=args.heldout_speakers)
    progress = not args.quiet
    if args.out:
        root = ensure_corpus_at(args.out, spec, workers=args.workers, progress=progress)
    else:
        root = ensure_corpus(spec, args.cache_dir, workers=args.workers, progress=progress)
    stats = corpus_statistics(root)
    print(format_statistics(stats))
    print(json.dumps(stats))
    return stats


if __name__ == "__main__":
    main()
