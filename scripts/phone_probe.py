"""Linear phone probe of frozen features (CPC_audio protocol), beside the log-mel/MFCC baselines.

    python scripts/phone_probe.py --checkpoint runs/cpc-cpc-lstm-seed0
    python scripts/phone_probe.py --features DIR --alignments FILE --train-list FILE \
        --test-list FILE [--corpus ROOT] [--hidden 256]

One linear layer (``--hidden H``: one hidden ReLU layer) trained with frame-level cross-entropy
against CPC_audio-format alignments, Adam 2e-4, 10 epochs, on the train list; frame accuracy on
the held-out utterances (and held-out speakers where the corpus has them). The log-mel and MFCC
baselines go through the same protocol on the same utterances (their audio comes from
``--corpus``). Ends with one JSON line, e.g. ``{"accuracy": 0.71, "baseline_accuracy": 0.55}``.
"""

from __future__ import annotations

import argparse

from ssl_speech.eval import cli
from ssl_speech.eval.evaluation import compare_phone_probes
from ssl_speech.eval.features import BASELINE_KINDS, baseline_features_of, open_features


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_source_options(parser)
    cli.add_corpus_options(parser)
    cli.add_probe_options(parser)
    cli.add_runtime_options(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = cli.setup_runtime(args)
    inputs = cli.eval_inputs(args)
    tests = inputs.phone_test_sets()
    if not tests:
        raise ValueError(f"no held-out list: {args.test_list!r} does not exist; pass --test-list")
    stage = ("phone_probe",)
    features = open_features(args.features or args.checkpoint,
                             lambda: inputs.utterances_needed(stage), layer=args.layer,
                             device=device, chunk_seconds=args.chunk_seconds,
                             frame_step=args.frame_step)
    audio = inputs.utterances_needed(stage)  # the baselines' audio
    sources = {"model": features,
               **{kind: baseline_features_of(audio, kind) for kind in BASELINE_KINDS}}
    protocol = cli.probe_protocol(args)
    names = inputs.phone_names
    results = compare_phone_probes(
        sources, inputs.labels, inputs.train_ids(),
        tests, protocol, len(names) if names else None, device, progress=True)
    probe = "linear" if protocol.hidden is None else f"one hidden layer of {protocol.hidden}"
    print(f"phone probe ({probe}, {protocol.epochs} epochs, lr {protocol.lr:g}), frame accuracy:")
    for name, by_set in results.items():
        row = ", ".join(f"{s} {100 * r.accuracy:.2f} % of {r.num_frames} frames"
                        for s, r in by_set.items())
        print(f"  {name:<8} {row}")
    figures: dict[str, float] = {}
    for name, by_set in results.items():
        prefix = {"model": "", "log_mel": "baseline_", "mfcc": "mfcc_"}[name]
        for split, result in by_set.items():
            key = "accuracy" if split == "test" else f"{split}_accuracy"
            figures[prefix + key] = result.accuracy
    if "test" in results["model"]:
        figures["chance"] = results["model"]["test"].chance
    cli.print_figures(figures)
    return figures


if __name__ == "__main__":
    cli.run_main(main)
