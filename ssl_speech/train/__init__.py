"""Training: the entry point, the trainer, its settings, distributed helpers, preemption.

The package is callable: ``ssl_speech.train(cfg)`` is :func:`ssl_speech.train.api.train`.
Python binds an imported subpackage as an attribute of its parent, so once anything imports
``ssl_speech.train.*`` the name ``ssl_speech.train`` is this package, whatever function
``ssl_speech/__init__`` defined under it; being callable keeps ``ssl_speech.train(cfg)``
working either way.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, cfg: Any) -> Any:
        """Train the run ``cfg`` describes: :func:`ssl_speech.train.api.train`."""
        from ssl_speech.train.api import train

        return train(cfg)


sys.modules[__name__].__class__ = _CallablePackage
