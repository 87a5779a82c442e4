"""Command-line options shared by the evaluation commands (:mod:`ssl_speech.eval.commands`).

Every evaluation command takes the same corpus options (defaults: the embedded corpus), the
same feature-source options (a checkpoint or a directory of exported features), shows progress
on stderr and ends its stdout with one JSON line of its figures (:func:`print_figures`), so
sweeps can be scripted. A bad input ends a command with ``error: <message>`` and status 1, no
traceback (:func:`command`; ``--debug`` shows it).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ssl_speech.eval.frame_store import DTYPES
from ssl_speech.eval.inputs import EvalInputs
from ssl_speech.eval.protocols import PROTOCOLS, ProbeProtocol


def add_corpus_options(parser: argparse.ArgumentParser, abx: bool = False) -> None:
    """``--corpus --manifest --alignments --phones --train-list --test-list --heldout-list``
    (and ``--items --abx-corpus`` with ``abx``)."""
    group = parser.add_argument_group("corpus (defaults: the embedded corpus and its files)")
    group.add_argument("--corpus", help="corpus directory (LibriSpeech layout)")
    group.add_argument("--manifest", help="manifest TSV instead of scanning --corpus")
    group.add_argument("--alignments", help="frame labels, CPC_audio format (default: "
                                            "<corpus>/alignments.txt)")
    group.add_argument("--phones", help="phone list naming the labels (default: "
                                        "<corpus>/phones.txt)")
    group.add_argument("--train-list", default="train",
                       help="training utterances: a file of ids or a split name (default: train)")
    group.add_argument("--test-list", default="test",
                       help="held-out utterances: a file or split name (default: test)")
    group.add_argument("--heldout-list", help="utterances of held-out speakers (default: the "
                                              "test_heldout_speakers split where it exists)")
    if abx:
        group.add_argument("--items", nargs="+",
                           help="ABX item files or names under <corpus>/abx (default: dev)")
        group.add_argument("--abx-corpus", help="corpus directory of the item files' audio "
                                                "(default: --corpus)")


def add_source_options(parser: argparse.ArgumentParser) -> None:
    """``--features DIR`` or ``--checkpoint PATH`` (one required), ``--layer``, ..."""
    group = parser.add_argument_group("features")
    source = group.add_mutually_exclusive_group(required=True)
    source.add_argument("--features", help="directory of exported <utt_id>.npy features")
    source.add_argument("--checkpoint", help="checkpoint file or run directory")
    add_model_options(group)
    group.add_argument("--frame-step", type=float, default=None,
                       help="seconds per feature frame (default: features.json, else 0.01)")


def add_model_options(parser: argparse.ArgumentParser | Any) -> None:
    parser.add_argument("--layer", default="context",
                        help="model layer: encoder, context or context.N (default: context)")
    parser.add_argument("--chunk-seconds", type=float, default=10.0,
                        help="audio per forward pass when computing features (memory bound)")


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runtime")
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: auto)")
    group.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_debug_option(group)


def add_debug_option(parser: argparse.ArgumentParser | Any) -> None:
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error")


def add_probe_options(parser: argparse.ArgumentParser) -> None:
    """The phone probe's protocol (default: ``converged``; ``cpc_audio``: CPC_audio's exactly)."""
    group = parser.add_argument_group(
        "phone probe (protocols: ssl_speech.eval.protocols; empty options take the protocol's)")
    group.add_argument("--protocol", choices=PROTOCOLS, default="converged",
                       help="converged: standardised features, stop on a plateau of held-out "
                            "training utterances; cpc_audio: raw features, Adam 2e-4, 10 epochs")
    group.add_argument("--epochs", type=int, default=None,
                       help="epoch limit (converged) or number of epochs (cpc_audio)")
    group.add_argument("--lr", type=float, default=None)
    group.add_argument("--batch-size", type=int, default=None, help="frames")
    group.add_argument("--patience", type=int, default=None,
                       help="converged: epochs without improvement before stopping")
    group.add_argument("--hidden", type=int, default=None,
                       help="one hidden ReLU layer of this width instead of the linear probe")
    group.add_argument("--max-train-utterances", type=int, default=None,
                       help="train on this many random utterances of the train list")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--stream", metavar="DIR", default=None,
                       help="stream the training frames through a memory-mapped store in DIR "
                            "(memory: a minibatch and the index, not the corpus)")
    group.add_argument("--store-dtype", choices=DTYPES, default="float32",
                       help="training rows in memory or in the --stream store")


def probe_protocol(args: argparse.Namespace) -> ProbeProtocol:
    if args.protocol == "cpc_audio" and args.patience is not None:
        raise ValueError("--patience applies to the converged protocol; cpc_audio trains a "
                         "fixed number of epochs")
    return ProbeProtocol.named(args.protocol, epochs=args.epochs, lr=args.lr,
                               batch_size=args.batch_size, patience=args.patience,
                               hidden=args.hidden, seed=args.seed,
                               max_train_utterances=args.max_train_utterances)


def eval_inputs(args: argparse.Namespace) -> EvalInputs:
    return EvalInputs.resolve(
        root=args.corpus, manifest=args.manifest, alignments=args.alignments,
        phones=args.phones, train_split=args.train_list, test_split=args.test_list,
        heldout_split=args.heldout_list, abx_items=getattr(args, "items", None),
        abx_root=getattr(args, "abx_corpus", None),
    )


def setup_runtime(args: argparse.Namespace) -> torch.device:
    """Apply ``--threads`` and resolve ``--device auto``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(args.device)


def log(message: str) -> None:
    """A line for the reader, on stderr (stdout ends with the JSON figures)."""
    print(message, file=sys.stderr, flush=True)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None  # JSON has no NaN
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def print_figures(figures: Mapping[str, Any]) -> None:
    """The last stdout line: the figures as one JSON object (NaN as null)."""
    print(json.dumps(_plain(figures)), flush=True)


USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError)


def command(run: Callable[[list[str]], Any], argv: list[str] | None = None) -> int:
    """Run a command's ``run(argv)``; a bad input prints ``error: <message>`` and gives 1.

    Bad inputs (missing files, mismatched ids, wrong frame step, unreadable checkpoints) raise
    errors whose messages say what is wrong and how many; a traceback would only bury them.
    ``--debug`` among the arguments lets the error through with its traceback.

    Returns:
        The exit status: 0, or 1 after a bad input.
    """
    from ssl_speech.runs.checkpoint import CheckpointError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        run(argv)
    except (*USER_ERRORS, CheckpointError) as err:
        if "--debug" in argv:
            raise
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    return 0
