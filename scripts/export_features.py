"""Export frozen features: one ``<utt_id>.npy`` (frames x dim, float32) per utterance.

    python scripts/export_features.py runs/cpc-cpc-lstm-seed0 features/cpc --layer context
    python scripts/export_features.py CHECKPOINT OUT_DIR --split train --split test
    python scripts/export_features.py log_mel features/log_mel --corpus /data/LibriSpeech/dev-clean

SOURCE is a checkpoint file, a run directory (its newest checkpoint) or a baseline (``log_mel``,
``mfcc``). OUT_DIR gets ``features.json`` (frame step in seconds, layer, checkpoint path and
sha256, dimension). Long recordings run in chunks of ``--chunk-seconds`` so memory stays
bounded; a second run with the same checkpoint and layer only adds missing utterances. Ends with
one JSON line, e.g. ``{"num_utterances": 560, "frame_step": 0.01, "dim": 256, ...}``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ssl_speech.data.corpus import load_corpus
from ssl_speech.eval import cli
from ssl_speech.eval.features import FEATURES_JSON, ComputedFeatures, export_features, open_features


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
    parser.add_argument("--no-reuse", action="store_true",
                        help="recompute every utterance even if a previous export matches")
    cli.add_runtime_options(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = cli.setup_runtime(args)
    root = args.corpus
    if root is None and args.manifest is None:
        from ssl_speech.data.synthetic import ensure_corpus

        root = ensure_corpus()

    def utterances() -> list:
        if not args.split:
            return list(load_corpus(root=root, manifest=args.manifest))
        found = {}
        for split in args.split:
            found.update({u.id: u for u in load_corpus(root=root, manifest=args.manifest,
                                                       split=split)})
        return list(found.values())

    features = open_features(args.source, utterances, layer=args.layer, device=device,
                             chunk_seconds=args.chunk_seconds)
    if not isinstance(features, ComputedFeatures):
        raise ValueError(f"{args.source} is already a directory of features; pass a checkpoint, "
                         "a run directory, log_mel or mfcc")
    start = time.perf_counter()
    out = export_features(features, args.out_dir, progress=True, reuse=not args.no_reuse)
    seconds = time.perf_counter() - start
    meta = json.loads((Path(out) / FEATURES_JSON).read_text())
    what = meta["layer"] if meta["kind"] == "model" else meta["kind"]
    print(f"{meta['num_utterances']} utterances of {meta['dim']}-dim {what} features every "
          f"{1000 * meta['frame_step']:g} ms in {out} ({seconds:.1f} s)")
    figures = {"out_dir": str(out), "num_utterances": meta["num_utterances"],
               "frame_step": meta["frame_step"], "dim": meta["dim"], "layer": meta["layer"],
               "checkpoint_sha256": meta.get("checkpoint_sha256"), "seconds": seconds}
    cli.print_figures(figures)
    return figures


if __name__ == "__main__":
    cli.run_main(main)
