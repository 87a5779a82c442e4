"""ssl_speech: contrastive self-supervised speech representation learning.

The names a notebook needs, importable from the top::

    import ssl_speech

    cfg = ssl_speech.compose(["objective=acpc", "trainer.max_steps=200"])
    result = ssl_speech.train(cfg)
    ssl_speech.export_model(result.run_dir, "exported/my_model")
    model = ssl_speech.load_model("exported/my_model")   # or SSLModel.from_pretrained(...)
    layers = model.extract(wav, sample_rate=16000, layers="all")

They are loaded on first use (module ``__getattr__``), so ``import ssl_speech.data`` does not
import torch's training machinery, and the rooms below keep importing only from below them
(the import contract in pyproject.toml): the package root is a doorway, not a room.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the module that defines it. Resolved with importlib on first access: the rooms that
# read ``ssl_speech.__version__`` (the trainer, the exporter) must not appear to import the
# rooms above them through this file.
_LAZY = {
    "compose": "ssl_speech.config",
    "train": "ssl_speech.train.api",
    "RunResult": "ssl_speech.train.api",
    "load_model": "ssl_speech.runs.checkpoint",
    "export_model": "ssl_speech.runs.export",
    "SSLModel": "ssl_speech.nn.model",
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and editors only
    from ssl_speech.config import compose
    from ssl_speech.nn.model import SSLModel
    from ssl_speech.runs.checkpoint import load_model
    from ssl_speech.runs.export import export_model
    from ssl_speech.train.api import RunResult, train


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ssl_speech' has no attribute {name!r}")
    if name == "train":
        # ``ssl_speech.train`` is also the name of the training subpackage, which the import
        # system binds here once any of its modules is imported. A callable subpackage is the
        # function's stand-in; until then the function itself is returned.
        package = importlib.import_module("ssl_speech.train")
        if callable(package):
            return package
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["RunResult", "SSLModel", "__version__", "compose", "export_model", "load_model",
           "train"]
