"""What a run leaves on disk: the checkpoint format, loading a model, the metrics log."""
