"""Train a preset's runs on the same audio seconds and tabulate them.

A shim for a checkout: the tool is ``ssl_speech.studies.compare`` (``--help`` for its options;
presets in ``ssl_speech/studies/presets/``).
"""

from ssl_speech.studies.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
