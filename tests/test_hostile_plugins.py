"""Hostile plugins (issue 14): a plugin that exits, interrupts, hangs, prints or takes over a command at the plugin
boundary is left out and reported by distribution; every other plugin and every command keep working, stdout stays
data, and a real Ctrl-C still stops mmcore.

The broken fixture packages (tests/plugin_packages/hostile_*) are pip-installed once for the module; each test picks
the ones it needs with ``MMCORE_PLUGINS`` (entry points are discovered per process, hence the subprocesses)."""

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time

import attrs
import pytest

from core_test_support import pip_install_target, run_cli

HOSTILE = ["hostile_exit", "hostile_interrupt", "hostile_sleep", "hostile_print", "hostile_generator",
           "hostile_hook_interrupt", "hostile_hook_sleep", "hostile_commands"]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """The environment with every hostile fixture plugin installed, plugin code bounded to 1 s."""
    env = pip_install_target(HOSTILE, tmp_path_factory.mktemp("hostile") / "site")
    return {**env, "MMCORE_PLUGIN_IMPORT_TIMEOUT": "1"}


def only(env, *dists):
    """``env`` loading only these distributions (and mmcore-imagebind, to see that the rest keeps working)."""
    return {**env, "MMCORE_PLUGINS": ",".join([*dists, "mmcore-imagebind"])}


def test_a_plugin_that_exits_or_interrupts_at_import_is_left_out_and_reported(hostile):
    env = only(hostile, "mmcore-test-hostile-exit", "mmcore-test-hostile-interrupt")
    proc = run_cli("plugins", env_extra=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "mmcore-test-hostile-exit 0.0.1" in proc.stdout
    assert "ERROR: failed to load: SystemExit: 3" in proc.stdout
    assert "ERROR: failed to load: KeyboardInterrupt" in proc.stdout
    assert "anchor strategies: imagebind" in proc.stdout  # the rest keeps working


def test_a_hook_raising_generator_exit_or_its_own_keyboard_interrupt_is_reported(hostile):
    env = only(hostile, "mmcore-test-hostile-generator", "mmcore-test-hostile-hook-interrupt")
    proc = run_cli("plugins", env_extra=env, timeout=60)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "ERROR: raised in mmcore_losses: GeneratorExit: generator gave up" in proc.stdout
    assert "ERROR: raised in mmcore_encoders: KeyboardInterrupt: from the plugin" in proc.stdout
    assert "anchor strategies: imagebind" in proc.stdout


def test_a_plugin_whose_import_or_hook_hangs_is_bounded_and_named(hostile):
    env = only(hostile, "mmcore-test-hostile-sleep", "mmcore-test-hostile-hook-sleep")
    for args in (["--help"], ["plugins"]):
        started = time.monotonic()
        proc = run_cli(*args, env_extra=env, timeout=60)
        assert time.monotonic() - started < 20, f"mmcore {args} took {time.monotonic() - started:.0f} s"
        assert proc.returncode == 0, proc.stderr
        assert ("mmcore: warning: plugin mmcore-test-hostile-sleep did not finish importing within 1 s"
                in proc.stderr)
        assert ("mmcore: warning: plugin mmcore-test-hostile-hook-sleep did not finish calling mmcore_evaluators "
                "within 1 s" in proc.stderr)
    assert "ERROR: failed to load: did not finish importing within 1 s" in proc.stdout
    assert "ERROR: hung: did not finish calling mmcore_evaluators within 1 s" in proc.stdout
    assert "anchor strategies: imagebind" in proc.stdout


def test_a_real_ctrl_c_while_a_plugin_imports_still_stops_mmcore(hostile):
    """Not a fix but the guard on it: plugin code runs in a worker thread, the main thread waits, and a SIGINT
    (always delivered to the main thread) still ends the program at once."""
    env = {**os.environ, **only(hostile, "mmcore-test-hostile-sleep"), "MMCORE_PLUGIN_IMPORT_TIMEOUT": "60",
           "MMCORE_TRACE_PLUGINS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mmcore.cli", "--help"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,  # SIGINT as in a terminal, even if pytest ignores it
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    watchdog = threading.Timer(30, proc.kill)
    watchdog.start()
    try:
        for line in proc.stderr:  # wait until it is importing the sleeping plugin
            if "loading hostile_sleep" in line:
                break
        time.sleep(0.3)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        status = proc.wait(timeout=15)
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()
    assert status != 0 and time.monotonic() - started < 10


def test_what_plugin_code_prints_or_does_to_sys_stdout_never_reaches_stdout(hostile):
    env = only(hostile, "mmcore-test-hostile-print")  # it prints at import and in its hook, then swaps sys.stdout
    proc = run_cli("plugins", "--json", env_extra=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    listing = {p["distribution"]: p for p in json.loads(proc.stdout)}
    assert listing["mmcore-test-hostile-print"]["components"] == {"encoders": ["hostile_print_linear"]}
    assert listing["mmcore-test-hostile-print"]["error"] is None
    assert "hostile-print: printed at import" in proc.stderr
    assert "hostile-print: printed in mmcore_encoders" in proc.stderr
    # (its component's build prints too: see test_a_component_build_prints_to_stderr_..., in this process)


def test_a_command_hook_that_takes_over_a_core_command_and_exits_is_undone_and_reported(hostile):
    env = only(hostile, "mmcore-test-hostile-commands")
    proc = run_cli("validate", "--help", env_extra=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: mmcore validate [-h] [--set KEY=VALUE] recipe")  # the core's, not its
    assert ("mmcore: warning: plugin mmcore-test-hostile-commands failed to add its commands: it replaced the "
            "command(s) validate, which stay as they were; SystemExit: 5") in proc.stderr
    proc = run_cli("plugins", env_extra=env, timeout=60)
    assert proc.returncode == 0
    assert "ERROR: failed to add its commands: it replaced the command(s) validate" in proc.stdout


def test_a_typo_in_mmcore_plugins_names_the_nearest_installed_distribution():
    proc = run_cli("plugins", env_extra={"MMCORE_PLUGINS": "mmcore-imagebnd"}, check=True, timeout=60)
    warning = "mmcore: warning: MMCORE_PLUGINS names mmcore-imagebnd, which is not installed; installed: "
    assert proc.stderr.count(warning) == 1, proc.stderr
    assert "mmcore-imagebind, " in proc.stderr and "did you mean mmcore-imagebind?" in proc.stderr
    # a spelling pip treats as the same name is that distribution, not a typo
    proc = run_cli("plugins", env_extra={"MMCORE_PLUGINS": "MMCore_ImageBind"}, check=True, timeout=60)
    assert "warning" not in proc.stderr and "mmcore-imagebind 0.1.0" in proc.stdout


def test_the_mmcore_plugins_warning_is_given_once_per_process(monkeypatch, capsys):
    from mmcore.registry import build_registry

    monkeypatch.setenv("MMCORE_PLUGINS", "mmcore-imagebind,mmcore-siglp-once")
    build_registry()
    build_registry()
    err = capsys.readouterr().err
    assert err.count("MMCORE_PLUGINS names mmcore-siglp-once, which is not installed") == 1, err
    assert "did you mean mmcore-siglip?" in err


@attrs.frozen
class _NoConfig:
    pass


def _registry_with(build):
    from mmcore import Component
    from mmcore.registry import Registry

    registry = Registry()
    registry.components["encoders"]["hostile"] = Component("hostile", _NoConfig, build)
    registry.owners["encoders"]["hostile"] = "mmcore-test-hostile"
    return registry


def test_a_component_build_that_calls_sys_exit_is_a_build_error_at_the_recipe_path():
    from mmcore.registry import ComponentBuildError

    def build(config, context):
        sys.exit(4)

    with pytest.raises(ComponentBuildError) as caught:
        _registry_with(build).build("encoders", "hostile", _NoConfig(), None, "encoders.text")
    assert caught.value.problems == ["encoders.text: building 'hostile' (from mmcore-test-hostile) failed: "
                                     "SystemExit: 4"]


def test_a_component_build_prints_to_stderr_and_a_ctrl_c_in_it_still_stops(capsys):
    from torch import nn

    def build(config, context):
        print("printed in build")
        return nn.Linear(2, 2)

    assert isinstance(_registry_with(build).build("encoders", "hostile", _NoConfig(), None, "encoders.x"), nn.Linear)
    captured = capsys.readouterr()
    assert captured.out == "" and "printed in build" in captured.err

    def interrupted(config, context):
        raise KeyboardInterrupt  # in the main thread a Ctrl-C and this look the same: it is taken for a Ctrl-C

    with pytest.raises(KeyboardInterrupt):
        _registry_with(interrupted).build("encoders", "hostile", _NoConfig(), None, "encoders.x")


def test_a_hook_returning_an_endless_generator_is_refused():
    from mmcore import Component
    from mmcore.registry import MAX_COMPONENTS_PER_HOOK, _components

    endless = itertools.repeat(Component("same", _NoConfig, lambda config, context: None))
    with pytest.raises(ValueError, match=f"more than {MAX_COMPONENTS_PER_HOOK} components"):
        _components(endless)


def test_the_plugin_timeout_setting(monkeypatch, capsys):
    from mmcore.registry import DEFAULT_IMPORT_TIMEOUT, plugin_timeout

    monkeypatch.setenv("MMCORE_PLUGIN_IMPORT_TIMEOUT", "2.5")
    assert plugin_timeout() == 2.5
    monkeypatch.setenv("MMCORE_PLUGIN_IMPORT_TIMEOUT", "0")
    assert plugin_timeout() is None
    monkeypatch.setenv("MMCORE_PLUGIN_IMPORT_TIMEOUT", "soon")
    assert plugin_timeout() == DEFAULT_IMPORT_TIMEOUT
    assert "MMCORE_PLUGIN_IMPORT_TIMEOUT='soon' is not a number of seconds" in capsys.readouterr().err
