"""Hostile ``--out`` of ``mmcore align`` (issue 14): ``--out`` is checked before any run is loaded, and
``--overwrite`` replaces only an earlier align output: never the working directory or a folder above it, an input
run, a folder inside or holding one, a folder holding other files, a file or a link (exit 2, nothing deleted).

The runs here are fake (a ``recipe.toml`` that is no recipe, a checkpoint that is no checkpoint): a refusal of
``--out`` must come before they are loaded (loading them fails), so no training is needed.
"""

import os
from pathlib import Path

import pytest
from mmcore.testing import cli


@pytest.fixture
def work(tmp_path):
    """``tmp_path/work`` holding two (fake) runs, a run's checkpoints and a user's folder; the working directory."""
    root = tmp_path / "work"
    for folder in ("RUN_A/checkpoints", "RUN_B", "keep"):
        (root / folder).mkdir(parents=True)
    (root / "RUN_A" / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    for run in ("RUN_A", "RUN_B"):
        (root / run / "recipe.toml").write_text("not a recipe")
    (root / "keep" / "notes.txt").write_text("mine")
    (tmp_path / "beside.txt").write_text("beside the working directory")
    return root


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def align(work, out, *more):
    return cli("align", "RUN_A", "RUN_B", "--out", out, *more, cwd=work)


@pytest.mark.parametrize("out, says", [
    ("..", "working directory"), (".", "working directory"), ("/", "working directory"),
    ("RUN_A", "input run"), ("RUN_B", "input run"), ("RUN_A/checkpoints", "input run"),
    ("keep", "holds no report.json"),
])
def test_overwrite_never_deletes_what_align_did_not_write(work, out, says):
    before = snapshot(work.parent)
    status, stdout, err = align(work, out, "--overwrite")
    assert status == 2 and stdout == ""
    assert err.startswith("mmcore: error: ") and says in err and "Traceback" not in err
    assert "recipe" not in err  # refused before the runs are loaded
    assert snapshot(work.parent) == before


def test_out_holding_an_input_run_is_refused(work, tmp_path):
    # not the working directory's ancestor: the working directory is elsewhere
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    status, _, err = cli("align", work / "RUN_A", work / "RUN_B", "--out", work, "--overwrite", cwd=elsewhere)
    assert status == 2 and "input run" in err
    assert (work / "RUN_A" / "checkpoints" / "last.ckpt").exists()


@pytest.mark.parametrize("make, says", [
    (lambda p: p.write_text("x"), "regular file"),
    (lambda p: os.symlink("keep", p), "symbolic link"),
    (lambda p: (p.mkdir(), (p / "report.json").write_text("{}"), (p / "notes.txt").write_text("x")),
     "did not write (notes.txt)"),
])
def test_overwrite_refuses_a_file_a_link_or_an_align_output_with_other_files(work, make, says):
    make(work / "target")
    before = snapshot(work)
    status, _, err = align(work, "target", "--overwrite")
    assert status == 2 and says in err and "recipe" not in err
    assert snapshot(work) == before


def test_a_file_on_the_way_is_refused_and_missing_folders_are_not_made_before_the_output(work):
    (work / "file").write_text("x")
    status, _, err = align(work, "file/x/y")
    assert status == 2 and "is not a folder" in err and "Traceback" not in err
    status, _, err = align(work, "nod/x")  # allowed; fails on the (fake) runs, before nod is made
    assert status == 2 and "--out" not in err and not (work / "nod").exists()


def test_an_earlier_align_output_may_be_replaced(work, monkeypatch):
    from mmcore_canonical.command import ALIGN_FILES, AlignError, check_out

    previous = work / "aligned"
    previous.mkdir()
    for name in ALIGN_FILES:
        (previous / name).write_text("old")
    (work / "empty").mkdir()
    monkeypatch.chdir(work)
    assert check_out("aligned", True, ("RUN_A", "RUN_B")) == previous
    assert check_out("empty", False, ("RUN_A", "RUN_B")) == work / "empty"
    with pytest.raises(AlignError, match="already exists"):
        check_out("aligned", False, ("RUN_A", "RUN_B"))
    # the CLI gets past --out and fails on the (fake) runs, leaving the earlier output as it was
    status, _, err = align(work, "aligned", "--overwrite")
    assert status == 2 and "RUN_A" in err and "--out" not in err
    assert sorted(p.name for p in previous.iterdir()) == sorted(ALIGN_FILES)
