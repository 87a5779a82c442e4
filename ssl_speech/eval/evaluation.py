"""One feature source through the evaluation: export, phone probe, ABX, speaker probe.

:func:`evaluate_source` runs the whole pipeline for a checkpoint, a baseline or a feature
directory: export (for a checkpoint or a baseline) to a feature directory, then the
measurements on it, each timed, and returns an :class:`EvalRecord`. Where the data lives is
:class:`~ssl_speech.eval.inputs.EvalInputs`; the probes are :func:`ssl_speech.eval.probing.probe`
(protocols in :mod:`ssl_speech.eval.protocols`); ABX is :mod:`ssl_speech.eval.abx`.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ssl_speech.data.corpus import Utterance
from ssl_speech.eval.abx import ABXResult, abx_scores
from ssl_speech.eval.export import export_features
from ssl_speech.eval.features import (
    BASELINE_KINDS,
    ComputedFeatures,
    FeatureDir,
    check_frame_step,
    is_feature_dir,
    open_features,
    run_dir_of,
)
from ssl_speech.eval.inputs import STAGES, EvalInputs
from ssl_speech.eval.phone_probe import ProbeResult
from ssl_speech.eval.probing import Features, ProbeSplit, probe_phones, probe_speakers
from ssl_speech.eval.protocols import CONVERGED, SPEAKER, ProbeProtocol, SpeakerProtocol
from ssl_speech.eval.speaker_probe import SpeakerProbeResult

__all__ = ["STAGES", "EvalInputs", "EvalRecord", "ProbeProtocol", "SpeakerProtocol", "abx_of",
           "evaluate_features", "evaluate_source", "phone_split", "source_name"]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def phone_split(inputs: EvalInputs) -> ProbeSplit:
    """The phone probe's utterances and labels as the inputs give them."""
    names = inputs.phone_names
    return ProbeSplit(inputs.labels, inputs.train_ids(), inputs.phone_test_sets(),
                      len(names) if names else None)


def abx_of(
    features: Features,
    items: Mapping[str, str | Path],
    context: str = "within",
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, ABXResult]:
    """ABX within and across speakers on each item file, at the features' frame step.

    ``context="any"`` pools the phone contexts (for item files whose contexts rarely repeat,
    such as the embedded corpus's: its ``dev`` items give 4 within-speaker groups under the
    protocol's within-context condition and 13,534 with any context).
    """
    return {name: abx_scores(features, path, frame_step=features.frame_step, context=context,
                             device=device, progress=progress)
            for name, path in items.items()}


@dataclass
class EvalRecord:
    """Results of one feature source.

    Attributes:
        name: row name in reports (run name, ``log_mel``, ...).
        objective: training objective (``CPC``, ``ACPC``; ``baseline`` for spectral features).
        source: checkpoint, feature directory or baseline kind it was computed from.
        layer: model layer (``None`` for baselines).
        frame_step: seconds per feature frame.
        phone: ``{"test": ..., "heldout_speakers": ...}`` phone-probe results.
        abx: ``{item set name: ABXResult}``.
        speaker: speaker-probe result.
        seconds: wall time of each stage (``export``, ``phone_probe``, ``abx``,
            ``speaker_probe``).
        run_dir: the training run (its ``metrics.jsonl`` gives training curves), if known.
        step: training step of the checkpoint, if known.
    """

    name: str
    objective: str
    source: str
    layer: str | None
    frame_step: float
    phone: dict[str, ProbeResult] = field(default_factory=dict)
    abx: dict[str, ABXResult] = field(default_factory=dict)
    speaker: SpeakerProbeResult | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    run_dir: Path | None = None
    step: int | None = None

    @property
    def is_baseline(self) -> bool:
        return self.objective == "baseline"

    def figures(self) -> dict[str, float | None]:
        """Scalars for tables and JSON: accuracies as fractions, ABX errors in percent.

        Keys: ``phone_acc``, ``phone_acc_heldout_speakers``, ``abx_within``, ``abx_across``
        (the first item file; others as ``abx_<name>_within``...), ``speaker_acc``; a figure
        that was not measured (or NaN) is ``None``.
        """
        out: dict[str, float | None] = {}
        for name, result in self.phone.items():
            out["phone_acc" if name == "test" else f"phone_acc_{name}"] = result.accuracy
        for i, (name, result) in enumerate(self.abx.items()):
            for mode, error in result.errors.items():
                out[f"abx_{mode}" if i == 0 else f"abx_{name}_{mode}"] = error
        if self.speaker is not None:
            out["speaker_acc"] = self.speaker.accuracy
        return {k: None if v is None or math.isnan(v) else round(float(v), 4)
                for k, v in out.items()}


def source_name(source: str | Path) -> str:
    """Report name of a source: the run name of a checkpoint, a directory's name, a baseline."""
    text = str(source)
    if text in BASELINE_KINDS:
        return text
    path = Path(text)
    run_dir = run_dir_of(path) if not is_feature_dir(path) else None
    if run_dir is not None and path.is_file():
        return f"{run_dir.name}@{path.stem}"
    return (run_dir or path).resolve().name


def evaluate_features(
    name: str,
    features: Features,
    inputs: EvalInputs,
    stages: Sequence[str] = STAGES,
    protocol: ProbeProtocol = CONVERGED,
    speaker_protocol: SpeakerProtocol = SPEAKER,
    abx_context: str = "within",
    device: str | torch.device = "cpu",
    progress: bool = False,
    seconds: Mapping[str, float] | None = None,
    frame_store: str | Path | None = None,
    store_dtype: str = "float32",
) -> EvalRecord:
    """Run the measurements of ``stages`` on one feature set; returns its record.

    Stages that the inputs cannot support are skipped with a message: the phone probe without
    alignments or test lists, ABX without item files. ``abx_context``: see :func:`abx_of`;
    ``seconds``: stage times measured before (the export), copied into the record;
    ``frame_store``, ``store_dtype``: stream the phone probe's training frames
    (:func:`~ssl_speech.eval.probing.probe_phones`).
    """
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stages {unknown}; choose from {STAGES}")
    meta = features.meta
    kind = meta.get("kind")
    objective = "baseline" if kind in BASELINE_KINDS else (meta.get("objective") or "?")
    run_dir = meta.get("run_dir")
    record = EvalRecord(name=name, objective=objective, source=_describe(features),
                        layer=meta.get("layer"), frame_step=features.frame_step,
                        seconds=dict(seconds or {}), step=meta.get("step"),
                        run_dir=Path(run_dir) if run_dir else None)
    if isinstance(features, FeatureDir) and inputs.has_audio:
        corpora = [inputs.full_corpus]
        if inputs.abx_root is not None and "abx" in stages:
            corpora.append(inputs.abx_corpus)
        check_frame_step(features, [u for corpus in corpora for u in corpus])
    if "phone_probe" in stages:
        if inputs.alignments is None or not inputs.phone_test_sets():
            _log(f"{name}: no alignments or no held-out list: phone probe skipped")
        else:
            with _timed(record, "phone_probe"):
                record.phone = probe_phones(features, features.frame_step, phone_split(inputs),
                                            protocol, device, progress, frame_store,
                                            store_dtype)
    if "abx" in stages:
        if not inputs.abx_items:
            _log(f"{name}: no ABX item file: ABX skipped")
        else:
            with _timed(record, "abx"):
                record.abx = abx_of(features, inputs.abx_items, abx_context, device, progress)
    if "speaker_probe" in stages:
        with _timed(record, "speaker_probe"):
            speakers = {u.id: u.speaker for u in inputs.train_corpus()}
            record.speaker = probe_speakers(features, speakers, speaker_protocol, device,
                                            progress)
    return record


def _describe(features: Features) -> str:
    if isinstance(features, FeatureDir):
        return str(features.path)
    kind = features.meta.get("kind")
    return str(features.meta.get("checkpoint") or kind)


@contextmanager
def _timed(record: EvalRecord, stage: str) -> Iterator[None]:
    """Adds the wall time of a ``with`` block to ``record.seconds[stage]``."""
    start = time.perf_counter()
    yield
    elapsed = time.perf_counter() - start
    record.seconds[stage] = round(record.seconds.get(stage, 0.0) + elapsed, 2)


def evaluate_source(
    source: str | Path,
    inputs: EvalInputs,
    feature_root: str | Path,
    name: str | None = None,
    layer: str = "context",
    stages: Sequence[str] = STAGES,
    protocol: ProbeProtocol = CONVERGED,
    speaker_protocol: SpeakerProtocol = SPEAKER,
    abx_context: str = "within",
    device: str | torch.device = "cpu",
    chunk_seconds: float = 10.0,
    progress: bool = False,
    frame_store: str | Path | None = None,
    export_dtype: str = "float32",
) -> EvalRecord:
    """Export (checkpoint or baseline) to ``feature_root/<name>``, then measure.

    A feature directory is measured where it is. Re-running with the same checkpoint reuses
    its exported files (same sha256 and layer). ``export_dtype``: ``float16`` halves the
    exported files (and the phone probe's training rows); ``frame_store``: stream the phone
    probe's training frames through ``<frame_store>/<name>``.
    """
    name = name or source_name(source)
    def utterances() -> list[Utterance]:
        return inputs.utterances_needed(stages)

    features = open_features(source, utterances, layer=layer, device=device,
                             chunk_seconds=chunk_seconds)
    seconds: dict[str, float] = {}
    if isinstance(features, ComputedFeatures):
        start = time.perf_counter()
        out = Path(feature_root) / name
        _log(f"{name}: exporting {len(features)} utterances to {out}")
        export_features(features, out, progress=progress, dtype=export_dtype)
        features = FeatureDir(out)
        seconds["export"] = round(time.perf_counter() - start, 2)
    store = Path(frame_store) / name if frame_store is not None else None
    return evaluate_features(name, features, inputs, stages, protocol, speaker_protocol,
                             abx_context, device, progress, seconds, store, export_dtype)
