"""The embedded synthetic speech corpus: deterministic speech-like audio with exact phone labels.

A fresh machine has no speech data, so every command of the library runs on this corpus by
default. :func:`generate_corpus` writes it in LibriSpeech layout, with the same metadata a
real corpus gets, so every tool is exercised on it:

- ``<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac``: 16 kHz mono PCM_16 FLAC; numeric
  speaker ids (``1001``, ...); the utterance id is the file stem.
- ``alignments.txt``: one line per utterance, ``utt_id l0 l1 ...``, one phone index per 10 ms
  frame (CPC_audio's format). Label frame ``i`` covers samples ``[160 i, 160 i + 160)`` and is
  the phone under its centre. Every utterance has a whole number of frames: the number of
  labels is ``num_samples // 160``, which equals ``ceil(num_samples / 160)`` here.
- ``phones.txt``: line ``i`` is the name of phone ``i``; ``sil`` is 0.
- ``splits/{train,dev,test}.txt``: utterances of the training speakers; each has at least one
  dev, one test and one train utterance. Within-speaker ABX needs minutes of one speaker (two
  tokens of a phone and one of another in one context; ZeroSpeech's sets have several minutes
  per speaker), so dev and test each hold about ``dev_fraction`` (``test_fraction``) of the
  utterances, concentrated on a few *ABX speakers* that give up to ``abx_share`` of theirs,
  every other training speaker giving one. The dev ABX speakers are the first training
  speakers, the test ones the last, never the same. By default: 4 per split, alternately male
  and female, each with half its utterances (about 75 s) in the split.
  ``splits/test_heldout_speakers.txt``: every utterance of the held-out speakers (about 2.5 min
  each by default).
- ``abx/{dev,test,test_heldout_speakers}.item``: ZeroSpeech item files, header
  ``#file onset offset #phone prev-phone next-phone speaker``, one line per phone token of the
  split in seconds, only tokens of at least 30 ms whose phone and neighbours are not silence.
- ``corpus.json``: version, seed, spec, sample rate, speakers (held-out and ABX ones named),
  utterances and seconds per split, phone count, the count and total bytes of the other files
  (the completeness check), and the generation time (the one value that varies between runs).

Determinism: every random draw comes from a numpy ``Generator`` seeded from the spec's seed and
a stream (lexicon, speakers, plan, or the utterance index), so the bytes do not depend on the
number of workers. This module writes a corpus into a directory; putting it in place atomically
and caching it is :mod:`ssl_speech.data.synthetic.cache`'s work.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile as sf

from ssl_speech.data.synthetic.phonetics import PHONES, SILENCE, Lexicon, Token, plan_utterance
from ssl_speech.data.synthetic.synthesis import (
    HOP,
    SAMPLE_RATE,
    Channel,
    Speaker,
    draw_channel,
    draw_speaker,
    synthesize,
)

__all__ = [
    "GENERATOR_VERSION",
    "PHONES",
    "SyntheticCorpusSpec",
    "file_census",
    "write_corpus",
]

GENERATOR_VERSION = "2"
LABEL_HOP = 160  # samples per label frame (10 ms)
SPLITS = ("train", "dev", "test", "test_heldout_speakers")
ABX_SPLITS = ("dev", "test", "test_heldout_speakers")
MIN_ITEM_SECONDS = 0.03
_STREAM_LEXICON, _STREAM_SPEAKERS, _STREAM_PLAN, _STREAM_UTTERANCE = range(4)


@dataclass(frozen=True)
class SyntheticCorpusSpec:
    """What to generate; equal specs give byte-identical audio and metadata.

    Args:
        seed: root of every random draw.
        hours: approximate total audio duration.
        num_speakers: talkers, alternately male and female.
        num_heldout_speakers: talkers kept out of train/dev/test (the last ones).
        chapters_per_speaker: recording conditions (room, microphone, noise) per talker.
        lexicon_size: distinct words of the random language.
        min_utterance_seconds, max_utterance_seconds: range of utterance durations.
        dev_fraction, test_fraction: about this share of the training speakers' utterances goes
            to dev (test), concentrated on as few *ABX speakers* as ``abx_share`` allows (at
            least 2, at most half the training speakers; the first ones for dev, the last ones
            for test); every other training speaker gives one utterance.
        abx_share: the largest share of an ABX speaker's utterances in its split.
    """

    seed: int = 0
    hours: float = 1.0
    num_speakers: int = 24
    num_heldout_speakers: int = 4
    chapters_per_speaker: int = 2
    lexicon_size: int = 400
    min_utterance_seconds: float = 2.0
    max_utterance_seconds: float = 10.0
    dev_fraction: float = 0.1
    test_fraction: float = 0.1
    abx_share: float = 0.5

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed}")
        if self.hours <= 0:
            raise ValueError(f"hours must be positive, got {self.hours}")
        if self.num_heldout_speakers < 1:
            raise ValueError(
                f"num_heldout_speakers={self.num_heldout_speakers}: need at least 1 held-out "
                "speaker for the across-speaker test"
            )
        if self.num_speakers - self.num_heldout_speakers < 4:
            raise ValueError(
                f"num_speakers={self.num_speakers} with {self.num_heldout_speakers} held out "
                "leaves fewer than 4 training speakers; ABX needs at least 4 per split"
            )
        if self.chapters_per_speaker < 1:
            raise ValueError(f"chapters_per_speaker must be >= 1, got {self.chapters_per_speaker}")
        if not 1.0 <= self.min_utterance_seconds <= self.max_utterance_seconds:
            raise ValueError(
                f"utterance seconds range [{self.min_utterance_seconds}, "
                f"{self.max_utterance_seconds}] must satisfy 1 <= min <= max"
            )
        if not (0 < self.dev_fraction < 0.5 and 0 < self.test_fraction < 0.5):
            raise ValueError(
                f"dev_fraction={self.dev_fraction} and test_fraction={self.test_fraction} "
                "must lie in (0, 0.5)"
            )
        if not 0 < self.abx_share <= 0.5:
            raise ValueError(f"abx_share={self.abx_share} must lie in (0, 0.5]: an ABX speaker "
                             "keeps at least half of its utterances out of its split")


@dataclass(frozen=True)
class _Utterance:
    index: int
    speaker: int
    chapter: int
    utt_id: str
    target_seconds: float
    split: str


def _rng(spec: SyntheticCorpusSpec, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=stream))


def _speaker_id(index: int) -> str:
    return str(1001 + index)


def _chapter_id(speaker: int, chapter: int) -> str:
    return str(100 * (speaker + 1) + 17 * chapter + 3)


def _heldout(spec: SyntheticCorpusSpec) -> range:
    return range(spec.num_speakers - spec.num_heldout_speakers, spec.num_speakers)


def _abx_speakers(spec: SyntheticCorpusSpec) -> dict[str, tuple[range, float]]:
    """Per split, the training speakers that hold most of it and the share each gives."""
    n = spec.num_speakers - spec.num_heldout_speakers
    out = {}
    for split, fraction in (("dev", spec.dev_fraction), ("test", spec.test_fraction)):
        # the fewest speakers that each give at most abx_share; two at least for across-speaker
        # ABX; half the training speakers at most, so dev and test ones never coincide
        k = min(n // 2, max(2, math.ceil(fraction * n / spec.abx_share - 1e-9)))
        share = min(spec.abx_share, fraction * n / k)
        out[split] = (range(k) if split == "dev" else range(n - k, n), share)
    return out


def _split_counts(spec: SyntheticCorpusSpec, speaker: int, n: int) -> tuple[int, int]:
    """Dev and test utterances of a training speaker with ``n >= 3`` utterances."""
    counts = []
    for speakers, share in _abx_speakers(spec).values():
        counts.append(max(1, int(round(share * n))) if speaker in speakers else 1)
    n_dev, n_test = counts
    while n_dev + n_test > n - 1:  # at least one training utterance whatever the rounding
        if n_dev >= n_test:
            n_dev -= 1
        else:
            n_test -= 1
    return n_dev, n_test


def _plan(spec: SyntheticCorpusSpec) -> list[_Utterance]:
    """Every utterance: its speaker, chapter, id, target duration and split."""
    rng = _rng(spec, _STREAM_PLAN)
    budget = spec.hours * 3600.0 / spec.num_speakers
    heldout = _heldout(spec)
    plan: list[_Utterance] = []
    for s in range(spec.num_speakers):
        targets: list[float] = []
        while sum(targets) < budget or len(targets) < 3:
            targets.append(float(rng.uniform(spec.min_utterance_seconds,
                                             spec.max_utterance_seconds)))
        n = len(targets)
        splits = ["test_heldout_speakers"] * n
        if s not in heldout:
            n_dev, n_test = _split_counts(spec, s, n)
            splits = ["dev"] * n_dev + ["test"] * n_test + ["train"] * (n - n_dev - n_test)
            splits = [splits[i] for i in rng.permutation(n)]
        per_chapter = -(-n // spec.chapters_per_speaker)
        for u, (target, split) in enumerate(zip(targets, splits)):
            chapter, number = divmod(u, per_chapter)
            utt_id = f"{_speaker_id(s)}-{_chapter_id(s, chapter)}-{number:04d}"
            plan.append(_Utterance(len(plan), s, chapter, utt_id, target, split))
    return plan


@functools.lru_cache(maxsize=4)
def _world(spec: SyntheticCorpusSpec) -> tuple[Lexicon, list[Speaker], list[list[Channel]]]:
    """The lexicon, speakers and channels shared by all utterances (rebuilt in each worker)."""
    lexicon = Lexicon(_rng(spec, _STREAM_LEXICON), spec.lexicon_size)
    rng = _rng(spec, _STREAM_SPEAKERS)
    speakers, channels = [], []
    for s in range(spec.num_speakers):
        speakers.append(draw_speaker(rng, female=s % 2 == 1))
        channels.append([draw_channel(rng) for _ in range(spec.chapters_per_speaker)])
    return lexicon, speakers, channels


def _audio_path(root: Path, utt_id: str) -> Path:
    speaker, chapter, _ = utt_id.split("-")
    return root / speaker / chapter / f"{utt_id}.flac"


def _utterance_tokens(
    spec: SyntheticCorpusSpec, utt: _Utterance
) -> tuple[list[Token], np.random.Generator]:
    """The timed tokens of an utterance, and its generator where the synthesis takes it up."""
    lexicon, speakers, _ = _world(spec)
    rng = _rng(spec, _STREAM_UTTERANCE, utt.index)
    tokens = plan_utterance(lexicon, rng, utt.target_seconds, spec.max_utterance_seconds,
                            speakers[utt.speaker].rate)
    return tokens, rng


def _make_utterance(job: tuple[SyntheticCorpusSpec, _Utterance, str]) -> tuple[str, int, list]:
    """Synthesise and write one utterance; returns its id, sample count and tokens."""
    spec, utt, root = job
    _, speakers, channels = _world(spec)
    tokens, rng = _utterance_tokens(spec, utt)
    audio = synthesize(tokens, speakers[utt.speaker], channels[utt.speaker][utt.chapter], rng)
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
    path = _audio_path(Path(root), utt.utt_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, pcm, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
    return utt.utt_id, len(pcm), [(t.phone, t.start, t.end) for t in tokens]


def _frame_labels(tokens: list[tuple[int, int, int]], num_samples: int) -> list[int]:
    """Phone under the centre of each 10 ms frame (token bounds are in 80-sample hops)."""
    per_hop = np.repeat([p for p, _, _ in tokens], [b - a for _, a, b in tokens])
    centres = (np.arange(num_samples // LABEL_HOP) * LABEL_HOP + LABEL_HOP // 2) // HOP
    return per_hop[centres].tolist()


def _item_lines(utt_id: str, speaker: str, tokens: list[tuple[int, int, int]]) -> list[str]:
    lines = []
    for (prev, _, _), (phone, a, b), (nxt, _, _) in zip(tokens, tokens[1:], tokens[2:]):
        onset, offset = a * HOP / SAMPLE_RATE, b * HOP / SAMPLE_RATE
        if SILENCE in (prev, phone, nxt) or offset - onset < MIN_ITEM_SECONDS - 1e-9:
            continue
        lines.append(f"{utt_id} {onset:.3f} {offset:.3f} {PHONES[phone]} {PHONES[prev]} "
                     f"{PHONES[nxt]} {speaker}")
    return lines


def _run_jobs(jobs: list, workers: int, progress: bool) -> list:
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="synthetic corpus", unit="utt", disable=not progress)
    results = []
    if workers <= 1:
        for job in jobs:
            results.append(_make_utterance(job))
            bar.update()
    else:
        # spawn: safe beside threads (torch) in the parent, same behaviour on every platform
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for result in pool.map(_make_utterance, jobs, chunksize=4):
                results.append(result)
                bar.update()
    bar.close()
    return results


def _default_workers(n_jobs: int) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cpus or 1, n_jobs))


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


def file_census(root: Path) -> tuple[int, int]:
    """Count and total bytes of every file under ``root`` except ``corpus.json``."""
    count = size = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            if Path(dirpath) == root and name == "corpus.json":
                continue
            count += 1
            size += (Path(dirpath) / name).stat().st_size
    return count, size


def write_corpus(root: Path, spec: SyntheticCorpusSpec, workers: int | None = None,
                 progress: bool = True) -> None:
    """Write the corpus of ``spec`` into the existing, empty directory ``root``.

    ``workers`` processes share the utterances (default: the usable CPUs); the bytes do not
    depend on their number.
    ``corpus.json`` is written last, with the census :func:`file_census` takes of the other files.
    """
    start = time.perf_counter()
    plan = _plan(spec)
    workers = workers or _default_workers(len(plan))
    results = _run_jobs([(spec, utt, str(root)) for utt in plan], workers, progress)
    by_split: dict[str, list[str]] = {s: [] for s in SPLITS}
    items: dict[str, list[str]] = {s: [] for s in ABX_SPLITS}
    seconds: Counter = Counter()
    alignments = []
    for utt, (utt_id, num_samples, tokens) in zip(plan, results):
        by_split[utt.split].append(utt_id)
        seconds[utt.split] += num_samples / SAMPLE_RATE
        labels = _frame_labels(tokens, num_samples)
        alignments.append(f"{utt_id} " + " ".join(map(str, labels)))
        if utt.split in items:
            items[utt.split] += _item_lines(utt_id, _speaker_id(utt.speaker), tokens)
    _write_lines(root / "alignments.txt", sorted(alignments))
    _write_lines(root / "phones.txt", PHONES)
    for split, ids in by_split.items():
        _write_lines(root / "splits" / f"{split}.txt", sorted(ids))
    for split, lines in items.items():
        _write_lines(root / "abx" / f"{split}.item",
                     ["#file onset offset #phone prev-phone next-phone speaker", *sorted(lines)])
    count, size = file_census(root)
    heldout = [_speaker_id(s) for s in _heldout(spec)]
    meta = {
        "generator_version": GENERATOR_VERSION,
        "seed": spec.seed,
        "spec": dataclasses.asdict(spec),
        "sample_rate": SAMPLE_RATE,
        "label_rate_hz": SAMPLE_RATE // LABEL_HOP,
        "num_speakers": {"train": spec.num_speakers - len(heldout), "heldout": len(heldout)},
        "speakers": [_speaker_id(s) for s in range(spec.num_speakers)],
        "heldout_speakers": heldout,
        "abx_speakers": {split: [_speaker_id(s) for s in speakers]
                         for split, (speakers, _) in _abx_speakers(spec).items()},
        "num_utterances": {**{s: len(ids) for s, ids in by_split.items()}, "total": len(plan)},
        "durations_s": {**{s: round(seconds[s], 3) for s in SPLITS},
                        "total": round(sum(seconds.values()), 3)},
        "num_phones": len(PHONES),
        "num_files": count,
        "total_bytes": size,
        "generation_seconds": round(time.perf_counter() - start, 2),
    }
    (root / "corpus.json").write_text(json.dumps(meta, indent=2) + "\n")
