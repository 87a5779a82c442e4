"""Where a run's or an evaluation's audio and labels live: the one resolver of data sources.

``data.source`` is ``synthetic`` (the embedded corpus, generated and cached on first use),
``librispeech`` (a ``speaker/chapter/utt.flac`` tree) or ``manifest`` (a fairseq-style TSV).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from ssl_speech.data.corpus import DEFAULT_THREADS, Corpus, load_corpus
from ssl_speech.data.labels import read_alignments


@dataclass
class DataSource:
    """Where a corpus lives and its optional labels and split lists."""

    root: Path | None
    manifest: Path | None
    alignments: Path | None
    train_split: str | Path | None
    dev_split: str | Path | None


def resolve_data_source(data: DictConfig, progress: bool = True) -> DataSource:
    """Resolve ``data.source`` (synthetic, librispeech, manifest) to paths; generate if needed."""
    source = data.source
    if source == "synthetic":
        from ssl_speech.data.synthetic import SyntheticCorpusSpec, ensure_corpus

        spec = SyntheticCorpusSpec(seed=int(data.synthetic.seed), hours=float(data.synthetic.hours))
        root = ensure_corpus(spec, cache_dir=data.synthetic.cache_dir, progress=progress)
        return DataSource(root, None, root / "alignments.txt", data.train_split, data.dev_split)
    if source in ("librispeech", "manifest"):
        root = Path(data.root).expanduser() if data.get("root") else None
        manifest = Path(data.manifest).expanduser() if data.get("manifest") else None
        if source == "librispeech" and root is None:
            raise ValueError("data=librispeech needs data.root=/path/to/LibriSpeech/train-clean")
        if source == "manifest" and manifest is None:
            raise ValueError("data=manifest needs data.manifest=/path/to/train.tsv")
        alignments = Path(data.alignments).expanduser() if data.get("alignments") else None
        return DataSource(root, manifest, alignments, data.get("train_split"),
                          data.get("dev_split"))
    raise ValueError(f"data.source={source!r}: expected synthetic, librispeech or manifest")


def load_split_corpus(source: DataSource, split: str | Path | None, on_error: str,
                      min_samples: int, threads: int = DEFAULT_THREADS,
                      cache: bool | str | Path = False, rank: int = 0,
                      barrier: Callable[[], None] | None = None) -> Corpus:
    """The corpus of ``split`` (see :func:`~ssl_speech.data.corpus.load_corpus`).

    Under DDP pass ``rank`` and ``barrier=torch.distributed.barrier`` with ``cache``: rank 0
    scans and writes the manifest cache, the other ranks wait and read it. Every rank must call.
    """
    return load_corpus(root=source.root, manifest=source.manifest, split=split,
                       on_error=on_error, min_samples=min_samples, threads=threads,
                       cache=cache, rank=rank, barrier=barrier)


def read_labels(source: DataSource) -> dict | None:
    if source.alignments is None or not Path(source.alignments).is_file():
        return None
    return read_alignments(source.alignments)
