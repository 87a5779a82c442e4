"""Linear speaker probe on pooled frozen features, beside the log-mel/MFCC baselines.

A shim for a checkout: the tool is ``ssl_speech.eval.commands.speaker_probe``
(``--help`` for its options).
"""

from ssl_speech.eval.commands.speaker_probe import main

if __name__ == "__main__":
    raise SystemExit(main())
