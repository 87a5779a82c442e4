"""A slim, self-describing model directory: ``config.json`` + ``model.safetensors``.

The layout is huggingface_hub's ``PyTorchModelHubMixin`` one (a JSON config next to safetensors
weights under those names), so a directory can be pushed to and pulled from the Hub as it is.
``config.json`` holds::

    {"format": "ssl_speech.SSLModel", "format_version": 1,
     "encoder": {"_target_": "ssl_speech.nn.encoders.CPCEncoder", ...},
     "context": {"_target_": "ssl_speech.nn.context.LSTMContext", ...},
     "sample_rate": 16000, "hop": 160, "frame_rate": 100.0, "frame_step": 0.01,
     "latent_dim": 256, "dim": 256, "layer_names": ["encoder", "context.0"],
     "provenance": {...}}

Loading reads JSON and safetensors only (neither can hold code), builds the model through the
allowlist of :mod:`ssl_speech.nn.model_config` and checks the weights against it.
``safetensors`` is needed to save and load; ``huggingface_hub`` only for Hub repo ids.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ssl_speech.data.audio import SAMPLE_RATE
from ssl_speech.nn.model_config import MAX_PARAMETERS, build_model, check_state_dict

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "ssl_speech.SSLModel"
FORMAT_VERSION = 1


def _safetensors():
    try:
        import safetensors.torch
    except ImportError as err:
        raise ImportError(
            "saving and loading exported models needs safetensors: pip install safetensors "
            "(or pip install 'ssl_speech[export]')"
        ) from err
    return safetensors.torch


def model_description(model, provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``config.json`` content of ``model`` (which must carry ``model.config``)."""
    config = getattr(model, "config", None)
    if not isinstance(config, dict) or "encoder" not in config or "context" not in config:
        raise ValueError(
            "this model does not know its config: build it with "
            "ssl_speech.nn.model_config.build_model({'encoder': ..., 'context': ...}) or load it "
            "with ssl_speech.load_model, so that model.config has encoder and context entries"
        )
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "encoder": config["encoder"],
        "context": config["context"],
        "sample_rate": SAMPLE_RATE,
        "hop": int(model.hop),
        "frame_rate": SAMPLE_RATE / model.hop,
        "frame_step": model.frame_step,
        "latent_dim": int(model.latent_dim),
        "dim": int(model.dim),
        "layer_names": model.hidden_layer_names(),
        "provenance": dict(provenance if provenance is not None
                           else config.get("provenance") or {}),
    }


def _replace_atomically(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_pretrained(model, save_directory: str | Path,
                    provenance: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to ``save_directory`` (created); returns the directory."""
    description = model_description(model, provenance)
    st = _safetensors()
    directory = Path(save_directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {name: t.detach().cpu().contiguous().clone() for name, t in
               model.state_dict().items()}
    _replace_atomically(directory / WEIGHTS_NAME,
                        lambda tmp: st.save_file(weights, tmp, metadata={"format": "pt"}))
    text = json.dumps(description, indent=2, sort_keys=False) + "\n"
    _replace_atomically(directory / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text))
    return directory


def _local_or_download(name: str | Path, revision: str | None, cache_dir: str | Path | None,
                       local_files_only: bool, token: str | bool | None) -> Path:
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists() or str(name).startswith((".", "/", "~")) or str(name).count("/") != 1:
        raise FileNotFoundError(
            f"{name} is not an exported model directory (it needs {CONFIG_NAME} and "
            f"{WEIGHTS_NAME}); export one with ssl_speech.export_model"
        )
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:
        raise ImportError(
            f"{name} is not a local directory; loading a Hub repo id needs huggingface_hub: "
            "pip install huggingface_hub"
        ) from err
    try:
        return Path(snapshot_download(str(name), revision=revision, cache_dir=cache_dir,
                                      local_files_only=local_files_only, token=token,
                                      allow_patterns=[CONFIG_NAME, WEIGHTS_NAME]))
    except Exception as err:  # offline, unknown repo, no access
        raise FileNotFoundError(
            f"{name} is neither a local exported directory nor a Hub repo that could be "
            f"downloaded ({type(err).__name__}: {err})"
        ) from err


def read_description(directory: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of an exported directory, its format checked."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{directory} has no {CONFIG_NAME}: not an exported model")
    try:
        description = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise ValueError(f"{path} is not an ssl_speech model config (no format {FORMAT!r})")
    if description.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has format_version {description.get('format_version')!r}; "
                         f"this ssl_speech reads version {FORMAT_VERSION}: upgrade ssl_speech")
    return description


def from_pretrained(name: str | Path, *, map_location: str | torch.device = "cpu",
                    revision: str | None = None, cache_dir: str | Path | None = None,
                    local_files_only: bool = False, token: str | bool | None = None,
                    extra_classes: dict[str, type] | None = None,
                    max_parameters: int | None = None):
    """The ``SSLModel`` of an exported directory or Hub repo, in eval mode; see the module."""
    directory = _local_or_download(name, revision, cache_dir, local_files_only, token)
    description = read_description(directory)
    weights_path = directory / WEIGHTS_NAME
    if not weights_path.is_file():
        raise FileNotFoundError(f"{directory} has no {WEIGHTS_NAME}: the export is incomplete")
    source = str(directory)
    model = build_model(description, source, extra_classes,
                        MAX_PARAMETERS if max_parameters is None else max_parameters)
    try:
        state = _safetensors().load_file(str(weights_path), device="cpu")
    except ImportError:
        raise
    except Exception as err:  # truncated file, header that lies about sizes
        raise ValueError(f"cannot read {weights_path}: {err}") from err
    check_state_dict(model, state, source)
    model.load_state_dict(state)
    model.to(map_location)
    model.eval()
    model.config = description
    return model


def push_to_hub(model, repo_id: str, *, private: bool | None = None, token: str | None = None,
                commit_message: str = "Upload ssl_speech model",
                provenance: dict[str, Any] | None = None) -> str:
    """Upload ``model`` as an exported directory to the Hub repo ``repo_id``; returns its URL."""
    try:
        from huggingface_hub import HfApi
    except ImportError as err:
        raise ImportError("push_to_hub needs huggingface_hub: pip install huggingface_hub") \
            from err
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp, provenance)
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message)
    return str(url)
