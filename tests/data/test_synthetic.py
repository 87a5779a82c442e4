"""The embedded synthetic corpus: layout, labels, items, determinism, cache, learnability."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from ssl_speech.data import synthetic
from ssl_speech.data.synthetic import (
    GENERATOR_VERSION,
    PHONES,
    SyntheticCorpusSpec,
    corpus_dirname,
    corpus_statistics,
    ensure_corpus,
    generate_corpus,
    is_complete,
)

REPO = Path(__file__).resolve().parents[2]
TINY = SyntheticCorpusSpec(
    seed=3, hours=0.01, num_speakers=6, num_heldout_speakers=2, lexicon_size=60,
    min_utterance_seconds=1.0, max_utterance_seconds=2.0,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_corpus(tmp_path_factory.mktemp("synthetic") / "tiny", TINY, workers=1,
                           progress=False)


def _hashes(root: Path) -> dict[str, str]:
    """Digest of every file except the run-dependent corpus.json."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file() and p.name != "corpus.json"
    }


def _meta(root: Path) -> dict:
    return json.loads((root / "corpus.json").read_text())


def _lines(path: Path) -> list[str]:
    return path.read_text().split("\n")[:-1]


def _alignments(root: Path) -> dict[str, np.ndarray]:
    rows = [line.split() for line in _lines(root / "alignments.txt")]
    return {row[0]: np.array(row[1:], dtype=np.int64) for row in rows}


def _audio_path(root: Path, utt: str) -> Path:
    speaker, chapter, _ = utt.split("-")
    return root / speaker / chapter / f"{utt}.flac"


def test_inventory_has_the_required_classes() -> None:
    from ssl_speech.data.phonetics import INVENTORY

    assert len(PHONES) >= 30 and PHONES[0] == "sil" and len(set(PHONES)) == len(PHONES)
    kinds = {p.kind for p in INVENTORY}
    assert {"vowel", "diphthong", "nasal", "fricative", "stop", "approximant"} <= kinds
    assert all(p.offglide is not None for p in INVENTORY if p.kind == "diphthong")
    fricatives = [p for p in INVENTORY if p.kind == "fricative"]
    stops = [p for p in INVENTORY if p.kind == "stop"]
    for group in (fricatives, stops):
        assert {p.voiced for p in group} == {True, False}
    assert len({p.place for p in stops}) >= 3


def test_language_covers_the_inventory_and_respects_durations() -> None:
    from ssl_speech.data.phonetics import Lexicon, plan_utterance

    rng = np.random.default_rng(0)
    lexicon = Lexicon(rng, size=60)
    occurrences = np.bincount([p.phone for w in lexicon.words for p in w], minlength=len(PHONES))
    assert len(lexicon.words) == 60 and occurrences[1:].min() >= 3 and occurrences[0] == 0
    for target in (2.0, 5.0, 9.5):
        tokens = plan_utterance(lexicon, rng, target, 10.0, rate=1.0)
        assert tokens[0].phone == tokens[-1].phone == 0 and tokens[0].start == 0
        assert all(a.end == b.start and a.end > a.start for a, b in zip(tokens, tokens[1:]))
        assert tokens[-1].end % 2 == 0 and tokens[-1].end * 0.005 <= 10.0
    with pytest.raises(ValueError, match="lexicon size"):
        Lexicon(rng, size=10)


def test_layout_splits_and_metadata(corpus: Path) -> None:
    assert is_complete(corpus, TINY)
    meta = _meta(corpus)
    assert meta["generator_version"] == GENERATOR_VERSION and meta["seed"] == TINY.seed
    assert meta["sample_rate"] == 16000 and meta["num_phones"] == len(PHONES)
    assert _lines(corpus / "phones.txt") == PHONES

    splits = {s: _lines(corpus / "splits" / f"{s}.txt") for s in synthetic.SPLITS}
    all_ids = [u for ids in splits.values() for u in ids]
    assert len(all_ids) == len(set(all_ids)) == meta["num_utterances"]["total"]
    flacs = sorted(corpus.rglob("*.flac"))
    assert sorted(p.stem for p in flacs) == sorted(all_ids)
    seconds = dict.fromkeys(splits, 0.0)
    for split, ids in splits.items():
        assert len(ids) == meta["num_utterances"][split]
        for utt in ids:
            speaker, chapter, number = utt.split("-")
            assert speaker.isdigit() and chapter.isdigit() and number.isdigit()
            info = sf.info(_audio_path(corpus, utt))
            assert (info.samplerate, info.channels, info.format, info.subtype) == (
                16000, 1, "FLAC", "PCM_16")
            seconds[split] += info.frames / 16000
    for split in splits:
        assert seconds[split] == pytest.approx(meta["durations_s"][split], abs=0.01)
    assert sum(seconds.values()) == pytest.approx(TINY.hours * 3600, rel=0.35)

    heldout = set(meta["heldout_speakers"])
    assert len(heldout) == TINY.num_heldout_speakers
    speaker_of = {s: {u.split("-")[0] for u in ids} for s, ids in splits.items()}
    assert speaker_of["test_heldout_speakers"] == heldout
    for split in ("train", "dev", "test"):
        assert not speaker_of[split] & heldout
    assert len(speaker_of["dev"]) >= 4 and len(speaker_of["test"]) >= 4
    assert len(splits["train"]) > len(splits["dev"]) and len(splits["train"]) > len(splits["test"])


def test_alignments_cover_the_audio(corpus: Path) -> None:
    alignments = _alignments(corpus)
    assert len(alignments) == _meta(corpus)["num_utterances"]["total"]
    for utt, labels in alignments.items():
        samples = sf.info(_audio_path(corpus, utt)).frames
        assert abs(len(labels) - samples / 160) <= 1, utt
        assert len(labels) == samples // 160
        assert labels.min() >= 0 and labels.max() < len(PHONES)
        assert labels[0] == 0 and labels[-1] == 0  # leading and trailing silence
        assert (labels != 0).mean() > 0.3


def test_item_files_are_consistent(corpus: Path) -> None:
    meta, alignments = _meta(corpus), _alignments(corpus)
    for split in ("dev", "test", "test_heldout_speakers"):
        lines = _lines(corpus / "abx" / f"{split}.item")
        assert lines[0] == "#file onset offset #phone prev-phone next-phone speaker"
        ids = set(_lines(corpus / "splits" / f"{split}.txt"))
        speakers = set()
        for line in lines[1:]:
            utt, onset, offset, phone, prev, nxt, speaker = line.split()
            onset, offset = float(onset), float(offset)
            assert utt in ids and utt.split("-")[0] == speaker
            duration = sf.info(_audio_path(corpus, utt)).frames / 16000
            assert 0.0 <= onset < offset <= duration and offset - onset >= 0.03 - 1e-6
            assert {phone, prev, nxt} <= set(PHONES) and "sil" not in (phone, prev, nxt)
            # the labels of frames whose centres fall inside the token are that phone
            centres = (np.arange(len(alignments[utt])) + 0.5) * 0.01
            inside = alignments[utt][(centres >= onset) & (centres < offset)]
            assert len(inside) > 0 and (inside == PHONES.index(phone)).all(), line
            speakers.add(speaker)
        expected = set(meta["heldout_speakers"]) if "heldout" in split else None
        assert len(speakers) >= (2 if expected else 4)
        if expected:
            assert speakers == expected


def test_statistics(corpus: Path) -> None:
    stats = corpus_statistics(corpus)
    frames = stats["phone_frames"]
    assert list(frames) == PHONES
    assert sum(frames.values()) == sum(len(v) for v in _alignments(corpus).values())
    assert 0.05 < stats["silence_fraction"] < 0.5
    assert sum(n > 0 for n in frames.values()) > 25
    assert stats["abx_items"]["test"] > 20
    json.dumps(stats)


def test_same_seed_same_bytes_whatever_the_workers(corpus: Path, tmp_path: Path) -> None:
    again = generate_corpus(tmp_path / "again", TINY, workers=2, progress=False)
    assert _hashes(again) == _hashes(corpus)
    first, second = _meta(corpus), _meta(again)
    first.pop("generation_seconds"), second.pop("generation_seconds")
    assert first == second


def test_different_seed_different_audio(corpus: Path, tmp_path: Path) -> None:
    other = generate_corpus(tmp_path / "other", dataclasses.replace(TINY, seed=4), workers=1,
                            progress=False)
    utt = _lines(corpus / "splits" / "train.txt")[0]
    a, _ = sf.read(_audio_path(corpus, utt))
    b, _ = sf.read(_audio_path(other, utt))
    n = min(len(a), len(b))
    assert not np.allclose(a[:n], b[:n])
    assert _alignments(corpus)[utt].tolist() != _alignments(other)[utt].tolist()


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="hours"):
        SyntheticCorpusSpec(hours=0)
    with pytest.raises(ValueError, match="seed"):
        SyntheticCorpusSpec(seed=-1)
    with pytest.raises(ValueError, match="fewer than 4 training speakers"):
        SyntheticCorpusSpec(num_speakers=6, num_heldout_speakers=3)
    with pytest.raises(ValueError, match="utterance seconds"):
        SyntheticCorpusSpec(min_utterance_seconds=5.0, max_utterance_seconds=3.0)


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
        patch.setattr(synthetic, "generate_corpus", _no_generation)
        assert ensure_corpus(TINY, progress=False) == cached

    victim = sorted(cached.rglob("*.flac"))[0]
    victim.write_bytes(victim.read_bytes()[:100])  # a truncated file
    assert not is_complete(cached, TINY)
    assert ensure_corpus(TINY, workers=1, progress=False) == cached
    assert is_complete(cached, TINY) and _hashes(cached) == _hashes(corpus)
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
    assert is_complete(root, TINY) and _hashes(root) == _hashes(corpus)
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
    assert is_complete(root, TINY) and _hashes(root) == _hashes(corpus)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == [root.name]


def _mfcc_frames(root: Path, split: str, labels: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """13 MFCCs + deltas + delta-deltas, one frame per 10 ms label."""
    mfcc = torchaudio.transforms.MFCC(
        16000, n_mfcc=13, melkwargs={"n_fft": 400, "hop_length": 160, "n_mels": 40})
    xs, ys = [], []
    for utt in _lines(root / "splits" / f"{split}.txt"):
        wav, _ = sf.read(_audio_path(root, utt), dtype="float32")
        # pad half a frame so MFCC frame i is centred on label frame i (samples 160 i + 80)
        coeffs = mfcc(torch.nn.functional.pad(torch.from_numpy(wav), (0, 80))[80:].contiguous())
        deltas = torchaudio.functional.compute_deltas(coeffs)
        feats = torch.cat([coeffs, deltas, torchaudio.functional.compute_deltas(deltas)]).T
        y = torch.from_numpy(labels[utt])
        xs.append(feats[: len(y)])
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def _probe_accuracies(root: Path, steps: int = 300) -> dict[str, tuple[float, float]]:
    """Frame accuracy of a linear probe on MFCCs, and the majority-class rate, per split."""
    labels = _alignments(root)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: more threads only add contention
    try:
        x_train, y_train = _mfcc_frames(root, "train", labels)
        mean, std = x_train.mean(0), x_train.std(0) + 1e-5
        generator = torch.Generator().manual_seed(0)
        probe = torch.nn.Linear(x_train.shape[1], len(PHONES))
        optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2)
        for _ in range(steps):
            batch = torch.randint(len(y_train), (2048,), generator=generator)
            logits = probe((x_train[batch] - mean) / std)
            loss = torch.nn.functional.cross_entropy(logits, y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        out = {}
        with torch.no_grad():
            for split in ("test", "test_heldout_speakers"):
                x, y = _mfcc_frames(root, split, labels)
                accuracy = (probe((x - mean) / std).argmax(1) == y).float().mean().item()
                out[split] = (accuracy, torch.bincount(y).max().item() / len(y))
        return out
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_mfcc_linear_probe_is_far_above_chance_and_far_below_perfect(tmp_path: Path) -> None:
    spec = SyntheticCorpusSpec(seed=5, hours=0.06, num_speakers=8, num_heldout_speakers=2,
                               min_utterance_seconds=2.0, max_utterance_seconds=5.0)
    root = generate_corpus(tmp_path / "probe", spec, workers=2, progress=False)
    for split, (accuracy, majority) in _probe_accuracies(root).items():
        # about 0.55 (0.47 across speakers) on the default corpus; chance is below 0.25
        assert accuracy > majority + 0.15, (split, accuracy, majority)
        assert 0.25 < accuracy < 0.75, (split, accuracy)


def test_command_line(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    args = ["--out", str(out), "--hours", "0.005", "--speakers", "6", "--heldout-speakers", "2",
            "--workers", "1", "--seed", "1", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "make_synthetic_corpus.py"),
                             *args], capture_output=True, text=True, env=env, check=True)
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    assert stats["num_phones"] == len(PHONES) and stats["seed"] == 1
    assert stats["num_speakers"] == {"train": 4, "heldout": 2}
    assert "phones: 40" in result.stdout and is_complete(out)
