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
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

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
from ssl_speech.data.synthetic import generate as synthetic
from ssl_speech.data.synthetic.synthesis import HOP
from ssl_speech.eval.abx import abx_scores

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
    from ssl_speech.data.synthetic.phonetics import INVENTORY

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
    from ssl_speech.data.synthetic.phonetics import Lexicon, plan_utterance

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
    with pytest.raises(ValueError, match="neighbour_share"):
        Lexicon(rng, size=60, neighbour_share=1.0)


def _medial_minimal_pairs(words: list[tuple[int, ...]]) -> int:
    """Pairs of words that differ in one segment with a phone of the word on each side."""
    frames: Counter = Counter()
    for word in words:
        for i in range(1, len(word) - 1):
            frames[(word[:i], word[i + 1:])] += 1
    return sum(n * (n - 1) // 2 for n in frames.values())


def test_lexicon_grows_in_neighbourhoods_around_frequent_words() -> None:
    from ssl_speech.data.synthetic.phonetics import INVENTORY, Lexicon

    def ranked_words(share: float) -> list[tuple[int, ...]]:
        lexicon = Lexicon(np.random.default_rng(1), size=400, neighbour_share=share)
        assert np.all(np.diff(lexicon.probs) < 0) and lexicon.probs.sum() == pytest.approx(1.0)
        # the 100 most frequent words carry about 70 % of the tokens
        assert 0.6 < lexicon.probs[:100].sum() < 0.8
        words = [tuple(p.phone for p in w) for w in lexicon.words]
        assert len(set(words)) == 400
        return words

    # minimal pairs among frequent words make a phone context recur with other centre phones
    with_neighbours, without = ranked_words(0.5), ranked_words(0.0)
    assert _medial_minimal_pairs(with_neighbours[:100]) >= 30
    assert _medial_minimal_pairs(without[:100]) <= 10
    # frequent words are short (the law of abbreviation): mostly one syllable
    syllables = np.array([sum(INVENTORY[p].is_vowel for p in w) for w in with_neighbours])
    assert np.mean(syllables[:100] == 1) > 0.7 and syllables[:100].mean() < syllables[-100:].mean()


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
    # 4 training speakers: the first 2 hold most of dev, the last 2 most of test
    assert meta["abx_speakers"] == {"dev": ["1001", "1002"], "test": ["1003", "1004"]}
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


def test_dev_and_test_concentrate_on_a_few_abx_speakers() -> None:
    spec = SyntheticCorpusSpec()
    plan = synthetic._plan(spec)
    splits: dict[int, Counter] = {}
    for utt in plan:
        splits.setdefault(utt.speaker, Counter())[utt.split] += 1
    # 20 training speakers: the first 4 hold dev, the last 4 test, half their utterances each
    abx = {"dev": range(4), "test": range(16, 20)}
    for speaker in range(20):
        counts = splits[speaker]
        assert min(counts["train"], counts["dev"], counts["test"]) >= 1, (speaker, counts)
        for split, speakers in abx.items():
            expected = sum(counts.values()) / 2 if speaker in speakers else 1
            assert abs(counts[split] - expected) <= 0.5, (speaker, split, counts)
    for speakers in abx.values():  # alternately male and female
        assert sorted(s % 2 for s in speakers) == [0, 0, 1, 1]
    totals = Counter(utt.split for utt in plan)
    training = totals["train"] + totals["dev"] + totals["test"]
    assert 0.1 <= totals["dev"] / training <= 0.15 and 0.1 <= totals["test"] / training <= 0.15
    assert set(splits) - set(range(20)) == set(range(20, 24))
    assert all(set(splits[s]) == {"test_heldout_speakers"} for s in range(20, 24))


def _one_hot(labels: np.ndarray | list[int]) -> np.ndarray:
    """``(frames, phones)``: frame labels as features that tell every phone from every other."""
    return np.eye(len(PHONES), dtype=np.float32)[np.asarray(labels)]


def _abx_groups(features: dict, items, max_size_group: int = 10) -> dict[str, tuple[int, float]]:
    """Within- and across-speaker triplet groups of the ABX module and their error (percent)."""
    scores = abx_scores(features, items, max_size_group=max_size_group).scores
    return {mode: (score.num_groups, score.error) for mode, score in scores.items()}


# 2 ABX speakers per split with about 35 s each, 2 held-out speakers with 1 min each
ABX_SPEC = SyntheticCorpusSpec(seed=0, hours=0.1, num_speakers=6, num_heldout_speakers=2,
                               dev_fraction=0.25, test_fraction=0.25, max_utterance_seconds=6.0)


@pytest.mark.slow
def test_item_files_give_within_context_abx_groups(tmp_path: Path) -> None:
    """Within-context ABX needs, for one speaker and one (previous, next) context, two tokens of
    a phone and one of another: minimal pairs of frequent words and minutes per speaker."""
    root = generate_corpus(tmp_path / "abx", ABX_SPEC, workers=2, progress=False)
    features = {utt: _one_hot(labels) for utt, labels in _alignments(root).items()}
    # version 1 of the generator gave 4, 4 and 46 within-speaker groups (3, 17 and 68 across)
    minimum = {"dev": (30, 60), "test": (30, 60), "test_heldout_speakers": (90, 120)}
    for split, (within, across) in minimum.items():
        groups = _abx_groups(features, root / "abx" / f"{split}.item")
        assert groups["within"][0] >= within and groups["across"][0] >= across, (split, groups)
        # the labels' own frames tell A from B in every triplet: the items match the alignments
        assert groups["within"][1] == 0.0 and groups["across"][1] == 0.0, (split, groups)


def test_default_corpus_item_files_give_hundreds_of_abx_groups() -> None:
    """The item files of the 1-hour default corpus, replayed from its plan without synthesis."""
    spec = SyntheticCorpusSpec()
    features, items = {}, {split: [] for split in synthetic.ABX_SPLITS}
    for utt in synthetic._plan(spec):
        tokens, _ = synthetic._utterance_tokens(spec, utt)
        spans = [(t.phone, t.start, t.end) for t in tokens]
        features[utt.utt_id] = _one_hot(synthetic._frame_labels(spans, HOP * tokens[-1].end))
        if utt.split in items:
            lines = synthetic._item_lines(utt.utt_id, synthetic._speaker_id(utt.speaker), spans)
            items[utt.split] += [line.split() for line in lines]
    # version 1 gave 4 and 7 within-speaker groups on dev and test (243 and 192 across)
    for split, lines in items.items():
        # two tokens per group are enough to count the groups, and cheaper to score
        groups = _abx_groups(features, lines, max_size_group=2)
        assert groups["within"][0] >= 300 and groups["across"][0] >= 1000, (split, groups)
        assert groups["within"][1] == 0.0 and groups["across"][1] == 0.0, (split, groups)


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
    with pytest.raises(ValueError, match="dev_fraction"):
        SyntheticCorpusSpec(dev_fraction=0.5)
    with pytest.raises(ValueError, match="abx_share"):
        SyntheticCorpusSpec(abx_share=0.6)


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
