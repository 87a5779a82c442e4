"""Rank pseudo-labels by their estimated utility for a downstream task, without training.

    python scripts/pseudo_label_utility.py OUT_DIR [--task phone|speaker] [--root CORPUS]
        [--split train] [--candidates f0 voicing ...] [--max-utterances 300]
        [--setting ours|reference] [--no-controls]

The estimate is the conditional dependence of the input and the pseudo-label given the
downstream label (HSIC within each phone or speaker, averaged over classes; lower is more
useful; see ssl_speech/eval/utility.py and docs/pseudo_label_utility.md). Every ranking carries
two controls unless --no-controls: white noise (the `noise` pseudo-label) and a function of the
downstream class (`class_function`), which show where the scale's ends lie. Runs on the
embedded corpus unless --root names a corpus in LibriSpeech layout (phone task: with
--alignments, default ROOT/alignments.txt).
Writes OUT_DIR/utility_<task>.tsv and OUT_DIR/utility_<task>.png, prints the table and ends
with one JSON line of the uniform averages, best first, e.g. {"voicing": 0.0089, "rms": 0.025}.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from ssl_speech.data.corpus import load_corpus
from ssl_speech.data.labels import read_alignments
from ssl_speech.eval.utility import SETTINGS, TASKS, rank_pseudo_labels
from ssl_speech.eval.utility_report import format_table, plot_estimates, write_table
from ssl_speech.signal.pseudo_labels import available_pseudo_labels


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="directory for the table and the plot")
    parser.add_argument("--task", choices=TASKS, default="phone")
    parser.add_argument("--root", default=None, help="corpus root (default: embedded corpus)")
    parser.add_argument("--split", default="train", help="split name or list file ('' for all)")
    parser.add_argument("--alignments", default=None,
                        help="frame labels (default: ROOT/alignments.txt)")
    parser.add_argument("--candidates", nargs="+", default=None,
                        help="pseudo-labels (default: every available one)")
    parser.add_argument("--max-utterances", type=int, default=300,
                        help="seeded subset of the split (0: all)")
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="ours",
                        help="the estimator: ours or the reference code's kernels")
    parser.add_argument("--no-controls", action="store_true",
                        help="leave out the noise and class-function controls")
    parser.add_argument("--chunk-seconds", type=float, default=None,
                        help="speaker task: segment length, 0 for whole utterances (default: "
                        "the setting's, 2 s for ours, whole utterances for reference)")
    parser.add_argument("--num-points", type=int, default=None,
                        help="points each log-mel segment is resampled to (default: the "
                        "setting's)")
    parser.add_argument("--max-per-class", type=int, default=None)
    parser.add_argument("--min-class-size", type=int, default=None)
    parser.add_argument("--variance", default=None,
                        help="RBF variance (per z-scored dimension for ours), or 'median'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.root is None:
        from ssl_speech.data.synthetic import ensure_corpus

        root = ensure_corpus()
    else:
        root = Path(args.root).expanduser()
    corpus = load_corpus(root=root, split=args.split or None)
    utterances = list(corpus)
    if 0 < args.max_utterances < len(utterances):
        chosen = np.random.default_rng(args.seed).permutation(len(utterances))
        utterances = [utterances[i] for i in sorted(chosen[: args.max_utterances])]
    alignments = None
    if args.task == "phone":
        alignments = read_alignments(args.alignments or root / "alignments.txt")
    variance = args.variance
    if variance is not None and variance != "median":
        variance = float(variance)
    chunk: int | None | str = "setting"
    if args.chunk_seconds is not None:
        chunk = round(args.chunk_seconds * 100) if args.chunk_seconds > 0 else None
    estimates = rank_pseudo_labels(
        utterances, args.candidates or available_pseudo_labels(), task=args.task,
        alignments=alignments, setting=args.setting, controls=not args.no_controls,
        chunk_frames=chunk, num_points=args.num_points, max_per_class=args.max_per_class,
        min_class_size=args.min_class_size, variance=variance, seed=args.seed,
        device=args.device, progress=True,
    )
    out = Path(args.out_dir)
    table = write_table(estimates, out / f"utility_{args.task}.tsv")
    plot = plot_estimates(estimates, out / f"utility_{args.task}.png",
                          title=f"{args.task} task, {len(utterances)} utterances, "
                          f"{args.setting} setting")
    print(f"{args.task} task, {len(utterances)} utterances of {root}, {args.setting} setting; "
          "lower is more useful")
    print(format_table(estimates))
    print(f"wrote {table}" + (f" and {plot}" if plot else ""))
    # JSON has no NaN: a candidate without a scored class is null
    print(json.dumps({e.name: None if math.isnan(e.uniform) else round(e.uniform, 6)
                      for e in estimates}))
    return estimates


if __name__ == "__main__":
    main()
