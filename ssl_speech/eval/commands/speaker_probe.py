"""Linear speaker probe on pooled frozen features, beside the log-mel/MFCC baselines.

    speaker-probe --checkpoint runs/cpc-cpc-lstm-seed0
    speaker-probe --features DIR [--corpus ROOT] [--train-list FILE]

The utterances of the train list are split per speaker (a fifth of each speaker's utterances
held out); each utterance's features are mean-pooled (``--pooling``) and a linear classifier is
trained on the rest. Reports speaker accuracy on the held-out utterances, for the model and the
baselines, and ends with one JSON line, e.g. ``{"accuracy": 0.93, "baseline_accuracy": 0.88}``.
"""

from __future__ import annotations

import argparse

from ssl_speech.eval import cli
from ssl_speech.eval.features import BASELINE_KINDS, baseline_features_of, open_features
from ssl_speech.eval.probing import probe_speakers
from ssl_speech.eval.protocols import SpeakerProtocol
from ssl_speech.eval.speaker_probe import POOLINGS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_source_options(parser)
    cli.add_corpus_options(parser)
    group = parser.add_argument_group("speaker probe")
    defaults = SpeakerProtocol()
    group.add_argument("--pooling", choices=POOLINGS, default=defaults.pooling)
    group.add_argument("--test-fraction", type=float, default=defaults.test_fraction,
                       help="share of each speaker's utterances held out")
    group.add_argument("--epochs", type=int, default=defaults.epochs)
    group.add_argument("--lr", type=float, default=defaults.lr)
    group.add_argument("--seed", type=int, default=defaults.seed)
    cli.add_runtime_options(parser)
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = cli.setup_runtime(args)
    inputs = cli.eval_inputs(args)
    utterances = inputs.train_corpus()
    features = open_features(args.features or args.checkpoint, lambda: utterances,
                             layer=args.layer, device=device, chunk_seconds=args.chunk_seconds,
                             frame_step=args.frame_step)
    protocol = SpeakerProtocol(pooling=args.pooling, test_fraction=args.test_fraction,
                               epochs=args.epochs, lr=args.lr, seed=args.seed)
    sources = {"model": features,
               **{kind: baseline_features_of(utterances, kind) for kind in BASELINE_KINDS}}
    speakers = {u.id: u.speaker for u in utterances}
    results = {name: probe_speakers(f, speakers, protocol, device, progress=True)
               for name, f in sources.items()}
    first = results["model"]
    print(f"speaker probe ({args.pooling} pooling, {first.num_speakers} speakers, "
          f"{first.num_utterances} held-out utterances, chance {100 * first.chance:.1f} %):")
    for name, result in results.items():
        print(f"  {name:<8} {100 * result.accuracy:.2f} %")
    figures = {"accuracy": first.accuracy, "baseline_accuracy": results["log_mel"].accuracy,
               "mfcc_accuracy": results["mfcc"].accuracy, "chance": first.chance}
    cli.print_figures(figures)
    return figures


def main(argv: list[str] | None = None) -> int:
    """The command: :func:`run`, a bad input ending in ``error: ...`` and status 1."""
    return cli.command(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
