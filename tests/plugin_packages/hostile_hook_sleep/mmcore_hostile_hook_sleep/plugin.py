"""A plugin that imports at once but whose hook never returns (it sleeps)."""

import time

import mmcore


@mmcore.hookimpl
def mmcore_evaluators():
    time.sleep(600)
