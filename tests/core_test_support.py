"""Helpers and constants shared by the core's tests: run the CLI in a subprocess, install fixture plugin packages
with pip. (Not in conftest.py: a plugin's own tests may have a conftest module too, and ``from conftest import``
would then pick whichever pytest imported first.)"""

import os
import subprocess
import sys
from pathlib import Path

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


def set_args(overrides) -> list:
    """``["--set", o1, "--set", o2, ...]`` for the CLI."""
    return [x for o in overrides for x in ("--set", o)]


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its size and mtime: what "nothing touched" compares."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def fresh_copy(folder: Path, tmp_path: Path) -> Path:
    """A copy of ``folder`` (e.g. a run trained once per module) under ``tmp_path``, for a test to damage."""
    import shutil

    return Path(shutil.copytree(folder, tmp_path / folder.name))
