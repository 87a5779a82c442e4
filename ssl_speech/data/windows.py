"""Training windows: reading the fixed-length crops the sampler plans, and the training loader.

:class:`~ssl_speech.data.sampler.SpeakerBatchSampler` decides which windows form each batch
(see its module for the epoch plan); :class:`WindowDataset` reads one window;
:func:`collate_windows` stacks a batch into a :class:`~ssl_speech.data.batch.Batch`;
:func:`build_dataloader` puts them together with worker processes, pinned memory and prefetch.

Reading from disk decodes only the window (a seek, then its frames: ``read_audio``), so the cost
of a window does not grow with the length of its file. A window whose file fails at read time,
or holds NaN/Inf samples, is left out of its batch and listed in ``Batch.skipped``
(``on_error="skip"``), or stops training with the file's name (``"raise"``); see
:mod:`ssl_speech.data.read_faults`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ssl_speech.data.audio import AudioError, read_audio
from ssl_speech.data.batch import Batch
from ssl_speech.data.corpus import ON_ERROR, Corpus
from ssl_speech.data.labels import IGNORE_INDEX, slice_labels
from ssl_speech.data.read_faults import ReadFault, ReadFaultLog, non_finite_error
from ssl_speech.data.sampler import MODES, EpochPlan, SpeakerBatchSampler, check_window

__all__ = ["MODES", "EpochPlan", "SpeakerBatchSampler", "WindowDataset", "WindowLoader",
           "build_dataloader", "collate_windows"]

_INT16_SCALE = 32768.0


class WindowDataset(Dataset):
    """Reads the window ``(utterance index, start sample)`` of a corpus.

    Args:
        corpus: the utterances.
        window: window length in samples (16 kHz).
        labels: optional ``{utt_id: (F,) frame labels}``; utterances without an entry get
            :data:`~ssl_speech.data.labels.IGNORE_INDEX` everywhere (counted in a warning).
        in_memory: decode the whole corpus once, here, into one array (int16 when every file
            is 16-bit PCM at 16 kHz, else float32): for small corpora, such as the embedded one
            (about 115 MB per hour as int16). Worker processes share it copy-on-write.
        hop: samples per label frame.
        on_error: a window that cannot be read (file gone, truncated or replaced since the
            scan; NaN/Inf samples): ``"skip"`` returns a :class:`ReadFault` in its place,
            ``"raise"`` raises :class:`~ssl_speech.data.audio.AudioError` naming the file.

    Items are dicts ``wav (window,) float32, speaker int, phones (window // hop,) int64 or
    None, start int, utt str``, or a :class:`ReadFault`; :func:`collate_windows` stacks them.
    """

    def __init__(
        self,
        corpus: Corpus,
        window: int = 20480,
        labels: Mapping[str, np.ndarray] | None = None,
        in_memory: bool = False,
        hop: int = 160,
        on_error: str = "skip",
    ) -> None:
        check_window(window, hop)
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error={on_error!r}: expected one of {ON_ERROR}")
        self.corpus, self.window, self.hop, self.on_error = corpus, window, hop, on_error
        self._speakers = [corpus.speaker_index(u.speaker) for u in corpus]
        self._labels: list[np.ndarray | None] | None = None
        if labels is not None:
            self._labels = [labels.get(u.id) for u in corpus]
            missing = [u.id for u, lab in zip(corpus, self._labels) if lab is None]
            if missing:
                warnings.warn(f"{len(missing)} of {len(corpus)} utterances have no frame labels "
                              f"(e.g. {', '.join(missing[:5])}); their frames are labelled "
                              f"{IGNORE_INDEX}", stacklevel=2)
        self._audio: np.ndarray | None = None
        self._offsets: np.ndarray | None = None
        self._load_errors: dict[int, AudioError] = {}
        if in_memory:
            self._load_all()

    def _load_all(self) -> None:
        waves = []
        for i, u in enumerate(self.corpus):
            try:
                waves.append(read_audio(u.path, expected_total=u.num_samples))
            except AudioError as err:  # gone or broken since the scan
                if self.on_error == "raise":
                    raise
                self._load_errors[i] = err
                waves.append(np.zeros(0, dtype=np.float32))
        exact = all(_is_int16(w) for w in waves)
        self._offsets = np.concatenate([[0], np.cumsum([len(w) for w in waves])])
        if exact:
            self._audio = np.concatenate([np.round(w * _INT16_SCALE).astype(np.int16)
                                          for w in waves])
        else:
            self._audio = np.concatenate(waves)

    @property
    def cached_bytes(self) -> int:
        """RAM held by the in-memory audio (0 when reading from disk)."""
        return 0 if self._audio is None else self._audio.nbytes

    def __getitem__(self, index: tuple[int, int]) -> dict[str, Any] | ReadFault:
        utt_index, start = index
        utt = self.corpus[utt_index]
        if start < 0 or start + self.window > utt.num_samples:
            raise IndexError(f"window [{start}, {start + self.window}) lies outside utterance "
                             f"{utt.id} of {utt.num_samples} samples")
        try:
            wav = self._read(utt_index, start)
        except AudioError as err:
            if self.on_error == "raise":
                raise
            return ReadFault(str(utt.path), str(err), self.window)
        phones = None
        if self._labels is not None:
            lab = self._labels[utt_index]
            phones = (np.full(self.window // self.hop, IGNORE_INDEX, dtype=np.int64)
                      if lab is None else slice_labels(lab, start, self.window, self.hop))
        return {"wav": wav, "speaker": self._speakers[utt_index], "phones": phones,
                "start": start, "utt": utt.id}

    def _read(self, utt_index: int, start: int) -> np.ndarray:
        """The window's samples; :class:`AudioError` naming the file when they cannot be had."""
        utt = self.corpus[utt_index]
        if utt_index in self._load_errors:
            raise self._load_errors[utt_index]
        if self._audio is not None:
            begin = int(self._offsets[utt_index]) + start  # type: ignore[index]
            wav = self._audio[begin : begin + self.window]
            if wav.dtype == np.int16:
                return wav.astype(np.float32) / _INT16_SCALE
        else:
            wav = read_audio(utt.path, start, self.window, expected_total=utt.num_samples)
        error = non_finite_error(utt.path, start, wav)
        if error is not None:
            raise error
        return wav


def _is_int16(wav: np.ndarray) -> bool:
    scaled = wav * _INT16_SCALE
    return bool(np.all(scaled == np.round(scaled)) and scaled.min(initial=0) >= -_INT16_SCALE
                and scaled.max(initial=0) < _INT16_SCALE)


def collate_windows(items: Sequence[Mapping[str, Any] | ReadFault]) -> Batch:
    """Stack dataset items into a :class:`Batch`: ``wav (B, 1, S)``, ``speaker (B,)``,
    ``phones (B, S // hop)`` or ``None``, ``start (B,)``, ``utt`` ids; read faults are left
    out and listed in ``Batch.skipped`` (all faults: an empty batch, ``size == 0``)."""
    if not items:
        raise ValueError("cannot collate an empty batch")
    skipped = tuple((it.path, it.reason) for it in items if isinstance(it, ReadFault))
    good = [it for it in items if not isinstance(it, ReadFault)]
    if not good:
        window = items[0].window  # type: ignore[union-attr]
        return Batch(wav=torch.zeros(0, 1, window), speaker=torch.zeros(0, dtype=torch.long),
                     start=torch.zeros(0, dtype=torch.long), utt=[], skipped=skipped)
    has_phones = [it["phones"] is not None for it in good]
    if any(has_phones) and not all(has_phones):
        raise ValueError("some windows of the batch have frame labels and some do not")
    return Batch(
        wav=torch.from_numpy(np.stack([it["wav"] for it in good]))[:, None, :],
        speaker=torch.tensor([it["speaker"] for it in good], dtype=torch.long),
        phones=torch.from_numpy(np.stack([it["phones"] for it in good])) if all(has_phones)
        else None,
        start=torch.tensor([it["start"] for it in good], dtype=torch.long),
        utt=[it["utt"] for it in good],
        skipped=skipped,
    )


class WindowLoader(DataLoader):
    """The training ``DataLoader``, which also counts the read faults of the batches it hands
    out in :attr:`faults` (a :class:`ReadFaultLog`: ``skipped_windows``, ``skipped_files``) and
    warns once per failing file, in the training process whatever the number of workers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.faults = ReadFaultLog()

    def __iter__(self) -> Iterator[Batch]:  # type: ignore[override]
        for batch in super().__iter__():
            self.faults.record(batch.skipped)
            yield batch


def build_dataloader(
    corpus: Corpus,
    window: int = 20480,
    batch_size: int = 8,
    mode: str = "samespeaker",
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    labels: Mapping[str, np.ndarray] | None = None,
    num_workers: int = 0,
    in_memory: bool = False,
    drop_last: bool = True,
    hop: int = 160,
    pin_memory: bool | None = None,
    prefetch_factor: int | None = 2,
    on_error: str = "skip",
) -> WindowLoader:
    """The training loader of :class:`Batch` es: a :class:`SpeakerBatchSampler` (reachable as
    ``loader.batch_sampler``) over a :class:`WindowDataset`.

    Args:
        num_workers: reader processes (0: read in the training process).
        pin_memory: page-locked batches for fast, asynchronous host-to-GPU copies; ``None``
            pins when CUDA is available.
        prefetch_factor: batches each worker reads ahead (ignored without workers).
        on_error: windows that fail at read time are skipped and counted, or raise.
        The others: see :class:`SpeakerBatchSampler` and :class:`WindowDataset`.
    """
    if num_workers < 0:
        raise ValueError(f"num_workers={num_workers}: must be >= 0")
    if prefetch_factor is not None and prefetch_factor < 1:
        raise ValueError(f"prefetch_factor={prefetch_factor}: must be >= 1 (batches per worker)")
    sampler = SpeakerBatchSampler(corpus, window=window, batch_size=batch_size, mode=mode,
                                  seed=seed, rank=rank, world_size=world_size,
                                  drop_last=drop_last, hop=hop)
    dataset = WindowDataset(corpus, window=window, labels=labels, in_memory=in_memory, hop=hop,
                            on_error=on_error)
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    # The loader's own generator: creating an iterator must not draw from the global stream
    # that negatives and dropout use, or a resumed run would diverge from an uninterrupted one.
    generator = torch.Generator().manual_seed(seed)
    return WindowLoader(dataset, batch_sampler=sampler, collate_fn=collate_windows,
                        num_workers=num_workers, pin_memory=pin_memory,
                        prefetch_factor=prefetch_factor if num_workers > 0 else None,
                        persistent_workers=num_workers > 0, generator=generator)
