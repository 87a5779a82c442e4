"""Signal processing without learning: log-mel/MFCC baselines, frame descriptors, pitch."""
