"""Pretraining cubes: intensity windows, the tissue filter, streaming extraction to shards."""
