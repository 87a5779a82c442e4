"""The scale benchmark: corpus scan, on-disk loading, phone probe memory and ABX against size.

    python scripts/scale_benchmark.py --out /tmp/scale             # full sizes (~15 min, 2 cores)
    python scripts/scale_benchmark.py --out /tmp/scale --quick --step-ms 300

Writes ``scale.jsonl`` (one JSON line per measurement, as measured) and ``scale.md`` under
``--out`` and prints the Markdown tables; see ``ssl_speech/studies/scale_benchmark.py``.
"""

from __future__ import annotations

import sys

from ssl_speech.studies.scale_benchmark import main

if __name__ == "__main__":
    main(sys.argv[1:])
