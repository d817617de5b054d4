"""Plugin loading through entry points: real pip-installed packages, broken ones isolated, duplicates refused."""

import ast
import json
import subprocess
import sys
from pathlib import Path

from core_test_support import RECIPES, ROOT, TINY, run_cli

CORE = ROOT / "core"


def test_a_pip_installed_third_party_plugin_is_listed_and_runs_in_a_recipe(plugins_env, tmp_path):
    env = plugins_env("example")
    listing = run_cli("plugins", env_extra=env, check=True).stdout
    assert "mmcore-test-example 0.0.1" in listing
    assert "encoders: example_linear" in listing
    assert "evaluators: example_pair_cosine" in listing

    overrides = [x for o in TINY + ["encoders.text.name=example_linear", "encoders.text.bias=false",
                                    'evaluators=[{name="retrieval"},{name="example_pair_cosine"}]']
                 for x in ("--set", o)]
    run_cli("run", RECIPES / "imagebind.toml", *overrides, "--out", tmp_path / "run", env_extra=env, check=True)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert -1.0 <= metrics["example/pair_cosine"] <= 1.0
    plugins = json.loads((tmp_path / "run" / "plugins.json").read_text())
    assert {"mmcore", "mmcore-test-example", "mmcore-imagebind"} <= {p["distribution"] for p in plugins}


def test_a_plugin_that_fails_to_import_is_reported_and_the_others_keep_working(plugins_env, tmp_path):
    env = plugins_env("example", "broken", "raising")
    proc = run_cli("plugins", env_extra=env, check=True)
    assert "mmcore-test-broken 0.0.1" in proc.stdout
    assert "ERROR: failed to load: ModuleNotFoundError: No module named 'a_module_that_does_not_exist'" in proc.stdout
    assert "ERROR: raised in mmcore_losses: RuntimeError: this plugin's hook is broken" in proc.stdout
    assert "encoders: example_linear" in proc.stdout and "anchor strategies: imagebind" in proc.stdout

    # a recipe naming a missing component says which plugin failed
    proc = run_cli("validate", RECIPES / "imagebind.toml", "--set", "loss.name=broken_loss", env_extra=env)
    assert proc.returncode == 2
    assert "unknown loss 'broken_loss'" in proc.stderr and "mmcore-test-raising failed to load" in proc.stderr

    # recipes that do not use them still run
    run_cli("validate", RECIPES / "imagebind.toml", "--set", "encoders.text.name=example_linear",
            env_extra=env, check=True)


def test_a_plugin_returning_malformed_components_is_reported_by_distribution(plugins_env):
    env = plugins_env("malformed", "example")
    out = run_cli("plugins", env_extra=env, check=True).stdout
    assert "mmcore-test-malformed 0.0.1" in out
    assert "ERROR: raised in mmcore_encoders: TypeError: component 'bad_config': config must be an attrs class" in out
    assert "encoders: example_linear" in out


def test_strict_mode_reraises_plugin_errors(plugins_env):
    env = plugins_env("broken")
    proc = run_cli("plugins", env_extra={**env, "MMCORE_STRICT_PLUGINS": "1"})
    assert proc.returncode != 0
    assert "mmcore-test-broken" in proc.stderr


def test_a_duplicate_component_name_is_an_error_naming_both_distributions(plugins_env):
    env = plugins_env("example", "duplicate")
    listing = run_cli("plugins", env_extra=env, check=True).stdout
    assert "CONFLICT: encoders 'example_linear' is provided by mmcore-test-duplicate and mmcore-test-example" in \
        listing or "CONFLICT: encoders 'example_linear' is provided by mmcore-test-example and mmcore-test-duplicate" \
        in listing
    proc = run_cli("validate", RECIPES / "imagebind.toml", "--set", "encoders.text.name=example_linear",
                   env_extra=env)
    assert proc.returncode == 2
    assert "more than one distribution" in proc.stderr
    assert "mmcore-test-example" in proc.stderr and "mmcore-test-duplicate" in proc.stderr


def test_allow_list_and_autoload_switch(plugins_env):
    env = plugins_env("example", "broken")
    only = run_cli("plugins", env_extra={**env, "MMCORE_PLUGINS": "mmcore-test-example"}, check=True).stdout
    assert "mmcore-test-example" in only and "mmcore-test-broken" not in only and "mmcore-imagebind" not in only
    none = run_cli("plugins", env_extra={**env, "MMCORE_DISABLE_PLUGIN_AUTOLOAD": "1"}, check=True).stdout
    assert none.startswith("mmcore ") and "mmcore-test-example" not in none


def test_plugins_json_and_requirements_output():
    data = json.loads(run_cli("plugins", "--json", check=True).stdout)
    builtin = next(p for p in data if p["distribution"] == "mmcore")
    assert builtin["components"]["encoders"] == ["mlp"]
    requirements = run_cli("plugins", "--requirements", check=True).stdout.splitlines()
    assert any(line.startswith("mmcore-imagebind==") for line in requirements)
    # a plugin that adds only a command (mmcore-canonical: `mmcore align`) shows it, as text and as JSON
    canonical = next(p for p in data if p["distribution"] == "mmcore-canonical")
    assert canonical["commands"] == ["align"] and builtin["commands"] == []
    text = run_cli("plugins", check=True).stdout
    assert "mmcore-canonical 0.1.0\n  entry point: canonical = mmcore_canonical.plugin\n  commands: align\n" in text


def _imports(path: Path) -> set:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_core_imports_no_plugin_and_plugins_import_no_other_plugin():
    plugin_packages = {p.name for p in (ROOT / "plugins").glob("*/mmcore_*")}
    assert plugin_packages, "no plugin packages found"
    for path in CORE.rglob("*.py"):
        assert not _imports(path) & plugin_packages, f"{path} imports a plugin"
    for package in (ROOT / "plugins").glob("*/mmcore_*"):
        for path in package.rglob("*.py"):
            others = _imports(path) & (plugin_packages - {package.name})
            assert not others, f"{path} imports another plugin: {others}"
    # and at run time: loading the whole core pulls in no plugin module
    code = ("import sys, mmcore.runs.train, mmcore.cli; "
            "print([m for m in sys.modules if m.startswith('mmcore_')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_does_not_import_torch():
    code = "import sys; from mmcore.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_version_prints_the_core_version_without_importing_torch():
    code = ("import contextlib, io, sys\nfrom mmcore.cli import main\nout = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n    try:\n        main(['--version'])\n"
            "    except SystemExit as exit:\n        status = exit.code\n"
            "print(repr(out.getvalue()), status, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    import mmcore

    assert result.strip() == f"'mmcore {mmcore.__version__}\\n' 0 False"
