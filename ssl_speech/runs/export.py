"""Export a trained model as a slim, self-describing directory that leaves the library.

``export_model(checkpoint_or_model, out_dir)`` writes ``config.json`` (encoder and context
configs, sample rate, hop, frame rate, layer names, training provenance) and
``model.safetensors`` (the model's weights only: no optimizer, no RNG states, no objective).
The layout is huggingface_hub's ``PyTorchModelHubMixin`` one, so the directory reloads with
``SSLModel.from_pretrained(out_dir)``, ``ssl_speech.load_model(out_dir)``, ``torch.hub.load``
through the repository's ``hubconf.py`` and the s3prl upstream in
``ssl_speech.integrations.s3prl``; ``model.push_to_hub(repo_id)`` uploads it. See
``docs/export.md``.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path
from typing import Any

from ssl_speech.nn.model import SSLModel
from ssl_speech.runs.checkpoint import file_sha256, load_model


def provenance_of(model: SSLModel) -> dict[str, Any]:
    """Where a loaded model comes from: checkpoint file, hash, step, objective, training config.

    A model loaded from an exported directory keeps that directory's provenance.
    """
    from ssl_speech import __version__

    config = getattr(model, "config", None) or {}
    previous = config.get("provenance")
    if isinstance(previous, dict) and previous:
        provenance = dict(previous)
    else:
        path = getattr(model, "checkpoint_path", None)
        is_file = path is not None and Path(path).is_file()
        objective = config.get("objective") if isinstance(config.get("objective"), dict) else {}
        provenance = {
            "checkpoint": str(Path(path).resolve()) if is_file else None,
            "checkpoint_sha256": file_sha256(path) if is_file else None,
            "step": getattr(model, "checkpoint_step", None),
            "objective": objective.get("_target_"),
            "training_config": {k: v for k, v in config.items() if k != "provenance"},
        }
    provenance["exported_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds")
    provenance["ssl_speech_version"] = __version__
    return provenance


def export_model(checkpoint_or_model: str | Path | SSLModel, out_dir: str | Path) -> Path:
    """Write the slim directory of a checkpoint, run directory, exported directory or model.

    Args:
        checkpoint_or_model: what ``ssl_speech.load_model`` accepts (loaded safely, see
            ``docs/safety.md``), or an ``SSLModel`` that knows its config (``model.config``).
        out_dir: the directory to write (created; its ``config.json`` and
            ``model.safetensors`` are replaced atomically).

    Returns:
        ``out_dir``.
    """
    if isinstance(checkpoint_or_model, SSLModel):
        model = checkpoint_or_model
    else:
        model = load_model(checkpoint_or_model)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"export target {out} exists and is not a directory")
    return model.save_pretrained(out, provenance=provenance_of(model))


def main(argv: list[str] | None = None) -> int:
    """``python -m ssl_speech.runs.export CHECKPOINT OUT_DIR``."""
    parser = argparse.ArgumentParser(
        prog="ssl_speech-export-model",
        description="Export a checkpoint or run directory as config.json + model.safetensors.",
    )
    parser.add_argument("checkpoint", help="checkpoint file, run directory or exported dir")
    parser.add_argument("out_dir", help="directory to write")
    args = parser.parse_args(argv)
    try:
        out = export_model(args.checkpoint, args.out_dir)
    except (OSError, ValueError, ImportError, RuntimeError) as err:
        parser.exit(2, f"error: {err}\n")
    print(f"exported {args.checkpoint} to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
