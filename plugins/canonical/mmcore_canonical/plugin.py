"""Registers ``mmcore align`` (see :mod:`.command`). Only argparse wiring happens here: numpy, faiss and torch are
imported by the handler, so ``mmcore --help`` stays fast."""

import mmcore


@mmcore.hookimpl
def mmcore_commands(subparsers):
    from .command import add_parser

    add_parser(subparsers)
