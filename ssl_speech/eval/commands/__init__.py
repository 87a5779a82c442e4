"""The evaluation's command-line tools, one module each, each with ``main(argv) -> status``.

``evaluate`` (the whole suite and a report), ``export_features``, ``phone_probe``,
``speaker_probe`` and ``abx``. Each module's ``run(argv)`` does the work and returns its
figures (for tests and notebooks); ``main(argv)`` wraps it for the shell: a bad input prints
``error: ...`` and exits with status 1. Run one as ``python -m ssl_speech.eval.commands.abx``,
as ``scripts/abx.py`` in a checkout, or as the installed command.
"""
