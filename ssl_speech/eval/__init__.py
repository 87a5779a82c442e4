"""Evaluation: feature export, phone and speaker probes, ABX, pseudo-label utility."""
