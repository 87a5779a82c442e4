"""Writing features to disk: one ``<utt_id>.npy`` per utterance and ``features.json``.

The directory format is :class:`~ssl_speech.eval.features.FeatureDir`'s. An export holds one
utterance at a time, writes each file atomically, and resumes an interrupted export of the same
source; ``dtype="float16"`` halves the files (readers get float32 back).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ssl_speech.data.audio import SAMPLE_RATE
from ssl_speech.eval.features import FEATURES_JSON, ComputedFeatures
from ssl_speech.eval.messages import quote_ids

EXPORT_DTYPES = ("float32", "float16")


def _comparable(meta: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("kind", "layer", "checkpoint_sha256", "frame_step")
    return {**{k: meta.get(k) for k in keys}, "dtype": meta.get("dtype", "float32")}


def export_features(
    features: ComputedFeatures,
    out_dir: str | Path,
    ids: Iterable[str] | None = None,
    progress: bool = True,
    reuse: bool = True,
    dtype: str = "float32",
) -> Path:
    """Write one ``<utt_id>.npy`` per utterance and ``features.json``; returns ``out_dir``.

    Utterances are computed and written one at a time, each file atomically. ``features.json``
    is written first with ``"complete": false`` and rewritten at the end, so an interrupted
    export is recognised and, with ``reuse``, resumed: files of the same source (same kind,
    layer, checkpoint hash and frame step) are kept and only missing ones computed. A directory
    exported from another source is cleared of its ``.npy`` files first.

    Args:
        features: what to export (:func:`model_features`, :func:`baseline_features_of`).
        out_dir: the directory (created).
        ids: utterances to export (default: all of ``features``).
        reuse: keep the files of a previous export of the same source.
        dtype: ``float32``, or ``float16`` for half the disk (values rounded to about 3
            significant digits; readers get float32 back).

    Raises:
        ValueError: an id ``features`` does not cover; ``out_dir`` holds ``.npy`` files that no
            export wrote (no ``features.json``).
    """
    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"export dtype must be one of {EXPORT_DTYPES}, got {dtype!r}")
    out_dir = Path(out_dir)
    ids = list(dict.fromkeys(features if ids is None else ids))
    missing = [u for u in ids if u not in features]
    if missing:
        raise ValueError(f"{len(missing)} of {len(ids)} utterances to export are not covered "
                         f"by {features.describe()}: {quote_ids(missing)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_path = out_dir / FEATURES_JSON
    meta = {**features.meta, "frame_step": features.frame_step, "sample_rate": SAMPLE_RATE,
            "dtype": dtype}
    if meta_path.is_file():
        previous = json.loads(meta_path.read_text())
        if not (reuse and _comparable(previous) == _comparable(meta)):
            for stale in out_dir.glob("*.npy"):
                stale.unlink()
    elif next(out_dir.glob("*.npy"), None) is not None:
        raise ValueError(f"{out_dir} holds .npy files but no {FEATURES_JSON}: they were not "
                         "written by export_features; export into an empty directory")
    _write_json(meta_path, {**meta, "complete": False})
    todo = [u for u in ids if not (out_dir / f"{u}.npy").is_file()]
    desc = f"export {meta.get('layer') or meta.get('kind')}"
    for utt in tqdm(todo, desc=desc, disable=not progress):
        array = features[utt].astype(dtype, copy=False)
        tmp = out_dir / f".{utt}.npy.tmp"
        with open(tmp, "wb") as f:
            np.save(f, array)
        os.replace(tmp, out_dir / f"{utt}.npy")
    shapes = [np.load(p, mmap_mode="r").shape for p in sorted(out_dir.glob("*.npy"))]
    dims = sorted({shape[1] for shape in shapes})
    if len(dims) > 1:
        raise ValueError(f"{out_dir} holds features of several dimensions {dims}")
    _write_json(meta_path, {**meta, "dim": dims[0] if dims else None,
                            "num_utterances": len(shapes), "complete": True})
    return out_dir


def _write_json(path: Path, record: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)
