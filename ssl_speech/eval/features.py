"""Frozen features of a model for every utterance of a corpus, in memory or exported to disk.

Export layout: one ``<utt_id>.npy`` (frames × dim, float32) per utterance and a
``features.json`` with the frame step in seconds, the layer, the checkpoint path and hash, so
the probes and ABX can read a directory of features without the model.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ssl_speech.data.audio import read_audio
from ssl_speech.data.corpus import Corpus

FEATURES_JSON = "features.json"


@torch.no_grad()
def extract_corpus_features(
    model: torch.nn.Module,
    corpus: Corpus | Iterable,
    layer: str = "context",
    chunk_seconds: float = 10.0,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Features ``(frames, dim)`` float32 of each utterance, keyed by utterance id.

    Utterances of any length are handled by ``SSLModel.extract`` in chunks, so memory stays
    bounded. ``frames = num_samples // model.hop``.
    """
    was_training = model.training
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    out: dict[str, np.ndarray] = {}
    utterances = list(corpus)
    for utt in tqdm(utterances, desc=f"features ({layer})", disable=not progress):
        wav = torch.from_numpy(read_audio(utt.path)).to(device)
        feats = model.extract(wav, layer=layer, chunk_seconds=chunk_seconds)
        out[utt.id] = feats.float().cpu().numpy()
    model.train(was_training)
    return out


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_features(
    model: torch.nn.Module,
    corpus: Corpus,
    out_dir: str | Path,
    layer: str = "context",
    checkpoint: str | Path | None = None,
    chunk_seconds: float = 10.0,
    progress: bool = True,
) -> Path:
    """Write one ``.npy`` per utterance and ``features.json``; returns ``out_dir``.

    Features are computed and written one utterance at a time (never all in memory).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    device = next(model.parameters()).device
    dim = None
    for utt in tqdm(list(corpus), desc=f"export ({layer})", disable=not progress):
        wav = torch.from_numpy(read_audio(utt.path)).to(device)
        with torch.no_grad():
            feats = model.extract(wav, layer=layer, chunk_seconds=chunk_seconds)
        array = feats.float().cpu().numpy()
        dim = array.shape[1]
        tmp = out_dir / f".{utt.id}.npy.tmp"
        with open(tmp, "wb") as f:
            np.save(f, array)
        os.replace(tmp, out_dir / f"{utt.id}.npy")
    meta = {
        "frame_step": float(model.hop) / 16000,
        "layer": layer,
        "dim": dim,
        "num_utterances": len(corpus),
        "checkpoint": str(checkpoint) if checkpoint else None,
        "checkpoint_sha256": file_sha256(checkpoint) if checkpoint and Path(checkpoint).is_file()
        else None,
    }
    (out_dir / FEATURES_JSON).write_text(json.dumps(meta, indent=2) + "\n")
    return out_dir


def load_feature_dir(path: str | Path, ids: Iterable[str] | None = None,
                     ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a directory of ``<utt_id>.npy`` files and its ``features.json`` (if present)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"feature directory {path} does not exist: export features first")
    meta_path = path / FEATURES_JSON
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if ids is None:
        files = sorted(path.glob("*.npy"))
    else:
        ids = list(ids)
        files = [path / f"{i}.npy" for i in ids]
        missing = [f.stem for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} of {len(ids)} utterances have no features in {path} "
                f"(e.g. {', '.join(missing[:5])}): export features for this split"
            )
    return {f.stem: np.load(f).astype(np.float32, copy=False) for f in files}, meta
