"""Canonicalisation between two mmcore runs (Gupta et al. 2026): the ``mmcore align`` command.

:mod:`.procrustes` holds the math (fit one orthogonal map with mean shifts, apply it), :mod:`.report` measures it
on embedded splits, :mod:`.command` is the command line; :mod:`.plugin` registers the command."""
