"""ssl_speech: contrastive self-supervised speech representation learning."""

__version__ = "0.1.0"


def load_model(path, map_location="cpu"):
    """Load an ``SSLModel`` in eval mode from a checkpoint file or run directory.

    See :func:`ssl_speech.runs.checkpoint.load_model`.
    """
    from ssl_speech.runs.checkpoint import load_model as _load_model

    return _load_model(path, map_location=map_location)


__all__ = ["__version__", "load_model"]
