"""ABX phone discriminability of frozen features (Libri-light / ZeroSpeech 2021 protocol).

Schatz et al., "Evaluating speech features with the minimal-pair ABX task" (Interspeech 2013),
as run by Libri-light (Kahn et al., ICASSP 2020) and the ZeroSpeech 2021 benchmark (Nguyen et
al., 2020) and packaged as ``zerospeech-libriabx2`` (import name ``zrc_abx2``), which this module
reproduces: same items, frames, distance, triplet groups, random subsampling and averaging, so
the figures agree with it (see ``tests/eval/test_abx_reference.py``).

The protocol, step by step:

- Items: one phone token per line of the item file, ``file onset offset phone prev next
  speaker`` (seconds; the first line is a header). ``(prev, next)`` is the token's context.
- Frames: at frame step ``s`` (rate ``r = 1/s``) a token takes the frames
  ``ceil(r*onset - 0.5) <= i < floor(r*offset - 0.5)`` (clipped to the utterance), the
  reference's rule. Frame ``i`` is taken when ``[(i + 1/2) s, (i + 3/2) s]`` lies inside
  ``[onset, offset]``: one frame fewer than "centre ``(i + 1/2) s`` inside ``[onset, offset)``"
  for most tokens (0.10-0.20 s gives frames 10..18 at 10 ms). Tokens that get no frame (shorter
  than about one or two steps, or past the end of the features) are left out, as in the
  reference, with a warning that counts them.
- Distance: frames L2-normalised; frame distance ``arccos(cos)/pi``; token distance the DTW cost
  along the best path divided by its length (:mod:`ssl_speech.eval.dtw`).
- Groups: tokens sharing (context, speaker, phone). For a speaker, a context and an ordered pair
  of phones (A, B), the score of a group is the fraction of triplets where ``d(A, X) < d(B, X)``
  (ties count half); the error is one minus it. Within speaker, X is drawn from A's own group
  (``X != A``, so A needs two tokens); across speaker, A and B come from one speaker and X from
  A's phone and context said by another speaker, at most ``max_x_across`` such speakers drawn at
  random. Every group is cut to ``max_size_group`` random tokens each time it is used.
- Averaging: within speaker, errors are averaged over contexts, then speakers, then ordered
  phone pairs; across speaker, over (context, X speaker) together, then speakers (of A and B),
  then ordered phone pairs. Chance is 50 %; results are in percent.
- Randomness: Python's ``random.Random(seed)``, drawn in the reference's order (tokens sorted
  stably by context, speaker and phone id, ids numbered by first appearance in the item file,
  ties kept in feature order: utterances in order of first appearance, then item order). With
  the same seed and token order the same subsets are drawn, so the figures are identical;
  with every group under the caps nothing is drawn at all.

Work is spread over three passes: enumerate the triplet groups (cheap, Python), compute the DTW
of every distinct token pair once (batched, vectorised), then score and average (numpy).
"""

from __future__ import annotations

import json
import math
import random
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ssl_speech.data.labels import AbxItem, as_abx_item, read_abx_items
from ssl_speech.eval.dtw import normalize_frames, pairwise_dtw
from ssl_speech.eval.messages import quote_ids

FEATURES_JSON = "features.json"
DEFAULT_FRAME_STEP = 0.01  # seconds, when neither the caller nor features.json gives one
MODES = ("within", "across", "both")
CONTEXTS = ("within", "any")
_COMPARISONS_PER_CHUNK = 1 << 22  # (group, x, a, b) comparisons scored at once


FeatureArray = np.ndarray | torch.Tensor
FeatureSource = Mapping[str, FeatureArray] | Callable[[str], FeatureArray] | str | PathLike


@dataclass(frozen=True)
class ABXScore:
    """One speaker condition's result.

    Attributes:
        error: ABX error in percent (50 is chance); NaN when no triplet exists.
        phones: phone labels, indexing ``pair_error``.
        pair_error: ``(P, P)`` percent, row = phone of A and X, column = phone of B, averaged
            over contexts (and X speakers) and speakers; NaN where the pair has no triplet.
        num_groups: (A, B, X) groups scored.
    """

    error: float
    phones: tuple[str, ...]
    pair_error: np.ndarray
    num_groups: int


@dataclass(frozen=True)
class ABXResult:
    """Scores per speaker condition and what the item file gave."""

    scores: dict[str, ABXScore]
    frame_step: float
    num_items: int
    num_tokens: int
    num_dropped: int

    @property
    def errors(self) -> dict[str, float]:
        """``{"within": 6.1, "across": 8.2}``: ABX error in percent per condition."""
        return {mode: score.error for mode, score in self.scores.items()}


# --------------------------------------------------------------------------------------------
# Items and frames
# --------------------------------------------------------------------------------------------


def frame_range(onset: np.ndarray, offset: np.ndarray, frame_step: float,
                num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``[start, end)`` of tokens in an utterance of ``num_frames`` frames (reference rule).

    ``start = max(0, ceil(onset/s - 1/2))``, ``end = min(num_frames, floor(offset/s - 1/2))``;
    an empty range (``end <= start``) means the token gets no frame.
    """
    rate = 1.0 / frame_step  # the reference multiplies by this rate rather than dividing
    start = np.maximum(0, np.ceil(rate * np.asarray(onset, dtype=np.float64) - 0.5))
    end = np.minimum(num_frames, np.floor(rate * np.asarray(offset, dtype=np.float64) - 0.5))
    return start.astype(np.int64), end.astype(np.int64)


class _FeatureSource:
    """Uniform access to features given as a mapping, a callable or a ``.npy`` directory."""

    def __init__(self, source: FeatureSource):
        self.frame_step: float | None = None
        self.has: Callable[[str], bool] | None = None
        if isinstance(source, (str, PathLike)):
            root = Path(source)
            if not root.is_dir():
                raise FileNotFoundError(f"feature directory {root} does not exist: export "
                                        f"features first (one <utt_id>.npy per utterance)")
            paths = {p.stem: p for p in root.glob("*.npy")}
            meta = root / FEATURES_JSON
            if meta.is_file():
                step = json.loads(meta.read_text()).get("frame_step")
                self.frame_step = float(step) if step is not None else None
            self.has, self.get = paths.__contains__, lambda utt: np.load(paths[utt])
        elif isinstance(source, Mapping):
            self.has, self.get = source.__contains__, source.__getitem__
        elif callable(source):
            self.get = source
        else:
            raise TypeError(f"features must be a mapping utt_id -> (frames, dim) array, a "
                            f"callable or a directory of .npy files, got {type(source).__name__}")

    def load(self, utt: str) -> np.ndarray:
        array = self.get(utt)
        if isinstance(array, torch.Tensor):
            array = array.detach().float().cpu().numpy()
        array = np.asarray(array, dtype=np.float32)
        if array.ndim != 2:
            raise ValueError(f"features of {utt!r} must be (frames, dim), got shape "
                             f"{array.shape}")
        if not np.isfinite(array).all():
            raise ValueError(f"features of {utt!r} contain NaN or inf values")
        return array


def _missing_message(missing: Sequence[str], total: int) -> str:
    return (f"{len(missing)} of {total} utterances of the item file have no features "
            f"(e.g. {quote_ids(missing)}): export features for every utterance of the item file's "
            f"split, or use the item file that matches the exported split")


@dataclass
class _Tokens:
    """Tokens that got frames: unit frames ``(F, D)`` and per-token ``(T,)`` columns."""

    frames: torch.Tensor
    zero: torch.Tensor
    start: np.ndarray
    length: np.ndarray
    context: np.ndarray
    speaker: np.ndarray
    phone: np.ndarray
    phones: tuple[str, ...]
    num_dropped: int


def _encode(values: Sequence) -> tuple[np.ndarray, list]:
    """Integer ids numbered by first appearance (the reference's numbering)."""
    ids: dict = {}
    codes = np.fromiter((ids.setdefault(v, len(ids)) for v in values), np.int64, len(values))
    return codes, list(ids)


def _load_tokens(source: _FeatureSource, items: Sequence[AbxItem], frame_step: float,
                 any_context: bool, device: torch.device, progress: bool) -> _Tokens:
    phone, phones = _encode([it.phone for it in items])
    speaker, _ = _encode([it.speaker for it in items])
    context, _ = _encode([(it.prev, it.next) for it in items])
    if any_context:
        context = np.zeros_like(context)
    by_file: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_file.setdefault(it.file, []).append(i)
    if source.has is not None:
        missing = [u for u in by_file if not source.has(u)]
        if missing:
            raise ValueError(_missing_message(missing, len(by_file)))

    chunks, kept, starts, lengths = [], [], [], []
    beyond, short, missing, dim, total = [], [], [], None, 0
    for utt, rows in tqdm(by_file.items(), desc="ABX features", disable=not progress):
        try:
            feats = source.load(utt)
        except (KeyError, FileNotFoundError):
            missing.append(utt)
            continue
        if dim is not None and feats.shape[1] != dim:
            raise ValueError(f"features of {utt!r} have dim {feats.shape[1]}, others {dim}")
        dim = feats.shape[1]
        rows = np.asarray(rows)
        begin, end = frame_range([items[i].onset for i in rows],
                                 [items[i].offset for i in rows], frame_step, len(feats))
        past = begin >= len(feats)
        empty = ~past & (end <= begin)
        beyond += [f"{utt}@{items[i].onset:g}s" for i in rows[past]]
        short += [f"{utt}@{items[i].onset:g}s" for i in rows[empty]]
        for i, b, e in zip(rows[~past & ~empty], begin[~past & ~empty], end[~past & ~empty]):
            chunks.append(feats[b:e])
            kept.append(i)
            starts.append(total)
            lengths.append(e - b)
            total += e - b
    if missing:
        raise ValueError(_missing_message(missing, len(by_file)))
    _warn_dropped(short, beyond, len(items), frame_step)
    if not kept:
        raise ValueError(f"none of the {len(items)} items selects a frame at frame step "
                         f"{frame_step} s: check the frame step and that the features cover "
                         f"the item file's times")
    unit, zero = normalize_frames(torch.from_numpy(np.concatenate(chunks)))
    kept = np.asarray(kept)
    return _Tokens(unit.to(device), zero.to(device), np.asarray(starts, dtype=np.int64),
                   np.asarray(lengths, dtype=np.int64), context[kept], speaker[kept],
                   phone[kept], tuple(phones), len(short) + len(beyond))


def _warn_dropped(short: list[str], beyond: list[str], total: int, frame_step: float) -> None:
    if short:
        warnings.warn(f"{len(short)} of {total} items are too short to select a frame at frame "
                      f"step {frame_step} s and are left out, as in the reference (e.g. "
                      f"{quote_ids(short)})", stacklevel=3)
    if beyond:
        warnings.warn(f"{len(beyond)} of {total} items start past the end of their "
                      f"utterance's features and are left out (e.g. {quote_ids(beyond)}): check "
                      f"the frame step {frame_step} s and that the features are complete",
                      stacklevel=3)


# --------------------------------------------------------------------------------------------
# Triplet groups
# --------------------------------------------------------------------------------------------


@dataclass
class _Groups:
    """Triplet groups: ``(G, K)`` token ids padded with -1, and their averaging keys."""

    a: np.ndarray
    b: np.ndarray
    x: np.ndarray  # equal to ``a`` within speaker
    speaker: np.ndarray  # (G,) speaker of A and B
    phone_a: np.ndarray
    phone_b: np.ndarray
    inner: np.ndarray  # (G, k) keys averaged first: context (and X speaker across)


def _hierarchy(tok: _Tokens) -> tuple[np.ndarray, list[list[list[tuple[int, int]]]]]:
    """Tokens sorted by (context, speaker, phone), stable; runs nested context > speaker > phone.

    Returns the sorted token ids and, per context, per speaker, the ``[start, end)`` positions of
    each phone's run in that order.
    """
    order = np.lexsort((np.arange(len(tok.phone)), tok.phone, tok.speaker, tok.context))
    c, s, p = tok.context[order], tok.speaker[order], tok.phone[order]
    bounds = np.flatnonzero((c[1:] != c[:-1]) | (s[1:] != s[:-1]) | (p[1:] != p[:-1])) + 1
    edges = [0, *bounds.tolist(), len(order)]
    tree: list[list[list[tuple[int, int]]]] = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        if not tree or c[lo] != c[tree[-1][0][0][0]]:
            tree.append([[(lo, hi)]])
        elif s[lo] != s[tree[-1][-1][0][0]]:
            tree[-1].append([(lo, hi)])
        else:
            tree[-1][-1].append((lo, hi))
    return order, tree


def _enumerate_groups(tok: _Tokens, across: bool, max_size_group: int, max_x_across: int,
                      seed: int) -> _Groups:
    """All (A, B, X) groups with the reference's iteration order and random draws."""
    order, tree = _hierarchy(tok)
    rng = random.Random(seed)

    def take(run: tuple[int, int]) -> np.ndarray:
        lo, hi = run
        picked = rng.sample(range(lo, hi), k=max_size_group) if hi - lo > max_size_group \
            else range(lo, hi)
        return order[list(picked)]

    speakers_of: dict[tuple[int, int], list[tuple[int, tuple[int, int]]]] = {}
    if across:
        for context_runs in tree:
            for speaker_runs in context_runs:
                for run in speaker_runs:
                    t = order[run[0]]
                    key = (int(tok.context[t]), int(tok.phone[t]))
                    speakers_of.setdefault(key, []).append((int(tok.speaker[t]), run))

    a_list, b_list, x_list, keys = [], [], [], []

    def add(a: np.ndarray, b: np.ndarray, x: np.ndarray, key: tuple[int, ...]) -> None:
        a_list.append(a)
        b_list.append(b)
        x_list.append(x)
        keys.append(key)

    for context_runs in tree:
        for speaker_runs in context_runs:
            if len(speaker_runs) == 1:
                continue
            first = order[speaker_runs[0][0]]
            ctx, spk = int(tok.context[first]), int(tok.speaker[first])
            phone = [int(tok.phone[order[run[0]]]) for run in speaker_runs]
            for i_a, run_a in enumerate(speaker_runs):
                if not across:
                    if run_a[1] - run_a[0] == 1:
                        continue  # X must differ from A: one token is not enough
                    for i_b, run_b in enumerate(speaker_runs):
                        if i_b != i_a:
                            b = take(run_b)  # the reference draws B before A
                            a = take(run_a)
                            add(a, b, a, (spk, phone[i_a], phone[i_b], ctx))
                    continue
                others = [o for o in speakers_of[(ctx, phone[i_a])] if o[0] != spk]
                if len(others) > max_x_across:
                    others = rng.sample(others, k=max_x_across)
                for spk_x, run_x in others:
                    for i_b, run_b in enumerate(speaker_runs):
                        if i_b != i_a:
                            a, b, x = take(run_a), take(run_b), take(run_x)
                            add(a, b, x, (spk, phone[i_a], phone[i_b], ctx, spk_x))
    key_array = np.asarray(keys, dtype=np.int64).reshape(len(keys), 5 if across else 4)
    width = max((len(r) for r in a_list + b_list + x_list), default=1)
    return _Groups(_pad(a_list, width), _pad(b_list, width), _pad(x_list, width),
                   key_array[:, 0], key_array[:, 1], key_array[:, 2], key_array[:, 3:])


def _pad(rows: list[np.ndarray], width: int) -> np.ndarray:
    out = np.full((len(rows), width), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


class _DistanceCache:
    """DTW distance of each (row token, column token) pair, computed once, kept sorted by key."""

    def __init__(self, tok: _Tokens):
        self.tok = tok
        self.keys = np.empty(0, dtype=np.int64)
        self.values = np.empty(0, dtype=np.float32)

    def __call__(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        n = len(self.tok.length)
        unique, inverse = np.unique(rows * n + cols, return_inverse=True)
        pos = np.searchsorted(self.keys, unique)
        known = pos < len(self.keys)
        known[known] = self.keys[pos[known]] == unique[known]
        values = np.empty(len(unique), dtype=np.float32)
        values[known] = self.values[pos[known]]
        new = unique[~known]
        if len(new):
            values[~known] = pairwise_dtw(self.tok.frames, self.tok.zero, self.tok.start,
                                          self.tok.length, new // n, new % n)
            at = pos[~known]
            self.keys = np.insert(self.keys, at, new)
            self.values = np.insert(self.values, at, values[~known])
        return values[inverse.reshape(-1)]


def _score_groups(groups: _Groups, distance: _DistanceCache, within: bool,
                  progress: bool, desc: str) -> np.ndarray:
    """``(G,)`` error (fraction) of each group: 1 - P(d(A,X) < d(B,X)), ties half."""
    G, K = groups.a.shape
    errors = np.empty(G, dtype=np.float64)
    p = np.arange(K)
    # within speaker X runs over A: d(A[p], A[q]) is computed once with the earlier position of
    # the drawn list as rows (the reference fills one triangle and mirrors it)
    lo, hi = np.minimum(p[:, None], p[None, :]), np.maximum(p[:, None], p[None, :])
    chunk = max(1, _COMPARISONS_PER_CHUNK // K**3)
    for s in tqdm(range(0, G, chunk), desc=desc, disable=not progress):
        a, b, x = groups.a[s : s + chunk], groups.b[s : s + chunk], groups.x[s : s + chunk]
        va, vb, vx = a >= 0, b >= 0, x >= 0
        if within:
            rows_xa, cols_xa = a[:, lo], a[:, hi]
            mask_xa = va[:, lo] & va[:, hi] & (lo != hi)
        else:
            rows_xa = np.broadcast_to(x[:, :, None], (len(x), K, K))
            cols_xa = np.broadcast_to(a[:, None, :], (len(x), K, K))
            mask_xa = vx[:, :, None] & va[:, None, :]
        rows_xb = np.broadcast_to(x[:, :, None], (len(x), K, K))
        cols_xb = np.broadcast_to(b[:, None, :], (len(x), K, K))
        mask_xb = vx[:, :, None] & vb[:, None, :]
        # absent entries: d(A,X) = +inf and d(B,X) = -inf never compare as less nor equal
        dxa = np.full(mask_xa.shape, np.inf, dtype=np.float32)
        dxb = np.full(mask_xb.shape, -np.inf, dtype=np.float32)
        found = distance(np.concatenate([rows_xa[mask_xa], rows_xb[mask_xb]]),
                         np.concatenate([cols_xa[mask_xa], cols_xb[mask_xb]]))
        split = int(mask_xa.sum())
        dxa[mask_xa], dxb[mask_xb] = found[:split], found[split:]
        da, db = dxa[:, :, :, None], dxb[:, :, None, :]  # (g, x, a, b)
        wins = (da < db).sum(axis=(1, 2, 3)) + 0.5 * (da == db).sum(axis=(1, 2, 3))
        n_a, n_b, n_x = va.sum(1), vb.sum(1), vx.sum(1)
        pairs = n_a * (n_a - 1) if within else n_a * n_x
        errors[s : s + chunk] = 1.0 - wins / (pairs * n_b)
    return errors


def average_errors(errors: np.ndarray, speaker: np.ndarray, phone_a: np.ndarray,
                   phone_b: np.ndarray, inner: np.ndarray,
                   ) -> tuple[float, np.ndarray, np.ndarray]:
    """The protocol's nested mean of group errors.

    Args:
        errors: ``(G,)`` error of each group.
        speaker, phone_a, phone_b: ``(G,)`` ids of the group's speaker (of A and B) and phones.
        inner: ``(G, k)`` keys averaged first, together: the context, and across speakers also
            the X speaker. Each row of (speaker, phone_a, phone_b, inner) must be unique.

    Returns:
        ``(mean, pairs (Q, 2), pair_mean (Q,))``: first the mean over ``inner`` for each
        (speaker, phone_a, phone_b), then over speakers for each phone pair (``pairs``,
        ``pair_mean``), then over phone pairs (``mean``). NaN mean for no group.
    """
    if len(errors) == 0:
        return math.nan, np.zeros((0, 2), dtype=np.int64), np.zeros(0)
    cell = np.stack([speaker, phone_a, phone_b], axis=1)
    cells, of_cell = np.unique(cell, axis=0, return_inverse=True)
    cell_mean = _mean_by(errors, of_cell.reshape(-1), len(cells))
    pairs, of_pair = np.unique(cells[:, 1:], axis=0, return_inverse=True)
    pair_mean = _mean_by(cell_mean, of_pair.reshape(-1), len(pairs))
    return float(pair_mean.mean()), pairs, pair_mean


def _mean_by(values: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(index, weights=values, minlength=n) / np.bincount(index, minlength=n)


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def abx_scores(
    features: FeatureSource,
    items: str | PathLike | Sequence[AbxItem | Sequence],
    frame_step: float | None = None,
    mode: str = "both",
    context: str = "within",
    distance: str = "angular",
    max_size_group: int = 10,
    max_x_across: int = 5,
    seed: int = 3459,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> ABXResult:
    """ABX error of features on the tokens of an item file, with per-phone-pair tables.

    Args:
        features: ``utt_id -> (frames, dim)`` arrays (float, any scale) as a mapping, a callable
            (e.g. a model run on the utterance), or a directory of ``<utt_id>.npy`` files with
            an optional ``features.json`` giving ``frame_step``.
        items: item file path, or its items (:class:`AbxItem` or 7-field tuples).
        frame_step: seconds between feature frames (0.01 for a 160-sample hop at 16 kHz);
            ``None`` takes ``features.json``'s value, else 0.01.
        mode: ``"within"``, ``"across"`` or ``"both"`` speaker conditions.
        context: ``"within"`` (the protocol: A, B and X share their context) or ``"any"``
            (contexts ignored, as ``zrc_abx2``'s any-context condition).
        distance: only ``"angular"``, the protocol's ``arccos(cos)/pi``.
        max_size_group: at most this many random tokens of a group are used (>= 2).
        max_x_across: at most this many random X speakers per (A, B) across speakers.
        seed: seed of the random draws (the reference's default 3459).
        device: where the distances are computed.
        progress: show tqdm progress bars.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
    if distance != "angular":
        raise ValueError(f"distance {distance!r} is not supported: the protocol uses "
                         f"'angular' (arccos(cos)/pi between L2-normalised frames)")
    if max_size_group < 2:
        raise ValueError(f"max_size_group must be >= 2 (X and A are two tokens of one group), "
                         f"got {max_size_group}")
    if max_x_across < 1:
        raise ValueError(f"max_x_across must be >= 1, got {max_x_across}")
    source = _FeatureSource(features)
    frame_step = _resolve_frame_step(frame_step, source.frame_step)
    if isinstance(items, (str, PathLike)):
        items = read_abx_items(items)
    else:
        items = [it if isinstance(it, AbxItem) else as_abx_item(list(it), f"item {n}")
                 for n, it in enumerate(items)]
    if not items:
        raise ValueError("the item file has no items")
    device = torch.device(device)
    tok = _load_tokens(source, items, frame_step, context == "any", device, progress)
    distance_cache = _DistanceCache(tok)
    scores = {}
    with torch.no_grad():
        for name in ("within", "across") if mode == "both" else (mode,):
            groups = _enumerate_groups(tok, name == "across", max_size_group, max_x_across, seed)
            errors = _score_groups(groups, distance_cache, name == "within", progress,
                                   f"ABX {name} speaker")
            scores[name] = _summarise(name, groups, errors, tok.phones)
    return ABXResult(scores, frame_step, len(items), len(tok.length), tok.num_dropped)


def abx_error(
    features: FeatureSource,
    items: str | PathLike | Sequence[AbxItem | Sequence],
    frame_step: float | None = None,
    mode: str = "both",
    context: str = "within",
    distance: str = "angular",
    max_size_group: int = 10,
    max_x_across: int = 5,
    seed: int = 3459,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, float]:
    """``{"within": 6.1, "across": 8.2}``: ABX error in percent; see :func:`abx_scores`."""
    return abx_scores(features, items, frame_step=frame_step, mode=mode, context=context,
                      distance=distance, max_size_group=max_size_group,
                      max_x_across=max_x_across, seed=seed, device=device,
                      progress=progress).errors


def _resolve_frame_step(given: float | None, from_features: float | None) -> float:
    if given is None:
        step = from_features if from_features is not None else DEFAULT_FRAME_STEP
    else:
        step = float(given)
        if from_features is not None and not math.isclose(step, from_features, rel_tol=1e-6):
            raise ValueError(f"frame_step {step} s disagrees with {from_features} s in the "
                             f"features' {FEATURES_JSON}: pass the features' real frame step "
                             f"or leave it unset")
    if not step > 0:
        raise ValueError(f"frame_step must be > 0 seconds, got {step}")
    return step


def _summarise(name: str, groups: _Groups, errors: np.ndarray,
               phones: tuple[str, ...]) -> ABXScore:
    mean, pairs, pair_mean = average_errors(errors, groups.speaker, groups.phone_a,
                                            groups.phone_b, groups.inner)
    if not len(errors):
        need = ("a speaker with two tokens of one phone and one of another in the same context"
                if name == "within" else
                "two speakers sharing a phone in a context, one of them with a second phone there")
        warnings.warn(f"no {name}-speaker triplet in the item file (it needs {need}): the "
                      f"{name} error is NaN", stacklevel=3)
    table = np.full((len(phones), len(phones)), np.nan)
    table[pairs[:, 0], pairs[:, 1]] = 100.0 * pair_mean
    return ABXScore(100.0 * mean, phones, table, len(errors))
