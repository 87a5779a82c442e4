"""Linear phone probe of frozen features, beside the log-mel/MFCC baselines.

    phone-probe --checkpoint runs/cpc-cpc-lstm-seed0
    phone-probe --features DIR --alignments FILE --train-list FILE --test-list FILE
        [--corpus ROOT] [--hidden 256] [--protocol cpc_audio] [--stream DIR]

One linear layer (``--hidden H``: one hidden ReLU layer) trained with frame-level cross-entropy
against CPC_audio-format alignments on the train list; frame accuracy on the held-out
utterances (and held-out speakers where the corpus has them). The default protocol trains to
convergence (standardised features, stopping on a plateau of held-out training utterances);
``--protocol cpc_audio`` is CPC_audio's exactly (raw features, Adam 2e-4, 10 epochs). With
``--corpus`` (or the embedded corpus, when no alignments are given) the log-mel and MFCC
baselines go through the same protocol on the same utterances; a feature directory with its
alignments and list files needs no corpus. Ends with one JSON line, e.g.
``{"accuracy": 0.71, "baseline_accuracy": 0.55, "mfcc_accuracy": 0.58, ...}``.
"""

from __future__ import annotations

import argparse

from ssl_speech.eval import cli
from ssl_speech.eval.evaluation import phone_split
from ssl_speech.eval.features import BASELINE_KINDS, baseline_features_of, open_features
from ssl_speech.eval.probing import best_baseline, probe

_PREFIX = {"model": "", "log_mel": "baseline_", "mfcc": "mfcc_"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_source_options(parser)
    cli.add_corpus_options(parser)
    cli.add_probe_options(parser)
    cli.add_runtime_options(parser)
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = cli.setup_runtime(args)
    inputs = cli.eval_inputs(args)
    split = phone_split(inputs)
    if not split.test_sets:
        raise ValueError(f"no held-out list: {args.test_list!r} does not exist; pass --test-list")
    stage = ("phone_probe",)
    features = open_features(args.features or args.checkpoint,
                             lambda: inputs.utterances_needed(stage), layer=args.layer,
                             device=device, chunk_seconds=args.chunk_seconds,
                             frame_step=args.frame_step)
    sources = {"model": features}
    if inputs.has_audio:
        audio = inputs.utterances_needed(stage)
        sources.update({kind: baseline_features_of(audio, kind) for kind in BASELINE_KINDS})
    else:
        cli.log("no corpus given: the log-mel and MFCC baselines are skipped (pass --corpus "
                "ROOT to probe them on the same utterances)")
    protocol = cli.probe_protocol(args)
    outcomes = probe(sources, split, protocol, device=device, progress=True,
                     frame_store=args.stream, store_dtype=args.store_dtype)
    print(f"phone probe, protocol {protocol.describe()}; frame accuracy:")
    for name, outcome in outcomes.items():
        row = ", ".join(f"{s} {100 * r.accuracy:.2f} % of {r.num_frames} frames"
                        for s, r in outcome.phone.items())
        first = next(iter(outcome.phone.values()))
        state = "" if protocol.stopping is None else (
            f" (stopped at epoch {first.epochs})" if first.converged
            else f" (NOT converged in {first.epochs} epochs)")
        print(f"  {name:<8} {row}{state}")
    figures: dict[str, float | str] = {}
    for name, outcome in outcomes.items():
        for set_name, result in outcome.phone.items():
            key = "accuracy" if set_name == "test" else f"{set_name}_accuracy"
            figures[_PREFIX[name] + key] = result.accuracy
    first_set = next(iter(split.test_sets))
    model = outcomes["model"].phone[first_set]
    best = best_baseline({name: o.phone[first_set].accuracy for name, o in outcomes.items()})
    if best is not None:
        print(f"  model - best baseline ({best[0]}) on {first_set}: "
              f"{100 * (model.accuracy - best[1]):+.2f} points")
        figures["best_baseline_accuracy"] = best[1]
    figures["chance"] = model.chance
    figures["protocol"] = protocol.name
    cli.print_figures(figures)
    return figures


def main(argv: list[str] | None = None) -> int:
    """The command: :func:`run`, a bad input ending in ``error: ...`` and status 1."""
    return cli.command(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
