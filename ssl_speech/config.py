"""The Hydra configs and their composition: one place for the entry point, studies, tests and
notebooks.

:func:`compose` gives the same resolved config as ``python -m ssl_speech.train`` with the same
overrides, without the command line: ``run_name`` and ``run_dir`` are filled from the chosen
config groups and the seed exactly as the command does (``configs/config.yaml``), so a notebook
or a study finds the same run directory the command would. The entry point itself finishes its
config with :func:`resolve_run_config`, the function :func:`compose` ends with.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def config_dir() -> str:
    """The repository's ``configs/`` in a checkout, else the copy installed with the package."""
    checkout = Path(__file__).resolve().parents[1] / "configs"
    if (checkout / "config.yaml").is_file():
        return str(checkout)
    return str(resources.files("ssl_speech._configs"))


def resolve_run_config(cfg: DictConfig) -> DictConfig:
    """A resolved copy of ``cfg`` without its ``hydra`` node (struct: unknown keys are errors).

    ``${hydra:...}`` interpolations (``run_name``, ``run_dir``) need Hydra's run config set:
    inside ``@hydra.main``, or as :func:`compose_with_choices` sets it.
    """
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)  # type: ignore[union-attr]
    out = OmegaConf.create(plain)
    OmegaConf.resolve(out)
    OmegaConf.set_struct(out, True)
    return out


def compose_with_choices(overrides: Sequence[str] | None = None,
                         ) -> tuple[DictConfig, dict[str, str]]:
    """The resolved training config for ``overrides`` and the option chosen in each config
    group (``{"objective": "cpc", "encoder": "logmel", ...}``; Hydra's own groups left out).

    Raises Hydra's ``ConfigCompositionException`` for an unknown group option or key.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides or ()),
                            return_hydra_config=True)
    choices = {str(k): str(v) for k, v in cfg.hydra.runtime.choices.items()
               if not str(k).startswith("hydra/") and v is not None}
    # ${hydra:...} resolves against Hydra's global run config, which the command line sets
    # before the run; here it is set for the resolution only, then put back as it was.
    holder = HydraConfig.instance()
    previous = holder.cfg
    holder.set_config(cfg)
    try:
        resolved = resolve_run_config(cfg)
    finally:
        holder.cfg = previous
    return resolved, choices


def compose(overrides: Sequence[str] | None = None) -> DictConfig:
    """The resolved training config for ``overrides``, as ``python -m ssl_speech.train
    *overrides`` would run it (``run_name``/``run_dir`` included)::

        cfg = compose(["objective=acpc", "trainer.max_steps=200"])
    """
    return compose_with_choices(overrides)[0]
