"""Runs: the run directory, training a recipe into one, loading a finished run and re-evaluating it."""
