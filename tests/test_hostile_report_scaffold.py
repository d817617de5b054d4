"""Hostile ``mmcore report`` and ``mmcore new-plugin`` calls (issue 14): ``--out`` and the name are checked before
any work (exit 2, one ``mmcore: error:`` line, no traceback, nothing written); names are refused, never rewritten.

The runs given to ``report`` are minimal finished-run folders (``metrics.json`` with two Recall@1 values and a
``recipe.toml``): enough for the table and the heat map, no training.
"""

import json
import os

import pytest

from mmcore.testing import cli

RECIPE = """seed = 0
[anchor]
name = "pairwise"
[loss]
name = "infonce"
[encoders.image]
name = "mlp"
[encoders.text]
name = "mlp"
"""


@pytest.fixture
def run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"retrieval/image->text/R@1": 0.5, "retrieval/text->image/R@1": 0.4}))
    (run / "recipe.toml").write_text(RECIPE)
    return run


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def alarm():
    """Fail instead of hanging (a FIFO opened for writing blocks until a reader comes)."""
    from mmcore.testing import deadline

    with deadline(10):
        yield


@pytest.mark.parametrize("out, more, says", [
    ("rep5.txt", (), "one of .png, .pdf, .svg (.txt is not)"),
    ("noext", (), "(it has no suffix)"),
    ("nod/x.png", (), "nod does not exist"),
    ("run/metrics.json/x.png", (), "is not a folder"),
])
def test_report_refuses_an_out_it_cannot_write_before_any_work(run, tmp_path, out, more, says):
    before = listing(tmp_path)
    status, stdout, err = cli("report", run, "--out", out, *more, cwd=tmp_path)
    assert status == 2 and stdout == ""  # refused before the table is printed
    assert err.startswith("mmcore: error: ") and says in err and "Traceback" not in err
    assert listing(tmp_path) == before and listing(run) == ["metrics.json", "recipe.toml"]


def test_report_replaces_only_a_regular_file_and_only_with_overwrite(run, tmp_path, alarm):
    from mmcore.use.report import have_matplotlib

    (tmp_path / "folder.png").mkdir()
    os.mkfifo(tmp_path / "pipe.png")
    for out, says in (("folder.png", "is a directory"), ("pipe.png", "is a FIFO")):
        status, stdout, err = cli("report", run, "--out", out, "--overwrite", cwd=tmp_path)
        assert status == 2 and stdout == "" and says in err
    (tmp_path / "old.svg").write_text("old")
    status, stdout, err = cli("report", run, "--out", "old.svg", cwd=tmp_path)
    assert status == 2 and "already exists" in err and (tmp_path / "old.svg").read_text() == "old"
    if not have_matplotlib():
        pytest.skip("the heat map needs matplotlib")
    status, stdout, err = cli("report", run, "--out", "old.svg", "--overwrite", cwd=tmp_path)
    assert status == 0, err
    assert "<svg" in (tmp_path / "old.svg").read_text() and not any(".tmp-" in n for n in listing(tmp_path))


@pytest.mark.parametrize("metrics", ["[]", "{not json", '"text"'])
def test_report_of_a_run_with_broken_metrics_names_the_run(run, tmp_path, metrics):
    (run / "metrics.json").write_text(metrics)
    status, stdout, err = cli("report", run, "--out", tmp_path / "r.png")
    assert status == 2 and f"mmcore: error: {run}: cannot read" in err and "Traceback" not in err
    assert not (tmp_path / "r.png").exists()


def test_new_plugin_out_must_be_an_existing_folder(tmp_path):
    (tmp_path / "FILE").write_text("x")
    status, _, err = cli("new-plugin", "ok", "--out", tmp_path / "FILE")
    assert status == 2 and "is not a folder" in err and "Traceback" not in err
    status, _, err = cli("new-plugin", "ok", "--out", tmp_path / "nod")
    assert status == 2 and "does not exist" in err
    assert listing(tmp_path) == ["FILE"]


@pytest.mark.parametrize("name, hint", [
    ("../evil", None), ("ünï", None), ("a;rm -rf x", None), ("MyLoss", "did you mean 'myloss'"),
    ("my-loss", "did you mean 'my_loss'"), ("1abc", None), ("", None), ("a" * 65, None),
])
def test_new_plugin_refuses_a_name_instead_of_rewriting_it(tmp_path, name, hint):
    status, out, err = cli("new-plugin", name, "--out", tmp_path)
    assert status == 2 and out == "" and "Traceback" not in err
    assert "lowercase ASCII letters, digits and _, starting with a letter" in err
    assert (hint in err) if hint else "did you mean" not in err
    assert listing(tmp_path) == []


def test_new_plugin_warns_when_the_name_is_taken_and_writes_the_package_whole(tmp_path):
    status, out, err = cli("new-plugin", "mlp", "--kind", "encoder", "--out", tmp_path)
    assert status == 0 and "warning: mmcore already provides the encoder 'mlp' (built in)" in err
    status, out, err = cli("new-plugin", "mlp_two", "--kind", "loss", "--out", tmp_path)
    assert status == 0 and "warning" not in err
    assert listing(tmp_path) == ["mmcore-mlp", "mmcore-mlp-two"]  # no temporary folder left
    assert (tmp_path / "mmcore-mlp-two" / "mmcore_mlp_two" / "loss.py").is_file()
    status, _, err = cli("new-plugin", "mlp_two", "--kind", "loss", "--out", tmp_path)
    assert status == 2 and "already exists" in err
