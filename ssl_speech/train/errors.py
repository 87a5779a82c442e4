"""The errors training reports to its user: each message names the option or file and the fix.

The entry point (``python -m ssl_speech.train``) prints these, and the library's own
``ValueError``/``FileNotFoundError`` about bad settings, as one ``error: ...`` line.
"""

from __future__ import annotations


class TrainingStoppedError(RuntimeError):
    """Training cannot go on (e.g. too many non-finite steps); the message says why."""


class CollapseError(TrainingStoppedError):
    """A collapse metric fell below its ``trainer.collapse`` threshold."""


class ResumeConfigError(ValueError):
    """The checkpoint to resume was trained with a different config."""


class CollectiveError(RuntimeError):
    """A collective operation across ranks failed or timed out (another rank died or hung)."""


class MissingExtraError(ImportError):
    """An option needs an optional package that is not installed; the message says which."""
