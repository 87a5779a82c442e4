"""Evaluate checkpoints: export, phone probe, ABX, speaker probe, then a report with plots.

    evaluate runs/cpc-cpc-lstm-seed0 [runs/acpc-cpc-lstm-seed0 ...]
    evaluate CKPT --corpus /data/LibriSpeech/train-clean-100 \
        --alignments converted_aligned_phones.txt --train-list train_split.txt \
        --test-list test_split.txt \
        --items /data/abx/dev-clean.item --abx-corpus /data/LibriSpeech/dev-clean

Each SOURCE (a checkpoint file, a run directory, or a directory of exported features) is
exported to ``OUT/features/<name>`` (reused on a second run with the same checkpoint), then
measured: the linear phone probe (trained to convergence by default, ``--protocol
cpc_audio`` for CPC_audio's; held-out utterances and held-out speakers), ABX within and
across speakers on the item files (default: the corpus's ``abx/dev.item``) and the speaker
probe. The log-mel and MFCC baselines go through the same pipeline, and each model is compared
with the better of the two. ``OUT/report.md`` holds the table (model, objective, phone accuracy, ABX
within/across, speaker accuracy, baseline rows) and the plots (scores per checkpoint, the phone
confusion matrix of the best model, training curves from each run's ``metrics.jsonl``). Defaults
to the embedded corpus. Ends with one JSON line: ``{name: {"phone_acc": ..., ...}, ...}``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ssl_speech.eval import cli
from ssl_speech.eval.abx import CONTEXTS
from ssl_speech.eval.evaluation import STAGES, evaluate_source, source_name
from ssl_speech.eval.export import EXPORT_DTYPES
from ssl_speech.eval.features import BASELINE_KINDS
from ssl_speech.eval.report import results_table, write_report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+",
                        help="checkpoint files, run directories or feature directories")
    parser.add_argument("--out", help="report directory (default: runs/eval/<names>)")
    cli.add_model_options(parser)
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                        help="measurements to run (default: all)")
    parser.add_argument("--no-plots", action="store_true", help="write report.md without PNGs")
    parser.add_argument("--export-dtype", choices=EXPORT_DTYPES, default="float32",
                        help="precision of the exported features (float16: half the disk)")
    parser.add_argument("--abx-context", choices=CONTEXTS, default="within",
                        help="ABX triplets share their phone context ('within', the protocol) "
                             "or not ('any')")
    cli.add_corpus_options(parser, abx=True)
    cli.add_probe_options(parser)
    cli.add_runtime_options(parser)
    return parser.parse_args(argv)


def _names(sources: list[str]) -> list[str]:
    names = [source_name(s) for s in sources]
    return [n if names.count(n) == 1 else f"{n}-{i}" for i, n in enumerate(names)]


def run(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = cli.setup_runtime(args)
    inputs = cli.eval_inputs(args)
    names = _names(args.sources)
    out = Path(args.out) if args.out else Path("runs") / "eval" / "+".join(names)[:100]
    protocol = cli.probe_protocol(args)
    stages = list(args.stages)
    jobs = list(zip(names, args.sources))
    if inputs.has_audio:
        jobs += [(kind, kind) for kind in BASELINE_KINDS]
    else:
        cli.log("no corpus given: the baselines and the speaker probe need the audio and are "
                "skipped (pass --corpus ROOT)")
        stages = [s for s in stages if s != "speaker_probe"]
    records = []
    for name, source in jobs:
        cli.log(f"== {name}")
        record = evaluate_source(source, inputs, out / "features", name=name, layer=args.layer,
                                 stages=stages, protocol=protocol,
                                 abx_context=args.abx_context, device=device,
                                 chunk_seconds=args.chunk_seconds, progress=True,
                                 frame_store=args.stream, export_dtype=args.export_dtype)
        cli.log(f"{name}: {record.figures()} in {record.seconds} s")
        records.append(record)
    settings = {"layer": args.layer, "phone probe": protocol.describe(),
                "corpus": inputs.root or inputs.manifest or "none (features only)",
                "ABX items": ", ".join(str(p) for p in inputs.abx_items.values()) or "none",
                "ABX context": args.abx_context}
    path = write_report(records, out, phones=inputs.phone_names, settings=settings,
                        plots=not args.no_plots)
    print(results_table(records))
    print(f"\nreport: {path}")
    figures = {r.name: r.figures() for r in records}
    cli.print_figures(figures)
    return figures


def main(argv: list[str] | None = None) -> int:
    """The command: :func:`run`, a bad input ending in ``error: ...`` and status 1."""
    return cli.command(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
