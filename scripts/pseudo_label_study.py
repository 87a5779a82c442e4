"""Validate the pseudo-label utility estimate against pretraining and probing.

    python scripts/pseudo_label_study.py OUT_DIR [--candidates f0 voicing rms ... noise
        class_function] [--seeds 0 1] [--settings ours reference] [--steps 1500]

For each candidate and seed, pretrains the same model (log-mel encoder, LSTM context) on that
candidate, probes it for phones and speakers, and reports Spearman's rank correlation (with a
permutation p-value and a bootstrap interval) between each estimator setting's utility estimate
(lower: predicted more useful) and the probe accuracy of each task. Runs on the embedded corpus
unless --root names another corpus with alignments.txt and splits/. Writes OUT_DIR/study.md,
OUT_DIR/study.json and OUT_DIR/study.png; rerunning continues an interrupted study. Prints the
table and ends with one JSON line: the correlations and the share of runs above the untrained
model. See docs/pseudo_label_utility.md for the full command and how to check the budget first.
"""

from __future__ import annotations

import argparse
import json

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
    parser.add_argument("--seeds", nargs="+", type=int, default=list(defaults.seeds))
    parser.add_argument("--settings", nargs="+", default=list(defaults.estimator_settings),
                        help="estimator settings to correlate (ours, reference)")
    parser.add_argument("--encoder", default=defaults.encoder, help="encoder config (logmel)")
    parser.add_argument("--class-function-tasks", nargs="+",
                        default=list(defaults.class_function_tasks),
                        help="tasks whose class function is trained (phone needs frame labels "
                        "in the training batches)")
    for name in ("steps", "encoder_dim", "context_dim", "window", "batch_size", "warmup_steps",
                 "probe_train_utterances", "probe_test_utterances", "probe_epochs",
                 "speaker_utterances", "speaker_epochs", "estimate_utterances", "threads"):
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
    args["estimator_settings"] = tuple(args.pop("settings"))
    args["candidates"], args["seeds"] = tuple(args["candidates"]), tuple(args["seeds"])
    args["class_function_tasks"] = tuple(args["class_function_tasks"])
    study = run_study(out_dir, StudySettings(**args), corpus_root=root, log=main_log)
    print(format_study(study))
    # JSON has no NaN (a correlation of constant values): null
    clean = json.loads(json.dumps({"correlations": study.correlations,
                                   "above_untrained": study.above_untrained}),
                       parse_constant=lambda _: None)
    print(json.dumps(clean))


if __name__ == "__main__":
    main()
