"""ABX error of exported features on an item file (Libri-light / ZeroSpeech 2021 protocol).

    python scripts/abx.py FEATURES_DIR ITEM_FILE [--frame-step 0.01] [--mode both]

FEATURES_DIR holds one ``<utt_id>.npy`` (frames x dim) per utterance and optionally a
``features.json`` with ``frame_step``. Prints the within- and across-speaker error in percent
and ends with one JSON line of the figures, e.g. ``{"within": 6.1, "across": 8.2}``.
"""

from __future__ import annotations

import argparse
import json
import math

from ssl_speech.eval.abx import CONTEXTS, MODES, FeatureSource, abx_scores


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("features", help="directory of <utt_id>.npy feature files")
    parser.add_argument("item_file", help="ABX item file (file onset offset phone prev next "
                                          "speaker)")
    parser.add_argument("--frame-step", type=float, default=None,
                        help="seconds between feature frames (default: features.json, else "
                             "0.01)")
    parser.add_argument("--mode", choices=MODES, default="both", help="speaker condition")
    parser.add_argument("--context", choices=CONTEXTS, default="within",
                        help="'within' (the protocol) or 'any' (contexts ignored)")
    parser.add_argument("--seed", type=int, default=3459)
    parser.add_argument("--max-size-group", type=int, default=10,
                        help="tokens drawn per group")
    parser.add_argument("--max-x-across", type=int, default=5,
                        help="X speakers drawn per (A, B) across speakers")
    parser.add_argument("--device", default="cpu")
    return parser.parse_args(argv)


def feature_source(args: argparse.Namespace) -> FeatureSource:
    """What the features come from: here a directory; a model would give a callable."""
    return args.features


def main(argv: list[str] | None = None) -> dict[str, float | None]:
    args = parse_args(argv)
    result = abx_scores(feature_source(args), args.item_file, frame_step=args.frame_step,
                        mode=args.mode, context=args.context, max_size_group=args.max_size_group,
                        max_x_across=args.max_x_across, seed=args.seed, device=args.device,
                        progress=True)
    print(f"{result.num_tokens} tokens of {result.num_items} items "
          f"({result.num_dropped} without frames), frame step {result.frame_step} s, "
          f"{args.context} context")
    for mode, score in result.scores.items():
        print(f"ABX {mode} speaker: {score.error:.2f} % ({score.num_groups} groups)")
    # JSON has no NaN: a condition without triplets is null
    figures = {m: (None if math.isnan(e) else round(e, 4)) for m, e in result.errors.items()}
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
