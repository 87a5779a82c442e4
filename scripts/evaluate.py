"""Evaluate checkpoints: export, phone probe, ABX, speaker probe, then a report with plots.

A shim for a checkout: the tool is ``ssl_speech.eval.commands.evaluate``
(``--help`` for its options).
"""

from ssl_speech.eval.commands.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
