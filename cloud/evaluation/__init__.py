"""Scoring alerts against the simulator's ground-truth labels."""
