"""Export frozen features: one ``<utt_id>.npy`` (frames x dim) per utterance.

A shim for a checkout: the tool is ``ssl_speech.eval.commands.export_features``
(``--help`` for its options).
"""

from ssl_speech.eval.commands.export_features import main

if __name__ == "__main__":
    raise SystemExit(main())
