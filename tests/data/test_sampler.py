"""The batch sampler: epoch plan, modes, sharding across ranks, resume, validation."""

from __future__ import annotations

import itertools
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_speech.data.corpus import Corpus, Utterance, scan_directory
from ssl_speech.data.windows import (
    SpeakerBatchSampler,
    build_dataloader,
)

W = 1600  # a small window (10 frames of 160) keeps the plans small


def fake_corpus(seed: int = 0, speakers: int = 5, utts: int = 40) -> Corpus:
    """Lengths and speakers only (the sampler never opens files)."""
    rng = np.random.default_rng(seed)
    out = [Utterance(f"u{i:03d}", Path(f"/none/u{i}.flac"), int(rng.integers(500, 9 * W)),
                     f"spk{i % speakers}") for i in range(utts)]
    return Corpus(out, "/none")


def windows_of(batches) -> list[tuple[int, int]]:
    return [w for b in batches for w in b]


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return fake_corpus()


def sampler(corpus, **kw) -> SpeakerBatchSampler:
    kw.setdefault("window", W)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short utterances are warned about elsewhere
        return SpeakerBatchSampler(corpus, **kw)


# ----------------------------------------------------------------------------- epoch plan
def test_windows_tile_each_utterance_on_the_frame_grid(corpus):
    s = sampler(corpus, batch_size=4, drop_last=False)
    lengths = np.array([u.num_samples for u in corpus])
    offsets_seen = set()
    for epoch in range(3):
        s.set_epoch(epoch)
        wins = windows_of(s)
        assert len(wins) == len(set(wins)) == int((lengths // W).sum())
        per_utt: dict[int, list[int]] = {}
        for u, start in wins:
            per_utt.setdefault(u, []).append(start)
        for u, starts in per_utt.items():
            starts.sort()
            assert starts[0] % 160 == 0 and 0 <= starts[0] < W
            assert np.all(np.diff(starts) == W)  # consecutive, non-overlapping
            assert starts[-1] + W <= lengths[u] and len(starts) == lengths[u] // W
            offsets_seen.add((u, starts[0]))
        assert set(per_utt) == set(np.flatnonzero(lengths >= W))
    assert len(offsets_seen) > len(per_utt) * 1.5  # offsets change between epochs


def test_plan_is_deterministic_per_seed_and_epoch(corpus):
    a, b = sampler(corpus, seed=3), sampler(corpus, seed=3)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    assert list(sampler(corpus, seed=4)) != list(b)
    torch.manual_seed(0)
    np.random.seed(0)
    first = list(sampler(corpus, seed=5))
    torch.manual_seed(1)
    np.random.seed(1)
    assert list(sampler(corpus, seed=5)) == first  # no global RNG involved


@pytest.mark.parametrize("mode", ["samespeaker", "samesequence", "uniform"])
@pytest.mark.parametrize("drop_last", [True, False])
def test_len_matches_the_batches_yielded(corpus, mode, drop_last):
    for world_size in (1, 3):
        s = sampler(corpus, batch_size=4, mode=mode, drop_last=drop_last, world_size=world_size)
        for epoch in range(2):
            s.set_epoch(epoch)
            assert len(list(s)) == len(s)
            assert all(len(b) == 4 for b in s) or not drop_last


def test_samespeaker_batches_hold_one_speaker(corpus):
    speaker = [u.speaker for u in corpus]
    for drop_last in (True, False):
        s = sampler(corpus, batch_size=4, drop_last=drop_last)
        batches = list(s)
        assert all(len({speaker[u] for u, _ in b}) == 1 for b in batches)
        per_speaker = Counter(speaker[u] for u, _ in windows_of(s.epoch_batches(0)))
        available = Counter(speaker[u] for u, _ in zip(*s.epoch_windows(0)))
        if drop_last:  # a speaker's leftover windows are dropped
            assert per_speaker == {k: v // 4 * 4 for k, v in available.items() if v >= 4}
        else:
            assert per_speaker == available
            assert sum(len(b) < 4 for b in batches) == sum(v % 4 > 0 for v in available.values())


def test_samesequence_batches_come_from_one_utterance_where_possible(corpus):
    s = sampler(corpus, batch_size=3, mode="samesequence", drop_last=False)
    batches = list(s)
    counts = Counter(u for u, _ in windows_of(batches))
    full = sum(n // 3 for n in counts.values())
    single = sum(len({u for u, _ in b}) == 1 and len(b) == 3 for b in batches)
    assert single >= full
    assert counts == Counter(np.repeat(np.arange(len(corpus)),
                                       [u.num_samples // W for u in corpus]).tolist())


def test_uniform_mixes_speakers_and_covers_everything(corpus):
    s = sampler(corpus, batch_size=6, mode="uniform", drop_last=False)
    batches = list(s)
    speaker = [u.speaker for u in corpus]
    assert any(len({speaker[u] for u, _ in b}) > 1 for b in batches)
    assert sorted(windows_of(batches)) == sorted(zip(*(a.tolist() for a in s.epoch_windows(0))))


def test_batch_order_is_shuffled(corpus):
    batches = list(sampler(corpus, batch_size=4))
    speakers = [corpus[b[0][0]].speaker for b in batches]
    changes = sum(a != b for a, b in itertools.pairwise(speakers))
    assert changes > len(batches) // 2  # not grouped speaker after speaker


# ----------------------------------------------------------------------------- sharding
@pytest.mark.parametrize("mode", ["samespeaker", "uniform", "samesequence"])
def test_ranks_get_equal_disjoint_shares(corpus, mode):
    whole = sampler(corpus, batch_size=4, mode=mode, drop_last=False)
    all_windows = set(windows_of(whole))
    for world_size in (2, 3, 4):
        shards = [list(sampler(corpus, batch_size=4, mode=mode, drop_last=False, rank=r,
                               world_size=world_size)) for r in range(world_size)]
        assert len({len(s) for s in shards}) == 1
        assert len(shards[0]) == whole.num_global_batches // world_size
        union = [w for s in shards for w in windows_of(s)]
        assert len(union) == len(set(union)) and set(union) <= all_windows
        if whole.num_global_batches % world_size == 0:
            assert set(union) == all_windows
        else:
            dropped = whole.num_global_batches % world_size
            assert len(all_windows) - len(union) <= 4 * dropped


def test_union_equals_one_rank_epoch_when_divisible():
    corpus = Corpus([Utterance(f"u{i}", Path(f"/x/u{i}"), 10 * W + 7, f"s{i % 3}")
                     for i in range(12)], "/x")  # 120 windows, 40 per speaker
    one = sampler(corpus, batch_size=5, drop_last=False)
    assert one.num_global_batches == 24
    for world_size in (2, 3, 4, 6):
        union = [w for r in range(world_size)
                 for w in windows_of(sampler(corpus, batch_size=5, drop_last=False, rank=r,
                                             world_size=world_size))]
        assert sorted(union) == sorted(windows_of(one))


# ----------------------------------------------------------------------------- resume
@pytest.mark.parametrize("mode", ["samespeaker", "samesequence", "uniform"])
def test_resume_after_k_batches_equals_an_uninterrupted_epoch(corpus, mode):
    full = sampler(corpus, mode=mode, seed=7)
    full.set_epoch(2)
    reference = list(full)
    for k in (0, 1, 5, len(reference)):
        first = sampler(corpus, mode=mode, seed=7)
        first.set_epoch(2)
        head = list(itertools.islice(iter(first), k))
        state = first.state_dict()
        assert state["position"] == k and state["epoch"] == 2
        fresh = sampler(corpus, mode=mode, seed=7)
        fresh.load_state_dict(state)
        fresh.set_epoch(2)  # the trainer sets the epoch it resumes; the position is kept
        assert head + list(fresh) == reference
        assert list(fresh) == reference  # the skip applies to one iteration only


def test_resume_from_the_consumed_count_under_prefetching(corpus):
    s = sampler(corpus, seed=1)
    reference = list(s)
    iterator = iter(s)
    drawn = [next(iterator) for _ in range(6)]  # a loader drew 6, the loop consumed 4
    state = s.state_dict(consumed_batches=4)
    assert s.state_dict()["position"] == 6
    fresh = sampler(corpus, seed=1)
    fresh.load_state_dict(state)
    assert drawn[:4] + list(fresh) == reference
    with pytest.raises(ValueError, match="consumed_batches=999"):
        s.state_dict(consumed_batches=999)


def test_resume_through_a_dataloader_with_workers(tree_builder):
    root, _ = tree_builder({f"s{k}": {"1": [3 * W + 500] * 4} for k in range(3)},
                           with_metadata=False)
    corpus = scan_directory(root)

    def loader():
        return build_dataloader(corpus, window=W, batch_size=2, seed=3, num_workers=2)

    reference = [b.utt + b.start.tolist() for b in loader()]
    first = loader()
    consumed = []
    for batch in first:  # workers prefetch ahead of this loop
        consumed.append(batch.utt + batch.start.tolist())
        if len(consumed) == 5:
            break
    state = first.batch_sampler.state_dict(consumed_batches=len(consumed))
    second = loader()
    second.batch_sampler.load_state_dict(state)
    assert consumed + [b.utt + b.start.tolist() for b in second] == reference


def test_set_epoch_to_another_epoch_drops_a_restored_position(corpus):
    s = sampler(corpus)
    s.load_state_dict({**s.state_dict(), "position": 3})
    s.set_epoch(1)
    s2 = sampler(corpus)
    s2.set_epoch(1)
    assert list(s) == list(s2)


def test_resume_with_another_world_size_repeats_nothing(corpus):
    old = [sampler(corpus, rank=r, world_size=2) for r in range(2)]
    seen = []
    for s in old:
        seen += windows_of(itertools.islice(iter(s), 3))
    state = old[0].state_dict(consumed_batches=3)
    rest = []
    for r in range(3):
        s = sampler(corpus, rank=r, world_size=3)
        s.load_state_dict(state)
        rest += windows_of(s)
    assert not set(seen) & set(rest)
    assert len(seen) + len(rest) >= len(windows_of(sampler(corpus))) - 2 * 8 - 3 * 8


def test_resume_rejects_a_different_plan(corpus):
    state = sampler(corpus, seed=1).state_dict()
    with pytest.raises(ValueError, match="seed=1 but this sampler seed=2"):
        sampler(corpus, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="batch_size"):
        sampler(corpus, seed=1, batch_size=4).load_state_dict(state)


# ----------------------------------------------------------------------------- validation
def test_sampler_argument_errors(corpus):
    with pytest.raises(ValueError, match="multiple of hop=160"):
        SpeakerBatchSampler(corpus, window=1000)
    with pytest.raises(ValueError, match="mode='speaker'"):
        sampler(corpus, mode="speaker")
    with pytest.raises(ValueError, match="rank=2, world_size=2"):
        sampler(corpus, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size=0"):
        sampler(corpus, batch_size=0)
    with pytest.raises(ValueError, match="no utterance"):
        sampler(corpus, window=160 * 1000)
    with pytest.raises(ValueError, match="no full batch of 1000 windows .* every speaker"):
        sampler(corpus, batch_size=1000)
    with pytest.raises(ValueError, match="cannot be shared by 500 ranks"):
        sampler(corpus, world_size=500)


def test_short_utterances_are_reported_once(corpus):
    short = sum(u.num_samples < W for u in corpus)
    assert short > 0
    with pytest.warns(UserWarning, match=f"{short} of 40 utterances .* never sampled") as caught:
        SpeakerBatchSampler(corpus, window=W)
    assert len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SpeakerBatchSampler(corpus, window=W, rank=1, world_size=2)  # only rank 0 warns


def test_an_empty_corpus_says_so_and_a_short_one_asks_for_a_shorter_window():
    with pytest.raises(ValueError, match="no usable utterance.*data.manifest"):
        SpeakerBatchSampler(Corpus([], "/none"), window=W, batch_size=2)
    short = Corpus([Utterance("u0", Path("/none/u0.flac"), W // 2, "spk0")], "/none")
    with pytest.raises(ValueError, match="use a shorter window"):
        SpeakerBatchSampler(short, window=W, batch_size=2)
