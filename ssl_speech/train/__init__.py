"""Training: the Hydra entry point, trainer, checkpoints, distributed helpers, metric logs."""
