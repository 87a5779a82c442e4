"""Frozen features of a corpus's utterances: one interface for the probes, ABX and export.

Features are read-only mappings ``utt_id -> (frames, dim)`` float32 arrays with two attributes,
``frame_step`` (seconds per frame) and ``meta`` (what produced them), of two kinds:

- :class:`ComputedFeatures`: computed from the audio on each access, by a model
  (:func:`model_features`; layer ``encoder``, ``context`` or a named context layer
  ``context.N``) or by a spectral baseline (:func:`baseline_features_of`: log-mel, MFCC).
  Nothing is cached: a caller that needs an utterance twice keeps it (:func:`read_many`).
- :class:`FeatureDir`: a directory written by
  :func:`~ssl_speech.eval.export.export_features`: one ``<utt_id>.npy``
  (frames × dim, float32, or float16 when exported so; read back as float32) per utterance
  and ``features.json`` with the frame step in seconds, the dtype, the layer, the checkpoint
  path and its sha256, the corpus root, the dimension and the number of utterances. Arrays
  are read lazily.

Memory: utterances are processed one at a time. The model runs in chunks of ``chunk_seconds``
(:meth:`ssl_speech.nn.model.SSLModel.extract`, recurrent state carried across chunks), so the
activations stay bounded whatever the length; the host holds one utterance's samples and
features, about ``4 (S + T D)`` bytes (0.6 GB for one hour of audio at 256 dimensions), and an
export never holds more than one utterance.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ssl_speech.data.audio import SAMPLE_RATE, read_audio
from ssl_speech.data.corpus import Utterance
from ssl_speech.eval.messages import quote_ids
from ssl_speech.runs.checkpoint import file_sha256, is_exported_dir
from ssl_speech.signal.baseline_features import log_mel_features, mfcc_features

FEATURES_JSON = "features.json"
BASELINE_KINDS = ("log_mel", "mfcc")
DEFAULT_FRAME_STEP = 0.01  # seconds, for a directory without features.json (CPC_audio's step)


def _as_frames(array: np.ndarray | torch.Tensor, utt: str) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().float().cpu().numpy()
    array = np.asarray(array, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"features of {utt!r} must be (frames, dim), got shape {array.shape}")
    return array


# --------------------------------------------------------------------------------------------
# Features computed from audio
# --------------------------------------------------------------------------------------------


class ComputedFeatures(Mapping[str, np.ndarray]):
    """Features computed on access from the audio of a set of utterances.

    Args:
        compute: ``wav (S,) float32 at 16 kHz -> (T, F)`` array or tensor.
        utterances: the utterances this mapping covers (its keys are their ids).
        frame_step: seconds per output frame.
        meta: what computes the features (``kind``, ``layer``, checkpoint, ...); it becomes
            ``features.json`` on export.
    """

    def __init__(
        self,
        compute: Callable[[np.ndarray], np.ndarray | torch.Tensor],
        utterances: Iterable[Utterance],
        frame_step: float,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        if not frame_step > 0:
            raise ValueError(f"frame_step must be > 0 seconds, got {frame_step}")
        self._compute = compute
        # The same utterance may come from two overlapping lists: ids are file stems, so equal
        # ids are the same file.
        self._utterances: dict[str, Utterance] = {u.id: u for u in utterances}
        self.frame_step = float(frame_step)
        self.meta: dict[str, Any] = dict(meta or {})

    def __getitem__(self, utt_id: str) -> np.ndarray:
        try:
            utt = self._utterances[utt_id]
        except KeyError:
            raise KeyError(f"utterance {utt_id!r} is not among the {len(self)} utterances of "
                           f"{self.describe()}") from None
        return _as_frames(self._compute(read_audio(utt.path)), utt_id)

    def __iter__(self) -> Iterator[str]:
        return iter(self._utterances)

    def __len__(self) -> int:
        return len(self._utterances)

    def __contains__(self, utt_id: object) -> bool:
        return utt_id in self._utterances

    def describe(self) -> str:
        kind = self.meta.get("kind", "computed")
        if kind == "model":
            return (f"checkpoint {self.meta.get('checkpoint') or '(in memory)'} "
                    f"(layer {self.meta.get('layer')})")
        return f"{kind} features"


def _layer_is_valid(model: torch.nn.Module, layer: str) -> bool:
    if layer in model.layer_names():
        return True
    prefix = "context.-"
    tail = layer[len(prefix):]
    return layer.startswith(prefix) and tail.isdigit() and 1 <= int(tail) <= len(
        model.layer_names()) - 2


def objective_name(config: Mapping[str, Any] | None) -> str | None:
    """Class name of a resolved config's objective (``"CPC"``, ``"ACPC"``), if it has one."""
    target = ((config or {}).get("objective") or {}).get("_target_")
    return str(target).rsplit(".", 1)[-1] if target else None


def run_dir_of(checkpoint: str | Path) -> Path | None:
    """The run directory of a checkpoint file (``<run>/checkpoints/ckpt-*.pt``) or a run dir."""
    path = Path(checkpoint)
    if path.is_dir():
        return path
    if path.parent.name == "checkpoints":
        return path.parent.parent
    return None


def model_features(
    model: torch.nn.Module,
    utterances: Iterable[Utterance],
    layer: str = "context",
    chunk_seconds: float = 10.0,
    checkpoint: str | Path | None = None,
) -> ComputedFeatures:
    """Features of ``layer`` of an ``SSLModel`` for ``utterances``, on the model's device.

    Args:
        model: an :class:`~ssl_speech.nn.model.SSLModel` (run in eval mode, no gradients).
        layer: ``"encoder"``, ``"context"`` (the last context layer) or ``"context.N"``
            (0-based; ``context.-1`` is the last).
        chunk_seconds: audio per forward pass; bounds activation memory for long recordings.
        checkpoint: the file the model comes from; defaults to ``model.checkpoint_path`` (set
            by ``ssl_speech.load_model``). Its sha256 goes into ``meta``.
    """
    if not _layer_is_valid(model, layer):
        raise ValueError(f"unknown layer {layer!r}; this model has {', '.join(model.layer_names())}"
                         " (context.-1 counts from the last)")
    if not chunk_seconds > 0:
        raise ValueError(f"chunk_seconds must be > 0, got {chunk_seconds}")
    checkpoint = checkpoint if checkpoint is not None else getattr(model, "checkpoint_path", None)
    is_file = checkpoint is not None and Path(checkpoint).is_file()
    config = getattr(model, "config", None)
    run_dir = run_dir_of(checkpoint) if checkpoint is not None else None
    meta = {
        "kind": "model",
        "layer": layer,
        "checkpoint": str(Path(checkpoint).resolve()) if is_file else None,
        "checkpoint_sha256": file_sha256(checkpoint) if is_file else None,
        "step": getattr(model, "checkpoint_step", None),
        "objective": objective_name(config),
        "run_dir": str(run_dir.resolve()) if run_dir is not None else None,
    }

    def compute(wav: np.ndarray) -> torch.Tensor:
        return model.extract(torch.from_numpy(wav), layer=layer, chunk_seconds=chunk_seconds)

    return ComputedFeatures(compute, utterances, model.hop / SAMPLE_RATE, meta)


def baseline_features_of(utterances: Iterable[Utterance], kind: str = "log_mel",
                         ) -> ComputedFeatures:
    """Log-mel (40 bands) or MFCC (13 + deltas) features at 10 ms, frame-aligned with labels."""
    functions = {"log_mel": log_mel_features, "mfcc": mfcc_features}
    if kind not in functions:
        raise ValueError(f"unknown baseline {kind!r}; choose one of {BASELINE_KINDS}")
    return ComputedFeatures(functions[kind], utterances, DEFAULT_FRAME_STEP,
                            {"kind": kind, "layer": None})


# --------------------------------------------------------------------------------------------
# Exported features
# --------------------------------------------------------------------------------------------


def is_feature_dir(path: str | Path) -> bool:
    """True for a directory holding ``features.json`` or ``.npy`` files (and no checkpoints)."""
    path = Path(path)
    if not path.is_dir() or (path / "checkpoints").is_dir():
        return False
    return (path / FEATURES_JSON).is_file() or next(path.glob("*.npy"), None) is not None


class FeatureDir(Mapping[str, np.ndarray]):
    """A directory of exported features, read lazily: ``utt_id -> (frames, dim)`` float32.

    Args:
        path: the directory (``<utt_id>.npy`` files, optional ``features.json``).
        frame_step: seconds per frame; ``None`` takes ``features.json``'s value, else
            :data:`DEFAULT_FRAME_STEP`. A value that disagrees with ``features.json`` is an error.
    """

    def __init__(self, path: str | Path, frame_step: float | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"feature directory {self.path} does not exist: export "
                                    "features first (the export-features command)")
        self._paths = {p.stem: p for p in sorted(self.path.glob("*.npy"))}
        if not self._paths:
            raise ValueError(f"{self.path} holds no <utt_id>.npy files: export features there "
                             "first (the export-features command)")
        meta_path = self.path / FEATURES_JSON
        self.meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        recorded = self.meta.get("frame_step")
        if frame_step is not None and recorded is not None and not math.isclose(
                float(frame_step), float(recorded), rel_tol=1e-6):
            raise ValueError(f"frame step {frame_step} s disagrees with {recorded} s in "
                             f"{meta_path}: pass the features' real frame step or leave it unset")
        step = frame_step if frame_step is not None else recorded
        self.frame_step = float(step) if step is not None else DEFAULT_FRAME_STEP
        if not self.frame_step > 0:
            raise ValueError(f"frame_step must be > 0 seconds, got {self.frame_step}")

    def __getitem__(self, utt_id: str) -> np.ndarray:
        try:
            path = self._paths[utt_id]
        except KeyError:
            raise KeyError(f"utterance {utt_id!r} has no features in {self.path}") from None
        return _as_frames(np.load(path, allow_pickle=False), utt_id)

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def __contains__(self, utt_id: object) -> bool:
        return utt_id in self._paths

    def num_frames(self, utt_id: str) -> int:
        """Frames of one utterance, read from the ``.npy`` header only."""
        return int(np.load(self._paths[utt_id], mmap_mode="r").shape[0])

    def describe(self) -> str:
        return f"feature directory {self.path}"


def check_frame_step(features: FeatureDir, utterances: Iterable[Utterance],
                     tolerance_frames: int = 2) -> int:
    """Check that each utterance has ``num_samples / (frame_step * 16000)`` frames.

    Only utterances present in both are checked (from the ``.npy`` headers, no data read).

    Returns:
        The number of utterances checked.

    Raises:
        ValueError: counts off by more than ``tolerance_frames`` (the message gives how many
            utterances, an example and the frame step their counts imply).
    """
    hop = features.frame_step * SAMPLE_RATE
    bad: list[tuple[str, int, int, float]] = []
    checked = 0
    for utt in utterances:
        if utt.id not in features:
            continue
        checked += 1
        frames, expected = features.num_frames(utt.id), int(utt.num_samples // hop)
        if abs(frames - expected) > tolerance_frames:
            bad.append((utt.id, frames, expected, utt.seconds))
    if bad:
        utt, frames, expected, seconds = bad[0]
        implied = float(np.median([s / max(f, 1) for _, f, _, s in bad]))
        raise ValueError(
            f"frame step {features.frame_step:g} s does not match {len(bad)} of {checked} "
            f"utterances of {features.describe()}: e.g. {utt!r} has {frames} frames for "
            f"{seconds:.2f} s of audio ({expected} expected); the counts imply about "
            f"{implied:.3g} s per frame. Pass the features' real frame step, or re-export them "
            "from the audio of this corpus"
        )
    return checked


def check_present(features: Mapping[str, np.ndarray], ids: Sequence[str], what: str = "",
                  ) -> None:
    """Raise if some ``ids`` have no features; the message counts and names them."""
    missing = [u for u in ids if u not in features]
    if missing:
        where = features.describe() if hasattr(features, "describe") else "the features"
        raise ValueError(
            f"{len(missing)} of {len(ids)} utterances{' of the ' + what if what else ''} have no "
            f"features in {where}: {quote_ids(missing)}. Export features for every utterance of "
            "the lists used, or check that the lists belong to this corpus"
        )


def read_many(
    features: Mapping[str, np.ndarray],
    ids: Iterable[str],
    what: str = "",
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """``{utt: features[utt]}`` for ``ids`` (in order), after checking that all are present.

    Raises:
        ValueError: some ids have no features; the message counts and names them.
    """
    ids = list(dict.fromkeys(ids))
    check_present(features, ids, what)
    desc = f"features{' (' + what + ')' if what else ''}"
    return {u: features[u] for u in tqdm(ids, desc=desc, disable=not progress, leave=False)}


def load_feature_dir(path: str | Path, ids: Iterable[str] | None = None,
                     ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """All (or ``ids``') features of an exported directory in memory, and its ``features.json``."""
    directory = FeatureDir(path)
    return read_many(directory, directory if ids is None else ids), directory.meta


def extract_corpus_features(
    model: torch.nn.Module,
    utterances: Iterable[Utterance],
    layer: str = "context",
    chunk_seconds: float = 10.0,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Features ``(frames, dim)`` float32 of each utterance in memory, keyed by utterance id."""
    utterances = list(utterances)
    computed = model_features(model, utterances, layer, chunk_seconds)
    return read_many(computed, [u.id for u in utterances], what=layer, progress=progress)


def open_features(
    source: str | Path,
    utterances: Callable[[], Iterable[Utterance]] | None = None,
    layer: str = "context",
    device: str | torch.device = "cpu",
    chunk_seconds: float = 10.0,
    frame_step: float | None = None,
) -> FeatureDir | ComputedFeatures:
    """Features from a feature directory, a checkpoint (file or run directory) or a baseline.

    Args:
        source: a directory of exported features; a checkpoint file or run directory (the
            model is loaded onto ``device``); or ``"log_mel"`` / ``"mfcc"``.
        utterances: called for the utterances to compute features of (checkpoint, baseline).
        layer, chunk_seconds: for a checkpoint, see :func:`model_features`.
        frame_step: for a feature directory, see :class:`FeatureDir`.
    """
    name = str(source)
    if name not in BASELINE_KINDS:
        if is_feature_dir(source):
            return FeatureDir(source, frame_step)
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"{source} is neither a feature directory, a checkpoint nor "
                                    f"one of the baselines {BASELINE_KINDS}")
        if path.is_dir() and not (path / "checkpoints").is_dir() and not is_exported_dir(path):
            raise ValueError(f"{source} is neither a feature directory (no .npy files), a run "
                             "directory (no checkpoints/) nor an exported model (no "
                             "config.json + model.safetensors)")
    if utterances is None:
        raise ValueError(f"computing features of {source} needs the corpus's utterances")
    if name in BASELINE_KINDS:
        return baseline_features_of(utterances(), name)
    from ssl_speech.runs.checkpoint import load_model

    model = load_model(source, map_location=device)
    return model_features(model, utterances(), layer, chunk_seconds)
