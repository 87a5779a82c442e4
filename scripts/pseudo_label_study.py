"""Validate the pseudo-label utility estimate against pretraining and probing.

    python scripts/pseudo_label_study.py OUT_DIR [--candidates f0 voicing rms ...] [--steps 300]

For each candidate, pretrains the same small model (CPC encoder, LSTM context) by regressing
that pseudo-label, probes it for phones, and reports Spearman's rank correlation between the
utility estimate (lower: predicted more useful) and the probe accuracy. Runs on the embedded
corpus unless --root names another corpus with alignments.txt and splits/. Writes
OUT_DIR/study.md and OUT_DIR/study.json; rerunning continues an interrupted study. Prints the
table and ends with one JSON line: the rank correlations, their p-values and the untrained floor.
"""

from __future__ import annotations

import argparse
import json
import math

from ssl_speech.studies.pseudo_label_study import (
    CANDIDATES,
    StudySettings,
    format_study,
    main_log,
    run_study,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = StudySettings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="directory for runs, results and the summary")
    parser.add_argument("--root", default=None, help="corpus root (default: embedded corpus)")
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES))
    for name in ("steps", "encoder_dim", "context_dim", "window", "batch_size", "warmup_steps",
                 "probe_train_utterances", "probe_test_utterances", "probe_epochs",
                 "estimate_utterances", "max_per_class", "seed", "threads"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int,
                            default=getattr(defaults, name))
    for name in ("lr", "probe_lr"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float,
                            default=getattr(defaults, name))
    parser.add_argument("--loss", choices=("mse", "l1"), default=defaults.loss)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = vars(parse_args(argv))
    out_dir, root = args.pop("out_dir"), args.pop("root")
    args["candidates"] = tuple(args["candidates"])
    study = run_study(out_dir, StudySettings(**args), corpus_root=root, log=main_log)
    print(format_study(study))
    (rho_u, p_u), (rho_w, p_w) = study.spearman_uniform, study.spearman_weighted
    figures = {"spearman_uniform": rho_u, "p_uniform": p_u, "spearman_weighted": rho_w,
               "p_weighted": p_w, "untrained_accuracy": study.untrained_accuracy}
    # JSON has no NaN (a correlation of constant values): null
    print(json.dumps({k: None if math.isnan(v) else round(v, 4) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
