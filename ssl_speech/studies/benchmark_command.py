"""The benchmark command: training-step and data-pipeline throughput, per objective, encoder,
context and head (:mod:`ssl_speech.studies.benchmark` does the work).

    ssl-speech-benchmark --preset cpc_audio --threads 2
    ssl-speech-benchmark --objectives cpc acpc --heads transformer linear --device cuda \\
        --precision bf16 --batch-size 32 --compile
    ssl-speech-benchmark --case "wide=objective=cpc encoder.dim=512 context.dim=512"
    ssl-speech-benchmark --preset cpc_audio --threads 2 --omp-wait-policy passive --profile
    ssl-speech-benchmark --case default= --device cuda --precision bf16 --max-batch-size 4096

(also ``python -m ssl_speech.studies.benchmark_command``). Prints a Markdown table and writes
one JSON line per result (steps, data pipeline, matmul probe) to ``--jsonl`` (default: stdout,
after the table). Every case runs in its own process and the repeats of all cases are
interleaved, so compare cases within one run.
"""

from __future__ import annotations

import argparse
import json
import sys

from ssl_speech.studies.benchmark import markdown_table, run_benchmark
from ssl_speech.studies.benchmark_settings import (
    OMP_WAIT_POLICIES,
    PRECISIONS,
    PRESETS,
    BenchmarkSettings,
    cases_for,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ssl-speech-benchmark",
        description="Training-step and data-pipeline throughput, per objective, encoder, "
                    "context and head.")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="named cases; cpc_audio: CPC_audio's default configuration, and "
                             "aligned CPC and linear heads beside it")
    parser.add_argument("--objectives", nargs="+", default=["cpc", "acpc"],
                        help="objective configs (without --preset or --case)")
    parser.add_argument("--heads", nargs="+", default=["transformer", "linear"],
                        help="prediction heads, for objectives that have them")
    parser.add_argument("--encoders", nargs="+", default=["cpc"], help="encoder configs")
    parser.add_argument("--contexts", nargs="+", default=["lstm"], help="context configs")
    parser.add_argument("--case", action="append", default=[], metavar="NAME=OVERRIDES",
                        help="a named case of space-separated Hydra overrides (repeatable)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a Hydra override applied to every case, e.g. "
                             "++optim.optimizer.fused=true (repeatable)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--precision", choices=PRECISIONS, default="32")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="sequences per step (default: the config's)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--compile", action="store_true", help="torch.compile the step")
    parser.add_argument("--max-batch-size", type=int, default=None,
                        help="time each case at its largest batch that fits, doubling from "
                             "--batch-size (or the config's) up to this bound (CUDA: until "
                             "memory runs out); the batch found is reported")
    parser.add_argument("--memory-headroom", type=float, default=0.45,
                        help="batch search: stop doubling once a step's peak memory exceeds "
                             "this fraction of the GPU's")
    parser.add_argument("--profile", action="store_true",
                        help="also time the step's phases (encoder, context, heads, scores, "
                             "backward, optimizer); not with --compile")
    parser.add_argument("--retain-freed-memory", action="store_true",
                        help="keep freed memory in the process (glibc; CPU)")
    parser.add_argument("--omp-wait-policy", choices=OMP_WAIT_POLICIES, default=None,
                        help="OMP_WAIT_POLICY of the case processes; passive helps a lot where "
                             "other jobs share the cores (default: inherit the environment)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per case")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds")
    parser.add_argument("--steps-per-repeat", type=int, default=1)
    parser.add_argument("--no-data", action="store_true", help="skip the data pipeline")
    parser.add_argument("--data-batches", type=int, default=50,
                        help="batches per data-pipeline repeat")
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--jsonl", default=None, help="write the JSON lines here")
    parser.add_argument("--markdown", default=None, help="write the Markdown table here")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def chosen_cases(args: argparse.Namespace) -> dict[str, tuple[str, ...]]:
    cases: dict[str, tuple[str, ...]] = {}
    if args.preset:
        cases.update(PRESETS[args.preset])
    for text in args.case:
        name, sep, overrides = text.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"error: --case {text!r}: expected NAME=OVERRIDES, e.g. "
                             "--case \"wide=encoder.dim=512\"")
        cases[name.strip()] = tuple(overrides.split())
    if not cases:
        cases = cases_for(args.objectives, args.heads, args.encoders, args.contexts)
    return cases


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = BenchmarkSettings(
        device=args.device, precision=args.precision, batch_size=args.batch_size,
        threads=args.threads, compile=args.compile, warmup=args.warmup, repeats=args.repeats,
        steps_per_repeat=args.steps_per_repeat, retain_freed_memory=args.retain_freed_memory,
        omp_wait_policy=args.omp_wait_policy, data=not args.no_data,
        data_batches=args.data_batches, matmul_size=args.matmul_size,
        overrides=tuple(args.override), profile=args.profile,
        max_batch_size=args.max_batch_size, memory_headroom=args.memory_headroom,
    )
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    rows = run_benchmark(chosen_cases(args), settings, log=log)
    table = markdown_table(rows)
    lines = [json.dumps(row, sort_keys=True) for row in rows]
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as out:
            out.write(table + "\n")
    if args.jsonl:
        with open(args.jsonl, "w") as out:
            out.write("\n".join(lines) + "\n")
    else:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
