"""Hydra entry point: ``python -m ssl_speech.train [group=option ...] [key=value ...]``.

Also under torchrun: ``torchrun --nproc_per_node=N -m ssl_speech.train ...``. The run is
:func:`ssl_speech.train.api.train` on the composed config. A user error (a bad option, a
missing corpus, a refused resume) prints one ``error: ...`` line naming the option and the fix
and exits with code 1; ``HYDRA_FULL_ERROR=1`` shows the full traceback instead.
"""

from __future__ import annotations

if __name__ == "__main__":  # from the first moment: a preemption signal during start-up is kept
    from ssl_speech.train.preemption import catch_from_start

    catch_from_start()

import importlib.util
import os
import sys
import warnings

import hydra
from omegaconf import DictConfig

from ssl_speech.config import config_dir, resolve_run_config
from ssl_speech.runs.checkpoint import CheckpointError
from ssl_speech.runs.metrics_log import MetricsLogError
from ssl_speech.train.api import RunResult, train
from ssl_speech.train.errors import CollectiveError, MissingExtraError, TrainingStoppedError

# Kept for callers of the former name; the function is ssl_speech.train.api.train.
run = train
__all__ = ["RunResult", "main", "run", "train"]

# Errors whose message is written for the user (option or file named, fix said).
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError,
               CheckpointError, MetricsLogError, TrainingStoppedError, CollectiveError,
               MissingExtraError)
SLURM_HINT = ("error: hydra/launcher={choice} needs Hydra's submitit launcher, which is not "
              "installed: pip install 'ssl_speech[slurm]' (or pip install "
              "hydra-submitit-launcher)")
SUBMITIT_LAUNCHERS = ("slurm", "submitit_slurm", "submitit_local")


def _full_errors() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR", "0") == "1"


def _one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    return f"warning: {message}\n"


def _check_launcher(argv: list[str]) -> None:
    """``hydra/launcher=slurm`` without the extra: say what to install (Hydra cannot)."""
    for arg in argv:
        group, _, choice = arg.partition("=")
        if group.lstrip("+~") != "hydra/launcher" or choice not in SUBMITIT_LAUNCHERS:
            continue
        try:
            found = importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher")
        except ModuleNotFoundError:
            found = None
        if found is None:
            print(SLURM_HINT.format(choice=choice), file=sys.stderr)
            sys.exit(1)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        train(resolve_run_config(cfg))
    except USER_ERRORS as error:
        if _full_errors():
            raise
        print(f"error: {error}\n(HYDRA_FULL_ERROR=1 shows the traceback)", file=sys.stderr)
        sys.exit(1)


def main() -> None:
    """``python -m ssl_speech.train``: check what Hydra cannot, then run Hydra's main."""
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    if not _full_errors():
        warnings.formatwarning = _one_line_warning
    _check_launcher(sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()
