"""Where the Hydra configs live: one place for the entry point, studies, tests and notebooks."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def config_dir() -> str:
    """The repository's ``configs/`` in a checkout, else the copy installed with the package."""
    checkout = Path(__file__).resolve().parents[1] / "configs"
    if (checkout / "config.yaml").is_file():
        return str(checkout)
    return str(resources.files("ssl_speech._configs"))
