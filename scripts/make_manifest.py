"""Write a manifest TSV of a directory of audio files and print a summary.

    python scripts/make_manifest.py ROOT OUT.tsv [--ext flac wav] [--speaker-pattern REGEX]

ROOT is in LibriSpeech layout (``speaker/chapter/utt.flac``) unless ``--speaker-pattern`` gives a
regex whose first group (or group ``speaker``) picks the speaker from each relative path. The
manifest carries each file's size and mtime, the format of the manifest cache
(``ssl_speech/data/corpus/manifest.py``); headers are read by ``--threads`` threads.
"""

from __future__ import annotations

import argparse

from ssl_speech.data.corpus import DEFAULT_THREADS, scan_directory, write_manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="corpus directory")
    parser.add_argument("out", help="manifest TSV to write")
    parser.add_argument("--ext", nargs="+", default=["flac", "wav"], help="audio extensions")
    parser.add_argument("--speaker-pattern", default=None,
                        help="regex with a group for the speaker (trees not in LibriSpeech layout)")
    parser.add_argument("--on-error", choices=["skip", "raise"], default="skip",
                        help="unusable files: skip them (listed in a summary) or stop")
    parser.add_argument("--min-samples", type=int, default=0,
                        help="drop files shorter than this many samples at 16 kHz")
    parser.add_argument("--ids", choices=["stem", "path"], default="stem",
                        help="utterance ids: file stem, or relative path without extension")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help="header readers (I/O bound: more helps on network file systems)")
    args = parser.parse_args(argv)
    corpus = scan_directory(args.root, extensions=args.ext, speaker_pattern=args.speaker_pattern,
                            on_error=args.on_error, min_samples=args.min_samples, ids=args.ids,
                            threads=args.threads)
    write_manifest(corpus, args.out)
    report = corpus.report
    print(f"{args.out}: {len(corpus)} utterances, {len(corpus.speakers)} speakers, "
          f"{corpus.total_seconds / 3600:.2f} h; {report.num_found} files found, "
          f"{len(report.skipped)} unusable, {len(report.too_short)} too short")


if __name__ == "__main__":
    main()
