"""Linear phone probe of frozen features, beside the log-mel/MFCC baselines.

A shim for a checkout: the tool is ``ssl_speech.eval.commands.phone_probe``
(``--help`` for its options).
"""

from ssl_speech.eval.commands.phone_probe import main

if __name__ == "__main__":
    raise SystemExit(main())
