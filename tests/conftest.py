"""Shared test helpers: run the CLI in a subprocess, install fixture plugin packages with pip."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmcore.testing import TINY_OVERRIDES, run_cli  # noqa: F401 - re-exported for the tests

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
PLUGIN_PACKAGES = Path(__file__).parent / "plugin_packages"

TINY = list(TINY_OVERRIDES)
"""--set overrides that shrink a synthetic recipe to a few seconds."""


def pip_install_target(packages, target: Path) -> dict:
    """Really install fixture plugin packages with pip (into ``target``, --no-deps: the core is already
    installed). Returns the environment that puts them on the path of a subprocess."""
    try:
        import setuptools  # noqa: F401
        isolation = ["--no-build-isolation"]
    except ImportError:
        isolation = []
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *isolation, "--target", str(target),
           *[str(PLUGIN_PACKAGES / p) if isinstance(p, str) else str(p) for p in packages]]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    return {"PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture
def plugins_env(tmp_path):
    """Call with package names to install them; returns the env for run_cli."""
    return lambda *packages: pip_install_target(packages, tmp_path / "site")


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run the CLI in-process (fast: torch is imported once): ``cli(*args) -> (exit status, stdout, stderr)``."""
    from mmcore.cli import main

    def call(*args, cwd=None):
        if cwd is not None:
            monkeypatch.chdir(cwd)
        status = main([str(a) for a in args])
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return call
