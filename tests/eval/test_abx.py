"""ABX: known answers, averaging order, group caps and seeds, inputs, frame rule, the script."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_speech.data.labels import AbxItem, read_abx_items
from ssl_speech.eval import abx
from ssl_speech.eval.abx import abx_error, abx_scores, average_errors, frame_range

STEP = 0.01
REPO = Path(__file__).resolve().parents[2]


def make_corpus(seed: int, num_speakers: int = 6, num_phones: int = 3, utts: int = 3,
                phones_per_utt: int = 30, dim: int = 8, separation: float = 0.0,
                noise: float = 1.0):
    """Utterances of random phone sequences (2-14 frames a phone) and their item list.

    Frame = ``separation * mean[phone] + noise * N(0, 1)``; every phone but the first and last
    of an utterance is an item whose context is its neighbours.
    """
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(num_phones, dim))
    feats, items = {}, []
    for s in range(num_speakers):
        for u in range(utts):
            utt = f"s{s}_u{u}"
            seq = rng.integers(0, num_phones, phones_per_utt)
            ends = np.cumsum(rng.integers(2, 15, phones_per_utt))
            starts = ends - np.diff(ends, prepend=0)
            frames = separation * means[np.repeat(seq, ends - starts)]
            feats[utt] = (frames + noise * rng.normal(size=frames.shape)).astype(np.float32)
            for k in range(1, phones_per_utt - 1):
                items.append(AbxItem(utt, starts[k] * STEP, ends[k] * STEP, f"p{seq[k]}",
                                     f"p{seq[k - 1]}", f"p{seq[k + 1]}", f"spk{s}"))
    return feats, items


def write_item_file(items, path: Path) -> Path:
    with open(path, "w") as f:
        f.write("#file onset offset #phone prev next speaker\n")
        for it in items:
            f.write(" ".join(str(v) for v in it) + "\n")
    return path


# --------------------------------------------------------------------------------------------
# Known answers
# --------------------------------------------------------------------------------------------


def test_constant_distinct_phone_vectors_give_zero_error():
    feats, items = make_corpus(0, separation=1.0, noise=0.0)
    result = abx_scores(feats, items, STEP)
    assert result.errors == {"within": 0.0, "across": 0.0}
    assert result.scores["within"].num_groups > 50 and result.scores["across"].num_groups > 200


def test_random_features_are_at_chance():
    # A, B and X are exchangeable, so the expected error is exactly 50 %. The comparisons share
    # tokens, so the spread follows the ~500 tokens, not the triplets: 50/sqrt(500) = 2.2 points
    # within speaker (30 seeds of this corpus: std 2.2 within, 0.7 across, which averages over
    # more X). The bounds are 4.5 standard deviations.
    feats, items = make_corpus(1)
    assert len(items) == 504
    errors = abx_error(feats, items, STEP)
    assert abs(errors["within"] - 50) < 10, errors
    assert abs(errors["across"] - 50) < 3.2, errors


def test_error_falls_as_phones_become_more_separable():
    curve = [abx_error(*make_corpus(2, separation=1.0, noise=noise), STEP)
             for noise in (2.0, 1.0, 0.5, 0.25)]
    for mode in ("within", "across"):
        errors = [e[mode] for e in curve]
        assert errors == sorted(errors, reverse=True), curve
        assert errors[0] < 45 and errors[-1] < 2, curve


def _one_frame_tokens(vectors: list[tuple[str, str, str, tuple[float, float]]]):
    """Each token its own utterance of 3 identical frames, of which the item selects one."""
    feats, items = {}, []
    for k, (phone, context, speaker, vec) in enumerate(vectors):
        feats[f"t{k}"] = np.tile(np.asarray(vec, dtype=np.float32), (3, 1))
        items.append(AbxItem(f"t{k}", 0.0, 0.02, phone, context, "x", speaker))
    return feats, items


def _deg(a: float) -> tuple[float, float]:
    return math.cos(math.radians(a)), math.sin(math.radians(a))


def test_averaging_order_on_a_hand_computed_example():
    diag = (1.0, 1.0)  # 45 degrees, exactly as far from 0 as from 90 degrees
    feats, items = _one_frame_tokens([
        # speaker 1, context c1: X closer to B than to the other A -> error 1
        ("A", "c1", "s1", _deg(0)), ("A", "c1", "s1", _deg(90)), ("B", "c1", "s1", diag),
        # speaker 1, context c2: error 0
        ("A", "c2", "s1", _deg(0)), ("A", "c2", "s1", _deg(10)), ("B", "c2", "s1", _deg(90)),
        # speaker 2, context c1 only: error 0
        ("A", "c1", "s2", _deg(0)), ("A", "c1", "s2", _deg(10)), ("B", "c1", "s2", _deg(90)),
    ])
    result = abx_scores(feats, items, STEP)
    within = result.scores["within"]
    # contexts first (s1: (1 + 0)/2, s2: 0), then speakers: 0.25; a flat mean would give 1/3.
    # B has one token per group, so (B, A) has no within-speaker triplet.
    assert within.num_groups == 3
    assert within.error == pytest.approx(25.0)
    assert within.phones == ("A", "B")
    assert within.pair_error[0, 1] == pytest.approx(25.0) and np.isnan(within.pair_error[1, 0])
    # Across, only c1 has two speakers. Worked by hand (d in units of 180 degrees):
    # s1 (A,B), X = s2's A {0, 10}: wins 0<.25, .056<.194; losses .5>.25, .444>.194 -> 0.5
    # s1 (B,A), X = s2's B {90}: A = {45}: .25<.5 win, .25>0 loss -> 0.5
    # s2 (A,B), X = s1's A {0, 90}: X=0 wins twice, X=90 loses twice -> 0.5
    # s2 (B,A), X = s1's B {45}: A = {90}, B = {0, 10}: tie .25=.25 (half), .25>.194 -> 0.75
    across = result.scores["across"]
    assert across.num_groups == 4
    assert across.pair_error[0, 1] == pytest.approx(50.0)
    assert across.pair_error[1, 0] == pytest.approx(62.5)
    assert across.error == pytest.approx(56.25)


def test_average_errors_order_and_inner_keys_together():
    # speaker 0, pair (0, 1): inner (context, X speaker) = (0,2):0, (0,3):0, (1,2):1 -> 1/3
    # (context then X speaker would give 1/2); speaker 1, pair (0, 1): 1.0
    # speaker 0, pair (1, 0): 0.2. Pairs: (0,1) -> (1/3 + 1)/2 = 2/3, (1,0) -> 0.2.
    errors = np.array([0.0, 0.0, 1.0, 1.0, 0.2])
    speaker = np.array([0, 0, 0, 1, 0])
    phone_a = np.array([0, 0, 0, 0, 1])
    phone_b = np.array([1, 1, 1, 1, 0])
    inner = np.array([[0, 2], [0, 3], [1, 2], [0, 0], [0, 2]])
    mean, pairs, pair_mean = average_errors(errors, speaker, phone_a, phone_b, inner)
    assert pairs.tolist() == [[0, 1], [1, 0]]
    assert pair_mean == pytest.approx([2 / 3, 0.2])
    assert mean == pytest.approx((2 / 3 + 0.2) / 2)
    assert math.isnan(average_errors(errors[:0], speaker[:0], phone_a[:0], phone_b[:0],
                                     inner[:0])[0])


# --------------------------------------------------------------------------------------------
# Groups, caps and seeds
# --------------------------------------------------------------------------------------------


def _expected_group_counts(items, max_x: int) -> tuple[int, int]:
    """Within and across group counts from the protocol's definition, computed independently."""
    runs = defaultdict(int)
    for it in items:
        runs[(it.prev, it.next), it.speaker, it.phone] += 1
    phones_of, speakers_of = defaultdict(dict), defaultdict(set)
    for (ctx, spk, ph), n in runs.items():
        phones_of[ctx, spk][ph] = n
        speakers_of[ctx, ph].add(spk)
    within = across = 0
    for (ctx, _), phones in phones_of.items():
        if len(phones) < 2:
            continue
        for ph, n in phones.items():
            within += (len(phones) - 1) * (n >= 2)
            across += (len(phones) - 1) * min(max_x, len(speakers_of[ctx, ph]) - 1)
    return within, across


@pytest.mark.parametrize("max_x", [1, 2, 5])
def test_group_counts_follow_the_protocol(max_x):
    feats, items = make_corpus(3, num_speakers=7, num_phones=2, utts=2)
    result = abx_scores(feats, items, STEP, max_x_across=max_x)
    want_within, want_across = _expected_group_counts(items, max_x)
    assert result.scores["within"].num_groups == want_within
    assert result.scores["across"].num_groups == want_across


def test_tokens_are_capped_per_group_and_draws_follow_the_seed():
    feats, items = make_corpus(4, num_speakers=7, num_phones=2, utts=2)
    source = abx._FeatureSource(feats)
    tok = abx._load_tokens(source, items, STEP, False, torch.device("cpu"), False)
    largest = np.unique(np.stack([tok.context, tok.speaker, tok.phone]), axis=1,
                        return_counts=True)[1].max()
    assert largest > 6  # so a cap of 4 bites
    for across in (False, True):
        groups = abx._enumerate_groups(tok, across, 4, 3, seed=7)
        for ids in (groups.a, groups.b, groups.x):
            assert ((ids >= 0).sum(1) <= 4).all() and ((ids >= 0).sum(1) >= 1).all()
        for ids in (groups.a, groups.b, groups.x):  # drawn tokens belong to the right run
            valid = ids >= 0
            assert (tok.context[ids][valid] == np.repeat(groups.inner[:, 0],
                                                         valid.sum(1))).all()
        again = abx._enumerate_groups(tok, across, 4, 3, seed=7)
        other = abx._enumerate_groups(tok, across, 4, 3, seed=8)
        assert np.array_equal(groups.a, again.a) and np.array_equal(groups.x, again.x)
        assert not np.array_equal(groups.a, other.a)
        if across:  # at most 3 X speakers per (speaker, A, B, context), never A's own
            per_cell = defaultdict(set)
            for row in np.column_stack([groups.speaker, groups.phone_a, groups.phone_b,
                                        groups.inner]):
                per_cell[tuple(row[:4])].add(row[4])
                assert row[4] != row[0]
            assert max(len(v) for v in per_cell.values()) == 3


def test_seed_matters_only_when_groups_exceed_the_caps():
    feats, items = make_corpus(5, num_speakers=7, num_phones=2, utts=2)
    first = abx_error(feats, items, STEP, max_size_group=4, max_x_across=2, seed=1)
    assert first == abx_error(feats, items, STEP, max_size_group=4, max_x_across=2, seed=1)
    assert first != abx_error(feats, items, STEP, max_size_group=4, max_x_across=2, seed=2)
    uncapped = [abx_error(feats, items, STEP, max_size_group=1000, max_x_across=1000, seed=s)
                for s in (1, 2)]
    assert uncapped[0] == uncapped[1]


def test_any_context_pools_contexts():
    feats, items = make_corpus(6, separation=1.0, noise=0.0)
    result = abx_scores(feats, items, STEP, context="any")
    assert result.errors == {"within": 0.0, "across": 0.0}
    # one context: a (speaker, phone pair) is one within group
    assert result.scores["within"].num_groups == 6 * 3 * 2


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def test_frame_rule_matches_the_reference():
    start, end = frame_range(np.array([0.10, 0.10, 0.10, 0.0, 0.29]),
                             np.array([0.20, 0.115, 0.1149, 0.02, 0.5]), 0.01, 40)
    assert start.tolist() == [10, 10, 10, 0, 29]
    assert end.tolist() == [19, 11, 10, 1, 40]  # clipped to the 40 frames
    start, end = frame_range(np.array([0.10]), np.array([0.20]), 0.02, 100)
    assert (start.tolist(), end.tolist()) == ([5], [9])


def test_inputs_as_directory_path_tensors_or_callable_agree(tmp_path):
    feats, items = make_corpus(7, num_speakers=4)
    item_file = write_item_file(items, tmp_path / "dev.item")
    assert read_abx_items(item_file) == items
    feat_dir = tmp_path / "feats"
    feat_dir.mkdir()
    for utt, array in feats.items():
        np.save(feat_dir / f"{utt}.npy", array)
    (feat_dir / "features.json").write_text(json.dumps({"frame_step": STEP}))
    want = abx_error(feats, items, STEP)
    assert abx_error(feat_dir, item_file) == want  # frame step from features.json
    assert abx_error({k: torch.from_numpy(v) for k, v in feats.items()}, item_file, STEP) == want
    assert abx_error(feats.__getitem__, [tuple(it) for it in items], STEP) == want
    assert abx_error(feats, items, STEP, mode="within") == {"within": want["within"]}
    with pytest.raises(ValueError, match="disagrees with 0.01 s in the features"):
        abx_error(feat_dir, item_file, frame_step=0.02)


def test_missing_utterances_are_counted_and_named():
    feats, items = make_corpus(8, num_speakers=4)
    partial = {k: v for k, v in feats.items() if not k.startswith("s1_")}
    with pytest.raises(ValueError, match=r"3 of 12 utterances .* 's1_u0', 's1_u1', 's1_u2'"):
        abx_error(partial, items, STEP)
    with pytest.raises(ValueError, match="3 of 12 utterances"):
        abx_error(partial.__getitem__, items, STEP)


def test_items_without_frames_are_dropped_with_a_count():
    feats, items = make_corpus(9, num_speakers=4)
    short = [it._replace(offset=it.onset + 0.011) for it in items[:5]]  # < 1.5 frame steps
    late = [it._replace(onset=10.0, offset=10.2) for it in items[5:7]]
    with pytest.warns(UserWarning) as caught:
        result = abx_scores(feats, short + late + items[7:], STEP)
    messages = " | ".join(str(w.message) for w in caught)
    assert f"5 of {len(items)} items are too short to select a frame" in messages
    assert f"2 of {len(items)} items start past the end" in messages
    assert result.num_dropped == 7 and result.num_tokens == len(items) - 7
    assert result.num_items == len(items)
    with pytest.raises(ValueError, match="none of the 5 items selects a frame"), \
            pytest.warns(UserWarning, match="too short"):
        abx_error(feats, short, STEP)


def test_bad_arguments_and_item_lines_are_rejected(tmp_path):
    feats, items = make_corpus(10, num_speakers=2)
    for kwargs, message in [({"mode": "all"}, "mode must be one of"),
                            ({"context": "none"}, "context must be one of"),
                            ({"distance": "euclidean"}, "distance 'euclidean'"),
                            ({"max_size_group": 1}, "max_size_group must be >= 2"),
                            ({"max_x_across": 0}, "max_x_across must be >= 1"),
                            ({"frame_step": 0.0}, "frame_step must be > 0")]:
        with pytest.raises(ValueError, match=message):
            abx_error(feats, items, **{"frame_step": STEP, **kwargs})
    bad = tmp_path / "bad.item"
    bad.write_text("#header\ns0_u0 0.1 0.2 p0 p1 p2\n")
    with pytest.raises(ValueError, match=r"bad.item, line 2: expected 7 fields"):
        abx_error(feats, bad, STEP)
    bad.write_text("#header\ns0_u0 0.1 abc p0 p1 p2 spk0\n")
    with pytest.raises(ValueError, match="onset/offset '0.1', 'abc' are not numbers"):
        abx_error(feats, bad, STEP)
    with pytest.raises(ValueError, match=r"item 0: expected 7 fields"):
        abx_error(feats, [("s0_u0", 0.1, 0.2)], STEP)
    with pytest.raises(ValueError, match=r"must be \(frames, dim\)"):
        abx_error({k: v[None] for k, v in feats.items()}, items, STEP)
    with pytest.raises(TypeError, match="features must be"):
        abx_error(42, items, STEP)


def test_single_speaker_has_no_across_triplet():
    feats, items = make_corpus(11, num_speakers=1, separation=1.0, noise=0.0)
    with pytest.warns(UserWarning, match="no across-speaker triplet"):
        errors = abx_error(feats, items, STEP)
    assert errors["within"] == 0.0 and math.isnan(errors["across"])


# --------------------------------------------------------------------------------------------
# Script
# --------------------------------------------------------------------------------------------


def test_script_prints_the_figures_and_ends_with_json(tmp_path):
    feats, items = make_corpus(12, num_speakers=3, separation=1.0, noise=0.5)
    item_file = write_item_file(items, tmp_path / "dev.item")
    for utt, array in feats.items():
        np.save(tmp_path / f"{utt}.npy", array)
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "abx.py"), str(tmp_path), str(item_file),
         "--frame-step", str(STEP), "--max-size-group", "6", "--seed", "3"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    want = abx_error(feats, items, STEP, max_size_group=6, seed=3)
    assert figures == pytest.approx(want, abs=1e-4)
    assert any(line.startswith("ABX within speaker") for line in lines)
