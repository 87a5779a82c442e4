"""The embedded corpus written to disk: layout, splits, alignments, item files, determinism."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from synthetic_files import (
    TINY,
    audio_path,
    file_hashes,
    read_alignments,
    read_lines,
    read_meta,
)

from ssl_speech.data.synthetic import (
    GENERATOR_VERSION,
    PHONES,
    SyntheticCorpusSpec,
    generate_corpus,
    is_complete,
)
from ssl_speech.data.synthetic import generate as synthetic
from ssl_speech.data.synthetic.synthesis import HOP
from ssl_speech.eval.abx import abx_scores


def test_layout_splits_and_metadata(corpus: Path) -> None:
    assert is_complete(corpus, TINY)
    meta = read_meta(corpus)
    assert meta["generator_version"] == GENERATOR_VERSION and meta["seed"] == TINY.seed
    assert meta["sample_rate"] == 16000 and meta["num_phones"] == len(PHONES)
    assert read_lines(corpus / "phones.txt") == PHONES

    splits = {s: read_lines(corpus / "splits" / f"{s}.txt") for s in synthetic.SPLITS}
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
            info = sf.info(audio_path(corpus, utt))
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
    alignments = read_alignments(corpus)
    assert len(alignments) == read_meta(corpus)["num_utterances"]["total"]
    for utt, labels in alignments.items():
        samples = sf.info(audio_path(corpus, utt)).frames
        assert abs(len(labels) - samples / 160) <= 1, utt
        assert len(labels) == samples // 160
        assert labels.min() >= 0 and labels.max() < len(PHONES)
        assert labels[0] == 0 and labels[-1] == 0  # leading and trailing silence
        assert (labels != 0).mean() > 0.3


def test_item_files_are_consistent(corpus: Path) -> None:
    meta, alignments = read_meta(corpus), read_alignments(corpus)
    for split in ("dev", "test", "test_heldout_speakers"):
        lines = read_lines(corpus / "abx" / f"{split}.item")
        assert lines[0] == "#file onset offset #phone prev-phone next-phone speaker"
        ids = set(read_lines(corpus / "splits" / f"{split}.txt"))
        speakers = set()
        for line in lines[1:]:
            utt, onset, offset, phone, prev, nxt, speaker = line.split()
            onset, offset = float(onset), float(offset)
            assert utt in ids and utt.split("-")[0] == speaker
            duration = sf.info(audio_path(corpus, utt)).frames / 16000
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
    features = {utt: _one_hot(labels) for utt, labels in read_alignments(root).items()}
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


def test_same_seed_same_bytes_whatever_the_workers(corpus: Path, tmp_path: Path) -> None:
    again = generate_corpus(tmp_path / "again", TINY, workers=2, progress=False)
    assert file_hashes(again) == file_hashes(corpus)
    first, second = read_meta(corpus), read_meta(again)
    first.pop("generation_seconds"), second.pop("generation_seconds")
    assert first == second


def test_different_seed_different_audio(corpus: Path, tmp_path: Path) -> None:
    other = generate_corpus(tmp_path / "other", dataclasses.replace(TINY, seed=4), workers=1,
                            progress=False)
    utt = read_lines(corpus / "splits" / "train.txt")[0]
    a, _ = sf.read(audio_path(corpus, utt))
    b, _ = sf.read(audio_path(other, utt))
    n = min(len(a), len(b))
    assert not np.allclose(a[:n], b[:n])
    assert read_alignments(corpus)[utt].tolist() != read_alignments(other)[utt].tolist()


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


def _mfcc_frames(root: Path, split: str, labels: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """13 MFCCs + deltas + delta-deltas, one frame per 10 ms label."""
    mfcc = torchaudio.transforms.MFCC(
        16000, n_mfcc=13, melkwargs={"n_fft": 400, "hop_length": 160, "n_mels": 40})
    xs, ys = [], []
    for utt in read_lines(root / "splits" / f"{split}.txt"):
        wav, _ = sf.read(audio_path(root, utt), dtype="float32")
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
    labels = read_alignments(root)
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
