"""Shared fixtures of the mmcore-media tests.

``media_demo``: the path of the ``manifest.csv`` of a small real demo set (:func:`mmcore_media.demo.build_demo`,
``DEMO_PER_CLASS`` scans per digit, seed 0: 50 train, 10 val, 20 test rows), built once per test session into a
temporary folder. Tests must not modify it. Skipped (with the apt line) when espeak-ng is not installed.
"""

from __future__ import annotations

import shutil

import pytest

DEMO_PER_CLASS = 8


@pytest.fixture(scope="session")
def media_demo(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("the demo set's audio needs espeak-ng: apt-get install espeak-ng")
    from mmcore_media.demo import build_demo

    return build_demo(tmp_path_factory.mktemp("media_demo") / "demo", per_class=DEMO_PER_CLASS, seed=0)
