"""Experiments that train and evaluate: objective comparisons, the pseudo-label study, the
benchmark. They sit above everything else and nothing in the library imports them."""
