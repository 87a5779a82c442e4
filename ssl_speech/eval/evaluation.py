"""The evaluation suite: phone probe, ABX and speaker probe of frozen features on one corpus.

:class:`EvalInputs` says where the evaluation data lives (audio, CPC_audio-format alignments,
split lists, ABX item files) and defaults to the embedded corpus; the three measurements take
features (:mod:`ssl_speech.eval.features`: a feature directory, a model, a baseline) and give
their results:

- :func:`probe_phones`: the linear phone probe (CPC_audio protocol, :class:`ProbeProtocol`)
  trained on the train list, scored on held-out utterances (``test``) and, where the corpus
  has them, held-out speakers (``heldout_speakers``); :func:`compare_phone_probes` runs it on
  several feature sets under the same protocol (a model beside its baselines);
- :func:`abx_of`: ABX within and across speakers on each item file;
- :func:`probe_speakers`: linear speaker classification on pooled features, held-out
  utterances of the training speakers.

:func:`evaluate_source` runs the whole pipeline for a checkpoint, a baseline or a feature
directory: export (for a checkpoint or a baseline), then the three measurements on the exported
directory, each timed, and returns an :class:`EvalRecord`.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from ssl_speech.data.corpus import Corpus, Utterance, load_corpus, read_split, resolve_split
from ssl_speech.data.labels import read_alignments, read_phone_list
from ssl_speech.eval.abx import ABXResult, abx_scores, read_items
from ssl_speech.eval.features import (
    BASELINE_KINDS,
    ComputedFeatures,
    FeatureDir,
    check_frame_step,
    export_features,
    is_feature_dir,
    open_features,
    read_many,
    run_dir_of,
)
from ssl_speech.eval.phone_probe import ProbeResult, train_phone_probe
from ssl_speech.eval.speaker_probe import (
    POOLINGS,
    SpeakerProbeResult,
    held_out_utterance_split,
    pool_features,
    train_speaker_probe,
)

Features = FeatureDir | ComputedFeatures
STAGES = ("phone_probe", "abx", "speaker_probe")
HELDOUT_SPEAKERS_SPLIT = "test_heldout_speakers"
_SHOWN = 5


def _quote(ids: Sequence[str]) -> str:
    shown = ", ".join(repr(u) for u in ids[:_SHOWN])
    return shown + (f", ... ({len(ids) - _SHOWN} more)" if len(ids) > _SHOWN else "")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeProtocol:
    """Phone-probe training settings; the defaults are CPC_audio's linear separability.

    Attributes:
        epochs: fixed number of passes over the training frames (CPC_audio: 10).
        lr: Adam learning rate (CPC_audio: 2e-4).
        batch_size: frames per step (CPC_audio: 8 windows of 128 frames).
        hidden: ``None`` for the linear probe, else the width of one ReLU hidden layer.
        seed: initialisation, shuffling and ``max_train_utterances`` draw.
        max_train_utterances: train on a random subset of the train list (memory: every
            training frame is held at once); ``None`` uses all of it.

    Ten epochs are many steps on LibriSpeech-100 (about 28k per epoch) but few on the
    embedded corpus (about 250 per epoch): there the log-mel probe reaches 46 % on the test
    list after 10 epochs and 53 % after 30 (54.6 % converged, lr 1e-3 for 50 epochs). Every
    feature set is probed under the same setting; raise ``epochs`` for converged figures.
    """

    epochs: int = 10
    lr: float = 2e-4
    batch_size: int = 1024
    hidden: int | None = None
    seed: int = 0
    max_train_utterances: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or not self.lr > 0 or self.batch_size < 1:
            raise ValueError(f"ProbeProtocol needs epochs >= 1, lr > 0 and batch_size >= 1, got "
                             f"{self.epochs}, {self.lr}, {self.batch_size}")
        if self.hidden is not None and self.hidden < 1:
            raise ValueError(f"hidden must be None (linear probe) or >= 1, got {self.hidden}")
        if self.max_train_utterances is not None and self.max_train_utterances < 1:
            raise ValueError(f"max_train_utterances must be None or >= 1, got "
                             f"{self.max_train_utterances}")


@dataclass(frozen=True)
class SpeakerProtocol:
    """Speaker-probe settings: pooling, held-out fraction of each speaker, Adam, epochs."""

    pooling: str = "mean"
    test_fraction: float = 0.2
    epochs: int = 50
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.epochs < 1 or not self.lr > 0 or self.batch_size < 1:
            raise ValueError(f"SpeakerProtocol needs epochs >= 1, lr > 0 and batch_size >= 1, "
                             f"got {self.epochs}, {self.lr}, {self.batch_size}")


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def _existing(path: Path | None) -> Path | None:
    return path if path is not None and path.is_file() else None


@dataclass
class EvalInputs:
    """Where the evaluation data lives; build it with :meth:`resolve`.

    Attributes:
        root: corpus directory (LibriSpeech layout) of the probe utterances, or ``None`` with a
            manifest.
        manifest: manifest TSV of the probe utterances (instead of scanning ``root``).
        alignments: CPC_audio-format frame labels (``utt l0 l1 ...`` at 10 ms), or ``None``
            (no phone probe).
        phones: phone list naming the label indices (for the confusion matrix), or ``None``.
        train_split: list of the probes' training utterances, or ``None``.
        test_split: held-out utterances of the training speakers (phone probe), or ``None``.
        heldout_split: utterances of speakers absent from training, or ``None``.
        abx_items: ``{name: item file}``.
        abx_root: corpus directory of the item files' utterances (default ``root``).
    """

    root: Path | None
    manifest: Path | None
    alignments: Path | None
    phones: Path | None
    train_split: Path | None
    test_split: Path | None
    heldout_split: Path | None
    abx_items: dict[str, Path] = field(default_factory=dict)
    abx_root: Path | None = None

    @classmethod
    def resolve(
        cls,
        root: str | Path | None = None,
        manifest: str | Path | None = None,
        alignments: str | Path | None = None,
        phones: str | Path | None = None,
        train_split: str | Path | None = "train",
        test_split: str | Path | None = "test",
        heldout_split: str | Path | None = None,
        abx_items: Iterable[str | Path] | None = None,
        abx_root: str | Path | None = None,
        progress: bool = True,
    ) -> EvalInputs:
        """Fill in the defaults from the corpus layout.

        With neither ``root`` nor ``manifest`` the embedded corpus is used (generated and cached
        on first use). Split arguments are files or names (``<root>/splits/<name>.txt``); ABX
        item arguments are files or names (``<abx_root>/abx/<name>.item``). Defaults:
        ``<root>/alignments.txt``, ``<root>/phones.txt``, the ``train``, ``test`` and
        ``test_heldout_speakers`` splits and the ``dev`` items, each where it exists; a
        measurement that needs a missing one says so.
        """
        if root is None and manifest is None:
            from ssl_speech.data.synthetic import ensure_corpus

            root = ensure_corpus(progress=progress)
        root = Path(root).expanduser() if root is not None else None
        manifest = Path(manifest).expanduser() if manifest is not None else None
        split_root = root if root is not None else _manifest_root(manifest)
        base = split_root or Path(".")
        abx_base = Path(abx_root).expanduser() if abx_root is not None else split_root
        if alignments is None:
            found_alignments = _existing(base / "alignments.txt")
        else:
            found_alignments = Path(alignments).expanduser()
            if not found_alignments.is_file():
                raise FileNotFoundError(f"alignment file {found_alignments} does not exist")
        if phones is None:
            found_phones = _existing(base / "phones.txt")
        else:
            found_phones = Path(phones).expanduser()
            if not found_phones.is_file():
                raise FileNotFoundError(f"phone list {found_phones} does not exist")
        test = _split_file(test_split, split_root, optional=test_split == "test")
        if heldout_split is None:
            heldout = _existing(base / "splits" / f"{HELDOUT_SPEAKERS_SPLIT}.txt")
        else:
            heldout = _split_file(heldout_split, split_root, optional=False)
        return cls(
            root=root, manifest=manifest, alignments=found_alignments, phones=found_phones,
            train_split=_split_file(train_split, split_root, optional=train_split == "train"),
            test_split=test, heldout_split=heldout,
            abx_items=_item_files(abx_items, abx_base),
            abx_root=Path(abx_root).expanduser() if abx_root is not None else None,
        )

    # ---- what the measurements read

    def corpus(self, split: Path | None = None) -> Corpus:
        """The probe corpus (all of it, or a split's utterances)."""
        return load_corpus(root=self.root, manifest=self.manifest, split=split)

    @cached_property
    def full_corpus(self) -> Corpus:
        return self.corpus()

    @cached_property
    def abx_corpus(self) -> Corpus:
        """The corpus of the item files' utterances."""
        if self.abx_root is not None:
            return load_corpus(root=self.abx_root)
        return self.full_corpus

    @cached_property
    def labels(self) -> dict[str, np.ndarray]:
        if self.alignments is None:
            raise ValueError("no alignment file: pass the CPC_audio-format frame labels "
                             "(--alignments FILE) for the phone probe")
        return read_alignments(self.alignments)

    @cached_property
    def phone_names(self) -> list[str] | None:
        return read_phone_list(self.phones) if self.phones is not None else None

    def train_ids(self) -> list[str]:
        if self.train_split is None:
            raise ValueError("no train list: the corpus has no splits/train.txt; pass the "
                             "probes' training utterances (--train-list FILE)")
        return read_split(self.train_split)

    def train_corpus(self) -> Corpus:
        """The train list's utterances (the speaker probe's)."""
        return self.full_corpus.subset(self.train_ids(), source=self.train_split)

    def phone_test_sets(self) -> dict[str, list[str]]:
        """``{"test": ids, "heldout_speakers": ids}`` where the lists exist."""
        sets = {}
        if self.test_split is not None:
            sets["test"] = read_split(self.test_split)
        if self.heldout_split is not None:
            sets["heldout_speakers"] = read_split(self.heldout_split)
        return sets

    def abx_ids(self) -> dict[str, list[str]]:
        """Utterance ids of each item file, in order of first appearance."""
        return {name: list(dict.fromkeys(it.file for it in read_items(path)))
                for name, path in self.abx_items.items()}

    def utterances_needed(self, stages: Sequence[str] = STAGES) -> list[Utterance]:
        """Every utterance the given stages read (probe lists and item files), each once.

        Raises:
            ValueError: a list or item file names utterances the corpus does not have.
        """
        wanted: dict[str, Utterance] = {}
        if "phone_probe" in stages or "speaker_probe" in stages:
            lists = {"train list": self.train_ids()}
            if "phone_probe" in stages:
                lists.update({f"{name} list": ids for name, ids in self.phone_test_sets().items()})
            for what, ids in lists.items():
                wanted.update(_lookup(self.full_corpus, ids, what))
        if "abx" in stages:
            for name, ids in self.abx_ids().items():
                wanted.update(_lookup(self.abx_corpus, ids, f"item file {self.abx_items[name]}"))
        return list(wanted.values())


def _manifest_root(manifest: Path | None) -> Path | None:
    if manifest is None:
        return None
    first = manifest.read_text().split("\n", 1)[0].strip()
    return Path(first) if first else None


def _split_file(split: str | Path | None, root: Path | None, optional: bool) -> Path | None:
    """The split list file, or ``None`` when it is optional and absent."""
    if split is None:
        return None
    try:
        path = resolve_split(split, root)
    except FileNotFoundError:
        if optional:
            return None
        raise
    if not path.is_file():
        if optional:
            return None
        raise FileNotFoundError(f"split list {path} does not exist")
    return path


def _item_files(items: Iterable[str | Path] | None, root: Path | None) -> dict[str, Path]:
    if items is None:
        default = root / "abx" / "dev.item" if root is not None else None
        return {"dev": default} if default is not None and default.is_file() else {}
    found = {}
    for item in items:
        path = Path(item).expanduser()
        if not path.is_file() and not path.suffix and len(path.parts) == 1 and root is not None:
            path = root / "abx" / f"{item}.item"
        if not path.is_file():
            raise FileNotFoundError(f"ABX item file {path} does not exist")
        found[path.stem] = path
    return found


def _lookup(corpus: Corpus, ids: Sequence[str], what: str) -> dict[str, Utterance]:
    missing = [u for u in ids if u not in corpus]
    if missing:
        raise ValueError(f"{len(missing)} of {len(ids)} utterances of the {what} are not in the "
                         f"corpus under {corpus.root}: {_quote(missing)}. Point the corpus "
                         "option at the audio these lists belong to")
    return {u: corpus.by_id(u) for u in ids}


# --------------------------------------------------------------------------------------------
# The three measurements
# --------------------------------------------------------------------------------------------


def _subsample(ids: list[str], count: int | None, seed: int) -> list[str]:
    if count is None or count >= len(ids):
        return ids
    keep = np.random.default_rng(seed).permutation(len(ids))[:count]
    return [ids[i] for i in sorted(keep)]


def check_labels(labels: Mapping[str, np.ndarray], ids: Sequence[str], what: str) -> None:
    """Raise if some of ``ids`` have no labels (count and examples in the message)."""
    missing = [u for u in ids if u not in labels]
    if missing:
        example = next(iter(labels), None)
        raise ValueError(f"{len(missing)} of {len(ids)} utterances of the {what} have no "
                         f"labels in the alignment file: {_quote(missing)} (its ids look like "
                         f"{example!r}); use the alignments and lists of the same corpus")


def probe_phones(
    features: Mapping[str, np.ndarray],
    frame_step: float,
    labels: Mapping[str, np.ndarray],
    train_ids: Sequence[str],
    test_sets: Mapping[str, Sequence[str]],
    protocol: ProbeProtocol = ProbeProtocol(),
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, ProbeResult]:
    """Train the phone probe on ``train_ids`` and score each held-out list.

    Args:
        features: ``utt -> (T, D)`` at ``frame_step`` seconds per frame.
        labels: ``utt -> (L,)`` phone indices at 10 ms (CPC_audio format).
        train_ids, test_sets: utterance lists; every id needs features and labels.
        num_classes: size of the phone list (default: largest training label + 1).

    Raises:
        ValueError: ids without labels or without features, or frame counts that do not match
            the labels at ``frame_step`` (each message counts and names the utterances).
    """
    train_ids = _subsample(list(train_ids), protocol.max_train_utterances, protocol.seed)
    check_labels(labels, train_ids, "train list")
    for name, ids in test_sets.items():
        check_labels(labels, ids, f"{name} list")
    train = read_many(features, train_ids, "train list", progress)
    tests = {name: (read_many(features, ids, f"{name} list", progress), labels)
             for name, ids in test_sets.items()}
    return train_phone_probe(
        train, labels, tests, num_classes=num_classes, hidden=protocol.hidden,
        epochs=protocol.epochs, lr=protocol.lr, batch_size=protocol.batch_size,
        seed=protocol.seed, device=device, progress=progress, frame_step=frame_step,
    )


def compare_phone_probes(
    sources: Mapping[str, Features],
    labels: Mapping[str, np.ndarray],
    train_ids: Sequence[str],
    test_sets: Mapping[str, Sequence[str]],
    protocol: ProbeProtocol = ProbeProtocol(),
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, dict[str, ProbeResult]]:
    """:func:`probe_phones` on each named feature set, same lists and protocol."""
    return {name: probe_phones(features, features.frame_step, labels, train_ids, test_sets,
                               protocol, num_classes, device, progress)
            for name, features in sources.items()}


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


def probe_speakers(
    features: Mapping[str, np.ndarray],
    utterances: Iterable[Utterance],
    protocol: SpeakerProtocol = SpeakerProtocol(),
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> SpeakerProbeResult:
    """Speaker accuracy on held-out utterances of the training speakers.

    ``utterances`` (usually the train list) are split per speaker by
    :func:`~ssl_speech.eval.speaker_probe.held_out_utterance_split`; each utterance is pooled
    as it is read, so only one vector per utterance is kept.
    """
    speakers = {u.id: u.speaker for u in utterances}
    train_ids, test_ids = held_out_utterance_split(speakers, protocol.test_fraction,
                                                   protocol.seed)
    if not test_ids:
        raise ValueError("speaker probe: no speaker of the list has two utterances, so none can "
                         "be held out")
    missing = [u for u in speakers if u not in features]
    if missing:  # the same check and message as the other measurements
        read_many(features, missing, "speaker probe")
    pooled = {}
    for utt in _progress(speakers, progress, "speaker probe features"):
        # pooled here, then given as one-frame utterances that "mean" pooling leaves unchanged
        pooled[utt] = pool_features(features[utt], protocol.pooling)[None]
    results = train_speaker_probe(
        {u: pooled[u] for u in train_ids}, speakers, {"test": ({u: pooled[u] for u in test_ids},
                                                              speakers)},
        pooling="mean", epochs=protocol.epochs, lr=protocol.lr, batch_size=protocol.batch_size,
        seed=protocol.seed, device=device,
    )
    return results["test"]


def _progress(items: Iterable, enabled: bool, desc: str) -> Iterable:
    from tqdm import tqdm

    return tqdm(items, desc=desc, disable=not enabled, leave=False)


# --------------------------------------------------------------------------------------------
# One model (or baseline) through the whole pipeline
# --------------------------------------------------------------------------------------------


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
    protocol: ProbeProtocol = ProbeProtocol(),
    speaker_protocol: SpeakerProtocol = SpeakerProtocol(),
    abx_context: str = "within",
    device: str | torch.device = "cpu",
    progress: bool = False,
    seconds: Mapping[str, float] | None = None,
) -> EvalRecord:
    """Run the measurements of ``stages`` on one feature set; returns its record.

    Stages that the inputs cannot support are skipped with a message: the phone probe without
    alignments or test lists, ABX without item files. ``abx_context``: see :func:`abx_of`;
    ``seconds``: stage times measured before (the export), copied into the record.
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
    if isinstance(features, FeatureDir):
        corpora = [inputs.full_corpus]
        if inputs.abx_root is not None and "abx" in stages:
            corpora.append(inputs.abx_corpus)
        check_frame_step(features, [u for corpus in corpora for u in corpus])
    if "phone_probe" in stages:
        tests = inputs.phone_test_sets()
        if inputs.alignments is None or not tests:
            _log(f"{name}: no alignments or no held-out list: phone probe skipped")
        else:
            with _timed(record, "phone_probe"):
                record.phone = probe_phones(
                    features, features.frame_step, inputs.labels,
                    inputs.train_ids(), tests, protocol,
                    len(inputs.phone_names) if inputs.phone_names else None, device, progress)
    if "abx" in stages:
        if not inputs.abx_items:
            _log(f"{name}: no ABX item file: ABX skipped")
        else:
            with _timed(record, "abx"):
                record.abx = abx_of(features, inputs.abx_items, abx_context, device, progress)
    if "speaker_probe" in stages:
        with _timed(record, "speaker_probe"):
            record.speaker = probe_speakers(features, inputs.train_corpus(),
                                            speaker_protocol, device, progress)
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
    protocol: ProbeProtocol = ProbeProtocol(),
    speaker_protocol: SpeakerProtocol = SpeakerProtocol(),
    abx_context: str = "within",
    device: str | torch.device = "cpu",
    chunk_seconds: float = 10.0,
    progress: bool = False,
) -> EvalRecord:
    """Export (checkpoint or baseline) to ``feature_root/<name>``, then measure.

    A feature directory is measured where it is. Re-running with the same checkpoint reuses
    its exported files (same sha256 and layer).
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
        export_features(features, out, progress=progress)
        features = FeatureDir(out)
        seconds["export"] = round(time.perf_counter() - start, 2)
    return evaluate_features(name, features, inputs, stages, protocol, speaker_protocol,
                             abx_context, device, progress, seconds)
