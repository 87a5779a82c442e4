"""How fast the data pipeline runs: corpus scans (files/s) and the on-disk training loader
(windows/s), measured on a directory you give.

    python -m ssl_speech.data.pipeline_speed scan ROOT [--threads 1 8]
    python -m ssl_speech.data.pipeline_speed loader ROOT [--workers 0 2] [--batches 200]
    python -m ssl_speech.data.pipeline_speed tree OUT --files 20000 --from ROOT

``scan`` times a scan without cache, a first scan into an empty manifest cache and a second,
cached one. ``loader`` reads windows from disk (``in_memory=False``) through
:func:`~ssl_speech.data.windows.build_dataloader` for each worker count, after one warm-up
epoch's worth of batches so workers have started. ``tree`` writes a LibriSpeech-shaped tree of
``--files`` files (copies of the audio under ``--from``) to scan at a chosen size. Figures go to
stdout, one JSON object per line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from ssl_speech.data.corpus import load_corpus, scan_directory
from ssl_speech.data.windows import build_dataloader


def measure_scan(root: Path, threads: int) -> dict:
    """Seconds and files/s of a scan without cache, a first and a cached scan (``threads``)."""
    out: dict = {"root": str(root), "threads": threads}
    start = time.perf_counter()
    corpus = scan_directory(root, threads=threads)
    out["files"] = len(corpus)
    out["uncached_s"] = round(time.perf_counter() - start, 3)
    with tempfile.TemporaryDirectory() as cache:
        for name in ("first_s", "cached_s"):
            start = time.perf_counter()
            scan_directory(root, threads=threads, cache=cache)
            out[name] = round(time.perf_counter() - start, 3)
    for name in ("uncached", "first", "cached"):
        out[f"{name}_files_per_s"] = round(out["files"] / max(out[f"{name}_s"], 1e-9))
    return out


def measure_loader(root: Path, workers: int, batches: int, window: int = 20480,
                   batch_size: int = 8, prefetch_factor: int = 2) -> dict:
    """Windows/s of the on-disk loader with ``workers`` reader processes."""
    corpus = load_corpus(root=root, min_samples=window)
    loader = build_dataloader(corpus, window=window, batch_size=batch_size, num_workers=workers,
                              in_memory=False, prefetch_factor=prefetch_factor,
                              pin_memory=False)
    iterator = iter(loader)
    warm = min(2 * max(workers, 1), len(loader) // 4)
    for _ in range(warm):  # start the workers and fill their queues
        next(iterator)
    count = windows = 0
    start = time.perf_counter()
    for batch in iterator:
        windows += batch.size
        count += 1
        if count == batches:
            break
    elapsed = time.perf_counter() - start
    return {"root": str(root), "workers": workers, "batches": count, "windows": windows,
            "seconds": round(elapsed, 3), "windows_per_s": round(windows / elapsed, 1),
            "batch_size": batch_size, "window": window, "prefetch_factor": prefetch_factor}


def write_tree(out: Path, files: int, source: Path, per_chapter: int = 50,
               chapters_per_speaker: int = 2) -> int:
    """``out/<speaker>/<chapter>/<speaker>-<chapter>-<k>.flac``: ``files`` copies of the audio
    files under ``source``, as LibriSpeech lays out train-clean-100 (about 100 per speaker)."""
    audio = sorted(p for p in source.rglob("*.flac"))
    if not audio:
        raise FileNotFoundError(f"{source}: no .flac files to copy")
    for i in range(files):
        chapter_index = i // per_chapter
        speaker, chapter = 1000 + chapter_index // chapters_per_speaker, 5000 + chapter_index
        name = f"{speaker}-{chapter}-{i % per_chapter:04d}.flac"
        target = out / str(speaker) / str(chapter) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(audio[i % len(audio)], target)
    return files


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    scan = sub.add_parser("scan")
    scan.add_argument("root", type=Path)
    scan.add_argument("--threads", type=int, nargs="+", default=[1, 8])
    loader = sub.add_parser("loader")
    loader.add_argument("root", type=Path)
    loader.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    loader.add_argument("--batches", type=int, default=200)
    loader.add_argument("--prefetch-factor", type=int, default=2)
    tree = sub.add_parser("tree")
    tree.add_argument("out", type=Path)
    tree.add_argument("--files", type=int, required=True)
    tree.add_argument("--from", dest="source", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "scan":
        for threads in args.threads:
            print(json.dumps(measure_scan(args.root, threads)), flush=True)
    elif args.command == "loader":
        for workers in args.workers:
            print(json.dumps(measure_loader(args.root, workers, args.batches,
                                            prefetch_factor=args.prefetch_factor)), flush=True)
    else:
        start = time.perf_counter()
        n = write_tree(args.out, args.files, args.source)
        print(json.dumps({"tree": str(args.out), "files": n, "cpus": os.cpu_count(),
                          "seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
