"""Fixtures of the core's tests (the helpers they use live in core_test_support.py)."""

import lightning  # noqa: F401 - at collection: see plugins/features/tests/test_features_hostile.py
import pytest

from core_test_support import pip_install_target


@pytest.fixture(scope="session")
def images_env(tmp_path_factory):
    """The sample plugin with image, token and raw-caption inputs (tests/plugin_packages/images), installed once."""
    return pip_install_target(["images"], tmp_path_factory.mktemp("images") / "site")


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
