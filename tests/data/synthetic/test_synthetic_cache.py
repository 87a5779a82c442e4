"""The embedded corpus's cache: names, reuse, regeneration, killed and concurrent generations."""

from __future__ import annotations

import dataclasses
import functools
import shutil
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest
from synthetic_files import TINY, file_hashes

from ssl_speech.data.synthetic import (
    GENERATOR_VERSION,
    SyntheticCorpusSpec,
    corpus_dirname,
    ensure_corpus,
    generate_corpus,
    is_complete,
)
from ssl_speech.data.synthetic import cache as synthetic_cache


def test_cache_names() -> None:
    assert corpus_dirname(SyntheticCorpusSpec()) == f"synthetic-v{GENERATOR_VERSION}-seed0-h1.0"
    assert corpus_dirname(SyntheticCorpusSpec(seed=2, hours=0.5)).endswith("seed2-h0.5")
    custom = corpus_dirname(TINY)
    assert custom.startswith(f"synthetic-v{GENERATOR_VERSION}-seed3-h0.01-") and custom != \
        corpus_dirname(dataclasses.replace(TINY, lexicon_size=61))


def _no_generation(*args, **kwargs):
    raise AssertionError("the cached corpus should have been reused")


def test_cache_reuses_and_regenerates_a_corrupt_corpus(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_SPEECH_CACHE", str(tmp_path))
    cached = tmp_path / corpus_dirname(TINY)
    shutil.copytree(corpus, cached)
    with monkeypatch.context() as patch:
        patch.setattr(synthetic_cache, "generate_corpus", _no_generation)
        assert ensure_corpus(TINY, progress=False) == cached

    victim = sorted(cached.rglob("*.flac"))[0]
    victim.write_bytes(victim.read_bytes()[:100])  # a truncated file
    assert not is_complete(cached, TINY)
    assert ensure_corpus(TINY, workers=1, progress=False) == cached
    assert is_complete(cached, TINY) and file_hashes(cached) == file_hashes(corpus)
    # another spec is not taken for this one
    assert not is_complete(cached, dataclasses.replace(TINY, seed=99))


def test_killed_generation_is_not_a_corpus(corpus: Path, tmp_path: Path) -> None:
    root = tmp_path / corpus_dirname(TINY)
    # a generation killed before its rename: a hidden partial directory, owner long gone
    partial = tmp_path / f".{root.name}.partial-999999999-deadbeef"
    shutil.copytree(corpus, partial)
    (partial / "corpus.json").unlink()
    # and a root whose files are there but whose corpus.json is not
    shutil.copytree(partial, root)
    assert not is_complete(root) and not is_complete(partial)
    with pytest.raises(FileExistsError, match="not empty"):
        generate_corpus(root, TINY, workers=1, progress=False)

    assert ensure_corpus(TINY, cache_dir=tmp_path, workers=1, progress=False) == root
    assert is_complete(root, TINY) and file_hashes(root) == file_hashes(corpus)
    assert not partial.exists()
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_concurrent_generators_agree(corpus: Path, tmp_path: Path) -> None:
    # two processes race for the same cache entry (as two DDP ranks would)
    ensure = functools.partial(ensure_corpus, TINY, tmp_path, 1, False)
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        roots = [pool.submit(ensure) for _ in range(2)]
        roots = [future.result() for future in roots]
    assert roots[0] == roots[1]
    root = roots[0]
    assert is_complete(root, TINY) and file_hashes(root) == file_hashes(corpus)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == [root.name]
