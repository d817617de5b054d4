"""`mmcore run` end to end: run directory contents, TensorBoard events, fresh directories, `eval`, `show`."""

import json

import pytest

from core_test_support import RECIPES, TINY, run_cli

try:
    import tomllib
except ModuleNotFoundError:
    import tomli as tomllib


def _set(overrides):
    return [x for o in overrides for x in ("--set", o)]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("e2e")
    proc = run_cli("run", RECIPES / "imagebind.toml", *_set(TINY), cwd=cwd, check=True)
    return cwd, cwd / "runs" / "imagebind-1", proc


def test_run_writes_metrics_checkpoints_events_and_the_resolved_recipe(finished_run):
    _, run_dir, proc = finished_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("retrieval/text->audio/R@1", "retrieval/emergent/R@1", "retrieval/trained/R@10",
                "retrieval/image->text/mean_rank", "prototypes/text->image/acc", "knn/audio/acc"):
        assert 0.0 <= metrics[key] <= (1.0 if "mean_rank" not in key else 256)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    resolved = tomllib.loads((run_dir / "recipe.toml").read_text())
    assert resolved["trainer"]["max_epochs"] == 1 and resolved["anchor"] == {"name": "imagebind", "anchor": "image"}
    assert (run_dir / "sources" / "0-imagebind.toml").is_file()
    assert json.loads((run_dir / "environment.json").read_text())["torch"]
    assert "retrieval/emergent/R@1" in proc.stdout
    # what a user needs, not Lightning's notes (GPU/TPU lines, its litlogger advert, a site-packages deprecation)
    for noise in ("GPU available", "TPU available", "litlogger", "LeafSpec", "estimate number of stepping batches",
                  "`Trainer.fit` stopped"):
        assert noise not in proc.stderr, proc.stderr
    assert "mmcore: run directory runs/imagebind-1" in proc.stderr, proc.stderr


def test_tensorboard_has_every_loss_term_temperature_and_metric(finished_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir, _ = finished_run
    tags = set()
    for events in (run_dir / "tb").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    for tag in ("train/loss", "train/loss/text-image", "train/loss/audio-image", "train/temperature", "train/lr",
                "val/loss", "test/retrieval/text->audio/R@1", "test/prototypes/emergent/acc"):
        assert tag in tags, f"{tag} missing from {sorted(tags)}"


def test_run_saves_pictures_the_projector_and_report_compares_runs(finished_run, cli, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir, _ = finished_run
    for png in ("recall_heatmap.png", "embeddings_2d.png"):
        assert (run_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    projector = (run_dir / "tb" / "projector_config.pbtxt").read_text()
    assert "test_embeddings" in projector
    images = set()
    for events in (run_dir / "tb").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        images |= set(acc.Tags()["images"])
    assert {"figures/recall_heatmap", "figures/embeddings_2d"} <= images
    assert json.loads((run_dir / "pairs.json").read_text())["trained"] == [["audio", "image"], ["image", "text"]]

    status, out, _ = cli("report", run_dir, run_dir, "--out", tmp_path / "cmp.png")
    assert status == 0
    assert out.splitlines()[0].split()[:4] == ["run", "anchor", "loss", "seed"]
    assert out.count("imagebind-1") == 2
    assert (tmp_path / "cmp.png").is_file()
    status, _, err = cli("report", run_dir, "--out", tmp_path / "cmp.png")
    assert status == 2 and "already exists" in err


def test_runs_without_matplotlib_skip_only_the_figures(finished_run, monkeypatch, tmp_path):
    import sys

    import numpy as np

    import mmcore
    from mmcore.use.report import write_run_pictures

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    split = mmcore.EmbeddedSplit(z={"a": np.eye(4, dtype=np.float32)}, present={"a": np.ones(4, bool)})
    assert write_run_pictures(tmp_path, split, {}) == []


def test_a_second_run_gets_a_fresh_directory(finished_run):
    cwd, first, _ = finished_run
    before = (first / "metrics.json").read_text()
    run_cli("run", RECIPES / "imagebind.toml", *_set(TINY + ["trainer.max_epochs=1"]), cwd=cwd, check=True)
    assert (cwd / "runs" / "imagebind-2" / "metrics.json").is_file()
    assert (first / "metrics.json").read_text() == before


def test_eval_reproduces_the_runs_metrics_from_its_checkpoint(finished_run):
    _, run_dir, _ = finished_run
    proc = run_cli("eval", run_dir, "--json", check=True)
    again = json.loads(proc.stdout)
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert again.keys() == saved.keys()
    for key in saved:
        assert again[key] == pytest.approx(saved[key], abs=1e-6), key


def test_show_prints_the_resolved_recipe_with_overrides(tmp_path):
    proc = run_cli("show", RECIPES / "imagebind.toml", "--set", "trainer.max_epochs=3", check=True)
    body = "\n".join(line for line in proc.stdout.splitlines() if not line.startswith("#"))
    data = tomllib.loads(body)
    assert data["trainer"]["max_epochs"] == 3
    assert data["loss"]["name"] == "infonce"
