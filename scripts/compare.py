"""Train a preset's runs on the same audio seconds and tabulate them (ssl_speech.studies.compare).

    python scripts/compare.py rpc_batch [--budget-seconds S] [--out DIR] [--max-runs N]
                                        [--override KEY=VALUE ...]

PRESET is a name in configs/compare/ or a YAML file. Writes DIR/table.md, DIR/curves.png,
DIR/summary.json and one run directory per run; prints the table and ends with one JSON line:
``{"table": ..., "plot": ..., "summary": ..., "rows": [{column: value, ...}, ...]}``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from ssl_speech.studies.compare import column_value, load_preset, run_preset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("preset", help="preset name (configs/compare/<name>.yaml) or YAML path")
    parser.add_argument("--budget-seconds", type=float, default=None,
                        help="audio seconds per run (default: the preset's budget_seconds)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: runs/compare/<preset>)")
    parser.add_argument("--max-runs", type=int, default=None,
                        help="run only the preset's first N runs")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a Hydra override for every run, after the preset's base overrides "
                             "(repeatable), e.g. trainer.threads=1")
    return parser.parse_args(argv)


def _clean(value: Any) -> Any:
    # JSON has no NaN or infinity: such a figure is null
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    return value


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    preset = load_preset(args.preset)
    out = args.out or Path("runs") / "compare" / preset.name
    result = run_preset(preset, out, max_runs=args.max_runs, budget_seconds=args.budget_seconds,
                        extra_overrides=args.override)
    figures = {
        "table": result["table"], "plot": result["plot"], "summary": result["summary"],
        "rows": [{header: _clean(column_value(row, spec)) for header, spec in preset.columns}
                 for row in result["rows"]],
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
