"""Data: corpora, audio reading, windows and batch samplers, labels, embedded corpus."""
