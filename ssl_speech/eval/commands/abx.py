"""ABX error of frozen features on an item file (Libri-light / ZeroSpeech 2021 protocol).

    abx FEATURES_DIR ITEM_FILE [--frame-step 0.01] [--mode both]
    abx CHECKPOINT ITEM_FILE [--layer context] [--corpus ROOT]

FEATURES_DIR holds one ``<utt_id>.npy`` (frames x dim) per utterance and optionally a
``features.json`` with ``frame_step``. In its place a checkpoint file or run directory (the
model's features are computed from the audio of ``--corpus``, default the embedded corpus, at
the model's frame step), or ``log_mel`` / ``mfcc``. Prints the within- and across-speaker error
in percent and ends with one JSON line of the figures, e.g. ``{"within": 6.1, "across": 8.2}``.
"""

from __future__ import annotations

import argparse
import json
import math

from ssl_speech.data.labels import read_abx_items
from ssl_speech.data.source import load_split_corpus
from ssl_speech.eval import cli
from ssl_speech.eval.abx import CONTEXTS, MODES, FeatureSource, abx_scores
from ssl_speech.eval.features import FeatureDir, check_frame_step, is_feature_dir, open_features
from ssl_speech.eval.inputs import EvalInputs, data_source


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("features", help="directory of <utt_id>.npy feature files, or a "
                                         "checkpoint file, run directory, log_mel or mfcc")
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
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    cli.add_debug_option(parser)
    model = parser.add_argument_group("features computed from audio (checkpoint or baseline)")
    cli.add_model_options(model)
    model.add_argument("--corpus", help="corpus directory holding the item file's audio "
                                        "(default: the embedded corpus); with FEATURES_DIR, "
                                        "checks the features' frame counts against it")
    model.add_argument("--manifest", help="manifest TSV instead of scanning --corpus")
    return parser.parse_args(argv)


def feature_source(args: argparse.Namespace) -> tuple[FeatureSource, float | None]:
    """The features and their frame step: a directory as is, or computed from a model."""
    if is_feature_dir(args.features):
        if args.corpus or args.manifest:  # the audio is at hand: check the frame counts
            directory = FeatureDir(args.features, args.frame_step)
            source = data_source(args.corpus, args.manifest, progress=False)
            check_frame_step(directory, load_split_corpus(source, None, "skip", 0))
        return args.features, args.frame_step

    def utterances() -> list:
        inputs = EvalInputs.resolve(root=args.corpus, manifest=args.manifest,
                                    abx_items=[args.item_file])
        return inputs.utterances_needed(("abx",))

    features = open_features(args.features, utterances, layer=args.layer, device=args.device,
                             chunk_seconds=args.chunk_seconds)
    if args.frame_step is not None and not math.isclose(args.frame_step, features.frame_step):
        raise ValueError(f"--frame-step {args.frame_step} disagrees with the model's frame step "
                         f"{features.frame_step} s; leave it unset")
    return features, features.frame_step


def run(argv: list[str] | None = None) -> dict[str, float | None]:
    args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    read_abx_items(args.item_file)  # a malformed item file fails before a model is loaded
    features, frame_step = feature_source(args)
    result = abx_scores(features, args.item_file, frame_step=frame_step,
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


def main(argv: list[str] | None = None) -> int:
    """The command: :func:`run`, a bad input ending in ``error: ...`` and status 1."""
    return cli.command(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
