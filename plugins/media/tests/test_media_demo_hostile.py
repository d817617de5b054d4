"""Hostile ``mmcore media-demo`` calls (issue 14): bad settings, and a missing scikit-learn, are one
``mmcore: error:`` line (exit 2, no traceback) before anything is imported or written. None needs espeak-ng: the
checks come before it is looked for."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from mmcore.testing import cli

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


@pytest.mark.parametrize("setting, says", [
    (("--per-class", "0"), "per-class must be an integer from 3 to 174"),
    (("--per-class", "175"), "per-class must be an integer from 3 to 174"),
    (("--image-size", "2"), "image-size must be an integer from 8 to 1024"),
    (("--image-size", "100000"), "image-size must be an integer from 8 to 1024"),
    (("--seed", "-1"), "seed must be an integer from 0 to 4294967295"),
    (("--seed", str(2**32)), "seed must be an integer from 0 to 4294967295"),
])
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, setting, says):
    status, out, err = cli("media-demo", tmp_path / "demo", *setting)
    assert status == 2 and out == ""
    assert err.strip() == f"mmcore: error: {says}" + (" (the scans of the rarest digit)" if "per-class" in says
                                                       else "") + f", got {setting[1]}"
    assert not (tmp_path / "demo").exists()


def test_without_scikit_learn_the_error_says_which_extra_brings_it(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sklearn", None)  # `import sklearn...` raises ImportError
    status, out, err = cli("media-demo", tmp_path / "demo", "--per-class", "3")
    assert status == 2 and out == "" and "Traceback" not in err
    assert err.strip() == ('mmcore: error: media-demo needs scikit-learn (its digit scans are the images): '
                           'pip install "mmcore-media[demo]"')
    assert not (tmp_path / "demo").exists()
    # and the named extra brings it
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    assert any(r.startswith("scikit-learn") for r in extras["demo"])
    assert any(r.startswith("scikit-learn") for r in extras["all"])
