"""ABX error of frozen features on an item file (Libri-light / ZeroSpeech 2021 protocol).

A shim for a checkout: the tool is ``ssl_speech.eval.commands.abx``
(``--help`` for its options).
"""

from ssl_speech.eval.commands.abx import main

if __name__ == "__main__":
    raise SystemExit(main())
