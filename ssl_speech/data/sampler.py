"""The batch sampler: which windows of which utterances form each batch of an epoch.

:class:`SpeakerBatchSampler` yields each batch as a list of ``(utterance index, start sample)``
pairs; :class:`~ssl_speech.data.windows.WindowDataset` reads them. All randomness lives here,
seeded from ``(seed, epoch)`` only, so an epoch is reproducible, shardable across DDP ranks and
resumable mid-way.

Epoch plan (as CPC_audio, with the details pinned down):

1. An utterance of ``L`` samples holds ``n = L // window`` consecutive non-overlapping windows.
   They start at a random offset, drawn per utterance from ``(seed, epoch)``, uniformly among
   the multiples of ``hop`` in ``[0, min(window - 1, L - n * window)]``: every epoch takes all
   ``n`` windows (the number never changes, so the epoch length is fixed) and frame labels stay
   on the 10 ms grid. Utterances shorter than a window give nothing; the sampler warns once.
2. Windows are grouped into batches of ``batch_size``:
   ``samespeaker`` (default): each batch holds one speaker's windows; a speaker's leftover
   windows are dropped with ``drop_last``, else form a smaller batch.
   ``samesequence``: each batch holds one utterance's windows; each utterance's leftovers are
   pooled (utterance by utterance) into mixed batches.
   ``uniform``: windows shuffled across the corpus.
3. The batch order is shuffled. For DDP the batches are dealt round-robin to ``world_size``
   ranks, each getting ``num_batches // world_size``; the remaining few batches of the epoch
   are dropped so that every rank runs the same number of steps. Across ranks no window occurs
   twice, and with ``drop_last=False`` and a batch count divisible by ``world_size`` the union
   is exactly the one-rank epoch.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from ssl_speech.data.audio import SAMPLE_RATE
from ssl_speech.data.corpus import Corpus

MODES = ("samespeaker", "samesequence", "uniform")


def check_window(window: int, hop: int) -> None:
    if hop <= 0:
        raise ValueError(f"hop={hop}: must be a positive number of samples per frame (160)")
    if window <= 0 or window % hop:
        raise ValueError(f"window={window} samples must be a positive multiple of hop={hop} so "
                         f"frame labels line up, e.g. {max(1, window // hop) * hop}")


@dataclass(frozen=True)
class EpochPlan:
    """One epoch's windows and batches over all ranks.

    Attributes:
        utt, start: ``(N,)`` utterance index and start sample of each window of the epoch.
        flat: ``(N',)`` window indices laid out batch after batch (``N' <= N`` with drop_last).
        first, size: ``(num_batches,)`` batch ``b`` is ``flat[first[b] : first[b] + size[b]]``,
            in the epoch's batch order.
    """

    utt: np.ndarray
    start: np.ndarray
    flat: np.ndarray
    first: np.ndarray
    size: np.ndarray

    def __len__(self) -> int:
        return len(self.first)

    def batch(self, b: int) -> list[tuple[int, int]]:
        """Batch ``b`` as ``(utterance index, start sample)`` pairs."""
        idx = self.flat[self.first[b] : self.first[b] + self.size[b]]
        return list(zip(self.utt[idx].tolist(), self.start[idx].tolist()))


class SpeakerBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(utterance index, start sample)`` windows for one rank (see module doc).

    Args:
        corpus: the utterances; indices refer to ``corpus.utterances``.
        window: window length in samples (16 kHz); a multiple of ``hop``.
        batch_size: windows per batch.
        mode: ``samespeaker``, ``samesequence`` or ``uniform``.
        seed: seeds every epoch's plan together with the epoch number.
        rank, world_size: this process's share of each epoch under DDP.
        drop_last: drop incomplete batches (per speaker in ``samespeaker`` mode).
        hop: window offsets are multiples of ``hop`` samples (the label frame).

    Resuming: :meth:`state_dict` records the epoch and the number of batches of this epoch the
    trainer has consumed; :meth:`load_state_dict` makes the next iteration of that epoch skip
    them and yield exactly the remaining batches. A ``DataLoader`` with workers draws batches
    ahead of the training loop, so the trainer must pass the count it has *consumed*:
    ``state_dict(consumed_batches=n)``; without it the count of batches yielded so far is used,
    which is right only without prefetching.
    """

    def __init__(
        self,
        corpus: Corpus,
        window: int = 20480,
        batch_size: int = 8,
        mode: str = "samespeaker",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        hop: int = 160,
    ) -> None:
        check_window(window, hop)
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1")
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}: expected one of {MODES}")
        if seed < 0:
            raise ValueError(f"seed={seed}: must be >= 0")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank={rank}, world_size={world_size}: need 0 <= rank < world_size")
        self.window, self.batch_size, self.mode, self.seed = window, batch_size, mode, seed
        self.rank, self.world_size, self.drop_last, self.hop = rank, world_size, drop_last, hop
        self._lengths = np.array([u.num_samples for u in corpus], dtype=np.int64)
        self._speakers = np.array([corpus.speaker_index(u.speaker) for u in corpus],
                                  dtype=np.int64)
        self._counts = self._lengths // window
        self.num_windows = int(self._counts.sum())
        if len(corpus) == 0:
            raise ValueError(f"the corpus at {corpus.root} has no usable utterance: every file "
                             "was missing, unreadable or too short (see the warnings above); "
                             "check the paths of data.root / data.manifest and the split list")
        if self.num_windows == 0:
            raise ValueError(f"no utterance of the {len(corpus)} in {corpus.root} is as long as "
                             f"a window of {window} samples; use a shorter window")
        self._warn_short(corpus)
        self.num_global_batches = self._count_batches()
        if self.num_global_batches == 0:
            where = "every speaker has" if mode == "samespeaker" else "the corpus has"
            raise ValueError(f"no full batch of {batch_size} windows of {window} samples: in mode "
                             f"{mode!r} {where} fewer ({self.num_windows} windows in all); use "
                             "drop_last=False, a smaller batch or window, or more data")
        if len(self) == 0:
            raise ValueError(f"{self.num_global_batches} batches of {batch_size} per epoch cannot "
                             f"be shared by {world_size} ranks; use a smaller batch or more data")
        self.epoch = 0
        self._resume_at = 0  # batches to skip in the next iteration of self.epoch
        self._yielded = 0  # position in the current epoch, counted as batches are handed out

    def _warn_short(self, corpus: Corpus) -> None:
        short = np.flatnonzero(self._counts == 0)
        if len(short) and self.rank == 0:
            seconds = self._lengths[short].sum() / SAMPLE_RATE
            names = ", ".join(corpus[int(i)].id for i in short[:5])
            warnings.warn(
                f"{len(short)} of {len(corpus)} utterances ({seconds:.1f} s) are shorter than "
                f"the {self.window}-sample window and are never sampled, e.g. {names}; drop "
                f"them when loading with min_samples={self.window}", stacklevel=3)

    # ------------------------------------------------------------------ the epoch plan
    def _count_batches(self) -> int:
        """Batches per epoch over all ranks (fixed: the windows per utterance never change)."""
        B = self.batch_size

        def batches(n: np.ndarray | int) -> np.ndarray | int:
            return n // B if self.drop_last else -(-n // B)

        if self.mode == "uniform":
            return int(batches(self.num_windows))
        if self.mode == "samespeaker":
            per_speaker = np.bincount(self._speakers, weights=self._counts).astype(np.int64)
            return int(np.sum(batches(per_speaker)))
        leftovers = int(np.sum(self._counts % B))
        return int(np.sum(self._counts // B)) + int(batches(leftovers))

    def epoch_windows(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """All windows of ``epoch``: ``(utterance index, start sample)`` arrays in corpus order."""
        rng = np.random.default_rng([self.seed, epoch])
        slack = self._lengths - self._counts * self.window
        choices = np.minimum(slack, self.window - 1) // self.hop + 1
        offsets = rng.integers(0, choices) * self.hop
        utt = np.repeat(np.arange(len(self._lengths)), self._counts)
        first = np.cumsum(self._counts) - self._counts
        k = np.arange(self.num_windows) - np.repeat(first, self._counts)
        return utt, offsets[utt] + k * self.window

    def plan(self, epoch: int) -> EpochPlan:
        """All batches of ``epoch`` over all ranks, in the epoch's shuffled order."""
        utt, start = self.epoch_windows(epoch)
        # A second stream for grouping, so offsets do not depend on the mode.
        rng = np.random.default_rng([self.seed, epoch, 1])
        if self.mode == "uniform":
            flat = rng.permutation(self.num_windows)
            first, size = self._cut(np.array([self.num_windows]))
        elif self.mode == "samespeaker":
            speaker = self._speakers[utt]
            shuffled = rng.permutation(self.num_windows)
            # Grouped by speaker, in random order within each speaker.
            key = speaker[shuffled]
            if len(self._speakers) and self._speakers.max() < 2**16:
                key = key.astype(np.uint16)  # numpy's stable sort is a radix sort for 16 bits
            flat = shuffled[np.argsort(key, kind="stable")]
            first, size = self._cut(np.bincount(speaker))
        else:
            # Windows utterance by utterance (utterances shuffled); each utterance's whole
            # batches first, then its leftovers pooled at the end.
            perm = rng.permutation(len(self._counts))
            counts = self._counts[perm]
            k = np.arange(self.num_windows) - np.repeat(np.cumsum(counts) - counts, counts)
            window_id = np.repeat((np.cumsum(self._counts) - self._counts)[perm], counts) + k
            whole = k < np.repeat(counts // self.batch_size * self.batch_size, counts)
            flat = np.concatenate([window_id[whole], window_id[~whole]])
            n_whole = int(whole.sum())
            first_a, size_a = self._cut(np.array([n_whole]))
            first_b, size_b = self._cut(np.array([self.num_windows - n_whole]), offset=n_whole)
            first, size = np.concatenate([first_a, first_b]), np.concatenate([size_a, size_b])
        order = rng.permutation(len(first))
        return EpochPlan(utt, start, flat, first[order], size[order])

    def _cut(self, sizes: np.ndarray, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Cut consecutive groups of ``sizes`` windows into batches: ``(first, size)`` arrays."""
        B = self.batch_size
        per_group = sizes // B if self.drop_last else -(-sizes // B)
        group = np.repeat(np.arange(len(sizes)), per_group)
        k = np.arange(per_group.sum()) - np.repeat(np.cumsum(per_group) - per_group, per_group)
        first = offset + (np.cumsum(sizes) - sizes)[group] + k * B
        return first, np.minimum(B, sizes[group] - k * B)

    def _my_batches(self, plan: EpochPlan) -> np.ndarray:
        if len(plan) != self.num_global_batches:
            raise RuntimeError(f"epoch plan has {len(plan)} batches, expected "
                               f"{self.num_global_batches}")
        return np.arange(self.rank, len(self) * self.world_size, self.world_size)

    def epoch_batches(self, epoch: int) -> list[list[tuple[int, int]]]:
        """This rank's batches of ``epoch``, in order."""
        plan = self.plan(epoch)
        return [plan.batch(b) for b in self._my_batches(plan)]

    # ------------------------------------------------------------------ Sampler protocol
    def __len__(self) -> int:
        """Batches per epoch for this rank (a resumed epoch yields fewer)."""
        return self.num_global_batches // self.world_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        plan = self.plan(self.epoch)
        mine = self._my_batches(plan)
        skip, self._resume_at = self._resume_at, 0
        self._yielded = skip
        for b in mine[skip:]:
            self._yielded += 1
            yield plan.batch(b)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to iterate; a position restored for another epoch is dropped."""
        if epoch < 0:
            raise ValueError(f"epoch={epoch}: must be >= 0")
        if epoch != self.epoch:
            self._resume_at = self._yielded = 0
        self.epoch = epoch

    # ------------------------------------------------------------------ resuming
    def state_dict(self, consumed_batches: int | None = None) -> dict[str, Any]:
        """The position in the epoch.

        Args:
            consumed_batches: batches of the current epoch the trainer has finished with,
                counted from the epoch's start (a resumed epoch includes the batches it
                skipped). ``None``: the number yielded so far (correct without prefetching).
        """
        position = self._yielded if consumed_batches is None else int(consumed_batches)
        if not 0 <= position <= len(self):
            raise ValueError(f"consumed_batches={position}: must be in [0, {len(self)}] "
                             "(batches of this epoch on this rank)")
        return {"epoch": self.epoch, "position": position, "seed": self.seed,
                "mode": self.mode, "window": self.window, "batch_size": self.batch_size,
                "hop": self.hop, "drop_last": self.drop_last, "world_size": self.world_size,
                "num_windows": self.num_windows}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state``: the next iteration yields the rest of its epoch.

        The epoch plan must be the same, so seed, mode, window, batch size, hop and drop_last
        must match. A different world size is allowed: the batches the old ranks consumed are
        skipped (rounded up to whole steps, so at most ``world_size - 1`` batches are lost).
        """
        for key in ("seed", "mode", "window", "batch_size", "hop", "drop_last"):
            if state[key] != getattr(self, key):
                raise ValueError(f"sampler state has {key}={state[key]!r} but this sampler "
                                 f"{key}={getattr(self, key)!r}; resume with the same data "
                                 "settings or start a new run")
        if state["num_windows"] != self.num_windows and self.rank == 0:
            warnings.warn(f"the corpus changed since the sampler state was saved "
                          f"({state['num_windows']} windows then, {self.num_windows} now): the "
                          "rest of this epoch may miss or repeat windows", stacklevel=2)
        position = int(state["position"])
        if state["world_size"] != self.world_size:
            consumed = position * int(state["world_size"])
            position = -(-consumed // self.world_size)
        self.epoch = int(state["epoch"])
        self._resume_at = self._yielded = min(position, len(self))
