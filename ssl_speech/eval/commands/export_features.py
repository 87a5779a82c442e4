"""Export frozen features: one ``<utt_id>.npy`` (frames x dim) per utterance.

    export-features runs/cpc-cpc-lstm-seed0 features/cpc --layer context
    export-features CHECKPOINT OUT_DIR --split train --split test [--dtype float16]
    export-features log_mel features/log_mel --corpus /data/LibriSpeech/dev-clean

SOURCE is a checkpoint file, a run directory (its newest checkpoint) or a baseline (``log_mel``,
``mfcc``). OUT_DIR gets ``features.json`` (frame step in seconds, layer, checkpoint path and
sha256, dimension, dtype); ``--dtype float16`` halves the files (the probes and ABX read
them back as float32). Long recordings run in chunks of ``--chunk-seconds`` so memory stays
bounded; a second run with the same checkpoint and layer only adds missing utterances. Ends with
one JSON line, e.g. ``{"num_utterances": 560, "frame_step": 0.01, "dim": 256, ...}``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ssl_speech.data.source import load_split_corpus
from ssl_speech.eval import cli
from ssl_speech.eval.export import EXPORT_DTYPES, export_features
from ssl_speech.eval.features import (
    FEATURES_JSON,
    ComputedFeatures,
    open_features,
)
from ssl_speech.eval.inputs import data_source


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="checkpoint file, run directory, log_mel or mfcc")
    parser.add_argument("out_dir", help="directory for the .npy files and features.json")
    cli.add_model_options(parser)
    parser.add_argument("--corpus", help="corpus directory (default: the embedded corpus)")
    parser.add_argument("--manifest", help="manifest TSV instead of scanning --corpus")
    parser.add_argument("--split", action="append",
                        help="split name or id-list file; repeat for several (default: every "
                             "utterance of the corpus)")
    parser.add_argument("--dtype", choices=EXPORT_DTYPES, default="float32",
                        help="stored precision (float16: half the disk)")
    parser.add_argument("--no-reuse", action="store_true",
                        help="recompute every utterance even if a previous export matches")
    cli.add_runtime_options(parser)
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = cli.setup_runtime(args)
    source = data_source(args.corpus, args.manifest)

    def utterances() -> list:
        found = {}
        for split in args.split or [None]:
            found.update({u.id: u for u in load_split_corpus(source, split, "skip", 0)})
        return list(found.values())

    features = open_features(args.source, utterances, layer=args.layer, device=device,
                             chunk_seconds=args.chunk_seconds)
    if not isinstance(features, ComputedFeatures):
        raise ValueError(f"{args.source} is already a directory of features; pass a checkpoint, "
                         "a run directory, log_mel or mfcc")
    start = time.perf_counter()
    out = export_features(features, args.out_dir, progress=True, reuse=not args.no_reuse,
                          dtype=args.dtype)
    seconds = time.perf_counter() - start
    meta = json.loads((Path(out) / FEATURES_JSON).read_text())
    what = meta["layer"] if meta["kind"] == "model" else meta["kind"]
    print(f"{meta['num_utterances']} utterances of {meta['dim']}-dim {what} features every "
          f"{1000 * meta['frame_step']:g} ms in {out} ({seconds:.1f} s)")
    figures = {"out_dir": str(out), "num_utterances": meta["num_utterances"],
               "frame_step": meta["frame_step"], "dim": meta["dim"], "layer": meta["layer"],
               "checkpoint_sha256": meta.get("checkpoint_sha256"), "dtype": meta["dtype"],
               "seconds": seconds}
    cli.print_figures(figures)
    return figures


def main(argv: list[str] | None = None) -> int:
    """The command: :func:`run`, a bad input ending in ``error: ...`` and status 1."""
    return cli.command(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
