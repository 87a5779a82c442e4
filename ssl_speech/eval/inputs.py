"""Where the evaluation's data lives: audio, alignments, phone list, split lists, ABX items.

The audio and the alignments are resolved by the library's one data-source resolver
(:mod:`ssl_speech.data.source`); this module adds what only evaluation reads (split lists of
the probes, the phone list, ABX item files) and checks that the lists and the corpus agree.

Three cases:

- nothing given: the embedded corpus (generated and cached on first use) and its files;
- ``root`` or ``manifest``: that corpus; its ``alignments.txt``, ``phones.txt``, ``splits/`` and
  ``abx/dev.item`` are the defaults where they exist;
- only ``alignments`` (and list files): features of another corpus with no audio at hand. The
  phone probe needs nothing more; computing features (a checkpoint, the log-mel and MFCC
  baselines) and the speaker probe need the corpus and say so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from ssl_speech.data.corpus import Corpus, Utterance, read_split, resolve_split
from ssl_speech.data.labels import read_abx_items, read_alignments, read_phone_list
from ssl_speech.data.source import DataSource, load_split_corpus, resolve_data_source
from ssl_speech.eval.messages import quote_ids

STAGES = ("phone_probe", "abx", "speaker_probe")
HELDOUT_SPEAKERS_SPLIT = "test_heldout_speakers"


def _existing(path: Path | None) -> Path | None:
    return path if path is not None and path.is_file() else None


def _given_file(path: str | Path | None, what: str) -> Path | None:
    if path is None:
        return None
    found = Path(path).expanduser()
    if not found.is_file():
        raise FileNotFoundError(f"{what} {found} does not exist")
    return found


def data_source(root: str | Path | None = None, manifest: str | Path | None = None,
                alignments: str | Path | None = None, progress: bool = True,
                ) -> DataSource | None:
    """The audio of an evaluation, through :func:`~ssl_speech.data.source.resolve_data_source`.

    ``None`` when only ``alignments`` is given: features of a corpus whose audio is not at
    hand. With nothing given, the embedded corpus.
    """
    if root is None and manifest is None:
        if alignments is not None:
            return None
        from ssl_speech.data.synthetic import SyntheticCorpusSpec

        spec = SyntheticCorpusSpec()
        data = {"source": "synthetic", "train_split": None, "dev_split": None,
                "synthetic": {"seed": spec.seed, "hours": spec.hours, "cache_dir": None}}
    else:
        data = {"source": "librispeech" if root is not None else "manifest",
                "root": str(root) if root is not None else None,
                "manifest": str(manifest) if manifest is not None else None,
                "alignments": str(alignments) if alignments is not None else None}
    return resolve_data_source(OmegaConf.create(data), progress=progress)


@dataclass
class EvalInputs:
    """Where the evaluation data lives; build it with :meth:`resolve`.

    Attributes:
        source: the audio and alignments (:class:`~ssl_speech.data.source.DataSource`), or
            ``None`` for features of a corpus whose audio is not at hand.
        alignments: CPC_audio-format frame labels (``utt l0 l1 ...`` at 10 ms), or ``None``
            (no phone probe).
        phones: phone list naming the label indices (for the confusion matrix), or ``None``.
        train_split: list of the probes' training utterances, or ``None``.
        test_split: held-out utterances of the training speakers (phone probe), or ``None``.
        heldout_split: utterances of speakers absent from training, or ``None``.
        abx_items: ``{name: item file}``.
        abx_root: corpus directory of the item files' utterances (default: the source's).
    """

    source: DataSource | None
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
        """Fill in the defaults from the corpus layout (module docstring for the three cases).

        Split arguments are files or names (``<root>/splits/<name>.txt``); ABX item arguments
        are files or names (``<abx_root>/abx/<name>.item``). Defaults: ``<root>/alignments.txt``,
        ``<root>/phones.txt``, the ``train``, ``test`` and ``test_heldout_speakers`` splits and
        the ``dev`` items, each where it exists; a measurement that needs a missing one says so.
        """
        given_alignments = _given_file(alignments, "alignment file")
        source = data_source(root, manifest, given_alignments, progress)
        split_root = None
        if source is not None:
            split_root = source.root if source.root is not None else _manifest_root(
                source.manifest)
        base = split_root or Path(".")
        abx_base = Path(abx_root).expanduser() if abx_root is not None else split_root
        found_alignments = given_alignments or _existing(
            Path(source.alignments) if source is not None and source.alignments else None
        ) or (_existing(base / "alignments.txt") if split_root is not None else None)
        found_phones = _given_file(phones, "phone list")
        if found_phones is None and split_root is not None:
            found_phones = _existing(base / "phones.txt")
        if heldout_split is None:
            heldout = (_existing(base / "splits" / f"{HELDOUT_SPEAKERS_SPLIT}.txt")
                       if split_root is not None else None)
        else:
            heldout = _split_file(heldout_split, split_root, optional=False)
        return cls(
            source=source, alignments=found_alignments, phones=found_phones,
            train_split=_split_file(train_split, split_root, optional=train_split == "train"),
            test_split=_split_file(test_split, split_root, optional=test_split == "test"),
            heldout_split=heldout, abx_items=_item_files(abx_items, abx_base),
            abx_root=Path(abx_root).expanduser() if abx_root is not None else None,
        )

    @property
    def root(self) -> Path | None:
        return self.source.root if self.source is not None else None

    @property
    def manifest(self) -> Path | None:
        return self.source.manifest if self.source is not None else None

    @property
    def has_audio(self) -> bool:
        return self.source is not None

    # ---- what the measurements read

    def corpus(self, split: Path | None = None) -> Corpus:
        """The probe corpus (all of it, or a split's utterances)."""
        if self.source is None:
            raise ValueError("this needs the corpus's audio: pass the corpus directory "
                             "(--corpus ROOT) or its manifest (--manifest FILE)")
        return load_split_corpus(self.source, split, "skip", 0)

    @cached_property
    def full_corpus(self) -> Corpus:
        return self.corpus()

    @cached_property
    def abx_corpus(self) -> Corpus:
        """The corpus of the item files' utterances."""
        if self.abx_root is not None:
            return load_split_corpus(DataSource(self.abx_root, None, None, None, None), None,
                                     "skip", 0)
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
        return {name: list(dict.fromkeys(it.file for it in read_abx_items(path)))
                for name, path in self.abx_items.items()}

    def utterances_needed(self, stages: Sequence[str] = STAGES) -> list[Utterance]:
        """Every utterance the given stages read (probe lists and item files), each once.

        Raises:
            ValueError: no audio, or a list or item file names utterances the corpus does not
                have.
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
    if root is None and not Path(split).expanduser().is_file():
        if optional:
            return None
        raise FileNotFoundError(f"split list {split} does not exist (a split name needs the "
                                "corpus: pass --corpus, or the list's file)")
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
                         f"corpus under {corpus.root}: {quote_ids(missing)}. Point the corpus "
                         "option at the audio these lists belong to")
    return {u: corpus.by_id(u) for u in ids}
