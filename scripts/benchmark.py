"""Training-step and data-pipeline throughput, per objective, encoder, context and head.

    python scripts/benchmark.py --preset cpc_audio --threads 2
    python scripts/benchmark.py --objectives cpc acpc --heads transformer linear --device cuda \\
        --precision bf16 --batch-size 32 --compile
    python scripts/benchmark.py --case "wide=objective=cpc encoder.dim=512 context.dim=512"
    python scripts/benchmark.py --preset cpc_audio --threads 2 --omp-wait-policy passive \\
        --profile
    python scripts/benchmark.py --case default= --device cuda --precision bf16 \\
        --max-batch-size 4096

Prints a Markdown table and writes one JSON line per result (steps, data pipeline, matmul
probe) to ``--jsonl`` (default: stdout, after the table). Every case runs in its own process and
the repeats of all cases are interleaved, so compare cases within one run.
"""

import sys

from ssl_speech.studies.benchmark_command import main

if __name__ == "__main__":
    sys.exit(main())
