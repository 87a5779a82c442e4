"""Checkpoints: one dict of named states, written atomically, verified on load.

A checkpoint is a plain dict readable with ``torch.load(weights_only=True)``: tensors, numbers,
strings, lists and dicts only (the resolved config is stored as a plain container, RNG states as
tensors). Files are named ``ckpt-<step:08d>.pt`` in ``<run_dir>/checkpoints/`` with a sidecar
``.sha256`` written after the checkpoint itself; a checkpoint without a matching sidecar is
incomplete or corrupt and is skipped with a warning in favour of the previous one.

``load_model`` rebuilds a model from a checkpoint, run directory or exported directory without
running anything the file names (see ``docs/safety.md``).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from ssl_speech.nn.model import SSLModel
from ssl_speech.nn.model_config import MAX_PARAMETERS, build_model, check_state_dict
from ssl_speech.nn.pretrained import CONFIG_NAME, WEIGHTS_NAME

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^ckpt-(\d{8})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message names the file and what to do."""


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"ckpt-{step:08d}.pt"


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write_failed(path: Path, err: BaseException) -> CheckpointError:
    full = (isinstance(err, OSError) and err.errno == errno.ENOSPC) or "No space left" in str(err)
    hint = (
        "the disk is full: free space, or keep fewer checkpoints (trainer.keep_last)"
        if full else "check that the directory is writable and has space"
    )
    return CheckpointError(
        f"cannot write checkpoint {path}: {err}. {hint.capitalize()}; the checkpoints written "
        "before are untouched, and a resume starts from the newest of them."
    )


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete temporary files left by checkpoint writes that were killed; returns them."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = [p for p in directory.iterdir() if p.name.startswith(".ckpt-")
             and p.name.endswith(".tmp")]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` so that a kill at any byte leaves no usable-looking wreck.

    Order: temporary file in the same directory, ``torch.save``, fsync, hash; the old sidecar
    (if ``path`` is re-saved) is removed; rename onto ``path``; the ``.sha256`` sidecar written
    the same way; the directory fsynced. A kill before the sidecar's rename leaves ``path``
    without a sidecar, which :func:`latest_valid_checkpoint` skips; temporaries of killed
    writes are removed by the next save.

    Raises:
        CheckpointError: the write failed (disk full, read-only directory); the temporary file
            is removed and earlier checkpoints are untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    sidecar = path.with_name(path.name + ".sha256")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        digest = file_sha256(tmp)
        sidecar.unlink(missing_ok=True)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        Path(tmp).unlink(missing_ok=True)
        raise _write_failed(path, err) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        _atomic_write_bytes(sidecar, f"{digest}  {path.name}\n".encode())
        _fsync_dir(path.parent)
    except OSError as err:
        path.unlink(missing_ok=True)  # unverifiable without its sidecar
        raise _write_failed(path, err) from err
    return path


def verify_checkpoint(path: str | Path) -> str | None:
    """Return ``None`` if the file matches its sidecar hash, else the reason it does not."""
    path = Path(path)
    sidecar = path.with_name(path.name + ".sha256")
    if not path.is_file():
        return "file is missing"
    if not sidecar.is_file():
        return "no .sha256 sidecar (the write did not complete)"
    expected = sidecar.read_text().split()[0] if sidecar.read_text().strip() else ""
    actual = file_sha256(path)
    if actual != expected:
        return f"content hash {actual[:12]}… does not match the recorded {expected[:12]}…"
    return None


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint files of a run, oldest first (by step)."""
    directory = Path(run_dir) / CHECKPOINT_DIR
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_valid_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint that passes verification; corrupt ones are skipped with a warning."""
    for path in reversed(list_checkpoints(run_dir)):
        problem = verify_checkpoint(path)
        if problem is None:
            return path
        warnings.warn(
            f"checkpoint {path} is unusable ({problem}); falling back to the previous one. "
            "Delete it once you have looked at it.",
            stacklevel=2,
        )
    return None


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints (``keep_last <= 0`` keeps all)."""
    if keep_last <= 0:
        return
    for path in list_checkpoints(run_dir)[:-keep_last]:
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".sha256").unlink(missing_ok=True)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint file, or the newest valid checkpoint of a run directory.

    Only plain data is read (``torch.load(weights_only=True)``): a file holding pickled objects
    or code is refused, and so is a tensor whose stored bytes are fewer than it declares
    (``torch.load`` checks each record against its declared size; it does not with ``mmap``,
    which is why it is not used here).
    """
    path = Path(path)
    if path.is_dir():
        found = latest_valid_checkpoint(path)
        if found is None:
            raise CheckpointError(
                f"no usable checkpoint in {path / CHECKPOINT_DIR}: train first, or pass a file"
            )
        path = found
    elif not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    elif path.with_name(path.name + ".sha256").is_file():
        problem = verify_checkpoint(path)
        if problem is not None:
            raise CheckpointError(f"checkpoint {path} is corrupt: {problem}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, wrong format, pickled code objects
        raise CheckpointError(
            f"cannot read checkpoint {path}: {err}. Checkpoints are read as plain data only; "
            "a file holding pickled objects or code is refused."
        ) from err
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not an ssl_speech checkpoint (no 'model' entry)")
    state["path"] = str(path)
    return state


def is_exported_dir(path: str | Path) -> bool:
    """True for a directory written by ``export_model`` (``config.json`` + weights)."""
    path = Path(path)
    return (path / CONFIG_NAME).is_file() and (path / WEIGHTS_NAME).is_file()


def load_model(path: str | Path, map_location: str | torch.device = "cpu",
               extra_classes: dict[str, type] | None = None,
               max_parameters: int = MAX_PARAMETERS) -> SSLModel:
    """Rebuild the ``SSLModel`` stored in a checkpoint or exported directory, in eval mode.

    ``path`` is a checkpoint file, a run directory (its newest valid checkpoint) or a directory
    written by :func:`ssl_speech.runs.export.export_model`. The model is built from the stored
    ``encoder`` and ``context`` configs through :func:`ssl_speech.nn.model_config.build_model`:
    only the library's own model classes (plus ``extra_classes``, if the caller trusts more),
    checked over the whole config before anything is built; the stored weights must match the
    built model's names and shapes. Loading never calls anything else a file names.

    Attributes set on the model: ``config`` (the stored config as a plain dict),
    ``checkpoint_path`` (the weights file), ``checkpoint_step``.

    Raises:
        CheckpointError: the file is missing, corrupt or not a checkpoint.
        UnsafeConfigError: the config names something else, or the weights do not fit.
    """
    path = Path(path)
    if (path / CONFIG_NAME).is_file() and not (path / CHECKPOINT_DIR).is_dir():
        model = SSLModel.from_pretrained(path, map_location=map_location,
                                         extra_classes=extra_classes,
                                         max_parameters=max_parameters)
        provenance = model.config.get("provenance")
        step = provenance.get("step") if isinstance(provenance, dict) else None
        model.checkpoint_path = str(path / WEIGHTS_NAME)
        model.checkpoint_step = step if isinstance(step, int) else 0
        return model
    state = load_checkpoint(path, map_location="cpu")
    source = state["path"]
    config = state.get("config")
    if not isinstance(config, dict) or "encoder" not in config or "context" not in config:
        raise CheckpointError(f"{source} has no encoder/context config to rebuild from")
    model = build_model(config, source, extra_classes, max_parameters)
    check_state_dict(model, state["model"], source)
    model.load_state_dict(state["model"])
    step = state.get("step", 0)
    model.to(map_location)
    model.eval()
    model.config = config
    model.checkpoint_path = source
    model.checkpoint_step = step if isinstance(step, int) else 0
    return model


def library_versions() -> dict[str, str]:
    """The versions a checkpoint records (ssl_speech, torch, torchaudio, Python)."""
    import platform

    import ssl_speech

    versions = {"ssl_speech": ssl_speech.__version__, "torch": str(torch.__version__),
                "python": platform.python_version()}
    try:
        import torchaudio

        versions["torchaudio"] = str(torchaudio.__version__)
    except ImportError:
        pass
    return versions
