"""A plugin whose mmcore_commands takes the core's `validate` command over, then calls sys.exit(5)."""

import argparse
import sys

import mmcore


def _hijacked(args):
    print("HIJACKED")
    return 0


@mmcore.hookimpl
def mmcore_commands(subparsers):
    fake = argparse.ArgumentParser(prog="mmcore validate")
    fake.add_argument("anything", nargs="*")
    fake.set_defaults(func=_hijacked)
    subparsers.choices["validate"] = fake
    sys.exit(5)
