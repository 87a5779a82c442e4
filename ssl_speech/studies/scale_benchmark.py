"""The scale benchmark: corpus scan, on-disk data pipeline, phone probe and ABX against size.

LibriSpeech's standard protocols run on 100 to 960 hours (train-clean-100: 28,539 files,
100.6 h, about 36 M frames at 100 Hz; 960 h: 281,241 files). This benchmark builds, on local
disk under ``out``, a LibriSpeech-shaped tree and feature stores of a size the machine can hold,
measures each stage at that size, and extrapolates linearly to those corpora:

- ``scan``: :func:`~ssl_speech.data.corpus.scan_directory` of a ``speaker/chapter/utt.flac``
  tree (copies of the embedded corpus's files) with an empty manifest cache, the files evicted
  from the page cache and then in it, and again with the cache that scan wrote: files per second.
- ``step`` and ``pipeline``: windows per second out of the training loader reading that tree
  from disk (``in_memory=False``) with 0 and 2 workers, against the windows per second the
  default training step consumes (batch 8 windows; timed in the same run at 1 and 2 torch
  threads by :func:`~ssl_speech.studies.benchmark.run_benchmark`, the faster kept, or given).
- ``probe``: the phone probe (:func:`~ssl_speech.eval.probe_training.fit_table` with the
  held-out stopping rule) trained from a float16 frame store of 1x, 4x, 16x the embedded
  corpus's frames (labels from its alignments, replicated): peak resident memory of the child
  process that trains it (``VmHWM``, and the peaks of its anonymous and file-backed parts) and
  frames per second.
- ``abx``: :func:`~ssl_speech.eval.abx.abx_scores` on the first N items of the embedded
  corpus's item files (beyond them, copies under new speaker ids): time and peak memory of
  the child that runs it, against N, and a power law fitted to them.

Features for the probe and ABX are the embedded corpus's 40 log-mel bands through a fixed
random projection to 256 dimensions (the size of CPC's context features), so that the costs
that grow with the dimension are those of a real model's features. The probe and ABX run each
size in a fresh process, so one size's memory never counts in another's; the step is timed in
the step benchmark's own process. Every row is appended to ``scale.jsonl`` as soon as it is
measured, so a cut run keeps what it measured.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ssl_speech.studies.measured_process import run_measured
from ssl_speech.studies.scale_inputs import (
    FEATURE_DIM,
    _replicas,
    build_tree,
    corpus_features,
    evict_from_page_cache,
)
from ssl_speech.studies.scale_report import Recorder, markdown_report

# The corpora the figures are extrapolated to: (name, files, hours).
TARGETS = (("train-clean-100", 28_539, 100.6), ("960h", 281_241, 960.0))
FRAME_RATE = 100  # label frames per second
DEV_CLEAN_HOURS = 5.4
PIPELINE_TARGET = 5.0  # loader windows/s over step windows/s, with 2 workers
FLAT_RSS_TOLERANCE = 0.20
STAGES = ("scan", "pipeline", "probe", "abx")


@dataclass(frozen=True)
class ScaleSizes:
    """The size knob of every stage.

    Args:
        scan_files: files in the LibriSpeech-shaped tree.
        pipeline_batches: batches timed per loader (after one untimed batch).
        workers: loader worker counts to time.
        step_ms: the default step's time in ms; ``None`` measures it in this run.
        probe_utterances: utterances of the embedded corpus in the 1x store (``None``: all).
        probe_scales: replication factors of the feature store.
        probe_epochs: epoch limit of the probe (the held-out rule may stop it earlier).
        probe_release_mb: the frame store hands its mapped pages back after this many MB of
            pages were touched (``FrameStore(release_bytes=...)``; the library's default 64);
            0 never does, to show what the mapped pages cost.
        abx_items: item counts to time ABX at.
        threads: torch threads of the probe and ABX processes (1: on a loaded 2-core machine,
            OpenMP's waits make two threads slower than one).
        scan_repeats: scans of each kind (the median is reported).
    """

    scan_files: int = 4000
    pipeline_batches: int = 40
    workers: tuple[int, ...] = (0, 2)
    step_ms: float | None = None
    probe_utterances: int | None = None
    probe_scales: tuple[int, ...] = (1, 4, 16)
    probe_epochs: int = 2
    probe_release_mb: int = 64
    abx_items: tuple[int, ...] = (500, 1000, 2000, 4000, 8000)
    threads: int = 1
    scan_repeats: int = 3

    def __post_init__(self) -> None:
        for name in ("scan_files", "pipeline_batches", "probe_epochs", "threads", "scan_repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("probe_scales", "abx_items"):
            if not getattr(self, name) or min(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be positive counts, got {getattr(self, name)}")
        if self.probe_utterances is not None and self.probe_utterances < 2:
            raise ValueError(f"probe_utterances must be >= 2, got {self.probe_utterances}")
        if self.probe_release_mb < 0:
            raise ValueError(f"probe_release_mb must be >= 0 (0: never), got "
                             f"{self.probe_release_mb}")
        if self.step_ms is not None and not self.step_ms > 0:
            raise ValueError(f"step_ms must be > 0 ms, got {self.step_ms}")


QUICK = ScaleSizes(scan_files=300, pipeline_batches=4, probe_utterances=24,
                   probe_scales=(1, 4), probe_epochs=2, abx_items=(100, 200), scan_repeats=1)


# ------------------------------------------------------------------ peak memory of a child
def _probe_job(store: str, epochs: int, threads: int,
               release_mb: int = 64) -> dict[str, Any]:
    import torch

    from ssl_speech.eval.frame_store import FrameStore
    from ssl_speech.eval.probe_training import IGNORE_INDEX, Stopping, fit_table

    torch.set_num_threads(threads)
    table = FrameStore(store, release_bytes=release_mb * 2**20 if release_mb else None)
    held = np.zeros(len(table), dtype=bool)
    for k, (start, stop) in enumerate(table.utterances.values()):
        held[start:stop] = k % 10 == 0  # every tenth utterance is the held-out part
    labelled = table.labels != IGNORE_INDEX
    train, validation = np.flatnonzero(labelled & ~held), np.flatnonzero(labelled & held)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # one-off imports, untimed
    begin = time.perf_counter()
    _, history = fit_table(table, int(table.labels.max()) + 1, train,
                           validation_index=validation, stopping=Stopping(patience=1),
                           epochs=epochs, seed=0)
    seconds = time.perf_counter() - begin
    return {"fit_s": seconds, "epochs_run": history.epochs, "train_frames": len(train),
            "frames_per_s": history.epochs * len(train) / seconds,
            "validation_accuracy": max(history.validation)}


def _abx_job(features: str, items: str, threads: int) -> dict[str, Any]:
    import torch

    from ssl_speech.eval.abx import abx_scores

    torch.set_num_threads(threads)
    begin = time.perf_counter()
    result = abx_scores(features, items, frame_step=1 / FRAME_RATE, mode="both")
    return {"abx_s": time.perf_counter() - begin, "tokens": result.num_tokens,
            "within": result.errors["within"], "across": result.errors["across"],
            "groups_within": result.scores["within"].num_groups,
            "groups_across": result.scores["across"].num_groups}


def _loader_rate(root: str, workers: int, batches: int) -> dict[str, Any]:
    from ssl_speech.data.corpus import scan_directory
    from ssl_speech.data.windows import build_dataloader

    corpus = scan_directory(root, min_samples=20480)
    loader = build_dataloader(corpus, window=20480, batch_size=8, num_workers=workers,
                              in_memory=False, pin_memory=False)
    iterator = iter(loader)
    next(iterator)  # worker start-up is paid once per run, not per window
    windows = 0
    begin = time.perf_counter()
    for _ in range(batches):
        windows += next(iterator).wav.shape[0]
    seconds = time.perf_counter() - begin
    del iterator  # stops the workers
    return {"windows": windows, "seconds": seconds, "windows_per_s": windows / seconds,
            "epoch_windows": loader.batch_sampler.num_windows}


# ------------------------------------------------------------------ the stages
def _extrapolate(per_file_s: float) -> dict[str, float]:
    return {f"{name}_s": per_file_s * files for name, files, _ in TARGETS}


SCANS = ("first_cold", "first_warm", "cached")


def scan_stage(out: Path, source: Path, sizes: ScaleSizes, rec: Recorder) -> Path:
    """Build the tree and scan it: with an empty cache, its files first evicted from the page
    cache (``first_cold``) and then in it (``first_warm``), then with the cache that scan
    wrote (``cached``); the median of ``scan_repeats`` rounds."""
    from ssl_speech.data.corpus import scan_directory

    tree, cache = out / "LibriSpeech" / "train-shaped", out / "manifest_cache"
    for stale in (tree, cache):
        shutil.rmtree(stale, ignore_errors=True)
    begin = time.perf_counter()
    files = build_tree(source, tree, sizes.scan_files)
    build_s = time.perf_counter() - begin
    seconds: dict[str, list[float]] = {run: [] for run in SCANS}
    for _ in range(sizes.scan_repeats):
        evict_from_page_cache(files)
        for run in SCANS:
            if run != "cached":
                shutil.rmtree(cache, ignore_errors=True)  # a first scan finds no cache
            begin = time.perf_counter()
            corpus = scan_directory(tree, cache=cache)
            seconds[run].append(time.perf_counter() - begin)
            if len(corpus) != len(files):
                raise RuntimeError(f"the {run} scan found {len(corpus)} of {len(files)} files")
    median = {run: float(np.median(times)) for run, times in seconds.items()}
    for run, spent in median.items():
        rec.add({"stage": "scan", "scan": run, "files": len(files), "repeats": len(seconds[run]),
                 "tree_mb": sum(f.stat().st_size for f in files) / 2**20,
                 "build_s": build_s, "seconds": spent, "files_per_s": len(files) / spent,
                 **_extrapolate(spent / len(files))})
    for run in ("first_cold", "first_warm"):
        rec.add({"stage": "scan", "scan": f"speedup over {run}", "files": len(files),
                 "speedup": median[run] / median["cached"]})
    return tree


def default_step_ms(threads: tuple[int, ...] = (1, 2)) -> dict[int, float]:
    """The default training step's time in ms at each torch thread count (median of 3 after
    1 warm-up), as the step benchmark measures it (``scripts/benchmark.py --case default=``)."""
    from ssl_speech.studies.benchmark import BenchmarkSettings, run_benchmark

    times = {}
    for count in threads:
        settings = BenchmarkSettings(threads=count, data=False, warmup=1, repeats=3)
        rows = run_benchmark({"default": ()}, settings)
        times[count] = float(next(r["ms_per_step"] for r in rows if r["kind"] == "step"))
    return times


def epoch_windows(hours: float, files: int, window: int = 20480) -> float:
    """Windows in one epoch of a corpus: whole windows per file, about half a window lost at
    the end of each file (an estimate; the sampler counts them exactly from the lengths)."""
    return hours * 3600 * 16000 / window - 0.5 * files


def pipeline_stage(tree: Path, sizes: ScaleSizes, rec: Recorder) -> None:
    """Loader windows/s from the on-disk tree against the default step's consumption."""
    if sizes.step_ms is None:
        for threads, ms in default_step_ms().items():
            rec.add({"stage": "step", "step_ms": ms, "step_source": "measured",
                     "step_windows_per_s": 8000 / ms, "batch_size": 8, "window": 20480,
                     "threads": threads})
        # the faster step consumes more: the harder bar for the loader
        step_ms = min(r["step_ms"] for r in rec.rows if r["stage"] == "step")
    else:
        step_ms = sizes.step_ms
        rec.add({"stage": "step", "step_ms": step_ms, "step_source": "given",
                 "step_windows_per_s": 8000 / step_ms, "batch_size": 8, "window": 20480})
    step_rate = 8000 / step_ms
    for workers in sizes.workers:
        rate = _loader_rate(str(tree), workers, sizes.pipeline_batches)
        row = {"stage": "pipeline", "workers": workers, **rate,
               "step_windows_per_s": step_rate, "ratio": rate["windows_per_s"] / step_rate}
        if workers == 2:
            row["target"], row["held"] = PIPELINE_TARGET, row["ratio"] >= PIPELINE_TARGET
        for name, files, hours in TARGETS:
            row[f"{name}_epoch_windows"] = epoch_windows(hours, files)
            row[f"{name}_loader_epoch_s"] = epoch_windows(hours, files) / rate["windows_per_s"]
        rec.add(row)


def probe_stage(out: Path, source: Path, sizes: ScaleSizes, rec: Recorder) -> None:
    """Peak RSS and frames/s of the probe trained from float16 stores of growing size."""
    from ssl_speech.data.labels import read_alignments
    from ssl_speech.eval.frame_store import write_frame_store

    labels = read_alignments(source / "alignments.txt")
    ids = sorted(labels)[: sizes.probe_utterances]
    features = corpus_features(source, ids)
    base_peak = None
    for scale in sizes.probe_scales:
        store = out / "stores" / f"x{scale}"
        shutil.rmtree(store, ignore_errors=True)
        begin = time.perf_counter()
        table = write_frame_store(_replicas(features, labels, scale), store, "float16")
        write_s = time.perf_counter() - begin
        frames = len(table)
        del table
        result, peak = run_measured(_probe_job, str(store), sizes.probe_epochs, sizes.threads,
                                    sizes.probe_release_mb)
        store_mb = sum(p.stat().st_size for p in store.iterdir()) / 2**20
        shutil.rmtree(store)
        base_peak = base_peak or peak
        row = {"stage": "probe", "release_mb": sizes.probe_release_mb, "scale": scale,
               "utterances": len(ids) * scale,
               "frames": frames, "dim": FEATURE_DIM, "dtype": "float16", "store_mb": store_mb,
               "write_s": write_s, **result, "peak_rss_mb": peak / 2**20,
               "rss_vs_first": peak / base_peak}
        for name, _, hours in TARGETS:
            row[f"{name}_frames"] = hours * 3600 * FRAME_RATE
            row[f"{name}_epoch_s"] = hours * 3600 * FRAME_RATE / result["frames_per_s"]
        rec.add(row)
    probes = [r for r in rec.rows if r["stage"] == "probe"]
    growth = max(r["peak_rss_mb"] for r in probes) / min(r["peak_rss_mb"] for r in probes)
    rec.add({"stage": "probe_flat", "frames_growth": probes[-1]["frames"] / probes[0]["frames"],
             "rss_growth": growth, "target": 1 + FLAT_RSS_TOLERANCE,
             "held": growth <= 1 + FLAT_RSS_TOLERANCE})


def abx_items(source: Path) -> list:
    """The items of ``source``'s item files, utterance by utterance in a fixed random order of
    utterances, so that the first N items hold several speakers, as a real item file does."""
    from ssl_speech.data.labels import read_abx_items

    by_file: dict[str, list] = {}
    for path in sorted((source / "abx").glob("*.item")):
        for item in read_abx_items(path):
            by_file.setdefault(item.file, []).append(item)
    files = sorted(by_file)
    order = np.random.default_rng(0).permutation(len(files))
    return [item for i in order for item in by_file[files[i]]]


def abx_stage(out: Path, source: Path, sizes: ScaleSizes, rec: Recorder) -> None:
    """ABX time and peak memory against the number of items."""
    items = abx_items(source)
    originals = len(items)
    # Beyond the corpus's items: copies under new speaker ids ("<speaker>~k", utterances
    # "<utt>~k" with the same features), as a larger item file has more speakers.
    copies = -(-max(sizes.abx_items) // originals)
    items = items + [it._replace(file=f"{it.file}~{k}", speaker=f"{it.speaker}~{k}")
                     for k in range(1, copies) for it in items]
    feature_dir = out / "abx_features"
    shutil.rmtree(feature_dir, ignore_errors=True)
    feature_dir.mkdir(parents=True)
    needed = sorted({it.file.split("~")[0] for it in items[: max(sizes.abx_items)]})
    for utt, feats in corpus_features(source, needed).items():
        np.save(feature_dir / f"{utt}.npy", feats)
        for k in range(1, copies):
            os.link(feature_dir / f"{utt}.npy", feature_dir / f"{utt}~{k}.npy")
    items_per_hour = _items_per_hour(source, items[:originals])
    for count in sizes.abx_items:
        item_file = out / f"abx_{count}.item"
        item_file.write_text("#file onset offset #phone prev-phone next-phone speaker\n" + "".join(
            f"{it.file} {it.onset} {it.offset} {it.phone} {it.prev} {it.next} {it.speaker}\n"
            for it in items[:count]))
        result, peak = run_measured(_abx_job, str(feature_dir), str(item_file), sizes.threads)
        rec.add({"stage": "abx", "items": count, "copied_speakers": count > originals,
                 **result, "peak_rss_mb": peak / 2**20, "items_per_hour": items_per_hour})
    rows = [r for r in rec.rows if r["stage"] == "abx"]
    if len(rows) >= 2:
        x = np.log([r["items"] for r in rows])
        exponent = float(np.polyfit(x, np.log([r["abx_s"] for r in rows]), 1)[0])
        mb_per_item = float(np.polyfit([r["items"] for r in rows],
                                       [r["peak_rss_mb"] for r in rows], 1)[0])
        dev_items = DEV_CLEAN_HOURS * items_per_hour
        last = rows[-1]
        rec.add({"stage": "abx_growth", "time_exponent": exponent, "mb_per_1000_items":
                 1000 * mb_per_item, "dev_clean_items_estimate": dev_items,
                 "dev_clean_s_estimate": last["abx_s"] * (dev_items / last["items"]) ** exponent,
                 "dev_clean_peak_mb_estimate": last["peak_rss_mb"]
                 + mb_per_item * (dev_items - last["items"])})


def _items_per_hour(source: Path, items: list) -> float:
    """Items per hour of the audio of the utterances the item files cover."""
    from ssl_speech.data.labels import read_alignments

    frames = read_alignments(source / "alignments.txt")
    files = {it.file for it in items}
    hours = sum(len(frames[f]) for f in files) / FRAME_RATE / 3600
    return len(items) / hours


# ------------------------------------------------------------------ report
def run_scale_benchmark(out: str | Path, sizes: ScaleSizes, stages: tuple[str, ...] = STAGES,
                        log: Callable[[str], None] = print, corpus: str | Path | None = None,
                        ) -> list[dict[str, Any]]:
    """Run ``stages`` at ``sizes`` under ``out``; return the rows (also in ``scale.jsonl``).

    ``corpus``: an embedded-corpus directory to copy and take features, labels and items from
    (default: the embedded corpus, generated on first use).
    """
    from ssl_speech.data.synthetic import ensure_corpus
    from ssl_speech.studies.benchmark import machine_info

    unknown = sorted(set(stages) - set(STAGES))
    if unknown or not stages:
        raise ValueError(f"stages {unknown or '(none)'}: choose from {STAGES}")
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    source = ensure_corpus(progress=False) if corpus is None else Path(corpus).expanduser()
    missing = [name for name in ("alignments.txt", "abx") if not (source / name).exists()]
    if missing:
        raise FileNotFoundError(f"corpus {source} has no {', '.join(missing)}: give a directory "
                                "made by scripts/make_synthetic_corpus.py")
    rec = Recorder(out, {**machine_info("cpu", sizes.threads), "sizes": asdict(sizes),
                         "source": str(source)}, log)
    tree = out / "LibriSpeech" / "train-shaped"
    if "scan" in stages or "pipeline" in stages:
        tree = scan_stage(out, source, sizes, rec)
    if "pipeline" in stages:
        pipeline_stage(tree, sizes, rec)
    if "probe" in stages:
        probe_stage(out, source, sizes, rec)
    if "abx" in stages:
        abx_stage(out, source, sizes, rec)
    return rec.rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Command line of ``scripts/scale_benchmark.py``."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="local folder for the tree, stores, "
                        "scale.jsonl and scale.md (several GB at the default sizes)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (under a minute)")
    parser.add_argument("--corpus", help="embedded-corpus directory to build from (default: the "
                        "embedded corpus, generated on first use)")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--scan-files", type=int)
    parser.add_argument("--pipeline-batches", type=int)
    parser.add_argument("--step-ms", type=float, help="the default step's time in ms "
                        "(default: measured in this run)")
    parser.add_argument("--probe-utterances", type=int)
    parser.add_argument("--probe-scales", type=int, nargs="+")
    parser.add_argument("--probe-epochs", type=int)
    parser.add_argument("--probe-release-mb", type=int, help="the frame store hands its mapped "
                        "pages back after this many MB were touched (default 64; 0: never)")
    parser.add_argument("--abx-items", type=int, nargs="+")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else ScaleSizes()
    knobs = ("scan_files", "pipeline_batches", "step_ms", "probe_utterances", "probe_scales",
             "probe_epochs", "probe_release_mb", "abx_items", "threads")
    given = {name: getattr(args, name) for name in knobs if getattr(args, name) is not None}
    for name in ("probe_scales", "abx_items"):
        if name in given:
            given[name] = tuple(given[name])
    sizes = replace(sizes, **given)
    rows = run_scale_benchmark(args.out, sizes, tuple(args.stages), corpus=args.corpus)
    print(markdown_report(rows))
    return rows
