"""Summaries come from the evaluators' declarations: ``mmcore run`` prints them, ``mmcore report`` tabulates them,
and a run without retrieval metrics gets no (all-NaN) Recall@1 heat map."""

import contextlib
import io
import json
import shutil

import attrs
import pytest

import mmcore
from mmcore.cli import main
from mmcore.testing import run_recipe, tiny_recipe

SMALL = {"dataset": {"train_size": 256, "val_size": 64, "test_size": 128},
         "trainer": {"max_epochs": 1, "batch_size": 128}}


def _cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in args])
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def knn_run(tmp_path_factory):
    """``mmcore run`` of a built-in-only tiny recipe whose only evaluator is ``knn`` (1 epoch)."""
    from mmcore.recipe import dump_toml

    base = tmp_path_factory.mktemp("summaries")
    recipe = base / "knn_only.toml"
    recipe.write_text(dump_toml(tiny_recipe(evaluators=[{"name": "knn"}], **SMALL)))
    status, out, err = _cli("run", recipe, "--out", base / "run")
    assert status == 0, err
    return base / "run", out, err


def test_a_run_without_retrieval_prints_its_declared_summary_and_draws_no_heat_map(knn_run):
    from mmcore.use.report import HEATMAP_SKIPPED, have_matplotlib

    run_dir, out, err = knn_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert json.loads((run_dir / "model.json").read_text())["summary_metrics"] == ["knn/mean/acc"]
    printed = {line.split()[0]: float(line.split()[1]) for line in out.splitlines() if line.count(" ") >= 2
               and line.split()[0] in metrics}
    assert printed == {"knn/mean/acc": pytest.approx(metrics["knn/mean/acc"], abs=1e-4)}
    assert "knn/image/acc" in metrics and "knn/image/acc" not in printed  # not declared: only with --all-metrics
    assert not (run_dir / "recall_heatmap.png").exists()
    if have_matplotlib():
        assert (run_dir / "embeddings_2d.png").is_file()
        assert err.count(HEATMAP_SKIPPED) == 1


def test_report_tabulates_the_declared_summary_and_skips_the_heat_map(knn_run, tmp_path):
    from mmcore.use.report import HEATMAP_SKIPPED

    run_dir, _, _ = knn_run
    status, out, err = _cli("report", run_dir, run_dir, "--out", tmp_path / "cmp.png")
    assert status == 0, err
    header, _, *rows = out.splitlines()
    assert header.split() == ["run", "anchor", "loss", "seed", "knn/mean"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [row.split()[-1] for row in rows] == [f"{metrics['knn/mean/acc']:.3f}"] * 2
    assert err.count(HEATMAP_SKIPPED) == 1 and not (tmp_path / "cmp.png").exists()


def test_a_run_without_model_json_falls_back_to_the_old_summary(knn_run, tmp_path):
    from mmcore.use.report import comparison_table, read_run

    old = tmp_path / "old-run"
    shutil.copytree(knn_run[0], old, ignore=shutil.ignore_patterns("checkpoints", "tb"))
    (old / "model.json").unlink()
    run = read_run(old)
    assert run["summary"] == ["knn/mean/acc"]  # the old fixed list, as present in this run's metrics
    assert comparison_table([run]).splitlines()[0].split()[-1] == "knn/mean"


@attrs.frozen
class FakeConfig:
    """No settings."""


def _build_fake(config, context=None):
    return mmcore.evaluator(lambda split: {"fake/score": 0.25, "fake/detail": 1.0}, ("fake/score",))


def test_a_plugin_evaluators_declared_summary_reaches_the_report_table(tmp_path, monkeypatch):
    from mmcore.use.report import comparison_table, read_run

    registry = mmcore.get_registry()
    monkeypatch.setitem(registry.components["evaluators"], "fake", mmcore.Component("fake", FakeConfig, _build_fake))
    monkeypatch.setitem(registry.owners["evaluators"], "fake", "mmcore-test-fake")
    raw = tiny_recipe(evaluators=[{"name": "fake"}, {"name": "knn"}], **SMALL)
    metrics = run_recipe(raw, tmp_path / "run")
    assert metrics["fake/score"] == 0.25
    run = read_run(tmp_path / "run")
    assert run["summary"] == ["fake/score", "knn/mean/acc"]
    header, _, row = comparison_table([run]).splitlines()
    assert header.split()[4:] == ["fake/score", "knn/mean"]
    assert row.split()[4] == "0.250"
    assert "fake/detail" not in header
